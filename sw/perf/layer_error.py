"""Per-layer error of the integer golden model on real MiniLM activations.

``python -m sw.perf.layer_error [--seq 64] [--out build/bench/layer_error.json]`` calibrates
each of MiniLM's 6 layers on 6 of the benchmark sentences, runs the last (held out) through
:func:`sw.compiler.qlayer.layer_int`, and reports the cosine similarity of its output with the
float layer, next to the range of the second LayerNorm's input (absolute max vs 99th
percentile), and the cosine of a variant that carries the FFN-output linear and both residual
adds in int16 into LayerNorm (emulated in float64 from the same integer accumulators: a
what-if for the numerics contract, not a bit-exact model).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from sw.compiler.qlayer import _linear, cosine, layer_int, quantize_bert_layer
from sw.perf.bench_vector import SENTENCES, _load_minilm
from sw.ref.gelu import gelu_int
from sw.ref.gemm import dense_gemm_int, spmm_int
from sw.ref.quant import requantize_int
from sw.ref.softmax import softmax_int

__all__ = ["layer_errors"]

I16 = 32767


def _ln_float(x, scale_in, ln, scale_out):
    y = torch.nn.functional.layer_norm(torch.from_numpy(x * scale_in), (x.shape[-1],),
                                       ln.weight.detach().double(), ln.bias.detach().double(),
                                       ln.eps).numpy()
    return np.clip(np.round(y / scale_out), -128, 127).astype(np.int64)


def _int16_residual(ql, layer, xi, mask):
    """The layer with the FFN output and both residual sums in int16 (float-emulated LNs)."""
    q, k, v = (_linear(xi, ql.linears[n]) for n in "qkv")
    d = ql.hidden // ql.heads
    ctx = np.zeros_like(xi)
    for h in range(ql.heads):
        c = slice(h * d, (h + 1) * d)
        p = softmax_int(dense_gemm_int(q[:, c], k[:, c]), ql.softmax[h], mask[None, :])
        ctx[:, c] = requantize_int(dense_gemm_int(p, v[:, c].T, a_unsigned=True), ql.pv[h])
    a = _linear(ctx, ql.linears["ao"])
    s_h1 = ql.add1.scale_out * 127 / I16
    h1 = np.clip(np.round((a * ql.add1.scale_a + xi * ql.add1.scale_b) / s_h1), -I16 - 1, I16)
    l1 = _ln_float(h1, s_h1, layer.attention.output.LayerNorm, ql.ln1.scale_out)
    g = gelu_int(_linear(l1, ql.linears["inter"]), ql.gelu)
    lo = ql.linears["out"]
    acc = spmm_int(g, lo.weight).astype(np.int64) + lo.requant.bias
    s_o = ql.add2.scale_a * 127 / I16
    o = np.clip(np.round(acc * lo.in_scale * lo.w_scale / s_o), -I16 - 1, I16)
    s_h2 = ql.add2.scale_out * 127 / I16
    h2 = np.clip(np.round((o * s_o + l1 * ql.add2.scale_b) / s_h2), -I16 - 1, I16)
    return _ln_float(h2, s_h2, layer.output.LayerNorm, ql.ln2.scale_out)


def layer_errors(seq: int = 64) -> list[dict]:
    tok, model = _load_minilm()
    batch = tok(SENTENCES, padding="max_length", truncation=True, max_length=seq,
                return_tensors="pt")
    with torch.no_grad():
        hs = model(**batch, output_hidden_states=True).hidden_states
    masks = batch["attention_mask"].bool()
    held = len(SENTENCES) - 1
    out = []
    for li, layer in enumerate(model.encoder.layer):
        ql = quantize_bert_layer(layer, [hs[li][i:i + 1] for i in range(6)],
                                 [masks[i:i + 1] for i in range(6)])
        x, mk = hs[li][held], masks[held].numpy()
        xi = np.clip(np.round(x.numpy() / ql.in_scale), -128, 127).astype(np.int64)
        ext = (1.0 - torch.as_tensor(mk)[None, None, None, :].float()) * -1e9
        seen = {}

        def grab(mod, inp, out, seen=seen):  # a hook that returned a value would replace out
            seen["ln2_in"] = inp[0].detach()

        hook = layer.output.LayerNorm.register_forward_hook(grab)
        with torch.no_grad():
            yf = layer(x[None], attention_mask=ext)
        hook.remove()
        yf = (yf[0] if isinstance(yf, tuple) else yf)[0].numpy()
        y8 = layer_int(ql, xi, mk) * ql.out_scale
        y16 = _int16_residual(ql, layer, xi, mk) * ql.out_scale
        ln2_in = seen["ln2_in"][0].abs().numpy()[mk]
        out.append({
            "layer": li,
            "cosine_int8": cosine(y8[mk], yf[mk]),
            "cosine_int16_residual": cosine(y16[mk], yf[mk]),
            "ln2_input_absmax": float(ln2_in.max()),
            "ln2_input_p99": float(np.quantile(ln2_in, 0.99)),
        })
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--out", default="build/bench/layer_error.json")
    args = ap.parse_args(argv)
    rows = layer_errors(args.seq)
    for r in rows:
        print(f"layer {r['layer']}: cosine int8 {r['cosine_int8']:.4f}, int16 residual "
              f"{r['cosine_int16_residual']:.4f}; LayerNorm-2 input |max| "
              f"{r['ln2_input_absmax']:.1f} vs p99 {r['ln2_input_p99']:.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seq": args.seq, "layers": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
