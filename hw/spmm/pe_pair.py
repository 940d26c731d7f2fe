"""Two processing elements sharing one multiplier: WP486-style packing of two int8 MACs."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.lib.checks import refuse
from hw.spmm.index_mux import IndexMux, as_int9

__all__ = ["PackedPEPair"]

#: Bit position of the high operand in the packed multiplicand (the lo lane's field width).
SHIFT = 18


class PackedPEPair(wiring.Component):
    """Two :class:`~hw.spmm.pe.ProcessingElement` of one row, adjacent columns, one multiplier.

    Lane ``i`` (0: column ``2k``, 1: column ``2k + 1``) computes
    ``acc[i] <- (first ? 0 : acc[i]) + weight * acts[i][sel]``, exactly as a
    ``ProcessingElement`` would: same control, same two pipeline stages. Both lanes share the
    row's ``weight`` and ``sel`` (the same IndexMux select applied to each lane's activations).

    Packing (Xilinx WP486). With ``a_lo``, ``a_hi`` the two selected activations (bytes
    widened to signed 9 bits after the mux: int8, or uint8 with ``act_unsigned``), one
    multiplier computes ::

        P = weight * packed,   packed = a_hi * 2**18 + a_lo

    ``packed`` lies in ``[-2**26, 2**26)``: the 27-bit A port of a DSP48E2, ``weight`` on its
    18-bit B port. ``P = weight * a_hi * 2**18 + weight * a_lo``. Then

    * ``lo = P[0:18]`` read as signed is exactly ``weight * a_lo``: ``P`` and ``weight * a_lo``
      agree modulo ``2**18``, and ``|weight * a_lo| <= 128 * 255 < 2**15 < 2**17`` lies in the
      signed 18-bit range, where the residue has one representative.
    * ``hi = (P >> 18) + P[17]`` is exactly ``weight * a_hi``: the arithmetic shift floors,
      ``P >> 18 = weight * a_hi + floor(weight * a_lo / 2**18)``, and that floor is ``-1`` when
      ``weight * a_lo < 0`` (its sign bit, ``P[17]``, is set) and ``0`` otherwise, so adding
      ``P[17]`` back repays the borrow ``lo`` took from ``hi``.

    Parameters
    ----------
    m : int
        Group size M.
    width : int
        Bits of each lane's accumulator (default 32; the array passes ``config.sum_bits``).

    Ports
    -----
    en : In(1)
        Pipeline advance; nothing changes while low.
    weight : In(signed(8)), sel : In(range(m))
        Stage-1 operands shared by both lanes (registered by the array).
    acts : In(ArrayLayout(ArrayLayout(unsigned(8), m), 2))
        Stage-1 activation bytes of lane 0 (column ``2k``) and lane 1 (column ``2k + 1``).
    act_unsigned : In(1)
        Stage 1: the bytes are uint8 (softmax probabilities), not int8.
    accumulate : In(1), first : In(1)
        Stage-2 control: a product is in the multiply register; it starts a new tile.
    total : Out(ArrayLayout(signed(width), 2))
        Per lane ``(first ? 0 : acc) + product``: the sum the next enabled edge stores.
    acc : Out(ArrayLayout(signed(width), 2))

    Latency / throughput / resources
    --------------------------------
    Operands at cycle t reach the product register at the edge ending t and the accumulators
    one enabled edge later (2 cycles, as ``ProcessingElement``). One step per cycle. One
    int8 x int27 multiplier (one DSP48E2 with its P register), two M-to-1 muxes of 8 bits, a
    9-bit packing adder, a 17-bit borrow-correction adder, two ``width``-bit adders,
    35 + 2 * ``width`` flip-flops. No overflow, by the config's reduction bounds (see
    ``ProcessingElement``).
    """

    def __init__(self, *, m: int, width: int = 32):
        if m not in (4, 8, 16):
            refuse(self, f"PackedPEPair m must be 4, 8 or 16, got {m!r}")
        if not isinstance(width, int) or not 18 <= width <= 32:
            refuse(self, f"PackedPEPair width must be 18..32 bits, got {width!r}")
        self.m, self.width = m, width
        super().__init__({
            "en": In(1),
            "weight": In(signed(8)),
            "sel": In(range(m)),
            "acts": In(data.ArrayLayout(data.ArrayLayout(unsigned(8), m), 2)),
            "act_unsigned": In(1),
            "accumulate": In(1),
            "first": In(1),
            "total": Out(data.ArrayLayout(signed(width), 2)),
            "acc": Out(data.ArrayLayout(signed(width), 2)),
        })

    def elaborate(self, platform):
        mod = Module()
        mod.submodules.mux_lo = mux_lo = IndexMux(m=self.m)
        mod.submodules.mux_hi = mux_hi = IndexMux(m=self.m)
        packed = Signal(signed(27))
        prod = Signal(signed(8 + 27))  # the single multiply (one DSP48E2), registered
        lo = Signal(signed(SHIFT))
        hi = Signal(signed(17))
        mod.d.comb += [
            mux_lo.acts.eq(self.acts[0]),
            mux_hi.acts.eq(self.acts[1]),
            mux_lo.sel.eq(self.sel),
            mux_hi.sel.eq(self.sel),
            packed.eq(as_int9(mux_hi.out, self.act_unsigned) * 2**SHIFT
                      + as_int9(mux_lo.out, self.act_unsigned)),
            lo.eq(prod[:SHIFT].as_signed()),
            hi.eq((prod >> SHIFT) + prod[SHIFT - 1]),
        ]
        for lane, product in enumerate((lo, hi)):
            mod.d.comb += self.total[lane].eq(Mux(self.first, 0, self.acc[lane]) + product)
        with mod.If(self.en):
            mod.d.sync += prod.eq(self.weight * packed)
            with mod.If(self.accumulate):
                mod.d.sync += [self.acc[lane].eq(self.total[lane]) for lane in range(2)]
        return mod
