"""The spmm engine with its requantized int8 output path, as one component."""

from __future__ import annotations

from amaranth import Module, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.config import AcceleratorConfig
from hw.lib.checks import require_config
from hw.spmm.engine import SpmmEngine, engine_layouts
from hw.spmm.requant_stage import EngineRequant, channel_params_layout

__all__ = ["SpmmUnit"]


class SpmmUnit(wiring.Component):
    """:class:`SpmmEngine` followed by :class:`EngineRequant` (joined with ``wiring.connect``).

    Ports: the engine's ``cmd``, ``w`` and ``a``; the requantizer's ``params`` (one beat per
    tile); ``o``: R x int8 per beat, C beats per tile.

    Latency / throughput: the engine's, plus ``Requantizer.LATENCY`` (3) cycles.
    """

    def __init__(self, *, config: AcceleratorConfig):
        require_config(self, config)
        self.config = config
        lay = engine_layouts(config)
        super().__init__({
            "cmd": In(stream.Signature(lay["cmd"])),
            "w": In(stream.Signature(lay["w"])),
            "a": In(stream.Signature(lay["a"])),
            "params": In(stream.Signature(
                data.ArrayLayout(channel_params_layout(), config.pe_rows))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(8), config.pe_rows))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = SpmmEngine(config=self.config)
        m.submodules.requant = requant = EngineRequant(config=self.config)
        for name in ("cmd", "w", "a"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(engine, name))
        wiring.connect(m, wiring.flipped(self.params), requant.params)
        wiring.connect(m, engine.o, requant.i)
        wiring.connect(m, requant.o, wiring.flipped(self.o))
        return m
