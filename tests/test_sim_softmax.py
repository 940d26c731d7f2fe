"""cocotb benches of the softmax unit: bit-exact against sw/ref, cycle-exact against sw/perf."""

import math

import numpy as np
import pytest

from hw.config import preset
from hw.vector.softmax import SoftmaxUnit
from sim.runner import run_bench
from sw.perf import vector as model
from sw.ref.softmax import D_MAX, SoftmaxParams, softmax_int

pytestmark = pytest.mark.sim


def rows(max_row: int, seed: int) -> list[dict]:
    lengths = [1, 7, 128, max_row, 33, 2, max_row - 1]
    out = [{"length": L, "kind": "random", "mask": "none", "seed": seed + i}
           for i, L in enumerate(lengths)]
    edge = [("equal", "none"), ("huge", "none"), ("very_negative", "none"), ("peaked", "none"),
            ("random", "partial"), ("random", "full"), ("equal", "partial")]
    out += [{"length": 24 + 5 * i, "kind": k, "mask": mk, "seed": seed + 100 + i}
            for i, (k, mk) in enumerate(edge)]
    return out


@pytest.mark.parametrize("lanes", [1, 4, 5])
def test_softmax_bench(lanes):
    cfg = preset("tiny").replace(name=f"softmax-lanes{lanes}", softmax_lanes=lanes, max_row=160)
    report = run_bench(component=SoftmaxUnit(config=cfg), bench="sim.benches.softmax",
                       case=cfg.name, params={"config": cfg.to_dict(), "rows": rows(160, lanes)})
    assert report["no_stalls"]["rtl_cycles"] == report["no_stalls"]["model_cycles"]
    assert len(report) == 4


def test_model_constants_match_the_hardware():
    assert (SoftmaxUnit.PIPE, SoftmaxUnit.DIV_CYCLES, SoftmaxUnit.OUT_DELAY) == (
        model.SOFTMAX_PIPE, model.SOFTMAX_DIV_CYCLES, model.SOFTMAX_OUT_DELAY)
    assert SoftmaxUnit.ROWS == model.ROWS


def test_rows_the_unit_cannot_hold_are_refused():
    cfg = preset("tiny")
    with pytest.raises(ValueError, match=r"softmax row 1 has length 513; config 'tiny' holds "
                                         r"1..512"):
        model.softmax_cycles(cfg, [4, 513])
    with pytest.raises(ValueError, match="length 0"):
        model.softmax_cycles(cfg, [0])


def test_softmax_bench_longest_rows():
    """Rows of 384 and 512 (the tiny preset's longest row) through 4 lanes, one masked."""
    cfg = preset("tiny")
    assert cfg.max_row == 512
    rows = [{"length": 384, "kind": "random", "mask": "none", "seed": 1},
            {"length": 512, "kind": "random", "mask": "partial", "seed": 2},
            {"length": 512, "kind": "peaked", "mask": "none", "seed": 3}]
    report = run_bench(component=SoftmaxUnit(config=cfg), bench="sim.benches.softmax",
                       case="softmax-tiny-longest", params={"config": cfg.to_dict(), "rows": rows})
    assert report["no_stalls"]["rtl_cycles"] == report["no_stalls"]["model_cycles"]


def test_softmax_bench_many_short_rows():
    """48 rows of one to three beats: the unit holds its 16 rows / 32-beat ring full, rows
    overtake nothing and the ring's addresses wrap."""
    cfg = preset("tiny").replace(name="softmax-short-rows", softmax_lanes=4, max_row=16)
    assert cfg.softmax_ring == 32
    rows = [{"length": 1 + (7 * i) % 12, "kind": "random", "mask": "partial" if i % 5 else "none",
             "seed": 300 + i} for i in range(48)]
    report = run_bench(component=SoftmaxUnit(config=cfg), bench="sim.benches.softmax",
                       case=cfg.name, params={"config": cfg.to_dict(), "rows": rows})
    assert report["no_stalls"]["rtl_cycles"] == report["no_stalls"]["model_cycles"]
    # rows overlap: far fewer cycles than one row at a time (a lone row: 3 nb + OUT_DELAY)
    alone = sum(3 * -(-r["length"] // 4) + SoftmaxUnit.OUT_DELAY for r in rows)
    assert report["no_stalls"]["rtl_cycles"] * 4 < alone


def test_softmax_bench_saturated_differences():
    """Score differences around and far past ``D_MAX`` with a multiplier small enough that
    the saturation of ``d`` shows (a Program may carry any 15-bit multiplier): the RTL
    saturates exactly as sw.ref does."""
    cfg = preset("tiny").replace(name="softmax-saturating", max_row=64)
    mult, shift = 1025, 26  # u(D_MAX) = 1,025: e about ONE / 2 where d saturates, not 0
    rng = np.random.default_rng(0)  # the rows' saturation shows in sw.ref's probabilities
    x = (2**31 - 1) - D_MAX + rng.integers(-4, 5, size=16)
    x[[3, 9]], x[0] = -(2**31), 2**31 - 1
    p = SoftmaxParams(mult, shift, math.nan)
    assert softmax_int(x, p)[3] == softmax_int(x, p)[9] > 0
    rows = [{"length": L, "kind": "saturating", "mask": mk, "seed": 500 + L}
            for L in (17, 64, 40) for mk in ("none", "partial")]
    report = run_bench(component=SoftmaxUnit(config=cfg), bench="sim.benches.softmax",
                       case=cfg.name, params={"config": cfg.to_dict(), "rows": rows,
                                              "params": {"mult": mult, "shift": shift}})
    assert report["no_stalls"]["rtl_cycles"] == report["no_stalls"]["model_cycles"]
