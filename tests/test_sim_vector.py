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


def test_residual_add_int16_path_bench():
    """FFN output (int16) + residual (int8) -> int16, as the golden layer's second add."""
    cfg = preset("tiny").replace(name="add-16-8-16", vector_lanes=3)
    report = run_bench(
        component=ResidualAdd(config=cfg, a_bits=16, b_bits=8, out_bits=16),
        bench="sim.benches.vector",
        case=cfg.name,
        params={"unit": "add", "config": cfg.to_dict(), "beats": 120, "seed": 9,
                "bits": [16, 8, 16]},
    )
    assert report["no_stalls"]["cycles"] == 120 - 1 + ResidualAdd.LATENCY
