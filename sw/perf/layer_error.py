"""Per-layer error of the integer golden model on real MiniLM activations.

``python -m sw.perf.layer_error [--seq 64] [--out build/bench/layer_error.json]`` calibrates
each of MiniLM's 6 layers on 6 of the benchmark sentences, runs the last (held out) through
:func:`sw.compiler.qlayer.layer_int`, and reports the cosine similarity of its output with the
float layer, next to the range of the second LayerNorm's input (absolute max vs 99th
percentile), for the golden model with the int16 residual path (the default) and with
everything int8 (``residual_bits=8``). Both columns are the bit-exact integer model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from sw.compiler.qlayer import cosine, layer_int, quantize_bert_layer
from sw.perf.bench_vector import SENTENCES, _load_minilm

__all__ = ["layer_errors"]

I16 = 32767


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
        q8 = quantize_bert_layer(layer, [hs[li][i:i + 1] for i in range(6)],
                                 [masks[i:i + 1] for i in range(6)], residual_bits=8)
        y8 = layer_int(q8, xi, mk) * q8.out_scale
        y16 = layer_int(ql, xi, mk) * ql.out_scale
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
        print(f"layer {r['layer']}: cosine all-int8 {r['cosine_int8']:.4f}, int16 residual "
              f"{r['cosine_int16_residual']:.4f}; LayerNorm-2 input |max| "
              f"{r['ln2_input_absmax']:.1f} vs p99 {r['ln2_input_p99']:.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seq": args.seq, "layers": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
