"""cocotb bench: hw.vector.requant.Requantizer against sw.ref.quant.requantize_int.

Parameters (from :func:`sim.runner.bench_params`): ``lanes``, ``beats``, ``seed``,
``out_bits`` (8 or 16).
Each test drives the same seeded stimulus under one stall pattern and checks every output
bit-exactly against the reference, in order, with nothing lost or duplicated; with no stalls
it also checks the cycle count ``beats - 1 + LATENCY`` (first input to last output).
"""

from __future__ import annotations

import numpy as np

from hw.vector.requant import Requantizer, requant_lane_layout
from sim.benches.common import run_pipeline, stall_tests
from sim.runner import bench_params
from sim.streams import reset, start_clock
from sw.ref.fixedpoint import MAX_SHIFT, MULT_BITS, quantize_multiplier
from sw.ref.quant import V_MAX, V_MIN, RequantParams, requantize_int

P = bench_params()
LANES = int(P.get("lanes", 1))
BEATS = int(P.get("beats", 200))
SEED = int(P.get("seed", 1))
OUT_BITS = int(P.get("out_bits", 8))


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
    edge = rng.random(n) < 0.1  # acc + bias right at the 27-bit saturation (V_MIN, V_MAX)
    acc = np.where(edge, rng.choice([V_MIN, V_MAX], size=n) + rng.integers(-3, 4, size=n), acc)
    m, s = quantize_multiplier(rng.uniform(1e-7, 1e-2, size=n) * (rng.random(n) < 0.9)
                               + rng.uniform(1e-3, 4, size=n) * (rng.random(n) >= 0.9))
    raw = rng.random(n) < 0.1  # arbitrary raw multiplier/shift pairs, shift 0 included
    m = np.where(raw, rng.integers(0, 2**MULT_BITS, size=n), m)
    s = np.where(raw, rng.integers(0, MAX_SHIFT + 1, size=n), s)
    bias = np.where(edge, rng.integers(-2, 3, size=n), rng.integers(-(2**20), 2**20, size=n))
    bias[rng.random(n) < 0.05] = 2**31 - 1  # saturating bias add
    bias[rng.random(n) < 0.05] = -(2**31)
    # exact rounding ties: acc * m = (odd) * 2**(s-1)
    tie = (rng.random(n) < 0.1) & (s > 0) & (s < 20)
    m = np.where(tie, 1, m)
    acc = np.where(tie, (2 * rng.integers(-1000, 1000, size=n) + 1) << np.maximum(s - 1, 0), acc)
    bias = np.where(tie, 0, bias)
    params = RequantParams(m=m, s=s, bias=bias, real=m * np.exp2(-s.astype(float)),
                           out_bits=OUT_BITS)
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
    dut._log.info("seed=%d lanes=%d beats=%d idle=%.2f backpressure=%.2f",
                  SEED, LANES, BEATS, idle, backpressure)
    await run_pipeline(dut, beats=beats, expected=expected,
                       in_layout=data.ArrayLayout(requant_lane_layout(), LANES),
                       out_layout=data.ArrayLayout(signed(OUT_BITS), LANES),
                       latency=Requantizer.LATENCY, idle=idle, backpressure=backpressure,
                       label=label, seed=SEED, describe=lambda b: beats[b])


globals().update(stall_tests(run))
