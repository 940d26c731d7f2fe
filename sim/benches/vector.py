"""cocotb benches of the elementwise vector units against sw/ref, bit for bit.

Parameters (``sim.runner.bench_params``): ``unit`` (``gelu`` or ``add``), ``config`` (an
AcceleratorConfig dict), ``beats``, ``seed``. GELU: a table for random realistic scales is
loaded through ``load``, then random int8 values, every value -128..127 included, stream
through; compared with ``sw.ref.gelu.gelu_int``. Residual add: random scales give the
``(m_a, m_b, shift)`` ports; random and extreme operand pairs (int8 or int16 each, ``bits``)
are compared with ``sw.ref.quant.add_int``. Each stall pattern is one test; with no stalls
the cycles must equal ``beats - 1 + LATENCY``.
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
from sw.ref.quant import add_int, add_params, int_range

P = bench_params()
UNIT = P.get("unit", "gelu")
CFG = AcceleratorConfig.from_dict(P["config"]) if "config" in P else None
BEATS = int(P.get("beats", 100))
BITS = P.get("bits", [8, 8, 8])  # residual add: a, b, out
SEED = int(P.get("seed", 1))


def operands(rng, shape, bits: int = 8):
    lo, hi = int_range(bits)
    x = rng.integers(lo, hi + 1, size=shape)
    flat = x.reshape(-1)
    edge = np.concatenate([np.arange(-128, 128), [lo, hi, lo + 1, hi - 1]])
    flat[: min(edge.size, flat.size)] = edge[: min(edge.size, flat.size)]  # every int8 value
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
        a_bits, b_bits, out_bits = BITS
        sa, sb, so = rng.uniform(0.01, 0.1, size=3)
        params = add_params(sa / 2 ** (a_bits - 8), sb / 2 ** (b_bits - 8),
                            so / 2 ** (out_bits - 8), a_bits=a_bits, b_bits=b_bits,
                            out_bits=out_bits)
        dut.m_a.value, dut.m_b.value, dut.shift.value = params.m_a, params.m_b, params.shift
        a = operands(rng, (BEATS, lanes), a_bits)
        b = operands(rng, (BEATS, lanes), b_bits)[::-1].copy()
        expected = add_int(a, b, params).tolist()
        beats = [{"a": ra, "b": rb} for ra, rb in zip(a.tolist(), b.tolist())]
        in_layout = data.StructLayout({"a": data.ArrayLayout(signed(a_bits), lanes),
                                       "b": data.ArrayLayout(signed(b_bits), lanes)})
        lane_layout = data.ArrayLayout(signed(out_bits), lanes)
        latency = ResidualAdd.LATENCY
    await RisingEdge(dut.clk)
    dut._log.info("%s %s seed=%d lanes=%d beats=%d params=%s", UNIT, label, SEED, lanes, BEATS,
                  {k: v for k, v in vars(params).items() if k != "table"})
    await run_pipeline(dut, beats=beats, expected=expected, in_layout=in_layout,
                       out_layout=lane_layout, latency=latency, idle=idle,
                       backpressure=backpressure, label=label, seed=SEED,
                       describe=lambda i: beats[i])


globals().update(stall_tests(run))
