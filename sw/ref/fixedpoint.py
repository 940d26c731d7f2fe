"""Fixed-point primitives of the numerics contract.

Every integer reference op in :mod:`sw.ref` is built from these few functions, and the
hardware reproduces them exactly. All integer arithmetic is done on ``numpy.int64`` arrays,
which hold every intermediate of the contract without overflow (the functions check).

The one rounding rule
---------------------
``round_shift(x, s) = floor((x + 2**(s-1)) / 2**s)`` for ``s > 0``: divide by a power of two and
round to nearest, **ties toward +infinity** (add half, then arithmetic shift right). In hardware
this is an adder and a wire shift; no sticky bits, no sign handling.

Multipliers
-----------
A positive real multiplier ``r`` is represented as ``m * 2**-s`` with ``m`` a ``MULT_BITS``-bit
unsigned integer normalised to ``[2**(MULT_BITS-1), 2**MULT_BITS)`` and ``0 <= s <= MAX_SHIFT``
(:func:`quantize_multiplier`). Relative error of the representation: at most ``2**-MULT_BITS``.
"""

from __future__ import annotations

import math

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
UINT8_MAX = 255
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

#: Width of the unsigned requantization multiplier (``m < 2**MULT_BITS``).
MULT_BITS = 15
#: Largest right shift a requantizer applies.
MAX_SHIFT = 63

__all__ = [
    "INT8_MIN",
    "INT8_MAX",
    "UINT8_MAX",
    "INT32_MIN",
    "INT32_MAX",
    "MULT_BITS",
    "MAX_SHIFT",
    "as_int_array",
    "round_shift",
    "saturate",
    "quantize_multiplier",
    "multiplier_value",
]


def as_int_array(x, name: str, *, lo: int | None = None, hi: int | None = None) -> np.ndarray:
    """Return ``x`` as an ``int64`` array, refusing floats and values outside ``[lo, hi]``.

    Accepts numpy arrays, torch tensors, Python ints and nested lists of ints. Raises
    ``TypeError`` naming ``name`` for a floating or boolean input and ``ValueError`` naming the
    first out-of-range value: nothing is silently rounded, wrapped or clipped.
    """
    if hasattr(x, "detach") and hasattr(x, "numpy"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds a value above int64: {int(arr.max())}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size:
        if lo is not None and int(arr.min()) < lo:
            idx = np.unravel_index(int(arr.argmin()), arr.shape)
            raise ValueError(f"{name}[{', '.join(map(str, idx))}] = {int(arr.min())} is below {lo}")
        if hi is not None and int(arr.max()) > hi:
            idx = np.unravel_index(int(arr.argmax()), arr.shape)
            raise ValueError(f"{name}[{', '.join(map(str, idx))}] = {int(arr.max())} is above {hi}")
    return arr


def round_shift(x, s):
    """Divide ``x`` by ``2**s`` and round to nearest, ties toward +infinity (the contract's rule).

    ``s`` may be a scalar or an array broadcasting against ``x``; ``s == 0`` returns ``x``.
    Both are integer arrays; the result is ``int64``.
    """
    x = np.asarray(x, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    if s.size and (int(s.min()) < 0 or int(s.max()) > MAX_SHIFT):
        raise ValueError(f"shift must be in [0, {MAX_SHIFT}], got {s.min()}..{s.max()}")
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
    return np.right_shift(x + half, s)


def saturate(x, lo: int, hi: int) -> np.ndarray:
    """Clamp an integer array to ``[lo, hi]`` (the contract saturates, it never wraps)."""
    return np.clip(np.asarray(x, dtype=np.int64), lo, hi)


def quantize_multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """Represent positive reals ``r`` as ``m * 2**-s`` (see module docstring).

    Returns ``(m, s)`` as ``int64`` arrays of the input's shape. ``r == 0`` gives ``m = 0, s = 0``.
    Raises ``ValueError`` for a negative, non-finite or too large (``r >= 2**MULT_BITS``... the
    shift would be negative) multiplier, or one so small that the shift exceeds ``MAX_SHIFT``.
    """
    r = np.asarray(real, dtype=np.float64)
    flat = r.reshape(-1)
    m = np.zeros(flat.shape, dtype=np.int64)
    s = np.zeros(flat.shape, dtype=np.int64)
    for i, v in enumerate(flat):
        v = float(v)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"multiplier must be finite and >= 0, got {v!r} at index {i}")
        if v == 0:
            continue
        frac, exp = math.frexp(v)  # v = frac * 2**exp, frac in [0.5, 1)
        mi = round(frac * 2**MULT_BITS)
        if mi == 2**MULT_BITS:  # rounding carried into the next power of two
            mi //= 2
            exp += 1
        si = MULT_BITS - exp
        if si < 0:
            raise ValueError(f"multiplier {v!r} at index {i} is too large (>= 2**{MULT_BITS})")
        if si > MAX_SHIFT:
            raise ValueError(
                f"multiplier {v!r} at index {i} is too small: shift {si} exceeds {MAX_SHIFT}"
            )
        m[i], s[i] = mi, si
    return m.reshape(r.shape), s.reshape(r.shape)


def multiplier_value(m, s) -> np.ndarray:
    """The real number ``m * 2**-s`` that a quantized multiplier stands for (float64)."""
    return np.asarray(m, dtype=np.float64) * np.exp2(-np.asarray(s, dtype=np.float64))
