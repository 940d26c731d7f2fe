"""Row softmax unit: int32 scores -> uint8 probabilities, rows buffered on chip.

Reproduces :func:`sw.ref.softmax.softmax_int` bit for bit (the algorithm and its error bound
are documented there).
"""

from __future__ import annotations

import math

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.lib.checks import require_config
from hw.lib.fixedpoint import round_shift
from hw.lib.rows import row_reader
from hw.vector.requant import SHIFT_BITS
from sw.ref.fixedpoint import MULT_BITS, UINT8_MAX
from sw.ref.softmax import (
    D_BITS,
    D_MAX,
    EXP_BITS,
    EXP_C0,
    EXP_C1,
    FRAC_BITS,
    RECIP_BITS,
    SEG_SHIFT,
)

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

    Structure: four stages, each working on its own row, so rows stream through at one beat
    per cycle:

    * *ingest* writes the row's beats into a ring of ``RING`` beats while tracking its max;
    * *pass 1* reads the row back through the exponent pipeline (shift + piecewise-linear
      polynomial, ``PIPE`` stages), writes every ``e_i = 2**-u_i`` into a second ring at the
      same place and sums them;
    * the reciprocal ``r = floor((255 << RECIP_BITS) / sum)`` comes out of a pipelined
      restoring divider (``DIV_CYCLES`` stages of ``DIV_RADIX_BITS`` quotient bits, a row may
      enter every cycle);
    * *pass 2* reads the ``e_i`` back and outputs ``round_shift(e_i * r, RECIP_BITS)``.

    Row records pass between the stages through FIFOs of ``ROWS`` entries; at most ``ROWS``
    rows are in the unit (from their ``cmd`` to their last pass-2 read) and at most ``RING``
    beats (from ingest to their pass-2 read), so nothing but the output stalls.

    Parameters
    ----------
    config : AcceleratorConfig
        ``softmax_lanes`` (P) and ``max_row`` (``NB = ceil(max_row / P)``; the rings hold
        ``RING = config.softmax_ring`` beats: ``max(32, 2 NB)`` rounded up to a power of 2).

    Ports
    -----
    cmd : In(stream of {length, mult, shift})
        One per row: its length and :class:`sw.ref.softmax.SoftmaxParams`. Taken when ingest
        is free or in the cycle it takes the previous row's last beat (fewer than ``ROWS``
        rows in the unit).
    i : In(stream of P x {score: int32, keep: 1})
    o : Out(stream of P x uint8)

    Latency / throughput / resources
    --------------------------------
    * Steady state: a row every ``nb`` cycles (each stage takes a beat a cycle and the next
      row follows without a gap), as long as ``ROWS`` rows and ``RING`` beats cover a row's
      time in the unit.
    * Latency of a lone row, from its first beat to its last output beat:
      ``3 nb + OUT_DELAY`` cycles (``OUT_DELAY = PIPE + DIV_CYCLES + 5`` = 19: the FIFO
      hand-overs, the exponent pipeline, the sum register, the divider, pass 2's read,
      its ``e`` register and the output register).
    * :func:`sw.perf.vector.softmax_cycles` follows the control cycle by cycle
      (:class:`sw.perf.vector.RowControl`); the benches check it against the RTL.
    * Resources: a ``RING`` x ``33 P``-bit score ring and a ``RING`` x ``(EXP_BITS + 1) P``-bit
      exponent ring; per lane a 26 x 15-bit multiplier (the score difference saturates at
      ``D_MAX``: one DSP48E2) and a 17 x 5-bit product as shifted adds (exponent) and a
      23 x 16-bit multiplier (normalise): two DSP48E2 a lane;
      ``DIV_CYCLES x DIV_RADIX_BITS`` subtractors of the sum's
      width; two FIFOs of ``ROWS`` row records.
    """

    #: exp pipeline: memory read, d (saturated), d * A, u (variable shift), (c0, c1 * l), e
    PIPE = 6
    DIV_RADIX_BITS = 2  #: quotient bits each divider stage settles (chained steps)
    DIV_CYCLES = RECIP_Q_BITS // DIV_RADIX_BITS
    assert RECIP_Q_BITS % DIV_RADIX_BITS == 0, "the divider settles whole quotient digits"
    OUT_DELAY = PIPE + DIV_CYCLES + 5
    ROWS = 16  #: rows in the unit at most (the row FIFOs' depth)

    def __init__(self, *, config: AcceleratorConfig):
        require_config(self, config)
        self.config = config
        lay = softmax_layouts(config)
        super().__init__({
            "cmd": In(stream.Signature(lay["cmd"])),
            "i": In(stream.Signature(lay["i"])),
            "o": Out(stream.Signature(lay["o"])),
        })

    def elaborate(self, platform):  # noqa: C901 - four stages
        m = Module()
        cfg = self.config
        P = cfg.softmax_lanes
        NB = math.ceil(cfg.max_row / P)
        D = cfg.softmax_ring
        ab = D.bit_length() - 1  # ring address bits
        lay = softmax_layouts(cfg)
        sum_bits = EXP_BITS + 1 + max(1, cfg.max_row.bit_length())
        e_lay = data.ArrayLayout(unsigned(EXP_BITS + 1), P)

        m.submodules.scores = scores = Memory(shape=lay["i"], depth=D, init=[])
        m.submodules.exps = exps = Memory(shape=e_lay, depth=D, init=[])
        s_wr, s_rd = scores.write_port(), scores.read_port()
        e_wr, e_rd = exps.write_port(), exps.read_port()

        rec1 = data.StructLayout({"start": unsigned(ab), "nb": range(NB + 1),
                                  "max": signed(32), "mult": unsigned(MULT_BITS),
                                  "shift": unsigned(SHIFT_BITS)})
        rec2 = data.StructLayout({"start": unsigned(ab), "nb": range(NB + 1),
                                  "recip": unsigned(RECIP_Q_BITS)})
        m.submodules.q1 = q1 = fifo.SyncFIFO(width=rec1.size, depth=self.ROWS)
        m.submodules.q2 = q2 = fifo.SyncFIFO(width=rec2.size, depth=self.ROWS)

        # -- ingest: cmd, beats -> score ring, row max ----------------------------------------
        head = Signal(ab + 1)  # beats written (mod 2 RING)
        tail = Signal(ab + 1)  # beats pass 2 has read
        rows = Signal(range(self.ROWS + 1))  # rows in the unit
        a_cmd = Signal(lay["cmd"])
        a_have = Signal()  # a row is being ingested
        a_start = Signal(ab)
        a_beat = Signal(range(NB + 1))
        a_max = Signal(signed(32))
        a_any = Signal()
        a_nb = Signal(range(NB + 1))
        m.d.comb += a_nb.eq((a_cmd.length + P - 1) // P if P > 1 else a_cmd.length)

        m.d.comb += self.i.ready.eq(a_have & ((head - tail)[:ab + 1] < D))
        take = self.i.valid & self.i.ready
        a_last = take & (a_beat + 1 == a_nb)
        m.d.comb += self.cmd.ready.eq((~a_have | a_last) & (rows < self.ROWS))
        # lanes past L are masked; the running max over the beat's kept lanes
        keep = [Signal(name=f"keep_{j}") for j in range(P)]
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

        m.d.comb += [s_wr.addr.eq(head[:ab]), s_wr.en.eq(take)]
        for j in range(P):
            m.d.comb += [s_wr.data[j].score.eq(self.i.payload[j].score),
                         s_wr.data[j].keep.eq(keep[j])]
        done1 = Signal(rec1)
        m.d.comb += [done1.start.eq(a_start), done1.nb.eq(a_nb), done1.max.eq(cur),
                     done1.mult.eq(a_cmd.mult), done1.shift.eq(a_cmd.shift),
                     q1.w_data.eq(done1), q1.w_en.eq(a_last)]
        with m.If(take):
            m.d.sync += [head.eq(head + 1), a_beat.eq(a_beat + 1), a_max.eq(cur),
                         a_any.eq(a_any | beat_any)]
            with m.If(a_last):
                m.d.sync += a_have.eq(0)
        cmd_take = self.cmd.valid & self.cmd.ready
        with m.If(cmd_take):
            m.d.sync += [a_cmd.eq(self.cmd.payload), a_have.eq(1), a_beat.eq(0), a_any.eq(0),
                         a_start.eq(head[:ab] + take)]

        # -- pass 1: scores -> e_i (to the exponent ring) and their sum ----------------------
        b, b_beat, b_issue, b_last = row_reader(m, q1, rec1, nb_max=NB, nb_of=lambda r: r.nb,
                                                name="pass1")
        m.d.comb += [s_rd.addr.eq(b.start + b_beat), s_rd.en.eq(1)]
        # per stage: valid, last beat of its row, ring address, and the row's fields its
        # next stage uses (max at 0, mult at 1, shift at 2)
        v = [Signal(name=f"v{s}") for s in range(self.PIPE)]
        last = [Signal(name=f"last{s}") for s in range(self.PIPE)]
        addr = [Signal(ab, name=f"addr{s}") for s in range(self.PIPE)]
        p_max = Signal(signed(32))
        p_mult = [Signal(MULT_BITS, name=f"mult{s}") for s in range(2)]
        p_shift = [Signal(SHIFT_BITS, name=f"shift{s}") for s in range(3)]
        m.d.sync += [v[0].eq(b_issue), last[0].eq(b_last), addr[0].eq(b.start + b_beat),
                     p_max.eq(b.max), p_mult[0].eq(b.mult), p_shift[0].eq(b.shift),
                     p_mult[1].eq(p_mult[0]), p_shift[1].eq(p_shift[0]),
                     p_shift[2].eq(p_shift[1])]
        for s in range(1, self.PIPE):
            m.d.sync += [v[s].eq(v[s - 1]), last[s].eq(last[s - 1]), addr[s].eq(addr[s - 1])]

        c0_rom = Array(Const(c, EXP_BITS + 1) for c in EXP_C0)
        c1_rom = Array(Const(c, EXP_BITS + 1) for c in EXP_C1)
        e_lanes = []
        for j in range(P):
            word = s_rd.data[j]
            diff = Signal(unsigned(33), name=f"diff_{j}")  # max - score, >= 0 if kept
            m.d.comb += diff.eq(p_max - word.score)
            d1 = Signal(unsigned(D_BITS), name=f"d_{j}")  # saturated: one DSP48E2 for d * A
            keep1 = Signal(name=f"keep1_{j}")
            prod2 = Signal(unsigned(D_BITS + MULT_BITS), name=f"dA_{j}")
            keep2 = Signal(name=f"keep2_{j}")
            u_c = round_shift(m, prod2, p_shift[2], name=f"u_{j}")
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
            m.d.sync += [
                d1.eq(Mux(word.keep, Mux(diff[D_BITS:].any(), D_MAX, diff[:D_BITS]), 0)),
                keep1.eq(word.keep),
                prod2.eq(d1 * p_mult[1]),
                keep2.eq(keep1),
                u3.eq(u_c),
                keep3.eq(keep2),
                c0_3.eq(c0_rom[seg]),
                # C1 * l as SEG_SHIFT shifted adds (LUTs): a multiplier here would take a
                # DSP48E2 a lane for a 17 x 5-bit product
                t3.eq(sum(Mux(low[i], c1_rom[seg] << i, 0) for i in range(SEG_SHIFT))),
                k3.eq(Mux(kk > EXP_BITS, EXP_BITS + 1, kk)),
                zero3.eq(~keep3 | (kk > EXP_BITS)),
                e4.eq(Mux(zero3, 0, y.as_unsigned() >> k3)),
            ]
            e_lanes.append(e4)
        out = self.PIPE - 1
        m.d.comb += [e_wr.addr.eq(addr[out]), e_wr.en.eq(v[out])]
        for j in range(P):
            m.d.comb += e_wr.data[j].eq(e_lanes[j])
        total = Signal(unsigned(sum_bits))
        row_sum = Signal(unsigned(sum_bits))
        m.d.comb += row_sum.eq(total + sum(e_lanes))

        # the row's start and nb travel beside its beats; with its last beat's sum they go
        # into the divider
        fin_start = [Signal(ab, name=f"fin_start{s}") for s in range(self.PIPE)]
        fin_nb = [Signal(range(NB + 1), name=f"fin_nb{s}") for s in range(self.PIPE)]
        m.d.sync += [fin_start[0].eq(b.start), fin_nb[0].eq(b.nb)]
        for s in range(1, self.PIPE):
            m.d.sync += [fin_start[s].eq(fin_start[s - 1]), fin_nb[s].eq(fin_nb[s - 1])]

        # -- the divider: DIV_CYCLES stages after the sum register ----------------------------
        dv = Signal(name="dv_valid")
        dv_total = Signal(unsigned(sum_bits))
        dv_start = Signal(ab)
        dv_nb = Signal(range(NB + 1))
        with m.If(v[out]):
            m.d.sync += total.eq(Mux(last[out], 0, row_sum))
        m.d.sync += [dv.eq(v[out] & last[out]), dv_total.eq(row_sum),
                     dv_start.eq(fin_start[out]), dv_nb.eq(fin_nb[out])]
        # restoring division of (255 << RECIP_BITS) by the sum, quotient bits
        # RECIP_Q_BITS-1 .. 0 (the dividend's low bits are all zero)
        r = Const(UINT8_MAX << (RECIP_BITS - RECIP_Q_BITS), sum_bits + 1)
        q = Const(0, RECIP_Q_BITS)
        sv, st, ss, sn = dv, dv_total, dv_start, dv_nb
        for s in range(self.DIV_CYCLES):
            for _ in range(self.DIV_RADIX_BITS):
                shifted = Cat(Const(0, 1), r)
                fits = (shifted >= st) & (st != 0)
                r = Mux(fits, shifted - st, shifted)[:sum_bits + 1]
                q = Cat(fits, q)[:RECIP_Q_BITS]
            regs = (Signal(name=f"div{s}_valid"), Signal(unsigned(sum_bits), name=f"div{s}_sum"),
                    Signal(ab, name=f"div{s}_start"), Signal(range(NB + 1), name=f"div{s}_nb"),
                    Signal(sum_bits + 1, name=f"div{s}_rem"), Signal(RECIP_Q_BITS,
                                                                      name=f"div{s}_q"))
            m.d.sync += [regs[0].eq(sv), regs[1].eq(st), regs[2].eq(ss), regs[3].eq(sn),
                         regs[4].eq(r), regs[5].eq(q)]
            sv, st, ss, sn, r, q = regs
        done2 = Signal(rec2)
        m.d.comb += [done2.start.eq(ss), done2.nb.eq(sn), done2.recip.eq(q),
                     q2.w_data.eq(done2), q2.w_en.eq(sv)]

        # -- pass 2: e_i * r, with backpressure ----------------------------------------------
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        c, c_beat, issue, c_last = row_reader(m, q2, rec2, nb_max=NB, nb_of=lambda r: r.nb,
                                              adv=adv, name="pass2")
        m.d.comb += [e_rd.addr.eq(c.start + c_beat), e_rd.en.eq(adv)]
        with m.If(issue):
            m.d.sync += tail.eq(tail + 1)
        m.d.sync += rows.eq(rows + cmd_take - (issue & c_last))
        w0, w1 = Signal(), Signal()
        r0, r1 = Signal(RECIP_Q_BITS), Signal(RECIP_Q_BITS)
        e1 = Signal(e_lay)
        with m.If(adv):
            m.d.sync += [w0.eq(issue), r0.eq(c.recip), w1.eq(w0), r1.eq(r0), e1.eq(e_rd.data),
                         self.o.valid.eq(w1)]
            for j in range(P):
                qj = round_shift(m, e1[j] * r1, RECIP_BITS, name=f"q_{j}")
                m.d.sync += self.o.payload[j].eq(qj)
        return m
