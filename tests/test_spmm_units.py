"""Amaranth-simulator unit tests of the PE, the packed PE pair and the index mux (fast, no
Verilog)."""

import random

import pytest
from amaranth.sim import Simulator

from hw.spmm.index_mux import IndexMux
from hw.spmm.pe import ProcessingElement
from hw.spmm.pe_pair import PackedPEPair

SEED = 31


@pytest.mark.parametrize("m", [4, 8, 16])
def test_index_mux_selects_every_position(m):
    dut = IndexMux(m=m)
    rng = random.Random(SEED + m)

    async def bench(ctx):
        for _ in range(40):
            acts = [rng.randrange(256) for _ in range(m)]
            ctx.set(dut.acts, acts)
            for sel in range(m):
                ctx.set(dut.sel, sel)
                assert ctx.get(dut.out) == acts[sel]

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()


def test_index_mux_rejects_bad_m():
    with pytest.raises(ValueError, match="m must be 4, 8 or 16, got 5"):
        IndexMux(m=5)


@pytest.mark.parametrize("m", [4, 8])
def test_pe_accumulates_with_two_cycle_latency(m):
    """Drive random steps with random enable gaps; the accumulator must follow a Python model
    and ``total`` must show the sum the next enabled edge stores."""
    dut = ProcessingElement(m=m)
    rng = random.Random(SEED * m)
    steps = []
    for _tile in range(6):
        length = rng.randrange(1, 9)
        uns = rng.random() < 0.5  # the tile's activations are uint8 (else int8)
        for i in range(length):
            steps.append({"first": i == 0, "weight": rng.randrange(-128, 128),
                          "sel": rng.randrange(m), "uns": uns,
                          "acts": [_act(rng, uns) for _ in range(m)]})

    async def bench(ctx):
        model_acc = 0
        prod = None  # (product, first) in the multiply register
        for step in steps + [None, None]:
            while rng.random() < 0.3:  # a frozen cycle changes nothing
                ctx.set(dut.en, 0)
                before = ctx.get(dut.acc)
                await ctx.tick()
                assert ctx.get(dut.acc) == before
            ctx.set(dut.en, 1)
            if step is not None:
                ctx.set(dut.weight, step["weight"])
                ctx.set(dut.sel, step["sel"])
                ctx.set(dut.acts, [a & 0xFF for a in step["acts"]])
                ctx.set(dut.act_unsigned, step["uns"])
            ctx.set(dut.accumulate, prod is not None)
            ctx.set(dut.first, bool(prod and prod[1]))
            if prod is not None:
                want = (0 if prod[1] else model_acc) + prod[0]
                assert ctx.get(dut.total) == want
                model_acc = want
            await ctx.tick()
            assert ctx.get(dut.acc) == model_acc
            prod = None if step is None else (step["weight"] * step["acts"][step["sel"]],
                                              step["first"])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_packed_pe_pair_rejects_bad_m():
    with pytest.raises(ValueError, match="PackedPEPair m must be 4, 8 or 16, got 3"):
        PackedPEPair(m=3)


@pytest.mark.parametrize("cls", [ProcessingElement, PackedPEPair])
@pytest.mark.parametrize("width", [17, 33, 24.0])
def test_pe_rejects_bad_width(cls, width):
    with pytest.raises(ValueError, match=rf"width must be 18..32 bits, got {width!r}"):
        cls(m=4, width=width)


#: operand edges: int8 weights; activations are int8, or uint8 (a tile's all, act_unsigned)
PAIR_WEIGHTS = [-128, -127, -1, 0, 1, 127]
PAIR_ACTS = {False: [-128, -1, 0, 1, 127], True: [0, 1, 127, 128, 255]}


def _act(rng: random.Random, uns: bool) -> int:
    """A random activation's value: uint8 when ``uns``, else int8 (the DUT gets its byte)."""
    return rng.randrange(256) if uns else rng.randrange(-128, 128)


def run_pair(m: int, steps: list[dict], rng: random.Random, gaps: float, seed: int):
    """Drive ``steps`` (``first``, ``weight``, ``sel``, ``acts`` = two lanes of M) through a
    PackedPEPair with random enable gaps; both lanes' ``total`` and ``acc`` must follow a
    Python model of two independent ProcessingElements (plain integers)."""
    dut = PackedPEPair(m=m)

    async def bench(ctx):
        model_acc = [0, 0]
        prod = None  # ([product lo, product hi], first, step) in the multiply register
        for step in steps + [None, None]:
            while rng.random() < gaps:  # a frozen cycle changes nothing
                ctx.set(dut.en, 0)
                before = [ctx.get(dut.acc[i]) for i in range(2)]
                await ctx.tick()
                assert [ctx.get(dut.acc[i]) for i in range(2)] == before, f"seed {seed}"
            ctx.set(dut.en, 1)
            if step is not None:
                ctx.set(dut.weight, step["weight"])
                ctx.set(dut.sel, step["sel"])
                ctx.set(dut.acts, [[a & 0xFF for a in lane] for lane in step["acts"]])
                ctx.set(dut.act_unsigned, step["uns"])
            ctx.set(dut.accumulate, prod is not None)
            ctx.set(dut.first, bool(prod and prod[1]))
            if prod is not None:
                want = [(0 if prod[1] else model_acc[i]) + prod[0][i] for i in range(2)]
                got = [ctx.get(dut.total[i]) for i in range(2)]
                assert got == want, f"seed {seed}: step {prod[2]}: total {got}, expected {want}"
                model_acc = want
            await ctx.tick()
            assert [ctx.get(dut.acc[i]) for i in range(2)] == model_acc, f"seed {seed}"
            prod = None if step is None else (
                [step["weight"] * step["acts"][i][step["sel"]] for i in range(2)],
                step["first"], step)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("m", [4, 8])
def test_packed_pe_pair_exact_at_operand_edges(m):
    """Every edge weight times every pair of edge activations (both lanes), each as a one-step
    tile, then accumulated over a long tile: the packed product's extraction is exact."""
    seed = SEED + 100 * m
    print(f"seed {seed}")
    rng = random.Random(seed)
    steps = []
    for uns, edges in PAIR_ACTS.items():
        combos = [(w, lo, hi) for w in PAIR_WEIGHTS for lo in edges for hi in edges]
        for first_only in (True, False):  # one-step tiles, then one tile summing all combos
            for i, (w, lo, hi) in enumerate(combos):
                sel = rng.randrange(m)
                acts = [[rng.choice(edges) for _ in range(m)] for _ in range(2)]
                acts[0][sel], acts[1][sel] = lo, hi
                steps.append({"first": first_only or i == 0, "weight": w, "sel": sel,
                              "uns": uns, "acts": acts})
    run_pair(m, steps, rng, gaps=0.0, seed=seed)


@pytest.mark.parametrize("m", [4, 16])
def test_packed_pe_pair_accumulates_like_two_pes(m):
    """Random tiles with random enable gaps: both lanes follow Python sums."""
    seed = SEED * m + 7
    print(f"seed {seed}")
    rng = random.Random(seed)
    steps = []
    for _tile in range(8):
        length = rng.randrange(1, 12)
        uns = rng.random() < 0.5
        for i in range(length):
            steps.append({"first": i == 0, "weight": rng.randrange(-128, 128),
                          "sel": rng.randrange(m), "uns": uns,
                          "acts": [[_act(rng, uns) for _ in range(m)] for _ in range(2)]})
    run_pair(m, steps, rng, gaps=0.3, seed=seed)
