"""A BERT encoder layer in the accelerator's integer terms, and its bit-exact golden model.

:func:`quantize_bert_layer` calibrates a (pruned) Hugging Face ``BertLayer`` on sample hidden
states and derives every integer parameter of the int8 dataflow the accelerator runs:

```
x int8 --Q,K,V linears (N:M)--> q, k, v int8 (per-head scales for q and k)
q_h . k_h^T -> int32 scores --softmax (key mask)--> p uint8 (/255)
p . v_h -> int32 --requant--> ctx int8 --attention-output linear--> a int8
add(a, x) -> h1 int16 -> LayerNorm -> l1 int8 --intermediate linear--> GELU table (of the
  model's own activation: :func:`ffn_activation`)
  --output linear--> o int16;  add(o, l1) -> h2 int16 -> LayerNorm -> y int8
```

The residual path (``o``, ``h1``, ``h2``) is int16 by default: real BERT activations have
outlier channels there (MiniLM: |h2| up to 218 while 99 % stay below 2.4) that one int8 scale
cannot carry without zeroing the other channels (``residual_bits=8`` keeps everything int8,
for comparison; ``python -m sw.perf.layer_error`` measures both).

:func:`layer_int` runs that dataflow with the ``sw/ref`` integer ops only: it is the golden
model the ``ref`` backend and the RTL must match bit for bit. :func:`layer_float` runs the
float layer on the same dequantized input, for end-to-end error figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sw.nm import pack
from sw.prune.quantize import QuantLinear, mse_amax
from sw.ref.fixedpoint import INT32_MAX
from sw.ref.gelu import GeluParams, gelu_int, gelu_params
from sw.ref.gemm import dense_gemm_int, spmm_int
from sw.ref.layernorm import LayerNormParams, layernorm_int, layernorm_params
from sw.ref.quant import (
    AddParams,
    RequantParams,
    acc_bound,
    activation_scale,
    add_int,
    add_params,
    quantize_weights,
    requant_params,
    requantize_int,
)
from sw.ref.softmax import _MIN_SCALE as SOFTMAX_MIN_SCALE  # (its smallest score scale)
from sw.ref.softmax import SoftmaxParams, softmax_int, softmax_params

__all__ = ["QuantBertLayer", "quantize_bert_layer", "layer_int", "layer_float", "cosine",
           "ffn_activation", "bert_layer_reference", "check_bert_layer"]

_LINEARS = {"q": "attention.self.query", "k": "attention.self.key",
            "v": "attention.self.value", "ao": "attention.output.dense",
            "inter": "intermediate.dense", "out": "output.dense"}


@dataclass
class QuantBertLayer:
    """Every integer parameter of one encoder layer (see the module docstring)."""

    heads: int
    hidden: int
    in_scale: float
    linears: dict[str, QuantLinear]
    softmax: list[SoftmaxParams]  # per head
    pv: list[RequantParams]  # per head: int32 P.V -> int8 context
    add1: AddParams
    ln1: LayerNormParams
    gelu: GeluParams
    add2: AddParams
    ln2: LayerNormParams

    @property
    def out_scale(self) -> float:
        return self.ln2.scale_out


def _get(layer, path):
    mod = layer
    for part in path.split("."):
        mod = getattr(mod, part)
    return mod


def _quant_linear(linear, in_scale: float, out_scale, n: int, m: int,
                  out_bits: int = 8) -> QuantLinear:
    """Like :func:`sw.prune.quantize.quantize_linear`, with per-channel output scales."""
    w = linear.weight.detach()
    q, w_scale = quantize_weights(w)
    out_scale = np.broadcast_to(np.asarray(out_scale, np.float64), (w.shape[0],))
    acc_scale = in_scale * w_scale.numpy()
    bias = np.round(linear.bias.detach().double().numpy() / acc_scale)
    if np.abs(bias).max() > INT32_MAX:
        raise ValueError("a bias does not fit int32 at this scale")
    return QuantLinear(weight=pack(q.numpy(), n, m), w_scale=w_scale.numpy(), in_scale=in_scale,
                       out_scale=out_scale.copy(),
                       requant=requant_params(acc_scale / out_scale, bias.astype(np.int64),
                                              out_bits=out_bits, acc_bound=acc_bound(q.numpy())))


def _amax(t: torch.Tensor) -> float:
    return float(t.detach().abs().max())


#: a little above the smallest score scale :func:`softmax_params` takes (sw.ref.softmax's)
_SOFTMAX_MIN_SCALE = 1.05 * SOFTMAX_MIN_SCALE


def _widen_qk(s_q: np.ndarray, s_k: np.ndarray, heads: int, d: int) -> None:
    """Where a head's score scale ``s_q s_k / sqrt(d)`` is below what the integer softmax
    takes (a model with tiny Q and K, e.g. a random one at a 0.02 init std: its scores are
    so small that the softmax is near uniform), widen Q's and K's ranges by the same factor
    until it is not; their int8 values lose that factor's square root of resolution. A head
    :func:`softmax_params` takes as it is stays as it is."""
    for h in range(heads):
        part = slice(h * d, (h + 1) * d)
        scale = s_q[h * d] * s_k[h * d] / math.sqrt(d)
        if scale < _SOFTMAX_MIN_SCALE:
            try:
                softmax_params(scale)
                continue
            except ValueError:
                pass
            f = math.sqrt(_SOFTMAX_MIN_SCALE / scale)
            s_q[part] *= f
            s_k[part] *= f


def _range(amax: float, what: str) -> float:
    """A calibrated range; 1.0 where the samples hold only zeros (a pruned head's Q or K, a
    zeroed V, an FFN whose activations are all 0): the tensor is zeros at any scale, and
    1.0 keeps the multipliers that divide by its scale finite and in range."""
    if not math.isfinite(amax):
        raise ValueError(f"calibration: {what} is not finite (range {amax!r}); the model or "
                         "its input holds inf or NaN")
    return amax if amax > 0 else 1.0


def ffn_activation(layer):
    """The layer's FFN activation (``intermediate.intermediate_act_fn``: GELU, ``gelu_new``,
    ReLU, SiLU, ...) as a function of float64 arrays, for the table of the GELU unit
    (:func:`sw.ref.gelu.gelu_params`). It must be elementwise: the unit looks each int8
    input up on its own."""
    act = layer.intermediate.intermediate_act_fn
    name = getattr(act, "__name__", type(act).__name__)

    def fn(v: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(v, dtype=torch.float64)
        with torch.no_grad():
            try:
                out = act(t)
            except RuntimeError:  # a module with float32 parameters (PReLU)
                out = act(t.float()).double()
        return out.numpy()

    probe = np.linspace(-8.0, 8.0, 33)
    whole = fn(probe)
    alone = np.concatenate([fn(probe[i:i + 1]) for i in range(probe.size)])
    if whole.shape != probe.shape or not np.allclose(whole, alone, rtol=1e-9, atol=1e-12):
        raise ValueError(f"the FFN activation {name} is not elementwise: the accelerator "
                         "applies it as a 256-entry table per int8 input")
    return fn


def quantize_bert_layer(layer, samples, masks=None, *, in_scale: float | None = None,
                        nm: dict[str, tuple[int, int]] | None = None,
                        residual_bits: int = 16, calibration: str = "mse") -> QuantBertLayer:
    """Calibrate ``layer`` (a HF ``BertLayer``, weights already N:M where ``nm`` says so) on
    ``samples`` (float hidden states ``[B, L, H]``) with boolean key ``masks`` ``[B, L]``.
    ``residual_bits`` (16 or 8) is the width of the FFN output and the residual sums.

    ``calibration`` picks the int8 activation ranges: ``"mse"`` (default) clips each at the
    range that minimises its quantization MSE on the samples (:func:`mse_amax`: the GELU and
    LayerNorm outputs of real BERTs have rare outliers that would otherwise coarsen every
    other value); ``"amax"`` takes the largest magnitude seen. Q and K keep per-head amax
    scales and the int16 residual path keeps amax either way."""
    if residual_bits not in (8, 16):
        raise ValueError(f"residual_bits must be 8 or 16, got {residual_bits!r}")
    if calibration not in ("mse", "amax"):
        raise ValueError(f"calibration must be 'mse' or 'amax', got {calibration!r}")
    top = 2 ** (residual_bits - 1) - 1
    att = layer.attention.self
    heads, hidden = att.num_attention_heads, att.all_head_size
    d = hidden // heads
    nm = nm or {}
    cap: dict[str, list[torch.Tensor]] = {}

    def grab(name):
        def hook(mod, inp, out):
            cap.setdefault(name, []).append(out.detach())
            cap.setdefault(name + ".in", []).append(inp[0].detach())
        return hook

    points = {**{k: _get(layer, p) for k, p in _LINEARS.items()},
              "ln1": layer.attention.output.LayerNorm, "ln2": layer.output.LayerNorm,
              "gelu": layer.intermediate}
    hooks = [mod.register_forward_hook(grab(name)) for name, mod in points.items()]
    try:
        with torch.no_grad():
            for i, x in enumerate(samples):
                mask = None if masks is None else masks[i]
                ext = None if mask is None else (1.0 - mask[:, None, None, :].float()) * -1e9
                layer(x, attention_mask=ext)
    finally:
        for h in hooks:
            h.remove()

    def amax(name):
        return _range(max(_amax(t) for t in cap[name]), name)

    def rng(name):
        return _range(mse_amax(cap[name]), name) if calibration == "mse" else amax(name)

    def head_amax(name):
        return np.array([_range(max(_amax(t[..., h * d:(h + 1) * d]) for t in cap[name]),
                                f"{name} of head {h}") for h in range(heads)])

    s_x = in_scale or activation_scale(_range(
        mse_amax(list(samples)) if calibration == "mse" else max(_amax(x) for x in samples),
        "the input"))
    s_q = np.repeat(head_amax("q") / 127, d)
    s_k = np.repeat(head_amax("k") / 127, d)
    _widen_qk(s_q, s_k, heads, d)
    s_v = activation_scale(rng("v"))
    s_ctx = activation_scale(rng("ao.in"))
    lin = {}
    for key, ins in (("q", s_x), ("k", s_x), ("v", s_x)):
        out = {"q": s_q, "k": s_k, "v": s_v}[key]
        lin[key] = _quant_linear(_get(layer, _LINEARS[key]), ins, out, *nm.get(key, (8, 8)))
    s_ao = activation_scale(rng("ao"))
    lin["ao"] = _quant_linear(_get(layer, _LINEARS["ao"]), s_ctx, s_ao, *nm.get("ao", (8, 8)))
    s_h1 = amax("ln1.in") / top
    s_l1 = activation_scale(rng("ln1"))
    s_i = activation_scale(rng("inter"))
    lin["inter"] = _quant_linear(_get(layer, _LINEARS["inter"]), s_l1, s_i,
                                 *nm.get("inter", (8, 8)))
    s_g = activation_scale(rng("gelu"))
    s_o = amax("out") / top
    lin["out"] = _quant_linear(_get(layer, _LINEARS["out"]), s_g, s_o, *nm.get("out", (8, 8)),
                               out_bits=residual_bits)
    s_h2 = amax("ln2.in") / top
    s_l2 = activation_scale(rng("ln2"))
    ln1m, ln2m = layer.attention.output.LayerNorm, layer.output.LayerNorm
    return QuantBertLayer(
        heads=heads, hidden=hidden, in_scale=s_x, linears=lin,
        softmax=[softmax_params(s_q[h * d] * s_k[h * d] / math.sqrt(d)) for h in range(heads)],
        pv=[requant_params(np.full(d, s_v / 255 / s_ctx)) for _ in range(heads)],
        add1=add_params(s_ao, s_x, s_h1, out_bits=residual_bits),
        ln1=layernorm_params(s_h1, ln1m.weight, ln1m.bias, s_l1, ln1m.eps, in_bits=residual_bits),
        gelu=gelu_params(s_i, s_g, ffn_activation(layer)),
        add2=add_params(s_o, s_l1, s_h2, a_bits=residual_bits, out_bits=residual_bits),
        ln2=layernorm_params(s_h2, ln2m.weight, ln2m.bias, s_l2, ln2m.eps, in_bits=residual_bits),
    )


def _linear(x, ql: QuantLinear) -> np.ndarray:
    return requantize_int(spmm_int(x, ql.weight), ql.requant)


def layer_int(ql: QuantBertLayer, x, key_mask=None) -> np.ndarray:
    """The bit-exact integer layer: int8 ``x [L, H]`` -> int8 ``[L, H]`` (scale ``out_scale``)."""
    x = np.asarray(x, np.int64)
    if x.ndim != 2 or x.shape[1] != ql.hidden:
        raise ValueError(f"layer input must be [tokens, {ql.hidden}], got shape {x.shape}")
    L, d = x.shape[0], ql.hidden // ql.heads
    mask = np.ones(L, bool) if key_mask is None else np.asarray(key_mask, bool)
    q, k, v = (_linear(x, ql.linears[n]) for n in ("q", "k", "v"))
    ctx = np.zeros((L, ql.hidden), np.int64)
    for h in range(ql.heads):
        cols = slice(h * d, (h + 1) * d)
        scores = dense_gemm_int(q[:, cols], k[:, cols])
        p = softmax_int(scores, ql.softmax[h], mask[None, :])
        ctx[:, cols] = requantize_int(dense_gemm_int(p, v[:, cols].T, a_unsigned=True), ql.pv[h])
    a = _linear(ctx, ql.linears["ao"])
    l1 = layernorm_int(add_int(a, x, ql.add1), ql.ln1)
    g = gelu_int(_linear(l1, ql.linears["inter"]), ql.gelu)
    o = _linear(g, ql.linears["out"])
    return layernorm_int(add_int(o, l1, ql.add2), ql.ln2)


def layer_float(layer, x: torch.Tensor, key_mask=None) -> torch.Tensor:
    """The float HF layer on ``x [L, H]`` (one sequence) with an optional boolean key mask."""
    ext = None
    if key_mask is not None:
        m = torch.as_tensor(np.asarray(key_mask, bool))
        ext = (1.0 - m[None, None, None, :].float()) * -1e9
    with torch.no_grad():
        out = layer(x[None].float(), attention_mask=ext)
    out = out[0] if isinstance(out, tuple) else out
    return out[0]


def bert_layer_reference(layer, x: torch.Tensor, ext=None) -> torch.Tensor:
    """The dataflow the accelerator runs (the module docstring's), in float from ``layer``'s
    weights: plain scaled dot-product attention, post-LayerNorm residuals, the FFN with
    ``intermediate_act_fn``. ``x [B, L, H]``, ``ext``: the additive key mask ``[B, 1, 1, L]``.
    :func:`check_bert_layer` compares it with the layer's own forward."""
    att = layer.attention.self
    heads, hidden = att.num_attention_heads, att.all_head_size
    d = hidden // heads
    b, n = x.shape[:2]

    def split(t):
        return t.view(b, n, heads, d).transpose(1, 2)

    def lin(mod, t):
        return torch.nn.functional.linear(t, mod.weight, mod.bias)

    def norm(mod, t):
        return torch.nn.functional.layer_norm(t, (t.shape[-1],), mod.weight, mod.bias, mod.eps)

    with torch.no_grad():
        scores = split(lin(att.query, x)) @ split(lin(att.key, x)).transpose(-1, -2)
        scores = scores / math.sqrt(d) + (0.0 if ext is None else ext)
        ctx = (scores.softmax(-1) @ split(lin(att.value, x))).transpose(1, 2).reshape(b, n, -1)
        h1 = norm(layer.attention.output.LayerNorm, lin(layer.attention.output.dense, ctx) + x)
        inter = layer.intermediate.intermediate_act_fn(lin(layer.intermediate.dense, h1))
        return norm(layer.output.LayerNorm, lin(layer.output.dense, inter) + h1)


def check_bert_layer(layer, x: torch.Tensor, ext=None, *, what: str = "the layer") -> None:
    """``ValueError`` unless ``layer``'s own forward on ``x`` is :func:`bert_layer_reference`
    within 1e-3 of its output range (standard layers agree to float32 rounding): a layer of
    another structure (relative positions in its attention, pre-LayerNorm, another norm)
    would otherwise be compiled as a BERT layer and give wrong results silently."""
    try:
        ref = bert_layer_reference(layer, x, ext)
    except (AttributeError, RuntimeError) as e:
        raise ValueError(f"{what} ({type(layer).__name__}) is not a BERT layer the accelerator "
                         f"runs: {type(e).__name__}: {e}") from None
    with torch.no_grad():
        out = layer(x, attention_mask=ext)
    out = out[0] if isinstance(out, tuple) else out
    err = float((out - ref).abs().max())
    scale = float(ref.abs().max()) or 1.0
    if not err <= 1e-3 * scale:
        raise ValueError(
            f"{what} ({type(layer).__name__}) computes something other than a BERT layer "
            f"(max difference {err:.3g} against plain attention with post-LayerNorm "
            f"residuals, outputs up to {scale:.3g}); relative positions, pre-LayerNorm or "
            "another norm are not what the accelerator runs")


def cosine(a, b) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
