"""Hardware forms of the contract's fixed-point rules (see :mod:`sw.ref.fixedpoint`)."""

from __future__ import annotations

from amaranth import Mux, Signal, signed

__all__ = ["round_shift", "saturate"]


def round_shift(m, value, shift, *, name: str) -> Signal:
    """``floor((value + 2**(shift-1)) / 2**shift)`` (ties toward +inf), combinational.

    Computed as ``floor((floor(value / 2**(shift-1)) + 1) / 2)`` for ``shift > 0``: two shifts
    and an increment, no wide rounding-constant adder. ``shift`` may be a constant or a signal.
    """
    width = len(value) + 1
    out = Signal(signed(width), name=name)
    if isinstance(shift, int):
        if shift == 0:
            m.d.comb += out.eq(value)
        else:
            m.d.comb += out.eq(((value >> (shift - 1)) + 1) >> 1)
        return out
    pre = Signal(signed(width), name=f"{name}_pre")
    m.d.comb += [
        pre.eq(value >> (shift - 1)[: len(shift)]),
        out.eq(Mux(shift == 0, value, (pre + 1) >> 1)),
    ]
    return out


def saturate(m, value, lo: int, hi: int, shape, *, name: str) -> Signal:
    """``value`` clamped to ``[lo, hi]`` as a signal of ``shape``, combinational."""
    out = Signal(shape, name=name)
    with m.If(value > hi):
        m.d.comb += out.eq(hi)
    with m.Elif(value < lo):
        m.d.comb += out.eq(lo)
    with m.Else():
        m.d.comb += out.eq(value)
    return out
