"""Quantization, requantization and residual add: the int8 numerics contract.

Float side (host, PyTorch):
  * weights: symmetric int8 per output channel, ``scale = max|w_row| / 127``, values in
    [-127, 127] (round half to even, as ``torch.round``);
  * activations: symmetric int8 per tensor, ``scale = amax / 127``, values in [-128, 127].

Integer side (bit-exact, what hardware does): :func:`requantize_int` and :func:`add_int`,
both built on :func:`sw.ref.fixedpoint.round_shift` (ties toward +infinity) and saturation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .fixedpoint import (
    INT8_MAX,
    INT8_MIN,
    INT32_MAX,
    INT32_MIN,
    MULT_BITS,
    as_int_array,
    quantize_multiplier,
    round_shift,
    saturate,
)

if TYPE_CHECKING:  # torch is imported lazily: the bit-exact paths never need it
    import torch

__all__ = [
    "weight_scales",
    "quantize_weights",
    "activation_scale",
    "quantize_activations",
    "dequantize",
    "fake_quantize",
    "RequantParams",
    "requant_params",
    "requantize_int",
    "requantize_float",
    "AddParams",
    "add_params",
    "add_int",
    "add_float",
]


def _float_tensor(x, name: str) -> torch.Tensor:
    import torch

    t = torch.as_tensor(x)
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} holds non-finite values (NaN or inf)")
    return t


def _positive_scale(scale, name: str) -> torch.Tensor:
    import torch

    s = torch.as_tensor(scale, dtype=torch.float64)
    if not (torch.isfinite(s).all() and (s > 0).all()):
        raise ValueError(f"{name} must be finite and > 0, got {s.tolist()}")
    return s


# -- float quantization (host side) ---------------------------------------------------------------
def weight_scales(w) -> torch.Tensor:
    """Per-output-channel symmetric scales of a weight ``[out, in]``: ``max|w_row| / 127``.

    An all-zero row gets scale 1.0 (any scale represents it exactly).
    """
    import torch

    w = _float_tensor(w, "weight")
    if w.dim() != 2:
        raise ValueError(f"weight must be 2-D [out, in], got shape {tuple(w.shape)}")
    amax = w.detach().abs().amax(dim=1).to(torch.float64)
    return torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))


def quantize_weights(w, scales=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``[out, in]`` weights per output channel to int8 in [-127, 127].

    Returns ``(q, scales)``; ``scales`` defaults to :func:`weight_scales`.
    """
    import torch

    w = _float_tensor(w, "weight")
    s = weight_scales(w) if scales is None else _positive_scale(scales, "weight scales")
    if s.shape != (w.shape[0],):
        raise ValueError(f"need one scale per output channel ({w.shape[0]}), got {tuple(s.shape)}")
    q = torch.round(w.detach().to(torch.float64) / s[:, None]).clamp(-127, 127)
    return q.to(torch.int8), s


def activation_scale(amax: float) -> float:
    """Per-tensor symmetric activation scale from a calibrated absolute maximum."""
    amax = float(amax)
    if not (amax > 0 and np.isfinite(amax)):
        raise ValueError(f"activation amax must be finite and > 0, got {amax!r}")
    return amax / 127.0


def quantize_activations(x, scale: float) -> torch.Tensor:
    """int8 activations ``clamp(round(x / scale), -128, 127)`` (per-tensor scale)."""
    import torch

    x = _float_tensor(x, "activations")
    s = float(_positive_scale(scale, "activation scale"))
    return torch.round(x.detach().to(torch.float64) / s).clamp(INT8_MIN, INT8_MAX).to(torch.int8)


def dequantize(q, scale, *, axis: int | None = None) -> torch.Tensor:
    """float64 ``q * scale``; with ``axis`` the scale is per slice along that axis."""
    import torch

    qt = torch.as_tensor(np.asarray(q) if not isinstance(q, torch.Tensor) else q)
    if qt.is_floating_point():
        raise TypeError(f"dequantize takes integers, got dtype {qt.dtype}")
    s = _positive_scale(scale, "scale")
    if axis is not None:
        shape = [1] * qt.dim()
        shape[axis] = -1
        s = s.reshape(shape)
    return qt.to(torch.float64) * s


def fake_quantize(x, scale: float) -> torch.Tensor:
    """``dequantize(quantize(x))`` in the input's dtype (for quantization-aware training)."""
    import torch

    s = float(_positive_scale(scale, "scale"))
    return torch.clamp(torch.round(x / s), INT8_MIN, INT8_MAX) * s


# -- requantization --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RequantParams:
    """Per-output-channel requantizer: ``y = sat8(round_shift(sat32(acc + bias) * m, s))``.

    ``m`` and ``s`` are int64 arrays of shape ``[channels]`` (from :func:`quantize_multiplier`);
    ``bias`` is int32-valued int64 ``[channels]``. ``real`` keeps the float multipliers.
    """

    m: np.ndarray
    s: np.ndarray
    bias: np.ndarray
    real: np.ndarray

    @property
    def channels(self) -> int:
        return int(self.m.shape[0])


def requant_params(real_multiplier, bias=None) -> RequantParams:
    """Build requantizer parameters from real multipliers ``s_in * s_w[c] / s_out`` (one per
    channel, or a scalar broadcast to ``len(bias)``) and an optional int32 bias."""
    real = np.atleast_1d(np.asarray(real_multiplier, dtype=np.float64))
    if real.ndim != 1:
        raise ValueError(f"real_multiplier must be a scalar or 1-D, got shape {real.shape}")
    if bias is None:
        b = np.zeros(real.shape, dtype=np.int64)
    else:
        b = as_int_array(bias, "bias", lo=INT32_MIN, hi=INT32_MAX).reshape(-1)
        if real.shape[0] == 1 and b.shape[0] != 1:
            real = np.broadcast_to(real, b.shape).copy()
        if b.shape != real.shape:
            raise ValueError(f"bias has {b.shape[0]} channels, multipliers {real.shape[0]}")
    m, s = quantize_multiplier(real)
    return RequantParams(m=m, s=s, bias=b, real=real)


def requantize_int(acc, params: RequantParams, *, axis: int = -1) -> np.ndarray:
    """Bit-exact int32 -> int8 requantization, channels along ``axis`` of ``acc``.

    ``y = sat8(round_shift(sat32(acc + bias) * m, s))``. Widths: the product is at most
    31 + MULT_BITS = 46 bits signed. Error bound against :func:`requantize_float` with the same
    bias and real multiplier: at most 1 LSB (0.5 from the float's own rounding, plus the
    multiplier's relative error ``2**-MULT_BITS`` times ``|y| <= 128``, i.e. < 2**-7 LSB,
    which can flip a rounding decision by one).
    """
    a = as_int_array(acc, "accumulator", lo=INT32_MIN, hi=INT32_MAX)
    a = np.moveaxis(a, axis, -1)
    if a.shape[-1] != params.channels:
        raise ValueError(f"accumulator has {a.shape[-1]} channels along axis {axis}, "
                         f"requantizer has {params.channels}")
    v = saturate(a + params.bias, INT32_MIN, INT32_MAX)
    y = saturate(round_shift(v * params.m, params.s), INT8_MIN, INT8_MAX)
    return np.moveaxis(y, -1, axis).astype(np.int8)


def requantize_float(acc, params: RequantParams, *, axis: int = -1) -> np.ndarray:
    """Float reference: ``clamp(round((acc + bias) * real), -128, 127)`` (float64)."""
    a = np.moveaxis(np.asarray(acc, dtype=np.float64), axis, -1)
    y = np.clip(np.round((a + params.bias) * params.real), INT8_MIN, INT8_MAX)
    return np.moveaxis(y, -1, axis)


# -- residual add ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AddParams:
    """``y = sat8(round_shift(a * m_a + b * m_b, shift))`` with one shared shift."""

    m_a: int
    m_b: int
    shift: int
    scale_a: float
    scale_b: float
    scale_out: float


def add_params(scale_a: float, scale_b: float, scale_out: float) -> AddParams:
    """Integer parameters of ``a*scale_a + b*scale_b`` requantized to ``scale_out``.

    Both multipliers share the shift chosen for the larger ratio, so each is a
    ``MULT_BITS``-bit unsigned integer.
    """
    sa, sb, so = (float(_positive_scale(v, n)) for v, n in
                  ((scale_a, "scale_a"), (scale_b, "scale_b"), (scale_out, "scale_out")))
    _, shift = quantize_multiplier(max(sa, sb) / so)
    shift = int(shift)
    m_a = round(sa / so * 2**shift)
    m_b = round(sb / so * 2**shift)
    if max(m_a, m_b) >= 2**MULT_BITS:  # rounding carried over: one bit less of precision
        shift -= 1
        m_a, m_b = round(sa / so * 2**shift), round(sb / so * 2**shift)
    return AddParams(m_a=m_a, m_b=m_b, shift=shift, scale_a=sa, scale_b=sb, scale_out=so)


def add_int(a, b, params: AddParams) -> np.ndarray:
    """Bit-exact residual add of two int8 tensors of equal shape -> int8.

    Widths: each product is 8 + MULT_BITS bits signed, the sum one bit more (24 bits).
    Error bound against :func:`add_float`: at most 1 LSB of ``scale_out`` whenever both ratios
    ``scale / scale_out`` are at most 64. Argument: the multipliers are rounded to
    ``2**-shift`` with ``2**shift >= 2**(MULT_BITS-1) / max_ratio``, so the exact sum before the
    final rounding is off by at most ``2 * 128 * 0.5 * 2**-shift <= max_ratio / 128 <= 0.5``;
    two roundings of values 0.5 apart differ by at most 1.
    """
    ai = as_int_array(a, "a", lo=INT8_MIN, hi=INT8_MAX)
    bi = as_int_array(b, "b", lo=INT8_MIN, hi=INT8_MAX)
    if ai.shape != bi.shape:
        raise ValueError(f"residual add needs equal shapes, got {ai.shape} and {bi.shape}")
    y = round_shift(ai * params.m_a + bi * params.m_b, params.shift)
    return saturate(y, INT8_MIN, INT8_MAX).astype(np.int8)


def add_float(a, b, params: AddParams) -> np.ndarray:
    """Float reference of :func:`add_int`: dequantize, add, requantize with round-to-nearest."""
    y = (np.asarray(a, np.float64) * params.scale_a + np.asarray(b, np.float64) * params.scale_b)
    return np.clip(np.round(y / params.scale_out), INT8_MIN, INT8_MAX)
