"""cocotb bench of the requantizer on the emitted Verilog (SIM=icarus|verilator)."""

import pytest

from hw.vector.requant import Requantizer
from sim.runner import run_bench

pytestmark = pytest.mark.sim


@pytest.mark.parametrize(("lanes", "out_bits"), [(1, 8), (4, 8), (3, 16)])
def test_requantizer_bench(lanes, out_bits):
    seed = 1000 + lanes
    report = run_bench(
        component=Requantizer(lanes=lanes, out_bits=out_bits),
        bench="sim.benches.requant",
        case=f"lanes{lanes}-out{out_bits}-seed{seed}",
        params={"lanes": lanes, "beats": 300, "seed": seed, "out_bits": out_bits},
    )
    # the bench measured every stall pattern; the no-stall one equals the latency formula
    assert set(report) == {"no_stalls", "input_idles", "output_backpressure",
                           "idles_and_backpressure"}
    assert report["no_stalls"]["cycles"] == 300 - 1 + Requantizer.LATENCY
    assert report["output_backpressure"]["cycles"] > report["no_stalls"]["cycles"]
