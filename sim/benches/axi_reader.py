"""cocotb bench: :class:`hw.top.axi_reader.AxiReader` against cocotbext-axi's AXI RAM.

Parameters (:func:`sim.runner.bench_params`): ``requests`` (``[[addr, words], ...]``, one
after another), ``mem_bytes``, ``seed`` (the memory's random contents and the stalls) and
``stall`` (random pauses on AR and R, and 30 % backpressure on ``data``). The bench checks
every word against the memory and reports, per request, the cycles from the edge that takes
it to the edge that takes its last word, inclusive (``cycles``), for the test to compare
with :func:`sw.perf.top.read_cycles`.
"""

from __future__ import annotations

import random
import warnings

import cocotb
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiRamRead, AxiReadBus

from hw.top.axi import request_layout
from sim.benches.top import _pauses
from sim.runner import bench_params, bench_report_path
from sim.streams import StreamSink, StreamSource, start_clock

P = bench_params()

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\.axi")


@cocotb.test()
async def reads(dut):
    import json

    rng = random.Random(P.get("seed", 0))
    await start_clock(dut)
    dut.req__valid.value = 0
    dut.data__ready.value = 0
    dut.rst.value = 1
    ram = AxiRamRead(AxiReadBus.from_prefix(dut, "axi_"), dut.clk, dut.rst,
                     size=P["mem_bytes"])
    image = bytes(rng.getrandbits(8) for _ in range(P["mem_bytes"]))
    ram.write(0, image)
    stall = bool(P.get("stall"))
    if stall:
        ram.ar_channel.set_pause_generator(_pauses(random.Random(rng.random())))
        ram.r_channel.set_pause_generator(_pauses(random.Random(rng.random())))
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)

    width = len(dut.data__payload) // 8
    src = StreamSource(dut, "req", request_layout(), rng=random.Random(rng.random()))
    cycles = []
    for addr, words in P["requests"]:
        sink = StreamSink(dut, "data", backpressure=0.3 if stall else 0.0,
                          rng=random.Random(rng.random()))
        got = cocotb.start_soon(sink.receive(words))
        await src.send([{"addr": addr, "words": words}])
        start = src.sent_edges[-1]
        await got
        want = [int.from_bytes(image[addr + i * width: addr + (i + 1) * width], "little")
                for i in range(words)]
        bad = [i for i, (g, w) in enumerate(zip(sink.items, want, strict=True)) if g != w]
        assert not bad, f"request ({addr}, {words}): wrong words at {bad[:8]}"
        cycles.append(sink.edges[-1] - start + 1 if words else 0)
    assert not int(dut.error.value), "error raised on a memory that answers OKAY"
    bench_report_path().write_text(json.dumps({"cycles": cycles}))
