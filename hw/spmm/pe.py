"""One processing element of the spmm engine: select, multiply, accumulate (output-stationary)."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.lib.checks import refuse
from hw.spmm.index_mux import IndexMux, as_int9

__all__ = ["ProcessingElement"]


class ProcessingElement(wiring.Component):
    """``acc <- (first ? 0 : acc) + weight * acts[sel]``, two pipeline stages.

    The array drives every PE with the same control (they run in lock-step); only ``weight``
    and ``sel`` (from the PE's row) and ``acts`` (from its column) differ.

    Parameters
    ----------
    m : int
        Group size M.
    width : int
        Bits of the accumulator (default 32); the array passes ``config.sum_bits``, the
        fewest that hold every sum its reductions can form.

    Ports
    -----
    en : In(1)
        Pipeline advance; nothing changes while low.
    weight : In(signed(8)), sel : In(range(m)), acts : In(ArrayLayout(unsigned(8), m))
        Stage-1 operands (registered by the array): the activations as raw bytes.
    act_unsigned : In(1)
        Stage 1: the bytes are uint8 (softmax probabilities), not int8.
    accumulate : In(1), first : In(1)
        Stage-2 control: a product is in the multiply register; it starts a new tile.
    total : Out(signed(width))
        ``(first ? 0 : acc) + product``: the sum the next enabled edge stores (the array
        captures it into its shadow buffer on a tile's last step).
    acc : Out(signed(width))

    Latency / throughput / resources
    --------------------------------
    Operands at cycle t reach the product register at the edge ending t and the accumulator
    one enabled edge later (2 cycles). One step per cycle. One int8 x int9 multiplier, an
    M-to-1 mux of 8 bits (the selected byte widened to 9 after it), a ``width``-bit adder,
    17 + ``width`` flip-flops. No overflow: the
    config bounds reductions so that ``K * 2**14`` (int8 x int8, ``K <= max_k``) and
    ``K * 255 * 128`` (uint8 probabilities, ``K <= max_row``) fit ``config.sum_bits`` (and
    int32).
    """

    def __init__(self, *, m: int, width: int = 32):
        if m not in (4, 8, 16):
            refuse(self, f"ProcessingElement m must be 4, 8 or 16, got {m!r}")
        if not isinstance(width, int) or not 18 <= width <= 32:
            refuse(self, f"ProcessingElement width must be 18..32 bits, got {width!r}")
        self.m, self.width = m, width
        super().__init__({
            "en": In(1),
            "weight": In(signed(8)),
            "sel": In(range(m)),
            "acts": In(data.ArrayLayout(unsigned(8), m)),
            "act_unsigned": In(1),
            "accumulate": In(1),
            "first": In(1),
            "total": Out(signed(width)),
            "acc": Out(signed(width)),
        })

    def elaborate(self, platform):
        mod = Module()
        mod.submodules.mux = mux = IndexMux(m=self.m)
        prod = Signal(signed(17))
        mod.d.comb += [
            mux.acts.eq(self.acts),
            mux.sel.eq(self.sel),
            self.total.eq(Mux(self.first, 0, self.acc) + prod),
        ]
        with mod.If(self.en):
            mod.d.sync += prod.eq(self.weight * as_int9(mux.out, self.act_unsigned))
            with mod.If(self.accumulate):
                mod.d.sync += self.acc.eq(self.total)
        return mod
