"""Amaranth-simulator unit tests of the PE and its index mux (fast, no Verilog)."""

import random

import pytest
from amaranth.sim import Simulator

from hw.spmm.index_mux import IndexMux
from hw.spmm.pe import ProcessingElement

SEED = 31


@pytest.mark.parametrize("m", [4, 8, 16])
def test_index_mux_selects_every_position(m):
    dut = IndexMux(m=m)
    rng = random.Random(SEED + m)

    async def bench(ctx):
        for _ in range(40):
            acts = [rng.randrange(-256, 256) for _ in range(m)]
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
        for i in range(length):
            steps.append({"first": i == 0, "weight": rng.randrange(-128, 128),
                          "sel": rng.randrange(m),
                          "acts": [rng.randrange(-128, 256) for _ in range(m)]})

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
                ctx.set(dut.acts, step["acts"])
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
