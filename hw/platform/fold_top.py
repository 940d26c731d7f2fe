"""A board top for any component: pseudo-random inputs, outputs folded onto one LED."""

from __future__ import annotations

from amaranth import Cat, ClockDomain, ClockSignal, Elaboratable, Module, Signal, Value
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In

__all__ = ["FoldTop"]


class FoldTop(Elaboratable):
    """Drives every input port of ``component`` from a free-running LFSR and XORs every output
    bit into a register shown on LED 0, so that synthesis can neither see constant inputs nor
    drop unobserved logic: place and route then measures the component itself (resources,
    Fmax) with two pins. For quick synthesis checks of one block; the self-test
    (:class:`~hw.platform.ulx3s.Ulx3sSelfTest`) is the functional board top.

    Parameters
    ----------
    component : wiring.Component
        Any component with a flat-able signature (streams included). It runs on the board's
        default clock, whose constraint is the board's oscillator.
    """

    def __init__(self, component: wiring.Component):
        self.component = component

    def elaborate(self, platform):
        m = Module()
        clk = io.Buffer("i", platform.request(platform.default_clk, 0, dir="-"))
        m.submodules.clk = clk
        m.domains.sync = ClockDomain("sync")
        m.d.comb += ClockSignal("sync").eq(clk.i)
        m.submodules.dut = dut = self.component

        ins, outs = [], []
        for _path, member, value in dut.signature.flatten(dut):
            (ins if member.flow == In else outs).append(Value.cast(value))
        width = max(1, sum(len(v) for v in ins))
        # a 64-bit Fibonacci LFSR (x^64 + x^63 + x^61 + x^60 + 1) shifted into a register as
        # wide as all inputs together, so each input bit sees its own pseudo-random sequence
        lfsr = Signal(64, init=1)
        feedback = lfsr[63] ^ lfsr[62] ^ lfsr[60] ^ lfsr[59]
        m.d.sync += lfsr.eq(Cat(feedback, lfsr[:63]))
        stim = Signal(width)
        m.d.sync += stim.eq(Cat(lfsr[:min(64, width)], stim[:max(0, width - 64)]))
        at = 0
        for value in ins:
            m.d.comb += value.eq(stim[at: at + len(value)])
            at += len(value)
        fold = Signal()
        m.d.sync += fold.eq(Cat(*outs).xor() if outs else 0)
        m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += led.o.eq(fold)
        return m
