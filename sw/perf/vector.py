"""Cycle models of the row-buffered vector units: softmax and LayerNorm. Exact, not fits.

Both units stream rows: an *ingest* stage takes a row's ``cmd`` (when it is free, or in the
cycle it takes the previous row's last beat) and then its ``nb = ceil(length / P)`` beats,
one per cycle, into a ring; the row's statistics go through a fixed-latency pipeline (softmax:
first a pass over the row through the exponent pipeline, then the sum register and the
divider; LayerNorm: variance, square root and divider) into a FIFO; an *output* stage reads
the row back through its datapath, stalling with the output. :class:`RowControl` follows this
control cycle by cycle (the kernel models drive it too, with the kernel's feed and drain).

Counting convention: from the edge that takes the first data beat to the edge that takes the
last output beat, with every input always valid and the output always ready. The constants
are the hardware's (``hw.vector.softmax.SoftmaxUnit``, ``hw.vector.layernorm.LayerNormUnit``;
a test keeps them equal) and the cocotb benches check every formula against the RTL.
"""

from __future__ import annotations

import functools
import math

from hw.config import AcceleratorConfig

__all__ = [
    "SOFTMAX_PIPE", "SOFTMAX_DIV_CYCLES", "SOFTMAX_OUT_DELAY", "ROWS", "RowControl",
    "LAYERNORM_PIPE", "LAYERNORM_VAR_CYCLES", "LAYERNORM_ROOT_CYCLES", "layernorm_div_cycles",
    "layernorm_out_delay",
    "check_lengths", "softmax_cycles", "layernorm_cycles",
]

#: softmax: exp pipeline (read, d, d*A, u, c0/c1*l, e) and the 16-bit reciprocal divider
#: (8 stages of 2 quotient bits); ingest, pass 1 (exp + sum), divider and pass 2 (scale) each
#: work on their own row; a lone row takes ``3 nb + SOFTMAX_OUT_DELAY``
SOFTMAX_PIPE = 6
SOFTMAX_DIV_CYCLES = 8  #: 16 reciprocal bits, 2 per stage
SOFTMAX_OUT_DELAY = SOFTMAX_PIPE + SOFTMAX_DIV_CYCLES + 5
ROWS = 16  #: rows (tokens) in a softmax or LayerNorm unit at most
#: LayerNorm: variance (3 cycles), square root (2 root bits per cycle), the reciprocal
#: divider (2 quotient bits per cycle of RECIP_BITS + 1 - sqrt_frac, i.e. 41 for int8 input,
#: 49 for int16), then
#: one pass through a 6-stage datapath (read, c, c * r in two partial products, their sum,
#: u * G + B, output)
LAYERNORM_PIPE = 6
LAYERNORM_VAR_CYCLES = 3
LAYERNORM_ROOT_CYCLES = 16  #: 31 root bits, 2 per cycle


def layernorm_div_cycles(in_bits: int = 8) -> int:
    """The reciprocal divider's cycles: its quotient bits, 2 per cycle."""
    from sw.ref.layernorm import RECIP_BITS, SQRT_FRAC

    return -(-(RECIP_BITS + 1 - (SQRT_FRAC if in_bits == 8 else 0)) // 2)


def layernorm_out_delay(in_bits: int = 8) -> int:
    """A lone token takes ``2 nb`` plus this from its first beat to its last output beat."""
    return (LAYERNORM_VAR_CYCLES + LAYERNORM_ROOT_CYCLES + layernorm_div_cycles(in_bits)
            + LAYERNORM_PIPE + 1)


def check_lengths(lengths, limit: int, what: str, config: AcceleratorConfig) -> list[int]:
    """Refuse a row the unit cannot hold (length outside 1..limit), naming it."""
    out = []
    for i, length in enumerate(lengths):
        if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= limit:
            raise ValueError(f"{what} {i} has length {length!r}; config {config.name!r} holds "
                             f"1..{limit}")
        out.append(length)
    return out


class RowControl:
    """A row unit's control cycle by cycle (:class:`hw.vector.softmax.SoftmaxUnit`,
    :class:`hw.vector.layernorm.LayerNormUnit`): :meth:`cycle` takes the ports' valid /
    ready of one cycle and returns which transfers happen in it. Data is not modelled; beats
    are counted per row.

    Parameters: ``ring`` (beats the unit holds), ``pass1`` (softmax: the exponent pipeline's
    stages of the pass that precedes the divider; LayerNorm: ``None``), ``fixed`` (stages from
    the end of ingest, or of pass 1, to the output FIFO), ``out_stages`` (registers from the
    output stage's read to ``o.valid``)."""

    def __init__(self, ring: int, pass1: int | None, fixed: int, out_stages: int):
        self.ring = ring
        self.held = 0  # beats in the ring (ingested, not yet read by the output stage)
        self.rows = 0  # rows in the unit (cmd taken, output reads not done)
        self.a = None  # ingest: beats left of its row (None: no row)
        self.a_nb = 0
        self.pass1 = pass1
        self.q1: list[int] = []  # softmax: rows for pass 1 (a FIFO write is readable a
        self.b = self.b_nb = 0  # cycle later); pass 1: beats left of its row, its nb
        self.pipe = [0] * (pass1 or 0)  # per stage: nb at a row's last beat, -1 other beats
        self.fixed = [0] * fixed  # per stage: the nb of a row there, or 0
        self.q2: list[int] = []
        self.c = 0  # output stage: beats left of its row
        self.out = [False] * out_stages  # the read, ..., the output register (o.valid)

    @classmethod
    def softmax(cls, ring: int) -> RowControl:
        """The softmax unit with a ``ring`` of ``config.softmax_ring`` beats."""
        # the sum register and the divider; read, e register, output register
        return cls(ring, SOFTMAX_PIPE, 1 + SOFTMAX_DIV_CYCLES, 3)

    @classmethod
    def layernorm(cls, ring: int, in_bits: int = 8) -> RowControl:
        """The LayerNorm unit with a ``ring`` of ``config.layernorm_ring`` beats."""
        # the statistics register, variance, square root, divider; the datapath
        fixed = (1 + LAYERNORM_VAR_CYCLES + LAYERNORM_ROOT_CYCLES
                 + layernorm_div_cycles(in_bits))
        return cls(ring, None, fixed, LAYERNORM_PIPE)

    @property
    def i_ready(self) -> bool:
        return self.a is not None and self.held < self.ring

    @property
    def o_valid(self) -> bool:
        return self.out[-1]

    def cycle(self, cmd_valid: bool, cmd_nb: int, i_valid: bool, o_ready: bool):
        """One cycle: ``(cmd taken, input beat taken, output beat taken)``."""
        i_take = self.i_ready and i_valid
        a_last = i_take and self.a == 1
        cmd_take = cmd_valid and (self.a is None or a_last) and self.rows < ROWS
        pop1 = self.b <= 1 and bool(self.q1)
        adv = not self.out[-1] or o_ready
        o_take = self.out[-1] and o_ready
        issue = self.c > 0 and adv
        done = issue and self.c == 1
        pop2 = (self.c == 0 or (adv and self.c == 1)) and bool(self.q2)
        if self.pass1 is None:
            enter = self.a_nb if a_last else 0
        else:
            enter = max(self.pipe[-1], 0)
            self.pipe = [self.b_nb if self.b == 1 else -1 if self.b else 0] + self.pipe[:-1]
            if pop1:
                self.b_nb = self.b = self.q1.pop(0)
            elif self.b:
                self.b -= 1
        if self.fixed[-1]:
            self.q2.append(self.fixed[-1])
        self.fixed = [enter] + self.fixed[:-1]
        if i_take:
            self.held += 1
            self.a -= 1
            if a_last:
                self.a = None
                if self.pass1 is not None:
                    self.q1.append(self.a_nb)
        if cmd_take:
            self.a, self.a_nb = cmd_nb, cmd_nb
        if pop2:
            self.c = self.q2.pop(0)
        elif issue:
            self.c -= 1
        self.held -= issue
        self.rows += cmd_take - done
        if adv:
            self.out = [issue] + self.out[:-1]
        return cmd_take, i_take, o_take


@functools.lru_cache(maxsize=1 << 10)
def _rows_cycles(make, nbs: tuple, *args) -> int:
    """From the edge that takes the first data beat to the one that takes the last output
    beat, every input always valid and the output always ready."""
    ctl = make(*args)
    cmds, beats, outs = list(nbs), sum(nbs), sum(nbs)
    first = last = None
    t = 0
    while outs:
        cmd_take, i_take, o_take = ctl.cycle(bool(cmds), cmds[0] if cmds else 0, beats > 0,
                                             True)
        if cmd_take:
            cmds.pop(0)
        if i_take:
            beats -= 1
            first = t if first is None else first
        if o_take:
            outs -= 1
            last = t
        t += 1
    return last - first


def softmax_cycles(config: AcceleratorConfig, lengths) -> int:
    """Cycles of softmax rows of the given lengths, the unit's inputs always valid and its
    output always ready: a row every ``nb`` cycles once the unit is full, a lone row
    ``3 nb + SOFTMAX_OUT_DELAY``."""
    lengths = check_lengths(lengths, config.max_row, "softmax row", config)
    P = config.softmax_lanes
    return _rows_cycles(RowControl.softmax, tuple(math.ceil(n / P) for n in lengths),
                        config.softmax_ring)


def layernorm_cycles(config: AcceleratorConfig, hiddens, in_bits: int = 8) -> int:
    """Cycles of LayerNorm tokens of the given hidden sizes, as :func:`softmax_cycles`: a
    token every ``nb`` cycles once the unit is full, a lone token ``2 nb`` plus
    :func:`layernorm_out_delay` (47 for int8 input, 51 for int16)."""
    hiddens = check_lengths(hiddens, config.max_hidden, "LayerNorm token", config)
    P = config.vector_lanes
    return _rows_cycles(RowControl.layernorm, tuple(math.ceil(n / P) for n in hiddens),
                        config.layernorm_ring, in_bits)
