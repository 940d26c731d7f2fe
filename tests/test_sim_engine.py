"""cocotb benches of the spmm engine: bit-exact against sw/ref, cycle-exact against sw/perf."""

import pytest

from hw.config import preset
from hw.spmm.engine import SpmmEngine
from hw.spmm.unit import SpmmUnit
from sim.runner import run_bench

pytestmark = pytest.mark.sim

# (N, M) patterns of issue 3; M is a hardware parameter, N a run-time one
PATTERNS = {4: [1, 2, 3, 4], 8: [1, 2, 4, 8], 16: [2, 16]}


def cases(m: int, seed: int, max_k: int = 0) -> list[dict]:
    """Stimulus knobs: shapes (K not a multiple of M or of the tile, one token, more tokens
    than columns, more rows than PE rows), all-zero and saturating operands, uint8 activations;
    with ``max_k``, saturating reductions of the longest K, whose sums reach the bound the
    accumulators are sized by (``config.sum_bits``)."""
    out = []
    for i, n in enumerate(PATTERNS[m]):
        out += [
            {"name": f"{n}:{m}-random", "rows": 7, "k": 5 * m + 3, "tokens": 6, "n": n,
             "kind": "random", "seed": seed + i},
            {"name": f"{n}:{m}-one-token", "rows": 3, "k": 2 * m, "tokens": 1, "n": n,
             "kind": "random", "seed": seed + 10 + i},
        ]
    out += [
        {"name": "zero", "rows": 4, "k": 3 * m, "tokens": 4, "n": 1, "kind": "zero",
         "seed": seed + 20},
        {"name": "saturating-dense", "rows": 5, "k": 4 * m, "tokens": 5, "n": m,
         "kind": "saturating", "seed": seed + 21},
        {"name": "uint8-acts-dense", "rows": 6, "k": 3 * m - 1, "tokens": 9, "n": m,
         "kind": "random", "act_unsigned": True, "seed": seed + 22},
        {"name": "saturating-uint8", "rows": 2, "k": m, "tokens": 3, "n": m,
         "kind": "saturating", "act_unsigned": True, "seed": seed + 23},
    ]
    if max_k:
        out += [
            {"name": "saturating-max-k", "rows": 2, "k": max_k, "tokens": 2, "n": m,
             "kind": "saturating", "seed": seed + 24},
            {"name": "saturating-uint8-max-k", "rows": 2, "k": max_k, "tokens": 3, "n": m,
             "kind": "saturating", "act_unsigned": True, "seed": seed + 25},
        ]
    return out


def bench_engine(cfg, seed: int):
    """All cases under every stall pattern: bit-exact, and cycle-exact without stalls."""
    report = run_bench(
        component=SpmmEngine(config=cfg),
        bench="sim.benches.engine",
        case=cfg.name,
        params={"config": cfg.to_dict(), "cases": cases(cfg.m, seed, cfg.max_k)},
    )
    for case in report["no_stalls"]:
        assert case["rtl_cycles"] == case["model_cycles"], case
    assert len(report) == 4


@pytest.mark.parametrize("m", [4, 8, 16])
@pytest.mark.parametrize(("rows", "cols"), [(4, 4), (2, 3)])
def test_engine_bench(rows, cols, m):
    cfg = preset("tiny").replace(name=f"bench-{rows}x{cols}-m{m}", pe_rows=rows, pe_cols=cols,
                                 m=m, n_max=m, max_k=64 * m, max_row=64 * m)
    bench_engine(cfg, seed=100 * m + 10 * rows + cols)


@pytest.mark.parametrize("m", [4, 16])
def test_packed_engine_bench(m):
    """macs_per_dsp = 2 (two columns per multiplier, hw.spmm.pe_pair): the same results and
    the same cycles as the model, which does not know about the packing."""
    rows, cols = 3, 4
    cfg = preset("tiny").replace(name=f"bench-{rows}x{cols}-m{m}-x2", pe_rows=rows,
                                 pe_cols=cols, m=m, n_max=m, max_k=64 * m, max_row=64 * m,
                                 macs_per_dsp=2)
    bench_engine(cfg, seed=5000 + 100 * m + 10 * rows + cols)


@pytest.mark.parametrize("m", [4, 8])
def test_engine_requantized_output_bench(m):
    cfg = preset("tiny").replace(name=f"bench-requant-m{m}", pe_rows=3, pe_cols=4, m=m,
                                 n_max=m, max_k=64 * m)
    report = run_bench(
        component=SpmmUnit(config=cfg),
        bench="sim.benches.engine",
        case=cfg.name,
        params={"config": cfg.to_dict(), "requant": True, "cases": cases(m, 7000 + m)},
    )
    for case in report["no_stalls"]:
        assert case["rtl_cycles"] == case["model_cycles"], case


def test_engine_bench_catches_a_broken_index_mux(monkeypatch):
    """The bench is not vacuous: an engine whose index mux ignores the index must fail it."""
    from amaranth import Module

    from hw.spmm.index_mux import IndexMux
    from sim.runner import BenchFailed

    def broken(self, platform):
        m = Module()
        m.d.comb += self.out.eq(self.acts[0])
        return m

    monkeypatch.setattr(IndexMux, "elaborate", broken)
    cfg = preset("tiny").replace(name="bench-broken-mux", max_k=64)
    with pytest.raises(BenchFailed, match="cocotb tests failed"):
        run_bench(component=SpmmEngine(config=cfg), bench="sim.benches.engine",
                  case=cfg.name, testcase="no_stalls",
                  params={"config": cfg.to_dict(), "cases": cases(4, 1)[:1]})


@pytest.mark.parametrize("macs_per_dsp", [1, 2])
def test_engine_bench_catches_narrow_accumulators(monkeypatch, macs_per_dsp):
    """The max-K cases sit on the accumulators' bound: one bit fewer than
    ``config.sum_bits`` must fail them (the int8 case reaches ``+max_k * 2**14``, the uint8
    one ``-max_k * 255 * 128``), and the engine as built passes them."""
    from hw.config import AcceleratorConfig
    from sim.runner import BenchFailed

    cfg = preset("tiny").replace(name=f"bench-sum-bits-x{macs_per_dsp}", pe_rows=2,
                                 pe_cols=2, max_k=256, max_row=256, macs_per_dsp=macs_per_dsp)
    assert cfg.sum_bits == 24  # +256 * 2**14 = 2**22 and -256 * 255 * 128 need 24 bits
    edge = [c for c in cases(4, 11, cfg.max_k) if c["name"].endswith("max-k")]
    params = {"config": cfg.to_dict(), "cases": edge}
    run_bench(component=SpmmEngine(config=cfg), bench="sim.benches.engine", case=cfg.name,
              testcase="no_stalls", params=params)
    for case in edge:
        monkeypatch.setattr(AcceleratorConfig, "sum_bits", property(lambda self: 23))
        with pytest.raises(BenchFailed, match="cocotb tests failed"):
            run_bench(component=SpmmEngine(config=cfg), bench="sim.benches.engine",
                      case=f"{cfg.name}-narrow-{case['name']}", testcase="no_stalls",
                      params={"config": cfg.to_dict(), "cases": [case]})
        monkeypatch.undo()
