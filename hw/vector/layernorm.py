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
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.lib.checks import refuse, require_config
from hw.lib.fixedpoint import round_shift, saturate
from hw.lib.nets import net
from hw.lib.rows import row_reader
from sw.ref.fixedpoint import INT8_MAX, INT8_MIN
from sw.ref.layernorm import (
    EPS_BITS,
    G_FRAC,
    GAIN_BITS,
    MANT_BITS,
    OFFSET_BITS,
    RECIP_BITS,
    SQRT_FRAC,
    U_FRAC,
)

__all__ = ["LayerNormUnit", "layernorm_layouts"]


ROOT_BITS = 31  #: isqrt(V << 2*sqrt_frac) < 2**31 for H <= 1024 (V < 2**62 either way)


def layernorm_layouts(config: AcceleratorConfig, in_bits: int = 8,
                      load_lanes: int = 1) -> dict[str, data.Layout]:
    """Payload layouts; ``load`` carries one record, or with ``load_lanes = K > 1`` the K
    records of channels ``channel .. channel + K - 1`` (``channel`` a multiple of K)."""
    P = config.vector_lanes
    channel = unsigned(max(1, (config.max_hidden - 1).bit_length()))
    record = {"gain": signed(GAIN_BITS), "offset": signed(OFFSET_BITS)}
    return {
        "cmd": data.StructLayout({"hidden": unsigned(config.max_hidden.bit_length()),
                                  "eps": unsigned(EPS_BITS)}),
        "load": data.StructLayout({"channel": channel, **record} if load_lanes == 1 else {
            "channel": channel,
            "records": data.ArrayLayout(data.StructLayout(record), load_lanes)}),
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

    Structure: three stages, each working on its own token, so tokens stream through at one
    beat per cycle. *Ingest* writes the token into a ring of ``RING`` beats and accumulates
    ``S`` and ``Q``; at its last beat the token's statistics enter a pipeline that computes
    ``V`` (``VAR_CYCLES`` stages), a restoring square root (``ROOT_CYCLES`` stages of
    ``RADIX_BITS`` = 2 result bits) and a restoring divider for ``r = floor(2**RECIP_BITS /
    s)`` (``div_cycles`` stages of 2 of its ``q_bits`` quotient bits); a token may enter it
    every cycle. The *output* stage then reads the token back through a ``PIPE``-stage
    datapath. Records wait for the output stage in a FIFO of ``ROWS``; at most ``ROWS`` tokens
    are in the unit (from their ``cmd`` to their last read) and at most ``RING`` beats, so
    nothing but the output stalls.

    Ports
    -----
    cmd : In(stream of {hidden, eps})
        Taken when ingest is free or in the cycle it takes the previous token's last beat
        (fewer than ``ROWS`` tokens in the unit).
    load : In(stream of {channel, gain, offset}); always ready
        With ``load_lanes = K > 1`` (a divisor of P): {channel, records: K x {gain, offset}},
        K channels from ``channel`` (a multiple of K) per beat, each into its lane's memory.
    i : In(stream of P x int8)
    o : Out(stream of P x int8)

    Latency / throughput / resources
    --------------------------------
    * Steady state: a token every ``nb`` cycles, as long as ``ROWS`` tokens and ``RING``
      beats cover a token's time in the unit (``RING = config.layernorm_ring``:
      ``max(128, 2 ceil(max_hidden / P))`` rounded up to a power of two).
    * A lone token, from its first beat to its last output beat: ``2 nb + out_delay``
      cycles, ``out_delay = 1 + VAR_CYCLES + ROOT_CYCLES + div_cycles + 1 + PIPE - 1``
      = 3 + 16 + ``div_cycles`` + 7, with ``q_bits = RECIP_BITS + 1 - sqrt_frac`` (41 for int8
      input, 49 for int16) and ``div_cycles = ceil(q_bits / 2)``: 21 and 25.
      :func:`sw.perf.vector.layernorm_cycles` follows the control cycle by cycle
      (:class:`sw.perf.vector.RowControl`); the benches check it against the RTL.
    * Resources: a ``RING`` x ``in_bits P``-bit ring, P gain/offset memories; per lane an
      ``x**2`` and an ``H x`` multiplier, ``c * m`` (27 x 17 bits at most), a rounding shifter
      of ``c_bits + MANT_BITS`` bits and a ``u * G`` multiplier (18 x 23): four DSP48E2; per
      unit r's leading-one detector and mantissa shifter; the statistics pipeline
      (``2 ROOT_CYCLES + 2 div_cycles`` subtractors of about 33 bits and their registers).
      Every multiplier has registers on both sides (ECP5: a MULT18X18D cascade and one
      adder per stage at most).
    """

    #: read, c = H x - S (and r's mantissa), c * m, u (its rounding shift), u * G + B, output
    PIPE = 6
    VAR_CYCLES = 3  #: H * Q and S**2, their difference, H * (H Q - S**2) + eps
    RADIX_BITS = 2  #: root and quotient bits each square-root and divider stage settles
    ROOT_CYCLES = -(-ROOT_BITS // RADIX_BITS)
    ROWS = 16  #: tokens in the unit at most (the record FIFO's depth)

    def __init__(self, *, config: AcceleratorConfig, in_bits: int = 8, load_lanes: int = 1):
        require_config(self, config)
        if in_bits not in (8, 16):
            refuse(self, f"LayerNormUnit in_bits must be 8 or 16, got {in_bits!r}")
        if (not isinstance(load_lanes, int) or load_lanes < 1
                or config.vector_lanes % load_lanes or load_lanes & (load_lanes - 1)):
            refuse(self, f"LayerNormUnit load_lanes must be a power of two dividing "
                         f"vector_lanes = {config.vector_lanes}, got {load_lanes!r}")
        self.config, self.in_bits, self.load_lanes = config, in_bits, load_lanes
        self.sqrt_frac = SQRT_FRAC if in_bits == 8 else 0
        self.q_bits = RECIP_BITS + 1 - self.sqrt_frac  # bits of the reciprocal
        self.div_cycles = -(-self.q_bits // self.RADIX_BITS)
        self.out_delay = self.VAR_CYCLES + self.ROOT_CYCLES + self.div_cycles + self.PIPE + 1
        lay = layernorm_layouts(config, in_bits, load_lanes)
        super().__init__({
            "cmd": In(stream.Signature(lay["cmd"])),
            "load": In(stream.Signature(lay["load"])),
            "i": In(stream.Signature(lay["i"])),
            "o": Out(stream.Signature(lay["o"])),
        })

    def elaborate(self, platform):  # noqa: C901 - three stages
        m = Module()
        cfg = self.config
        P = cfg.vector_lanes
        NB = math.ceil(cfg.max_hidden / P)
        D = cfg.layernorm_ring
        ab = D.bit_length() - 1  # ring address bits
        lay = layernorm_layouts(cfg, self.in_bits, self.load_lanes)
        bits, F, Q = self.in_bits, self.sqrt_frac, self.q_bits
        s_bits = bits + cfg.max_hidden.bit_length() + 1
        q_bits = 2 * bits - 1 + cfg.max_hidden.bit_length() + 1
        # c = H x_i - S = (H - 1) x_i - sum_{j != i} x_j: |c| <= (H - 1) 2**bits, so
        # bits + bit_length(H - 1) + 1 bits hold it (27 for int16 at H <= 1024: the A port of
        # a DSP48E2, 27 x 18 signed)
        c_bits = bits + (cfg.max_hidden - 1).bit_length() + 1
        h_bits = cfg.max_hidden.bit_length()

        m.submodules.tokens = tokens = Memory(shape=lay["i"], depth=D, init=[])
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
            K = self.load_lanes
            rec = self.load.payload if K == 1 else self.load.payload.records[j % K]
            # channel ch + j % K of a K-record beat lands in lane (ch % P) + j % K
            here = ((ch % P) // K == j // K) if P > K else 1
            m.d.comb += [
                pw.addr.eq(ch // P if P > 1 else ch),
                pw.data.gain.eq(rec.gain),
                pw.data.offset.eq(rec.offset),
                pw.en.eq(self.load.valid & here),
            ]
            params.append(mem.read_port())

        # -- ingest -------------------------------------------------------------------------
        head = Signal(ab + 1)  # beats written (mod 2 RING)
        tail = Signal(ab + 1)  # beats the output stage has read
        rows = Signal(range(self.ROWS + 1))  # tokens in the unit
        a_cmd = Signal(lay["cmd"])
        a_have = Signal()
        a_start = Signal(ab)
        a_beat = Signal(range(NB + 1))
        a_s = Signal(signed(s_bits))
        a_q = Signal(unsigned(q_bits))
        a_nb = Signal(range(NB + 1))
        m.d.comb += a_nb.eq((a_cmd.hidden + P - 1) // P if P > 1 else a_cmd.hidden)
        m.d.comb += self.i.ready.eq(a_have & ((head - tail)[:ab + 1] < D))
        take = self.i.valid & self.i.ready
        a_last = take & (a_beat + 1 == a_nb)
        m.d.comb += self.cmd.ready.eq((~a_have | a_last) & (rows < self.ROWS))
        cmd_take = self.cmd.valid & self.cmd.ready
        xs = []
        for j in range(P):
            x = Signal(signed(bits), name=f"x_{j}")
            m.d.comb += x.eq(Mux(a_beat * P + j < a_cmd.hidden, self.i.payload[j], 0))
            xs.append(x)
        m.d.comb += [wr.addr.eq(head[:ab]), wr.en.eq(take)]
        for j in range(P):
            m.d.comb += wr.data[j].eq(xs[j])
        s_next = Signal(signed(s_bits))
        q_next = Signal(unsigned(q_bits))
        m.d.comb += [s_next.eq(a_s + sum(xs)), q_next.eq(a_q + sum(x * x for x in xs))]
        with m.If(take):
            m.d.sync += [head.eq(head + 1), a_beat.eq(a_beat + 1), a_s.eq(s_next),
                         a_q.eq(q_next)]
            with m.If(a_last):
                m.d.sync += a_have.eq(0)
        with m.If(cmd_take):
            m.d.sync += [a_cmd.eq(self.cmd.payload), a_have.eq(1), a_beat.eq(0),
                         a_s.eq(0), a_q.eq(0), a_start.eq(head[:ab] + take)]

        # -- statistics: V, its square root, the reciprocal; a token may enter every cycle ---
        # the token's record (where it is, its nb, H, S) waits in a FIFO beside the stages,
        # which are in order
        rec = data.StructLayout({"start": unsigned(ab), "nb": range(NB + 1),
                                 "h": unsigned(h_bits), "s": signed(s_bits)})
        m.submodules.q_rec = q_rec = fifo.SyncFIFO(width=rec.size, depth=self.ROWS)
        rec_in = Signal(rec)
        m.d.comb += [rec_in.start.eq(a_start), rec_in.nb.eq(a_nb), rec_in.h.eq(a_cmd.hidden),
                     rec_in.s.eq(s_next), q_rec.w_data.eq(rec_in), q_rec.w_en.eq(a_last)]

        def stage(name, src=None, **fields):
            """A stage's registers: valid (following ``src``'s) and ``fields``."""
            regs = {"valid": Signal(name=f"{name}_valid")}
            regs.update({k: Signal(shape, name=f"{name}_{k}") for k, shape in fields.items()})
            if src is not None:
                m.d.sync += regs["valid"].eq(src["valid"])
            return regs

        st0 = stage("stats", h=unsigned(h_bits), s=signed(s_bits), q=unsigned(q_bits),
                    eps=unsigned(EPS_BITS))
        m.d.sync += [st0["valid"].eq(a_last), st0["h"].eq(a_cmd.hidden), st0["s"].eq(s_next),
                     st0["q"].eq(q_next), st0["eps"].eq(a_cmd.eps)]
        # V = H * (H * Q - S**2) + eps_int (exact), radicand V << 2*sqrt_frac, in three stages
        v1 = stage("var1", st0, h=unsigned(h_bits), hq=unsigned(q_bits + h_bits),
                   ss=unsigned(2 * s_bits), eps=unsigned(EPS_BITS))
        m.d.sync += [v1["h"].eq(st0["h"]), v1["hq"].eq(st0["h"] * st0["q"]),
                     v1["ss"].eq(st0["s"] * st0["s"]), v1["eps"].eq(st0["eps"])]
        v2 = stage("var2", v1, h=unsigned(h_bits), spread=signed(q_bits + h_bits + 1),
                   eps=unsigned(EPS_BITS))
        m.d.sync += [v2["h"].eq(v1["h"]), v2["spread"].eq(v1["hq"] - v1["ss"]),
                     v2["eps"].eq(v1["eps"])]
        root_fields = {"radicand": unsigned(2 * ROOT_BITS), "rrem": unsigned(ROOT_BITS + 3),
                       "root": unsigned(ROOT_BITS + 1)}
        prev = stage("var3", v2, **root_fields)
        m.d.sync += [prev["radicand"].eq((v2["h"] * v2["spread"] + v2["eps"]) << (2 * F)),
                     prev["rrem"].eq(0), prev["root"].eq(0)]
        # restoring square root, two radicand bits per step, MSB first; RADIX_BITS steps per
        # stage (each truncated to the registers' widths; steps past ROOT_BITS are left out)
        for k in range(self.ROOT_CYCLES):
            ra, rr, ro = prev["radicand"], prev["rrem"], prev["root"]
            for j in range(self.RADIX_BITS):
                if k * self.RADIX_BITS + j >= ROOT_BITS:
                    continue
                top = ra[2 * ROOT_BITS - 2:2 * ROOT_BITS]
                trial_rem = Cat(top, rr)
                trial = Cat(Const(1, 2), ro)  # (root << 2) | 1
                ok = net(m, trial_rem >= trial, f"sqrt{k}_{j}_ok")
                # (each step's values as nets: the next step reads them twice)
                ra, rr, ro = (ra.shift_left(2)[:2 * ROOT_BITS],
                              net(m, Mux(ok, trial_rem - trial, trial_rem)[:ROOT_BITS + 3],
                                  f"sqrt{k}_{j}_rrem"),
                              net(m, Cat(ok, ro)[:ROOT_BITS + 1], f"sqrt{k}_{j}_root"))
            nxt = stage(f"sqrt{k}", prev, **root_fields)
            m.d.sync += [nxt["radicand"].eq(ra), nxt["rrem"].eq(rr), nxt["root"].eq(ro)]
            prev = nxt
        # r = floor(2**RECIP_BITS / s), quotient bits MSB first; s = 0 gives r = 0. The
        # dividend's bits below the initial remainder are shifted in one a step; RADIX_BITS
        # steps per stage
        div_fields = {"root": unsigned(ROOT_BITS + 1), "drem": unsigned(ROOT_BITS + 2),
                      "recip": unsigned(Q)}
        dr = Const((1 << RECIP_BITS) >> Q, ROOT_BITS + 2)
        rc = Const(0, Q)
        root = prev["root"]
        for k in range(self.div_cycles):
            for j in range(self.RADIX_BITS):
                step = k * self.RADIX_BITS + j
                if step >= Q:
                    continue
                dividend_bit = Const(int(step == Q - 1 - RECIP_BITS), 1)
                shifted = Cat(dividend_bit, dr)
                fits = net(m, (shifted >= root) & (root != 0), f"div{k}_{j}_fits")
                dr = net(m, Mux(fits, shifted - root, shifted)[:ROOT_BITS + 2],
                         f"div{k}_{j}_drem")
                rc = Cat(fits, rc)[:Q]
            nxt = stage(f"div{k}", prev, **div_fields)
            m.d.sync += [nxt["root"].eq(root), nxt["drem"].eq(dr), nxt["recip"].eq(rc)]
            prev, root, dr, rc = nxt, nxt["root"], nxt["drem"], nxt["recip"]

        out_rec = data.StructLayout({"rec": rec, "recip": unsigned(Q)})
        m.submodules.q2 = q2 = fifo.SyncFIFO(width=out_rec.size, depth=self.ROWS)
        done = Signal(out_rec)
        m.d.comb += [q_rec.r_en.eq(prev["valid"]), done.rec.eq(q_rec.r_data),
                     done.recip.eq(prev["recip"]), q2.w_data.eq(done), q2.w_en.eq(prev["valid"])]

        # -- output: the token's beats through the datapath, with backpressure ---------------
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        c, c_beat, issue, c_last = row_reader(m, q2, out_rec, nb_max=NB,
                                              nb_of=lambda r: r.rec.nb, adv=adv, name="out")
        with m.If(issue):
            m.d.sync += tail.eq(tail + 1)
        m.d.sync += rows.eq(rows + cmd_take - (issue & c_last))

        m.d.comb += [rd.addr.eq(c.rec.start + c_beat), rd.en.eq(adv)]
        for pr in params:
            m.d.comb += [pr.addr.eq(c_beat), pr.en.eq(adv)]
        v = [Signal(name=f"v{s}") for s in range(self.PIPE - 1)]
        # the beat's token fields along the datapath: H, S and r (stage 0), and the lanes inside
        # the token
        d_h = Signal(unsigned(h_bits))
        d_s = Signal(signed(s_bits))
        d_r = Signal(unsigned(Q), name="recip")
        masks = [Signal(P, name=f"mask{s}") for s in range(self.PIPE - 1)]
        with m.If(adv):
            m.d.sync += [v[0].eq(issue), d_h.eq(c.rec.h), d_s.eq(c.rec.s),
                         d_r.eq(c.recip),
                         masks[0].eq(Cat(*[c_beat * P + j < c.rec.h for j in range(P)]))]
            for s in range(1, len(v)):
                m.d.sync += [v[s].eq(v[s - 1]), masks[s].eq(masks[s - 1])]
            m.d.sync += self.o.valid.eq(v[-1])

        # r's leading MANT_BITS bits (sw.ref.layernorm step 4), once per beat for all lanes:
        # m = r >> e, e = max(0, bit_length(r) - MANT_BITS), and the shift that makes u of
        # c * m (never negative, see there)
        K = RECIP_BITS - F - U_FRAC
        e = Signal(range(max(1, Q - MANT_BITS) + 1))
        for b in range(MANT_BITS, Q):  # the highest set bit wins
            with m.If(d_r[b]):
                m.d.comb += e.eq(b + 1 - MANT_BITS)
        mant = Signal(unsigned(MANT_BITS))
        shift = [Signal(range(K + 1), name=f"ushift{s}") for s in range(2)]
        with m.If(adv):
            m.d.sync += [mant.eq(d_r >> e), shift[0].eq(K - e), shift[1].eq(shift[0])]
        for j in range(P):
            cj = Signal(signed(c_bits), name=f"c_{j}")
            # c * m: c of up to 27 bits, m unsigned 17 (one DSP48E2, 27 x 18 signed)
            cm = Signal(signed(c_bits + MANT_BITS + 1), name=f"cm_{j}")
            gains = [Signal(signed(GAIN_BITS), name=f"g{s}_{j}") for s in range(3)]
            offs = [Signal(signed(OFFSET_BITS), name=f"b{s}_{j}") for s in range(3)]
            # |u| <= 2**U_FRAC (sw.ref.layernorm step 5): U_FRAC + 2 bits, the B port of a
            # DSP48E2 for u * G
            u = Signal(signed(U_FRAC + 2), name=f"u_{j}")
            u_full = round_shift(m, cm, shift[1], name=f"u_full_{j}")
            z = Signal(signed(OFFSET_BITS + 2), name=f"z_{j}")
            q = round_shift(m, z, U_FRAC + G_FRAC, name=f"q_{j}")
            out = saturate(m, q, INT8_MIN, INT8_MAX, signed(8), name=f"out_{j}")
            with m.If(adv):
                m.d.sync += [
                    cj.eq(d_h * rd.data[j] - d_s),
                    gains[0].eq(params[j].data.gain), offs[0].eq(params[j].data.offset),
                    cm.eq(cj * mant),
                    u.eq(u_full),
                    z.eq(u * gains[2] + offs[2]),
                    self.o.payload[j].eq(Mux(masks[-1][j], out, 0)),  # lanes past H give 0
                ]
                for s in range(1, 3):
                    m.d.sync += [gains[s].eq(gains[s - 1]), offs[s].eq(offs[s - 1])]
        return m
