"""cocotb drivers for ``amaranth.lib.stream`` ports, with random idles and backpressure.

An Amaranth stream port ``x`` appears in Verilog as ``x__payload``, ``x__valid`` and
``x__ready``. Payloads are packed and unpacked with the port's own Amaranth layout
(``layout.const(value)`` / ``layout.from_bits(bits)``), so benches speak in Python values
(dicts for structs, lists for arrays) and never restate a bit position.

Timing discipline: both drivers change their outputs just after a rising edge and decide
whether a transfer happens by sampling ``valid`` and ``ready`` at the falling edge before the
next rising edge (all combinational paths have settled by then). A transfer is stamped with
the index of the rising edge that completes it (:func:`edge_index`).
"""

from __future__ import annotations

import os
import random

from cocotb.triggers import FallingEdge, RisingEdge
from cocotb.utils import get_sim_time

__all__ = ["StreamSource", "StreamSink", "edge_index", "start_clock", "reset"]

CLOCK_NS = 10
CLOCK_IMPL = os.environ.get("NMACCEL_CLOCK", "gpi")


def edge_index() -> int:
    """Index of the most recent rising edge (time / period)."""
    return int(get_sim_time("ns") // CLOCK_NS)


async def start_clock(dut):
    import cocotb
    from cocotb.clock import Clock

    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns", impl=CLOCK_IMPL).start(start_high=False))


#: stream ports the benches' DUTs use: held idle from reset on, so no X/Z reaches a register
INPUT_STREAMS = ("i", "cmd", "w", "a", "params", "load")
OUTPUT_STREAMS = ("o",)


async def reset(dut, cycles: int = 2):
    """Hold ``rst`` for ``cycles`` edges with every known input stream idle (valid low) and
    every output stream not ready, so undriven inputs cannot leak X/Z into the design."""
    for name in INPUT_STREAMS:
        if hasattr(dut, f"{name}__valid"):
            getattr(dut, f"{name}__valid").value = 0
    for name in OUTPUT_STREAMS:
        if hasattr(dut, f"{name}__ready"):
            getattr(dut, f"{name}__ready").value = 0
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


def _pack(layout, value) -> int:
    if layout is None:
        return int(value)
    return layout.const(value).as_value().value


def _unpack(layout, bits: int):
    if layout is None:
        return bits
    return _to_python(layout.from_bits(bits))


def _to_python(view):
    """An Amaranth data.Const view -> nested Python dict/list/int."""
    from amaranth.lib import data

    if isinstance(view, data.Const):
        layout = view.shape()
        if isinstance(layout, data.ArrayLayout):
            return [_to_python(view[i]) for i in range(layout.length)]
        return {name: _to_python(view[name]) for name, _ in layout}
    return int(view)


class StreamSource:
    """Drives ``<prefix>__payload/valid`` and obeys ``<prefix>__ready``.

    ``idle``: probability of inserting one idle cycle before each beat (random input gaps).
    """

    def __init__(self, dut, prefix: str, layout=None, *, idle: float = 0.0, rng=None):
        self.clk = dut.clk
        self.payload = getattr(dut, f"{prefix}__payload")
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.layout = layout
        self.idle = float(idle)
        self.rng = rng or random.Random(0)
        self.sent_edges: list[int] = []
        self.valid.value = 0

    async def send(self, items) -> None:
        """Send every item; returns just after the rising edge that accepted the last one."""
        for item in items:
            while self.idle and self.rng.random() < self.idle:
                self.valid.value = 0
                await RisingEdge(self.clk)
            self.payload.value = _pack(self.layout, item)
            self.valid.value = 1
            while True:
                await FallingEdge(self.clk)
                fire = bool(self.ready.value)
                await RisingEdge(self.clk)
                if fire:
                    self.sent_edges.append(edge_index())
                    break
        self.valid.value = 0


class StreamSink:
    """Drives ``<prefix>__ready`` and collects ``<prefix>__payload`` on each transfer.

    ``backpressure``: probability that ready is low in a cycle.
    """

    def __init__(self, dut, prefix: str, layout=None, *, backpressure: float = 0.0, rng=None):
        self.clk = dut.clk
        self.payload = getattr(dut, f"{prefix}__payload")
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.layout = layout
        self.backpressure = float(backpressure)
        self.rng = rng or random.Random(1)
        self.items: list = []
        self.edges: list[int] = []
        self.ready.value = 0

    async def receive(self, count: int) -> list:
        """Collect ``count`` beats; returns just after the edge that accepted the last one."""
        while len(self.items) < count:
            ready = not (self.backpressure and self.rng.random() < self.backpressure)
            self.ready.value = int(ready)
            await FallingEdge(self.clk)
            fire = ready and bool(self.valid.value)
            bits = int(self.payload.value) if fire else None
            await RisingEdge(self.clk)
            if fire:
                self.items.append(_unpack(self.layout, bits))
                self.edges.append(edge_index())
        self.ready.value = 0
        return self.items

    async def expect_silence(self, cycles: int) -> None:
        """Hold ready high for ``cycles`` and fail if any extra beat appears (no duplicates)."""
        self.ready.value = 1
        for _ in range(cycles):
            await FallingEdge(self.clk)
            if self.valid.value:
                raise AssertionError(f"unexpected extra output beat after {len(self.items)}")
            await RisingEdge(self.clk)
        self.ready.value = 0
