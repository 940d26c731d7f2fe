"""Requantized output path of the spmm engine: int32 tile columns -> int8, per-channel params."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.lib.checks import require_config
from hw.vector.requant import SHIFT_BITS, Requantizer
from sw.ref.fixedpoint import MULT_BITS

__all__ = ["EngineRequant", "channel_params_layout"]


def channel_params_layout() -> data.StructLayout:
    """One output channel's requantizer parameters (see :func:`sw.ref.quant.requant_params`)."""
    return data.StructLayout({"bias": signed(32), "mult": unsigned(MULT_BITS),
                              "shift": unsigned(SHIFT_BITS)})


class EngineRequant(wiring.Component):
    """Requantizes the engine's output tiles with the tile's R channels' parameters.

    Parameters
    ----------
    config : AcceleratorConfig
        ``pe_rows`` (R lanes) and ``pe_cols`` (C beats per tile).

    Ports
    -----
    params : In(stream of ArrayLayout(channel_params_layout(), R))
        One beat per tile: bias, multiplier and shift of each of the tile's R channels.
    i : In(stream of ArrayLayout(signed(32), R))
        The engine's ``o``: C beats per tile.
    o : Out(stream of ArrayLayout(signed(8), R))
        int8 outputs, ``sw.ref.quant.requantize_int`` bit for bit.

    Latency / throughput / resources
    --------------------------------
    ``Requantizer.LATENCY`` (3) cycles, one beat per cycle; R requantizer lanes. A tile's
    params beat is taken with its first column, so params only need to arrive in time.
    """

    def __init__(self, *, config: AcceleratorConfig):
        require_config(self, config)
        self.config = config
        R = config.pe_rows
        super().__init__({
            "params": In(stream.Signature(data.ArrayLayout(channel_params_layout(), R))),
            "i": In(stream.Signature(data.ArrayLayout(signed(32), R))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(8), R))),
        })

    def elaborate(self, platform):
        m = Module()
        R, C = self.config.pe_rows, self.config.pe_cols
        m.submodules.requant = rq = Requantizer(lanes=R)
        held = Signal(data.ArrayLayout(channel_params_layout(), R))
        have = Signal()
        col = Signal(range(C))
        take = Signal()
        last_col = col == C - 1
        m.d.comb += [
            rq.i.valid.eq(self.i.valid & have),
            self.i.ready.eq(rq.i.ready & have),
            take.eq(self.i.valid & self.i.ready),
            self.params.ready.eq(~have | (take & last_col)),
        ]
        for r in range(R):
            m.d.comb += [
                rq.i.payload[r].acc.eq(self.i.payload[r]),
                rq.i.payload[r].bias.eq(held[r].bias),
                rq.i.payload[r].mult.eq(held[r].mult),
                rq.i.payload[r].shift.eq(held[r].shift),
            ]
        with m.If(take):
            m.d.sync += col.eq(Mux(last_col, 0, col + 1))
            with m.If(last_col):
                m.d.sync += have.eq(0)
        with m.If(self.params.valid & self.params.ready):
            m.d.sync += [held.eq(self.params.payload), have.eq(1)]
        wiring.connect(m, rq.o, wiring.flipped(self.o))
        return m
