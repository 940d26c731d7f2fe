"""LayerNorm unit: per-token integer LayerNorm over the hidden size, tokens buffered on chip.

Reproduces :func:`sw.ref.layernorm.layernorm_int` bit for bit (algorithm, widths and error
bound are documented there). One identity saves the second pass over the data for the
variance: ``sum_i c_i**2 = H * (H * sum_i x_i**2 - (sum_i x_i)**2)`` with
``c_i = H * x_i - sum_i x_i``, exactly, so ingest accumulates ``S = sum x`` and
``Q = sum x**2`` while it stores the token.
"""

from __future__ import annotations

import math

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.lib.checks import refuse, require_config
from hw.lib.fixedpoint import round_shift, saturate
from sw.ref.fixedpoint import INT8_MAX, INT8_MIN
from sw.ref.layernorm import (
    EPS_BITS,
    G_FRAC,
    GAIN_BITS,
    OFFSET_BITS,
    RECIP_BITS,
    SQRT_FRAC,
    U_FRAC,
)

__all__ = ["LayerNormUnit", "layernorm_layouts"]


ROOT_BITS = 31  #: isqrt(V << 2*sqrt_frac) < 2**31 for H <= 1024 (V < 2**62 either way)


def layernorm_layouts(config: AcceleratorConfig, in_bits: int = 8) -> dict[str, data.Layout]:
    P = config.vector_lanes
    return {
        "cmd": data.StructLayout({"hidden": unsigned(config.max_hidden.bit_length()),
                                  "eps": unsigned(EPS_BITS)}),
        "load": data.StructLayout({"channel": unsigned(max(1, (config.max_hidden - 1)
                                                               .bit_length())),
                                   "gain": signed(GAIN_BITS), "offset": signed(OFFSET_BITS)}),
        "i": data.ArrayLayout(signed(in_bits), P),
        "o": data.ArrayLayout(signed(8), P),
    }


class LayerNormUnit(wiring.Component):
    """Integer LayerNorm of tokens of ``H <= max_hidden`` int8 (or int16, ``in_bits=16``: the
    residual path) values, ``P = vector_lanes`` values per beat; int8 out.

    A token arrives as ``nb = ceil(H/P)`` beats and leaves as ``nb`` beats (lanes past ``H``
    in the last beat are ignored on input and 0 on output). Per-channel ``G``/``B``
    (:class:`sw.ref.layernorm.LayerNormParams` ``gain``/``offset``) are loaded once per layer
    on ``load``; ``cmd`` gives each token's ``H`` and ``eps_int``.

    Structure: ingest stores the token in one of two banks and accumulates ``S`` and ``Q``;
    the normalise stage computes ``V``, a restoring square root (``ROOT_BITS`` result bits,
    ``RADIX_BITS`` = 2 of them per cycle: ``ROOT_CYCLES``), a restoring divider for
    ``r = floor(2**RECIP_BITS / s)`` (``q_bits`` quotient bits, 2 per cycle: ``div_cycles``
    cycles), then
    streams the token out through a ``PIPE``-stage datapath. Ingest of the next token overlaps.

    Ports
    -----
    cmd : In(stream of {hidden, eps})
    load : In(stream of {channel, gain, offset}); always ready
    i : In(stream of P x int8)
    o : Out(stream of P x int8)

    Latency / throughput / resources
    --------------------------------
    * Ingest: the ``cmd``, then ``nb`` beats one per cycle; the token is handed over one
      cycle after its last beat once the normalise stage is free (the next ``cmd`` is taken
      in the same cycle).
    * Normalise, from the hand-over edge: the last output beat is taken
      ``nb + out_delay`` cycles later (``out_delay = VAR_CYCLES + ROOT_CYCLES + div_cycles +
      PIPE`` = 3 + 16 + ``div_cycles`` + 6, with ``q_bits = RECIP_BITS + 1 - sqrt_frac``
      (41 for int8 input, 49 for int16) and ``div_cycles = ceil(q_bits / 2)``: 21 and 25)
      and the next token is taken ``nb + out_delay + 2`` cycles later.
      :func:`sw.perf.vector.layernorm_cycles` models sequences of tokens exactly.
    * Resources: 2 banks of ``ceil(max_hidden/P)`` x ``in_bits P`` bits, P gain/offset memories;
      per lane an ``H x`` multiplier, ``c * r`` as two registered partial products, a
      ``u * G`` multiplier; one square root, one divider. Every multiplier has registers on
      both sides (ECP5: a MULT18X18D cascade and one adder per stage at most).
    """

    PIPE = 6  #: read, c = H x - S, c * r (two partial products), their sum, u * G + B, output
    VAR_CYCLES = 3  #: H * Q and S**2, their difference, H * (H Q - S**2) + eps
    RADIX_BITS = 2  #: root and quotient bits the square root and divider settle per cycle
    ROOT_CYCLES = -(-ROOT_BITS // RADIX_BITS)

    def __init__(self, *, config: AcceleratorConfig, in_bits: int = 8):
        require_config(self, config)
        if in_bits not in (8, 16):
            refuse(self, f"LayerNormUnit in_bits must be 8 or 16, got {in_bits!r}")
        self.config, self.in_bits = config, in_bits
        self.sqrt_frac = SQRT_FRAC if in_bits == 8 else 0
        self.q_bits = RECIP_BITS + 1 - self.sqrt_frac  # bits of the reciprocal
        self.div_cycles = -(-self.q_bits // self.RADIX_BITS)
        self.out_delay = self.VAR_CYCLES + self.ROOT_CYCLES + self.div_cycles + self.PIPE
        lay = layernorm_layouts(config, in_bits)
        super().__init__({
            "cmd": In(stream.Signature(lay["cmd"])),
            "load": In(stream.Signature(lay["load"])),
            "i": In(stream.Signature(lay["i"])),
            "o": Out(stream.Signature(lay["o"])),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        P = cfg.vector_lanes
        NB = math.ceil(cfg.max_hidden / P)
        lay = layernorm_layouts(cfg, self.in_bits)
        bits, F, Q = self.in_bits, self.sqrt_frac, self.q_bits
        s_bits = bits + cfg.max_hidden.bit_length() + 1
        q_bits = 2 * bits - 1 + cfg.max_hidden.bit_length() + 1
        c_bits = bits + cfg.max_hidden.bit_length() + 2

        m.submodules.tokens = tokens = Memory(shape=lay["i"], depth=2 * NB, init=[])
        wr, rd = tokens.write_port(), tokens.read_port()
        params = []
        m.d.comb += self.load.ready.eq(1)
        for j in range(P):
            mem = Memory(shape=data.StructLayout({"gain": signed(GAIN_BITS),
                                                  "offset": signed(OFFSET_BITS)}),
                         depth=NB, init=[])
            m.submodules[f"params_{j}"] = mem
            pw = mem.write_port()
            ch = self.load.payload.channel
            m.d.comb += [
                pw.addr.eq(ch // P if P > 1 else ch),
                pw.data.gain.eq(self.load.payload.gain),
                pw.data.offset.eq(self.load.payload.offset),
                pw.en.eq(self.load.valid & ((ch % P == j) if P > 1 else 1)),
            ]
            params.append(mem.read_port())

        # -- ingest -------------------------------------------------------------------------
        a_cmd = Signal(lay["cmd"])
        a_have = Signal()
        a_pending = Signal()
        a_bank = Signal()
        a_beat = Signal(range(NB + 1))
        a_s = Signal(signed(s_bits))
        a_q = Signal(unsigned(q_bits))
        a_nb = Signal(range(NB + 1))
        m.d.comb += a_nb.eq((a_cmd.hidden + P - 1) // P if P > 1 else a_cmd.hidden)
        handoff = Signal()
        m.d.comb += [
            self.cmd.ready.eq(~a_have & (~a_pending | handoff)),
            self.i.ready.eq(a_have),
        ]
        take = self.i.valid & self.i.ready
        xs = []
        for j in range(P):
            x = Signal(signed(bits), name=f"x_{j}")
            m.d.comb += x.eq(Mux(a_beat * P + j < a_cmd.hidden, self.i.payload[j], 0))
            xs.append(x)
        m.d.comb += [wr.addr.eq(a_bank * NB + a_beat), wr.en.eq(take)]
        for j in range(P):
            m.d.comb += wr.data[j].eq(xs[j])
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [a_cmd.eq(self.cmd.payload), a_have.eq(1), a_beat.eq(0),
                         a_s.eq(0), a_q.eq(0)]
        with m.If(take):
            m.d.sync += [a_beat.eq(a_beat + 1), a_s.eq(a_s + sum(xs)),
                         a_q.eq(a_q + sum(x * x for x in xs))]
            with m.If(a_beat + 1 == a_nb):
                m.d.sync += [a_have.eq(0), a_pending.eq(1)]
        with m.If(handoff):
            m.d.sync += [a_bank.eq(~a_bank), a_pending.eq(0)]

        # -- normalise ----------------------------------------------------------------------
        b_bank = Signal()
        b_nb = Signal(range(NB + 1))
        b_h = Signal(unsigned(cfg.max_hidden.bit_length()))
        b_s = Signal(signed(s_bits))
        b_q = Signal(unsigned(q_bits))
        b_eps = Signal(unsigned(EPS_BITS))
        b_beat = Signal(range(NB + 1))
        radicand = Signal(unsigned(2 * ROOT_BITS))  # V << 2*sqrt_frac < 2**62
        root = Signal(unsigned(ROOT_BITS + 1))
        rrem = Signal(unsigned(ROOT_BITS + 3))
        rstep = Signal(range(ROOT_BITS + 1))
        recip = Signal(unsigned(Q))
        drem = Signal(unsigned(ROOT_BITS + 2))
        dstep = Signal(range(Q + 1))

        v = [Signal(name=f"v{s}") for s in range(self.PIPE - 1)]
        hw_ = len(b_h)
        hq, ss, spread = (Signal(unsigned(q_bits + hw_)), Signal(unsigned(2 * s_bits)),
                          Signal(signed(q_bits + hw_ + 1)))
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        issue = Signal()
        busy = Cat(*v).any() | self.o.valid

        with m.FSM(name="norm"):
            with m.State("IDLE"):
                m.d.comb += handoff.eq(a_pending)
                with m.If(a_pending):
                    m.d.sync += [b_bank.eq(a_bank), b_nb.eq(a_nb), b_h.eq(a_cmd.hidden),
                                 b_s.eq(a_s), b_q.eq(a_q), b_eps.eq(a_cmd.eps), b_beat.eq(0)]
                    m.next = "VARIANCE"
            # V = H * (H * Q - S**2) + eps_int (exact), radicand V << 2*sqrt_frac, in three
            # registered steps
            with m.State("VARIANCE"):
                m.d.sync += [hq.eq(b_h * b_q), ss.eq(b_s * b_s)]
                m.next = "VARIANCE_2"
            with m.State("VARIANCE_2"):
                m.d.sync += spread.eq(hq - ss)
                m.next = "VARIANCE_3"
            with m.State("VARIANCE_3"):
                m.d.sync += [radicand.eq((b_h * spread + b_eps) << (2 * F)),
                             root.eq(0), rrem.eq(0), rstep.eq(0)]
                m.next = "SQRT"
            with m.State("SQRT"):
                # restoring square root, two radicand bits per step, MSB first; RADIX_BITS
                # steps per cycle (each truncated to the registers' widths; a last cycle
                # past ROOT_BITS steps leaves the rest alone)
                ra, rr, ro = radicand, rrem, root
                for j in range(self.RADIX_BITS):
                    top = ra[2 * ROOT_BITS - 2:2 * ROOT_BITS]
                    trial_rem = Cat(top, rr)
                    trial = Cat(Const(1, 2), ro)  # (root << 2) | 1
                    ok = trial_rem >= trial
                    act = rstep * self.RADIX_BITS + j < ROOT_BITS
                    ra, rr, ro = (Mux(act, (ra << 2)[:len(radicand)], ra),
                                  Mux(act, Mux(ok, trial_rem - trial, trial_rem)[:len(rrem)], rr),
                                  Mux(act, Cat(ok, ro)[:len(root)], ro))
                m.d.sync += [radicand.eq(ra), rrem.eq(rr), root.eq(ro), rstep.eq(rstep + 1)]
                with m.If(rstep == self.ROOT_CYCLES - 1):
                    m.d.sync += [drem.eq((1 << RECIP_BITS) >> Q), recip.eq(0), dstep.eq(0)]
                    m.next = "DIVIDE"
            with m.State("DIVIDE"):
                # r = floor(2**RECIP_BITS / s), quotient bits MSB first; s = 0 gives r = 0.
                # The dividend's bits below the initial remainder are shifted in one a step;
                # RADIX_BITS steps per cycle, as in SQRT
                dr, rc = drem, recip
                for j in range(self.RADIX_BITS):
                    s = dstep * self.RADIX_BITS + j  # the step
                    dividend_bit = (s == Q - 1 - RECIP_BITS) if Q > RECIP_BITS else Const(0)
                    shifted = Cat(dividend_bit, dr)
                    fits = (shifted >= root) & (root != 0)
                    act = s < Q
                    dr, rc = (Mux(act, Mux(fits, shifted - root, shifted)[:len(drem)], dr),
                              Mux(act, Cat(fits, rc)[:len(recip)], rc))
                m.d.sync += [drem.eq(dr), recip.eq(rc), dstep.eq(dstep + 1)]
                with m.If(dstep == self.div_cycles - 1):
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += issue.eq(adv)
                with m.If(adv):
                    m.d.sync += b_beat.eq(b_beat + 1)
                    with m.If(b_beat + 1 == b_nb):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(~busy):
                    m.next = "IDLE"

        m.d.comb += [rd.addr.eq(b_bank * NB + b_beat), rd.en.eq(adv)]
        for pr in params:
            m.d.comb += [pr.addr.eq(b_beat), pr.en.eq(adv)]
        with m.If(adv):
            m.d.sync += v[0].eq(issue)
            for s in range(1, len(v)):
                m.d.sync += v[s].eq(v[s - 1])
            m.d.sync += self.o.valid.eq(v[-1])

        # lanes inside the token, carried along the datapath with each beat
        masks = [Signal(P, name=f"mask{s}") for s in range(self.PIPE - 1)]
        with m.If(adv):
            m.d.sync += masks[0].eq(Cat(*[b_beat * P + j < b_h for j in range(P)]))
            for s in range(1, len(masks)):
                m.d.sync += masks[s].eq(masks[s - 1])
        split = 18  # c * r as c * r[:18] + (c * r[18:] << 18): one MULT18 row per product
        for j in range(P):
            c = Signal(signed(c_bits), name=f"c_{j}")
            p_lo = Signal(signed(c_bits + split + 1), name=f"plo_{j}")
            p_hi = Signal(signed(c_bits + Q - split + 1), name=f"phi_{j}")
            cr = Signal(signed(c_bits + Q + 1), name=f"cr_{j}")
            gains = [Signal(signed(GAIN_BITS), name=f"g{s}_{j}") for s in range(3)]
            offs = [Signal(signed(OFFSET_BITS), name=f"b{s}_{j}") for s in range(3)]
            u = round_shift(m, cr, RECIP_BITS - F - U_FRAC, name=f"u_{j}")
            z = Signal(signed(OFFSET_BITS + 2), name=f"z_{j}")
            q = round_shift(m, z, U_FRAC + G_FRAC, name=f"q_{j}")
            out = saturate(m, q, INT8_MIN, INT8_MAX, signed(8), name=f"out_{j}")
            with m.If(adv):
                m.d.sync += [
                    c.eq(b_h * rd.data[j] - b_s),
                    gains[0].eq(params[j].data.gain), offs[0].eq(params[j].data.offset),
                    p_lo.eq(c * recip[:split]),
                    p_hi.eq(c * recip[split:]),
                    cr.eq(p_lo + (p_hi << split)),
                    z.eq(u * gains[2] + offs[2]),
                    self.o.payload[j].eq(Mux(masks[-1][j], out, 0)),  # lanes past H give 0
                ]
                for s in range(1, 3):
                    m.d.sync += [gains[s].eq(gains[s - 1]), offs[s].eq(offs[s - 1])]
        return m

