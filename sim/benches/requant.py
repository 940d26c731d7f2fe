"""cocotb bench: hw.vector.requant.Requantizer against sw.ref.quant.requantize_int.

Parameters (from :func:`sim.runner.bench_params`): ``lanes``, ``beats``, ``seed``.
Each test drives the same seeded stimulus under one stall pattern and checks every output
bit-exactly against the reference, in order, with nothing lost or duplicated; with no stalls
it also checks the cycle count ``beats - 1 + LATENCY`` (first input to last output).
"""

from __future__ import annotations

import json
import random

import cocotb
import numpy as np
from cocotb.triggers import with_timeout

from hw.vector.requant import Requantizer, requant_lane_layout
from sim.runner import bench_params, bench_report_path
from sim.streams import StreamSink, StreamSource, reset, start_clock
from sw.ref.fixedpoint import MAX_SHIFT, MULT_BITS, quantize_multiplier
from sw.ref.quant import RequantParams, requantize_int

P = bench_params()
LANES = int(P.get("lanes", 1))
BEATS = int(P.get("beats", 200))
SEED = int(P.get("seed", 1))


def stimulus(seed: int):
    """Accumulators and per-(beat, lane) parameters: realistic, extreme and tie cases."""
    rng = np.random.default_rng(seed)
    n = BEATS * LANES
    kind = rng.integers(0, 5, size=n)
    acc = np.where(
        kind == 0, rng.integers(-(2**31), 2**31, size=n),  # full int32 range
        np.where(kind == 1, rng.integers(-(2**16), 2**16, size=n),  # typical GEMM sums
                 rng.integers(-(2**22), 2**22, size=n)),
    )
    acc[rng.random(n) < 0.05] = -(2**31)
    acc[rng.random(n) < 0.05] = 2**31 - 1
    m, s = quantize_multiplier(rng.uniform(1e-7, 1e-2, size=n) * (rng.random(n) < 0.9)
                               + rng.uniform(1e-3, 4, size=n) * (rng.random(n) >= 0.9))
    raw = rng.random(n) < 0.1  # arbitrary raw multiplier/shift pairs, shift 0 included
    m = np.where(raw, rng.integers(0, 2**MULT_BITS, size=n), m)
    s = np.where(raw, rng.integers(0, MAX_SHIFT + 1, size=n), s)
    bias = rng.integers(-(2**20), 2**20, size=n)
    bias[rng.random(n) < 0.05] = 2**31 - 1  # saturating bias add
    bias[rng.random(n) < 0.05] = -(2**31)
    # exact rounding ties: acc * m = (odd) * 2**(s-1)
    tie = (rng.random(n) < 0.1) & (s > 0) & (s < 20)
    m = np.where(tie, 1, m)
    acc = np.where(tie, (2 * rng.integers(-1000, 1000, size=n) + 1) << np.maximum(s - 1, 0), acc)
    bias = np.where(tie, 0, bias)
    params = RequantParams(m=m, s=s, bias=bias, real=m * np.exp2(-s.astype(float)))
    expected = requantize_int(acc.reshape(1, n), params).reshape(BEATS, LANES)
    beats = [
        [{"acc": int(acc[b * LANES + j]), "bias": int(bias[b * LANES + j]),
          "mult": int(m[b * LANES + j]), "shift": int(s[b * LANES + j])} for j in range(LANES)]
        for b in range(BEATS)
    ]
    return beats, expected.tolist()


async def run(dut, idle: float, backpressure: float, label: str):
    from amaranth import signed
    from amaranth.lib import data

    await start_clock(dut)
    await reset(dut)
    beats, expected = stimulus(SEED)
    rng = random.Random(f"{SEED}-{label}")
    dut._log.info("seed=%d lanes=%d beats=%d idle=%.2f backpressure=%.2f",
                  SEED, LANES, BEATS, idle, backpressure)
    src = StreamSource(dut, "i", data.ArrayLayout(requant_lane_layout(), LANES), idle=idle, rng=rng)
    sink = StreamSink(dut, "o", data.ArrayLayout(signed(8), LANES),
                      backpressure=backpressure, rng=rng)
    cocotb.start_soon(src.send(beats))
    # watchdog: generous bound on cycles; a hang fails the test instead of running forever
    limit = (BEATS + Requantizer.LATENCY) * 20 + 100
    got = await with_timeout(sink.receive(BEATS), limit * 10, "ns")
    await sink.expect_silence(Requantizer.LATENCY + 4)
    for b, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"beat {b}: got {g}, expected {e} (input {beats[b]})"
    cycles = sink.edges[-1] - src.sent_edges[0]
    if idle == 0 and backpressure == 0:
        want = BEATS - 1 + Requantizer.LATENCY
        assert cycles == want, f"{cycles} cycles, the formula gives {want}"
    report = bench_report_path()
    if report is not None:
        old = json.loads(report.read_text()) if report.exists() else {}
        old[label] = {"beats": BEATS, "lanes": LANES, "cycles": cycles}
        report.write_text(json.dumps(old, indent=2))


@cocotb.test()
async def no_stalls(dut):
    await run(dut, 0.0, 0.0, "no_stalls")


@cocotb.test()
async def input_idles(dut):
    await run(dut, 0.4, 0.0, "input_idles")


@cocotb.test()
async def output_backpressure(dut):
    await run(dut, 0.0, 0.5, "output_backpressure")


@cocotb.test()
async def idles_and_backpressure(dut):
    await run(dut, 0.3, 0.3, "idles_and_backpressure")
