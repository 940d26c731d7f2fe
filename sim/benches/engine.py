"""cocotb bench: hw.spmm.engine.SpmmEngine against sw.ref.gemm, cycle-checked by sw.perf.engine.

Parameters (``sim.runner.bench_params``): ``config`` (AcceleratorConfig as a dict),
``requant`` (the DUT is :class:`hw.spmm.unit.SpmmUnit`: int8 outputs through per-channel
requantization, checked against ``sw.ref.quant.requantize_int``) and ``cases``: a list of
``{name, rows, k, tokens, n, kind, act_unsigned, seed}`` where ``kind`` is ``random``, ``zero``
or ``saturating``. Every test runs all cases back to back under one stall
pattern; outputs must equal the reference exactly (nothing lost, duplicated or reordered), and
with no stalls the cycles from the first weight beat to the last output beat must equal
``sw.perf.engine.gemm_cycles``. A watchdog fails a case that hangs.
"""

from __future__ import annotations

import json
import random

import cocotb
import numpy as np
from amaranth.lib import data
from cocotb.triggers import RisingEdge, with_timeout

from hw.config import AcceleratorConfig
from hw.spmm.engine import engine_layouts
from hw.spmm.requant_stage import channel_params_layout
from hw.vector.requant import Requantizer
from sim.benches.common import stall_tests
from sim.runner import bench_params, bench_report_path
from sim.streams import StreamSink, StreamSource, reset, start_clock
from sw.compiler.gemm_tiles import tile_gemm, untile_output
from sw.nm import nm_mask, pack
from sw.perf.engine import GemmShape, gemm_cycles
from sw.ref.gemm import dense_gemm_int, spmm_int
from sw.ref.quant import requant_params, requantize_int

P = bench_params()
CFG = AcceleratorConfig.from_dict(P["config"]) if "config" in P else None
CASES = P.get("cases", [])
LAYOUTS = engine_layouts(CFG) if CFG else None
REQUANT = bool(P.get("requant", False))


def make_case(case: dict):
    """Operands and the reference result of one case (seeded)."""
    rng = np.random.default_rng(case["seed"])
    rows, k, tokens, n, kind = case["rows"], case["k"], case["tokens"], case["n"], case["kind"]
    unsigned = bool(case.get("act_unsigned", False))
    M = CFG.m
    if kind == "zero":
        w = np.zeros((rows, k), np.int64)
        x = np.zeros((tokens, k), np.int64)
    elif kind == "saturating":
        w = np.full((rows, k), -128, np.int64)
        x = np.full((tokens, k), 255 if unsigned else -128, np.int64)
    else:
        w = rng.integers(-128, 128, size=(rows, k))
        x = rng.integers(0, 256, size=(tokens, k)) if unsigned else \
            rng.integers(-128, 128, size=(tokens, k))
    if n < M:
        w = np.where(nm_mask(w + rng.random((rows, k)) * 0.5, n, M), w, 0)  # random ties
        packed = pack(w, n, M)
        want = spmm_int(x, packed) if not unsigned else dense_gemm_int(x, w, a_unsigned=True)
    else:
        packed = pack(w, M, M)
        want = dense_gemm_int(x, w, a_unsigned=unsigned)
    if REQUANT:  # realistic per-channel multipliers and biases, some saturating
        real = rng.uniform(0.3, 3.0, size=rows) * 127 / max(1, np.abs(want).max())
        bias = rng.integers(-(2**12), 2**12, size=rows)
        bias[rng.random(rows) < 0.2] = 2**31 - 1
        return packed, x, unsigned, want, requant_params(real, bias)
    return packed, x, unsigned, want, None


def beats(streams):
    """Pack the tiler's arrays into stream beats with the engine's own layouts."""
    cmd_l, w_l = LAYOUTS["cmd"], LAYOUTS["w"]
    cmds = [cmd_l.const({"n": n, "groups": g, "act_unsigned": u}).as_value().value
            for n, g, u in streams.cmds]
    lane = w_l.elem_shape
    lane_bits, v_off, i_off = lane.size, lane["value"].offset, lane["index"].offset
    ws = []
    for vals, idx in zip(streams.w_values.tolist(), streams.w_index.tolist()):
        word = 0
        for r, (v, i) in enumerate(zip(vals, idx)):
            word |= (((v & 0xFF) << v_off) | (i << i_off)) << (r * lane_bits)
        ws.append(word)
    acts = [int.from_bytes(g.astype(np.uint8).tobytes(), "little") for g in streams.acts]
    return cmds, ws, acts


def params_beats(streams, rq):
    """One beat per tile: the tile's R channels' (bias, mult, shift); padding rows get zeros."""
    lay = channel_params_layout()
    out = []
    for r0, _ in streams.tiles:
        lanes = []
        for r in range(r0, r0 + CFG.pe_rows):
            ok = r < streams.rows
            lanes.append({"bias": int(rq.bias[r]) if ok else 0, "mult": int(rq.m[r]) if ok else 0,
                          "shift": int(rq.s[r]) if ok else 0})
        out.append(data.ArrayLayout(lay, CFG.pe_rows).const(lanes).as_value().value)
    return out


def unpack_out(word: int) -> list[int]:
    bits = 8 if REQUANT else 32
    vals = [(word >> (bits * r)) & ((1 << bits) - 1) for r in range(CFG.pe_rows)]
    return [v - (1 << bits) if v >> (bits - 1) else v for v in vals]


async def run(dut, idle: float, backpressure: float, label: str):
    await start_clock(dut)
    await reset(dut)
    results = []
    for case in CASES:
        packed, x, unsigned, want, rq = make_case(case)
        if REQUANT:
            want = requantize_int(want, rq)
        streams = tile_gemm(CFG, packed, x, act_unsigned=unsigned)
        cmds, ws, acts = beats(streams)
        rng = random.Random(f"{case['seed']}-{label}")
        dut._log.info("%s %s: %s idle=%.2f backpressure=%.2f tiles=%d", label, case["name"],
                      case, idle, backpressure, len(cmds))
        src_c = StreamSource(dut, "cmd", idle=idle, rng=random.Random(rng.random()))
        src_w = StreamSource(dut, "w", idle=idle, rng=random.Random(rng.random()))
        src_a = StreamSource(dut, "a", idle=idle, rng=random.Random(rng.random()))
        sink = StreamSink(dut, "o", backpressure=backpressure, rng=random.Random(rng.random()))
        feeds = [(src_c, cmds), (src_w, ws), (src_a, acts)]
        if REQUANT:
            src_p = StreamSource(dut, "params", idle=idle, rng=random.Random(rng.random()))
            feeds.append((src_p, params_beats(streams, rq)))
        for src, items in feeds:
            cocotb.start_soon(src.send(items))
        n_out = len(cmds) * CFG.pe_cols
        model = gemm_cycles(CFG, GemmShape(rows=streams.rows, k=packed.k, tokens=streams.tokens,
                                           n=packed.n, m=packed.m))
        if REQUANT:
            model += Requantizer.LATENCY
        watchdog = (model * 8 + 200) * 10  # ns: 8x the model under any stall pattern
        got = await with_timeout(sink.receive(n_out), watchdog, "ns")
        await sink.expect_silence(CFG.pe_cols + 8)
        out = untile_output(CFG, streams, [unpack_out(b) for b in got])
        bad = np.argwhere(out != want)
        assert bad.size == 0, (f"{case['name']}: {len(bad)} wrong outputs, first at "
                               f"[token, row] = {bad[0].tolist()}: got {out[tuple(bad[0])]}, "
                               f"expected {want[tuple(bad[0])]}")
        cycles = sink.edges[-1] - src_w.sent_edges[0]
        if idle == 0 and backpressure == 0:
            assert cycles == model, f"{case['name']}: RTL took {cycles} cycles, model {model}"
        results.append({**case, "rtl_cycles": cycles, "model_cycles": model,
                        "tiles": len(cmds)})
        for _ in range(3):
            await RisingEdge(dut.clk)
    report = bench_report_path()
    if report is not None:
        old = json.loads(report.read_text()) if report.exists() else {}
        old[label] = results
        report.write_text(json.dumps(old, indent=2))


globals().update(stall_tests(run))
