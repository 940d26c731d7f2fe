"""hw/top/axi_reader.py on the simulator: every word right, and (memory always ready) the
cycles of each request as the kernel's cycle model (sw.perf.top.read_cycles) counts them."""

import random

import pytest

from hw.top.axi_reader import AxiReader
from sim.runner import run_bench
from sw.perf import top

pytestmark = pytest.mark.sim


def _requests(seed: int, beat: int, max_burst: int) -> list[list[int]]:
    rng = random.Random(seed)
    reqs = [[0, 1], [4096 - beat, 3], [4096 - 2 * beat, 2 * max_burst + 1]]
    for _ in range(12):
        words = rng.choice([1, 2, max_burst - 1, max_burst, max_burst + 1,
                            rng.randrange(1, 5 * max_burst)])
        reqs.append([beat * rng.randrange(0, (3 * 4096) // beat), words])
    return reqs


@pytest.mark.parametrize("beat, max_burst, outstanding", [
    (4, 16, 4), (4, 16, 1), (64, 64, 2), (16, 4, 3)])
@pytest.mark.parametrize("stall", [False, True])
def test_reads_match_memory_and_the_cycle_model(beat, max_burst, outstanding, stall):
    seed = beat + max_burst + 7 * outstanding
    reqs = _requests(seed, beat, max_burst)
    rep = run_bench(component=AxiReader(data_width=8 * beat, max_burst=max_burst,
                                        outstanding=outstanding),
                    bench="sim.benches.axi_reader",
                    case=f"b{beat}-m{max_burst}-o{outstanding}-{'stall' if stall else 'ready'}",
                    params={"requests": reqs, "seed": seed,
                            "mem_bytes": max(a + beat * w for a, w in reqs),
                            "stall": stall})
    model = [top.read_cycles(a, w, beat, max_burst, outstanding) for a, w in reqs]
    if stall:
        assert all(c >= m for c, m in zip(rep["cycles"], model, strict=True))
    else:
        assert rep["cycles"] == model, list(zip(reqs, rep["cycles"], model))
