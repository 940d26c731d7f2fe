"""Shared driver for benches of one-stream-in, one-stream-out pipelined units.

:func:`run_pipeline` drives ``beats`` into ``i`` with random idles, collects ``o`` under random
backpressure, checks every output against ``expected`` in order (nothing lost, duplicated or
reordered: a watchdog fails a hang and silence is checked afterwards), and, with no stalls,
checks the cycle count ``len(beats) - 1 + latency`` (first input taken to last output taken).
It appends the measured cycles to the bench's JSON report under ``label``.
"""

from __future__ import annotations

import json
import random

import cocotb
from cocotb.triggers import with_timeout

from sim.runner import bench_report_path
from sim.streams import StreamSink, StreamSource

__all__ = ["run_pipeline", "stall_tests", "STALL_PATTERNS"]

#: (label, input idle probability, output backpressure probability)
STALL_PATTERNS = [
    ("no_stalls", 0.0, 0.0),
    ("input_idles", 0.4, 0.0),
    ("output_backpressure", 0.0, 0.5),
    ("idles_and_backpressure", 0.3, 0.3),
]


async def run_pipeline(dut, *, beats, expected, in_layout, out_layout, latency: int,
                       idle: float, backpressure: float, label: str, seed, describe=None):
    rng = random.Random(f"{seed}-{label}")
    src = StreamSource(dut, "i", in_layout, idle=idle, rng=random.Random(rng.random()))
    sink = StreamSink(dut, "o", out_layout, backpressure=backpressure,
                      rng=random.Random(rng.random()))
    cocotb.start_soon(src.send(beats))
    watchdog_ns = ((len(beats) + latency) * 20 + 100) * 10
    got = await with_timeout(sink.receive(len(beats)), watchdog_ns, "ns")
    await sink.expect_silence(latency + 4)
    for b, (g, e) in enumerate(zip(got, expected)):
        if g != e:
            extra = f" (input {describe(b)})" if describe else ""
            raise AssertionError(f"{label}: beat {b}: got {g}, expected {e}{extra}")
    cycles = sink.edges[-1] - src.sent_edges[0]
    if idle == 0 and backpressure == 0:
        want = len(beats) - 1 + latency
        assert cycles == want, f"{label}: {cycles} cycles, the formula gives {want}"
    report = bench_report_path()
    if report is not None:
        old = json.loads(report.read_text()) if report.exists() else {}
        old[label] = {"beats": len(beats), "cycles": cycles}
        report.write_text(json.dumps(old, indent=2))
    return cycles


def stall_tests(run) -> dict:
    """One cocotb test per stall pattern, each awaiting ``run(dut, idle, backpressure, label)``.

    Use as ``globals().update(stall_tests(run))`` in a bench module.
    """
    tests = {}
    for label, idle, bp in STALL_PATTERNS:
        def make(label=label, idle=idle, bp=bp):
            async def bench(dut):
                await run(dut, idle, bp, label)
            bench.__name__ = bench.__qualname__ = label
            return cocotb.test()(bench)
        tests[label] = make()
    return tests


async def run_rows(dut, *, cmds, beats, expected, layouts, model_cycles: int, idle: float,
                   backpressure: float, label: str, seed, silence: int = 100, what="rows",
                   count: int | None = None):
    """Drive a row-buffered unit (``cmd`` + ``i`` in, ``o`` out): every output beat must equal
    ``expected`` in order, nothing extra may follow, and with no stalls the cycles from the
    first ``i`` beat to the last ``o`` beat must equal ``model_cycles``. Reports the cycles."""
    rng = random.Random(f"{label}-{seed}")
    src_c = StreamSource(dut, "cmd", layouts["cmd"], idle=idle, rng=random.Random(rng.random()))
    src_i = StreamSource(dut, "i", layouts["i"], idle=idle, rng=random.Random(rng.random()))
    sink = StreamSink(dut, "o", layouts["o"], backpressure=backpressure,
                      rng=random.Random(rng.random()))
    cocotb.start_soon(src_c.send(cmds))
    cocotb.start_soon(src_i.send(beats))
    got = await with_timeout(sink.receive(len(expected)), (model_cycles * 8 + 500) * 10, "ns")
    await sink.expect_silence(silence)
    for b, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"{label}: output beat {b}: got {g}, expected {e}"
    cycles = sink.edges[-1] - src_i.sent_edges[0]
    if idle == 0 and backpressure == 0:
        assert cycles == model_cycles, f"{label}: RTL took {cycles} cycles, model {model_cycles}"
    report = bench_report_path()
    if report is not None:
        old = json.loads(report.read_text()) if report.exists() else {}
        old[label] = {what: len(cmds) if count is None else count, "rtl_cycles": cycles,
                      "model_cycles": model_cycles}
        report.write_text(json.dumps(old, indent=2))
    return cycles
