"""cocotb benches of the elementwise vector units (GELU table, residual add)."""

import pytest

from hw.config import preset
from hw.vector.gelu import GeluUnit
from hw.vector.residual_add import ResidualAdd
from sim.runner import run_bench

pytestmark = pytest.mark.sim

UNITS = {"gelu": GeluUnit, "add": ResidualAdd}


@pytest.mark.parametrize("unit", sorted(UNITS))
@pytest.mark.parametrize("lanes", [1, 4])
def test_vector_unit_bench(unit, lanes):
    cfg = preset("tiny").replace(name=f"{unit}-lanes{lanes}", vector_lanes=lanes)
    beats = 300 // lanes
    report = run_bench(
        component=UNITS[unit](config=cfg),
        bench="sim.benches.vector",
        case=cfg.name,
        params={"unit": unit, "config": cfg.to_dict(), "beats": beats, "seed": 40 + lanes},
    )
    assert report["no_stalls"]["cycles"] == beats - 1 + UNITS[unit].LATENCY
    assert len(report) == 4
