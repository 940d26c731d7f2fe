"""The top's engine datapath: LINEAR, QK_SOFTMAX and PV commands on the spmm engine."""

from __future__ import annotations

import math

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.lib.checks import require_config
from hw.lib.nets import net
from hw.spmm.engine import SpmmEngine, engine_layouts
from hw.top.axi import request_layout
from hw.vector.requant import Requantizer
from hw.vector.softmax import SoftmaxUnit
from sw.compiler.isa import RQ_RECORD, RQ_SHIFT_BIT, RQ_WORDS, Op
from sw.ref.fixedpoint import MULT_BITS

__all__ = ["EngineOps", "engine_job_layout"]


def engine_job_layout() -> data.StructLayout:
    """One engine command, decoded into the operands of ``out = act . w^T``."""
    return data.StructLayout({
        "op": unsigned(4),
        "act": unsigned(32), "act_stride": unsigned(32),  # scratchpad [tokens, k]
        "w": unsigned(32), "w_stride": unsigned(32),  # params offset (LINEAR) or scratchpad
        "tokens": unsigned(32), "k": unsigned(32), "rows": unsigned(32), "n": unsigned(5),
        "rq_off": unsigned(32), "out": unsigned(32), "out_stride": unsigned(32),
        "out_bits": unsigned(5), "mask": unsigned(32), "mult": unsigned(32),
        "shift": unsigned(6),
        "gelu": unsigned(1), "table": unsigned(32),  # LINEAR: results through the GELU table
    })



def _realign(prev, word, skip):
    """A row's next 4 bytes when the row starts ``skip`` bytes into its first bus word:
    the last ``4 - skip`` bytes of ``prev`` then the first ``skip`` bytes of ``word``
    (``word`` itself when the row is word-aligned)."""
    return Mux(skip == 0, word, (Cat(prev, word) >> (skip * 8))[:32])


class _Offset:
    """A memory write port whose ``addr`` is given ``depth`` entries on when ``sel``."""

    def __init__(self, m, port, size, sel, depth):
        self.addr, self.data, self.en = Signal(range(size)), port.data, port.en
        m.d.comb += port.addr.eq(self.addr + Mux(sel, depth, 0))


class EngineOps(wiring.Component):
    """Runs one LINEAR / QK_SOFTMAX / PV command: ``out[t, r] = act[t, :] . w[r, :]`` on the
    :class:`~hw.spmm.engine.SpmmEngine`, tile by tile, then requantizes (LINEAR, PV) or feeds
    the softmax (QK_SOFTMAX). A LINEAR with ``gelu`` first reads its 256-byte GELU table
    (64 words from ``table``) and writes every int8 result through it.

    Loop order: *chunks* of token blocks (``C`` tokens each) outer, as many blocks as the
    activation banks hold (``act_buffer_depth // ceil(K / M)``, a PV half of that when QK and
    PV alternate halves (below); QK: one block); row blocks of
    ``R`` inside; the chunk's token blocks innermost. A chunk's activations are staged once from
    the scratchpad; each row block's weights are staged once per chunk: LINEAR from the params
    buffer (values and bit-packed indices, as :func:`sw.nm.pack` lays them out), QK from the key
    rows and PV from the columns of V in the scratchpad (dense); then the row block streams
    through the engine against every token block of the chunk. A tile's results go out (the
    *write-out*: requantizer, a 2-beat result FIFO, the scratchpad's write port or QK's score
    banks) while the next tiles run: each tile leaves its first row, first token and output
    address (and its command's rows, tokens and output stride; QK: its score buffer) in a
    descriptor FIFO for the write-out, and a LINEAR or PV chunk waits for its last results
    before the next chunk's staging (a PV's or LINEAR's last chunk's go on out beside what
    follows, ``wo_busy``; a QK's scores beside its next chunk or the next QK). QK keeps a token
    block's raw scores on chip until every key block is done and then streams the block's
    softmax rows through the unit with the key mask, each row once the last tile's scores
    for it are written: a feed reads a beat of scores a cycle, the unit takes a row per
    ``nb = ceil(tokens / P)`` cycles, and a drain writes each row's probabilities while later
    rows are still coming in. The rows run beside the rest of the command and after it
    (``sm_busy``; the QK's fields they need latched at SM_HAND; while the rows before still
    run they wait in a pending slot, go into the unit from the cycle after the one in which
    those rows are all in it, while they drain, and run on their own from the cycle after
    those rows' last write; SM_HAND waits only while the slot is taken), while the next token
    block's, or the next QK's, tiles fill the other of two score buffers (a third block's
    scores wait for the feed reading their buffer) and its MASK the next of four key-mask
    buffers. With a weight port (``config.weight_port_bytes = B``) LINEAR weights come
    instead through ``wgt_req`` / ``wgt_data``, one request per row block in
    :mod:`sw.compiler.weight_layout`'s interleaved layout: each beat writes ``B / 4`` rows'
    value banks, or ``8 B / index_word_bits`` rows' index banks, at one entry. A separate
    weight loader does this into the banks' other buffer: a chunk's first row block while the
    chunk's activations (and the GELU table) are staged, each next one from the previous block's
    requantizer records on, while its tiles run and their results go out. Token rows are
    staged two at a time, the second through read port 2 (``r2_*``); with wide scratchpad ports
    (``L = spm_lanes > 1``, ``4 L >= M``) instead a chunk of ``4 L`` bytes (``Q = 4 L / M``
    bank entries) of one row per cycle, chunk ``j`` of every row of the block in turn, into its
    bank's buffer, which writes an entry per cycle; when every row starts on a word (the
    first row's address and the stride multiples of 4) and ``C`` is even, port B reads the
    same chunk of the next row instead of the chunk's second half: two rows a cycle.

    A *feeder* streams a tile's weight and activation beats from the banks into the engine in
    the background from RUN on (its sizes and bank addresses latched), so the sequencer goes
    on at once: the next tile's RUN, which the engine takes with this tile's last step (tiles
    back to back), and after the command's last tile the next command's fetch, mask and
    records. So that the next QK's or PV's staging need not wait for it, QK and PV stage
    each chunk's activations in the other half of the banks (when half holds their largest
    block: ``act_buffer_depth / 2 >= ceil(max(max_k, max_row) / M)``) and, with a weight
    port, each row block's weights in the other of the two weight buffers. ACT (LINEAR, or
    without halves) and WGT (without a weight port), which write the banks the feeder reads,
    wait for it (ACT_HOLD, WGT_HOLD); a LINEAR's next row block starts loading into the
    other buffer once the feeder has left it. A PV may start beside a QK_SOFTMAX's softmax
    rows once its scores are all written (``sm_scored``): its results wait for the rows.
    With wide staging and a weight port, a LINEAR chunk's first tile (first row block, first
    token block) starts while the chunk is staged: its RUN handshake comes in the first ACT
    cycle, its feeder reads each activation group once the last bank (staged last in every
    chunk of the port's width) wrote it and each weight entry once every loader wrote it
    whole (the layout goes entry by entry, its values then its index words, so entries come
    in at the loaders' pace from the first beats on), and its results enter the requantizer
    once the block's records are in. The next row block starts loading as soon as the first
    is in (before WGT), and its records are fetched as soon as the first block's are in (not
    from RUN). Every later row block of such a LINEAR goes the same way: its WGT waits only
    until its load has started (the loaders take it once they are done with the block
    before and the feeder has left that buffer), the feeder reads each weight entry once it
    is whole whenever it reads the buffer the loaders fill, and its RQ does not wait for the
    block's records when they are on their way (or it has just asked for them): the
    block's results wait at the requantizer while the records loader fills the slot they
    read.

    Ports
    -----
    job : In(stream of engine_job_layout)
    dram_req : Out(stream of {addr, words}); dram_data : In(stream of 32 bits)
        Word reads of the params buffer (``addr`` is a byte offset into it, word aligned).
    wgt_req : Out(stream of {addr, words}); wgt_data : In(stream of 8 B bits)
        With a weight port only: beat reads (``words`` beats) of the params buffer.
    wgt<q>_req, wgt<q>_data : the same for weight port ``q`` = 1 .. ``weight_ports - 1``
        (reads of its bank), each with its own loader of ``R / P`` rows of every block.
    done : Out(1)
    flush : In(1)
        The kernel starts a Program: forget the cached requantizer records (below).
    wo_busy : Out(1)
        A PV's or LINEAR's results still go out (through ``w_*``) after its ``done``: until
        it falls the kernel starts no command but a PV that reads none of a PV's result
        bytes, or a vector command (its stream reads and writes none of the bytes they may
        still write: ``wo_tail``, ``wo_lim``; its writes wait for ``wo_writing``).
    wo_tail : Out(1)
        With ``wo_busy``: only the last tile's results are still to go out, all of them at
        byte ``wo_lim`` or above (a tile's results go out token by token, up in memory).
    wo_lim : Out(32)
        With ``wo_tail``: the lowest byte the write-out may still write.
    wo_writing : Out(1)
        The write-out writes a LINEAR's or PV's held beat this cycle (through ``w_*``; its
        cycles for tokens past the command's have no byte enables).
    sm_busy : Out(1)
        A QK_SOFTMAX's softmax rows still run (and write the scratchpad through ``w_*``)
        after its ``done``: the kernel starts no command that could see them (anything but a
        QK_SOFTMAX that reads none of the probabilities' bytes, or a PV that reads none of
        them once ``sm_scored``) until it falls. A LINEAR's or PV's results wait for it.
    sm_scored : Out(1)
        With ``sm_busy``: the QK_SOFTMAX's scores are all written (only its softmax rows run).
    r_* / r2_* : the scratchpad's read ports A and B, ``spm_lanes`` words wide (word
        addresses); only wide staging uses more than lane 0.
    w_* : the scratchpad's write port, ``spm_lanes`` words wide (byte enables); only the
        result write-out uses more than lane 0.

    Latency / throughput / resources
    --------------------------------
    :mod:`sw.perf.top` gives every command's cycles exactly (the tests check it against the
    RTL). In short: activations move a scratchpad word per cycle per read port (``G * M / 4``
    per token row, one more when the row starts mid-word; two rows at once), or with wide
    ports a chunk per cycle, two with word-aligned rows (``ceil(G / Q)`` per row; a chunk
    waits while its bank's buffer holds more than 2 entries, so ``C >= Q`` (``C >= 2 Q``
    with pairs) keeps the rate; then the buffers drain: a PV stages its V meanwhile, its RUN
    waiting for them), QK's
    key rows a word per cycle (with wide ports like wide activations: a chunk of ``L`` words
    of one row per cycle, two with word-aligned rows and ``R`` even, only the rows that hold
    keys, the ``R`` row buffers writing a word each per cycle); PV's V a
    word of 4 channels per cycle (per key
    ``ceil(R' / 4)`` words of the block's ``R'`` channels, one more when they start mid-word;
    then a cycle per padding slot; with wide ports and ``R <= 4 L`` a key's ``R`` channels
    per cycle, two keys' with word-aligned V rows and ``R`` a multiple of 4); a LINEAR
    row's values one
    bus word per cycle and its indices one bank word (4 slots) per cycle, each after the
    bus's read gap; with a weight port, a LINEAR row block's ``E = ceil(G * N / 4)`` entries in
    ``E * R' * (4 + index_word_bits / 8) / B`` beats, one per cycle (``R'``: the block's rows,
    padded to ``weight_rows_align``; with ``P`` weight ports ``R / P`` rows through each, the
    ports in parallel; dense rows: no index words, then ``E`` cycles writing every row's
    implicit indices), hidden behind the previous block's records, tiles and write-out, a
    chunk's first block behind the chunk's staging (and, early-tile chunks, the second from
    the cycle after the first is in; with wide staging a block's tiles run while it loads,
    an entry whole every ``R' (4 + index_word_bits / 8) / B`` cycles, and the next block's
    load waits for the loaders); a tile takes ``G * N`` cycles, its first
    step 4 cycles after RUN (the engine takes it, then the feed's 3 cycles) or, when RUN comes
    early, 4 cycles after the previous tile's last step, and not before the engine's
    previous sums are captured (the early tile: each step 3 cycles after its beats' reads,
    each read in the cycle after its bank entry is written at the earliest, the feed
    FIFOs 4 beats deep: ``sw.perf.top.feed_steps``); its results go out behind it: 2 cycles
    to the engine's shadow buffer,
    the requantizer's 4 (LINEAR, PV), 2 in the result FIFO, then per output beat (taken in the
    previous one's last write cycle) a cycle per ``L`` scratchpad words its ``R`` results span
    (``L = spm_lanes``, the write port's width; LINEAR, PV: ``ceil((lane + R) / 4 L)`` for int8,
    ``lane`` being the first result's byte in its word; QK: a cycle per two score-bank words of
    ``P`` keys its valid keys span), so ``C`` beats hide behind the next tile's ``G * N`` steps when
    they take fewer cycles; a row block's requantizer records (LINEAR, PV: ``RQ_WORDS`` =
    2 words a row over the 32-bit bus) before its tiles (with wide staging and a weight port,
    a LINEAR's later blocks' beside their tiles, the results waiting for them), a chunk's first
    block's fetched while the chunk is
    staged (PV; LINEAR with a weight port: after the GELU table), each next block's (same
    commands) into the next records slot from the block's first tile on (the early tile's
    chunk: the second block's once the first block's are in); a chunk's first
    block's not at all when the slot it fills, or the slot before it, already holds them
    (*records cache*: the same params offset and word count as the load that last filled
    that slot since ``flush``; the slots are filled in turn from command to command, a copy
    from the slot before in the cycle the fetch would start; PV heads share a record blob);
    a token block's softmax rows about a row per ``nb`` cycles, or per the cycles its
    output beats take to write (a cycle per ``L`` words a beat spans), plus the unit's
    latency (``sw.perf.top.softmax_phase_cycles``); QK's key mask first, ``config.mask_lanes``
    keys per cycle (``ceil(tokens / mask_lanes)`` cycles: a byte per cycle with one-word
    ports, a mask word of ``P`` keys with wide ones).
    Buffers: ``C`` activation banks of ``act_buffer_depth`` x ``M`` bytes, ``R`` value banks
    and ``R`` index banks of ``ceil(max_k / 4)`` x 4 slots, two score memories (block RAM:
    every token's even words, its odd words) of ``C`` x ``S`` words of ``32 P`` bits, ``S``
    = ``2 ceil(ceil(max_row / P) / 2)`` rounded up to a power of two (two buffers a token;
    one column written and one read a cycle), and a ``4 max_row``-bit key mask (four buffers),
    the pending slot's ~220 flip-flops;
    with wide
    ports ``C + R`` chunk buffers of ``4 L`` bytes; with a weight port the value and index
    banks twice as deep (two row blocks); ``R`` requantizer-record memories of 4 x 96 bits
    (a row's bias, multiplier and shift for 4 row blocks: LUTRAM, two read ports), a
    16-entry x 96-bit tile descriptor FIFO; the GELU table, 64 x 32 bits with
    ``min(R, 4 L)`` asynchronous read ports (LUTRAM copies), which a LINEAR with ``gelu``
    fills first (one request of 64 words) before its activations.
    """

    def __init__(self, *, config: AcceleratorConfig):
        require_config(self, config)
        self.config = config
        aw = (config.spm_bytes // 4 - 1).bit_length() or 1
        super().__init__({
            "job": In(stream.Signature(engine_job_layout())),
            "dram_req": Out(stream.Signature(request_layout())),
            "dram_data": In(stream.Signature(32)),
            "done": Out(1), "flush": In(1), "sm_busy": Out(1), "wo_busy": Out(1),
            "wo_tail": Out(1), "wo_lim": Out(32), "wo_writing": Out(1), "sm_scored": Out(1),
            "r_addr": Out(aw), "r_en": Out(1), "r_data": In(32 * config.spm_lanes),
            "r2_addr": Out(aw), "r2_en": Out(1), "r2_data": In(32 * config.spm_lanes),
            "w_addr": Out(aw), "w_data": Out(32 * config.spm_lanes),
            "w_en": Out(4 * config.spm_lanes),
            **({"wgt_req": Out(stream.Signature(request_layout())),
                "wgt_data": In(stream.Signature(8 * config.weight_port_bytes))}
               if config.weight_port_bytes else {}),
            **{name: sig for q in range(1, config.weight_ports) for name, sig in (
                (f"wgt{q}_req", Out(stream.Signature(request_layout()))),
                (f"wgt{q}_data", In(stream.Signature(8 * config.weight_port_bytes))))},
        })

    def _weight_loader(self, m, q, req, data, w_row, start, wl_off, entries, dense, rows_pad,
                       wl_r0, wv_w, wi_w, lim):
        """Weight port ``q``'s loader: on ``start``, its rows of a row block (all ``R`` with
        one port, the block's padded rows; ``R / P`` from row ``q R / P`` with ``P``) in one
        request at ``w_row`` (which moves past it), a beat per cycle into the banks at
        ``wl_off``, entry by entry (its values, then its index words: the weight layout);
        dense rows then get their implicit indices. ``lim``: the block's entries it has
        written whole (values and indices), from the cycle after. Returns "idle or in its
        last cycle" and "idle"."""
        cfg = self.config
        R, B, ib = cfg.pe_rows, cfg.weight_port_bytes, cfg.index_bits
        vw, iw = B // 4, cfg.index_word_bits
        iwr = 8 * B // iw
        log_v, log_i, log_b = vw.bit_length() - 1, iwr.bit_length() - 1, B.bit_length() - 1
        nr = cfg.port_rows  # the port's rows of a block (R / P)
        base = q * nr
        blk_l = (Mux(rows_pad - wl_r0 < R, rows_pad - wl_r0, R) if cfg.weight_ports == 1
                 else Const(nr))
        v_groups = Signal(range(nr // vw + 1), name=f"wl{q}_v_groups")
        i_groups = Signal(range(nr // iwr + 1), name=f"wl{q}_i_groups")
        wg = Signal(range(nr // min(vw, iwr) + 1), name=f"wl{q}_wg")
        we = Signal(len(entries), name=f"wl{q}_we")
        wbeats = Signal(32, name=f"wl{q}_beats")  # the block's beats
        idx_phase = Signal(name=f"wl{q}_idx_phase")
        idle, finish = Signal(name=f"wl{q}_idle"), Signal(name=f"wl{q}_finish")
        with m.FSM(name="wload" if q == 0 else f"wload{q}"):
            with m.State("IDLE"):
                m.d.comb += idle.eq(1)
                with m.If(start):
                    m.d.sync += [v_groups.eq(blk_l >> log_v), i_groups.eq(blk_l >> log_i),
                                 wbeats.eq(entries * ((blk_l >> log_v)
                                                      + Mux(dense, 0, blk_l >> log_i))),
                                 wg.eq(0), we.eq(0), idx_phase.eq(0), lim.eq(0)]
                    m.next = "WW_REQ"
            with m.State("WW_REQ"):
                m.d.comb += [req.valid.eq(1), req.payload.addr.eq(w_row),
                             req.payload.words.eq(wbeats)]
                with m.If(req.ready):
                    m.d.sync += w_row.eq(w_row + (wbeats << log_b))
                    m.next = "WW_DATA"
            with m.State("WW_DATA"):  # a beat per cycle: vw rows' values or iwr rows' indices
                m.d.comb += data.ready.eq(1)
                beat = data.payload
                groups = Mux(idx_phase, i_groups, v_groups)
                with m.If(data.valid):
                    for r in range(nr):
                        with m.If(~idx_phase & (wg == r // vw)):
                            m.d.comb += [wv_w[base + r].addr.eq(we + wl_off),
                                         wv_w[base + r].data.eq(beat.word_select(r % vw, 32)),
                                         wv_w[base + r].en.eq(0b1111)]
                        with m.If(idx_phase & (wg == r // iwr)):
                            m.d.comb += [wi_w[base + r].addr.eq(we + wl_off),
                                         wi_w[base + r].data.eq(beat.word_select(r % iwr, iw)),
                                         wi_w[base + r].en.eq(0b1111)]
                    m.d.sync += wg.eq(wg + 1)
                    with m.If(wg == groups - 1):  # the entry's values, or its indices, are in
                        m.d.sync += wg.eq(0)
                        with m.If(~dense & ~idx_phase):  # then its index words
                            m.d.sync += idx_phase.eq(1)
                        with m.Else():  # the entry is whole (dense: but its indices)
                            m.d.sync += [idx_phase.eq(0), we.eq(we + 1)]
                            with m.If(~dense):
                                m.d.sync += lim.eq(we + 1)
                            with m.If(we == entries - 1):
                                m.d.sync += we.eq(0)
                                with m.If(dense):
                                    m.next = "WW_DENSE"
                                with m.Else():
                                    m.d.comb += finish.eq(1)
                                    m.next = "IDLE"
            with m.State("WW_DENSE"):  # dense rows: index = slot mod M, every row at once
                for r in range(nr):
                    m.d.comb += [wi_w[base + r].addr.eq(we + wl_off), wi_w[base + r].en.eq(0b1111),
                                 wi_w[base + r].data.eq(Cat(((we << 2) + j)[:ib]
                                                            for j in range(4)))]
                m.d.sync += [we.eq(we + 1), lim.eq(we + 1)]
                with m.If(we == entries - 1):
                    m.d.comb += finish.eq(1)
                    m.next = "IDLE"
        return idle | finish, idle

    def elaborate(self, platform):  # noqa: C901 - one sequencer, one state per phase
        m = Module()
        cfg = self.config
        R, C, M, P = cfg.pe_rows, cfg.pe_cols, cfg.m, cfg.softmax_lanes
        ib = cfg.index_bits
        nkb = math.ceil(cfg.max_row / P)
        lay = engine_layouts(cfg)
        L = cfg.spm_lanes
        KM = cfg.mask_lanes  # QK: key-mask bytes staged per cycle
        wide = cfg.wide_staging  # activations staged a port's width per cycle
        wide_v = cfg.wide_v_staging  # PV: a key's channels of the block per cycle
        wide_k = L > 1  # QK: key rows staged like wide activations, L words a chunk
        m.submodules.engine = eng = SpmmEngine(config=cfg)
        m.submodules.rq = rq = Requantizer(lanes=R, out_bits=16)
        m.submodules.softmax = sm = SoftmaxUnit(config=cfg)

        act_depth = cfg.act_buffer_depth
        # QK and PV stage their activations in the two halves of the banks in turn, so the
        # next one's ACT need not wait for the feeder (when half holds every QK and PV block)
        half = act_depth // 2
        alt_a = cfg.act_halves
        act_mem = [Memory(shape=unsigned(8 * M), depth=act_depth, init=[]) for _ in range(C)]
        # weight banks: one per row, 4 slots per word (value bytes; indices of ibw bits)
        ibw = max(1, ib)
        w_depth = -(-cfg.max_k // 4)
        # with a weight port the banks hold two row blocks: the loader fills one while the
        # tiles read the other (entries from w_depth on: buffer 1)
        w_bufs = 2 if cfg.weight_port_bytes else 1
        wv_mem = [Memory(shape=unsigned(32), depth=w_bufs * w_depth, init=[]) for _ in range(R)]
        wi_mem = [Memory(shape=unsigned(4 * ibw), depth=w_bufs * w_depth, init=[])
                  for _ in range(R)]
        # score memories: a word of P keys per entry, the even words of every token column in
        # sc_mem[0] and the odd ones in sc_mem[1], so the write-out can write two neighbouring
        # words of a column a cycle; column c's entries from c << sc_col on. Two score
        # buffers (a column's entries from hd on: buffer 1) and four key-mask buffers (entries
        # from b * nkb on): a QK's tiles fill score buffer qbuf (flipped when a token block's
        # rows are handed over) and its MASK mask buffer mq (the next per QK), while the
        # softmax rows before, running and pending, read others (sbuf, smk; pj_buf, pj_mk).
        # The write-out writes one column a cycle and the feed reads one, so one memory of
        # all columns does (block RAM: a bank per column cost LUT RAM, its write-data
        # multiplexers and a C-way read multiplexer, all per column)
        hd = -(-nkb // 2)
        sc_col = (2 * hd - 1).bit_length()
        col_bits = max(1, (C - 1).bit_length())  # a token column's index (below C)
        sc_mem = [Memory(shape=unsigned(32 * P), depth=C << sc_col, init=[],
                         attrs={"ram_style": "block"}) for _ in range(2)]
        mask_mem = Memory(shape=unsigned(P), depth=4 * nkb, init=[])
        qbuf, sbuf = Signal(), Signal()
        # the softmax rows run beside the next commands (sm_busy) with the QK's fields latched
        # when they start: the feed's (f_on; its tokens, the block's rows = tokens - t0,
        # softmax beats a row, multiplier, shift) and the drain's (tokens, rows, output
        # stride). The feed is the running block's, or once that block's rows are all in, the
        # pending block's (f_pj)
        fj_tokens, fj_left, fj_nbeats = Signal(32), Signal(32), Signal(32)
        fj_mult, fj_shift = Signal(32), Signal(6)
        dj_tokens, dj_left, dj_stride = Signal(32), Signal(32), Signal(32)
        sm_busy, f_on, f_pj = Signal(), Signal(), Signal()
        m.d.comb += self.sm_busy.eq(sm_busy)
        # sm_all: the rows' scores are all written; mq: the key-mask buffer the QK's MASK
        # fills (the next per QK; qbuf flips per token block), smk: the one the rows read
        sm_all, mq, smk = Signal(), Signal(2), Signal(2)
        # a token block's softmax rows handed over while the rows before still run wait in
        # a pending slot (pj_*: the fields SM_HAND latches, its score and mask buffers, its
        # first probability's address, whether its scores are all written); they go in from
        # the cycle after the one in which the running rows are all in the unit (pj_fed), and
        # become the running rows in the cycle after those rows' last write (sm_done). A QK's
        # tiles that fill the score buffer the feed still reads wait for it (the write-out)
        pj_valid, pj_all, pj_buf, pj_mk, pj_fed = (Signal(), Signal(), Signal(), Signal(2),
                                                   Signal())
        pj_tokens, pj_left, pj_nbeats = Signal(32), Signal(32), Signal(32)
        pj_mult, pj_shift, pj_stride, pj_ptr = Signal(32), Signal(6), Signal(32), Signal(32)
        sm_done, hand_go = Signal(), Signal()
        m.d.comb += self.sm_scored.eq(sm_busy & sm_all & ~pj_valid)
        for k, mem in enumerate(act_mem + wv_mem + wi_mem + sc_mem):
            m.submodules[f"buf{k}"] = mem
        m.submodules.mask_mem = mask_mem
        act_w = [mm.write_port(granularity=8) for mm in act_mem]
        act_r = [mm.read_port() for mm in act_mem]
        # the weight banks' write ports, addressed within the buffer st_sel picks (QK and PV
        # staging alternate buffers with a weight port; LINEAR's loaders give whole addresses
        # with st_sel = 0)
        st_sel = Signal()
        wv_w = [_Offset(m, mm.write_port(granularity=8), w_bufs * w_depth, st_sel, w_depth)
                for mm in wv_mem]
        wv_r = [mm.read_port() for mm in wv_mem]
        wi_w = [_Offset(m, mm.write_port(granularity=ibw), w_bufs * w_depth, st_sel, w_depth)
                for mm in wi_mem]
        wi_r = [mm.read_port() for mm in wi_mem]
        sc_w = [mm.write_port(granularity=32) for mm in sc_mem]  # even words, odd words

        def put_value(r, slot, byte):
            """Write row ``r``'s value of ``slot`` (its byte lane of the slot's word)."""
            m.d.comb += [wv_w[r].addr.eq(slot >> 2), wv_w[r].data.eq(byte.replicate(4)),
                         wv_w[r].en.eq(Const(1, 4) << slot[:2])]

        def put_index(r, slot, index):
            m.d.comb += [wi_w[r].addr.eq(slot >> 2), wi_w[r].data.eq(index.replicate(4)),
                         wi_w[r].en.eq(Const(1, 4) << slot[:2])]
        sc_r = [mm.read_port() for mm in sc_mem]
        mk_w = mask_mem.write_port(granularity=1)
        mk_r = mask_mem.read_port()
        # LINEAR's GELU table (sw.ref.gelu): entry x + 128 in byte (x + 128) % 4 of word
        # (x + 128) // 4; one asynchronous read port per result the write port takes a cycle
        gelu_mem = Memory(shape=unsigned(32), depth=64, init=[])
        m.submodules.gelu_table = gelu_mem
        gl_w = gelu_mem.write_port()
        gl_r = [gelu_mem.read_port(domain="comb") for _ in range(min(R, 4 * L))]

        job = Signal(engine_job_layout())
        is_lin, is_qk, is_pv = job.op == Op.LINEAR, job.op == Op.QK_SOFTMAX, job.op == Op.PV
        n = Signal(5)
        m.d.comb += n.eq(Mux(is_lin, job.n, M))
        # per-job constants, registered when the job is taken (no multiplier on any path that
        # feeds an address or a loop test)
        kw = cfg.max_k.bit_length()
        G = Signal(kw)  # groups of M along k
        steps = Signal(kw)  # stored slots per row, G * n
        ibytes = Signal(kw)  # bytes of a LINEAR row's bit-packed indices
        rows_gn = Signal(32)  # bytes of all LINEAR row values: rows * steps
        nbeats = Signal(32)  # softmax beats per row
        m.d.sync += [ibytes.eq((steps * ib + 7) >> 3), rows_gn.eq(job.rows * steps)]
        dense = n == M
        t0, r0 = Signal(32), Signal(32)  # first token of the block / first row of the tile
        # a chunk: as many token blocks as the activation banks hold (QK: one), staged once and
        # run against every row block
        at = Signal(32)  # next token row to stage (padding rows of a last block included)
        ab = Signal(range(C))  # its bank (token within the block)
        abase = Signal(range(act_depth + 1))  # bank address of its block's first group
        c0 = Signal(32)  # first token of the chunk
        nblk = Signal(range(act_depth + 1))  # blocks in the chunk
        tb = Signal(range(act_depth + 1))  # block of the chunk being run
        a_base = Signal(range(act_depth + 1))  # its first group's bank address: tb * G
        # running scratchpad / params addresses, stepped by the strides as the counters move
        act_ptr = Signal(32)  # act + at * act_stride
        out_stage = Signal(32)  # out + at * out_stride, stepped per staged block
        out_chunk = Signal(32)  # out + c0 * out_stride
        out_blk = Signal(32)  # out + t0 * out_stride
        out_ptr = Signal(32)  # out + (t0 + beats_out) * out_stride
        w_row = Signal(32)  # QK: w + row * w_stride; LINEAR: w + row * steps
        w_col = Signal(32)  # PV: w + key * w_stride + r0
        i_row = Signal(32)  # LINEAR: w + rows * steps + row * ibytes
        rq_ptr = Signal(32)  # rq_off + r0 * 12

        # -- scratchpad byte reads: issue this cycle, the byte arrives next cycle -----------------
        rd_issue, rd_addr = Signal(), Signal(32)
        rd_pend, rd_off = Signal(), Signal(2)
        m.d.comb += [self.r_addr.eq(rd_addr >> 2), self.r_en.eq(rd_issue)]
        m.d.sync += [rd_pend.eq(rd_issue), rd_off.eq(rd_addr[:2])]
        r_word, r2_word = self.r_data[:32], self.r2_data[:32]  # lane 0 of each port
        rd_byte = r_word.word_select(rd_off, 8)

        # every staging cycle issues one read (or a zero for padding) whose data lands in its
        # buffer the next cycle: kind 1 = mask bytes, 2 = activation word, 3 = weight byte,
        # 4 = key word (QK weights), 5-8 = V (PV weights)
        land_kind = Signal(4)
        m.d.sync += land_kind.eq(0)

        # counters shared by the phases
        i0, i1 = Signal(32), Signal(32)  # outer / inner element counters of a phase
        # the target of the byte in flight
        tgt_i0, tgt_i1, tgt_zero = Signal(32), Signal(32), Signal()
        tgt_base = Signal(range(act_depth + 1))  # activations: the block's bank address
        tgt_skip = Signal(2)  # activations: the row's leading bytes in its first word
        prev_a = Signal(32)  # activations: the word that landed last
        # the second row of a pair (read port 2): its bank, leading bytes, last word, and
        # whether a word of it lands (zeros for a padding row)
        tgt2_i0, tgt2_skip, tgt2_zero, land2 = Signal(range(C)), Signal(2), Signal(), Signal()
        prev2 = Signal(32)
        m.d.sync += land2.eq(0)
        act_words = Signal(kw)  # words of a staged row: G * M / 4
        m.d.comb += act_words.eq((G * M) >> 2)
        # LINEAR rows from params: leading bytes before the row in its first word; the index
        # bits queued (LSB first, as sw.nm.pack packs them)
        skip = Signal(2)
        left, rq_i = Signal(32), Signal(32)  # requantizer words to take; taken
        bits_acc, bits_n = Signal(4 * ib + 32), Signal(range(4 * ib + 33))
        # requantizer records, a row block's in a slot: record r (bias; mult and shift words) of
        # the block in slot s at entry s of row r's memory (LUTRAM). The loader fills slot
        # ld_slot (wslot when it starts); the requantizer reads slot rslot, which moves on with
        # the last engine output beat of a row block's tiles. At most four blocks are between
        # the two: the one whose results drain from the engine, the next (its sums waiting to be
        # captured), the one running and the one whose records come (see the write-out below)
        rq_mem = [Memory(shape=unsigned(32 * RQ_WORDS), depth=4, init=[]) for _ in range(R)]
        for r, mem in enumerate(rq_mem):
            m.submodules[f"rq_rec{r}"] = mem
        rq_w = [mem.write_port(granularity=32) for mem in rq_mem]
        rq_r = [mem.read_port(domain="comb") for mem in rq_mem]
        rq_c = [mem.read_port(domain="comb") for mem in rq_mem]  # the records cache's copy
        wslot, rslot, ld_slot = Signal(3), Signal(3), Signal(2)
        ld_row, ld_f = Signal(range(R)), Signal(2)  # the word the loader takes: record, field
        # their words, RQ_WORDS min(R, rows - r0), registered: r0 changes at least a cycle (WGT)
        # before RQ asks for them (on the ECP5 this count fed the AXI reader's counters and
        # state enables in the same cycle: the routed kernel's critical path at f426603)
        rq_words = Signal(range(RQ_WORDS * R + 1))
        # the records loader (dram port): started by RQ (rq_go), or for a chunk's first row
        # block (LINEAR with a weight port, PV) two cycles after the chunk starts (pf_rq, then
        # pf_rq2: r0 and rq_words settle), while the activations and weights are staged; rq_pf:
        # the block's records come that way
        rq_go, rq_idle, rq_finish = Signal(), Signal(), Signal()
        pf_rq, pf_rq2, rq_pf = Signal(), Signal(), Signal()
        m.d.sync += [pf_rq.eq(0), pf_rq2.eq(pf_rq)]
        # records cache: what each slot holds (valid, the params offset and words of the load
        # that filled it). A chunk's first block's records (pf_rq2) that are already in the
        # slot they would fill are not fetched again, and when the slot before it holds them
        # they are copied over from it in that cycle (a second read port): PV's heads share
        # one record blob (the compiler gives equal blobs one offset). The params buffer is
        # read-only while a Program runs; flush forgets the records when the kernel starts one
        c_valid = Array(Signal(name=f"c_valid{k}") for k in range(4))
        c_addr = Array(Signal(32, name=f"c_addr{k}") for k in range(4))
        c_words = Array(Signal(range(RQ_WORDS * R + 1), name=f"c_words{k}") for k in range(4))
        # the next row block's records, fetched from the block's first RUN cycle (nx_go) while
        # its tiles run (PV, and LINEAR with a weight port: nothing else uses the dram port
        # then); its RQ waits for them (nx_ready). nx_pend: the current block's next block's
        # records are on their way; to_nx: the loader fetches them. ld_ptr: its request
        # address (for REQ)
        nx_words = Signal(range(RQ_WORDS * R + 1))
        nx_go, nx_pend, nx_ready, to_nx = Signal(), Signal(), Signal(), Signal()
        ld_ptr = Signal(32)
        # LINEAR: the row's values are staged first, then its indices
        idx_phase = Signal()
        slot = Signal(32)
        # LINEAR values: words of the request taken / in all, the previous word
        wk, wtot, prev = Signal(32), Signal(32), Signal(32)
        entries = Signal(kw)  # words of 4 slots per row: ceil(steps / 4)
        m.d.comb += entries.eq((steps + 3) >> 2)

        # the weight port (B bytes a beat; sw.compiler.weight_layout): a block's value words,
        # vw rows a beat, then its index words, iwr rows a beat; entry e, row group g
        B = cfg.weight_port_bytes
        NP = cfg.weight_ports
        if B:
            align = cfg.weight_rows_align
            rows_pad = Signal(32)
            if NP == 1:
                m.d.comb += rows_pad.eq((job.rows + align - 1) & ~(align - 1))
            # the weight loaders, one per weight port (port p: rows [p R / NP, (p + 1) R / NP)
            # of a block, NP > 1), started together with a block's first row (wl_start);
            # each has its own address (w_rows[p], the LINEAR's w_off in its bank), idle and
            # last-cycle flags; wl_done: every one is idle or in its last cycle; wl_idle:
            # every one is idle (a start would be taken)
            w_rows = [w_row] + [Signal(32, name=f"w_row{q}") for q in range(1, NP)]
            wl_start, wl_r0, wl_done, wl_idle = Signal(), Signal(32), Signal(), Signal()
            # whether the next block's load was started during this block's write-out
            prefetched = Signal()
            # a LINEAR chunk's first row block loads while the chunk's activations (and, for
            # the first chunk, the GELU table) are staged: started the cycle after the job is
            # taken or the previous chunk ends
            pf_first = Signal()
            # the weight banks' buffer the tiles read; the one the loaders fill (wl_target
            # when they start)
            cur, wl_buf, wl_target = Signal(), Signal(), Signal()
        # a LINEAR chunk's first tile starts early (wide staging and a weight port): RUN's
        # handshake from the first ACT cycle on (up to RUN; ran_early: RUN then passes on),
        # its results waiting for the block's records (et_rec; fetched as before, the next
        # block's as soon as the loader is free after them, not from RUN); its feeder
        # (f_track) reads each activation group
        # once the last bank wrote it (a_lim, while a_track: the chunk is being staged) and,
        # like every tile reading the buffer the loaders fill, each weight entry once every
        # loader wrote it whole (wl_lim); the next block loads as soon as the first is in
        # (pf1: w_track, the first block is loading, then first_in)
        early_mode = bool(B) and wide
        if early_mode:
            e_chunk, early_pend, ran_early, f_track = Signal(), Signal(), Signal(), Signal()
            # the chunk's first block's records are in (rec0); the early tile's results wait
            # for them at the requantizer (et_rec)
            rec0, et_rec = Signal(), Signal()
            a_track, w_track, first_in, pf1 = Signal(), Signal(), Signal(), Signal()
            a_lim = Signal(range(act_depth + 1))
            wl_lim = [Signal(kw, name=f"wl{q}_lim") for q in range(NP)]

        def put_indices(entry, word):
            for r in range(R):
                with m.If(i0 == r):
                    m.d.comb += [wi_w[r].addr.eq(entry), wi_w[r].data.eq(word),
                                 wi_w[r].en.eq(0b1111)]

        def put_values(entry, word):
            for r in range(R):
                with m.If(i0 == r):
                    m.d.comb += [wv_w[r].addr.eq(entry), wv_w[r].data.eq(word),
                                 wv_w[r].en.eq(0b1111)]

        def next_act_rows(two):
            """The next token row (``two``: the next two, staged as a pair)."""
            m.d.sync += [act_ptr.eq(act_ptr + Mux(two, job.act_stride << 1, job.act_stride)),
                         at.eq(at + 1 + two), ab.eq(ab + 1 + two)]
            with m.If(ab + two == C - 1):  # a block is staged: stage another if it fits
                m.d.sync += [ab.eq(0), abase.eq(abase + G), nblk.eq(nblk + 1),
                             out_stage.eq(out_stage + C * job.out_stride)]
                with m.If(is_qk | (at + 1 + two >= job.tokens)
                          | (abase + 2 * G > rend)):
                    m.next = "ACT_LAST"

        # wide staging (spm_lanes > 1): a chunk of a token row (the port's 4 L bytes, Q bank
        # entries) per cycle into its bank's buffer; every bank writes an entry of its buffer
        # per cycle. Chunk j of every row of the block in turn (token sc), j outer
        if wide:
            Q = 4 * L // M
            lq = Q.bit_length() - 1
            st_buf = [Signal(32 * L, name=f"st_buf{c}") for c in range(C)]
            st_cnt = [Signal(range(Q + 1), name=f"st_cnt{c}") for c in range(C)]
            st_addr = [Signal(range(act_depth + 1), name=f"st_addr{c}") for c in range(C)]
            sj, sc = Signal(kw), Signal(range(C))  # chunk of the row, token of the block
            s_ptr = Signal(32)  # byte address of chunk sj of token row at + sc
            s_row = Signal(32)  # byte address of chunk sj of the block's first row
            nxt_ptr = Signal(32)  # the next block's first row (summed during chunk 0)
            nchunks = Signal(kw)
            m.d.comb += nchunks.eq((G * M + 4 * L - 1) >> (4 * L).bit_length() - 1)
            s_land, s_c, s_skip, s_zero = Signal(), Signal(range(C)), Signal(2), Signal()
            s_j, s_base = Signal(kw), Signal(range(act_depth + 1))
            m.d.sync += s_land.eq(0)
            # pairs: with word-aligned rows (the job's first row and stride; C even) port B reads
            # chunk sj of the next row instead of the chunk's second half, so two rows' chunks
            # land per cycle (s_land2: the one of row at + sc + 1, in bank s_c + 1)
            pairs, s_land2, s_zero2 = Signal(), Signal(), Signal()
            m.d.sync += s_land2.eq(0)
        # every staged entry is in its bank (ACT_DRAIN's condition; a PV's RUN waits for it,
        # the PV having gone on to V after its last chunk's read)
        act_drained = Signal()
        if wide:
            m.d.comb += act_drained.eq(~s_land & ~s_land2 & ~Cat(c != 0 for c in st_cnt).any())
        else:
            m.d.comb += act_drained.eq(1)
        if wide_k:  # QK's key rows: chunk j (L words) of every row of the block in turn into
            # the row's buffer; every buffer writes a bank word (4 slots) per cycle
            kb_buf = [Signal(32 * L, name=f"kb_buf{r}") for r in range(R)]
            kb_cnt = [Signal(range(L + 1), name=f"kb_cnt{r}") for r in range(R)]
            kb_addr = [Signal(range(w_depth + 1), name=f"kb_addr{r}") for r in range(R)]
            kj, kr = Signal(kw), Signal(range(R))  # chunk of the row, row of the block
            k_ptr, k_row, k_nxt = Signal(32), Signal(32), Signal(32)
            kchunks = Signal(kw)
            m.d.comb += kchunks.eq((entries + L - 1) >> (L.bit_length() - 1))
            k_land, k_r, k_skip, k_zero = Signal(), Signal(range(R)), Signal(2), Signal()
            k_j = Signal(kw)
            m.d.sync += k_land.eq(0)
            # pairs of word-aligned key rows (R even), as for activations: k_land2 lands row
            # r0 + k_r + 1's chunk from port B
            k_pairs, k_land2, k_zero2 = Signal(), Signal(), Signal()
            m.d.sync += k_land2.eq(0)

        def wide_step(cnt, land, land2, land_at, i, ok, ok2, ptr, stride, two):
            """One step of wide staging (token rows into bank buffers, or QK's key rows into
            row buffers ``cnt``): chunk ``j`` of row ``i`` at ``ptr`` through port A, and with
            ``two`` (pairs: an even count of buffers, word-aligned rows) of row ``i + 1``
            through port B instead of the chunk's realigning second half; ``ok`` / ``ok2``:
            the rows exist. Issues the reads when the buffers can take the chunks (each holds
            at most the two entries it writes before they land, and none is landing now).
            Returns (issued, the pointer's step)."""
            def landing(k):
                return (land & (land_at == k)) | (land2 & (land_at + 1 == k))

            free = (Array(cnt)[i] <= 2) & ~landing(i)
            if len(cnt) % 2 == 0:
                free = free & (~two | ((Array(cnt)[i + 1] <= 2) & ~landing(i + 1)))
                r2_ok = Mux(two, ok2, ok)
                r2_at = Mux(two, (ptr + stride) >> 2, (ptr >> 2) + L)
            else:
                r2_ok, r2_at = ok, (ptr >> 2) + L
            m.d.comb += [rd_issue.eq(free & ok), rd_addr.eq(ptr), self.r2_en.eq(free & r2_ok),
                         self.r2_addr.eq(r2_at)]
            return free, Mux(two, stride << 1, stride)

        v_pairs = Signal()  # PV with wide ports: two word-aligned V rows a cycle
        # engine feeding FIFOs
        m.submodules.wfifo = wfifo = fifo.SyncFIFOBuffered(width=lay["w"].size, depth=4)
        m.submodules.afifo = afifo = fifo.SyncFIFOBuffered(width=lay["a"].size, depth=4)
        m.submodules.sfifo = sfifo = fifo.SyncFIFOBuffered(width=P * 33, depth=4)
        w_pend, a_pend, s_pend = Signal(), Signal(), Signal()
        m.d.sync += [w_pend.eq(0), a_pend.eq(0), s_pend.eq(0)]
        ws, ag = Signal(32), Signal(32)  # w beats / a beats issued
        # the feeder: a tile's weight and activation beats into those FIFOs, from RUN on in
        # the background with its sizes and bank addresses latched, while the FSM goes on
        # (the next tile's RUN, the next command's fetch, mask and loads); busy until the
        # engine takes the tile's last step. ACT and WGT, which write the banks it reads,
        # wait for it where they would (ACT_HOLD, WGT_HOLD; QK and PV alternate halves and
        # buffers); a LINEAR's next row block loads into the other buffer
        f_busy, f_cur = Signal(), Signal()
        f_steps, f_G = Signal.like(steps), Signal.like(G)
        f_abase = Signal(range(act_depth + 1))
        reg = Signal()  # the half QK / PV stage in (alt_a): flipped per chunk of a QK or PV
        rbase = Mux(reg & ~is_lin, half, 0) if alt_a else 0  # the command's first bank entry
        rend = Mux(is_lin, act_depth, rbase + half) if alt_a else act_depth
        pf_next = Signal()  # RQ's prefetch of the next row block, held while the feeder
        pf_r0 = Signal.like(r0)  # reads the buffer it loads or the loaders are busy
        m.d.comb += [eng.w.payload.eq(wfifo.r_data), eng.w.valid.eq(wfifo.r_rdy),
                     wfifo.r_en.eq(eng.w.ready), eng.a.payload.eq(afifo.r_data),
                     eng.a.valid.eq(afifo.r_rdy), afifo.r_en.eq(eng.a.ready)]
        wbeat = Signal(lay["w"])
        r_off = Mux(f_cur, w_depth, 0) if B else 0  # the entries of the buffer the tile reads
        ws_sel = Signal(2)  # the slot within the word read last cycle
        for r in range(R):
            m.d.comb += [wbeat[r].value.eq(wv_r[r].data.word_select(ws_sel, 8)),
                         wbeat[r].index.eq(wi_r[r].data.word_select(ws_sel, ibw)),
                         wv_r[r].addr.eq((ws >> 2) + r_off), wi_r[r].addr.eq((ws >> 2) + r_off)]
        m.d.comb += [wfifo.w_data.eq(wbeat), wfifo.w_en.eq(w_pend)]
        abeat = Signal(lay["a"])
        for c in range(C):
            m.d.comb += [abeat[c].eq(act_r[c].data), act_r[c].addr.eq(f_abase + ag)]
        m.d.comb += [afifo.w_data.eq(abeat), afifo.w_en.eq(a_pend)]
        w_go = f_busy & (ws < f_steps) & (wfifo.level + w_pend < wfifo.depth)
        a_go = f_busy & (ag < f_G) & (afifo.level + a_pend < afifo.depth)
        if early_mode:  # a tile reading the buffer the loaders fill: each weight beat once
            # every loader wrote its entry whole; the early tile: each activation group once
            # the last bank wrote it
            w_go &= wl_idle | (f_cur != wl_buf) | Cat((ws >> 2) < lim for lim in wl_lim).all()
            a_go &= ~f_track | ~a_track | (ag < a_lim)
        for r in range(R):
            m.d.comb += [wv_r[r].en.eq(w_go), wi_r[r].en.eq(w_go)]
        for c in range(C):
            m.d.comb += act_r[c].en.eq(a_go)
        with m.If(w_go):
            m.d.sync += [ws.eq(ws + 1), w_pend.eq(1), ws_sel.eq(ws[:2])]
        with m.If(a_go):
            m.d.sync += [ag.eq(ag + 1), a_pend.eq(1)]
        with m.If(f_busy & (ws == f_steps) & eng.cmd.ready):  # the engine took the last step
            m.d.sync += f_busy.eq(0)  # (RUN's start, below, overrides this)
        m.d.comb += [eng.cmd.payload.n.eq(n), eng.cmd.payload.groups.eq(G),
                     eng.cmd.payload.act_unsigned.eq(is_pv)]

        # engine output: LINEAR / PV through the requantizer, QK straight to the score memories
        # the tile's records are in: not the slot the records loader is filling (and the
        # early tile's, et_rec)
        rq_open = ~et_rec & (rq_idle | (ld_slot != rslot[:2])) if early_mode else 1
        m.d.comb += [rq.i.valid.eq(eng.o.valid & ~is_qk & rq_open)]
        for r in range(R):
            lane = rq.i.payload[r]
            rec = rq_r[r].data
            m.d.comb += [rq_r[r].addr.eq(rslot[:2]), lane.acc.eq(eng.o.payload[r]),
                         lane.bias.eq(rec[:32]), lane.mult.eq(rec[32:32 + MULT_BITS]),
                         lane.shift.eq(rec[32 + RQ_SHIFT_BIT:][:len(lane.shift)])]
        # results (requantized, or QK's raw scores) queue in a 2-beat FIFO; the write-out holds
        # one beat and takes the next from the FIFO in its last write cycle
        m.submodules.ofifo = ofifo = fifo.SyncFIFO(width=32 * R, depth=2)
        held = Signal()
        held_v = Array(Signal(signed(32), name=f"hv{k}") for k in range(R))
        last_w = Signal()  # the held beat's last write cycle
        hr = Signal(range(R + 1))  # lane being written out
        # QK: a cycle writes the beat's scores that share two neighbouring score-bank words
        # (P keys each), the first word's lane p taking beat lane p + d, d = (word's first
        # key) - r0: a multiple of g = gcd(R, P) in (-P, R), as r0 is a multiple of R; the
        # second word's lane p beat lane p + d + P
        g = math.gcd(R, P)
        qk_d = list(range(-((P - 1) // g) * g, R, g))

        def qk_lanes(d):
            return Cat(held_v[p + d] if 0 <= p + d < R else Const(0, 32) for p in range(P))

        qk_word = {d: qk_lanes(d) for d in qk_d}
        qk_next = {d: qk_lanes(d + P) for d in qk_d if d + P < R}
        # LINEAR / PV: a cycle writes up to the write port's L words of a beat's results, the
        # first cycle from the element's lane ``off`` in its word, so the beat moves on by
        # 4 L - off (int8) or 2 L - off (int16) elements until its last cycle
        shifts = sorted({4 * L - o for o in range(4)} | {2 * L - o for o in range(2)})
        shifts = [v for v in shifts if 0 < v < R]
        n_out = Signal(range(max(4 * L, min(R, 2 * P)) + 1))  # lanes written this cycle
        beats_out = Signal(32)
        m.d.comb += [eng.o.ready.eq(Mux(is_qk, ofifo.w_rdy, rq.i.ready & rq_open)),
                     rq.o.ready.eq(ofifo.w_rdy & ~is_qk),
                     ofifo.w_en.eq(Mux(is_qk, eng.o.valid, rq.o.valid)),
                     ofifo.r_en.eq(~held | last_w)]
        for r in range(R):  # each lane sign-extended to 32 bits
            v = Signal(signed(32), name=f"ov{r}")
            m.d.comb += [v.eq(Mux(is_qk, eng.o.payload[r], rq.o.payload[r])),
                         ofifo.w_data.word_select(r, 32).eq(v)]
        # the requantizer's records slot moves on with a row block's last engine output beat
        # (the C-th of its chunk's last tile): each LINEAR / PV tile leaves whether it is one
        # in a FIFO when it starts (RUN), taken with its C-th output beat (a PV's last tiles
        # may still come out while the next PV runs: the job cannot tell)
        eo_col = Signal(range(C + 1))
        m.submodules.blk_last = blkf = fifo.SyncFIFO(width=1, depth=8)
        with m.If(eng.o.valid & eng.o.ready & ~is_qk):
            m.d.sync += eo_col.eq(eo_col + 1)
            with m.If(eo_col == C - 1):
                m.d.comb += blkf.r_en.eq(1)
                m.d.sync += eo_col.eq(0)
                with m.If(blkf.r_data):
                    m.d.sync += rslot.eq(rslot + 1)
        # the write-out runs beside the sequencer: each tile's first row, first token and
        # output address go into a descriptor FIFO when the tile starts (RUN) and leave it with
        # the tile's last write. At most 3 tiles are between the engine and its sums' capture
        # (one draining, one waiting, one stepping) and 7 beats after the engine (4 in the
        # requantizer, 2 in ofifo, one held): RUN never finds the FIFO full
        # (and the tile's command's rows, QK's score buffer and whether it is its token
        # block's last tile, the command's tokens and output stride: a QK's scores may still
        # go out while the next QK runs, a PV's results while the next PV runs)
        desc_l = data.StructLayout({"r0": unsigned(32), "t0": unsigned(32), "out": unsigned(32),
                                    "rows": unsigned(32), "buf": unsigned(1),
                                    "last": unsigned(1), "tokens": unsigned(32),
                                    "stride": unsigned(32)})
        m.submodules.desc = desc = fifo.SyncFIFO(width=desc_l.size, depth=16)
        # a PV's or LINEAR's last chunk has run: its results may go out beside what follows
        # (a LINEAR's once its records and weight loaders are idle: the kernel's next
        # command may use the ports they read)
        out_end = Signal()
        loaders_idle = rq_idle & ~pf_rq & ~pf_rq2 & (wl_idle if B else 1)
        m.d.comb += [out_end.eq((is_pv | (is_lin & loaders_idle)) & (at >= job.tokens)),
                     self.wo_busy.eq(desc.r_rdy & ~is_qk)]
        wo = data.View(desc_l, desc.r_data)

        # softmax feed and drain
        # the feed reads the block's rows of scores (and the mask) into the unit, a beat a
        # cycle, while the drain writes earlier rows' probabilities: rows stream through it
        kb = Signal(32)  # key beats the feed issued of its row
        f_c = Signal(32)  # query row (column of the block) the feed reads
        cm_c = Signal(32)  # rows whose cmd the unit took
        d_c = Signal(32)  # row the drain writes
        sbeat = Signal(data.ArrayLayout(data.StructLayout({"score": signed(32),
                                                           "keep": unsigned(1)}), P))
        for port in sc_r:
            m.d.comb += port.addr.eq((f_c[:col_bits] << sc_col) + (kb >> 1) + Mux(sbuf, hd, 0))
        m.d.comb += mk_r.addr.eq(kb + smk * nkb)
        kb_odd = Signal()  # the word the memories return is an odd one
        sc_data = Mux(kb_odd, sc_r[1].data, sc_r[0].data)
        key0 = Signal(32)  # the first key of the beat the memories return
        m.d.sync += [key0.eq(kb * P), kb_odd.eq(kb[0])]
        for lane in range(P):
            m.d.comb += [sbeat[lane].score.eq(sc_data.word_select(lane, 32)),
                         sbeat[lane].keep.eq(mk_r.data[lane] & (key0 + lane < fj_tokens))]
        m.d.comb += [sfifo.w_data.eq(sbeat), sfifo.w_en.eq(s_pend),
                     sm.i.payload.eq(sfifo.r_data), sm.i.valid.eq(sfifo.r_rdy),
                     sfifo.r_en.eq(sm.i.ready),
                     sm.cmd.payload.length.eq(fj_tokens), sm.cmd.payload.mult.eq(fj_mult),
                     sm.cmd.payload.shift.eq(fj_shift)]
        sm_held = Signal()
        sm_v = Signal(data.ArrayLayout(unsigned(8), P))
        # a cycle writes up to the write port's 4 L bytes from the first one's byte ``off`` in
        # its word: the beat moves on by 4 L - off until its last cycle
        sm_shifts = [v for v in range(4 * L - 3, 4 * L + 1) if v < P]
        sm_lane = Signal(range(P + 1))
        sm_key = Signal(32)  # key of the element being written
        sm_ptr = Signal(32)

        rq_rows = Mux(job.rows - r0 < R, job.rows - r0, R)
        m.d.sync += rq_words.eq(rq_rows * RQ_WORDS)
        nx_rows = Mux(job.rows - r0 - R < R, job.rows - r0 - R, R)  # when r0 + R < rows
        m.d.sync += nx_words.eq(nx_rows * RQ_WORDS)
        # another row block after r0's, registered like rq_words: r0 and the job's rows are
        # stable for at least one cycle before the states that read it (RQ, RUN, TILE_END;
        # r0 moves in TILE_END, ACT_LAST, BLOCK_END and at the command's start), and the
        # carry of r0 + R < rows stays off their paths (ECP5's critical path at a3ddb80)
        more_rows = Signal()
        m.d.sync += more_rows.eq(r0 + R < job.rows)
        nx_on = (is_pv | is_lin) if B else is_pv

        def to_act(lin=None):  # ACT writes the banks the feeder reads: after its tile
            # (ACT_HOLD), unless a QK or PV stages in the other half (alt_a)
            if lin is None:
                lin = is_lin
            with m.If(f_busy & (lin if alt_a else 1)):
                m.next = "ACT_HOLD"
            with m.Else():
                m.next = "ACT"

        def finish():
            m.d.comb += self.done.eq(1)
            m.next = "IDLE"

        def hand_tile(t_r0, t_t0, t_out, qk_last, rq_tile, blk_last, abase, fcur):
            """The engine takes a tile (its first row, first token, output address, whether
            it is a QK's last row block; a requantized tile's "last token block" flag), the
            feeder its sizes and bank addresses: returns the handshake."""
            go = eng.cmd.ready & desc.w_rdy
            m.d.comb += [eng.cmd.valid.eq(desc.w_rdy), desc.w_en.eq(eng.cmd.ready),
                         desc.w_data.eq(Cat(t_r0, t_t0, t_out, job.rows, qbuf, qk_last,
                                            job.tokens, job.out_stride)),
                         blkf.w_en.eq(go & rq_tile), blkf.w_data.eq(blk_last)]
            with m.If(go):
                m.d.sync += [ws.eq(0), ag.eq(0), f_busy.eq(1), f_steps.eq(steps), f_G.eq(G),
                             f_abase.eq(abase)]
                if fcur is not None:
                    m.d.sync += f_cur.eq(fcur)
            return go

        def early_chunk(lin):  # a chunk starts: a LINEAR's first tile may start early
            m.d.sync += [e_chunk.eq(lin), early_pend.eq(lin), a_track.eq(lin), a_lim.eq(0),
                         pf1.eq(0), first_in.eq(0), rec0.eq(0)]

        with m.FSM() as seq:
            with m.State("IDLE"):
                m.d.comb += self.job.ready.eq(1)
                with m.If(self.job.valid):
                    p = self.job.payload
                    g = (p.k[:kw] + M - 1) // M
                    n_p = Mux(p.op == Op.LINEAR, p.n, M)
                    # (the records slots run on from command to command: a PV's last
                    # results may still go out through its slot)
                    m.d.sync += [job.eq(p), i0.eq(0), i1.eq(0),
                                 G.eq(g), steps.eq(g * n_p[:max(1, M.bit_length())]),
                                 nbeats.eq((p.tokens + P - 1) // P),
                                 act_ptr.eq(p.act), at.eq(0), ab.eq(0), abase.eq(0),
                                 nblk.eq(0), c0.eq(0), out_stage.eq(p.out),
                                 out_chunk.eq(p.out)]
                    if alt_a:  # QK, PV: the other half of the banks
                        with m.If(p.op != Op.LINEAR):
                            m.d.sync += [reg.eq(~reg), abase.eq(Mux(reg, 0, half))]
                    if B:  # LINEAR: whole addresses (its loaders)
                        with m.If(p.op == Op.LINEAR):
                            m.d.sync += st_sel.eq(0)
                    if wide:
                        m.d.sync += [s_ptr.eq(p.act), s_row.eq(p.act), nxt_ptr.eq(p.act),
                                     sj.eq(0), sc.eq(0),
                                     pairs.eq((p.act[:2] == 0) & (p.act_stride[:2] == 0)
                                              if C % 2 == 0 else 0)]
                    if wide_v:
                        m.d.sync += v_pairs.eq((p.w[:2] == 0) & (p.w_stride[:2] == 0)
                                               if R % 4 == 0 else 0)
                    if wide_k:
                        m.d.sync += k_pairs.eq((p.w[:2] == 0) & (p.w_stride[:2] == 0)
                                               if R % 2 == 0 else 0)
                    if B:  # a LINEAR's first row block starts loading (into buffer 1) in
                        # the next cycle (QK and PV stage theirs into the buffer the feeder
                        # does not read: st_sel, from ACT_LAST)
                        m.d.sync += [cur.eq(0), pf_first.eq(p.op == Op.LINEAR)]
                        m.d.sync += [wr.eq(p.w) for wr in w_rows]
                    if early_mode:
                        early_chunk(p.op == Op.LINEAR)
                    # the first row block's records: now, or after the GELU table
                    early = (p.op == Op.PV) | ((p.op == Op.LINEAR) & ~p.gelu) if B else (
                        p.op == Op.PV)
                    m.d.sync += [r0.eq(0), rq_ptr.eq(p.rq_off), pf_rq.eq(early),
                                 rq_pf.eq(early)]
                    with m.If(self.job.payload.op == Op.QK_SOFTMAX):
                        m.d.sync += mq.eq(mq + 1)
                        m.next = "MASK"
                    with m.Elif((self.job.payload.op == Op.LINEAR) & self.job.payload.gelu):
                        m.next = "TABLE"
                    with m.Else():
                        to_act(self.job.payload.op == Op.LINEAR)
            # LINEAR with gelu: its table, 64 words, one a cycle as the bus delivers them
            with m.State("TABLE"):
                m.d.comb += [self.dram_req.valid.eq(1),
                             self.dram_req.payload.addr.eq(job.table),
                             self.dram_req.payload.words.eq(64)]
                with m.If(self.dram_req.ready):
                    m.d.sync += i1.eq(0)
                    m.next = "TABLE_DATA"
            with m.State("TABLE_DATA"):
                m.d.comb += [self.dram_data.ready.eq(1), gl_w.addr.eq(i1),
                             gl_w.data.eq(self.dram_data.payload),
                             gl_w.en.eq(self.dram_data.valid)]
                with m.If(self.dram_data.valid):
                    m.d.sync += i1.eq(i1 + 1)
                    with m.If(i1 == 63):
                        m.d.sync += i1.eq(0)
                        if B:  # the first row block's records, now the bus is free
                            m.d.sync += [pf_rq.eq(1), rq_pf.eq(1)]
                        to_act()
            with m.State("ACT_HOLD"):  # ACT writes the banks the feeder still reads
                with m.If(~f_busy):
                    m.next = "ACT"
            # key mask -> mask bits (QK only), mask_lanes bytes (keys) per cycle
            with m.State("MASK"):
                key = i1
                m.d.comb += [rd_issue.eq(1), rd_addr.eq(job.mask + key)]
                m.d.sync += [tgt_i1.eq(key), tgt_zero.eq(0), land_kind.eq(1)]
                with m.If(key + KM >= job.tokens):
                    m.d.sync += i1.eq(0)
                    m.next = "MASK_LAST"
                with m.Else():
                    m.d.sync += i1.eq(i1 + KM)
            with m.State("MASK_LAST"):
                m.d.sync += [i0.eq(0), i1.eq(0)]
                to_act()

            # activations of a chunk of token blocks: C rows x G*M bytes per block; token row
            # at goes to bank at % C from address abase (next_act_row ends the chunk)
            if wide:
                with m.State("ACT"):  # chunk sj of token row at + sc (and with pairs of row
                    # at + sc + 1), unless its bank's buffer still holds more than the two
                    # entries it writes before the chunk lands
                    row_ok = at + sc < job.tokens
                    row2_ok = (at + sc + 1 < job.tokens) if C % 2 == 0 else Const(0)
                    free, stride = wide_step(st_cnt, s_land, s_land2, s_c, sc, row_ok, row2_ok,
                                             s_ptr, job.act_stride, pairs)
                    with m.If(free):
                        m.d.sync += [s_land.eq(1), s_c.eq(sc), s_skip.eq(s_ptr[:2]),
                                     s_zero.eq(~row_ok), s_j.eq(sj), s_base.eq(abase),
                                     s_land2.eq(pairs), s_zero2.eq(~row2_ok)]
                        with m.If(sj == 0):
                            m.d.sync += nxt_ptr.eq(nxt_ptr + stride)
                        with m.If(sc + pairs == C - 1):
                            m.d.sync += sc.eq(0)
                            with m.If(sj == nchunks - 1):  # the block is staged
                                nxt = Mux(sj == 0, nxt_ptr + stride, nxt_ptr)
                                m.d.sync += [sj.eq(0), at.eq(at + C), abase.eq(abase + G),
                                             nblk.eq(nblk + 1), s_row.eq(nxt), s_ptr.eq(nxt),
                                             act_ptr.eq(nxt),
                                             out_stage.eq(out_stage + C * job.out_stride)]
                                with m.If(is_qk | (at + C >= job.tokens)
                                          | (abase + 2 * G > rend)):
                                    with m.If(is_pv):  # on to V at once: RUN waits
                                        m.next = "ACT_LAST"  # for the buffers
                                    with m.Else():
                                        m.next = "ACT_DRAIN"
                            with m.Else():
                                m.d.sync += [sj.eq(sj + 1), s_row.eq(s_row + 4 * L),
                                             s_ptr.eq(s_row + 4 * L)]
                        with m.Else():
                            m.d.sync += [sc.eq(sc + 1 + pairs), s_ptr.eq(s_ptr + stride)]
                with m.State("ACT_DRAIN"):  # the buffers' last entries go in
                    with m.If(act_drained):
                        if early_mode:
                            m.d.sync += a_track.eq(0)
                        m.next = "ACT_LAST"
            if not wide:  # a word per cycle per read port, two rows at a time
                with m.State("ACT"):
                    # a scratchpad word per cycle (i1 counts them); a row starting mid-word
                    # reads one word more and lands realigned; padding rows land zeros. Rows go
                    # in pairs (banks ab, ab + 1), the second through read port 2
                    row_ok = at < job.tokens
                    a_skip = Mux(row_ok, act_ptr[:2], 0)
                    last1 = Mux(a_skip != 0, act_words, act_words - 1)
                    if C > 1:
                        two = ab + 1 < C
                        row2_ok = two & (at + 1 < job.tokens)
                        ptr2 = act_ptr + job.act_stride
                        b_skip = Mux(row2_ok, ptr2[:2], 0)
                        last2 = Mux(b_skip != 0, act_words, act_words - 1)
                        m.d.comb += [self.r2_en.eq(row2_ok & (i1 <= last2)),
                                     self.r2_addr.eq(((ptr2 & ~3) + (i1 << 2)) >> 2)]
                        m.d.sync += [tgt2_i0.eq(ab + 1), tgt2_skip.eq(b_skip),
                                     tgt2_zero.eq(~row2_ok), land2.eq(two & (i1 <= last2))]
                        last = Mux(two & (last2 > last1), last2, last1)
                    else:
                        two, last = Const(0), last1
                    m.d.comb += [rd_issue.eq(row_ok & (i1 <= last1)),
                                 rd_addr.eq((act_ptr & ~3) + (i1 << 2))]
                    m.d.sync += [tgt_i0.eq(ab), tgt_i1.eq(i1), tgt_zero.eq(~row_ok),
                                 land_kind.eq(Mux(i1 <= last1, 2, 0)), tgt_base.eq(abase),
                                 tgt_skip.eq(a_skip)]
                    with m.If(i1 == last):
                        m.d.sync += i1.eq(0)
                        next_act_rows(two)
                    with m.Else():
                        m.d.sync += i1.eq(i1 + 1)
            with m.State("ACT_LAST"):
                if wide_k:  # QK: every chunk runs against the key rows from the first
                    m.d.sync += [k_ptr.eq(job.w), k_row.eq(job.w), k_nxt.eq(job.w), kj.eq(0),
                                 kr.eq(0)]
                m.d.sync += [r0.eq(0), i0.eq(0), i1.eq(0), w_col.eq(job.w),
                             i_row.eq(job.w + rows_gn), rq_ptr.eq(job.rq_off), tb.eq(0),
                             t0.eq(c0), a_base.eq(rbase), out_blk.eq(out_chunk)]
                if B:  # a LINEAR's loader is already on its way with w_row and idx_phase
                    with m.If(~is_lin):  # QK, PV: the weights into the buffer the feeder
                        # does not read
                        m.d.sync += [w_row.eq(job.w), idx_phase.eq(0), st_sel.eq(~f_cur)]
                    m.next = "WGT"
                else:  # one weight buffer: the feeder may still read it (a QK or PV staged
                    # beside the tile before)
                    m.d.sync += [w_row.eq(job.w), idx_phase.eq(0)]
                    with m.If(f_busy):
                        m.next = "WGT_HOLD"
                    with m.Else():
                        m.next = "WGT"

            # weights of the row block
            with m.State("WGT"):
                row = r0 + i0
                with m.If(is_lin):
                    if early_mode:  # the block's value and index words come through the
                        # weight loaders into the other buffer (started with the chunk, the
                        # first block; during the chunk's staging, the second; else once the
                        # previous block's RQ asked and they were free): once they started,
                        # on to RQ, the tiles reading each entry once it is in
                        with m.If(~pf_next):
                            m.d.sync += [prefetched.eq(pf1), cur.eq(~cur), first_in.eq(0),
                                         pf1.eq(0), e_chunk.eq(0)]
                            m.next = "RQ"
                    elif B:  # the block's value and index words came through the weight
                        # loader into the other buffer: started with the chunk (the first
                        # block) or in the previous block's RQ; wait for what is left of it
                        with m.If(wl_done):
                            m.d.sync += [prefetched.eq(0), cur.eq(~cur)]
                            m.next = "RQ"
                        with m.Else():
                            m.d.sync += [prefetched.eq(0), cur.eq(~cur)]
                            m.next = "WW_WAIT"
                    else:  # a row at a time through the 32-bit master
                        with m.If(row >= job.rows):
                            m.d.sync += [tgt_i0.eq(i0), tgt_i1.eq(i1), tgt_zero.eq(1),
                                         land_kind.eq(3)]
                            with m.If(i1 == steps - 1):
                                m.d.sync += [i1.eq(0), i0.eq(i0 + 1)]
                                with m.If(i0 == R - 1):
                                    m.next = "RQ"
                            with m.Else():
                                m.d.sync += i1.eq(i1 + 1)
                        with m.Else():
                            m.next = "W_REQ"
                with m.Elif(is_qk):
                    if wide_k:
                        # QK with wide ports: chunk kj of key row r0 + kr (and with pairs of
                        # row r0 + kr + 1), unless its bank's buffer holds more than the two
                        # words it writes before it lands. Rows past the keys are not staged:
                        # the engine's sums from their stale bank rows are never written (the
                        # score write-out enables only keys below rows)
                        row_ok = r0 + kr < job.rows
                        row2_ok = (r0 + kr + 1 < job.rows) if R % 2 == 0 else Const(0)
                        free, k_stride = wide_step(kb_cnt, k_land, k_land2, k_r, kr, row_ok,
                                                   row2_ok, k_ptr, job.w_stride, k_pairs)
                        nxt_row = kr + 1 + k_pairs  # the next step's first row
                        with m.If(free):
                            m.d.sync += [k_land.eq(1), k_r.eq(kr), k_skip.eq(k_ptr[:2]),
                                         k_zero.eq(~row_ok), k_j.eq(kj), k_land2.eq(k_pairs),
                                         k_zero2.eq(~row2_ok)]
                            with m.If(kj == 0):
                                m.d.sync += k_nxt.eq(k_nxt + k_stride)
                            with m.If((nxt_row >= R) | (r0 + nxt_row >= job.rows)):
                                m.d.sync += kr.eq(0)
                                with m.If(kj == kchunks - 1):  # the block's rows are read
                                    nxt = Mux(kj == 0, k_nxt + k_stride, k_nxt)
                                    m.d.sync += [kj.eq(0), k_row.eq(nxt), k_ptr.eq(nxt)]
                                    m.next = "WGT_DRAIN"
                                with m.Else():
                                    m.d.sync += [kj.eq(kj + 1), k_row.eq(k_row + 4 * L),
                                                 k_ptr.eq(k_row + 4 * L)]
                            with m.Else():
                                m.d.sync += [kr.eq(nxt_row), k_ptr.eq(k_ptr + k_stride)]
                    else:
                        # QK: row = key, w[key, s] = k[key, s]: a word of the key row per cycle,
                        # landed realigned like the activations (one more word when mid-word)
                        row_ok = row < job.rows
                        k_skip = Mux(row_ok, w_row[:2], 0)
                        m.d.comb += [rd_issue.eq(row_ok), rd_addr.eq((w_row & ~3) + (i1 << 2))]
                        m.d.sync += [tgt_i0.eq(i0), tgt_i1.eq(i1), tgt_zero.eq(~row_ok),
                                     land_kind.eq(4), tgt_skip.eq(k_skip)]
                        with m.If(i1 == Mux(k_skip != 0, entries, entries - 1)):
                            m.d.sync += [i1.eq(0), i0.eq(i0 + 1), w_row.eq(w_row + job.w_stride)]
                            with m.If(i0 == R - 1):
                                m.next = "WGT_LAST"
                        with m.Else():
                            m.d.sync += i1.eq(i1 + 1)
                with m.Else():
                    if wide_v:
                        # PV: row = channel, w[c, s] = v[s, c]: the block's channels of V's row s
                        # at once (port A's L words and port B's next one), a key per cycle, or
                        # with word-aligned V rows and R a multiple of 4 (v_pairs) two keys a
                        # cycle, the second's from port B; then every row's padding slots, a
                        # slot per cycle
                        key_ok = i0 < job.k
                        key2_ok = i0 + 1 < job.k
                        two = v_pairs & key_ok
                        m.d.comb += [rd_issue.eq(key_ok), rd_addr.eq(w_col),
                                     self.r2_en.eq(key_ok & (~v_pairs | key2_ok)),
                                     self.r2_addr.eq(Mux(v_pairs, (w_col + job.w_stride) >> 2,
                                                         (w_col >> 2) + L))]
                        m.d.sync += [tgt_i0.eq(i0), tgt_skip.eq(w_col[:2]), tgt_zero.eq(~key2_ok),
                                     land_kind.eq(Mux(key_ok, Mux(v_pairs, 8, 7), 6)),
                                     i0.eq(i0 + 1 + two),
                                     w_col.eq(w_col + Mux(two, job.w_stride << 1, job.w_stride))]
                        with m.If(i0 + two >= steps - 1):
                            m.d.sync += w_col.eq(job.w + r0 + R)  # the next block's channels
                            m.next = "WGT_LAST"
                    else:
                        # PV: row = channel, w[c, s] = v[s, c]: V's row s a word per cycle, 4
                        # channels at slot s, landed realigned like the activations (one more word
                        # when mid-word); then every row's padding slots, a slot per cycle
                        cnt = Mux(job.rows - r0 < R, job.rows - r0, R)  # the block's channels
                        groups = (cnt + 3) >> 2
                        key_ok = i0 < job.k
                        v_skip = w_col[:2]
                        m.d.comb += [rd_issue.eq(key_ok), rd_addr.eq((w_col & ~3) + (i1 << 2))]
                        m.d.sync += [tgt_i0.eq(i0), tgt_i1.eq(i1), tgt_zero.eq(0),
                                     tgt_skip.eq(v_skip), land_kind.eq(Mux(key_ok, 5, 6))]
                        with m.If(~key_ok | (i1 == Mux(v_skip != 0, groups, groups - 1))):
                            m.d.sync += [i1.eq(0), i0.eq(i0 + 1), w_col.eq(w_col + job.w_stride)]
                            with m.If(i0 == steps - 1):
                                m.d.sync += w_col.eq(job.w + r0 + R)  # the next block's channels
                                m.next = "WGT_LAST"
                        with m.Else():
                            m.d.sync += i1.eq(i1 + 1)
            if not B:  # LINEAR rows through the 32-bit master (sw.nm.pack layout)
                with m.State("W_REQ"):  # LINEAR row: values, then indices, from params
                    start = Mux(idx_phase, i_row, w_row)
                    nbytes = Mux(idx_phase, ibytes, steps)
                    words = ((start & 3) + nbytes + 3) >> 2
                    m.d.comb += [self.dram_req.valid.eq(1),
                                 self.dram_req.payload.addr.eq(start & ~3),
                                 self.dram_req.payload.words.eq(words)]
                    with m.If(self.dram_req.ready):
                        m.d.sync += [skip.eq(start[:2]), slot.eq(0), bits_n.eq(0), bits_acc.eq(0),
                                     i1.eq(0), wk.eq(0), wtot.eq(words)]
                        m.next = "W_DATA"
                with m.State("W_DATA"):
                    with m.If(~idx_phase):  # values: one word per cycle, realigned to the row
                        m.d.comb += self.dram_data.ready.eq(1)
                        with m.If(self.dram_data.valid):
                            d = self.dram_data.payload
                            m.d.sync += [prev.eq(d), wk.eq(wk + 1)]
                            with m.If((skip == 0) | (wk != 0)):
                                put_values(Mux(skip == 0, wk, wk - 1), _realign(prev, d, skip))
                            with m.If(wk == wtot - 1):
                                with m.If((skip != 0) & (wtot == entries)):
                                    m.next = "W_FLUSH"
                                with m.Else():
                                    m.next = "W_VALUES_END"
                    with m.Else():  # indices: a bank word of 4 slots per cycle from a bit queue
                        # emit when 4 slots are queued (or the row's last, once every word is in);
                        # take a word in the same cycle if what stays queued is less than 4 slots
                        emit = (bits_n >= 4 * ib) | (wk == wtot)
                        after = Signal.like(bits_n)  # bits that stay queued
                        less = (bits_n - 4 * ib).as_unsigned()[:len(bits_n)]
                        m.d.comb += after.eq(Mux(emit, Mux(bits_n >= 4 * ib, less, 0), bits_n))
                        take = (wk != wtot) & (after < 4 * ib)
                        m.d.comb += self.dram_data.ready.eq(take)
                        got = take & self.dram_data.valid
                        lead = Mux(wk == 0, skip * 8, 0)  # bits before the row in its first word
                        incoming = self.dram_data.payload >> lead
                        queued = Mux(emit, bits_acc >> (4 * ib), bits_acc)
                        m.d.sync += [bits_acc.eq(queued), bits_n.eq(after)]
                        with m.If(got):
                            m.d.sync += [bits_acc.eq(queued | (incoming << after)),
                                         bits_n.eq(after + 32 - lead), wk.eq(wk + 1)]
                        with m.If(emit):
                            m.d.sync += slot.eq(slot + 1)
                            put_indices(slot, bits_acc[:4 * ib])
                            with m.If(slot == entries - 1):
                                m.next = "W_ROW_END"
                with m.State("W_FLUSH"):  # the row's last values sit in the last word alone
                    put_values(wtot - 1, _realign(prev, Const(0, 32), skip))
                    m.next = "W_VALUES_END"
                with m.State("W_VALUES_END"):
                    m.d.sync += i1.eq(0)
                    with m.If(dense):
                        m.next = "W_DENSE_IDX"
                    with m.Else():
                        m.d.sync += idx_phase.eq(1)
                        m.next = "W_REQ"
                with m.State("W_DENSE_IDX"):  # dense rows: index = slot mod M (implicit)
                    put_indices(i1, Cat(((i1 << 2) + j)[:ib] for j in range(4)))
                    m.d.sync += i1.eq(i1 + 1)
                    with m.If(i1 == entries - 1):
                        m.next = "W_ROW_END"
                with m.State("W_ROW_END"):
                    m.d.sync += [idx_phase.eq(0), i1.eq(0), i0.eq(i0 + 1),
                                 w_row.eq(w_row + steps), i_row.eq(i_row + ibytes)]
                    with m.If(i0 == R - 1):
                        m.next = "RQ"
                    with m.Else():
                        m.next = "WGT"
            if B:
                with m.State("WW_WAIT"):  # the weight loaders' last cycle: then RQ
                    with m.If(wl_done):
                        m.next = "RQ"
            if wide_k:
                with m.State("WGT_DRAIN"):  # QK: the key buffers' last words go in
                    with m.If(~k_land & ~k_land2 & ~Cat(cnt != 0 for cnt in kb_cnt).any()):
                        m.next = "WGT_LAST"
            with m.State("WGT_LAST"):
                m.d.sync += [i0.eq(0), i1.eq(0)]
                with m.If(is_qk):
                    m.next = "RUN"
                with m.Else():
                    m.next = "RQ"

            # requantizer records of the rows (LINEAR, PV): RQ_WORDS words each
            with m.State("RQ"):
                if B:  # the next row block of the chunk loads into the other buffer while
                    # this one's requantizer records come and its tiles run
                    # (once the feeder has left that buffer and the loaders are free after
                    # this block's words: pf_next)
                    with m.If(is_lin & ~prefetched & more_rows):
                        m.d.sync += prefetched.eq(1)
                        with m.If((f_busy & (f_cur != cur)) | ~wl_idle):
                            m.d.sync += [pf_next.eq(1), pf_r0.eq(r0 + R)]
                        with m.Else():
                            m.d.comb += [wl_start.eq(1), wl_r0.eq(r0 + R), wl_target.eq(~cur)]
                with m.If(rq_pf):  # fetched with the chunk: wait for what is left of it
                    # (an early tile's chunk: the next block's may be on their way)
                    with m.If((rq_idle & ~pf_rq & ~pf_rq2) | rq_finish
                              | (rec0 if early_mode else 0)):
                        m.d.sync += [rq_pf.eq(0), i1.eq(0)]
                        m.next = "RUN"
                with m.Elif(nx_pend):  # fetched while the previous block ran
                    with m.If(nx_ready):
                        m.d.sync += [nx_pend.eq(0), nx_ready.eq(0), i1.eq(0)]
                        m.next = "RUN"
                    if early_mode:  # a LINEAR's: still on their way, the tiles run (their
                        # results wait for them at the requantizer: rq_open)
                        with m.Elif(is_lin & ~rq_finish):
                            m.d.sync += [nx_pend.eq(0), to_nx.eq(0), i1.eq(0)]
                            m.next = "RUN"
                if early_mode:  # (the loader may still fetch the previous block's)
                    with m.Elif(rq_idle):
                        m.d.comb += rq_go.eq(1)
                        with m.If(is_lin):  # a LINEAR's tiles run while they come
                            m.d.sync += i1.eq(0)
                            m.next = "RUN"
                        with m.Else():
                            m.next = "RQ_WAIT"
                else:
                    with m.Else():
                        m.d.comb += rq_go.eq(1)
                        m.next = "RQ_WAIT"
            with m.State("RQ_WAIT"):
                with m.If(rq_finish):
                    m.d.sync += i1.eq(0)
                    m.next = "RUN"

            # one tile through the engine
            with m.State("RUN"):  # the engine takes the tile with (or after) the previous
                # one's last step; the feeder starts on it in the next cycle
                with m.If(nx_on & (tb == 0) & ~nx_pend & rq_idle & ~pf_rq & ~pf_rq2
                          & more_rows):
                    m.d.comb += nx_go.eq(1)
                    m.d.sync += nx_pend.eq(1)
                def run():
                    with m.If(act_drained):
                        with m.If(hand_tile(r0, t0, out_blk, is_qk & ~more_rows,
                                            ~is_qk, tb + 1 >= nblk, a_base,
                                            Mux(is_lin, cur, st_sel) if B else None)):
                            if early_mode:
                                m.d.sync += [f_track.eq(0), early_pend.eq(0)]
                            m.next = "TILE_END"

                if early_mode:  # the early tile is running already
                    with m.If(ran_early):
                        m.d.sync += ran_early.eq(0)
                        m.next = "TILE_END"
                    with m.Else():
                        run()
                else:
                    run()
            with m.State("TILE_END"):
                with m.If(tb + 1 < nblk):  # the row block against the chunk's next block
                    m.d.sync += [tb.eq(tb + 1), t0.eq(t0 + C), a_base.eq(a_base + G),
                                 out_blk.eq(out_blk + C * job.out_stride)]
                    m.next = "RUN"
                with m.Else():
                    m.d.sync += [r0.eq(r0 + R), i0.eq(0), i1.eq(0),
                                 rq_ptr.eq(rq_ptr + RQ_RECORD * R), tb.eq(0), t0.eq(c0),
                                 a_base.eq(rbase), out_blk.eq(out_chunk)]
                    if B:  # QK, PV: the next block's weights into the other buffer
                        with m.If(~is_lin):
                            m.d.sync += st_sel.eq(~f_cur)
                    hold = 0 if B else f_busy
                    with m.If(more_rows & hold):
                        m.next = "WGT_HOLD"  # WGT writes the weights the feeder reads
                    with m.Elif(more_rows):
                        m.next = "WGT"
                    with m.Elif(is_qk):  # the softmax rows, once the scores are out
                        m.next = "SM_HAND"
                    with m.Else():
                        m.next = "WO_WAIT"
            with m.State("WGT_HOLD"):  # WGT writes the weights the feeder still reads
                with m.If(~f_busy):
                    m.next = "WGT"
            # LINEAR, PV: the chunk's last results go out before the next chunk (its staging
            # may read them)
            with m.State("WO_WAIT"):  # (a PV's last chunk: at once, a LINEAR's once its
                # loaders are idle; their results go out beside what follows: wo_busy)
                with m.If(~desc.r_rdy | out_end):
                    m.next = "BLOCK_END"

            # QK: the token block's softmax rows start beside the write-out of its last scores,
            # once the softmax rows before them are done (or wait in the pending slot: the
            # command goes on once the slot is free), and run on after the command
            with m.State("SM_HAND"):
                with m.If(~sm_busy | ~pj_valid | sm_done):
                    m.d.comb += hand_go.eq(1)
                    m.d.sync += qbuf.eq(~qbuf)
                    m.next = "BLOCK_END"

            with m.State("BLOCK_END"):  # the chunk is done: stage the next one, if any, once
                # its results are out (QK: at once; its scores go out beside what follows, each
                # tile's with the rows and score buffer it left in the descriptor FIFO)
                with m.If(~desc.r_rdy | is_qk | out_end):
                    m.d.sync += [c0.eq(at), out_chunk.eq(out_stage), r0.eq(0), i0.eq(0),
                                 i1.eq(0), ab.eq(0), abase.eq(rbase), nblk.eq(0)]
                    if alt_a:  # QK, PV: each chunk in the other half (a QK's next token
                        # block stages while its last tile is fed)
                        with m.If(~is_lin):
                            m.d.sync += [reg.eq(~reg), abase.eq(Mux(reg, 0, half))]
                    with m.If(at < job.tokens):
                        if B:  # its first row block loads while it is staged
                            m.d.sync += [pf_first.eq(is_lin)] + [wr.eq(job.w) for wr in w_rows]
                        if early_mode:
                            early_chunk(is_lin)
                        early = is_pv | is_lin if B else is_pv
                        m.d.sync += [rq_ptr.eq(job.rq_off), pf_rq.eq(early), rq_pf.eq(early)]
                        to_act()
                    with m.Else():
                        finish()

        if early_mode:  # a LINEAR chunk's first tile, early: RUN's handshake, from ACT on
            # (up to RUN; r0 = 0, the chunk's first token block); its results wait for the
            # block's records (et_rec)
            rec_in = (rq_idle & ~pf_rq & ~pf_rq2) | rq_finish
            with m.If(rq_pf & rec_in):
                m.d.sync += rec0.eq(1)
            with m.If(rec_in | rec0):
                m.d.sync += et_rec.eq(0)
            # the next block's records, as soon as the loader is free after the first's
            with m.If(ran_early & ~nx_pend & rq_idle & ~pf_rq & ~pf_rq2 & (job.rows > R)):
                m.d.comb += nx_go.eq(1)
                m.d.sync += nx_pend.eq(1)
            one_blk = (c0 + C >= job.tokens) | ((G << 1) > act_depth)
            flipped = seq.ongoing("WW_WAIT") | seq.ongoing("RQ")  # WGT flipped cur
            with m.If(early_pend & (seq.ongoing("ACT") | seq.ongoing("ACT_DRAIN")
                                    | seq.ongoing("ACT_LAST") | seq.ongoing("WGT")
                                    | flipped)):
                # (the first block's buffer: WGT flips cur to it)
                with m.If(hand_tile(Const(0, 32), c0, out_chunk, Const(0, 1), 1, one_blk, 0,
                                    Mux(flipped, cur, ~cur))):
                    m.d.sync += [f_track.eq(1), early_pend.eq(0), ran_early.eq(1),
                                 et_rec.eq(~(rec_in | rec0))]

        # the softmax rows (sm_busy, from SM_HAND on): a feed reads a row's beats of scores
        # and mask bits into the unit (f_on), a drain writes the running block's
        # probabilities
        with m.If(desc.r_en & wo.last):  # the block's scores are all out (its last tile's
            # last write; at SM_HAND: gone already, or going; sticky until the next SM_HAND):
            # the running rows', else the pending ones'
            with m.If(~sm_all):
                m.d.sync += sm_all.eq(1)
            with m.Elif(pj_valid):
                m.d.sync += pj_all.eq(1)

        def f_row(r):
            return (r < C) & (r < fj_left)

        def d_row(r):
            return (r < C) & (r < dj_left)

        f_end = ~f_row(f_c) & ~f_row(cm_c)  # the feed's rows are all in: beats read, cmds taken
        with m.If(f_on):
            m.d.comb += sm.cmd.valid.eq(f_row(cm_c))
            with m.If(sm.cmd.valid & sm.cmd.ready):
                m.d.sync += cm_c.eq(cm_c + 1)
            # a row's scores are read once they are all written: every tile's but the
            # last's, and the last's beat f_c (the write-out writes to the score memories,
            # the softmax drain to the scratchpad); the last tile in the descriptor FIFO is
            # the pending block's once the running block's scores are all written
            last_in = desc.r_rdy & wo.last & (f_c < beats_out)
            scored = Mux(f_pj, pj_all | (sm_all & last_in), sm_all | last_in)
            s_go = f_row(f_c) & scored & (sfifo.level + s_pend < sfifo.depth)
            for port in sc_r:
                m.d.comb += port.en.eq(s_go)
            m.d.comb += mk_r.en.eq(s_go)
            with m.If(s_go):
                m.d.sync += s_pend.eq(1)
                with m.If(kb + 1 == fj_nbeats):
                    m.d.sync += [kb.eq(0), f_c.eq(f_c + 1)]
                with m.Else():
                    m.d.sync += kb.eq(kb + 1)
            with m.If(f_end):
                m.d.sync += f_on.eq(0)
        with m.If(sm_busy):
            # the held beat's probabilities, the ones that share a scratchpad word per
            # cycle (up to the row's end); the next beat is taken in the beat's last cycle
            # (a pending block's first beat in its last row's: the rows are in order)
            beat_done = Signal()
            m.d.comb += sm.o.ready.eq(~sm_held | beat_done)
            with m.If(sm_held):
                p_addr = Signal(32)
                m.d.comb += p_addr.eq(sm_ptr + sm_key)
                off = p_addr[:2]
                to_row_end = net(m, dj_tokens - sm_key, "drain_to_row_end")
                remaining = Mux(to_row_end < P - sm_lane, to_row_end, P - sm_lane)
                p_n = net(m, Mux(remaining < 4 * L - off, remaining, 4 * L - off), "drain_n")
                m.d.comb += self.w_addr.eq(p_addr >> 2)
                for j in range(4 * L):  # byte lane j of the port: the beat's head + j - off
                    for o in range(min(j + 1, 4)):
                        if j - o < P:
                            with m.If(off == o):
                                m.d.comb += [self.w_data.word_select(j, 8).eq(sm_v[j - o]),
                                             self.w_en[j].eq(j - o < p_n)]
                m.d.sync += [sm_lane.eq(sm_lane + p_n), sm_key.eq(sm_key + p_n)]
                with m.Switch(p_n):  # the rest of the beat moves to its head
                    for v in sm_shifts:
                        with m.Case(v):
                            m.d.sync += sm_v.eq(sm_v.as_value() >> (8 * v))
                with m.If(p_n == remaining):
                    m.d.comb += beat_done.eq(1)
                    with m.If(~sm.o.valid):
                        m.d.sync += sm_held.eq(0)
                    with m.If(sm_key + p_n >= dj_tokens):  # the row's last beat
                        m.d.sync += [d_c.eq(d_c + 1), sm_ptr.eq(sm_ptr + dj_stride),
                                     sm_key.eq(0)]
                        with m.If(~d_row(d_c + 1)):
                            m.d.comb += sm_done.eq(1)
            with m.If(sm.o.valid & sm.o.ready):  # after the lane update: a new beat
                m.d.sync += [sm_held.eq(1), sm_v.eq(sm.o.payload), sm_lane.eq(0)]
        # SM_HAND's token block (hand_go) and the pending one: either starts its rows (after
        # the feed's and drain's updates above) once none run, or becomes the running block
        # in the cycle after the last write of the running rows (sm_done), its rows going in
        # from the cycle after the one in which the running rows are all in (f_end);
        # SM_HAND's waits in the slot while rows run
        hand_all = ~desc.r_rdy | (desc.r_en & (desc.level == 1))  # its scores all written

        def start_feed(tokens, left, nbeats, mult, shift, buf, mk):
            m.d.sync += [f_on.eq(1), f_c.eq(0), kb.eq(0), cm_c.eq(0), fj_tokens.eq(tokens),
                         fj_left.eq(left), fj_nbeats.eq(nbeats), fj_mult.eq(mult),
                         fj_shift.eq(shift), sbuf.eq(buf), smk.eq(mk)]

        def start_drain(tokens, left, stride, ptr, all_in):
            # (sm_held and sm_lane follow the drain's own updates: a pending block's first
            # beat may be taken in the running block's last write)
            m.d.sync += [sm_busy.eq(1), d_c.eq(0), sm_ptr.eq(ptr), sm_key.eq(0),
                         dj_tokens.eq(tokens), dj_left.eq(left), dj_stride.eq(stride),
                         sm_all.eq(all_in), f_pj.eq(0)]

        hand_fields = (job.tokens, job.tokens - t0, nbeats, job.mult, job.shift,
                       job.out_stride, out_chunk, qbuf, mq)
        pj_regs = (pj_tokens, pj_left, pj_nbeats, pj_mult, pj_shift, pj_stride, pj_ptr,
                   pj_buf, pj_mk)

        def feed_fields(tokens, left, nbeats, mult, shift, stride, ptr, buf, mk):
            return tokens, left, nbeats, mult, shift, buf, mk

        def drain_fields(tokens, left, nbeats, mult, shift, stride, ptr, buf, mk):
            return tokens, left, stride, ptr

        with m.If(pj_valid & ~pj_fed & (~f_on | f_end)):  # the pending rows go in
            start_feed(*feed_fields(*pj_regs))
            m.d.sync += [pj_fed.eq(1), f_pj.eq(1)]
        with m.If(hand_go & (~sm_busy | (sm_done & ~pj_valid))):
            start_feed(*feed_fields(*hand_fields))
            start_drain(*drain_fields(*hand_fields), hand_all)
        with m.Elif(sm_done & pj_valid):  # (the pending block's last tile may end now)
            start_drain(*drain_fields(*pj_regs), pj_all | (desc.r_en & wo.last))
        with m.Elif(sm_done):
            m.d.sync += sm_busy.eq(0)
        with m.If(hand_go & sm_busy & ~(sm_done & ~pj_valid)):  # into the pending slot
            m.d.sync += [r.eq(v) for r, v in zip(pj_regs, hand_fields)]
            m.d.sync += [pj_valid.eq(1), pj_all.eq(hand_all), pj_fed.eq(0)]
        with m.Elif(sm_done & pj_valid):
            m.d.sync += pj_valid.eq(0)

        # the records loader: RQ_WORDS words a row of the block (or, nx_go, of the next block) into
        # the next slot
        with m.FSM(name="rqload"):
            with m.State("IDLE"):
                m.d.comb += rq_idle.eq(1)
                addr = Mux(nx_go, rq_ptr + RQ_RECORD * R, rq_ptr)
                words = Mux(nx_go, nx_words, rq_words)
                # what REQ and DATA use, set in every IDLE cycle (a load starts from the last
                # one's): their enables stay off the start's records cache compares (the
                # ECP5 kernel's critical path at 895d1e3)
                m.d.sync += [rq_i.eq(0), ld_row.eq(0), ld_f.eq(0), left.eq(words),
                             ld_ptr.eq(addr), ld_slot.eq(wslot[:2]), to_nx.eq(nx_go)]
                with m.If(rq_go | pf_rq2 | nx_go):
                    ws2 = wslot[:2]
                    wsp = Signal(2)  # the slot before
                    m.d.comb += wsp.eq(ws2 - 1)

                    def holds(k):  # (pf_rq2 excludes nx_go: the block's own records)
                        return (pf_rq2 & c_valid[k] & (c_addr[k] == rq_ptr)
                                & (c_words[k] == rq_words))
                    hit = holds(ws2)
                    m.d.sync += wslot.eq(wslot + 1)
                    with m.If(~hit & holds(wsp)):  # copied from the slot before
                        for r in range(R):
                            m.d.comb += [rq_c[r].addr.eq(wsp), rq_w[r].addr.eq(ws2),
                                         rq_w[r].data.eq(rq_c[r].data),
                                         rq_w[r].en.eq(2**RQ_WORDS - 1)]
                        m.d.sync += [c_valid[ws2].eq(1), c_addr[ws2].eq(addr),
                                     c_words[ws2].eq(words)]
                    with m.Elif(~hit):
                        m.d.comb += [self.dram_req.valid.eq(1),
                                     self.dram_req.payload.addr.eq(addr),
                                     self.dram_req.payload.words.eq(words)]
                        m.d.sync += c_valid[ws2].eq(0)
                        with m.If(self.dram_req.ready):
                            m.next = "DATA"
                        with m.Else():
                            m.next = "REQ"
            with m.State("REQ"):
                m.d.comb += [self.dram_req.valid.eq(1), self.dram_req.payload.addr.eq(ld_ptr),
                             self.dram_req.payload.words.eq(left)]
                with m.If(self.dram_req.ready):
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += self.dram_data.ready.eq(1)
                with m.If(self.dram_data.valid):
                    for r in range(R):
                        m.d.comb += [rq_w[r].addr.eq(ld_slot),
                                     rq_w[r].data.eq(self.dram_data.payload.replicate(RQ_WORDS)),
                                     rq_w[r].en.eq(Mux(ld_row == r,
                                                       Const(1, RQ_WORDS) << ld_f, 0))]
                    m.d.sync += [rq_i.eq(rq_i + 1), ld_f.eq(ld_f + 1)]
                    with m.If(ld_f == RQ_WORDS - 1):
                        m.d.sync += [ld_f.eq(0), ld_row.eq(ld_row + 1)]
                    with m.If(rq_i == left - 1):
                        m.d.comb += rq_finish.eq(1)
                        m.d.sync += nx_ready.eq(to_nx)
                        m.d.sync += [c_valid[ld_slot].eq(1), c_addr[ld_slot].eq(ld_ptr),
                                     c_words[ld_slot].eq(left)]
                        m.next = "IDLE"
        with m.If(self.flush):
            m.d.sync += [v.eq(0) for v in c_valid] + [wslot.eq(0), rslot.eq(0), eo_col.eq(0)]

        if B:  # the weight loaders: a row block's words through the weight ports (wl_start)
            with m.If(pf_next & ~(f_busy & (f_cur != cur)) & wl_idle):  # RQ's prefetch,
                # once the feeder has left its buffer and the loaders are done
                m.d.comb += [wl_start.eq(1), wl_r0.eq(pf_r0), wl_target.eq(~cur)]
                m.d.sync += pf_next.eq(0)
            with m.If(pf_first):  # a chunk's first row block, into the buffer WGT flips to
                m.d.comb += [wl_start.eq(1), wl_r0.eq(0), wl_target.eq(~cur)]
                m.d.sync += [pf_first.eq(0), prefetched.eq(1)]
                if early_mode:
                    m.d.sync += w_track.eq(1)
            if early_mode:
                with m.If(w_track & wl_done):  # the first block is in (before WGT: then
                    m.d.sync += w_track.eq(0)  # WGT, or WW_WAIT, takes wl_done)
                    with m.If(e_chunk & ~seq.ongoing("WGT")):
                        m.d.sync += first_in.eq(1)
                # the next block, into the other buffer, as soon as the first is in (while
                # the chunk is staged: WGT would start it in RQ)
                with m.If(e_chunk & first_in & ~pf1 & (job.rows > R)
                          & (seq.ongoing("ACT") | seq.ongoing("ACT_DRAIN")
                             | seq.ongoing("ACT_LAST"))):
                    m.d.comb += [wl_start.eq(1), wl_r0.eq(R), wl_target.eq(cur)]
                    m.d.sync += pf1.eq(1)
            with m.If(wl_start):
                m.d.sync += wl_buf.eq(wl_target)
            wl_off = Mux(wl_buf, w_depth, 0)  # the entries of the buffer being filled
            ports = [(self.wgt_req, self.wgt_data)] + [
                (getattr(self, f"wgt{q}_req"), getattr(self, f"wgt{q}_data"))
                for q in range(1, NP)]
            done, idle = [], []
            for q, (req, dat) in enumerate(ports):
                d, i = self._weight_loader(
                    m, q, req, dat, w_rows[q], wl_start, wl_off, entries, dense, rows_pad,
                    wl_r0, wv_w, wi_w, wl_lim[q] if early_mode else Signal(kw))
                done.append(d)
                idle.append(i)
            m.d.comb += [wl_done.eq(Cat(done).all()), wl_idle.eq(Cat(idle).all())]

        # staged bytes land one cycle after their read (or as zeros for padding)
        value = net(m, Mux(tgt_zero, 0, rd_byte), "land_value")
        # word landings: realigned to the row (tgt_skip leading bytes), zero past k
        word_in = net(m, Mux(tgt_zero, 0, r_word), "land_word")
        entry = net(m, Mux(tgt_skip == 0, tgt_i1, tgt_i1 - 1), "land_entry")
        aligned = net(m, _realign(prev_a, word_in, tgt_skip), "land_aligned")
        first = net(m, entry << 2, "land_first")  # the word's first element of the row
        kept = net(m, Cat(Mux(first + j < job.k, aligned.word_select(j, 8), 0)
                          for j in range(4)), "land_kept")
        # the dense index of slot tgt_i0 (tgt_i1), every row's
        idx0, idx1 = (net(m, (i % M)[:ibw], f"land_index{n}")
                      for n, i in enumerate((tgt_i0, tgt_i1)))
        with m.Switch(land_kind):
            with m.Case(1):  # KM mask bytes from key tgt_i1 (a multiple of KM) -> its bits
                mask_bytes = net(m, self.r_data >> (rd_off * 8), "mask_bytes")
                bits = Cat(mask_bytes.word_select(j, 8) != 0 for j in range(KM))
                m.d.comb += [mk_w.addr.eq(tgt_i1 // P + mq * nkb),
                             mk_w.data.eq(bits.replicate(P // KM)),
                             mk_w.en.eq(Const((1 << KM) - 1, P) << (tgt_i1 % P))]
            with m.Case(4):  # key words: 4 slots of a key row, their dense indices
                m.d.sync += prev_a.eq(word_in)
                slots = net(m, Cat((first + j)[:ib] for j in range(4)), "land_slots")
                for r in range(R):
                    with m.If((tgt_i0 == r) & ((tgt_skip == 0) | (tgt_i1 != 0))):
                        m.d.comb += [wv_w[r].addr.eq(entry), wv_w[r].data.eq(kept),
                                     wv_w[r].en.eq(0b1111), wi_w[r].addr.eq(entry),
                                     wi_w[r].data.eq(slots), wi_w[r].en.eq(0b1111)]
            with m.Case(2):  # activation words: 4 bytes of a token row, zero past k
                m.d.sync += prev_a.eq(word_in)
                for c in range(C):
                    with m.If((tgt_i0 == c) & ((tgt_skip == 0) | (tgt_i1 != 0))):
                        m.d.comb += [act_w[c].addr.eq(tgt_base + first // M),
                                     act_w[c].data.eq(kept.replicate(M // 4)),
                                     act_w[c].en.eq(Const(0b1111, M) << (first % M))]
            with m.Case(5):  # V words: 4 channels (rows) of key slot tgt_i0
                m.d.sync += prev_a.eq(word_in)
                for r in range(R):
                    with m.If((entry == r // 4) & ((tgt_skip == 0) | (tgt_i1 != 0))):
                        put_value(r, tgt_i0, aligned.word_select(r % 4, 8))
                        put_index(r, tgt_i0, idx0)
            if wide_v:
                with m.Case(7):  # a V row's chunk: channel r of the block at key slot tgt_i0
                    v_chunk = net(m, Cat(self.r_data, r2_word) >> (tgt_skip * 8), "v_chunk")
                    for r in range(R):
                        put_value(r, tgt_i0, v_chunk.word_select(r, 8))
                        put_index(r, tgt_i0, idx0)
                with m.Case(8):  # two V rows: keys tgt_i0 (port A) and tgt_i0 + 1 (port B,
                    # zero past the keys) at the even slot pair of a bank word
                    pair_en = Const(0b11, 4) << tgt_i0[:2]
                    idx = net(m, Cat(idx0, ((tgt_i0 + 1) % M)[:ibw]), "pair_index")
                    for r in range(R):
                        b1 = Mux(tgt_zero, 0, self.r2_data.word_select(r, 8))
                        m.d.comb += [wv_w[r].addr.eq(tgt_i0 >> 2), wi_w[r].addr.eq(tgt_i0 >> 2),
                                     wv_w[r].data.eq(Cat(self.r_data.word_select(r, 8),
                                                         b1).replicate(2)),
                                     wv_w[r].en.eq(pair_en), wi_w[r].data.eq(idx.replicate(2)),
                                     wi_w[r].en.eq(pair_en)]
            with m.Case(6):  # a padding slot of every row: zero, its dense index
                for r in range(R):
                    put_value(r, tgt_i0, Const(0, 8))
                    put_index(r, tgt_i0, idx0)
            with m.Case(3):
                for r in range(R):
                    with m.If(tgt_i0 == r):
                        put_value(r, tgt_i1, value[:8])
                        put_index(r, tgt_i1, idx1)
        # the pair's second row: the same word of it, from read port 2, into its own bank
        word2 = net(m, Mux(tgt2_zero, 0, r2_word), "land2_word")
        entry2 = net(m, Mux(tgt2_skip == 0, tgt_i1, tgt_i1 - 1), "land2_entry")
        first2 = net(m, entry2 << 2, "land2_first")
        aligned2 = net(m, _realign(prev2, word2, tgt2_skip), "land2_aligned")
        kept2 = net(m, Cat(Mux(first2 + j < job.k, aligned2.word_select(j, 8), 0)
                           for j in range(4)), "land2_kept")
        if wide:  # a chunk lands in its bank's buffer; every buffer writes its next entry
            chunk = net(m, (Cat(self.r_data, r2_word) >> (s_skip * 8))[:32 * L], "st_chunk")
            rem = Signal(32)  # the row's elements from the chunk's first on (>= 1)
            m.d.comb += rem.eq(job.k - (s_j << (4 * L).bit_length() - 1))
            kept_chunk = net(m, Cat(Mux(~s_zero & (i < rem), chunk.word_select(i, 8), 0)
                                    for i in range(4 * L)), "st_kept")
            kept_chunk2 = net(m, Cat(Mux(~s_zero2 & (i < rem), self.r2_data.word_select(i, 8), 0)
                                     for i in range(4 * L)), "st_kept2")
            left_q = Signal(kw)  # the row's entries from the chunk's first on
            m.d.comb += left_q.eq(G - (s_j << lq))
            for c in range(C):
                with m.If(st_cnt[c] != 0):
                    m.d.comb += [act_w[c].addr.eq(st_addr[c]), act_w[c].data.eq(st_buf[c]),
                                 act_w[c].en.eq(Const(-1, M))]
                    if early_mode and c == C - 1:  # the last bank: every bank holds the entry
                        m.d.sync += a_lim.eq(st_addr[c] + 1)
                    m.d.sync += [st_cnt[c].eq(st_cnt[c] - 1), st_addr[c].eq(st_addr[c] + 1),
                                 st_buf[c].eq(st_buf[c].shift_right(8 * M))]
                with m.If(s_land & (s_c == c)):
                    m.d.sync += [st_buf[c].eq(kept_chunk),
                                 st_cnt[c].eq(Mux(left_q < Q, left_q, Q)),
                                 st_addr[c].eq(s_base + (s_j << lq))]
                if c:
                    with m.If(s_land2 & (s_c + 1 == c)):  # the pair's second row, from port B
                        m.d.sync += [st_buf[c].eq(kept_chunk2),
                                     st_cnt[c].eq(Mux(left_q < Q, left_q, Q)),
                                     st_addr[c].eq(s_base + (s_j << lq))]
        if wide_k:  # a key chunk lands in its row's buffer; every buffer writes its next word
            k_chunk = net(m, (Cat(self.r_data, r2_word) >> (k_skip * 8))[:32 * L], "kb_chunk")
            k_rem = Signal(32)  # the key row's elements from the chunk's first on (>= 1)
            m.d.comb += k_rem.eq(job.k - (k_j << (4 * L).bit_length() - 1))
            k_kept = net(m, Cat(Mux(~k_zero & (i < k_rem), k_chunk.word_select(i, 8), 0)
                                for i in range(4 * L)), "kb_kept")
            k_kept2 = net(m, Cat(Mux(~k_zero2 & (i < k_rem), self.r2_data.word_select(i, 8), 0)
                                 for i in range(4 * L)), "kb_kept2")
            k_left = Signal(kw)  # the row's bank words from the chunk's first on
            m.d.comb += k_left.eq(entries - (k_j << (L.bit_length() - 1)))
            for r in range(R):
                with m.If(kb_cnt[r] != 0):
                    slot0 = kb_addr[r] << 2
                    m.d.comb += [wv_w[r].addr.eq(kb_addr[r]), wv_w[r].data.eq(kb_buf[r]),
                                 wv_w[r].en.eq(0b1111), wi_w[r].addr.eq(kb_addr[r]),
                                 wi_w[r].data.eq(Cat((slot0 + j)[:ib] for j in range(4))),
                                 wi_w[r].en.eq(0b1111)]
                    m.d.sync += [kb_cnt[r].eq(kb_cnt[r] - 1), kb_addr[r].eq(kb_addr[r] + 1),
                                 kb_buf[r].eq(kb_buf[r].shift_right(32))]
                with m.If(k_land & (k_r == r)):
                    m.d.sync += [kb_buf[r].eq(k_kept),
                                 kb_cnt[r].eq(Mux(k_left < L, k_left, L)),
                                 kb_addr[r].eq(k_j << (L.bit_length() - 1))]
                if r:
                    with m.If(k_land2 & (k_r + 1 == r)):  # the pair's second row, from port B
                        m.d.sync += [kb_buf[r].eq(k_kept2),
                                     kb_cnt[r].eq(Mux(k_left < L, k_left, L)),
                                     kb_addr[r].eq(k_j << (L.bit_length() - 1))]
        with m.If(land2):
            m.d.sync += prev2.eq(word2)
            for c in range(1, C):
                with m.If((tgt2_i0 == c) & ((tgt2_skip == 0) | (tgt_i1 != 0))):
                    m.d.comb += [act_w[c].addr.eq(tgt_base + first2 // M),
                                 act_w[c].data.eq(kept2.replicate(M // 4)),
                                 act_w[c].en.eq(Const(0b1111, M) << (first2 % M))]
        # the write-out: results from the held beat, the elements that share a scratchpad word
        # per cycle (LINEAR, PV), the scores that share a score-bank word (QK), of the tile at
        # the descriptor FIFO's head (``wo``); a tile's first beat is written from its
        # descriptor's address, the next ones from out_ptr
        ptr = Signal(32)
        m.d.comb += ptr.eq(Mux(beats_out == 0, wo.out, out_ptr))
        # (a PV started beside softmax rows: its results wait for the rows' last writes; a
        # QK's scores for the buffer the softmax feed reads, once that block's scores are all
        # in, until the feed leaves it)
        sc_wait = is_qk & f_on & Mux(f_pj, pj_all, sm_all) & (wo.buf == sbuf)
        m.d.comb += [self.wo_tail.eq(desc.level == 1),
                     self.wo_lim.eq(ptr + Mux(job.out_bits == 16, wo.r0 << 1, wo.r0)),
                     self.wo_writing.eq(held & ~is_qk & ~sm_busy)]
        with m.If(held & ~(sm_busy & ~is_qk) & ~sc_wait):
            t = wo.t0 + beats_out
            rrow = wo.r0 + hr
            qk_end = Signal()  # QK: no valid key after this word
            with m.If(is_qk):  # the beat's scores in the word of key rrow and the next
                s_lane = Signal(range(P))  # the first score's lane in its word
                word_key = Signal(32)  # the word's first key
                word = Signal(32)  # its index: rrow // P
                d = Signal(signed(33))
                n_a, rest = Signal(range(P + 1)), Signal(range(R + 1))  # scores in it, after
                m.d.comb += [word.eq(rrow // P), s_lane.eq(rrow - word * P),
                             word_key.eq(rrow - s_lane), d.eq(word_key - wo.r0),
                             n_a.eq(Mux(R - hr < P - s_lane, R - hr, P - s_lane)),
                             rest.eq(R - hr - n_a),
                             n_out.eq(n_a + Mux(word_key + P < wo.rows,
                                                Mux(rest < P, rest, P), 0)),
                             qk_end.eq(word_key + 2 * P >= wo.rows)]
                en_a = Cat((lane >= s_lane) & (lane - s_lane < R - hr)
                           & (word_key + lane < wo.rows) for lane in range(P))
                en_b = Cat((lane < rest) & (word_key + P + lane < wo.rows) for lane in range(P))
                data_a, data_b = Signal(32 * P), Signal(32 * P)
                with m.Switch(d):
                    for dv, word_v in qk_word.items():
                        with m.Case(dv):
                            m.d.comb += data_a.eq(word_v)
                            if dv in qk_next:
                                m.d.comb += data_b.eq(qk_next[dv])
                odd, half = word[0], word >> 1
                # column beats_out's entries; the even memory takes the even word of the two
                base = (beats_out[:col_bits] << sc_col) + Mux(wo.buf, hd, 0)
                ev, od = sc_w
                m.d.comb += [ev.addr.eq(base + Mux(odd, half + 1, half)),
                             ev.data.eq(Mux(odd, data_b, data_a)),
                             ev.en.eq(Mux(odd, en_b, en_a)),
                             od.addr.eq(base + half),
                             od.data.eq(Mux(odd, data_a, data_b)),
                             od.en.eq(Mux(odd, en_a, en_b))]
            with m.Else():  # LINEAR / PV: the beat's elements that share the
                # write port's L words; the beat's head (held_v[0 ..]) goes out first
                sixteen = job.out_bits == 16
                addr = Signal(32)
                m.d.comb += addr.eq(ptr + Mux(sixteen, rrow << 1, rrow))
                off = Signal(2)  # the first element's lane: byte (int8) or half
                m.d.comb += off.eq(Mux(sixteen, addr[1], addr[:2]))
                room = Mux(sixteen, 2 * L, 4 * L) - off
                m.d.comb += n_out.eq(Mux(R - hr < room, R - hr, room))
                vals = [held_v[d] for d in range(min(R, 4 * L))]
                sat = [Mux(v > 127, 127, Mux(v < -128, -128, v))[:8] for v in vals]
                for d, v in enumerate(sat):  # LINEAR with gelu: through the table
                    e = Signal(8, name=f"gelu_in{d}")
                    m.d.comb += [e.eq(v ^ 0x80), gl_r[d].addr.eq(e[2:])]
                    sat[d] = Mux(job.gelu, gl_r[d].data.word_select(e[:2], 8), v)
                m.d.comb += self.w_addr.eq(addr >> 2)
                for j in range(4 * L):  # byte lane j of the port's L words
                    for o in range(4):
                        with m.If(off == o):
                            d8, d16 = j - o, (j >> 1) - o
                            if 0 <= d8 < len(vals):
                                with m.If(~sixteen):
                                    m.d.comb += self.w_data.word_select(j, 8).eq(sat[d8])
                                    m.d.comb += self.w_en[j].eq(
                                        (d8 < n_out) & (rrow + d8 < wo.rows)
                                        & (t < wo.tokens))
                            if 0 <= d16 < len(vals) and o < 2:
                                with m.If(sixteen):
                                    m.d.comb += self.w_data.word_select(j, 8).eq(
                                        vals[d16][8 * (j & 1):8 * (j & 1) + 8])
                                    m.d.comb += self.w_en[j].eq(
                                        (d16 < n_out) & (rrow + d16 < wo.rows)
                                        & (t < wo.tokens))
                with m.If(hr + n_out < R):  # the rest of the beat moves to its head
                    with m.Switch(n_out):
                        for v in shifts:
                            with m.Case(v):
                                m.d.sync += [held_v[r].eq(held_v[r + v] if r + v < R
                                                          else 0) for r in range(R)]
            m.d.sync += hr.eq(hr + n_out)
            m.d.comb += last_w.eq((hr + n_out >= R) | (is_qk & qk_end))
            with m.If(last_w):
                m.d.sync += [held.eq(0), hr.eq(0), beats_out.eq(beats_out + 1),
                             out_ptr.eq(ptr + wo.stride)]
                with m.If(beats_out == C - 1):  # the tile's last write
                    m.d.comb += desc.r_en.eq(1)
                    m.d.sync += beats_out.eq(0)
        # the write-out takes the next beat (after the FSM: it overrides the last write's
        # ``held.eq(0)``)
        with m.If(ofifo.r_en & ofifo.r_rdy):
            m.d.sync += [held.eq(1), hr.eq(0)]
            for r in range(R):
                m.d.sync += held_v[r].eq(ofifo.r_data.word_select(r, 32))
        return m
