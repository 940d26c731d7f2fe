"""CPU baselines for the encoder benchmark: measured, in fresh processes, rounds interleaved.

``nmaccel bench cpu`` times a BERT encoder (``bert-base``: ``BertConfig()`` with seeded random
weights; ``minilm``: the pretrained all-MiniLM-L6-v2; or a saved BERT model directory) at
batch 1 on this machine's CPU with each backend:

* ``torch-fp32``: PyTorch eager, float32;
* ``ort-fp32``: ONNX Runtime (CPU execution provider), float32, on the same encoder exported
  to ONNX (TorchScript exporter, opset 17, static shapes [1, seq]);
* ``torch-int8``: PyTorch dynamic quantization (``torch.ao.quantization.quantize_dynamic``,
  int8 weights of every ``nn.Linear``, activations quantized on the fly; its defaults:
  per-tensor weights, fbgemm quantizes activations to a reduced 7-bit range);
* ``ort-int8``: ONNX Runtime dynamic quantization of that ONNX model
  (``onnxruntime.quantization.quantize_dynamic``: the weight-input ``MatMul`` s, i.e. the
  same ``nn.Linear`` s, with per-output-channel signed int8 weights; activations quantized
  on the fly; attention's activation x activation matmuls stay float, as in PyTorch).

The encoder is the model's forward with embeddings and without the pooler (the pooler is
removed for every backend); its output is ``last_hidden_state``. The ONNX models are exported
once per (model, seq) into ``build/bench/onnx/<model>-seq<seq>/`` together with the input ids
and the PyTorch fp32 output on them; the cache is reused while the versions and settings
recorded in its ``meta.json`` match. ONNX Runtime sessions use ``intra_op_num_threads`` =
PyTorch's thread count, ``inter_op_num_threads`` = 1, sequential execution and
``ORT_ENABLE_ALL`` graph optimizations.

Each (model, backend) runs in its own fresh Python process per round (``python -m
sw.perf.cpu worker ...``): load, warm up, then time ``iters`` forward passes. Rounds are
interleaved (every case once per round, in a shuffled order) so slow drifts of a shared
machine spread over all cases. Every case but ``torch-fp32`` compares its last output with
the PyTorch fp32 output on the same input (max abs difference and cosine); ``ort-fp32``
fails the run when the difference exceeds ``ORT_FP32_ATOL``. The report gives per case the
median, the 10th and 90th percentiles and the min of all timed passes, plus threads, CPU
model and versions. Nothing here is asserted as a time limit anywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

__all__ = ["BACKENDS", "MODELS", "ORT_FP32_ATOL", "run_cpu_bench", "cpu_model"]

BACKENDS = ("torch-fp32", "ort-fp32", "torch-int8", "ort-int8")
MODELS = ("bert-base", "minilm")
# ort-fp32 vs torch-fp32 on last_hidden_state (LayerNorm output, values of order 1).
ORT_FP32_ATOL = 1e-3
ONNX_OPSET = 17
# Bump when the export or quantization settings change: invalidates cached ONNX models.
EXPORT_VERSION = 1
ONNX_FILES = {"ort-fp32": "fp32.onnx", "ort-int8": "int8.onnx"}
QUANTIZATION = ("onnxruntime.quantization.quantize_dynamic: op_types_to_quantize=[MatMul] "
                "(weight-input MatMuls only), weight_type=QInt8, per_channel=True (axis -1, "
                "output channels), reduce_range=False; activations uint8, dynamic")
_PROGRESS = "progress: "


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class InputError(ValueError):
    """Bad input to a bench process (a name, an option, a model that does not load): what a
    child reports as one line, as opposed to a failure of the work itself."""


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")


def _check_model(name: str) -> None:
    if name not in MODELS and not (Path(name) / "config.json").is_file():
        raise InputError(f"unknown model {name!r}; known: {', '.join(MODELS)} or a saved "
                         "BERT model directory")


def _max_positions(name: str) -> int:
    """The tokens a model's position embeddings hold (BERT-base and MiniLM: 512): for a model
    directory, :func:`sw.driver.encoder_run.max_tokens` of its architecture built on the
    ``meta`` device (no weights read), so RoBERTa's positions count from after its padding
    index as ``nmaccel run`` counts them."""
    if name in MODELS:
        return 512
    import torch
    from transformers import AutoConfig, AutoModel

    from sw.driver.encoder_run import max_tokens

    try:
        with torch.device("meta"):
            model = AutoModel.from_config(AutoConfig.from_pretrained(name))
    except Exception as e:  # noqa: BLE001 (a user's config: whatever transformers raises)
        raise ValueError(f"{name}: not a loadable Hugging Face model config "
                         f"({type(e).__name__}: {e})") from e
    if getattr(model, "embeddings", None) is None:
        raise ValueError(f"{name}: {type(model).__name__} is not a BERT encoder")
    return max_tokens(model)


def _cache_dir(onnx_root: str | Path, model_name: str, seq: int) -> Path:
    """``<onnx_root>/<model>-seq<seq>``; a model directory is keyed by its path and files."""
    if model_name in MODELS:
        key = model_name
    else:
        p = Path(model_name).resolve()
        h = hashlib.sha1(str(p).encode())
        for f in sorted(p.iterdir()):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        key = f"{p.name}-{h.hexdigest()[:10]}"
    return Path(onnx_root) / f"{key}-seq{seq}"


def _load(model_name: str):
    """The encoder every backend measures: the model with its pooler removed."""
    from sw.driver.encoder_run import load_encoder

    try:
        model, _ = load_encoder(model_name, seed=0)
    except ValueError as e:  # the loader's one-line refusal of a model that does not load
        raise InputError(str(e)) from e
    model.pooler = None
    return model.eval()


def _torch_inputs(vocab: int, seq: int):
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, seq), generator=g)
    return ids, torch.ones_like(ids)


def _time(fn, warmup: int, iters: int):
    times, out = [], None
    for i in range(warmup + iters):
        t = time.perf_counter()
        out = fn()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times, out


def _compare(out, ref) -> dict:
    import numpy as np

    a = np.asarray(out, dtype=np.float64).ravel()
    b = np.asarray(ref, dtype=np.float64).ravel()
    return {"vs": "torch-fp32", "max_abs_diff": float(np.abs(a - b).max()),
            "cosine": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))}


def _torch_worker(model_name: str, backend: str, seq: int, iters: int, warmup: int,
                  threads: int | None) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    model = _load(model_name)
    ids, mask = _torch_inputs(model.config.vocab_size, seq)
    res: dict = {}

    def run():
        return model(input_ids=ids, attention_mask=mask).last_hidden_state

    with torch.inference_mode():
        if backend == "torch-int8":
            import warnings

            ref = run().numpy()
            with warnings.catch_warnings():  # torch 2.13 deprecates the very API this measures
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", UserWarning)
                model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
                                                               dtype=torch.qint8)
        times, out = _time(run, warmup, iters)
        if backend == "torch-int8":
            res["check"] = _compare(out.numpy(), ref)
    return {"times_s": times, "threads": torch.get_num_threads(), "torch": torch.__version__,
            **res}


def _ort_worker(model_name: str, backend: str, seq: int, iters: int, warmup: int,
                threads: int, onnx_root: str | Path) -> dict:
    import numpy as np
    import onnxruntime as ort

    d = _cache_dir(onnx_root, model_name, seq)
    if not (d / "meta.json").is_file():
        raise FileNotFoundError(f"{d}: no exported ONNX model (run `python -m sw.perf.cpu "
                                f"prepare --model {model_name} --seq {seq}` first)")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(d / ONNX_FILES[backend]), so,
                                providers=["CPUExecutionProvider"])
    feeds = {"input_ids": np.load(d / "input_ids.npy"),
             "attention_mask": np.load(d / "attention_mask.npy")}
    times, out = _time(lambda: sess.run(None, feeds)[0], warmup, iters)
    check = _compare(out, np.load(d / "torch_fp32_out.npy"))
    if backend == "ort-fp32" and not check["max_abs_diff"] <= ORT_FP32_ATOL:
        raise RuntimeError(f"{model_name}: ort-fp32 output differs from torch-fp32 by "
                           f"{check['max_abs_diff']:.3g} > {ORT_FP32_ATOL}")
    return {"times_s": times, "threads": threads, "onnxruntime": ort.__version__,
            "providers": sess.get_providers(), "check": check}


def _worker(model_name: str, backend: str, seq: int, iters: int, warmup: int,
            threads: int | None, onnx_root: str | Path = "build/bench/onnx") -> dict:
    _check_backend(backend)
    if backend.startswith("torch-"):
        return _torch_worker(model_name, backend, seq, iters, warmup, threads)
    if not threads:
        raise InputError(f"{backend}: --threads is required (PyTorch's thread count)")
    return _ort_worker(model_name, backend, seq, iters, warmup, threads, onnx_root)


def _export(model, ids, mask, path: Path) -> None:
    import warnings

    import torch

    class LastHidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    with warnings.catch_warnings(), torch.no_grad():
        # torch 2.13 deprecates the TorchScript exporter (the dynamo one needs onnxscript); the
        # tracer flags transformers' shape tests, constants at these static shapes; aten::index
        # (mask building) warns about negative indices, which it never gets.
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX "
                                "export", DeprecationWarning)
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning,
                                r"torch\.onnx")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "Exporting aten::index operator", UserWarning,
                                r"torch\.onnx")
        torch.onnx.export(LastHidden(model), (ids, mask), str(path), dynamo=False,
                          input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"], opset_version=ONNX_OPSET)


def _quantize(src: Path, dst: Path) -> dict:
    import logging
    from collections import Counter

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # it logs a hint to pre-process (shape inference + optimization) first; the session's
    # ORT_ENABLE_ALL does the optimization at load time instead.
    logging.getLogger().setLevel(logging.ERROR)
    quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"], per_channel=True,
                     weight_type=QuantType.QInt8)
    ops = Counter(n.op_type for n in onnx.load(str(dst), load_external_data=False).graph.node)
    return {"int8_matmuls": ops["MatMulInteger"], "float_matmuls": ops["MatMul"]}


def _prepare(model_name: str, seq: int, onnx_root: str | Path, progress=print) -> dict:
    """Export the encoder to ONNX fp32 and quantize it to int8 unless cached; save the input
    and the PyTorch fp32 output. Returns the cache's meta plus PyTorch's default threads."""
    import numpy as np
    import onnx
    import onnxruntime
    import torch
    import transformers

    d = _cache_dir(onnx_root, model_name, seq)
    key = {"model": model_name, "seq": seq, "batch": 1, "export_version": EXPORT_VERSION,
           "opset": ONNX_OPSET, "torch": torch.__version__,
           "transformers": transformers.__version__, "onnx": onnx.__version__,
           "onnxruntime": onnxruntime.__version__}
    files = [*ONNX_FILES.values(), "input_ids.npy", "attention_mask.npy", "torch_fp32_out.npy"]
    meta_path = d / "meta.json"
    if (meta_path.is_file() and json.loads(meta_path.read_text()).get("key") == key
            and all((d / f).is_file() for f in files)):
        progress(f"{model_name}: ONNX models cached in {d}")
        return {**json.loads(meta_path.read_text()), "torch_threads": torch.get_num_threads(),
                "cached": True}
    d.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # written last: marks a complete cache
    model = _load(model_name)
    ids, mask = _torch_inputs(model.config.vocab_size, seq)
    with torch.inference_mode():
        ref = model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    np.save(d / "input_ids.npy", ids.numpy())
    np.save(d / "attention_mask.npy", mask.numpy())
    np.save(d / "torch_fp32_out.npy", ref)
    progress(f"{model_name}: exporting the fp32 encoder to ONNX (seq {seq}) -> {d}")
    t = time.monotonic()
    _export(model, ids, mask, d / ONNX_FILES["ort-fp32"])
    export_s = time.monotonic() - t
    progress(f"{model_name}: exported in {export_s:.1f} s "
             f"({(d / ONNX_FILES['ort-fp32']).stat().st_size / 2**20:.0f} MiB)")
    progress(f"{model_name}: quantizing to int8 (ORT dynamic, per-channel QInt8 weights)")
    t = time.monotonic()
    counts = _quantize(d / ONNX_FILES["ort-fp32"], d / ONNX_FILES["ort-int8"])
    quant_s = time.monotonic() - t
    progress(f"{model_name}: quantized in {quant_s:.1f} s "
             f"({(d / ONNX_FILES['ort-int8']).stat().st_size / 2**20:.0f} MiB, "
             f"{counts['int8_matmuls']} int8 MatMuls, {counts['float_matmuls']} float)")
    meta = {"key": key, "exporter": f"torch.onnx.export(dynamo=False), opset {ONNX_OPSET}, "
            f"static shapes [1, {seq}]", "quantization": QUANTIZATION, **counts,
            "export_s": round(export_s, 1), "quantize_s": round(quant_s, 1)}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return {**meta, "torch_threads": torch.get_num_threads(), "cached": False}


def _run_prepare(model_name: str, seq: int, onnx_root: Path, progress) -> dict:
    cmd = [sys.executable, "-m", "sw.perf.cpu", "prepare", "--model", model_name,
           "--seq", str(seq), "--onnx-dir", str(onnx_root)]
    last = ""
    with tempfile.TemporaryFile("w+") as err:
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True) as proc:
            for line in proc.stdout:
                line = line.rstrip("\n")
                if line.startswith(_PROGRESS):
                    progress(line[len(_PROGRESS):])
                elif line:
                    last = line
        if proc.returncode != 0:
            err.seek(0)
            raise _child_failure(f"{model_name}: ONNX export failed", proc.returncode,
                                 err.read())
    return json.loads(last)


def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _versions() -> dict:
    out = {}
    for pkg in ("torch", "transformers", "onnx", "onnxruntime"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def run_cpu_bench(*, models=MODELS, backends=BACKENDS, seq: int = 128, rounds: int = 5,
                  iters: int = 10, warmup: int = 3, threads: int | None = None,
                  out: str | Path = "build/bench/cpu.json",
                  onnx_dir: str | Path = "build/bench/onnx", seed: int = 0,
                  progress=print) -> dict:
    from sw import checks

    models = checks.selection(models, "--models")
    backends = checks.selection(backends, "--backends")
    for b in backends:
        _check_backend(b)
    for mname in models:
        _check_model(mname)
        checks.tokens(seq, hi=_max_positions(mname), why=f"{mname}'s position embeddings")
    checks.count(rounds, "--rounds")
    checks.count(iters, "--iters")
    checks.count(warmup, "--warmup", lo=0)
    if threads is not None:
        checks.count(threads, "--threads")
    out = checks.output_path(out)  # before the minutes of measuring, not after
    t0 = time.monotonic()
    onnx_meta: dict[str, dict] = {}
    ort_threads = threads
    if any(b in ONNX_FILES for b in backends):
        for mname in models:
            info = _run_prepare(mname, seq, Path(onnx_dir), progress)
            ort_threads = threads or info.pop("torch_threads")
            onnx_meta[mname] = info
    cases = [(mname, b) for mname in models for b in backends]
    samples: dict[str, list[float]] = {f"{mn}/{b}": [] for mn, b in cases}
    meta: dict[str, dict] = {}
    rng = random.Random(seed)
    for r in range(rounds):
        order = cases[:]
        rng.shuffle(order)
        for mname, b in order:
            n = ort_threads if b in ONNX_FILES else threads
            cmd = [sys.executable, "-m", "sw.perf.cpu", "worker", "--model", mname,
                   "--backend", b, "--seq", str(seq), "--iters", str(iters),
                   "--warmup", str(warmup), "--onnx-dir", str(onnx_dir)]
            cmd += ["--threads", str(n)] if n else []
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise _child_failure(f"{mname}/{b} failed", proc.returncode, proc.stderr)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            samples[f"{mname}/{b}"] += res["times_s"]
            meta[f"{mname}/{b}"] = {k: v for k, v in res.items() if k != "times_s"}
            progress(f"round {r + 1}/{rounds} {mname}/{b}: median "
                     f"{statistics.median(res['times_s']) * 1e3:.1f} ms")
    report = {
        "seq": seq, "batch": 1, "rounds": rounds, "iters_per_round": iters, "warmup": warmup,
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "python": platform.python_version(),
        "versions": _versions(), "ort_fp32_atol": ORT_FP32_ATOL,
        "wall_s": round(time.monotonic() - t0, 1),
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cases": {k: {"median_ms": statistics.median(v) * 1e3,
                      "p10_ms": _percentile(v, 0.1) * 1e3, "p90_ms": _percentile(v, 0.9) * 1e3,
                      "min_ms": min(v) * 1e3, "n": len(v), **meta[k]}
                  for k, v in samples.items()},
        "onnx": {m: {k: v for k, v in i.items() if k != "key"} for m, i in onnx_meta.items()},
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_report(r: dict) -> str:
    lines = [f"CPU baselines, batch 1, seq {r['seq']}, {r['cpu']} ({r['logical_cpus']} logical "
             f"CPUs), {r['rounds']} rounds x {r['iters_per_round']} passes, fresh processes"]
    for k, v in r["cases"].items():
        check = ""
        if "check" in v:
            c = v["check"]
            check = f", vs torch-fp32: max|d| {c['max_abs_diff']:.2g}, cos {c['cosine']:.5f}"
        lines.append(f"  {k:24s} median {v['median_ms']:8.2f} ms  (p10 {v['p10_ms']:.2f}, "
                     f"p90 {v['p90_ms']:.2f}, {v['threads']} threads{check})")
    lines.append("  " + ", ".join(f"{p} {v}" for p, v in r.get("versions", {}).items() if v))
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
    w.add_argument("--onnx-dir", default="build/bench/onnx")
    pr = sub.add_parser("prepare", help="export + quantize the ONNX models (cached)")
    pr.add_argument("--model", required=True)
    pr.add_argument("--seq", type=int, default=128)
    pr.add_argument("--onnx-dir", default="build/bench/onnx")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        if args.cmd == "prepare":
            _check_model(args.model)
            res = _prepare(args.model, args.seq, args.onnx_dir,
                           progress=lambda s: print(_PROGRESS + s, flush=True))
        else:
            res = _worker(args.model, args.backend, args.seq, args.iters, args.warmup,
                          args.threads, args.onnx_dir)
    except InputError as e:  # bad input (a model that does not load): one line for the parent
        print(_INPUT_ERROR + " ".join(str(e).split()), file=sys.stderr)
        return 2
    print(json.dumps(res))
    return 0


#: marks a child's one-line input error (exit status 2) in its stderr
_INPUT_ERROR = "nmaccel-cpu input error: "


def _child_failure(what: str, returncode: int, stderr: str) -> Exception:
    """A child's failure: its one-line input error as a ``ValueError``, anything else (a
    failed export, a crash) as a ``RuntimeError`` with the end of its stderr."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith(_INPUT_ERROR)]
    if returncode == 2 and lines:
        return ValueError(lines[-1][len(_INPUT_ERROR):])
    return RuntimeError(f"{what}:\n" + stderr[-2000:])


if __name__ == "__main__":
    sys.exit(main())
