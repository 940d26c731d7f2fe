"""cocotb bench: hw.vector.softmax.SoftmaxUnit against sw.ref.softmax.softmax_int.

Parameters: ``config`` (AcceleratorConfig dict), ``rows``: a list of ``{length, kind, mask,
seed}`` with ``kind`` in ``random``, ``equal``, ``huge``, ``very_negative``, ``peaked``,
``saturating`` (score differences around ``D_MAX``, where ``d`` saturates) and ``mask`` in
``none``, ``partial``, ``full`` (or ``kind: given`` with explicit ``scores`` and ``keep``);
``scale`` (the score scale) or ``params`` (``{mult, shift}`` as a Program may carry them,
e.g. for a scale :func:`~sw.ref.softmax.softmax_params` refuses). All rows stream
back to back under one stall pattern per test; every output beat must equal the reference
(lanes past a row's length are 0), and with no stalls the cycles from the first score beat to
the last output beat must equal ``sw.perf.vector.softmax_cycles``.
"""

from __future__ import annotations

import math

import numpy as np

from hw.config import AcceleratorConfig
from hw.vector.softmax import softmax_layouts
from sim.benches.common import run_rows, stall_tests
from sim.runner import bench_params
from sim.streams import reset, start_clock
from sw.perf.vector import softmax_cycles
from sw.ref.softmax import D_MAX, SoftmaxParams, softmax_int, softmax_params

P = bench_params()
CFG = AcceleratorConfig.from_dict(P["config"]) if "config" in P else None
ROWS = P.get("rows", [])
SCALE = float(P.get("scale", 1 / 512))


def make_row(row: dict):
    if row["kind"] == "given":  # explicit scores (e.g. real attention rows) and key mask
        return np.asarray(row["scores"], np.int64), np.asarray(row["keep"], bool)
    rng = np.random.default_rng(row["seed"])
    L, kind = row["length"], row["kind"]
    if kind == "equal":
        x = np.full(L, int(rng.integers(-1000, 1000)))
    elif kind == "huge":
        x = np.full(L, -(2**31))
        x[rng.integers(L)] = 2**31 - 1
    elif kind == "very_negative":
        x = rng.integers(-(2**31), -(2**31) + 5000, size=L)
    elif kind == "saturating":
        x = (2**31 - 1) - D_MAX + rng.integers(-4, 5, size=L)
        x[rng.integers(L, size=max(1, L // 8))] = -(2**31)  # d = 2**32 - 1
        x[rng.integers(L)] = 2**31 - 1
    elif kind == "peaked":
        x = rng.integers(-(2**12), 2**12, size=L)
        x[rng.integers(L)] = 2**14
    else:
        x = np.round(rng.normal(0, rng.choice([0.3, 2.0, 8.0]) / SCALE, size=L)).astype(np.int64)
        x = np.clip(x, -(2**31), 2**31 - 1)
    keep = np.ones(L, bool)
    if row.get("mask") == "partial":
        keep = rng.random(L) < 0.6
    elif row.get("mask") == "full":
        keep[:] = False
    return x, keep


async def run(dut, idle, backpressure, label):
    await start_clock(dut)
    await reset(dut)
    lanes = CFG.softmax_lanes
    lay = softmax_layouts(CFG)
    params = (SoftmaxParams(P["params"]["mult"], P["params"]["shift"], math.nan)
              if "params" in P else softmax_params(SCALE))
    cmds, beats, expected = [], [], []
    for row in ROWS:
        x, keep = make_row(row)
        q = softmax_int(x, params, keep, max_row=CFG.max_row)
        nb = math.ceil(row["length"] / lanes)
        pad = nb * lanes - row["length"]
        xs = np.concatenate([x, np.zeros(pad, np.int64)]).reshape(nb, lanes)
        ks = np.concatenate([keep, np.ones(pad, bool)]).reshape(nb, lanes)  # ignored lanes
        qs = np.concatenate([q, np.zeros(pad, np.uint8)]).reshape(nb, lanes)
        cmds.append({"length": row["length"], "mult": params.mult, "shift": params.shift})
        beats += [[{"score": int(s), "keep": int(k)} for s, k in zip(xr, kr)]
                  for xr, kr in zip(xs, ks)]
        expected += qs.tolist()
    dut._log.info("%s: %d rows, lengths %s, idle=%.2f backpressure=%.2f", label, len(ROWS),
                  [r["length"] for r in ROWS], idle, backpressure)
    await run_rows(dut, cmds=cmds, beats=beats, expected=expected, layouts=lay,
                   model_cycles=softmax_cycles(CFG, [r["length"] for r in ROWS]), idle=idle,
                   backpressure=backpressure, label=label, seed=len(ROWS), silence=40)


globals().update(stall_tests(run))
