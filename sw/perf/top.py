"""Cycle model of the accelerator kernel as built (:class:`hw.top.accelerator.Accelerator`).

:func:`sw.driver.executor.command_cycles` gives what the blocks (engine, vector units) need for
a command, fed at full rate: the architecture's target. This module gives what the kernel in
``hw/top`` takes today, state by state: the command fetch and checks, the DMA bursts, the
operand staging of :class:`~hw.top.engine_ops.EngineOps` and its result write-out beside the
next tiles (:class:`_Results`, simulated a cycle at a time), the
element-serial gather and scatter of :class:`~hw.top.vector_ops.VectorOps`. A command's
cycles can depend on the ones before it (:class:`KernelState`: EngineOps' records cache, and a
QK_SOFTMAX's softmax rows, which run on after its command, and a PV's results, which go out
after it: the next command's CHECK waits for them unless it is a QK_SOFTMAX, or a PV, that
reads none of their bytes), so a Program's are :func:`command_costs`.
``tests/test_sim_top.py`` checks it against the RTL's cycle counter, with device memory
always ready. The state sequence is read from the RTL; a few pipeline constants (the
feed's ``FEED_LATENCY``, the softmax row's and the vector commands' end costs) were
read off per-command traces of the RTL (the top bench's ``trace`` option) and are held
there by the same tests: change the RTL, re-trace, and mend the model with it.

Device memory: the cocotbext-axi RAM model answers a request's first burst 3 cycles after
the reader's request state (``READ_GAP``: the reader's size and AR cycles and the RAM's
latency), then one beat per cycle; bursts stop at :data:`~hw.top.axi.MAX_BURST` beats and at
4 KiB boundaries, and the reader asks for up to :data:`~hw.top.axi.OUTSTANDING` of them ahead
(:class:`Read`), so a request's later bursts follow without a gap. Buffers are page
aligned (:data:`sw.driver.device.PAGE`), so a burst's split depends only on the offset
inside its buffer. With random pauses on the bus (the benches' ``stall``) the kernel only
gets slower: the model is then a lower bound. A config's ``mem_read_delay`` puts every read
burst's first beat that many cycles later (:func:`read_gap`): the top bench's ``mem_delay``
delays its RAM alike, and the tests hold the model to the RTL with it too. Writes are not
delayed.
"""

from __future__ import annotations

import bisect
import copy
import functools

from hw.config import AcceleratorConfig
from hw.top.axi import MAX_BURST, OUTSTANDING
from hw.vector.requant import Requantizer
from sw.compiler.isa import (
    CMD_WORDS,
    HEADER_WORDS,
    LN_RECORD,
    RQ_RECORD,
    RQ_WORDS,
    Command,
    Op,
)
from sw.compiler.weight_layout import block_bytes, rows_padded
from sw.perf.engine import CAPTURE_LATENCY, tile_ends
from sw.perf.vector_ops import stream_beside, stream_cycles

__all__ = ["READ_GAP", "Read", "KernelState", "bursts", "read_gap", "read_cycles",
           "fetch_cycles", "header_cycles",
           "command_cycles", "command_costs", "program_cycles", "busy_cycles", "unit_cycles",
           "command_timeline",
           "vector_stream_start"]

READ_GAP = 3  #: idle cycles before each read burst's first beat
#: a vector command's cycles around its stream: the job taken, ``running`` set, the cycle
#: after ``done`` (measured against the RTL's command trace; the tests hold it)
VECTOR_START = 3
PRODUCTS = 7  #: the command checks' products (hw.top.accelerator: _PRODUCTS + _MUL_LATENCY)


def bursts(offset: int, words: int, beat: int = 4, max_burst: int = MAX_BURST) -> list[int]:
    """Beats of each read burst for ``words`` bus words of ``beat`` bytes from byte
    ``offset``: at most ``max_burst`` beats, never across a 4 KiB page."""
    out = []
    addr = offset
    while words:
        n = min(words, max_burst, (4096 - addr % 4096) // beat)
        out.append(n)
        addr += beat * n
        words -= n
    return out


class Read:
    """One read request on an :class:`~hw.top.axi_reader.AxiReader`, beat by beat: when the
    consumer can take the next beat, given when it took the previous ones.

    Times count from the request state (cycle 0). Burst ``k``'s AR goes out 2 cycles after
    the previous AR (its size is registered in between; the first: 2 cycles after the request
    state) and not before the cycle after burst ``k - outstanding``'s last beat was taken;
    its first beat comes ``gap - 1`` cycles after its AR (``gap``: :data:`READ_GAP`, or
    :func:`read_gap` of a config whose memory answers later), and never before the cycle
    after the previous beat was taken (the memory streams a burst's beats back to back)."""

    def __init__(self, offset: int, words: int, beat: int = 4, max_burst: int = MAX_BURST,
                 outstanding: int = OUTSTANDING, gap: int = READ_GAP):
        self.sizes = bursts(offset, words, beat, max_burst)
        self.outstanding = outstanding
        self.gap = gap
        self.ar: list[int] = []  # each burst's AR cycle
        self.last: list[int] = []  # the cycle each burst's last beat was taken
        self.k, self.n = 0, 0  # the next beat: its burst, its place in the burst
        self.prev = 0  # the cycle the previous beat was taken (the request state at first)

    def ready(self) -> int:
        """The first cycle the next beat can be taken."""
        if self.n:
            return self.prev + 1
        k = self.k
        if len(self.ar) == k:
            ar = self.ar[-1] + 2 if k else 2
            if k >= self.outstanding:
                ar = max(ar, self.last[k - self.outstanding] + 1)
            self.ar.append(ar)
        return max(self.prev + 1, self.ar[k] + self.gap - 1)

    def take(self, t: int) -> bool:
        """The next beat taken in cycle ``t``; whether it ended its burst."""
        self.prev = t
        self.n += 1
        if self.n < self.sizes[self.k]:
            return False
        self.last.append(t)
        self.k, self.n = self.k + 1, 0
        return True


def read_gap(config: AcceleratorConfig | None) -> int:
    """:data:`READ_GAP` of the config's device memory: ``mem_read_delay`` cycles more."""
    return READ_GAP + (config.mem_read_delay if config is not None else 0)


def read_cycles(offset: int, words: int, beat: int = 4, max_burst: int = MAX_BURST,
                outstanding: int = OUTSTANDING, gap: int = READ_GAP) -> int:
    """A read request's cycles when the consumer takes every beat at once: from the request
    state to the cycle taking the last beat, inclusive (:class:`Read`)."""
    r = Read(offset, words, beat, max_burst, outstanding, gap)
    for _ in range(words):
        r.take(r.ready())
    return r.prev + 1


#: fetch, products, the CHECK cycle (the benches' RAM: :func:`fetch_cycles` for a config)
FETCH = read_cycles(0, CMD_WORDS) + PRODUCTS + 1


def fetch_cycles(index: int, config: AcceleratorConfig | None = None) -> int:
    """Fetching command ``index`` of a Program (its words in one read request; two bursts
    when they straddle a 4 KiB page, as commands 63, 127, ... do), the check products and the
    CHECK cycle: :data:`FETCH` (a straddling command's second burst follows the first
    without a gap). With ``config.wide_fetch`` the request is for the weight-port beats that
    hold the command."""
    start = 4 * (HEADER_WORDS + index * CMD_WORDS)
    if config is not None and config.wide_fetch:
        B = config.weight_port_bytes
        beats = -(-(start % B + 4 * CMD_WORDS) // B)
        return (read_cycles(start - start % B, beats, B, config.weight_port_burst,
                            gap=read_gap(config)) + PRODUCTS + 1)
    return read_cycles(start, CMD_WORDS, gap=read_gap(config)) + PRODUCTS + 1


def header_cycles(config: AcceleratorConfig | None = None) -> int:
    """The start cycle, the header read and its check: :data:`HEADER` with the config's
    device memory."""
    return 1 + read_cycles(0, HEADER_WORDS, gap=read_gap(config)) + 1


HEADER = header_cycles()  #: the start cycle, the header read, its check (the benches' RAM)


def _consume(offset: int, words: int, busy, gap: int = READ_GAP) -> int:
    """A read request whose consumer, after taking word ``i``, is busy ``busy(i)`` more
    cycles: cycles from the request state to the one taking the last word, inclusive."""
    r = Read(offset, words, gap=gap)
    for i in range(words):
        r.take(max(r.ready(), r.prev + 1 + busy(i - 1)) if i else r.ready())
    return r.prev + 1


def _records(offset: int, records: int, cfg: AcceleratorConfig) -> int:
    """LayerNorm's records through the weight port (``B / 16`` a beat): the request state,
    then each beat's records one a cycle, the beat taken with its last (the command's last
    record ends the last beat), or the whole beat in a cycle (``config.ln_load_lanes > 1``);
    cycles from the request state to the one after the last."""
    B = cfg.weight_port_bytes
    per_beat = B // LN_RECORD
    r = Read(offset, -(-records // per_beat), B, cfg.weight_port_burst, gap=read_gap(cfg))
    for i in range(0, records, per_beat):  # a beat a cycle when the unit loads all of it
        r.take(r.ready() + (0 if cfg.ln_load_lanes > 1 else min(per_beat, records - i) - 1))
    return r.prev + 1


def _loaded_entries(addr: int, rows: int, steps: int, dense: bool,
                    cfg: AcceleratorConfig) -> tuple[int, ...]:
    """A weight loader's block of ``rows`` rows per port from ``addr``: the cycle (its request
    state is 0) in which it writes each entry's last word (4 steps of every row): entry by
    entry, its values (a beat of ``B / 4`` rows' words) then its index words (a beat of ``8 B
    / index_word_bits`` rows'), or for dense rows the implicit indices, an entry a cycle
    after all the values."""
    B = cfg.weight_port_bytes
    E = -(-steps // 4)
    vg, ig = rows // (B // 4), 0 if dense else rows // (8 * B // cfg.index_word_bits)
    r = Read(addr, E * (vg + ig), B, cfg.weight_port_burst, gap=read_gap(cfg))
    taken = []
    for _ in range(E * (vg + ig)):
        taken.append(r.ready())
        r.take(taken[-1])
    if dense:
        return tuple(taken[-1] + 1 + e for e in range(E))
    return tuple(taken[(e + 1) * (vg + ig) - 1] for e in range(E))


def _values(start: int, nbytes: int, gap: int = READ_GAP) -> int:
    """A LINEAR row's values: one word per cycle as the bus delivers them, realigned into
    4-slot bank words; a row starting mid-word whose last bytes sit in its last word alone
    needs one more cycle for them (W_FLUSH)."""
    skip = start & 3
    words = (skip + nbytes + 3) >> 2
    flush = int(skip != 0 and words == (nbytes + 3) >> 2)
    return read_cycles(start - skip, words, gap=gap) + flush


def _on_words(first: int, stride: int) -> bool:
    """Every row starts on a scratchpad word (its first row's byte and the stride): what
    wide staging needs to move two rows a cycle (EngineOps' pairs, k_pairs, v_pairs)."""
    return first % 4 == 0 and stride % 4 == 0


def _words(start: int, nbytes: int) -> int:
    return ((start & 3) + nbytes + 3) >> 2


@functools.lru_cache(maxsize=4096)
def _indices(skip: int, page_off: int, words: int, steps: int, ib: int,
             gap: int = READ_GAP) -> int:
    """A LINEAR row's indices (EngineOps W_REQ, W_DATA with idx_phase), cycle by cycle: each
    cycle emits a bank word of 4 slots when ``4 ib`` bits are queued (or the row's last slots
    once every word is in) and takes a bus word if fewer than ``4 ib`` bits stay queued.
    The request: ``words`` bus words from byte ``page_off`` of a 4 KiB page. Cycles from the
    request state to the last emission."""
    entries = -(-steps // 4)
    r = Read(page_off, words, gap=gap)
    t, wk, bits, ent = 1, 0, 0, 0
    while True:
        emit = bits >= 4 * ib or wk == words
        after = (bits - 4 * ib if bits >= 4 * ib else 0) if emit else bits
        if wk < words and after < 4 * ib and r.ready() <= t:
            after += 32 - 8 * skip if wk == 0 else 32
            wk += 1
            r.take(t)
        bits = after
        if emit:
            ent += 1
            if ent == entries:
                return t + 1
        t += 1


class KernelState:
    """What a command leaves in the kernel for the next ones: the requantizer records slots
    (``rq_loads``: loads so far, the slot of the next; ``rq_slots``: (params offset, words) of
    the load that filled each, EngineOps' records cache; empty when the kernel starts a
    Program); the cycle ``now`` at which the next command's fetch starts; the last
    QK_SOFTMAX's softmax rows, which run on after its command: the first cycle they are done
    (``sm_end``, on the same count) and the bytes they write (``sm_range``, [lo, hi)); the
    last PV's or LINEAR's results, which go out after its command: the first cycle they are
    all written (``wo_end``) and their bytes (``wo_range``; a LINEAR's: everything, no PV
    starts beside them); the last step of the tile still being fed (``feed_last``)."""

    def __init__(self):
        self.rq_loads = 0
        self.rq_slots: list[tuple[int, int] | None] = [None] * 4
        self.now = 0
        self.sm_end = self.wo_end = -1
        self.sm_scored = -1  # the first cycle the last QK_SOFTMAX's scores are all written
        self.sm_range = self.wo_range = (0, 0)
        # the token block's softmax rows before the last ones: the first cycle they are done
        # (the last ones wait for them in EngineOps' pending slot), and the bytes of the
        # QK_SOFTMAX before the last (CHECK keeps both ranges)
        self.sm_prev_end = -1
        self.sm_prev_range = (0, 0)
        # the first cycle the feed no longer reads the last (and the previous) token block's
        # score buffer, and the softmax rows as they were in the cycle the last block was fed
        # (the next block goes in from there)
        self.sm_fed = self.sm_prev_fed = -1
        self.sm_rows: _SoftmaxRows | None = None
        self.sm_in = -1  # the cycle the last block's rows started going in
        # a QK_SOFTMAX's or PV's (wo_op) results still going out (its write-out, and the
        # cycle the engine captured its last tile's sums), on the count of ``wo_base``, for
        # the next command of its kind (a LINEAR's: wo_op only, the next command waits)
        self.wo_op: Op | None = None
        self.wo_results: _Results | None = None
        self.wo_captured = 0
        self.wo_base = 0
        # the bytes the last LINEAR's or PV's results may write (its output range; with a
        # PV's before while those still went out), and its last chunk's write-out as a vector
        # command beside it sees it
        self.res = (0, 0)
        self.wo_out: _WriteOut | None = None
        # the cycle the engine takes the last step of the tile in EngineOps' feeder (which runs
        # on after RUN, into the next command)
        self.feed_last = -10


def _disjoint(reads, written: tuple[int, int]) -> bool:
    lo, hi = written
    return all(end <= lo or start >= hi for start, end in reads)


def _beside(cmd: Command, state: KernelState) -> bool:
    """Whether ``cmd`` starts beside the softmax rows still running: a QK_SOFTMAX that reads
    none of their bytes, nor those of the QK_SOFTMAX before (hw.top.accelerator's CHECK; the
    Program is assumed good)."""
    if cmd.op != Op.QK_SOFTMAX:
        return False
    a = cmd.args
    rows = (a["tokens"] - 1) * a["stride"] + a["d"]
    reads = ((a["q"], a["q"] + rows), (a["k"], a["k"] + rows),
             (a["mask"], a["mask"] + a["tokens"]))
    return _disjoint(reads, state.sm_range) and _disjoint(reads, state.sm_prev_range)


def _pv_reads(cmd: Command) -> tuple[tuple[int, int], ...]:
    """A PV's P and V bytes, ``[lo, hi)`` each."""
    a = cmd.args
    return ((a["p"], a["p"] + (a["tokens"] - 1) * a["p_stride"] + a["tokens"]),
            (a["v"], a["v"] + (a["tokens"] - 1) * a["stride"] + a["d"]))


def _pv_beside_sm(cmd: Command, state: KernelState) -> bool:
    """Whether ``cmd`` is a PV that reads none of the running softmax rows' bytes: it starts
    beside them once their scores are all written (its results wait for the rows)."""
    return cmd.op == Op.PV and _disjoint(_pv_reads(cmd), state.sm_range)


def _pv_beside(cmd: Command, state: KernelState) -> bool:
    """Whether ``cmd`` starts beside a PV's results still going out: a PV that reads none of
    their bytes."""
    return cmd.op == Op.PV and _disjoint(_pv_reads(cmd), state.wo_range)


def _engine(cmd: Command, cfg: AcceleratorConfig, state: KernelState,  # noqa: C901
            base: int = 0) -> int:
    """The engine command's cycles from ENG_START (cycle ``base`` on ``state``'s count)."""
    a = cmd.args
    R, C, M = cfg.pe_rows, cfg.pe_cols, cfg.m
    ib = cfg.index_bits
    if cmd.op == Op.LINEAR:
        tokens, k, rows, n = a["tokens"], a["k"], a["rows"], a["n"]
        w_off, rq_off = a["w_off"], a["rq_off"]
        act, act_stride = a["a"], a["a_stride"]
    elif cmd.op == Op.QK_SOFTMAX:
        tokens, k, rows, n = a["tokens"], a["d"], a["tokens"], M
        act, act_stride = a["q"], a["stride"]
    else:  # PV
        tokens, k, rows, n = a["tokens"], a["tokens"], a["d"], M
        rq_off = a["rq_off"]
        act, act_stride = a["p"], a["p_stride"]
    G = -(-k // M)
    steps = G * n
    ibytes = (steps * ib + 7) >> 3
    eb = 2 if cmd.op == Op.LINEAR and a["out_bits"] == 16 else 1
    if cmd.op != Op.QK_SOFTMAX:  # where its results go (with a PV's still going out)
        lo, hi = a["out"], a["out"] + (tokens - 1) * a["out_stride"] + rows * eb
        if state.wo_end > base:
            lo, hi = min(lo, state.res[0]), max(hi, state.res[1])
        state.res = (lo, hi)
    # chunks of token blocks: as many as the activation banks hold (QK: one block), each
    # staged once (ACT, ACT_LAST) and run against every row block, then BLOCK_END
    blocks = -(-tokens // C)
    # QK and PV stage into the two halves of the activation banks in turn when half holds
    # any of their blocks: their ACT need not wait for the feeder
    alt_a = cfg.act_halves
    depth = cfg.act_buffer_depth // (2 if alt_a and cmd.op != Op.LINEAR else 1)
    per_chunk = 1 if cmd.op == Op.QK_SOFTMAX else depth // G
    gap = read_gap(cfg)
    weights = 0  # staging the row blocks' weights
    wts = []  # per row block
    before = 0  # weights before this block
    B = cfg.weight_port_bytes
    if B and cmd.op == Op.LINEAR:
        rows_pad = rows_padded(rows, cfg)
        addr = w_off
    loads = []  # LINEAR with a weight port: the loader's cycles per row block
    entered = []  # and the cycle (from its start) each entry of the block is whole
    rq = []  # LINEAR, PV: the requantizer records' cycles per row block
    for r0 in range(0, rows, R):
        if cmd.op == Op.LINEAR and B:
            # the loader: started (with the chunk for its first block, else in the previous
            # block's first RQ cycle), one request for the block's value and index words
            # (WW_REQ, WW_DATA); dense: the implicit indices, an entry of every row per cycle
            # (WW_DENSE). WGT waits for what is left of it (below). With several weight ports
            # each loads R / P rows of every block from its bank at the same offset, beat for
            # beat alike: one of them stands for all
            beats = block_bytes(min(R, rows_pad - r0) // cfg.weight_ports, k, n, M, cfg) // B
            loads.append(1 + read_cycles(addr, beats, B, cfg.weight_port_burst, gap=gap)
                         + (-(-steps // 4) if n == M else 0))
            entered.append(_loaded_entries(addr, min(R, rows_pad - r0) // cfg.weight_ports,
                                           steps, n == M, cfg))
            addr += beats * B
        elif cmd.op == Op.LINEAR:
            for row in range(r0, r0 + R):
                if row >= rows:
                    weights += steps  # WGT fills the missing row with zeros
                    continue
                weights += 1  # WGT
                weights += _values(w_off + row * steps, steps, gap)  # W_REQ, W_DATA, W_FLUSH
                weights += 1  # W_VALUES_END
                if n == M:
                    weights += -(-steps // 4)  # W_DENSE_IDX: a bank word of 4 slots per cycle
                else:  # W_REQ, W_DATA: the index words, a bank word of 4 slots per cycle
                    istart = w_off + rows * steps + row * ibytes
                    weights += _indices(istart & 3, (istart & ~3) % 4096,
                                        _words(istart, ibytes), steps, ib, gap)
                weights += 1  # W_ROW_END
        elif cmd.op == Op.QK_SOFTMAX and cfg.spm_lanes > 1:  # WGT, WGT_DRAIN: chunks of
            # spm_lanes words of the block's key rows (none past the keys) into per-row
            # buffers, as activations (pairs of word-aligned rows with R even); WGT_LAST
            pairs = 2 if R % 2 == 0 and _on_words(a["k"], a["stride"]) else 1
            slots = -(-min(R, rows - r0) // pairs) * pairs
            weights += wide_staging_cycles(slots, cfg.spm_lanes, -(-steps // 4), 1, pairs) + 1
        elif cmd.op == Op.QK_SOFTMAX:  # WGT: a word of each key row per cycle; WGT_LAST
            weights += sum(steps // 4 + int(r < rows and (a["k"] + r * a["stride"]) % 4 != 0)
                           for r in range(r0, r0 + R)) + 1
        elif cfg.wide_v_staging:  # WGT: a key's channels per cycle (wide ports), two keys'
            # with word-aligned V rows and R a multiple of 4; padding slots; WGT_LAST
            if R % 4 == 0 and _on_words(a["v"], a["stride"]):
                weights += -(-k // 2) + steps - 2 * -(-k // 2) + 1
            else:
                weights += steps + 1
        else:  # WGT: V's rows, 4 of the block's channels per cycle; padding slots; WGT_LAST
            groups = -(-min(R, rows - r0) // 4)
            weights += sum(groups + int((a["v"] + s * a["stride"] + r0) % 4 != 0)
                           for s in range(k)) + (steps - k) + 1
        wts.append(weights - before)
        before = weights
        if cmd.op != Op.QK_SOFTMAX:  # RQ, RQ_WAIT: the records loader
            rq.append(read_cycles(rq_off + RQ_RECORD * r0, RQ_WORDS * min(R, rows - r0),
                                  gap=gap))
    # a chunk's first row block's records are fetched from the chunk's third cycle (PV; LINEAR
    # with a weight port, after its GELU table): RQ waits for what is left of them; the next
    # blocks' (same commands) from the previous block's first RUN cycle, RQ waiting for them
    # (at least one cycle)
    rq_early = cmd.op == Op.PV or (cmd.op == Op.LINEAR and B)
    rblocks = -(-rows // R)
    if cmd.op == Op.QK_SOFTMAX:  # scores: a cycle per two score-bank words (P keys each)
        # the beat's valid keys (below ``rows``) span
        P = cfg.softmax_lanes

        def beat(t: int, r0: int) -> int:
            return ((min(r0 + R, rows) - 1) // P - r0 // P + 2) // 2
    else:  # results: every element of the beat within the write port's spm_lanes words,
        # from the first element's lane in its word, per cycle
        out, stride = a["out"], a["out_stride"]
        per_cycle = 4 * cfg.spm_lanes // eb

        def beat(t: int, r0: int) -> int:
            lane = (out + t * stride + r0 * eb) % 4 // eb
            return (lane + R + per_cycle - 1) // per_cycle
    requant = 0 if cmd.op == Op.QK_SOFTMAX else Requantizer.LATENCY
    cyc = 1  # ENG_START (the job is taken in the same cycle)
    if cmd.op == Op.QK_SOFTMAX:
        cyc += -(-tokens // cfg.mask_lanes) + 1  # MASK (mask_lanes keys a cycle), MASK_LAST
    table = (read_cycles(a["table_off"], 64, gap=gap) if cmd.op == Op.LINEAR and a["gelu"]
             else 0)
    cyc += table  # TABLE, TABLE_DATA: the GELU table's words
    for first in range(0, blocks, per_chunk):
        b = min(per_chunk, blocks - first)
        # the records loads of the chunk: block j's into the next slots in turn (they run on
        # from command to command); a chunk's first block's (fetched early) are not fetched
        # when their slot holds them, or when the slot before it does (copied over in the
        # cycle that would start the fetch: PV heads after the first)
        load0 = state.rq_loads
        hit = rq_early and (rq_off, RQ_WORDS * min(R, rows)) in (state.rq_slots[load0 % 4],
                                                          state.rq_slots[(load0 - 1) % 4])
        if rq:
            for j in range(rblocks):
                state.rq_slots[(load0 + j) % 4] = (rq_off + RQ_RECORD * R * j,
                                                   RQ_WORDS * min(R, rows - R * j))
            state.rq_loads += rblocks
        # a LINEAR chunk's first row block starts loading in the chunk's first cycle (the
        # first chunk's: before its GELU table)
        load_start = cyc - (table if first == 0 else 0)
        act_start = cyc
        # ACT_HOLD: ACT writes the banks the feeder reads, so it starts after the tile before
        # (a QK or PV staging into the other half does not wait)
        if not (alt_a and cmd.op != Op.LINEAR):
            cyc = max(cyc, state.feed_last - base + 2)
        act0 = cyc  # the first ACT cycle
        # ACT: a scratchpad word per cycle, one more for a row starting mid-word, two rows of
        # a block at a time (banks 0-1, 2-3, ...); ACT_LAST
        def row_words(t: int) -> int:
            return G * M // 4 + int(t < tokens and (act + t * act_stride) % 4 != 0)

        drained = -1  # the first cycle the activation banks hold every staged entry
        if cfg.wide_staging:  # chunks of the port's width, two rows a cycle when aligned
            pairs = 2 if C % 2 == 0 and _on_words(act, act_stride) else 1
            staging, landed, issued = _wide_staging(C, 4 * cfg.spm_lanes // M, G, b, pairs)
            if cmd.op == Op.PV:  # on to WGT (V) after the last chunk's read, the bank
                # buffers emptying beside it: RUN waits for them
                drained = cyc + staging - 1
                cyc += issued + 1
            else:  # ACT_DRAIN
                cyc += staging + 1
        else:
            cyc += sum(max(row_words(t) for t in range(t0, min(t0 + 2, blk + C)))
                       for blk in range(first * C, (first + b) * C, C)
                       for t0 in range(blk, blk + C, 2)) + 1
        last_chunk = first + per_chunk >= blocks
        if state.wo_results is not None and state.wo_op == cmd.op:
            # the results of the QK_SOFTMAX or PV (or QK token block) before may still go out
            results, captured = state.wo_results, state.wo_captured
            results.rebase(base - state.wo_base)
            captured -= base - state.wo_base
            state.wo_results = None
        else:
            results = _Results(C, requant)
            captured = 0  # the cycle the engine captured the previous tile's sums
            if cmd.op != Op.QK_SOFTMAX:  # softmax rows still running: results wait for them
                results.hold = state.sm_end - base
        rq_at = run_at = 0  # the previous block's first RQ and RUN cycles
        run_hs = rec_end = 0  # ... its first tile's handshake; its records' last word
        ld_at = load_start  # the cycle the block's load started
        fed = state.feed_last - base  # the engine's last step of the tile being fed
        # a LINEAR chunk's first tile (wide staging, a weight port) starts early: the engine
        # takes it in the first ACT cycle (the engine is idle: ACT_HOLD); the feeder reads
        # each beat once its bank entry is written (the activations' last bank, the loaders'
        # entries); its results go into the requantizer once the block's records are in
        # (fetched since the chunk's third cycle, the last word in t_rec, or cached), and the
        # next block's records are fetched from the cycle the loader is idle after them
        early = None
        if cmd.op == Op.LINEAR and B and cfg.wide_staging:
            t_rec = act_start + (2 if hit else rq[0])
            early = (max(act0, fed), tuple(act0 + x - 1 for x in landed))
        idle_at = -1  # (early tile) the loaders are idle after the last block's words
        for j in range(rblocks):
            r0 = j * R
            if early is not None and j == rblocks - 1:  # its load started at ld_at
                idle_at = ld_at + loads[j]
            # WGT waits for what is left of the block's load: the first block's ran while the
            # table and activations came, block j > 0's (into the other buffer) since block
            # j - 1's first RQ cycle (or, when the feeder still read that buffer then, since
            # the engine took that tile's last step), through its records and tiles. With an
            # early tile (wide staging, a weight port) WGT waits only for the load to have
            # started (the loaders were busy with block j - 1's until then), and the block's
            # feeder reads each weight entry once it is whole
            if j == 0 and not B:  # WGT_HOLD (one weight buffer) after a QK's or PV's ACT
                cyc = max(cyc, fed + 2)  # staged beside the tile before
            # the early tile's chunk: the next block starts loading (into the other buffer) in
            # the cycle after the first block's load is done, if that is before WGT
            pf_early = None
            if early is not None and j == 0 and rblocks > 1:
                pf_early = max(ld_at + loads[0], act0)
                pf_early = pf_early if pf_early < cyc else None
            w_ready = None
            if early is not None:
                cyc = max(cyc, ld_at + 1) + 1
                w_ready = tuple(ld_at + 1 + x for x in entered[j])
            elif loads:
                cyc += 1 + max(0, loads[j] - 1 - (cyc - ld_at))
            cyc += wts[j]
            rq_at = cyc
            if pf_early is not None:
                ld_at = pf_early
            elif early is not None:  # and once the loaders are idle after this block's
                ld_at = max(rq_at, fed + 1, ld_at + loads[j])
            else:
                ld_at = max(rq_at, fed + 1)
            if rq_early and j == 0:  # fetched since the chunk's third cycle (or cached)
                cyc += 1 + (0 if hit else max(0, rq[0] - 1 - (cyc - act_start - 1)))
            elif early is not None:  # a LINEAR's next blocks: fetched from the previous
                # block's RUN state once the records loader is idle (the second block: as
                # soon as it is idle after the first block's), else by RQ once it is idle;
                # RUN does not wait for them (nx_ready, or RQ_WAIT): the tile's results wait
                # for them at the requantizer (the first cycle after the last word)
                start = (min(run_at, max(early[0] + 1, t_rec + (0 if hit else 1))) if j == 1
                         else max(run_at, rec_end + 1))
                if j > 1 and start > run_hs:  # RQ asks for them
                    start = max(cyc, rec_end + 1)
                    rec_end = start + rq[j] - 1
                    cyc = start + 1
                else:  # on their way (RQ waits a cycle more in their last one) or in
                    rec_end = start + rq[j] - 1
                    cyc += 2 if cyc == rec_end else 1
            elif rq_early:  # fetched since the previous block's first RUN cycle
                cyc += max(1, rq[j] + 1 - (cyc - run_at))
            elif rq:  # RQ, RQ_WAIT (QK has no records)
                cyc += rq[j]
            if early is not None and j == rblocks - 1 and j > 0:  # and its records'
                idle_at = max(idle_at, rec_end + 1)
            run_at = cyc
            for tb in range(b):
                # RUN: the engine takes the tile with the last step of the one before (or at
                # once); the feeder from the next cycle: the first step FEED_LATENCY cycles
                # in, not before the engine captured the previous tile's sums; TILE_END in the
                # next cycle. The early tile: RUN passes on at once
                if early is not None and j == 0 and tb == 0 and early[0] < cyc:
                    hs = cyc
                    results.rq_hold = t_rec + 1
                    fed = feed_steps(early[0] + 1, steps, n, captured, early[1], w_ready)[1]
                else:
                    hs = max(cyc, fed, drained)
                    if w_ready is not None and w_ready[-1] < hs + 1:
                        w_ready = None  # all in before the feeder starts
                    fed = feed_steps(hs + 1, steps, n, captured, None, w_ready)[1]
                t0 = (first + tb) * C
                # (QK: its scores wait for the softmax feed reading their buffer)
                sc_hold = state.sm_prev_fed - base if cmd.op == Op.QK_SOFTMAX else -1
                captured = results.capture(fed + CAPTURE_LATENCY,
                                           [beat(t, r0) for t in range(t0, t0 + C)], sc_hold)
                if tb == 0:
                    run_hs = hs
                    if early is not None and j > 0:  # the block's results wait for its
                        results.rq_hold = rec_end + 1  # records
                cyc = hs + 2
            if j + 1 < rblocks and not B:  # WGT_HOLD: WGT writes the weights the feeder
                cyc = fed + 2  # reads (with a weight port, the other buffer)
        state.feed_last = base + fed
        if cmd.op == Op.QK_SOFTMAX or (cmd.op == Op.PV and last_chunk):
            # its results go out beside what follows
            state.wo_op, state.wo_results = cmd.op, results
            state.wo_captured, state.wo_base = captured, base
            results = copy.deepcopy(results)
        done = results.finish()  # the chunk's last result's last write
        if cmd.op != Op.QK_SOFTMAX and last_chunk:  # as a vector command beside them sees them
            state.wo_out = _WriteOut(results, base, state.res, a["out"] + (
                first + b - 1) * C * a["out_stride"] + (rblocks - 1) * R * eb, a["out_stride"])
        if cmd.op == Op.QK_SOFTMAX:  # SM_HAND: once the pending slot is free (the rows
            # before the last ones in their last write), the block's query rows go through
            # the softmax unit (_softmax_block: from the next cycle on, or once the rows
            # before are all in it), beside the rest of the command and the next commands,
            # each row once its scores are all written (the last tile's beat for it);
            # BLOCK_END at once (the scores go out beside what follows)
            t0 = first * C
            hand = max(cyc, state.sm_prev_end - 1 - base)
            _softmax_block(cfg, state, base + hand, tokens, tuple(
                (a["p"] + t * a["p_stride"]) % 4 for t in range(t0, min(t0 + C, tokens))),
                tuple(base + w + 1 for w in results.writes[-C:][:tokens - t0]))
            if first == 0:  # (CHECK latched the command's range)
                state.sm_prev_range = state.sm_range
            state.sm_range = (a["p"], a["p"] + (tokens - 1) * a["p_stride"] + tokens)
            state.sm_scored = base + done + 1
            cyc = hand + 2
        elif cmd.op == Op.PV and last_chunk:  # WO_WAIT, BLOCK_END: its results go out
            # beside what follows
            state.wo_end = base + done + 1
            state.wo_range = (a["out"], a["out"] + (tokens - 1) * a["out_stride"] + rows)
            cyc += 2
        elif cmd.op == Op.LINEAR and last_chunk:  # WO_WAIT until the last result is written
            # or the loaders are idle, BLOCK_END: its results go out beside what follows (no
            # PV starts beside them: their range is everything)
            state.wo_op, state.wo_results = Op.LINEAR, None
            state.wo_end = base + done + 1
            state.wo_range = (0, 1 << 40)
            cyc = max(cyc, min(done + 1, idle_at)) + 2
        else:  # WO_WAIT until the chunk's last result is written, BLOCK_END
            cyc = max(cyc, done + 1) + 2
    return cyc


class _Results:
    """The engine's results after its array, cycle by cycle (EngineOps' write-out): a tile's
    ``C`` output beats leave the engine's shadow buffer one a cycle while the requantizer
    (``requant`` stages that advance together, or none: QK) can take them; they queue in the
    2-beat result FIFO; the write-out holds one beat for its write cycles and takes the next
    in the last of them. The engine captures a tile's sums when they are ready and the
    shadow buffer is empty or gives up its last beat in that cycle. A tile's beats may wait
    for a cycle of their own (:meth:`capture`'s ``hold``: QK scores for a busy buffer)."""

    def __init__(self, C: int, requant: int):
        self.C, self.stages = C, [None] * requant
        # the shadow buffer's beats (write cycles, no write before), reversed
        self.shadow: list[tuple[int, int]] = []
        self.fifo: list[tuple[int, int]] = []
        self.held = 0  # write cycles left of the held beat
        self.bhold = -1  # ... and its own hold
        self.t = 0  # the next cycle
        self.writes: list[int] = []  # each beat's last write cycle, in order
        self.wcyc: list[int] = []  # the cycles the write-out writes
        self.hold = -1  # no write before this cycle (softmax rows still writing)
        self.rq_hold = -1  # no beat into the requantizer before this cycle (records)

    def rebase(self, delta: int) -> None:
        """Count cycles from ``delta`` cycles later on."""
        self.t -= delta
        self.hold -= delta
        self.rq_hold -= delta
        self.bhold -= delta
        self.shadow = [(w, h - delta) for w, h in self.shadow]
        self.fifo = [(w, h - delta) for w, h in self.fifo]
        self.stages = [None if b is None else (b[0], b[1] - delta) for b in self.stages]
        self.writes = [w - delta for w in self.writes]
        self.wcyc = [w - delta for w in self.wcyc]

    def _idle(self) -> bool:
        return not (self.shadow or self.fifo or self.held or any(
            s is not None for s in self.stages))

    def _cycle(self) -> bool:
        """Cycle ``self.t``; whether it took the shadow buffer's last beat."""
        full = bool(self.shadow)
        blocked = self.t < max(self.hold, self.bhold)
        last_w = self.held == 1 and not blocked
        read = (self.held == 0 or last_w) and bool(self.fifo)
        room = len(self.fifo) < 2
        st = self.stages
        if st:
            advance = st[-1] is None or room
            take = full and advance and self.t >= self.rq_hold
            push = st[-1] if st[-1] is not None and room else None
        else:
            advance, take = False, full and room
        beat = self.shadow.pop() if take else None
        if self.held and not blocked:
            self.wcyc.append(self.t)
        if last_w:
            self.writes.append(self.t)
        if read:
            self.held, self.bhold = self.fifo.pop(0)
        elif not blocked:
            self.held = max(0, self.held - 1)
        if st:
            if advance:
                self.stages = [beat] + st[:-1]
            if push is not None:
                self.fifo.append(push)
        elif take:
            self.fifo.append(beat)
        self.t += 1
        return take and not self.shadow

    def capture(self, ready: int, beats: list[int], hold: int = -1) -> int:
        """A tile's sums, ready from cycle ``ready``, its beats' write cycles ``beats``, none
        written before cycle ``hold``: the cycle the engine captures them."""
        if self.t < ready and self._idle():
            self.t = ready
        while True:
            t, empty = self.t, not self.shadow
            drained = self._cycle()
            if t >= ready and (empty or drained):
                self.shadow = [(b, hold) for b in beats[::-1]]
                return t

    def finish(self) -> int:
        """The cycle of the last result's last write."""
        while not self._idle():
            self._cycle()
        return self.writes[-1]


@functools.lru_cache(maxsize=1 << 10)
def wide_staging_cycles(C: int, Q: int, G: int, blocks: int, rows: int = 1) -> int:
    """ACT and ACT_DRAIN with a wide scratchpad port: token rows of ``G`` bank entries in
    chunks of ``Q`` (the port's width), chunk ``j`` of every row of a block in turn, ``rows``
    (1, or 2 when every row starts on a word and ``C`` is even: port B reads the second row)
    a cycle unless a bank's buffer holds more than the two entries it writes before the
    chunk lands (or that bank's previous chunk is landing); every bank writes an entry of its
    buffer per cycle; ACT_DRAIN waits for the buffers to empty. QK's key rows (WGT,
    WGT_DRAIN) go the same way: ``C`` of the block's key rows (those below ``rows``, rounded
    up to ``rows``), ``G`` bank words of 4 slots, ``Q`` words a chunk."""
    return wide_staging(C, Q, G, blocks, rows)[0]


def wide_staging(C: int, Q: int, G: int, blocks: int, rows: int = 1) -> tuple[int, tuple]:
    """:func:`wide_staging_cycles`, and the cycle (the first ACT cycle is 1) in which the last
    bank (``C - 1``, staged last in every chunk) writes each entry of the first block: the
    entries every bank holds from the cycle after (the feeder's watermark)."""
    return _wide_staging(C, Q, G, blocks, rows)[:2]


@functools.lru_cache(maxsize=256)
def _wide_staging(C: int, Q: int, G: int, blocks: int, rows: int) -> tuple[int, tuple, int]:
    """:func:`wide_staging` and the cycle of the last chunk's read."""
    chunks = -(-G // Q)
    order = [(c, min(Q, G - j * Q)) for _ in range(blocks) for j in range(chunks)
             for c in range(0, C, rows)]
    cnt = [0] * C
    land = None  # (first bank, entries) landing this cycle
    i = cycles = issued = 0
    last: list[int] = []
    while True:
        cycles += 1
        issue = None
        if i < len(order):
            c, n = order[i]
            if all(cnt[b] <= 2 and not (land is not None and land[0] <= b < land[0] + rows)
                   for b in range(c, c + rows)):
                issue = (c, n)
        elif land is None and not any(cnt):
            return cycles, tuple(last[:G]), issued
        if cnt[C - 1]:
            last.append(cycles)
        cnt = [max(0, x - 1) for x in cnt]
        if land is not None:
            for b in range(land[0], land[0] + rows):
                cnt[b] = land[1]
        land = issue
        i += issue is not None
        if issue is not None and i == len(order):
            issued = cycles


#: cycles from the feeder's first cycle to the engine's first step: the feed (bank read, FIFO
#: write, FIFO output register)
FEED_LATENCY = 3
FEED_DEPTH = 4  #: beats each of the feeder's FIFOs (weights, activations) holds


def feed_steps(start: int, steps: int, n: int, captured: int, a_ready=None,
               w_ready=None) -> tuple[int, int]:
    """The engine's first and last step of a tile whose feeder starts in cycle ``start``: a
    weight beat per step and an activation beat per group of ``n`` steps, each read from its
    bank while its FIFO has room (beats read, less beats the engine took, below
    :data:`FEED_DEPTH`) and, with a watermark, not before the cycle after its bank entry was
    written (``a_ready[g]``: group ``g``'s activations; ``w_ready[e]``: weight entry ``e``, 4
    steps); the engine takes a step once its beats came through the FIFO
    (:data:`FEED_LATENCY` cycles after their read), not before ``captured`` for the first."""
    if a_ready is None and w_ready is None:  # beats a cycle from the start: no stall
        first = max(start + FEED_LATENCY, captured)
        return first, first + steps - 1
    D = FEED_DEPTH
    step = [0] * steps
    w_at = a_at = start - 1  # the previous beat's read
    for s in range(steps):
        w_at = max(w_at + 1, step[s - D] + 1 if s >= D else 0,
                   w_ready[s >> 2] + 1 if w_ready is not None else 0)
        t = max(step[s - 1] + 1 if s else captured, w_at + FEED_LATENCY)
        if s % n == 0:
            g = s // n
            a_at = max(a_at + 1, step[(g - D) * n] + 1 if g >= D else 0,
                       a_ready[g] + 1 if a_ready is not None else 0)
            t = max(t, a_at + FEED_LATENCY)
        step[s] = t
    return step[0], step[-1]


class _SoftmaxRows:
    """EngineOps' softmax rows cycle by cycle on the kernel's count, token block after token
    block: a feed reads a beat of the score and mask banks per cycle into a 4-entry FIFO
    (``SyncFIFOBuffered``) while there is room, each row once its scores are written
    (``ready``), the unit takes a ``cmd`` per row (:class:`sw.perf.vector.RowControl`), and
    the drain writes each output beat in a cycle per ``spm_lanes`` words it spans from its
    first byte's place in its word, taking the next beat in the last of them. A block's rows
    go in once the block before has fed its last beat and had its last ``cmd`` taken
    (:meth:`feed`, from the cycle after :attr:`fed`), while the drain still writes that
    block's rows (one unit, rows in order)."""

    def __init__(self, cfg: AcceleratorConfig, t: int):
        from sw.perf.vector import RowControl

        self.P, self.port = cfg.softmax_lanes, 4 * cfg.spm_lanes
        self.unit = RowControl.softmax(cfg.softmax_ring)
        self.t = t  # the cycle the next step runs
        # the block being fed: its rows, beats a row, the cycle each row may be read from
        self.n = self.nb = 0
        self.ready: tuple = ()
        self.f_c = self.kb = self.cm_c = 0  # feed: row, beat; cmds taken
        self.pend = self.rrdy = False  # a bank read in flight; the FIFO's output register
        self.inner = 0  # the FIFO's other entries
        # drain: (byte in its word, length, whether it is its block's last) of each row still
        # to write, the next output beat's place in the first of them
        self.rows: list[tuple[int, int, bool]] = []
        self.d_beat = 0
        self.held = 0  # write cycles left of the held beat
        self.held_end = False  # the held beat is a block's last

    @property
    def fed(self) -> bool:
        """The block's rows are all in the feed and their ``cmd`` taken."""
        return self.f_c == self.n and self.cm_c == self.n

    def feed(self, length: int, offsets: tuple, ready: tuple) -> None:
        """The next block from this cycle on: rows of ``length`` scores whose probabilities
        go to byte ``offsets[r] (mod 4)`` of a scratchpad word, row ``r`` readable from cycle
        ``ready[r]``."""
        self.n, self.nb, self.ready = len(offsets), -(-length // self.P), ready
        self.f_c = self.kb = self.cm_c = 0
        self.rows += [(o, length, r == len(offsets) - 1) for r, o in enumerate(offsets)]

    def step(self) -> bool:
        """One cycle; whether it wrote a block's last beat (its last write)."""
        P, t = self.P, self.t
        s_go = (self.f_c < self.n and self.inner + self.rrdy + self.pend < 4
                and self.ready[self.f_c] <= t)
        beat_done = self.held == 1
        cmd_take, i_take, o_take = self.unit.cycle(self.cm_c < self.n, self.nb, self.rrdy,
                                                   self.held == 0 or beat_done)
        ended = beat_done and self.held_end
        inner_read = self.inner > 0 and (not self.rrdy or i_take)
        self.inner += self.pend - inner_read
        self.rrdy = inner_read or (self.rrdy and not i_take)
        self.pend = s_go
        if s_go:
            self.kb += 1
            if self.kb == self.nb:
                self.kb, self.f_c = 0, self.f_c + 1
        self.cm_c += cmd_take
        self.held = max(0, self.held - 1)
        if o_take:
            off, length, last = self.rows[0]
            nb, b = -(-length // P), self.d_beat
            self.held = -(-((off + b * P) % 4 + min(P, length - b * P)) // self.port)
            self.held_end = last and b == nb - 1
            self.d_beat += 1
            if self.d_beat == nb:
                self.rows.pop(0)
                self.d_beat = 0
        self.t += 1
        return ended


def _softmax_block(cfg: AcceleratorConfig, state: KernelState, hand: int, length: int,
                   offsets: tuple, ready: tuple) -> None:
    """A token block's softmax rows handed at SM_HAND's cycle ``hand`` (hand_go; all cycles on
    the kernel's count): they start in the next cycle when no rows run (or the running ones
    write their last beat in it), else they wait in the pending slot and go in from the
    cycle after the one in which the running rows are fed (:attr:`_SoftmaxRows.fed`), the
    slot taking them the cycle after SM_HAND. Updates ``state``'s ``sm_fed`` / ``sm_end``
    (and moves the last block's to ``sm_prev_*``)."""
    if state.sm_rows is None or state.sm_end <= hand + 1:
        sim, start = _SoftmaxRows(cfg, hand + 1), hand + 1
    else:  # from the snapshot taken when the running rows were fed
        sim = copy.deepcopy(state.sm_rows)
        start = max(hand + 1, sim.t) + 1
    while sim.t < start:
        sim.step()
    sim.feed(length, offsets, ready)
    snap = fed = None
    while True:
        if snap is None and sim.fed:
            fed, snap = sim.t, copy.deepcopy(sim)
        if sim.step() and not sim.rows:
            break
    state.sm_prev_end, state.sm_prev_fed = state.sm_end, state.sm_fed
    state.sm_end, state.sm_fed, state.sm_rows, state.sm_in = sim.t, fed + 1, snap, start


def _vector_params(cmd: Command, cfg: AcceleratorConfig) -> int:
    """A vector command's cycles from VEC_START to its last parameter (the stream may start
    in the cycle after it)."""
    a = cmd.args
    if cmd.op == Op.ADD:
        return 0
    if cmd.op == Op.GELU:  # its 64-word table, one word and then its 4 bytes per 5 cycles
        return _consume(a["table_off"], 64, lambda i: 4, read_gap(cfg)) + 4
    if cfg.wide_ln_params:  # the records through the weight port (one or a beat a cycle)
        return _records(a["params_off"], a["hidden"], cfg)
    # 4 words a record, then its load beat
    return _consume(a["params_off"], 4 * a["hidden"], lambda i: int(i % 4 == 3),
                    read_gap(cfg)) + 1


def _vector_stream(cmd: Command, cfg: AcceleratorConfig, wo: _WriteOut | None = None,
                   t0: int = 0) -> int:
    """A vector command's stream (:func:`sw.perf.vector_ops.stream_cycles`; beside ``wo``
    from cycle ``t0`` on, :func:`~sw.perf.vector_ops.stream_beside`)."""
    a = cmd.args
    P, L = cfg.vector_lanes, cfg.spm_lanes
    run = stream_cycles if wo is None else functools.partial(stream_beside, wo=wo, t0=t0)
    if cmd.op == Op.ADD:
        return run("add", P, a["tokens"], a["width"], a["a"], a["b"], a["out"], a["a_bits"],
                   a["b_bits"], a["out_bits"], L)
    if cmd.op == Op.GELU:
        return run("gelu", P, a["tokens"], a["width"], a["src"], 0, a["dst"], 8, 8, 8, L)
    if cmd.op == Op.ADD_LAYERNORM:  # both operands gathered as ADD's, the sums into the unit
        return run("add_layernorm", P, a["tokens"], a["hidden"], a["a"], a["b"], a["dst"],
                   a["a_bits"], a["b_bits"], 8, L, cfg.layernorm_ring, a["in_bits"])
    return run("layernorm", P, a["tokens"], a["hidden"], a["src"], 0, a["dst"], a["in_bits"],
               8, 8, L, cfg.layernorm_ring)


def command_cycles(cmd: Command, config: AcceleratorConfig, index: int = 0,
                   state: KernelState | None = None) -> int:
    """Cycles of one command in the kernel, from the cycle that fetches it to the one that
    fetches the next; ``index``: its position in the Program (:func:`fetch_cycles`);
    ``state``: what the commands before it left (updated; a fresh kernel without it).
    :func:`command_costs` gives a Program's, in order."""
    if state is None:
        state = KernelState()
    cycles = _command(cmd, config, index, state)
    state.now += cycles
    return cycles


def _check_wait(cmd: Command, config: AcceleratorConfig, index: int,
                state: KernelState) -> tuple[int, int, str | None]:
    """``(fetch, wait, what)``: the command's fetch cycles up to and including CHECK's first,
    the cycles CHECK then holds, and what it waits for, the later of what is pending:
    ``"softmax rows"`` (the last QK_SOFTMAX's rows, or the rows before them), ``"scores"``
    (a PV beside those rows: the last QK_SOFTMAX's scores, its tiles' results), ``"results"``
    (the last PV's or LINEAR's going out), or ``None`` (no wait)."""
    fetch = fetch_cycles(index, config)
    if _beside(cmd, state):
        sm, sm_what = -1, None
    elif _pv_beside_sm(cmd, state):
        scores = state.sm_scored >= state.sm_prev_end
        sm = max(state.sm_scored, state.sm_prev_end)
        sm_what = "scores" if scores else "softmax rows"
    else:
        sm, sm_what = state.sm_end, "softmax rows"
    vec = cmd.op in (Op.GELU, Op.ADD, Op.LAYERNORM, Op.ADD_LAYERNORM)
    wo = -1 if _pv_beside(cmd, state) or vec else state.wo_end
    wait = max(0, max(sm, wo) - (state.now + fetch - 1))
    if not wait:
        return fetch, 0, None
    return fetch, wait, sm_what if sm >= wo else "results"


def _fetch(cmd: Command, config: AcceleratorConfig, index: int, state: KernelState) -> int:
    """The command's cycles up to and including CHECK (the fetch's last cycle), which holds
    while the last QK_SOFTMAX's softmax rows run, or the last PV's or LINEAR's results go
    out, unless the command starts beside them (a vector command beside results: its stream
    keeps off them, :func:`vector_stream_start`)."""
    fetch, wait, _ = _check_wait(cmd, config, index, state)
    return fetch + wait


def vector_stream_start(cmd: Command, config: AcceleratorConfig, index: int,
                        state: KernelState) -> tuple[int, _WriteOut | None]:
    """A vector command's stream's first cycle (two after its last parameter; on ``state``'s
    count, ``index`` its position in the Program) and the results' write-out it starts
    beside (``None``: they are all written before it). Beside them, it gathers and scatters
    none of the bytes they may still write (as the kernel registers them: a cycle late), and
    writes in the cycles the write-out does not."""
    # after the job is taken and ``running`` set: VECTOR_START's first two cycles
    start = (state.now + _fetch(cmd, config, index, state) + _vector_params(cmd, config)
             + VECTOR_START - 1)
    return start, state.wo_out if state.wo_end > start - 1 else None


def _command(cmd: Command, config: AcceleratorConfig, index: int, state: KernelState) -> int:
    a = cmd.args
    fetch = _fetch(cmd, config, index, state)
    if cmd.op == Op.END:
        return fetch - 1
    if cmd.op in (Op.LOAD, Op.STORE):
        # whole bus words from the buffer offset rounded down to one: the weight port's
        # beats with wide_load / wide_store, else the 32-bit master's words
        wide = config.wide_load if cmd.op == Op.LOAD else config.wide_store
        beat, burst = ((config.weight_port_bytes, config.weight_port_burst) if wide
                       else (4, MAX_BURST))
        off = a["src"] if cmd.op == Op.LOAD else a["dst"]
        start, n = off - off % beat, -(-(off % beat + a["bytes"]) // beat)
        if cmd.op == Op.LOAD:
            return fetch + read_cycles(start, n, beat, burst, gap=read_gap(config)) + 1
        return fetch + 4 + sum(4 + b for b in bursts(start, n, beat, burst))
    if cmd.op != state.wo_op:  # (it started once every result was out)
        state.wo_results = None
    if cmd.op in (Op.LINEAR, Op.QK_SOFTMAX, Op.PV):
        return fetch + _engine(cmd, config, state, state.now + fetch) + 1
    # VEC_START, its parameters, the stream beside the results still going out, if any
    # (and the cycle after ``done``: VECTOR_START's last)
    start, wo = vector_stream_start(cmd, config, index, state)
    return start - state.now + _vector_stream(cmd, config, wo, start) + 1


class _WriteOut:
    """A LINEAR's or PV's results going out beside a vector command, as the kernel's top sees
    EngineOps' write-out cycle by cycle (``wo_busy``, ``wo_tail``, ``wo_lim``, ``wo_writing``),
    for :func:`sw.perf.vector_ops.stream_beside`: ``results``, the command's last chunk's
    (:class:`_Results`, run to the end, on the count of cycle ``base``; a vector command
    beside them never delays them: its writes wait for theirs), ``res``, the bytes they may
    write, ``lim`` and ``stride``, the last tile's first byte and output stride."""

    def __init__(self, results: _Results, base: int, res: tuple[int, int], lim: int,
                 stride: int):
        self.writes = [base + w for w in results.writes]
        self.wcyc = {base + w for w in results.wcyc}
        self.total, self.C = len(results.writes), results.C
        self.res, self.lim, self.stride = res, lim, stride

    def signals(self, t: int) -> tuple[tuple[int, int], bool]:
        """Cycle ``t``'s bytes that may still be written (``[lo, hi)``; ``(0, 0)`` once they
        are all written) and whether the write-out writes in it."""
        n = bisect.bisect_left(self.writes, t)  # beats written before
        if n >= self.total:
            return (0, 0), False
        tail = n >= self.total - self.C  # only the last tile's beats are left
        lo = self.lim + self.stride * (n - self.total + self.C) if tail else self.res[0]
        return (lo, self.res[1]), t in self.wcyc


def command_costs(commands, config: AcceleratorConfig) -> list[int]:
    """:func:`command_cycles` of each of a Program's ``commands``, run in order from the
    kernel's start."""
    state = KernelState()
    return [command_cycles(c, config, i, state) for i, c in enumerate(commands)]


def command_timeline(commands, config: AcceleratorConfig) -> list[dict]:
    """A Program's commands as the kernel runs them, one dict each: ``index``, ``op``,
    ``start`` (the CYCLES register at the cycle its fetch starts), ``cycles``
    (:func:`command_costs`: to the next command's fetch), ``wait`` and ``waited_for``: the
    cycles its CHECK holds for the work of the commands before it (``"softmax rows"``,
    ``"scores"`` or ``"results"``, ``None`` without a wait: :func:`_check_wait`), and
    ``unit`` / ``busy``: its share of :func:`busy_cycles` (:func:`unit_cycles`). Commands
    overlap (a LINEAR's last tiles and write-out run on into the next commands, which wait
    for them there), so a command's ``cycles`` can be fewer than its own ``busy`` and the
    next one's more."""
    commands = list(commands)
    state = KernelState()
    t = header_cycles(config)
    out = []
    for i, (cmd, (unit, busy)) in enumerate(zip(commands, unit_cycles(commands, config),
                                                strict=True)):
        _, wait, what = _check_wait(cmd, config, i, state)
        cycles = command_cycles(cmd, config, i, state)
        out.append({"index": i, "op": cmd.op.name, "start": t, "cycles": cycles, "wait": wait,
                    "waited_for": what, "unit": unit, "busy": busy})
        t += cycles
    return out


def program_cycles(commands, config: AcceleratorConfig) -> int:
    """The kernel's cycle counter (the CYCLES register) at ap_done for a Program that runs
    ``commands`` (ending with END) without a fault."""
    return header_cycles(config) + sum(command_costs(commands, config))


def busy_cycles(commands, config: AcceleratorConfig) -> dict[str, int]:
    """The cycles the units whose work is serial at batch 1 are busy with a Program: the
    PE array (``array``: its tiles, ``G n`` steps for a LINEAR, ``G M`` for QK_SOFTMAX and
    PV, times the row blocks of ``R`` and token blocks of ``C``, padding included, one after
    another as the engine runs them: a tile's sums wait for the ``C`` output beats of the
    tile before, so a tile of fewer than ``C`` steps still takes ``C`` cycles, as QK's 64
    channels do on a 128-column array: :func:`sw.perf.engine.engine_cycles` of them less
    the last tile's capture latency and drain, which may run beside the next unit), the
    LayerNorm / residual / GELU lanes (``vector``: ``ceil(width / P)`` beats a token row)
    and the device-memory port (``io``: LOAD's and STORE's bus beats); ``total``, their sum;
    ``array_by_op``, the array's cycles by opcode (each tile's share: the cycles from the
    tile before's last output beat to its own; the first tile's, its steps).

    The softmax unit is left out: its rows run beside the next heads' QK (or a PV) already. Each
    of the others waits for the whole output of the command before it (a LINEAR's first tile
    needs every token of its block; a LayerNorm row every channel of its token), so no schedule
    of this Program on these units takes fewer than ``total`` cycles, whatever it overlaps of
    the fetch, operand staging, weight and parameter loads, pipeline fill and write-out (a
    sequence longer than ``pe_cols`` could start a LINEAR on its first token block while a
    LayerNorm finishes the rest; the figure ignores that)."""
    commands = list(commands)
    busy = {"array": 0, "vector": 0, "io": 0}
    by_op: dict[str, int] = {}
    for cmd, (unit, cycles) in zip(commands, unit_cycles(commands, config), strict=True):
        if unit is not None:
            busy[unit] += cycles
        if unit == "array":
            by_op[cmd.op.name] = by_op.get(cmd.op.name, 0) + cycles
    busy["total"] = sum(busy.values())
    busy["array_by_op"] = by_op
    return busy


def unit_cycles(commands, config: AcceleratorConfig) -> list[tuple[str | None, int]]:
    """Each command's share of :func:`busy_cycles`: ``(unit, cycles)``, the unit ``"array"``
    (the cycles from the tile before's last output beat to each of its tiles' own, the
    Program's first tile its steps, the last tile to its capture), ``"vector"``, ``"io"``,
    or ``None`` (END: no unit)."""
    R, C, M, P = config.pe_rows, config.pe_cols, config.m, config.vector_lanes
    out: list[tuple[str | None, int]] = []
    steps: list[int] = []  # every tile's steps, in the Program's order
    owner: list[int] = []  # and its command's index
    for i, cmd in enumerate(commands):
        a = cmd.args
        if cmd.op == Op.LINEAR:
            tokens, k, rows, n = a["tokens"], a["k"], a["rows"], a["n"]
        elif cmd.op == Op.QK_SOFTMAX:
            tokens, k, rows, n = a["tokens"], a["d"], a["tokens"], M
        elif cmd.op == Op.PV:
            tokens, k, rows, n = a["tokens"], a["tokens"], a["d"], M
        elif cmd.op in (Op.LAYERNORM, Op.ADD_LAYERNORM):
            out.append(("vector", a["tokens"] * -(-a["hidden"] // P)))
            continue
        elif cmd.op in (Op.ADD, Op.GELU):
            out.append(("vector", a["tokens"] * -(-a["width"] // P)))
            continue
        elif cmd.op in (Op.LOAD, Op.STORE):
            wide = config.wide_load if cmd.op == Op.LOAD else config.wide_store
            out.append(("io", -(-a["bytes"] // (config.weight_port_bytes if wide else 4))))
            continue
        else:
            out.append((None, 0))
            continue
        out.append(("array", 0))
        tiles = -(-rows // R) * -(-tokens // C)
        steps += [-(-k // M) * n] * tiles
        owner += [i] * tiles
    if steps:  # to the last tile's capture: its drain may run beside the next unit
        fill = (CAPTURE_LATENCY - 1) + C  # the last tile's capture and drain
        ends = [e - fill for e in tile_ends(config, steps)]
        for i, end, before in zip(owner, ends, [0] + ends[:-1], strict=True):
            out[i] = ("array", out[i][1] + end - before)
    return out
