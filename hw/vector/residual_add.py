"""Residual add: int8 + int8 with different scales -> int8 (:func:`sw.ref.quant.add_int`)."""

from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.lib.checks import refuse, require_config
from hw.lib.fixedpoint import round_shift, saturate
from hw.vector.requant import SHIFT_BITS
from sw.ref.quant import ADD_MULT_BITS, int_range

__all__ = ["ResidualAdd"]


class ResidualAdd(wiring.Component):
    """``y = sat(round_shift(a * m_a + b * m_b, shift))`` on ``vector_lanes`` pairs per beat;
    ``a``, ``b`` and ``y`` are int8 or int16 (the residual path, ``sw.ref.quant.AddParams``).

    Parameters
    ----------
    config : AcceleratorConfig
        ``vector_lanes`` (P).
    a_bits, b_bits, out_bits : int
        8 or 16 each.

    Ports
    -----
    m_a, m_b : In(unsigned(ADD_MULT_BITS)), shift : In(unsigned(6))
        The operation's :class:`sw.ref.quant.AddParams`; held constant while it streams.
    i : In(stream of {a: ArrayLayout(signed(a_bits), P), b: ArrayLayout(signed(b_bits), P)})
    o : Out(stream of ArrayLayout(signed(out_bits), P))

    Latency / throughput / resources
    --------------------------------
    ``LATENCY = 2`` cycles (multiply | add, round, saturate); one beat per cycle, ``n`` beats
    take ``n - 1 + LATENCY`` cycles from the first input to the last output. Per lane: two
    ``bits`` x 24-bit multipliers, a 26..42-bit adder and a barrel shifter. ``i.ready`` follows
    ``o.ready`` through one gate. Error bound: 1 LSB (``sw.ref.quant.add_int``).
    """

    LATENCY = 2

    def __init__(self, *, config: AcceleratorConfig, a_bits: int = 8, b_bits: int = 8,
                 out_bits: int = 8):
        require_config(self, config)
        for name, bits in (("a_bits", a_bits), ("b_bits", b_bits), ("out_bits", out_bits)):
            if bits not in (8, 16):
                refuse(self, f"ResidualAdd {name} must be 8 or 16, got {bits!r}")
        self.config = config
        self.a_bits, self.b_bits, self.out_bits = a_bits, b_bits, out_bits
        lanes = config.vector_lanes
        super().__init__({
            "m_a": In(unsigned(ADD_MULT_BITS)),
            "m_b": In(unsigned(ADD_MULT_BITS)),
            "shift": In(unsigned(SHIFT_BITS)),
            "i": In(stream.Signature(data.StructLayout({
                "a": data.ArrayLayout(signed(a_bits), lanes),
                "b": data.ArrayLayout(signed(b_bits), lanes)}))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(out_bits), lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        advance = Signal()
        v1 = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance)]
        with m.If(advance):
            m.d.sync += [v1.eq(self.i.valid), self.o.valid.eq(v1)]
        for lane in range(self.config.vector_lanes):
            pa = Signal(signed(self.a_bits + ADD_MULT_BITS + 1), name=f"pa_{lane}")
            pb = Signal(signed(self.b_bits + ADD_MULT_BITS + 1), name=f"pb_{lane}")
            total = Signal(signed(max(self.a_bits, self.b_bits) + ADD_MULT_BITS + 2),
                           name=f"sum_{lane}")
            m.d.comb += total.eq(pa + pb)
            rounded = round_shift(m, total, self.shift, name=f"rounded_{lane}")
            lo, hi = int_range(self.out_bits)
            out = saturate(m, rounded, lo, hi, signed(self.out_bits), name=f"out_{lane}")
            with m.If(advance):
                m.d.sync += [
                    pa.eq(self.i.payload.a[lane] * self.m_a),
                    pb.eq(self.i.payload.b[lane] * self.m_b),
                    self.o.payload[lane].eq(out),
                ]
        return m
