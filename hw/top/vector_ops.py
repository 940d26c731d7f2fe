"""The top's vector datapath: GELU, ADD, LAYERNORM and ADD_LAYERNORM commands over the
scratchpad."""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.lib.checks import require_config
from hw.vector.gelu import GeluUnit
from hw.vector.layernorm import LayerNormUnit
from hw.vector.residual_add import ResidualAdd
from sw.compiler.isa import LN_RECORD, Op
from sw.ref.layernorm import GAIN_BITS, OFFSET_BITS
from sw.ref.quant import ADD_MULT_BITS

__all__ = ["VectorOps", "job_layout"]


def _room(ptr, is16, lanes):
    """Elements from byte address ``ptr`` to the end of the ``lanes`` scratchpad words from
    its own on."""
    return Mux(is16, 2 * lanes - ptr[1], 4 * lanes - ptr[:2])


def _min(*values):
    out = values[0]
    for v in values[1:]:
        out = Mux(v < out, v, out)
    return out


def job_layout(config: AcceleratorConfig) -> data.StructLayout:
    """One vector command, decoded: operand addresses, shape, widths and inline parameters."""
    return data.StructLayout({
        "op": unsigned(4), "a": unsigned(32), "b": unsigned(32), "out": unsigned(32),
        "tokens": unsigned(32), "width": unsigned(32),
        "a_bits": unsigned(5), "b_bits": unsigned(5), "out_bits": unsigned(5),
        "ln_bits": unsigned(5),  # the LayerNorm's input: a (LAYERNORM) or the sums
        "m_a": unsigned(ADD_MULT_BITS), "m_b": unsigned(ADD_MULT_BITS), "shift": unsigned(6),
        "eps": unsigned(32),
    })


class VectorOps(wiring.Component):
    """Runs one GELU / ADD / LAYERNORM / ADD_LAYERNORM command: gathers its operands from
    the scratchpad, packs them into ``vector_lanes``-wide beats for the unit
    (:class:`~hw.vector.gelu.GeluUnit`, :class:`~hw.vector.residual_add.ResidualAdd` with
    int16 lanes, :class:`~hw.vector.layernorm.LayerNormUnit` for int8 and for int16 input;
    ADD_LAYERNORM: the adder's sums, saturated to the command's ``in_bits``, stream into the
    LayerNorm unit and are never stored), and scatters the unit's beats back with byte
    enables.

    Rows are ``tokens`` x ``width`` elements, contiguous (row stride = width x element size);
    a row's last beat is partial (its lanes past the row are never written back). GELU first
    takes its 256-entry table (64 words) and LAYERNORM its ``hidden`` gain/offset records
    (4 words each) on ``params``, or with a weight port of ``B >= 16`` bytes
    (:attr:`~hw.config.AcceleratorConfig.wide_ln_params`) on ``wide_params``, ``B / 16``
    records a beat. int16 elements start on even bytes (the top refuses others).

    Ports
    -----
    job : In(stream of job_layout)
        ``ln_bits``: the LayerNorm's input width (LAYERNORM: ``a_bits``; ADD_LAYERNORM: the
        sums').
    params : In(stream of 32 bits)
        The command's parameter words in params-buffer order (the top reads them).
    wide_params : In(stream of 8 B bits)
        With ``wide_ln_params`` only: LAYERNORM's records, ``B / 16`` a beat, a record a
        cycle (the top reads them through the weight port).
    done : Out(1)
        Pulses when the last output element is written.
    wr_lo, wr_hi : In(32), In(33)
        Bytes ``[wr_lo, wr_hi)`` may still be written by another (the engine's results going
        out; ``(0, 0)`` when none are): a group is gathered, and a beat's elements
        scattered, only when the port's words they lie in from their first byte (``4 L``
        bytes on) end at ``wr_lo`` or before, or start at ``wr_hi`` or after.
    w_busy : In(1)
        The scratchpad's write port is another's this cycle: the scatter waits.
    ra_*, rb_* : scratchpad read ports (address in words, enable, ``spm_lanes`` words of data
        one cycle later)
    w_* : scratchpad write port (address in words, ``spm_lanes`` words of data, byte enables)

    Latency / throughput / resources
    --------------------------------
    With ``L = spm_lanes`` (the scratchpad ports' width in words), per cycle the gather reads a
    *group*: the row's next elements within the ``L`` words from the current one (of both
    operands for ADD), up to the beat's and the row's end (``4 L - off`` int8 or ``2 L - off``
    int16 elements, ``off`` the first one's slot in its word; at most ``GE = min(4 L, P)``); the
    pack takes a group per cycle and offers the full beat, taking the next beat's first group in
    the cycle the unit takes it; the scatter writes the held output beat's next elements within
    ``L`` words per cycle (the rest of the beat shifts to its head) and takes the next beat in
    the beat's last cycle. Aligned int8 rows of ``P`` lanes thus move a beat per
    ``ceil(P / 4 L)`` cycles; the rate varies with the operands' alignment and
    :mod:`sw.perf.vector_ops` steps it cycle by cycle. ADD_LAYERNORM moves at LAYERNORM's
    rate (the gather reads both operands in a cycle) plus the adder's
    ``ResidualAdd.LATENCY``, in one pass where ADD and LAYERNORM take one each. Resources: the
    units as listed, a 4-entry FIFO of groups of ``GE`` elements, ``P`` x ``GE`` lane muxes in
    the pack, 4:1 byte muxes in the gather and the scatter, the scatter's shift register of
    ``P`` x 16 bits, and ``P`` 16-bit 2:1 muxes (and int8 saturators) before each LayerNorm.
    """

    def __init__(self, *, config: AcceleratorConfig):
        require_config(self, config)
        self.config = config
        aw = (config.spm_bytes // 4 - 1).bit_length() or 1
        super().__init__({
            "job": In(stream.Signature(job_layout(config))),
            "params": In(stream.Signature(32)),
            **({"wide_params": In(stream.Signature(8 * config.weight_port_bytes))}
               if config.wide_ln_params else {}),
            "done": Out(1), "wr_lo": In(32), "wr_hi": In(33), "w_busy": In(1),
            "ra_addr": Out(aw), "ra_en": Out(1), "ra_data": In(32 * config.spm_lanes),
            "rb_addr": Out(aw), "rb_en": Out(1), "rb_data": In(32 * config.spm_lanes),
            "w_addr": Out(aw), "w_data": Out(32 * config.spm_lanes),
            "w_en": Out(4 * config.spm_lanes),
        })

    def elaborate(self, platform):  # noqa: C901 - gather, pack, units, scatter
        m = Module()
        cfg = self.config
        P, L = cfg.vector_lanes, cfg.spm_lanes
        GE = min(4 * L, P)  # elements a group or a scatter write moves at most
        m.submodules.gelu = gelu = GeluUnit(config=cfg)
        m.submodules.add = add = ResidualAdd(config=cfg, a_bits=16, b_bits=16, out_bits=16)
        KL = cfg.ln_load_lanes  # LayerNorm records loaded per cycle
        m.submodules.ln16 = ln16 = LayerNormUnit(config=cfg, in_bits=16, load_lanes=KL)
        lns = {16: ln16}  # LayerNorm units by input width
        if cfg.layernorm_int8:
            m.submodules.ln8 = lns[8] = LayerNormUnit(config=cfg, in_bits=8, load_lanes=KL)

        job = Signal(job_layout(cfg))
        busy = Signal()
        is_gelu, is_add = job.op == Op.GELU, job.op == Op.ADD
        is_addln = job.op == Op.ADD_LAYERNORM
        is_ln = (job.op == Op.LAYERNORM) | is_addln  # the jobs that run a LayerNorm
        adds = is_add | is_addln  # the jobs whose beats go through the adder
        m.d.comb += [add.m_a.eq(job.m_a), add.m_b.eq(job.m_b), add.shift.eq(job.shift)]

        # -- parameters: the GELU table or LayerNorm records ----------------------------------
        loading = Signal()
        pcount = Signal(32)  # parameter words taken
        byte_i = Signal(2)  # GELU: the byte of the held word being written
        word = Signal(32)
        word_full = Signal()
        ln_rec = Array(Signal(32, name=f"ln_w{k}") for k in range(4))
        m.d.comb += [
            gelu.load.payload.addr.eq(pcount * 4 - 4 + byte_i),
            gelu.load.payload.value.eq(word.word_select(byte_i, 8)),
        ]
        ln_load = [u.load for u in lns.values()]
        # the record a LayerNorm load beat carries: LN_RECORD bytes, 4 words (gain's low
        # word, its high word, offset's two), from ln_rec or from the wide beat
        rec, channel = Signal(8 * LN_RECORD), Signal(32)
        m.d.comb += [rec.eq(Cat(*ln_rec)), channel.eq(pcount // 4 - 1)]
        for ld in ln_load:
            m.d.comb += ld.payload.channel.eq(channel)
            if KL == 1:
                m.d.comb += [ld.payload.gain.eq(rec[:GAIN_BITS]),
                             ld.payload.offset.eq(rec[64:64 + OFFSET_BITS])]
            else:  # a whole beat: its KL records
                for k in range(KL):
                    r_k = self.wide_params.payload.word_select(k, 8 * LN_RECORD)
                    m.d.comb += [ld.payload.records[k].gain.eq(r_k[:GAIN_BITS]),
                                 ld.payload.records[k].offset.eq(r_k[64:64 + OFFSET_BITS])]
        need = Mux(is_gelu, 64, job.width * 4)
        if KL > 1:  # a beat of KL records a cycle
            wp = self.wide_params
            with m.If(loading & is_ln):
                m.d.comb += [channel.eq(pcount), wp.ready.eq(1)]
                for u in ln_load:
                    m.d.comb += u.valid.eq(wp.valid)
                with m.If(wp.valid):
                    m.d.sync += pcount.eq(pcount + KL)
                    with m.If(pcount + KL >= job.width):
                        m.d.sync += loading.eq(0)
        elif cfg.wide_ln_params:  # a record a cycle; a beat is taken with its last record
            K = cfg.weight_port_bytes // LN_RECORD
            rj = Signal(range(K))  # the beat's record on offer
            wp = self.wide_params
            with m.If(loading & is_ln):
                m.d.comb += [rec.eq(wp.payload.word_select(rj, 8 * LN_RECORD)),
                             channel.eq(pcount)]
                for u in ln_load:
                    m.d.comb += u.valid.eq(wp.valid)
                with m.If(wp.valid):
                    last = pcount == job.width - 1
                    m.d.sync += [pcount.eq(pcount + 1), rj.eq(rj + 1)]
                    with m.If((rj == K - 1) | last):
                        m.d.comb += wp.ready.eq(1)
                        m.d.sync += rj.eq(0)
                    with m.If(last):
                        m.d.sync += loading.eq(0)
        with m.If(loading & (is_gelu | (not cfg.wide_ln_params))):
            with m.If(is_gelu):
                with m.If(word_full):
                    m.d.comb += gelu.load.valid.eq(1)
                    m.d.sync += byte_i.eq(byte_i + 1)
                    with m.If(byte_i == 3):
                        m.d.sync += word_full.eq(0)
                        with m.If(pcount == need):
                            m.d.sync += loading.eq(0)
                with m.Else():
                    m.d.comb += self.params.ready.eq(1)
                    with m.If(self.params.valid):
                        m.d.sync += [word.eq(self.params.payload), word_full.eq(1),
                                     pcount.eq(pcount + 1), byte_i.eq(0)]
            with m.Else():  # LayerNorm: 4 words per channel, then one load beat
                with m.If(word_full):
                    for u in ln_load:
                        m.d.comb += u.valid.eq(1)
                    m.d.sync += word_full.eq(0)
                    with m.If(pcount == need):
                        m.d.sync += loading.eq(0)
                with m.Else():
                    m.d.comb += self.params.ready.eq(1)
                    with m.If(self.params.valid):
                        m.d.sync += [ln_rec[pcount[:2]].eq(self.params.payload),
                                     pcount.eq(pcount + 1)]
                        with m.If(pcount[:2] == 3):
                            m.d.sync += word_full.eq(1)

        # -- gather: per cycle, the row's next elements within the read ports' L words (of
        # both operands for ADD), up to the beat's and the row's end: a group of 1..GE ------
        glay = data.StructLayout({"a": data.ArrayLayout(signed(16), GE),
                                  "b": data.ArrayLayout(signed(16), GE),
                                  "k": range(GE + 1), "last": unsigned(1)})
        m.submodules.elems = elems = fifo.SyncFIFOBuffered(width=glay.size, depth=4)
        running = Signal()
        g_row, g_el = Signal(32), Signal(32)  # row, element of the row
        g_lane = Signal(range(P))  # the element's lane in its beat
        a_ptr, b_ptr = Signal(32), Signal(32)  # byte addresses of the element
        pend, pend_k, pend_last = Signal(), Signal(range(GE + 1)), Signal()
        pend_a_off, pend_b_off = Signal(2), Signal(2)
        a16, b16 = job.a_bits == 16, job.b_bits == 16
        g_left = Signal()
        m.d.comb += g_left.eq(running & (g_row < job.tokens))
        def clear(ptr):
            """The port's ``4 L`` bytes from ``ptr`` are none that another may still write."""
            return (ptr + 4 * L <= self.wr_lo) | (ptr >= self.wr_hi)

        issue = Signal()
        m.d.comb += issue.eq(g_left & (elems.level + pend < elems.depth) & clear(a_ptr)
                             & (clear(b_ptr) | ~adds))
        g_k, g_row_left, g_beat_left = Signal(range(GE + 1)), Signal(32), Signal(range(P + 1))
        m.d.comb += [g_row_left.eq(job.width - g_el), g_beat_left.eq(P - g_lane),
                     g_k.eq(_min(_room(a_ptr, a16, L), Mux(adds, _room(b_ptr, b16, L), GE),
                                 g_row_left, g_beat_left))]
        g_row_end = g_k == g_row_left
        m.d.comb += [self.ra_addr.eq(a_ptr >> 2), self.rb_addr.eq(b_ptr >> 2),
                     self.ra_en.eq(issue), self.rb_en.eq(issue & adds)]
        m.d.sync += pend.eq(issue)
        with m.If(issue):
            m.d.sync += [pend_k.eq(g_k), pend_last.eq(g_row_end | (g_k == g_beat_left)),
                         pend_a_off.eq(a_ptr[:2]), pend_b_off.eq(b_ptr[:2]),
                         a_ptr.eq(a_ptr + Mux(a16, g_k << 1, g_k)),
                         b_ptr.eq(b_ptr + Mux(b16, g_k << 1, g_k))]
            with m.If(g_row_end):
                m.d.sync += [g_el.eq(0), g_lane.eq(0), g_row.eq(g_row + 1)]
            with m.Elif(g_k == g_beat_left):
                m.d.sync += [g_el.eq(g_el + g_k), g_lane.eq(0)]
            with m.Else():
                m.d.sync += [g_el.eq(g_el + g_k), g_lane.eq(g_lane + g_k)]

        def elements(data_, off, is16):
            """The first ``GE`` int8 (or int16) elements of the port's ``L`` words from
            element slot ``off`` of the first word on."""
            def pick(width, n, d, offs):
                out = Signal(signed(width))
                m.d.comb += out.eq(Array(data_.word_select(o + d, width) if o + d < n
                                         else Const(0, width)
                                         for o in range(offs))[off if offs == 4 else off[1]])
                return out
            return [Mux(is16, pick(16, 2 * L, d, 2), pick(8, 4 * L, d, 4)) if d < 2 * L
                    else pick(8, 4 * L, d, 4) for d in range(GE)]

        group = Signal(glay)
        ea = elements(self.ra_data, pend_a_off, a16)
        eb = elements(self.rb_data, pend_b_off, b16)
        m.d.comb += [group.k.eq(pend_k), group.last.eq(pend_last),
                     elems.w_en.eq(pend), elems.w_data.eq(group)]
        m.d.comb += [group.a[d].eq(ea[d]) for d in range(GE)]
        m.d.comb += [group.b[d].eq(eb[d]) for d in range(GE)]

        # -- pack: a group per cycle into lanes fill .. fill + k - 1 of the beat --------------
        lanes_a = [Signal(signed(16), name=f"la{k}") for k in range(P)]
        lanes_b = [Signal(signed(16), name=f"lb{k}") for k in range(P)]
        fill = Signal(range(P + 1))
        beat_valid = Signal()
        got = Signal(glay)
        taken = Signal()  # the unit takes the offered beat
        # the next beat's first group lands in the cycle the unit takes the beat (the unit
        # samples the lanes before the edge that overwrites them)
        m.d.comb += [elems.r_en.eq(~beat_valid | taken), got.eq(elems.r_data)]
        with m.If(beat_valid & taken):
            m.d.sync += beat_valid.eq(0)
        with m.If(elems.r_rdy & elems.r_en):
            for lane in range(P):
                for d in range(min(GE, lane + 1)):
                    with m.If((fill == lane - d) & (d < got.k)):
                        m.d.sync += [lanes_a[lane].eq(got.a[d]), lanes_b[lane].eq(got.b[d])]
            with m.If(got.last):  # lanes past the row's end keep stale values: not written
                m.d.sync += [fill.eq(0), beat_valid.eq(1)]
            with m.Else():
                m.d.sync += fill.eq(fill + got.k)
        for k in range(P):
            m.d.comb += [gelu.i.payload[k].eq(lanes_a[k]), add.i.payload.a[k].eq(lanes_a[k]),
                         add.i.payload.b[k].eq(lanes_b[k])]
            # ADD_LAYERNORM: the adder's sums (int16 lanes) saturated to the LayerNorm's input
            total = add.o.payload[k]
            sums = {16: total, 8: Mux(total > 127, 127, Mux(total < -128, -128, total))}
            m.d.comb += [u.i.payload[k].eq(Mux(is_addln, sums[b], lanes_a[k]))
                         for b, u in lns.items()]
        ln_i16 = job.ln_bits == 16
        ln_sel = {16: ln_i16, 8: ~ln_i16}  # which LayerNorm a job uses (int8 ones are
        # refused before they get here when the config has no int8 LayerNorm)

        def ln_pick(get):
            """``get(unit)`` of the LayerNorm the job uses."""
            return Mux(ln_i16, get(ln16), get(lns[8])) if 8 in lns else get(ln16)

        m.d.comb += [gelu.i.valid.eq(beat_valid & is_gelu), add.i.valid.eq(beat_valid & adds)]
        m.d.comb += [u.i.valid.eq(Mux(is_addln, add.o.valid, beat_valid & is_ln) & ln_sel[b])
                     for b, u in lns.items()]
        m.d.comb += taken.eq(beat_valid & Mux(is_gelu, gelu.i.ready, Mux(
            adds, add.i.ready, ln_pick(lambda u: u.i.ready))))

        # LayerNorm: one cmd per token
        cmds = Signal(32)
        for b, u in lns.items():
            m.d.comb += [u.cmd.payload.hidden.eq(job.width), u.cmd.payload.eps.eq(job.eps),
                         u.cmd.valid.eq(running & is_ln & ln_sel[b] & (cmds < job.tokens))]
        with m.If(ln_pick(lambda u: u.cmd.valid & u.cmd.ready)):
            m.d.sync += cmds.eq(cmds + 1)

        # -- scatter: per cycle, the held beat's next elements that share a scratchpad word, up
        # to the beat's and the row's end; the next beat is taken in the beat's last cycle ----
        out_beat = [Signal(signed(16), name=f"ob{k}") for k in range(P)]  # the rest, at its head
        held = Signal()
        o_el, o_row = Signal(32), Signal(32)
        o_lane = Signal(range(P))
        o_ptr = Signal(32)
        o16 = job.out_bits == 16
        unit_o_valid = Mux(is_gelu, gelu.o.valid, Mux(is_add, add.o.valid,
                                                      ln_pick(lambda u: u.o.valid)))
        take_o = Signal()
        users = [(gelu, is_gelu)] + [(u, is_ln & ln_sel[b]) for b, u in lns.items()]
        for u, sel in users:
            m.d.comb += u.o.ready.eq(sel & take_o)
        m.d.comb += add.o.ready.eq(Mux(is_addln, ln_pick(lambda u: u.i.ready), is_add & take_o))
        o_k, o_row_left, o_beat_left = Signal(range(GE + 1)), Signal(32), Signal(range(P + 1))
        m.d.comb += [o_row_left.eq(job.width - o_el), o_beat_left.eq(P - o_lane),
                     o_k.eq(_min(_room(o_ptr, o16, L), o_row_left, o_beat_left))]
        o_row_end = o_k == o_row_left
        # a write short of the beat's end fills the port from the first element's slot: the
        # beat moves on by 4 L - off (int8) or 2 L - off (int16) elements
        shifts = sorted(v for v in {4 * L - o for o in range(4)} | {2 * L - o for o in range(2)}
                        if 0 < v < P)
        w_ok = Signal()  # the held beat's write goes ahead this cycle
        m.d.comb += w_ok.eq(~self.w_busy & clear(o_ptr))
        last_write = held & w_ok & o_row_end & (o_row == job.tokens - 1)
        m.d.comb += take_o.eq((~held | (w_ok & ((o_k == o_beat_left) | o_row_end)))
                              & ~last_write)
        with m.If(held & w_ok):
            off = Mux(o16, o_ptr[1], o_ptr[:2])  # the first element's slot in the word
            m.d.comb += self.w_addr.eq(o_ptr >> 2)
            for j in range(4 * L):  # byte lane j of the port's L words
                for o in range(min(j + 1, 4)):
                    if j - o < P:
                        with m.If(~o16 & (off == o)):
                            val = out_beat[j - o]
                            m.d.comb += [
                                self.w_data.word_select(j, 8).eq(
                                    Mux(val > 127, 127, Mux(val < -128, -128, val))[:8]),
                                self.w_en[j].eq(j - o < o_k)]
                for o in range(min(j // 2 + 1, 2)):
                    if j // 2 - o < P:
                        with m.If(o16 & (off == o)):
                            val = out_beat[j // 2 - o]
                            m.d.comb += [self.w_data.word_select(j, 8).eq(
                                             val.as_unsigned()[8 * (j % 2):8 * (j % 2) + 8]),
                                         self.w_en[j].eq(j // 2 - o < o_k)]
            with m.If(~((o_k == o_beat_left) | o_row_end)):  # the rest of the beat to its head
                with m.Switch(o_k):
                    for v in shifts:
                        with m.Case(v):
                            m.d.sync += [out_beat[k].eq(out_beat[k + v] if k + v < P else 0)
                                         for k in range(P)]
            m.d.sync += [o_ptr.eq(o_ptr + Mux(o16, o_k << 1, o_k)), held.eq(~take_o)]
            with m.If(o_row_end):
                m.d.sync += [o_el.eq(0), o_lane.eq(0), o_row.eq(o_row + 1)]
                with m.If(last_write):
                    m.d.sync += [running.eq(0), busy.eq(0), held.eq(0)]
                    m.d.comb += self.done.eq(1)
            with m.Elif(o_k == o_beat_left):
                m.d.sync += [o_el.eq(o_el + o_k), o_lane.eq(0)]
            with m.Else():
                m.d.sync += [o_el.eq(o_el + o_k), o_lane.eq(o_lane + o_k)]
        with m.If(take_o & unit_o_valid):
            m.d.sync += held.eq(1)
            for k in range(P):
                v = Mux(is_gelu, gelu.o.payload[k],
                        Mux(is_add, add.o.payload[k],
                            ln_pick(lambda u, k=k: u.o.payload[k])))
                m.d.sync += out_beat[k].eq(v)

        # -- job control --------------------------------------------------------------------------
        m.d.comb += self.job.ready.eq(~busy)
        with m.If(self.job.valid & ~busy):
            p = self.job.payload
            m.d.sync += [job.eq(p), busy.eq(1), pcount.eq(0), word_full.eq(0),
                         loading.eq((p.op == Op.GELU) | (p.op == Op.LAYERNORM)
                                    | (p.op == Op.ADD_LAYERNORM)),
                         g_row.eq(0), g_el.eq(0), g_lane.eq(0), a_ptr.eq(p.a), b_ptr.eq(p.b),
                         o_el.eq(0), o_row.eq(0), o_ptr.eq(p.out), o_lane.eq(0), cmds.eq(0),
                         fill.eq(0), held.eq(0)]
        with m.If(busy & ~loading & ~running & ~self.done):
            m.d.sync += running.eq(1)
        return m
