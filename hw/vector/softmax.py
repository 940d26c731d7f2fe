"""Row softmax unit: int32 scores -> uint8 probabilities, rows buffered on chip.

Reproduces :func:`sw.ref.softmax.softmax_int` bit for bit (the algorithm and its error bound
are documented there).
"""

from __future__ import annotations

import math

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.lib.checks import require_config
from hw.lib.fixedpoint import round_shift
from hw.vector.requant import SHIFT_BITS
from sw.ref.fixedpoint import MULT_BITS, UINT8_MAX
from sw.ref.softmax import EXP_BITS, EXP_C0, EXP_C1, FRAC_BITS, RECIP_BITS, SEG_SHIFT

__all__ = ["SoftmaxUnit", "softmax_layouts"]

#: quotient bits of the per-row reciprocal r = floor((255 << RECIP_BITS) / sum), sum >= 2**EXP_BITS
RECIP_Q_BITS = (UINT8_MAX << (RECIP_BITS - EXP_BITS)).bit_length()


def softmax_layouts(config: AcceleratorConfig) -> dict[str, data.Layout]:
    P = config.softmax_lanes
    return {
        "cmd": data.StructLayout({
            "length": unsigned(config.max_row.bit_length()),  # L, 1..max_row
            "mult": unsigned(MULT_BITS),  # sw.ref.softmax.SoftmaxParams
            "shift": unsigned(SHIFT_BITS),
        }),
        "i": data.ArrayLayout(data.StructLayout({"score": signed(32), "keep": unsigned(1)}), P),
        "o": data.ArrayLayout(unsigned(8), P),
    }


class SoftmaxUnit(wiring.Component):
    """Row-wise integer softmax with a key mask, ``P = softmax_lanes`` elements per cycle.

    A row of ``L`` scores (``1 <= L <= max_row``) arrives as ``nb = ceil(L/P)`` beats and
    leaves as ``nb`` beats of uint8 probabilities (``q / 255``); lanes past ``L`` in the last
    beat are ignored on input and 0 on output. Masked keys (``keep = 0``) get 0; a fully
    masked row is all zeros.

    Structure: an *ingest* stage writes the row into one of two on-chip banks while tracking
    the row max; a *normalise* stage then reads the bank twice: pass 1 computes every
    ``e_i = 2**-u_i`` (shift + piecewise-linear polynomial) and their sum, a restoring divider
    computes the row's reciprocal, pass 2 recomputes ``e_i`` and outputs
    ``round_shift(e_i * r, RECIP_BITS)``. Ingest of row ``j+1`` overlaps normalisation of row
    ``j``.

    Parameters
    ----------
    config : AcceleratorConfig
        ``softmax_lanes`` (P) and ``max_row`` (bank depth ``ceil(max_row / P)``).

    Ports
    -----
    cmd : In(stream of {length, mult, shift})
        One per row: its length and :class:`sw.ref.softmax.SoftmaxParams`.
    i : In(stream of P x {score: int32, keep: 1})
    o : Out(stream of P x uint8)

    Latency / throughput / resources
    --------------------------------
    * Ingest takes the row's ``cmd`` and then ``nb`` beats, one per cycle, and hands the row
      over one cycle after its last beat, as soon as the normalise stage is free (the next
      ``cmd`` is taken in that same cycle).
    * Normalise, from the hand-over edge: pass-1 reads (``nb``), the exp pipeline's drain
      (``PIPE``), the divider (``1 + DIV_CYCLES``), pass-2 reads (``nb``) and drain
      (``PIPE``): the last output beat is taken ``2 * nb + OUT_DELAY`` cycles after the
      hand-over (``OUT_DELAY = 2 * PIPE + DIV_CYCLES + 2`` = 22, the divider settling
      ``DIV_RADIX_BITS`` = 2 of the reciprocal's 16 bits per cycle: ``DIV_CYCLES`` = 8) and
      the stage takes the next row ``2 * nb + ROW_OVERHEAD`` cycles after it
      (``ROW_OVERHEAD = OUT_DELAY + 2`` = 24).
    * Steady state with no stalls: one row every ``2 * nb + ROW_OVERHEAD`` cycles (ingest of
      the next row overlaps). :func:`sw.perf.vector.softmax_cycles` models any sequence of
      rows exactly; the benches check it against the RTL. (The target of one row every
      ``nb`` cycles needs a separate exp stage with its own buffer and a pipelined divider.)
    * Resources: 2 banks of ``ceil(max_row / P)`` x ``33 P`` bits; per lane a 33 x 15-bit and a
      17 x 5-bit multiplier (exponent) and a 23 x 16-bit one (normalise); one divider.
    """

    PIPE = 6  #: exp pipeline: memory read, d, d * A, u (variable shift), (c0, c1 * l), e
    DIV_RADIX_BITS = 2  #: quotient bits the divider settles per cycle (chained steps)
    DIV_CYCLES = RECIP_Q_BITS // DIV_RADIX_BITS
    assert RECIP_Q_BITS % DIV_RADIX_BITS == 0, "the divider settles whole quotient digits"
    OUT_DELAY = 2 * PIPE + DIV_CYCLES + 2
    ROW_OVERHEAD = OUT_DELAY + 2

    def __init__(self, *, config: AcceleratorConfig):
        require_config(self, config)
        self.config = config
        lay = softmax_layouts(config)
        super().__init__({
            "cmd": In(stream.Signature(lay["cmd"])),
            "i": In(stream.Signature(lay["i"])),
            "o": Out(stream.Signature(lay["o"])),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        P = cfg.softmax_lanes
        NB = math.ceil(cfg.max_row / P)
        lay = softmax_layouts(cfg)
        sum_bits = EXP_BITS + 1 + max(1, cfg.max_row.bit_length())

        m.submodules.rows = rows = Memory(shape=lay["i"], depth=2 * NB, init=[])
        wr = rows.write_port()
        rd = rows.read_port()

        # -- ingest: cmd, beats -> bank, row max ---------------------------------------------
        a_cmd = Signal(lay["cmd"])
        a_have = Signal()  # a row is being ingested
        a_pending = Signal()  # a complete row waits for the normalise stage
        a_bank = Signal()
        a_beat = Signal(range(NB + 1))
        a_max = Signal(signed(32))
        a_any = Signal()
        a_nb = Signal(range(NB + 1))
        m.d.comb += a_nb.eq((a_cmd.length + P - 1) // P if P > 1 else a_cmd.length)
        handoff = Signal()

        m.d.comb += [
            self.cmd.ready.eq(~a_have & (~a_pending | handoff)),
            self.i.ready.eq(a_have),
        ]
        take = self.i.valid & self.i.ready
        # lanes past L are masked; the running max over the beat's kept lanes
        keep = [Signal(name=f"keep_{j}") for j in range(P)]
        beat_max = Signal(signed(32))
        beat_any = Signal()
        for j in range(P):
            m.d.comb += keep[j].eq(self.i.payload[j].keep & (a_beat * P + j < a_cmd.length))
        m.d.comb += beat_any.eq(Cat(*keep).any())
        cur, cur_any = a_max, a_any
        for j in range(P):
            score = self.i.payload[j].score
            nxt = Signal(signed(32), name=f"runmax_{j}")
            m.d.comb += nxt.eq(Mux(keep[j] & (~cur_any | (score > cur)), score, cur))
            cur, cur_any = nxt, cur_any | keep[j]
        m.d.comb += beat_max.eq(cur)

        m.d.comb += [
            wr.addr.eq(a_bank * NB + a_beat),
            wr.en.eq(take),
        ]
        for j in range(P):
            m.d.comb += [
                wr.data[j].score.eq(self.i.payload[j].score),
                wr.data[j].keep.eq(keep[j]),
            ]
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [a_cmd.eq(self.cmd.payload), a_have.eq(1), a_beat.eq(0), a_any.eq(0)]
        with m.If(take):
            m.d.sync += [a_beat.eq(a_beat + 1), a_max.eq(beat_max), a_any.eq(a_any | beat_any)]
            with m.If(a_beat + 1 == a_nb):
                m.d.sync += [a_have.eq(0), a_pending.eq(1)]
        with m.If(handoff):
            m.d.sync += [a_bank.eq(~a_bank), a_pending.eq(0)]

        # -- normalise: two passes over the bank ---------------------------------------------
        b_bank = Signal()
        b_nb = Signal(range(NB + 1))
        b_max = Signal(signed(32))
        b_mult = Signal(unsigned(MULT_BITS))
        b_shift = Signal(unsigned(SHIFT_BITS))
        b_beat = Signal(range(NB + 1))
        total = Signal(unsigned(sum_bits))
        recip = Signal(unsigned(RECIP_Q_BITS))
        rem = Signal(unsigned(sum_bits + 1))
        div_step = Signal(range(RECIP_Q_BITS + 1))
        pass2 = Signal()

        # pipeline valid flags: read issued (v[0]) ... e ready (v[PIPE-1]); v_out: output reg
        v = [Signal(name=f"v{s}") for s in range(self.PIPE)]
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        issue = Signal()
        busy = Cat(*v).any() | self.o.valid

        with m.FSM(name="norm"):
            with m.State("IDLE"):
                m.d.comb += handoff.eq(a_pending)
                with m.If(a_pending):
                    m.d.sync += [
                        b_bank.eq(a_bank), b_nb.eq(a_nb), b_max.eq(a_max),
                        b_mult.eq(a_cmd.mult), b_shift.eq(a_cmd.shift),
                        b_beat.eq(0), total.eq(0), pass2.eq(0),
                    ]
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += issue.eq(adv)
                with m.If(adv):
                    m.d.sync += b_beat.eq(b_beat + 1)
                    with m.If(b_beat + 1 == b_nb):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(~busy):
                    with m.If(pass2):
                        m.next = "IDLE"
                    with m.Else():
                        # restoring division of (255 << RECIP_BITS) by total, quotient bits
                        # RECIP_Q_BITS-1 .. 0 (the dividend's low bits are all zero)
                        m.d.sync += [rem.eq(UINT8_MAX << (RECIP_BITS - RECIP_Q_BITS)),
                                     div_step.eq(0), recip.eq(0)]
                        m.next = "DIVIDE"
            with m.State("DIVIDE"):  # DIV_RADIX_BITS restoring steps per cycle
                r, q = rem, recip
                for _ in range(self.DIV_RADIX_BITS):
                    shifted = Cat(Const(0, 1), r)
                    fits = (shifted >= total) & (total != 0)
                    r = Mux(fits, shifted - total, shifted)[:len(rem)]
                    q = Cat(fits, q)[:len(recip)]
                m.d.sync += [rem.eq(r), recip.eq(q), div_step.eq(div_step + 1)]
                with m.If(div_step == self.DIV_CYCLES - 1):
                    m.d.sync += [pass2.eq(1), b_beat.eq(0)]
                    m.next = "READ"

        m.d.comb += [
            rd.addr.eq(b_bank * NB + b_beat),
            rd.en.eq(adv),
        ]
        with m.If(adv):
            m.d.sync += v[0].eq(issue)
            for s in range(1, self.PIPE):
                m.d.sync += v[s].eq(v[s - 1])

        # per-lane exponent pipeline (stages 1..PIPE-1 after the read)
        c0_rom = Array(Const(c, EXP_BITS + 1) for c in EXP_C0)
        c1_rom = Array(Const(c, EXP_BITS + 1) for c in EXP_C1)
        e_lanes = []
        for j in range(P):
            word = rd.data[j]
            d1 = Signal(unsigned(33), name=f"d_{j}")
            keep1 = Signal(name=f"keep1_{j}")
            prod2 = Signal(unsigned(33 + MULT_BITS), name=f"dA_{j}")
            keep2 = Signal(name=f"keep2_{j}")
            u_c = round_shift(m, prod2, b_shift, name=f"u_{j}")
            u3 = Signal.like(u_c, name=f"u3_{j}")
            keep3 = Signal(name=f"keep3_{j}")
            c0_3 = Signal(unsigned(EXP_BITS + 1), name=f"c0_{j}")
            t3 = Signal(unsigned(EXP_BITS + 1 + SEG_SHIFT), name=f"c1l_{j}")
            k3 = Signal(range(EXP_BITS + 2), name=f"k_{j}")
            zero3 = Signal(name=f"zero_{j}")
            e4 = Signal(unsigned(EXP_BITS + 1), name=f"e_{j}")
            frac = u3[:FRAC_BITS]
            seg = frac[SEG_SHIFT:]
            low = frac[:SEG_SHIFT]
            kk = u3[FRAC_BITS:]
            y = Signal(signed(EXP_BITS + 3), name=f"y_{j}")
            m.d.comb += y.eq(c0_3 - round_shift(m, t3, SEG_SHIFT, name=f"c1l_r_{j}"))
            with m.If(adv):
                m.d.sync += [
                    d1.eq(Mux(word.keep, b_max - word.score, 0)),
                    keep1.eq(word.keep),
                    prod2.eq(d1 * b_mult),
                    keep2.eq(keep1),
                    u3.eq(u_c),
                    keep3.eq(keep2),
                    c0_3.eq(c0_rom[seg]),
                    t3.eq(c1_rom[seg] * low),
                    k3.eq(Mux(kk > EXP_BITS, EXP_BITS + 1, kk)),
                    zero3.eq(~keep3 | (kk > EXP_BITS)),
                    e4.eq(Mux(zero3, 0, y.as_unsigned() >> k3)),
                ]
            e_lanes.append(e4)

        # pass 1: sum; pass 2: q = round_shift(e * r, RECIP_BITS)
        last = v[self.PIPE - 1]
        with m.If(adv & last & ~pass2):
            m.d.sync += total.eq(total + sum(e_lanes))
        with m.If(adv):
            m.d.sync += self.o.valid.eq(last & pass2)
            for j in range(P):
                q = round_shift(m, e_lanes[j] * recip, RECIP_BITS, name=f"q_{j}")
                m.d.sync += self.o.payload[j].eq(q)
        return m
