"""Residual add: int8 + int8 with different scales -> int8 (:func:`sw.ref.quant.add_int`)."""

from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.lib.checks import require_config
from hw.lib.fixedpoint import round_shift, saturate
from hw.vector.requant import SHIFT_BITS
from sw.ref.fixedpoint import INT8_MAX, INT8_MIN
from sw.ref.quant import ADD_MULT_BITS

__all__ = ["ResidualAdd"]


class ResidualAdd(wiring.Component):
    """``y = sat8(round_shift(a * m_a + b * m_b, shift))`` on ``vector_lanes`` pairs per beat.

    Parameters
    ----------
    config : AcceleratorConfig
        ``vector_lanes`` (P).

    Ports
    -----
    m_a, m_b : In(unsigned(ADD_MULT_BITS)), shift : In(unsigned(6))
        The operation's :class:`sw.ref.quant.AddParams`; held constant while it streams.
    i : In(stream of {a: ArrayLayout(signed(8), P), b: ArrayLayout(signed(8), P)})
    o : Out(stream of ArrayLayout(signed(8), P))

    Latency / throughput / resources
    --------------------------------
    ``LATENCY = 2`` cycles (multiply | add, round, saturate); one beat per cycle, ``n`` beats
    take ``n - 1 + LATENCY`` cycles from the first input to the last output. Per lane: two
    8 x 24-bit multipliers, a 33-bit adder and a barrel shifter. ``i.ready`` follows
    ``o.ready`` through one gate. Error bound: 1 LSB (``sw.ref.quant.add_int``).
    """

    LATENCY = 2

    def __init__(self, *, config: AcceleratorConfig):
        require_config(self, config)
        self.config = config
        lanes = config.vector_lanes
        pair = data.ArrayLayout(signed(8), lanes)
        super().__init__({
            "m_a": In(unsigned(ADD_MULT_BITS)),
            "m_b": In(unsigned(ADD_MULT_BITS)),
            "shift": In(unsigned(SHIFT_BITS)),
            "i": In(stream.Signature(data.StructLayout({"a": pair, "b": pair}))),
            "o": Out(stream.Signature(pair)),
        })

    def elaborate(self, platform):
        m = Module()
        advance = Signal()
        v1 = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance)]
        with m.If(advance):
            m.d.sync += [v1.eq(self.i.valid), self.o.valid.eq(v1)]
        for lane in range(self.config.vector_lanes):
            pa = Signal(signed(8 + ADD_MULT_BITS + 1), name=f"pa_{lane}")
            pb = Signal(signed(8 + ADD_MULT_BITS + 1), name=f"pb_{lane}")
            total = Signal(signed(8 + ADD_MULT_BITS + 2), name=f"sum_{lane}")
            m.d.comb += total.eq(pa + pb)
            rounded = round_shift(m, total, self.shift, name=f"rounded_{lane}")
            out = saturate(m, rounded, INT8_MIN, INT8_MAX, signed(8), name=f"out_{lane}")
            with m.If(advance):
                m.d.sync += [
                    pa.eq(self.i.payload.a[lane] * self.m_a),
                    pb.eq(self.i.payload.b[lane] * self.m_b),
                    self.o.payload[lane].eq(out),
                ]
        return m
