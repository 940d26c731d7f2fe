"""Row softmax: an integer-only algorithm hardware reproduces exactly, and its float reference.

Input: raw int32 attention scores ``x`` (the Q.K^T accumulators, no requantization) whose real
value is ``x * scale`` (``scale = s_q * s_k / sqrt(d_head)``), an optional boolean key mask
(True = attend). Output: uint8 probabilities ``q`` with real value ``q / 255`` (so 1.0 is
representable), rows of length L in 1..``max_row``.

Integer algorithm (per row; all constants below are fixed, not per-config)
--------------------------------------------------------------------------
1. ``mx = max(x_i)`` over unmasked keys; ``d_i = min(mx - x_i, D_MAX) >= 0``, saturated at
   ``D_MAX = 2**D_BITS - 1`` (``mx - x_i`` itself takes 33 bits).
2. Base-2 exponent in fixed point with ``FRAC_BITS`` fraction bits:
   ``u_i = round_shift(d_i * A, sA)`` where ``A * 2**-sA ~= scale * log2(e) * 2**FRAC_BITS``
   (``A`` a 15-bit multiplier, :func:`softmax_params`); ``d_i * A`` is at most 41 bits, one
   DSP48E2 (26 x 15 unsigned, inside its 27 x 18 signed multiplier). The saturation changes
   nothing for the scales :func:`softmax_params` accepts: it refuses a scale unless
   ``D_MAX`` already gives ``e = 0`` (``u >> FRAC_BITS > EXP_BITS``, scale above about
   2.4e-7; attention scales are 1e-5..1e-2), and ``u`` never falls as ``d`` grows, so every
   larger ``d`` gave ``e = 0`` before it too.
3. ``2**-u`` by shift + piecewise-linear polynomial: ``k = u >> FRAC_BITS``, ``f = u mod 2**FRAC``
   split into segment ``h = f >> SEG_SHIFT`` (``SEGMENTS`` segments) and offset ``l``;
   ``y = C0[h] - round_shift(C1[h] * l, SEG_SHIFT)`` interpolates ``ONE * 2**-(f / 2**FRAC)``
   (``ONE = 2**EXP_BITS``) on the chord of each segment; ``e_i = y >> k`` (floor), and
   ``e_i = 0`` once ``k > EXP_BITS``. ``C0`` is 23 bits, ``C1 * l`` 22 bits.
4. ``sum = sum_i e_i`` (``EXP_BITS + 1 + log2(L)`` bits; 36 bits for L = 4096) over unmasked keys.
5. One division per row: ``r = floor((255 << RECIP_BITS) / sum)`` (at most 16 bits, since the
   largest element contributes ``e = ONE``).
6. ``q_i = round_shift(e_i * r, RECIP_BITS)`` (a 39-bit product); masked keys get 0.
   A fully masked row is all zeros (it attends to nothing).

Error bound against :func:`softmax_float` on the same scores (dequantized ``x * scale``):
``|q / 255 - p| <= SOFTMAX_BOUND`` = 0.6 LSB (LSB = 1/255), i.e. 2.35e-3 < 1/256 of full scale.
Budget: 0.5 LSB from the final rounding; the rest is relative error of each ``e_i``: the
fixed-point exponent (``2**-11`` in ``u``, ln 2 * 2**-11 = 3.4e-4 relative), the 15-bit ``A``
(``u * 2**-15``, at most 7e-4 on elements already below 2**-23 of the max), the chord
(``(ln2 / SEGMENTS)**2 / 8`` = 5.9e-5 relative), the floor of ``e_i`` (< 1 of ``ONE``
per element, <= L * 2**-22 of the sum: 1.2e-4 at L = 512) and the reciprocal's floor
(< 2**-8 LSB). Summed through the normalisation they stay below 0.1 LSB for
L <= 4096; the tests assert the bound on random, peaked, flat, very negative and masked rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .fixedpoint import INT32_MAX, INT32_MIN, UINT8_MAX, as_int_array, quantize_multiplier

if TYPE_CHECKING:  # torch is imported lazily: the bit-exact paths never need it
    import torch

__all__ = [
    "FRAC_BITS",
    "D_BITS",
    "D_MAX",
    "EXP_BITS",
    "SEGMENTS",
    "RECIP_BITS",
    "EXP_C0",
    "EXP_C1",
    "SOFTMAX_BOUND",
    "SoftmaxParams",
    "softmax_params",
    "exp2_neg_int",
    "softmax_int",
    "softmax_float",
]

FRAC_BITS = 10  #: fraction bits of the base-2 exponent u
D_BITS = 26  #: bits of the saturated score difference d (so d * A is one DSP48E2)
D_MAX = 2**D_BITS - 1
EXP_BITS = 22  #: e = 2**-u in units of 2**-EXP_BITS (ONE = 2**EXP_BITS)
SEG_BITS = 5
SEGMENTS = 2**SEG_BITS  #: linear segments of 2**-f on [0, 1)
SEG_SHIFT = FRAC_BITS - SEG_BITS
RECIP_BITS = EXP_BITS + 8  #: fraction bits of the per-row reciprocal
ONE = 2**EXP_BITS
#: Chord end points ``round(ONE * 2**-(h / SEGMENTS))``, h = 0..SEGMENTS; C1 = slope per segment.
_POINTS = [round(ONE * 2.0 ** (-h / SEGMENTS)) for h in range(SEGMENTS + 1)]
EXP_C0 = tuple(_POINTS[:-1])
EXP_C1 = tuple(a - b for a, b in zip(_POINTS[:-1], _POINTS[1:]))
#: Stated bound of |q/255 - p| (probability units): 0.6 LSB of 1/255.
SOFTMAX_BOUND = 0.6 / 255


@dataclass(frozen=True)
class SoftmaxParams:
    """``A * 2**-shift ~= scale * log2(e) * 2**FRAC_BITS``; ``scale`` kept for the float path."""

    mult: int
    shift: int
    scale: float


def softmax_params(scale: float) -> SoftmaxParams:
    """Integer parameters for scores whose real value is ``x * scale``."""
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"softmax score scale must be finite and > 0, got {scale!r}")
    try:
        m, s = quantize_multiplier(scale * math.log2(math.e) * 2**FRAC_BITS)
    except ValueError as e:
        raise ValueError(f"softmax score scale {scale!r} is out of range: {e}") from None
    # d saturates at D_MAX (step 1): that must already be a zero exponent
    if _round_shift(D_MAX * int(m), int(s)) >> FRAC_BITS <= EXP_BITS:
        weight = D_MAX * scale * math.log2(math.e)
        raise ValueError(
            f"softmax score scale {scale!r} is too small: the score difference where d "
            f"saturates (D_MAX = {D_MAX}) still weighs 2**-{weight:.1f}, which the integer "
            f"softmax must round to 0; the smallest scale accepted is about {_MIN_SCALE:.3g}")
    return SoftmaxParams(mult=int(m), shift=int(s), scale=scale)


def _round_shift(x: int, shift: int) -> int:
    return (x + ((1 << shift) >> 1)) >> shift


#: about the smallest score scale whose saturated d gives e = 0 (for the error message)
_MIN_SCALE = (EXP_BITS + 1) / (D_MAX * math.log2(math.e))


def exp2_neg_int(u) -> np.ndarray:
    """``ONE * 2**-(u / 2**FRAC_BITS)`` by shift + piecewise-linear polynomial (steps 3 above)."""
    u = np.asarray(u, dtype=np.int64)
    k = u >> FRAC_BITS
    f = u & (2**FRAC_BITS - 1)
    h, low = f >> SEG_SHIFT, f & (2**SEG_SHIFT - 1)
    c0 = np.asarray(EXP_C0, dtype=np.int64)[h]
    c1 = np.asarray(EXP_C1, dtype=np.int64)[h]
    y = c0 - ((c1 * low + (1 << (SEG_SHIFT - 1))) >> SEG_SHIFT)
    return np.where(k > EXP_BITS, 0, y >> np.minimum(k, EXP_BITS + 1))


def _mask_array(mask, shape) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    mk = np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask)
    if mk.dtype != np.bool_:
        raise TypeError(f"key mask must be boolean (True = attend), got dtype {mk.dtype}")
    try:
        return np.broadcast_to(mk, shape)
    except ValueError:
        raise ValueError(f"key mask of shape {mk.shape} does not fit scores {shape}") from None


def softmax_int(x, params: SoftmaxParams, mask=None, *, max_row: int | None = None) -> np.ndarray:
    """Bit-exact integer softmax along the last axis: int32 scores -> uint8 (``/255``).

    Parameters
    ----------
    x : int array [..., L] of int32 scores.
    params : from :func:`softmax_params`.
    mask : optional bool array broadcasting to ``x`` (True = attend, False = masked key).
    max_row : if given, rows longer than this are refused (the hardware's row buffer).
    """
    xi = as_int_array(x, "scores", lo=INT32_MIN, hi=INT32_MAX)
    if xi.ndim < 1 or xi.shape[-1] < 1:
        raise ValueError(f"scores must have rows of length >= 1, got shape {xi.shape}")
    if max_row is not None and xi.shape[-1] > max_row:
        raise ValueError(f"row length {xi.shape[-1]} exceeds the longest row {max_row}")
    mk = _mask_array(mask, xi.shape)
    mx = np.where(mk, xi, INT32_MIN).max(axis=-1, keepdims=True)
    d = np.where(mk, np.minimum(mx - xi, D_MAX), 0)
    u = (d * params.mult + ((1 << params.shift) >> 1)) >> params.shift
    e = np.where(mk, exp2_neg_int(u), 0)
    total = e.sum(axis=-1, keepdims=True)
    r = (UINT8_MAX << RECIP_BITS) // np.maximum(total, 1)
    q = (e * r + (1 << (RECIP_BITS - 1))) >> RECIP_BITS
    return np.where(mk & (total > 0), q, 0).astype(np.uint8)


def softmax_float(scores, mask=None) -> torch.Tensor:
    """Float64 ``torch.softmax`` along the last axis; masked keys get 0, a fully masked row 0."""
    import torch

    s = torch.as_tensor(scores, dtype=torch.float64)
    if mask is None:
        return torch.softmax(s, dim=-1)
    mk = torch.from_numpy(np.array(_mask_array(mask, tuple(s.shape))))
    p = torch.softmax(s.masked_fill(~mk, float("-inf")), dim=-1)
    return torch.nan_to_num(p, nan=0.0)
