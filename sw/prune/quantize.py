"""Post-training int8 quantization of N:M Linear layers, in the numerics contract's terms.

:func:`calibrate` records the absolute maximum of every encoder Linear's input and output
over a few batches; :func:`quantize_linear` turns a (masked) Linear and its calibrated ranges
into a :class:`QuantLinear`: int8 weights per output channel (zeros stay zero, so N:M holds),
the int32 bias in accumulator units, and the per-channel requantizer of
:func:`sw.ref.quant.requant_params`. :func:`linear_int_torch` evaluates it with torch integer
ops only; it equals ``sw/ref``'s ``spmm_int`` + ``requantize_int`` bit for bit (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sw.nm import PackedNM, check_nm, pack
from sw.ref.fixedpoint import INT32_MAX
from sw.ref.quant import (
    V_MAX,
    V_MIN,
    RequantParams,
    acc_bound,
    activation_scale,
    quantize_weights,
    requant_params,
)

from .sparsify import encoder_linears

__all__ = ["QuantLinear", "calibrate", "quantize_linear", "linear_int_torch", "mse_amax"]


@dataclass
class QuantLinear:
    """One Linear of the accelerator: packed int8 N:M weights + requantizer + scales."""

    weight: PackedNM
    w_scale: np.ndarray  # float64 [out]
    in_scale: float
    out_scale: float
    requant: RequantParams  # bias in accumulator units inside

    @property
    def n(self) -> int:
        return self.weight.n

    @property
    def m(self) -> int:
        return self.weight.m


def calibrate(model, batches, *, names=None) -> dict[str, tuple[float, float]]:
    """``{name: (input amax, output amax)}`` of the encoder Linears over ``batches``.

    ``batches`` yields dicts of model inputs (``input_ids``, ``attention_mask``...).
    """
    linears = encoder_linears(model)
    names = list(linears) if names is None else names
    stats = {n: [0.0, 0.0] for n in names}
    hooks = []
    for name in names:
        def hook(mod, inp, out, name=name):
            stats[name][0] = max(stats[name][0], float(inp[0].detach().abs().max()))
            stats[name][1] = max(stats[name][1], float(out.detach().abs().max()))
        hooks.append(linears[name].register_forward_hook(hook))
    seen = 0
    try:
        with torch.no_grad():
            for batch in batches:
                model(**batch)
                seen += 1
    finally:
        for h in hooks:
            h.remove()
    if seen == 0:
        raise ValueError("calibration needs at least one batch")
    return {n: (a, b) for n, (a, b) in stats.items()}


def mse_amax(samples, bits: int = 8, *, grid: int = 64, max_values: int = 1 << 20) -> float:
    """The clipping range that minimises the mean squared error of symmetric ``bits``-bit
    quantization over ``samples`` (a tensor or a list of tensors): ``amax * r`` for the best
    ``r`` on a grid in (0, 1]. Rare outliers then clip instead of coarsening every other value
    (TensorRT's MSE calibrator does the same); a tensor without outliers keeps ``r`` near 1.
    The error is measured on at most ``max_values`` values (a fixed-seed subsample that always
    keeps the largest magnitude), so calibration stays fast on long sequences.
    """
    x = torch.cat([t.detach().reshape(-1).double() for t in
                   (samples if isinstance(samples, list | tuple) else [samples])])
    amax = float(x.abs().max())
    if x.numel() > max_values:
        keep = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(0))
        x = torch.cat([x[keep[:max_values - 1]], x[x.abs().argmax()].reshape(1)])
    if amax == 0.0:
        return 0.0
    top = 2 ** (bits - 1) - 1
    best, best_err = amax, math.inf
    for r in np.linspace(1.0 / grid, 1.0, grid):
        s = amax * float(r) / top
        err = float(((torch.clamp(torch.round(x / s), -top - 1, top) * s - x) ** 2).mean())
        if err < best_err:
            best, best_err = amax * float(r), err
    return best


def quantize_linear(linear: nn.Linear, in_amax: float, out_amax: float, n: int,
                    m: int) -> QuantLinear:
    """Quantize a masked Linear (N:M along its input dimension) with calibrated ranges."""
    w = linear.weight.detach()
    check_nm(w, n, m)
    q, w_scale = quantize_weights(w)
    s_in, s_out = activation_scale(in_amax), activation_scale(out_amax)
    acc_scale = s_in * w_scale.numpy()
    if linear.bias is not None:
        bias = np.round(linear.bias.detach().double().numpy() / acc_scale)
        if np.abs(bias).max() > INT32_MAX:
            raise ValueError(f"bias does not fit int32 at scale {acc_scale.min():.3g}: "
                             f"max |bias / (s_in * s_w)| = {np.abs(bias).max():.3g}")
        bias = bias.astype(np.int64)
    else:
        bias = np.zeros(w.shape[0], np.int64)
    rq = requant_params(acc_scale / s_out, bias, acc_bound=acc_bound(q.numpy()))
    return QuantLinear(weight=pack(q.numpy(), n, m), w_scale=w_scale.numpy(), in_scale=s_in,
                       out_scale=s_out, requant=rq)


def linear_int_torch(x: torch.Tensor, ql: QuantLinear) -> torch.Tensor:
    """int8 ``x [T, K]`` -> int8 ``[T, out]`` with torch integer ops (int64 on the CPU)."""
    if x.dtype != torch.int8:
        raise TypeError(f"linear_int_torch takes int8 activations, got {x.dtype}")
    from sw.nm import unpack

    w = torch.from_numpy(unpack(ql.weight).astype(np.int64))
    acc = x.to(torch.int64) @ w.T
    acc = torch.clamp(acc + torch.from_numpy(ql.requant.bias), V_MIN, V_MAX)
    mult = torch.from_numpy(ql.requant.m)
    shift = torch.from_numpy(ql.requant.s)
    half = torch.where(shift > 0, torch.ones_like(shift) << (shift - 1).clamp(min=0), 0)
    y = (acc * mult + half) >> shift
    return torch.clamp(y, -128, 127).to(torch.int8)
