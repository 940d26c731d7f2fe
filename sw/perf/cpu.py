"""CPU baselines for the encoder benchmark: measured, in fresh processes, rounds interleaved.

``nmaccel bench cpu`` times a BERT encoder (``bert-base``: ``BertConfig()`` with seeded random
weights; ``minilm``: the pretrained all-MiniLM-L6-v2) at batch 1 on this machine's CPU with
each backend:

* ``torch-fp32``: PyTorch eager, float32;
* ``torch-int8``: PyTorch dynamic quantization (``torch.ao.quantization.quantize_dynamic``,
  int8 weights of every ``nn.Linear``, activations quantized on the fly).

Each (model, backend) runs in its own fresh Python process per round (``python -m
sw.perf.cpu worker ...``): load, warm up, then time ``iters`` forward passes of the encoder
(embeddings included, pooler excluded). Rounds are interleaved (every case once per round,
in a shuffled order) so slow drifts of a shared machine spread over all cases. The report
gives per case the median, the 10th and 90th percentiles and the min of all timed passes,
plus threads, CPU model and versions. Nothing here is asserted as a time limit anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["BACKENDS", "MODELS", "run_cpu_bench", "cpu_model"]

BACKENDS = ("torch-fp32", "torch-int8")
MODELS = ("bert-base", "minilm")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _worker(model_name: str, backend: str, seq: int, iters: int, warmup: int,
            threads: int | None) -> dict:
    import torch

    from sw.driver.encoder_run import load_encoder

    if threads:
        torch.set_num_threads(threads)
    model, _ = load_encoder(model_name, seed=0)
    model.eval()
    if backend == "torch-int8":
        import warnings

        with warnings.catch_warnings():  # torch 2.13 deprecates the very API this measures
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
                                                           dtype=torch.qint8)
    elif backend != "torch-fp32":
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, seq), generator=g)
    mask = torch.ones_like(ids)
    times = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            t = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            if i >= warmup:
                times.append(time.perf_counter() - t)
    return {"times_s": times, "threads": torch.get_num_threads(), "torch": torch.__version__}


def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def run_cpu_bench(*, models=MODELS, backends=BACKENDS, seq: int = 128, rounds: int = 5,
                  iters: int = 10, warmup: int = 3, threads: int | None = None,
                  out: str | Path = "build/bench/cpu.json", seed: int = 0,
                  progress=print) -> dict:
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"unknown backend {b!r}; known: {', '.join(BACKENDS)}")
    for mname in models:
        if mname not in MODELS:
            raise ValueError(f"unknown model {mname!r}; known: {', '.join(MODELS)}")
    cases = [(mname, b) for mname in models for b in backends]
    samples: dict[str, list[float]] = {f"{mn}/{b}": [] for mn, b in cases}
    meta: dict[str, dict] = {}
    rng = random.Random(seed)
    t0 = time.monotonic()
    for r in range(rounds):
        order = cases[:]
        rng.shuffle(order)
        for mname, b in order:
            cmd = [sys.executable, "-m", "sw.perf.cpu", "worker", "--model", mname,
                   "--backend", b, "--seq", str(seq), "--iters", str(iters),
                   "--warmup", str(warmup)] + (["--threads", str(threads)] if threads else [])
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{mname}/{b} failed:\n" + proc.stderr[-2000:])
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            samples[f"{mname}/{b}"] += res["times_s"]
            meta[f"{mname}/{b}"] = {k: v for k, v in res.items() if k != "times_s"}
            progress(f"round {r + 1}/{rounds} {mname}/{b}: median "
                     f"{statistics.median(res['times_s']) * 1e3:.1f} ms")
    report = {
        "seq": seq, "batch": 1, "rounds": rounds, "iters_per_round": iters, "warmup": warmup,
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "python": platform.python_version(),
        "wall_s": round(time.monotonic() - t0, 1),
        "cases": {k: {"median_ms": statistics.median(v) * 1e3,
                      "p10_ms": _percentile(v, 0.1) * 1e3, "p90_ms": _percentile(v, 0.9) * 1e3,
                      "min_ms": min(v) * 1e3, "n": len(v), **meta[k]}
                  for k, v in samples.items()},
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_report(r: dict) -> str:
    lines = [f"CPU baselines, batch 1, seq {r['seq']}, {r['cpu']} ({r['logical_cpus']} logical "
             f"CPUs), {r['rounds']} rounds x {r['iters_per_round']} passes, fresh processes"]
    for k, v in r["cases"].items():
        lines.append(f"  {k:24s} median {v['median_ms']:8.2f} ms  (p10 {v['p10_ms']:.2f}, "
                     f"p90 {v['p90_ms']:.2f}, {v['threads']} threads)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sw.perf.cpu")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="one timed run (used by run_cpu_bench)")
    w.add_argument("--model", required=True)
    w.add_argument("--backend", required=True)
    w.add_argument("--seq", type=int, default=128)
    w.add_argument("--iters", type=int, default=10)
    w.add_argument("--warmup", type=int, default=3)
    w.add_argument("--threads", type=int)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    res = _worker(args.model, args.backend, args.seq, args.iters, args.warmup, args.threads)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
