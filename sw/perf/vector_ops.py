"""Cycle model of the kernel's vector datapath (:class:`hw.top.vector_ops.VectorOps`).

The datapath is a chain of small handshakes whose rates vary beat by beat with the operands'
alignment, so the model steps it cycle by cycle, register for register: the *gather* reads
per cycle the row's next elements within the scratchpad ports' ``spm_lanes`` words (of both
operands for ADD) up to the beat's and the row's end (a group of 1 to 4 ``spm_lanes``), into
a 4-entry buffered FIFO; the *pack* takes a group per cycle into the beat and offers the full
beat to the unit (the next beat's first group lands as the unit takes it); the unit
(GELU: one stage, ADD: two, LayerNorm: tokens streaming through
:class:`hw.vector.layernorm.LayerNormUnit`, :class:`sw.perf.vector.RowControl`; ADD_LAYERNORM:
the adder's two stages into the LayerNorm) passes it on with a global stall; the *scatter*
writes per cycle the held output beat's next elements within the port's words, takes the next
beat in the beat's last cycle. ``tests/test_sim_top.py`` checks the totals against the RTL's
cycle counter, cycle for cycle.
"""

from __future__ import annotations

import functools

from sw.perf.vector import RowControl

__all__ = ["stream_beside", "stream_cycles"]

FIFO_INNER = 3  #: amaranth SyncFIFOBuffered(depth=4): 3 memory entries and an output register


def _room(ptr: int, bits: int, lanes: int) -> int:
    """Elements from byte ``ptr`` to the end of the ``lanes`` scratchpad words from its own."""
    return (4 * lanes - ptr % 4) if bits == 8 else (2 * lanes - (ptr >> 1) % 2)


def _advance(row: int, el: int, lane: int, k: int, width: int, P: int):
    """(row, element, lane in the beat) after a group of ``k`` elements."""
    if k == width - el:
        return row + 1, 0, 0
    if k == P - lane:
        return row, el + k, 0
    return row, el + k, lane + k


class _Pipe:
    """GELU (``stages = 1``) or ADD (2): every stage advances when the output is free."""

    def __init__(self, stages: int):
        self.v = [False] * stages

    def in_ready(self, o_ready: bool) -> bool:
        return not self.v[-1] or o_ready

    @property
    def o_valid(self) -> bool:
        return self.v[-1]

    def step(self, i_valid: bool, o_ready: bool, cmd_valid: bool) -> bool:
        if not self.v[-1] or o_ready:
            self.v = [i_valid] + self.v[:-1]
        return False


class _Rows:
    """A row unit (LayerNorm: :class:`sw.perf.vector.RowControl`) behind this model's step
    interface; every token has ``nb`` beats."""

    def __init__(self, ctl: RowControl, nb: int):
        self.ctl, self.nb = ctl, nb

    def in_ready(self, o_ready: bool) -> bool:
        return self.ctl.i_ready

    @property
    def o_valid(self) -> bool:
        return self.ctl.o_valid

    def step(self, i_valid: bool, o_ready: bool, cmd_valid: bool) -> bool:
        return self.ctl.cycle(cmd_valid, self.nb, i_valid, o_ready)[0]


class _Chain:
    """ADD_LAYERNORM: the adder's stages (:class:`_Pipe`) whose output is the LayerNorm's
    input (:class:`_Rows`); both step on the state they start the cycle with."""

    def __init__(self, pipe: _Pipe, rows: _Rows):
        self.pipe, self.rows = pipe, rows

    def in_ready(self, o_ready: bool) -> bool:
        return self.pipe.in_ready(self.rows.in_ready(o_ready))

    @property
    def o_valid(self) -> bool:
        return self.rows.o_valid

    def step(self, i_valid: bool, o_ready: bool, cmd_valid: bool) -> bool:
        mid_ready, mid_valid = self.rows.in_ready(o_ready), self.pipe.o_valid
        self.pipe.step(i_valid, mid_ready, False)
        return self.rows.step(mid_valid, o_ready, cmd_valid)


@functools.lru_cache(maxsize=1 << 14)
def stream_cycles(op: str, P: int, tokens: int, width: int, a: int, b: int, out: int,
                  a_bits: int, b_bits: int, out_bits: int, lanes: int = 1,
                  ring: int = 0, ln_bits: int = 0) -> int:
    """Cycles from the first with the stream running to the one writing the last element
    (both counted) of ``tokens`` rows of ``width`` elements: ``op`` is ``gelu``, ``add``,
    ``layernorm`` (``a_bits``: its input width) or ``add_layernorm`` (``ln_bits``: the sum's
    width, the LayerNorm's input); ``ring``: the LayerNorm's ``config.layernorm_ring``; rows
    contiguous from byte addresses ``a``, ``b`` (ADD, ADD_LAYERNORM) and ``out``, through
    scratchpad ports ``lanes`` words wide."""
    return stream_beside(op, P, tokens, width, a, b, out, a_bits, b_bits, out_bits, lanes, ring,
                         ln_bits)


def stream_beside(op: str, P: int, tokens: int, width: int, a: int, b: int, out: int,
                  a_bits: int, b_bits: int, out_bits: int, lanes: int = 1, ring: int = 0,
                  ln_bits: int = 0, wo=None, t0: int = 0) -> int:
    """:func:`stream_cycles` beside the engine's results still going out (``wo``:
    ``sw.perf.top._WriteOut``; ``t0``: the stream's first cycle on its count). Each cycle
    the kernel registers the bytes they may still write (``wo.signals``): a group is
    gathered, and a beat's elements scattered, only where the ``4 lanes`` bytes from their
    first one are all outside that range as registered the cycle before; the scatter waits
    for the write-out's writes."""
    span = 4 * lanes
    rng = wo.signals(t0 - 1)[0] if wo is not None else (0, 0)

    def clear(ptr: int) -> bool:
        return ptr + span <= rng[0] or ptr >= rng[1]

    is_add = op in ("add", "add_layernorm")
    nb = -(-width // P)
    unit = (_Pipe(1) if op == "gelu" else _Pipe(2) if op == "add"
            else _Rows(RowControl.layernorm(ring, a_bits), nb) if op == "layernorm"
            else _Chain(_Pipe(2), _Rows(RowControl.layernorm(ring, ln_bits), nb)))
    # gather
    g_row = g_el = g_lane = 0
    a_ptr, b_ptr = a, b
    pend = None  # (k, last) landing in the FIFO this cycle
    inner: list[bool] = []  # FIFO entries: the group's `last`
    r_rdy, r_last = False, False
    # pack
    beat_valid = False
    # scatter
    held = False
    o_el = o_lane = o_row = 0
    o_ptr = out
    cmds = 0
    cycle = 0
    while True:
        cycle += 1
        # -- combinational -------------------------------------------------------------------
        level = len(inner) + r_rdy
        if wo is not None:
            wo_rng, wo_writing = wo.signals(t0 + cycle - 1)
        issue = (g_row < tokens and level + (pend is not None) < 4 and clear(a_ptr)
                 and (not is_add or clear(b_ptr)))
        if issue:
            k = min(_room(a_ptr, a_bits, lanes), _room(b_ptr, b_bits, lanes) if is_add
                    else 4 * lanes, width - g_el, P - g_lane)
        last_write = w_ok = False
        if held:
            ok = min(_room(o_ptr, out_bits, lanes), width - o_el, P - o_lane)
            row_end = ok == width - o_el
            beat_end = row_end or ok == P - o_lane
            w_ok = clear(o_ptr) and (wo is None or not wo_writing)
            last_write = w_ok and row_end and o_row == tokens - 1
            take_o = w_ok and beat_end and not last_write
        else:
            take_o = True
        i_ready = unit.in_ready(take_o)
        taken = beat_valid and i_ready
        r_en = not beat_valid or taken  # the next beat's first group as the unit takes one
        consume = r_rdy and r_en
        o_taken = take_o and unit.o_valid
        # -- registers -----------------------------------------------------------------------
        if wo is not None:  # the range the kernel registers for the next cycle
            rng = wo_rng
        if last_write:
            return cycle
        if w_ok:
            o_ptr += ok * (out_bits // 8)
            o_row, o_el, o_lane = _advance(o_row, o_el, o_lane, ok, width, P)
            held = not take_o
        if o_taken:
            held = True
        if op in ("layernorm", "add_layernorm"):
            cmd_valid = cmds < tokens
        else:
            cmd_valid = False
        if unit.step(taken, take_o, cmd_valid):
            cmds += 1
        # pack
        if taken:
            beat_valid = False
        if consume and r_last:
            beat_valid = True
        # FIFO: the landing group is written; the output register refills from the memory
        do_inner_read = bool(inner) and (not r_rdy or r_en)
        if do_inner_read:
            new_last = inner.pop(0)
        if pend is not None:
            assert len(inner) < FIFO_INNER, "the gather never overfills the FIFO"
            inner.append(pend)
        if do_inner_read:
            r_rdy, r_last = True, new_last
        elif r_en:
            r_rdy = False
        # gather
        pend = None
        if issue:
            row_end_g = k == width - g_el
            pend = row_end_g or k == P - g_lane
            a_ptr += k * (a_bits // 8)
            b_ptr += k * (b_bits // 8)
            g_row, g_el, g_lane = _advance(g_row, g_el, g_lane, k, width, P)
