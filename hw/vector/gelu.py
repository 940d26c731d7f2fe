"""GELU unit: a programmable 256-entry int8 table per lane (see :mod:`sw.ref.gelu`)."""

from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.lib.checks import require_config

__all__ = ["GeluUnit"]


class GeluUnit(wiring.Component):
    """``y = TABLE[x + 128]`` on ``vector_lanes`` int8 values per beat.

    The host loads the table that :func:`sw.ref.gelu.gelu_params` builds for the layer's
    scales (256 writes on ``load``, entry ``addr`` = ``x + 128``); the unit then reproduces
    :func:`sw.ref.gelu.gelu_int` exactly. Writes take effect for beats taken after them.

    Parameters
    ----------
    config : AcceleratorConfig
        ``vector_lanes`` (P).

    Ports
    -----
    load : In(stream of {addr: 8 bits, value: int8})
        Table writes; always ready.
    i : In(stream of ArrayLayout(signed(8), P))
    o : Out(stream of ArrayLayout(signed(8), P))

    Latency / throughput / resources
    --------------------------------
    ``LATENCY = 1`` cycle (a synchronous table read); one beat per cycle, so ``n`` beats take
    ``n - 1 + LATENCY`` cycles from the first input to the last output. One 256 x 8-bit
    memory with P read ports (P ROM copies, or LUTRAM); no multiplier. ``i.ready`` follows
    ``o.ready`` through one gate. Error bound: 0.5 LSB of the output scale
    (:data:`sw.ref.gelu.GELU_BOUND`).
    """

    LATENCY = 1

    def __init__(self, *, config: AcceleratorConfig):
        require_config(self, config)
        self.config = config
        lanes = config.vector_lanes
        super().__init__({
            "load": In(stream.Signature(data.StructLayout({"addr": unsigned(8),
                                                           "value": signed(8)}))),
            "i": In(stream.Signature(data.ArrayLayout(signed(8), lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(8), lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self.config.vector_lanes
        m.submodules.table = table = Memory(shape=signed(8), depth=256, init=[])
        wr = table.write_port()
        m.d.comb += [
            self.load.ready.eq(1),
            wr.addr.eq(self.load.payload.addr),
            wr.data.eq(self.load.payload.value),
            wr.en.eq(self.load.valid),
        ]
        advance = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance)]
        with m.If(advance):
            m.d.sync += self.o.valid.eq(self.i.valid)
        for lane in range(lanes):
            rd = table.read_port(transparent_for=(wr,))
            m.d.comb += [
                rd.en.eq(advance),
                rd.addr.eq(self.i.payload[lane].as_unsigned() ^ 0x80),  # x + 128
                self.o.payload[lane].eq(rd.data),
            ]
        return m
