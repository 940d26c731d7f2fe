"""Integer GEMMs of the numerics contract: N:M sparse x dense, and dense x dense.

Both accumulate int8 x int8 (or uint8 probabilities x int8 for P.V) products into int32.
|product| <= 128 * 128 = 2**14 (255 * 128 < 2**15 for uint8 x int8), so a reduction of ``K``
products is overflow-free while ``K * 2**14 <= 2**31 - 1`` (``K * 2**15`` for uint8): the
functions refuse a longer reduction instead of letting it wrap, and the bias add saturates.
:class:`hw.config.AcceleratorConfig` enforces the same bound on ``max_k``.

Orientation follows ``torch.nn.functional.linear``: ``y[t, r] = sum_k x[t, k] * w[r, k] + b[r]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sw.nm import PackedNM, unpack

from .fixedpoint import INT8_MAX, INT8_MIN, INT32_MAX, INT32_MIN, UINT8_MAX, as_int_array, saturate

if TYPE_CHECKING:  # torch is imported lazily: the bit-exact paths never need it
    import torch

__all__ = ["spmm_int", "spmm_int_dataflow", "dense_gemm_int", "linear_float", "max_safe_k"]


def max_safe_k(a_max: int = 128, b_max: int = 128) -> int:
    """Longest reduction whose sum of ``|a| <= a_max`` times ``|b| <= b_max`` fits int32."""
    return INT32_MAX // (a_max * b_max)


def _finish(acc: np.ndarray, bias, channels: int) -> np.ndarray:
    if bias is not None:
        b = as_int_array(bias, "bias", lo=INT32_MIN, hi=INT32_MAX).reshape(-1)
        if b.shape[0] != channels:
            raise ValueError(f"bias has {b.shape[0]} entries, the GEMM has {channels} channels")
        acc = saturate(acc + b, INT32_MIN, INT32_MAX)
    return acc.astype(np.int32)


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a [T, K] @ b [R, K]^T`` exactly, through float64 BLAS: every product and partial sum
    is an integer below ``2**31`` (callers bound K by :func:`max_safe_k`), so float64 (53-bit
    mantissa) represents each exactly and the result is the integer GEMM."""
    return (a.astype(np.float64) @ b.astype(np.float64).T).astype(np.int64)


def spmm_int_dataflow(x, w: PackedNM) -> np.ndarray:
    """:func:`spmm_int` the way the hardware computes it (no bias): for each stored
    (value, index) slot of a row, the index selects one activation of the slot's M-group (an
    M-to-1 mux) and the products accumulate. Slow; kept as the specification the fast
    :func:`spmm_int` is tested against."""
    xi = as_int_array(x, "activations", lo=INT8_MIN, hi=INT8_MAX)
    xp = np.zeros((xi.shape[0], w.k_padded), dtype=np.int64)
    xp[:, : w.k] = xi
    vals = np.asarray(w.values, dtype=np.int64)  # [R, G*N]
    cols = w.unpacked_indices() + (np.arange(vals.shape[1]) // w.n * w.m)[None, :]  # [R, G*N]
    acc = np.zeros((xi.shape[0], w.rows), dtype=np.int64)
    for j in range(vals.shape[1]):  # one stored slot per step: [T, R] gather-multiply-add
        acc += xp[:, cols[:, j]] * vals[:, j][None, :]
    return _finish(acc, None, w.rows)


def spmm_int(x, w: PackedNM, bias=None) -> np.ndarray:
    """``x [T, K] int8`` times packed N:M weights ``w [R, K]`` -> ``int32 [T, R]``, plus bias.

    Exact: the integer GEMM of ``unpack(w)`` (computed through float64 BLAS, exact for the
    K this function accepts); :func:`spmm_int_dataflow` is the hardware's slot-by-slot
    dataflow, tested equal.
    """
    if not isinstance(w, PackedNM):
        raise TypeError(f"w must be a PackedNM, got {type(w).__name__}")
    xi = as_int_array(x, "activations", lo=INT8_MIN, hi=INT8_MAX)
    if xi.ndim != 2 or xi.shape[1] != w.k:
        raise ValueError(f"activations must be [tokens, K={w.k}], got shape {xi.shape}")
    if w.k > max_safe_k():
        raise ValueError(f"K = {w.k} could overflow int32 (largest safe K is {max_safe_k()})")
    acc = _exact_matmul(xi, unpack(w))
    return _finish(acc, bias, w.rows)


def dense_gemm_int(a, b, bias=None, *, a_unsigned: bool = False) -> np.ndarray:
    """Dense integer ``a [T, K] @ b [R, K]^T`` -> ``int32 [T, R]`` (Q.K^T, and P.V with
    ``a`` = probabilities ``[L, L_keys]`` uint8 when ``a_unsigned``, ``b`` = V^T ``[d, L_keys]``).
    """
    a_lo, a_hi = (0, UINT8_MAX) if a_unsigned else (INT8_MIN, INT8_MAX)
    ai = as_int_array(a, "a", lo=a_lo, hi=a_hi)
    bi = as_int_array(b, "b", lo=INT8_MIN, hi=INT8_MAX)
    if ai.ndim != 2 or bi.ndim != 2 or ai.shape[1] != bi.shape[1]:
        raise ValueError(f"need a [T, K] and b [R, K] with equal K, got {ai.shape} and {bi.shape}")
    k = ai.shape[1]
    limit = max_safe_k(256 if a_unsigned else 128, 128)
    if k > limit:
        raise ValueError(f"K = {k} could overflow int32 (largest safe K is {limit})")
    return _finish(_exact_matmul(ai, bi), bias, bi.shape[0])


def linear_float(x, w, bias=None) -> torch.Tensor:
    """Float reference (float64): ``torch.nn.functional.linear`` on dequantized operands."""
    import torch

    xt = torch.as_tensor(x, dtype=torch.float64)
    wt = torch.as_tensor(w, dtype=torch.float64)
    bt = None if bias is None else torch.as_tensor(bias, dtype=torch.float64)
    return torch.nn.functional.linear(xt, wt, bt)
