"""cocotb bench: hw.vector.layernorm.LayerNormUnit against sw.ref.layernorm.layernorm_int.

Parameters: ``config`` (AcceleratorConfig dict), ``hidden`` (H of this layer), ``tokens``:
a list of ``{kind, seed}`` with ``kind`` in ``random``, ``low_var``, ``equal``, ``huge``,
``alternating`` (or ``kind: given`` with explicit ``values``); ``saturate`` (a large gamma, so
outputs clamp); optional real ``gamma``, ``beta``, ``scale_in``, ``scale_out``, ``eps``.
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


def make_token(tok: dict) -> np.ndarray:
    kind = tok["kind"]
    if kind == "given":  # explicit int8 values (e.g. real hidden states)
        return np.asarray(tok["values"], np.int64)
    rng = np.random.default_rng(tok["seed"])
    if kind == "equal":
        return np.full(H, int(rng.integers(-128, 128)))
    if kind == "huge":
        x = np.zeros(H, np.int64)
        x[rng.integers(H)] = 127
        return x
    if kind == "alternating":
        return np.where(np.arange(H) % 2 == 0, -128, 127)
    if kind == "low_var":
        return np.round(rng.normal(0, 2, size=H)).clip(-128, 127).astype(np.int64)
    return rng.integers(-128, 128, size=H)


async def run(dut, idle, backpressure, label):
    await start_clock(dut)
    await reset(dut)
    lay = layernorm_layouts(CFG)
    lanes = CFG.vector_lanes
    rng = np.random.default_rng(SEED)
    gamma = np.asarray(P["gamma"]) if "gamma" in P else \
        rng.uniform(0.5, 2.0, H) * (40 if P.get("saturate") else 1)
    beta = np.asarray(P["beta"]) if "beta" in P else rng.uniform(-0.5, 0.5, H)
    params = layernorm_params(float(P.get("scale_in", 0.05)), gamma, beta,
                              float(P.get("scale_out", (40 if P.get("saturate") else 4) / 127)),
                              eps=float(P.get("eps", 1e-12)))
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
        junk = rng.integers(-128, 128, size=pad)
        beats += np.concatenate([x, junk]).reshape(nb, lanes).tolist()
        expected += np.concatenate([q, np.zeros(pad, np.int64)]).reshape(nb, lanes).tolist()
        cmds.append({"hidden": H, "eps": params.eps_int})
    dut._log.info("%s: H=%d lanes=%d tokens=%d eps_int=%d", label, H, lanes, len(TOKENS),
                  params.eps_int)
    await run_rows(dut, cmds=cmds, beats=beats, expected=expected, layouts=lay,
                   model_cycles=layernorm_cycles(CFG, [H] * len(TOKENS)), idle=idle,
                   backpressure=backpressure, label=label, seed=SEED, what="tokens")


globals().update(stall_tests(run))
