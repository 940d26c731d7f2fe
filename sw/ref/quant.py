"""Quantization, requantization and residual add: the int8 numerics contract.

Float side (host, PyTorch):
  * weights: symmetric int8 per output channel, ``scale = max|w_row| / 127``, values in
    [-127, 127] (round half to even, as ``torch.round``);
  * activations: symmetric int8 per tensor, ``scale = amax / 127``, values in [-128, 127].

Integer side (bit-exact, what hardware does): :func:`requantize_int` and :func:`add_int`,
both built on :func:`sw.ref.fixedpoint.round_shift` (ties toward +infinity) and saturation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .fixedpoint import (
    INT8_MAX,
    INT8_MIN,
    INT32_MAX,
    INT32_MIN,
    MAX_SHIFT,
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
    "acc_bound",
    "requantize_int",
    "requantize_float",
    "V_BITS",
    "V_MIN",
    "V_MAX",
    "ADD_MULT_BITS",
    "int_range",
    "AddParams",
    "add_params",
    "add_int",
    "add_float",
]


#: the int widths activations may have: int8 everywhere, int16 on the residual path
_RANGES = {8: (INT8_MIN, INT8_MAX), 16: (-(2**15), 2**15 - 1)}
#: width of the residual add's two multipliers (wider than MULT_BITS: an int16 operand and a
#: large scale ratio share one shift)
ADD_MULT_BITS = 24
#: the requantizer saturates ``acc + bias`` to this many bits (signed), so that ``v * m`` is
#: one DSP48E2 (27 x 15 inside its 27 x 18 multiplier); :func:`requant_params` refuses the
#: parameters for which that could change a result (see :func:`requantize_int`)
V_BITS = 27
V_MIN, V_MAX = -(2 ** (V_BITS - 1)), 2 ** (V_BITS - 1) - 1


def int_range(bits: int) -> tuple[int, int]:
    """``(min, max)`` of a signed ``bits``-bit activation (8 or 16)."""
    try:
        return _RANGES[bits]
    except KeyError:
        raise ValueError(f"activations are int8 or int16, got {bits!r} bits") from None


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
    """Per-output-channel requantizer: ``y = sat8(round_shift(sat27(acc + bias) * m, s))``.

    ``m`` and ``s`` are int64 arrays of shape ``[channels]`` (from :func:`quantize_multiplier`);
    ``bias`` is int32-valued int64 ``[channels]``. ``real`` keeps the float multipliers.
    """

    m: np.ndarray
    s: np.ndarray
    bias: np.ndarray
    real: np.ndarray
    out_bits: int = 8  #: 8, or 16 for the residual path

    @property
    def channels(self) -> int:
        return int(self.m.shape[0])


def requant_params(real_multiplier, bias=None, *, out_bits: int = 8,
                   acc_bound=None) -> RequantParams:
    """Build requantizer parameters from real multipliers ``s_in * s_w[c] / s_out`` (one per
    channel, or a scalar broadcast to ``len(bias)``), an optional int32 bias, and the output
    width (int8, or int16 for the residual path).

    ``acc_bound`` (per channel, or a scalar): the largest ``|acc|`` the channel's reductions
    can form (``128 * sum |w|`` for int8 activations), or ``None``: any int32. Raises
    ``ValueError`` naming the channel if ``acc + bias`` could pass the 27-bit saturation
    (``V_MIN``, ``V_MAX``) while the output there is not yet saturated: only then would the
    saturation change a result."""
    int_range(out_bits)
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
    _check_saturation(m, s, b, real, out_bits, acc_bound)
    return RequantParams(m=m, s=s, bias=b, real=real, out_bits=out_bits)


def acc_bound(weights) -> np.ndarray:
    """The largest ``|acc|`` each output channel's row of int8 ``weights [out, K]`` (zeros
    where pruned) can reach with int8 activations (at most 128 in magnitude):
    ``128 * sum_k |w[c, k]|``, for :func:`requant_params`."""
    w = as_int_array(weights, "weights", lo=INT8_MIN, hi=INT8_MAX)
    if w.ndim != 2:
        raise ValueError(f"weights must be [out, K], got shape {w.shape}")
    return 128 * np.abs(w).sum(axis=1)


def _check_saturation(m, s, bias, real, out_bits: int, acc_bound) -> None:
    lo, hi = int_range(out_bits)
    if acc_bound is None:
        bound = np.full(m.shape, 2**31, dtype=np.int64)
    else:
        bound = np.broadcast_to(as_int_array(acc_bound, "acc_bound", lo=0, hi=2**31),
                                m.shape).astype(np.int64)
    top_ok = (bias + bound <= V_MAX) | (round_shift(V_MAX * m, s) >= hi)
    bot_ok = (bias - bound >= V_MIN) | (round_shift(V_MIN * m, s) <= lo)
    bad = np.flatnonzero(~(top_ok & bot_ok))
    if bad.size:
        c = int(bad[0])
        reach = "any int32" if acc_bound is None else f"|acc| <= {int(bound[c])}"
        raise ValueError(
            f"requantizer channel {c} ({bad.size} of {m.size} channels): bias {int(bias[c])} "
            f"with {reach} can pass the 27-bit saturation of acc + bias (V_MIN..V_MAX = "
            f"{V_MIN}..{V_MAX}) while the int{out_bits} output there, at multiplier "
            f"{float(real[c]):.3g}, is not yet saturated; the scales or the bias are out of "
            f"the requantizer's range")


def requantize_int(acc, params: RequantParams, *, axis: int = -1) -> np.ndarray:
    """Bit-exact int32 -> int8 (or int16) requantization, channels along ``axis`` of ``acc``.

    ``y = sat(round_shift(sat27(acc + bias) * m, s))``: ``acc + bias`` saturates to
    ``V_MIN..V_MAX`` (27 bits signed), so the product is at most 26 + MULT_BITS = 41 bits
    signed. For the parameters :func:`requant_params` accepts, that saturation changes no
    result: either ``acc + bias`` stays inside it, or the output is saturated at its ends
    already (``round_shift`` and the product are monotonic in ``v``).

    Error bound against :func:`requantize_float` with the same bias and real multiplier: at
    most 1 LSB for int8 outputs (0.5 from the float's own rounding, plus the multiplier's
    relative error ``2**-MULT_BITS`` times ``|y| <= 128``, below 2**-7 LSB, which can flip
    one rounding decision), 2 LSB for int16 outputs (``|y| * 2**-MULT_BITS <= 1``).
    """
    a = as_int_array(acc, "accumulator", lo=INT32_MIN, hi=INT32_MAX)
    a = np.moveaxis(a, axis, -1)
    if a.shape[-1] != params.channels:
        raise ValueError(f"accumulator has {a.shape[-1]} channels along axis {axis}, "
                         f"requantizer has {params.channels}")
    v = saturate(a + params.bias, V_MIN, V_MAX)
    y = saturate(round_shift(v * params.m, params.s), *int_range(params.out_bits))
    return np.moveaxis(y, -1, axis).astype(np.int8 if params.out_bits == 8 else np.int16)


def requantize_float(acc, params: RequantParams, *, axis: int = -1) -> np.ndarray:
    """Float reference: ``clamp(round((acc + bias) * real))`` to the output width (float64)."""
    a = np.moveaxis(np.asarray(acc, dtype=np.float64), axis, -1)
    y = np.clip(np.round((a + params.bias) * params.real), *int_range(params.out_bits))
    return np.moveaxis(y, -1, axis)


# -- residual add ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AddParams:
    """``y = sat(round_shift(a * m_a + b * m_b, shift))`` with one shared shift; ``a``, ``b``
    and ``y`` are int8 or int16 (``a_bits``, ``b_bits``, ``out_bits``)."""

    m_a: int
    m_b: int
    shift: int
    scale_a: float
    scale_b: float
    scale_out: float
    a_bits: int = 8
    b_bits: int = 8
    out_bits: int = 8


def add_params(scale_a: float, scale_b: float, scale_out: float, *, a_bits: int = 8,
               b_bits: int = 8, out_bits: int = 8) -> AddParams:
    """Integer parameters of ``a*scale_a + b*scale_b`` requantized to ``scale_out``.

    Both multipliers share the largest shift that keeps them ``ADD_MULT_BITS``-bit unsigned.
    """
    sa, sb, so = (float(_positive_scale(v, n)) for v, n in
                  ((scale_a, "scale_a"), (scale_b, "scale_b"), (scale_out, "scale_out")))
    for bits in (a_bits, b_bits, out_bits):
        int_range(bits)
    top = max(sa, sb) / so
    shift = min(MAX_SHIFT, math.floor(math.log2((2**ADD_MULT_BITS - 1) / top)))
    if shift < 0:
        raise ValueError(f"residual add scale ratio {top:.4g} is too large (>= 2**"
                         f"{ADD_MULT_BITS})")
    while max(round(sa / so * 2**shift), round(sb / so * 2**shift)) >= 2**ADD_MULT_BITS:
        shift -= 1
    return AddParams(m_a=round(sa / so * 2**shift), m_b=round(sb / so * 2**shift), shift=shift,
                     scale_a=sa, scale_b=sb, scale_out=so, a_bits=a_bits, b_bits=b_bits,
                     out_bits=out_bits)


def add_int(a, b, params: AddParams) -> np.ndarray:
    """Bit-exact residual add of two int tensors of equal shape -> int8 or int16.

    Widths: each product is ``bits + ADD_MULT_BITS`` signed (40 bits for int16), the sum one
    more. Error bound against :func:`add_float`: at most 1 LSB of ``scale_out``. Argument: the
    multipliers are rounded to ``2**-shift`` with ``2**shift >= 2**(ADD_MULT_BITS-1) / r``
    (``r`` the larger ratio ``scale / scale_out``), so the exact sum before the final rounding
    is off by at most ``(|a| + |b|) * 0.5 * 2**-shift <= (|a| + |b|) * r / 2**ADD_MULT_BITS``,
    below 0.5 for int16 operands while ``r <= 128``; two roundings of values 0.5 apart differ
    by at most 1.
    """
    ai = as_int_array(a, "a", lo=int_range(params.a_bits)[0], hi=int_range(params.a_bits)[1])
    bi = as_int_array(b, "b", lo=int_range(params.b_bits)[0], hi=int_range(params.b_bits)[1])
    if ai.shape != bi.shape:
        raise ValueError(f"residual add needs equal shapes, got {ai.shape} and {bi.shape}")
    y = round_shift(ai * params.m_a + bi * params.m_b, params.shift)
    out = saturate(y, *int_range(params.out_bits))
    return out.astype(np.int8 if params.out_bits == 8 else np.int16)


def add_float(a, b, params: AddParams) -> np.ndarray:
    """Float reference of :func:`add_int`: dequantize, add, requantize with round-to-nearest."""
    y = (np.asarray(a, np.float64) * params.scale_a + np.asarray(b, np.float64) * params.scale_b)
    return np.clip(np.round(y / params.scale_out), *int_range(params.out_bits))
