"""Requantizer: int32 accumulators -> int8, a pipelined stream stage.

Reproduces :func:`sw.ref.quant.requantize_int` bit for bit.
"""

from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.lib.checks import refuse
from hw.lib.fixedpoint import round_shift, saturate
from sw.ref.fixedpoint import MAX_SHIFT, MULT_BITS
from sw.ref.quant import V_BITS, V_MAX, V_MIN, int_range

__all__ = ["Requantizer", "requant_lane_layout"]

SHIFT_BITS = MAX_SHIFT.bit_length()


def requant_lane_layout(acc_bits: int = 32) -> data.StructLayout:
    """One lane of input: an accumulator with its channel's multiplier, shift and bias."""
    return data.StructLayout({
        "acc": signed(acc_bits),
        "bias": signed(32),
        "mult": unsigned(MULT_BITS),
        "shift": unsigned(SHIFT_BITS),
    })


class Requantizer(wiring.Component):
    """``y = sat(round_shift(sat27(acc + bias) * mult, shift))`` on ``lanes`` values per beat,
    saturated to int8 (or int16 for the residual path, ``out_bits=16``).

    The per-channel parameters travel with each accumulator, so the stage has no state of its
    own and serves any channel order (the engine attaches its rows' parameters).

    Parameters
    ----------
    lanes : int
        Values per stream beat (>= 1).
    out_bits : int
        8 or 16: the output width (:attr:`sw.ref.quant.RequantParams.out_bits`).

    Ports
    -----
    i : In(stream.Signature(ArrayLayout(requant_lane_layout(), lanes)))
        Accumulators with their multipliers (``MULT_BITS`` unsigned), shifts (0..MAX_SHIFT)
        and int32 biases.
    o : Out(stream.Signature(ArrayLayout(signed(out_bits), lanes)))
        Requantized values, in input order.

    Latency / throughput / resources
    --------------------------------
    * Latency: ``LATENCY = 4`` cycles from an accepted input beat to its output beat
      (bias add + saturate | multiply | round + shift | saturate).
    * Throughput: one beat per cycle (``n`` beats take ``n + LATENCY`` cycles with no stalls).
    * Resources per lane: one 27 x ``MULT_BITS`` multiplier (``acc + bias`` saturates to
      ``V_BITS`` = 27 bits: one DSP48E2), a 34-bit adder, a 42-bit barrel shifter.
    * Backpressure: the four stages advance together when the output register is empty or
      accepted, so ``i.ready`` depends combinationally on ``o.ready`` (one AND-OR gate; no path
      through the datapath).
    """

    LATENCY = 4

    def __init__(self, *, lanes: int = 1, out_bits: int = 8):
        if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
            refuse(self, f"Requantizer lanes must be an int >= 1, got {lanes!r}")
        if out_bits not in (8, 16):
            refuse(self, f"Requantizer out_bits must be 8 or 16, got {out_bits!r}")
        self.lanes, self.out_bits = lanes, out_bits
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(requant_lane_layout(), lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(out_bits), lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self.lanes
        prod_bits = V_BITS + MULT_BITS + 1  # signed(V_BITS) x unsigned(MULT_BITS) as signed

        # stage valid flags; all stages advance together on `advance`
        v1, v2, v3, v4 = Signal(), Signal(), Signal(), Signal()
        advance = Signal()
        m.d.comb += [
            advance.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(advance),
            self.o.valid.eq(v4),
        ]
        with m.If(advance):
            m.d.sync += [v1.eq(self.i.valid), v2.eq(v1), v3.eq(v2), v4.eq(v3)]

        for lane in range(lanes):
            src = self.i.payload[lane]
            # stage 1: saturating bias add
            s1_val = Signal(signed(V_BITS), name=f"sat_{lane}")
            s1_mult = Signal(unsigned(MULT_BITS), name=f"mult1_{lane}")
            s1_shift = Signal(unsigned(SHIFT_BITS), name=f"shift1_{lane}")
            total = Signal(signed(34), name=f"sum_{lane}")
            m.d.comb += total.eq(src.acc + src.bias)
            # stage 2: multiply
            s2_prod = Signal(signed(prod_bits), name=f"prod_{lane}")
            s2_shift = Signal(unsigned(SHIFT_BITS), name=f"shift2_{lane}")
            # stage 3: round-shift; stage 4: saturate
            rounded = round_shift(m, s2_prod, s2_shift, name=f"rounded_{lane}")
            s3_val = Signal.like(rounded, name=f"shifted_{lane}")
            lo, hi = int_range(self.out_bits)
            out = saturate(m, s3_val, lo, hi, signed(self.out_bits), name=f"out_{lane}")
            bias_sat = saturate(m, total, V_MIN, V_MAX, signed(V_BITS), name=f"bsat_{lane}")

            with m.If(advance):
                m.d.sync += [
                    s1_val.eq(bias_sat),
                    s1_mult.eq(src.mult),
                    s1_shift.eq(src.shift),
                    s2_prod.eq(s1_val * s1_mult),
                    s2_shift.eq(s1_shift),
                    s3_val.eq(rounded),
                    self.o.payload[lane].eq(out),
                ]
        return m
