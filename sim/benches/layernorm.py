"""cocotb bench: hw.vector.layernorm.LayerNormUnit against sw.ref.layernorm.layernorm_int.

Parameters: ``config`` (AcceleratorConfig dict), ``hidden`` (H of this layer), ``tokens``:
a list of ``{kind, seed}`` with ``kind`` in ``random``, ``low_var``, ``equal``, ``huge``,
``alternating``, ``spike`` (or ``kind: given`` with explicit ``values``); ``saturate`` (a
large gamma, so outputs clamp); optional real ``gamma``, ``beta``, ``scale_in``,
``scale_out``, ``eps``.
The layer's gain/offset are loaded on ``load``, then all tokens stream back to back under
one stall pattern per test; outputs must equal the reference (lanes past H are 0), and with
no stalls the cycles from the first data beat to the last output beat must equal
``sw.perf.vector.layernorm_cycles``.
"""

from __future__ import annotations

import math

import numpy as np

from hw.config import AcceleratorConfig
from hw.vector.layernorm import layernorm_layouts
from sim.benches.common import run_rows, stall_tests
from sim.runner import bench_params
from sim.streams import StreamSource, reset, start_clock
from sw.perf.vector import layernorm_cycles
from sw.ref.layernorm import layernorm_int, layernorm_params

P = bench_params()
CFG = AcceleratorConfig.from_dict(P["config"]) if "config" in P else None
H = int(P.get("hidden", 8))
TOKENS = P.get("tokens", [])
SEED = int(P.get("seed", 1))
IN_BITS = int(P.get("in_bits", 8))  # 16: the residual path (int16 rows with an outlier)


def make_token(tok: dict) -> np.ndarray:
    kind = tok["kind"]
    if kind == "given":  # explicit int8 values (e.g. real hidden states)
        return np.asarray(tok["values"], np.int64)
    rng = np.random.default_rng(tok["seed"])
    lo, hi = -(2 ** (IN_BITS - 1)), 2 ** (IN_BITS - 1) - 1
    if kind == "equal":
        return np.full(H, int(rng.integers(lo, hi + 1)))
    if kind == "huge":
        x = np.zeros(H, np.int64)
        x[rng.integers(H)] = hi
        return x
    if kind == "alternating":
        return np.where(np.arange(H) % 2 == 0, lo, hi)
    if kind == "spike":  # one channel at one extreme, the rest at the other: the largest
        x = np.full(H, lo if tok["seed"] % 2 else hi)  # |H x_i - sum x| the unit can meet
        x[rng.integers(H)] = hi if tok["seed"] % 2 else lo
        return x
    if kind == "low_var":
        return np.round(rng.normal(0, 2, size=H)).clip(lo, hi).astype(np.int64)
    if IN_BITS == 16:  # residual-path-like: a wide body and one outlier channel
        x = np.round(rng.normal(0, 360, size=H)).clip(lo, hi).astype(np.int64)
        x[rng.integers(H)] = int(rng.integers(20000, hi))
        return x
    return rng.integers(lo, hi + 1, size=H)


async def run(dut, idle, backpressure, label):
    await start_clock(dut)
    await reset(dut)
    lay = layernorm_layouts(CFG, IN_BITS)
    lanes = CFG.vector_lanes
    rng = np.random.default_rng(SEED)
    gamma = np.asarray(P["gamma"]) if "gamma" in P else \
        rng.uniform(0.5, 2.0, H) * (40 if P.get("saturate") else 1)
    beta = np.asarray(P["beta"]) if "beta" in P else rng.uniform(-0.5, 0.5, H)
    params = layernorm_params(float(P.get("scale_in", 0.05 if IN_BITS == 8 else 218 / 32767)),
                              gamma, beta,
                              float(P.get("scale_out", (40 if P.get("saturate") else 4) / 127)),
                              eps=float(P.get("eps", 1e-12)), in_bits=IN_BITS)
    loader = StreamSource(dut, "load", lay["load"])
    await loader.send([{"channel": c, "gain": int(params.gain[c]),
                        "offset": int(params.offset[c])} for c in range(H)])
    nb = math.ceil(H / lanes)
    cmds, beats, expected = [], [], []
    for tok in TOKENS:
        x = make_token(tok)
        q = layernorm_int(x[None, :], params)[0]
        pad = nb * lanes - H
        # the padding lanes carry junk: the unit must ignore it
        junk = rng.integers(-(2 ** (IN_BITS - 1)), 2 ** (IN_BITS - 1), size=pad)
        beats += np.concatenate([x, junk]).reshape(nb, lanes).tolist()
        expected += np.concatenate([q, np.zeros(pad, np.int64)]).reshape(nb, lanes).tolist()
        cmds.append({"hidden": H, "eps": params.eps_int})
    dut._log.info("%s: H=%d lanes=%d tokens=%d eps_int=%d", label, H, lanes, len(TOKENS),
                  params.eps_int)
    await run_rows(dut, cmds=cmds, beats=beats, expected=expected, layouts=lay,
                   model_cycles=layernorm_cycles(CFG, [H] * len(TOKENS), IN_BITS), idle=idle,
                   backpressure=backpressure, label=label, seed=SEED, what="tokens")


globals().update(stall_tests(run))
