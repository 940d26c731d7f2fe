"""M-to-1 activation select of one PE: picks the activation a stored weight's index names."""

from __future__ import annotations

from amaranth import Array, Cat, Module
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.lib.checks import refuse

__all__ = ["IndexMux", "as_int9"]


class IndexMux(wiring.Component):
    """Combinational M-to-1 select: ``out = acts[sel]``.

    Parameters
    ----------
    m : int
        Group size M (4, 8 or 16).
    width : int
        Bits of one activation (default 8: the raw byte, int8 or uint8; the PE widens the
        selected one, :func:`as_int9`).

    Ports
    -----
    acts : In(ArrayLayout(signed(width), m))
    sel : In(range(m))
    out : Out(signed(width))

    Latency / throughput / resources
    --------------------------------
    Combinational (0 cycles); ``width`` M-input multiplexers (log2(M) levels of 2:1).
    """

    def __init__(self, *, m: int, width: int = 8):
        if m not in (4, 8, 16):
            refuse(self, f"IndexMux m must be 4, 8 or 16, got {m!r}")
        if not isinstance(width, int) or width < 1:
            refuse(self, f"IndexMux width must be an int >= 1, got {width!r}")
        self.m, self.width = m, width
        super().__init__({
            "acts": In(data.ArrayLayout(width, m)),
            "sel": In(range(m)),
            "out": Out(width),
        })

    def elaborate(self, platform):
        mod = Module()
        mod.d.comb += self.out.eq(Array(self.acts[j] for j in range(self.m))[self.sel])
        return mod


def as_int9(byte, act_unsigned):
    """An activation byte as signed 9 bits: int8, or uint8 (softmax probabilities) when
    ``act_unsigned``. After the mux, so that the mux moves 8 bits, not 9."""
    return Cat(byte, byte[7] & ~act_unsigned).as_signed()
