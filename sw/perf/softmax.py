"""Cycle model of the softmax unit (:class:`hw.vector.softmax.SoftmaxUnit`): exact.

Counting convention: from the rising edge that takes the first score beat to the edge that
takes the last output beat, with ``cmd`` and scores always valid and the output always ready.
"""

from __future__ import annotations

import math

from hw.config import AcceleratorConfig

__all__ = ["PIPE", "DIV_CYCLES", "OUT_DELAY", "ROW_OVERHEAD", "check_rows", "softmax_cycles"]

#: exp pipeline stages (read, d, d*A, u -> c0/c1*l, e) and divider steps (16 quotient bits)
PIPE = 5
DIV_CYCLES = 16
OUT_DELAY = 2 * PIPE + DIV_CYCLES + 2  # hand-over -> last output beat taken, minus 2*nb
ROW_OVERHEAD = OUT_DELAY + 2  # hand-over -> next hand-over, minus 2*nb


def check_rows(config: AcceleratorConfig, lengths) -> list[int]:
    """Refuse a row the unit cannot hold (length outside 1..max_row), naming it."""
    out = []
    for i, length in enumerate(lengths):
        if not isinstance(length, int) or not 1 <= length <= config.max_row:
            raise ValueError(f"softmax row {i} has length {length!r}; config {config.name!r} "
                             f"holds rows of 1..{config.max_row}")
        out.append(length)
    return out


def softmax_cycles(config: AcceleratorConfig, lengths) -> int:
    """Cycles of a sequence of rows of the given lengths (see module docstring)."""
    lengths = check_rows(config, lengths)
    if not lengths:
        return 0
    P = config.softmax_lanes
    cmd = -1  # the first cmd is taken the edge before the first score beat (edge 0)
    free = -math.inf  # earliest hand-over edge for the normalise stage
    last_out = 0
    for length in lengths:
        nb = math.ceil(length / P)
        handover = max(cmd + nb + 1, free)
        last_out = handover + 2 * nb + OUT_DELAY
        free = handover + 2 * nb + ROW_OVERHEAD
        cmd = handover  # the next cmd is taken with the hand-over
    return last_out
