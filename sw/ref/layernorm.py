"""LayerNorm over the hidden size: an integer-only algorithm, and its float reference.

Input ``x`` int8 ``[T, H]`` with per-tensor scale ``s_x``; ``gamma``, ``beta`` float ``[H]``;
output int8 with scale ``s_out``. ``H`` is at most :data:`MAX_HIDDEN` (the widths below).

Integer algorithm (per token)
-----------------------------
1. ``sum = sum_i x_i`` (``8 + log2 H`` bits); centred values without a division:
   ``c_i = H * x_i - sum`` (19 bits signed for H <= 1024).
2. ``V = sum_i c_i**2 + eps_int`` (46 bits), ``eps_int = round(eps * H**3 / s_x**2)``;
   ``x_i - mean = c_i / H`` and ``var = V / H**3``, so the normalised value is
   ``c_i * sqrt(H) / sqrt(V)``.
3. ``s = isqrt(V << 2*SQRT_FRAC)`` (floor, a bit-serial square root; 31 bits), then one
   division per token ``r = floor(2**RECIP_BITS / s)`` (``r = 0`` when ``s = 0``).
4. The reciprocal's leading ``MANT_BITS`` bits, once per token: ``e = max(0,
   bit_length(r) - MANT_BITS)``, ``m = r >> e`` (floor; ``m < 2**MANT_BITS``, and
   ``m >= 2**(MANT_BITS - 1)`` when ``e > 0``), so ``m * 2**e`` is ``r`` to a relative
   ``2**-(MANT_BITS - 1)`` below it.
5. Per element: ``u_i = round_shift(c_i * m, RECIP_BITS - sqrt_frac - U_FRAC - e)``, i.e.
   ``c_i / sqrt(V)`` in ``[-1, 1]`` with ``U_FRAC`` fraction bits (``c`` has at most 27 bits,
   ``m`` 17: one 27 x 18 multiplier). The shift is never negative: ``V >= 1`` gives
   ``s >= 2**sqrt_frac``, so ``r <= 2**(RECIP_BITS - sqrt_frac)`` and
   ``e <= RECIP_BITS + 1 - sqrt_frac - MANT_BITS``, at most the shift's
   ``RECIP_BITS - sqrt_frac - U_FRAC`` as ``U_FRAC + 1 <= MANT_BITS``.
   Since ``|c| 2**sqrt_frac <= s`` and ``m 2**e <= r``, ``|u| <= 2**U_FRAC``: ``U_FRAC + 2``
   bits.
   ``q_i = sat8(round_shift(u_i * G_i + B_i, U_FRAC + G_FRAC))`` with the per-channel integers
   ``G_i = round(gamma_i * sqrt(H) / s_out * 2**G_FRAC)`` and
   ``B_i = round(beta_i / s_out * 2**(U_FRAC + G_FRAC))``.
   An all-equal row (``V = 0``) gives ``u = 0``, so its output is ``round(beta / s_out)``,
   which is also what the float LayerNorm gives.

Error bound against :func:`layernorm_float` (on the dequantized input, in LSBs of
``s_out``): at most :data:`LAYERNORM_BOUND` = 1 LSB, for
``|gamma| * sqrt(H) / s_out < 2**14`` (checked by :func:`layernorm_params`). Relative to
``|u| <= 1``, ``u`` is off by at most ``2**-(MANT_BITS - 1)`` (the mantissa's floor) plus
``2**-(U_FRAC + 1)`` (its rounding) plus the square root's floor, ``2**-SQRT_FRAC /
sqrt(V)``; scaled by ``|G| / 2**G_FRAC < 2**14`` that is below 0.25 + 0.125 + 0.02 LSB. With
0.5 from the final rounding and below ``2**-G_FRAC`` from the rounding of ``G`` and ``B``,
the total stays below 0.9 LSB. (The int16 path has no square-root fraction bits: see
:func:`layernorm_params`.) The widths are chosen for the FPGA's multipliers: ``c * m`` and
``u * G`` (18 x 23 bits) are one DSP48E2 each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .fixedpoint import INT8_MAX, INT8_MIN, as_int_array, round_shift, saturate

__all__ = [
    "MAX_HIDDEN",
    "LAYERNORM_BOUND",
    "LayerNormParams",
    "layernorm_params",
    "layernorm_int",
    "layernorm_float",
    "isqrt",
    "recip_mantissa",
]

MAX_HIDDEN = 1024  #: widths above are derived for H <= 1024
SQRT_FRAC = 8  #: fraction bits of s = sqrt(V)
RECIP_BITS = 48  #: r = floor(2**48 / s)
MANT_BITS = 17  #: leading bits of r kept for the per-element product (unsigned)
U_FRAC = 16  #: fraction bits of the normalised value u in [-1, 1]
G_FRAC = 8  #: fraction bits of G
MAX_GAIN = 2**14  #: |gamma| * sqrt(H) / s_out must stay below this
GAIN_BITS = 23  #: signed width of G (|G| < MAX_GAIN * 2**G_FRAC)
OFFSET_BITS = 48  #: signed width of B
EPS_BITS = 40  #: eps_int < 2**40, so V << 2*SQRT_FRAC stays below 2**62
LAYERNORM_BOUND = 1  #: LSBs of s_out


@dataclass(frozen=True)
class LayerNormParams:
    """Integer LayerNorm parameters for hidden size ``hidden`` (host-computed)."""

    hidden: int
    gain: np.ndarray  # G_i, int64 [H]
    offset: np.ndarray  # B_i, int64 [H]
    eps_int: int
    scale_in: float
    scale_out: float
    gamma: np.ndarray
    beta: np.ndarray
    eps: float
    in_bits: int = 8  #: int8 input, or int16 from the residual path
    sqrt_frac: int = SQRT_FRAC  #: fraction bits of s (8 for int8 input, 0 for int16)


def layernorm_params(scale_in: float, gamma, beta, scale_out: float,
                     eps: float = 1e-12, *, in_bits: int = 8) -> LayerNormParams:
    """Integer parameters from the float LayerNorm weights and the activation scales.

    ``in_bits`` = 16 takes the int16 residual path's output: ``V`` is then up to 62 bits, so
    the square root runs without fraction bits (``sqrt_frac = 0``); its relative error
    ``1/s`` is below ``2**-16`` once the row spans a few hundred LSBs, as int16 rows do.
    """
    if in_bits not in (8, 16):
        raise ValueError(f"LayerNorm input is int8 or int16, got {in_bits!r} bits")
    g = np.asarray(gamma.detach().cpu().numpy() if hasattr(gamma, "detach") else gamma,
                   dtype=np.float64)
    b = np.asarray(beta.detach().cpu().numpy() if hasattr(beta, "detach") else beta,
                   dtype=np.float64)
    if g.ndim != 1 or b.shape != g.shape:
        raise ValueError(f"gamma and beta must be 1-D of equal length, got {g.shape}, {b.shape}")
    h = g.shape[0]
    if not 1 <= h <= MAX_HIDDEN:
        raise ValueError(f"hidden size {h} is outside 1..{MAX_HIDDEN}")
    for name, v in (("scale_in", scale_in), ("scale_out", scale_out)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"LayerNorm {name} must be finite and > 0, got {v!r}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"LayerNorm eps must be finite and >= 0, got {eps!r}")
    if not (np.isfinite(g).all() and np.isfinite(b).all()):
        raise ValueError("LayerNorm gamma/beta hold non-finite values")
    gain = g * math.sqrt(h) / scale_out
    if np.abs(gain).max() >= MAX_GAIN:
        i = int(np.abs(gain).argmax())
        raise ValueError(f"LayerNorm gain gamma[{i}] * sqrt(H) / s_out = {gain[i]:.4g} is out "
                         f"of range (|.| < {MAX_GAIN}); use a larger output scale")
    offset = b / scale_out * 2.0 ** (U_FRAC + G_FRAC)
    if np.abs(offset).max() >= 2.0 ** (OFFSET_BITS - 1):
        i = int(np.abs(offset).argmax())
        raise ValueError(f"LayerNorm beta[{i}] / s_out = {b[i] / scale_out:.4g} is out of range "
                         f"(|.| < 2**{OFFSET_BITS - 1 - U_FRAC - G_FRAC}); use a larger output "
                         f"scale")
    eps_int = int(round(eps * h**3 / scale_in**2))
    if eps_int >= 2**EPS_BITS:
        raise ValueError(f"LayerNorm eps {eps!r} is too large for input scale {scale_in!r} "
                         f"(eps * H**3 / s_x**2 = {eps_int} >= 2**{EPS_BITS})")
    return LayerNormParams(
        hidden=h,
        gain=np.round(gain * 2**G_FRAC).astype(np.int64),
        offset=np.round(offset).astype(np.int64),
        eps_int=eps_int,
        scale_in=float(scale_in), scale_out=float(scale_out), gamma=g, beta=b, eps=float(eps),
        in_bits=in_bits, sqrt_frac=SQRT_FRAC if in_bits == 8 else 0,
    )


def isqrt(v) -> np.ndarray:
    """Elementwise ``floor(sqrt(v))`` of non-negative int64 values, exact."""
    v = np.asarray(v, dtype=np.int64)
    if v.size and int(v.min()) < 0:
        raise ValueError("isqrt of a negative value")
    return np.array([math.isqrt(int(a)) for a in v.reshape(-1)], dtype=np.int64).reshape(v.shape)


def recip_mantissa(r) -> tuple[np.ndarray, np.ndarray]:
    """Step 4: ``(e, m)`` of non-negative int64 reciprocals ``r``, elementwise:
    ``e = max(0, bit_length(r) - MANT_BITS)``, ``m = r >> e``."""
    r = np.asarray(r, dtype=np.int64)
    e = np.array([max(0, int(a).bit_length() - MANT_BITS) for a in r.reshape(-1)],
                 dtype=np.int64).reshape(r.shape)
    return e, r >> e


def layernorm_int(x, params: LayerNormParams) -> np.ndarray:
    """Bit-exact integer LayerNorm of int8 ``x [..., H]`` -> int8 (see module docstring)."""
    lo, hi = -(2 ** (params.in_bits - 1)), 2 ** (params.in_bits - 1) - 1
    xi = as_int_array(x, "LayerNorm input", lo=lo, hi=hi)
    if xi.ndim < 1 or xi.shape[-1] != params.hidden:
        raise ValueError(f"LayerNorm input must be [..., H={params.hidden}], got shape {xi.shape}")
    h = params.hidden
    c = h * xi - xi.sum(axis=-1, keepdims=True)
    v = (c * c).sum(axis=-1, keepdims=True) + params.eps_int
    s = isqrt(v << (2 * params.sqrt_frac))
    r = np.where(s > 0, (1 << RECIP_BITS) // np.maximum(s, 1), 0)
    e, m = recip_mantissa(r)
    u = round_shift(c * m, RECIP_BITS - params.sqrt_frac - U_FRAC - e)
    q = round_shift(u * params.gain + params.offset, U_FRAC + G_FRAC)
    return saturate(q, INT8_MIN, INT8_MAX).astype(np.int8)


def layernorm_float(x, params: LayerNormParams):
    """Float64 ``torch.nn.functional.layer_norm`` of the dequantized input, in units of
    ``s_out`` (not rounded, not clipped)."""
    import torch

    xt = torch.as_tensor(np.asarray(x, dtype=np.float64) * params.scale_in)
    y = torch.nn.functional.layer_norm(xt, (params.hidden,), torch.from_numpy(params.gamma),
                                       torch.from_numpy(params.beta), params.eps)
    return y.numpy() / params.scale_out
