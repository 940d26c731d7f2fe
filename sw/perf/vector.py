"""Cycle models of the row-buffered vector units: softmax and LayerNorm. Exact, not fits.

Both units have the same shape: an *ingest* stage takes a row's ``cmd`` and then its
``nb = ceil(length / P)`` beats, one per cycle, into one of two on-chip banks, and hands the
row over one cycle after its last beat as soon as the *normalise* stage is free (taking the
next ``cmd`` in that cycle). From the hand-over edge the normalise stage takes
``passes * nb + out_delay`` cycles to the edge that takes the row's last output beat, and
``passes * nb + out_delay + 2`` to the next hand-over.

Counting convention: from the edge that takes the first data beat to the edge that takes the
last output beat, with every input always valid and the output always ready. The constants
are the hardware's (``hw.vector.softmax.SoftmaxUnit``, ``hw.vector.layernorm.LayerNormUnit``;
a test keeps them equal) and the cocotb benches check every formula against the RTL.
"""

from __future__ import annotations

import math

from hw.config import AcceleratorConfig

__all__ = [
    "SOFTMAX_PIPE", "SOFTMAX_DIV_CYCLES", "SOFTMAX_OUT_DELAY",
    "LAYERNORM_PIPE", "LAYERNORM_VAR_CYCLES", "LAYERNORM_ROOT_CYCLES", "layernorm_div_cycles",
    "layernorm_out_delay",
    "check_lengths", "softmax_cycles", "layernorm_cycles",
]

#: softmax: exp pipeline (read, d, d*A, u, c0/c1*l, e) and the 16-bit reciprocal divider
#: (radix 4); two passes over the row (exp + sum, then exp + scale) around the divider
SOFTMAX_PIPE = 6
SOFTMAX_DIV_CYCLES = 8  #: 16 reciprocal bits, 2 per cycle
SOFTMAX_OUT_DELAY = 2 * SOFTMAX_PIPE + SOFTMAX_DIV_CYCLES + 2
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
    return (LAYERNORM_VAR_CYCLES + LAYERNORM_ROOT_CYCLES + layernorm_div_cycles(in_bits)
            + LAYERNORM_PIPE)


def check_lengths(lengths, limit: int, what: str, config: AcceleratorConfig) -> list[int]:
    """Refuse a row the unit cannot hold (length outside 1..limit), naming it."""
    out = []
    for i, length in enumerate(lengths):
        if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= limit:
            raise ValueError(f"{what} {i} has length {length!r}; config {config.name!r} holds "
                             f"1..{limit}")
        out.append(length)
    return out


def _rows_cycles(nbs: list[int], passes: int, out_delay: int) -> int:
    if not nbs:
        return 0
    cmd = -1  # the first cmd is taken the edge before the first data beat (edge 0)
    free = -math.inf  # earliest hand-over edge of the normalise stage
    last_out = 0
    for nb in nbs:
        handover = max(cmd + nb + 1, free)
        last_out = handover + passes * nb + out_delay
        free = last_out + 2
        cmd = handover
    return int(last_out)


def softmax_cycles(config: AcceleratorConfig, lengths) -> int:
    """Cycles of softmax rows of the given lengths (steady state: ``2 nb + 24`` per row)."""
    lengths = check_lengths(lengths, config.max_row, "softmax row", config)
    P = config.softmax_lanes
    return _rows_cycles([math.ceil(n / P) for n in lengths], 2, SOFTMAX_OUT_DELAY)


def layernorm_cycles(config: AcceleratorConfig, hiddens, in_bits: int = 8) -> int:
    """Cycles of LayerNorm tokens of the given hidden sizes (steady state ``nb + 48`` for int8
    input, ``nb + 52`` for int16)."""
    hiddens = check_lengths(hiddens, config.max_hidden, "LayerNorm token", config)
    P = config.vector_lanes
    return _rows_cycles([math.ceil(n / P) for n in hiddens], 1, layernorm_out_delay(in_bits))
