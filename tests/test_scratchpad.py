"""Amaranth-simulator test of the banked scratchpad (fast, no Verilog): wide writes and reads
at every alignment against a byte-array model."""

import random

import pytest
from amaranth.sim import Simulator

from hw.config import preset
from hw.top.scratchpad import Scratchpad

SEED = 57


@pytest.mark.parametrize("lanes", [1, 2, 4, 8])
def test_wide_ports_move_lanes_words_at_any_alignment(lanes):
    """Random writes (random byte enables per lane) and reads on both ports, addresses of
    every residue mod ``lanes``: each lane of a read is the word at ``addr + lane``, a read
    in the cycle of a write to the same word returns the old word, and a port's data holds
    while it does not read."""
    cfg = preset("tiny").replace(spm_kib=1, spm_lanes=lanes)
    words = cfg.spm_bytes // 4
    dut = Scratchpad(config=cfg)
    rng = random.Random(SEED + lanes)
    mem = [0] * words
    print(f"seed {SEED + lanes}")

    def expect(addr):
        return [mem[(addr + i) % words] for i in range(lanes)]

    def lanes_of(value):
        return [(value >> (32 * i)) & 0xFFFF_FFFF for i in range(lanes)]

    async def bench(ctx):
        held = {"a": None, "b": None}  # what each port shows (after its last read)
        for _ in range(400):
            w_addr = rng.randrange(words - lanes + 1)
            w_data = [rng.getrandbits(32) for _ in range(lanes)]
            w_en = [rng.getrandbits(4) if rng.random() < 0.7 else 0 for _ in range(lanes)]
            reads = {}
            for port in ("a", "b"):
                if rng.random() < 0.6:
                    reads[port] = rng.randrange(words - lanes + 1)
            ctx.set(dut.w_addr, w_addr)
            ctx.set(dut.w_data, sum(d << (32 * i) for i, d in enumerate(w_data)))
            ctx.set(dut.w_en, sum(e << (4 * i) for i, e in enumerate(w_en)))
            for port in ("a", "b"):
                ctx.set(getattr(dut, f"r{port}_en"), port in reads)
                ctx.set(getattr(dut, f"r{port}_addr"), reads.get(port, 0))
            before = {port: expect(addr) for port, addr in reads.items()}
            await ctx.tick()
            for i, (d, e) in enumerate(zip(w_data, w_en)):
                old = mem[w_addr + i]
                mask = sum(0xFF << (8 * b) for b in range(4) if e >> b & 1)
                mem[w_addr + i] = (old & ~mask) | (d & mask)
            held.update(before)
            for port in ("a", "b"):
                if held[port] is not None:
                    got = lanes_of(ctx.get(getattr(dut, f"r{port}_data")))
                    assert got == held[port], (port, reads.get(port))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_spm_lanes_is_validated():
    from hw.config import ConfigError

    with pytest.raises(ConfigError, match=r"spm_lanes = 6: must be a power of two"):
        preset("tiny").replace(spm_lanes=6)
