"""Utilisation benchmark of the spmm engine on BERT-base-shaped GEMMs (``nmaccel bench engine``).

For each preset and case it runs the RTL (Verilator by default) on enough tiles to reach steady
state, checks the values against ``sw/ref`` and the cycles against the model, and writes per
case: ``ideal_cycles`` (MACs / (R*C*M/N)), ``rtl_cycles``, ``model_cycles`` and
``utilization`` = ideal / rtl for the simulated tiles, plus the model's cycles and utilisation
for the full shape (labelled as model figures).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from hw.config import AcceleratorConfig, preset
from sw.perf.engine import GemmShape, gemm_cycles, ideal_cycles

__all__ = ["BERT_BASE_CASES", "run_engine_bench"]

SEQ = 128
#: (name, rows, k, tokens, act_unsigned, sparse): BERT-base at seq 128, one head for attention
BERT_BASE_CASES = [
    ("qkv/attn-out 768x768", 768, 768, SEQ, False, True),
    ("ffn-in 3072x768", 3072, 768, SEQ, False, True),
    ("ffn-out 768x3072", 768, 3072, SEQ, False, True),
    ("QK^T per head (128 keys x d64)", SEQ, 64, SEQ, False, False),
    ("PV per head (d64 x 128 keys, uint8 P)", 64, SEQ, SEQ, True, False),
]


def _patterns(cfg: AcceleratorConfig, sparse: bool) -> list[tuple[str, int]]:
    """Dense, 2:4 and 1:4 expressed in the config's M (2:4 runs as 4:8 when M = 8)."""
    if not sparse:
        return [("dense", cfg.m)]
    return [("dense", cfg.m), ("2:4", cfg.m // 2), ("1:4", cfg.m // 4)]


def run_engine_bench(presets=("tiny", "ecp5"), *, max_tiles: int = 8, seed: int = 1,
                     out: Path = Path("build/bench/engine.json"), progress=print) -> dict:
    """Run the benchmark and write ``out``; returns the report."""
    from sw import checks

    presets = checks.selection(presets, "--presets")
    checks.count(max_tiles, "--tiles")
    out = checks.output_path(out)
    from hw.spmm.engine import SpmmEngine
    from sim.runner import run_bench, simulator

    sim = os.environ.get("SIM") or "verilator"
    os.environ["SIM"] = sim
    report = {"simulator": simulator(), "seed": seed, "max_tiles": max_tiles, "presets": {}}
    for name in presets:
        cfg = preset(name) if isinstance(name, str) else name
        R, C = cfg.pe_rows, cfg.pe_cols
        cases, meta = [], []
        for label, rows, k, tokens, unsigned, sparse in BERT_BASE_CASES:
            for pattern, n in _patterns(cfg, sparse):
                full = GemmShape(rows=rows, k=k, tokens=tokens, n=n, m=cfg.m)
                gemm_cycles(cfg, full)  # refuses, before any simulation, what cfg cannot run
                # a slice of whole tiles: up to 2 row blocks x max_tiles/2 token blocks
                rb = min(math.ceil(rows / R), 2)
                tb = min(math.ceil(tokens / C), max(1, max_tiles // rb))
                sim_rows, sim_tokens = min(rows, rb * R), min(tokens, tb * C)
                cases.append({"name": f"{label} {pattern}", "rows": sim_rows, "k": k,
                              "tokens": sim_tokens, "n": n, "kind": "random",
                              "act_unsigned": unsigned, "seed": seed + len(cases)})
                meta.append((label, pattern, full))
        progress(f"[{cfg.name}] {len(cases)} cases on {sim} (R x C = {R} x {C}, M = {cfg.m})")
        t0 = time.perf_counter()
        bench = run_bench(component=SpmmEngine(config=cfg), bench="sim.benches.engine",
                          case=f"bench-{cfg.name}", testcase="no_stalls",
                          params={"config": cfg.to_dict(), "cases": cases})
        wall = time.perf_counter() - t0
        rows_out = []
        for (label, pattern, full), res in zip(meta, bench["no_stalls"]):
            sim_shape = GemmShape(rows=res["rows"], k=res["k"], tokens=res["tokens"],
                                  n=res["n"], m=cfg.m)
            ideal = ideal_cycles(cfg, sim_shape)
            full_model = gemm_cycles(cfg, full)
            rows_out.append({
                "case": label, "sparsity": pattern, "n": res["n"], "m": cfg.m,
                "shape": {"rows": full.rows, "k": full.k, "tokens": full.tokens},
                "simulated": {"rows": res["rows"], "tokens": res["tokens"],
                              "tiles": res["tiles"], "whole_shape": sim_shape == full},
                "ideal_cycles": ideal,
                "rtl_cycles": res["rtl_cycles"],
                "model_cycles": res["model_cycles"],
                "utilization": ideal / res["rtl_cycles"],
                "full_shape_model_cycles": full_model,
                "full_shape_model_utilization": ideal_cycles(cfg, full) / full_model,
            })
            progress(f"  {label:40s} {pattern:5s} util {ideal / res['rtl_cycles']:.3f} "
                     f"(rtl {res['rtl_cycles']} = model {res['model_cycles']})")
        report["presets"][cfg.name] = {"config": cfg.to_dict(), "wall_s": round(wall, 1),
                                       "cases": rows_out}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    progress(f"wrote {out}")
    return report
