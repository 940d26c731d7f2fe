"""cocotb benches of the elementwise vector units against sw/ref, bit for bit.

Parameters (``sim.runner.bench_params``): ``unit`` (``gelu`` or ``add``), ``config`` (an
AcceleratorConfig dict), ``beats``, ``seed``. GELU: a table for random realistic scales is
loaded through ``load``, then random int8 values, every value -128..127 included, stream
through; compared with ``sw.ref.gelu.gelu_int``. Residual add: random scales give the
``(m_a, m_b, shift)`` ports; random and extreme operand pairs are compared with
``sw.ref.quant.add_int``. Each stall pattern is one test; with no stalls the cycles must equal
``beats - 1 + LATENCY``.
"""

from __future__ import annotations

import numpy as np
from amaranth import signed
from amaranth.lib import data
from cocotb.triggers import RisingEdge

from hw.config import AcceleratorConfig
from hw.vector.gelu import GeluUnit
from hw.vector.residual_add import ResidualAdd
from sim.benches.common import run_pipeline, stall_tests
from sim.runner import bench_params
from sim.streams import StreamSource, reset, start_clock
from sw.ref.gelu import gelu_int, gelu_params
from sw.ref.quant import add_int, add_params

P = bench_params()
UNIT = P.get("unit", "gelu")
CFG = AcceleratorConfig.from_dict(P["config"]) if "config" in P else None
BEATS = int(P.get("beats", 100))
SEED = int(P.get("seed", 1))


def operands(rng, shape):
    x = rng.integers(-128, 128, size=shape)
    flat = x.reshape(-1)
    flat[: min(256, flat.size)] = np.arange(-128, 128)[: min(256, flat.size)]  # every value
    return x


async def run(dut, idle, backpressure, label):
    await start_clock(dut)
    await reset(dut)
    rng = np.random.default_rng(SEED)
    lanes = CFG.vector_lanes
    lane_layout = data.ArrayLayout(signed(8), lanes)
    if UNIT == "gelu":
        params = gelu_params(rng.uniform(6, 20) / 127, rng.uniform(4, 20) / 127)
        loader = StreamSource(dut, "load", data.StructLayout({"addr": 8, "value": signed(8)}))
        await loader.send([{"addr": j, "value": int(v)} for j, v in enumerate(params.table)])
        x = operands(rng, (BEATS, lanes))
        expected = gelu_int(x, params).tolist()
        beats = x.tolist()
        in_layout, latency = lane_layout, GeluUnit.LATENCY
    else:
        params = add_params(*(rng.uniform(0.01, 0.1, size=3)))
        dut.m_a.value, dut.m_b.value, dut.shift.value = params.m_a, params.m_b, params.shift
        a, b = operands(rng, (BEATS, lanes)), operands(rng, (BEATS, lanes))[::-1].copy()
        expected = add_int(a, b, params).tolist()
        beats = [{"a": ra, "b": rb} for ra, rb in zip(a.tolist(), b.tolist())]
        in_layout = data.StructLayout({"a": lane_layout, "b": lane_layout})
        latency = ResidualAdd.LATENCY
    await RisingEdge(dut.clk)
    dut._log.info("%s %s seed=%d lanes=%d beats=%d params=%s", UNIT, label, SEED, lanes, BEATS,
                  {k: v for k, v in vars(params).items() if k != "table"})
    await run_pipeline(dut, beats=beats, expected=expected, in_layout=in_layout,
                       out_layout=lane_layout, latency=latency, idle=idle,
                       backpressure=backpressure, label=label, seed=SEED,
                       describe=lambda i: beats[i])


globals().update(stall_tests(run))
