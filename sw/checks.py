"""Argument checks shared by the commands: refuse bad input before any long work starts.

Each raises ``ValueError`` with the option's name and the bad value, which the commands print
as one line (``nmaccel: error: ...``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["count", "output_dir", "output_path", "finite", "selection", "tokens"]


def count(value, what: str, *, lo: int = 1) -> int:
    """An integer option of at least ``lo`` (rounds, passes, tiles, threads)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{what} must be an integer >= {lo}, got {value!r}")
    return value


def finite(value, what: str, *, lo: float = 0.0, strict: bool = False) -> float:
    """A finite number of at least ``lo`` (more than ``lo`` with ``strict``)."""
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (
        value > lo if strict else value >= lo)
    if not ok:
        raise ValueError(f"{what} must be a finite number {'>' if strict else '>='} {lo:g}, "
                         f"got {value!r}")
    return float(value)


def tokens(seq, what: str = "--seq", *, lo: int = 1, hi: int | None = None,
           why: str = "") -> int:
    """A sequence length in ``lo..hi`` (``why``: what sets the bounds, for the message)."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < lo or (
            hi is not None and seq > hi):
        bounds = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{what} {seq!r}: takes {bounds} tokens{f' ({why})' if why else ''}")
    return seq


def selection(items, what: str) -> list[str]:
    """A comma-separated selection (models, presets, backends): not empty, no repeats."""
    items = list(items)
    if not items:
        raise ValueError(f"{what}: nothing selected (an empty list)")
    repeated = sorted({i for i in items if items.count(i) > 1})
    if repeated:
        raise ValueError(f"{what}: {', '.join(map(str, repeated))} named twice")
    return items


def output_path(path, what: str = "--out") -> Path:
    """A file the command will write when it is done: not a directory, and under a directory
    that exists or can be made (its nearest existing ancestor is a writable directory)."""
    if not str(path):  # Path("") is "."
        raise ValueError(f"{what}: an empty path")
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{what} {p}: is a directory, not a file to write")
    _under_writable(p, what, "cannot be written")
    return p


def output_dir(path, what: str = "--out") -> Path:
    """A directory the command will make or fill when it is done: not an existing file, and
    under a directory that exists or can be made (as :func:`output_path`)."""
    if not str(path):
        raise ValueError(f"{what}: an empty path")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{what} {p}: exists and is not a directory")
    _under_writable(p, what, "cannot be made")
    return p


def _under_writable(p: Path, what: str, verb: str) -> None:
    """Refuse ``p`` unless its nearest existing ancestor is a writable directory."""
    up = p.parent
    while not up.exists() and up != up.parent:
        up = up.parent
    if not up.is_dir() or not os.access(up, os.W_OK):
        raise ValueError(f"{what} {p}: {verb} ({up} is not a writable directory)")
