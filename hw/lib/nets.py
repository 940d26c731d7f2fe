"""Naming an expression once, so that its many uses share one net."""

from __future__ import annotations

from amaranth import Signal, Value

__all__ = ["net"]


def net(m, value, name: str) -> Signal:
    """A signal driven by ``value`` (combinationally, in module ``m``), of its shape.

    Amaranth lowers an expression object into new cells at every statement that uses it: a
    variable shift of a 544-bit word read by 64 byte lanes of each of 32 rows was 2,048
    barrel shifters in the netlist (and in the Verilog Icarus simulates), and checking them
    for combinational cycles (quadratic in an operator's width) took minutes. Reading it
    through a signal builds it once; the logic is the same.
    """
    value = Value.cast(value)
    sig = Signal(value.shape(), name=name)
    m.d.comb += sig.eq(value)
    return sig
