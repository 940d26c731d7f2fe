"""The N:M sparse format: magnitude masks, checks, and the packed layout the hardware reads.

Definitions
-----------
* A weight matrix is ``[rows, K]`` (``nn.Linear.weight``: output features x input features).
* Groups are ``M`` consecutive entries along K: group ``g`` of a row covers columns
  ``[g*M, (g+1)*M)``. ``M`` is 4, 8 or 16; a row is N:M when each group has at most ``N``
  non-zeros (``1 <= N <= M``; ``N == M`` is dense).
* A K that is not a multiple of M is zero-padded to ``K_pad = G*M``, ``G = ceil(K/M)``; the
  padding (``K_pad - K``) is recorded in the packed form and dropped by :func:`unpack`.

Packed layout (:class:`PackedNM`)
---------------------------------
* ``values``: ``[rows, G*N]``, the weights' dtype. Entry ``j = g*N + t`` is slot ``t`` of group
  ``g``. Each group stores its non-zeros plus, when it has fewer than N, zeros taken at the
  lowest positions that hold no non-zero; the N slots are sorted by ascending position, so
  the indices of a group are distinct and strictly ascending.
* ``indices``: ``uint8 [rows, ceil(G*N*b/8)]`` with ``b = log2(M)`` bits per slot: slot ``j``
  occupies bits ``[j*b, (j+1)*b)`` of the row's bit string, bit ``i`` of which is bit
  ``i % 8`` of byte ``i // 8`` (LSB first). Unused trailing bits are zero. For ``N == M``
  (dense) the index of slot ``t`` is ``t`` itself and ``indices`` is ``[rows, 0]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["NMViolationError", "PackedNM", "nm_mask", "check_nm", "is_nm", "same_density", "pack",
           "unpack"]


class NMViolationError(ValueError):
    """A tensor breaks its N:M pattern; names the first bad (row, group)."""

    def __init__(self, row: int, group: int, count: int, n: int, m: int):
        self.row, self.group, self.count = row, group, count
        super().__init__(
            f"row {row}, group {group} (columns {group * m}..{group * m + m - 1}) has {count} "
            f"non-zeros, N:M = {n}:{m} allows {n}"
        )


def _check_nm_args(n, m) -> None:
    if isinstance(m, bool) or not isinstance(m, int | np.integer) or m not in (4, 8, 16):
        raise ValueError(f"M must be 4, 8 or 16, got {m!r}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= m:
        raise ValueError(f"N must be an int in 1..M = 1..{m}, got {n!r}")


def _as_2d(w, name: str = "weights") -> np.ndarray:
    if hasattr(w, "detach") and hasattr(w, "numpy"):  # torch.Tensor
        w = w.detach().cpu().numpy()
    arr = np.asarray(w)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, K], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column, got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def _groups(arr: np.ndarray, m: int, fill=0) -> np.ndarray:
    """``[rows, K]`` -> ``[rows, G, M]``, padded with ``fill``."""
    rows, k = arr.shape
    g = math.ceil(k / m)
    out = np.full((rows, g * m), fill, dtype=arr.dtype)
    out[:, :k] = arr
    return out.reshape(rows, g, m)


def nm_mask(w, n: int, m: int):
    """Boolean mask keeping the N largest ``|w|`` of each M-group (ties: lower column wins).

    Returns a torch bool tensor for a torch input, a numpy bool array otherwise, same shape.
    Padding positions of a partial last group are never kept.
    """
    _check_nm_args(n, m)
    is_torch = hasattr(w, "detach") and hasattr(w, "numpy")
    arr = _as_2d(w)
    rows, k = arr.shape
    mag = np.abs(arr.astype(np.float64))
    g = _groups(mag, m, fill=-1.0)  # padding ranks below every real entry
    # stable sort of -|w|: equal magnitudes keep column order, so the lower column wins
    order = np.argsort(-g, axis=-1, kind="stable")
    keep = np.zeros_like(g, dtype=bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    keep &= g >= 0
    mask = keep.reshape(rows, -1)[:, :k]
    if is_torch:
        import torch

        return torch.from_numpy(np.ascontiguousarray(mask))
    return mask


def _first_violation(arr: np.ndarray, n: int, m: int):
    counts = (_groups(arr, m) != 0).sum(axis=-1)
    bad = np.argwhere(counts > n)
    if bad.size:
        r, g = (int(v) for v in bad[0])
        return r, g, int(counts[r, g])
    return None


def check_nm(w, n: int, m: int) -> None:
    """Raise :class:`NMViolationError` naming the first row/group with more than N non-zeros."""
    _check_nm_args(n, m)
    bad = _first_violation(_as_2d(w), n, m)
    if bad is not None:
        raise NMViolationError(*bad, n, m)


def is_nm(w, n: int, m: int) -> bool:
    _check_nm_args(n, m)
    return _first_violation(_as_2d(w), n, m) is None


def same_density(n: int, m: int, m_to: int) -> int | None:
    """The N of the same density as ``n:m`` in groups of ``m_to`` (``2:4`` is ``4:8``), or
    None when there is none (``1:8`` in groups of 4). Weights that are ``n:m`` are also
    ``same_density(n, m, m_to):m_to`` when ``m`` divides ``m_to``; the other way round the
    density matches but the pattern need not (a 4:8 group may hold its 4 in one half)."""
    if not all(isinstance(v, int) and v >= 1 for v in (n, m, m_to)) or n > m:
        raise ValueError(f"same_density needs 1 <= n <= m and m_to >= 1, got n={n!r}, m={m!r}, "
                         f"m_to={m_to!r}")
    return None if n * m_to % m else n * m_to // m


@dataclass(frozen=True)
class PackedNM:
    """An N:M matrix in the packed layout of the module docstring (validated on creation)."""

    values: np.ndarray
    indices: np.ndarray
    n: int
    m: int
    k: int

    def __post_init__(self):
        _check_nm_args(self.n, self.m)
        v, ix = np.asarray(self.values), np.asarray(self.indices)
        if not isinstance(self.k, int | np.integer) or self.k < 1:
            raise ValueError(f"PackedNM.k must be an int >= 1, got {self.k!r}")
        if v.ndim != 2 or v.shape[1] != self.groups * self.n:
            raise ValueError(f"PackedNM.values must be [rows, G*N = {self.groups * self.n}], "
                             f"got shape {v.shape}")
        want = (v.shape[0], self.index_bytes)
        if ix.dtype != np.uint8 or ix.shape != want:
            raise ValueError(f"PackedNM.indices must be uint8 {want}, got {ix.dtype} {ix.shape}")
        if self.n != self.m:
            idx = self.unpacked_indices().reshape(v.shape[0], self.groups, self.n)
            if self.n > 1 and not (np.diff(idx, axis=-1) > 0).all():
                r, g = (int(a) for a in np.argwhere((np.diff(idx, axis=-1) <= 0).any(-1))[0])
                raise ValueError(f"PackedNM indices of row {r}, group {g} are not strictly "
                                 f"ascending: {idx[r, g].tolist()}")
            used = self.groups * self.n * self.index_bits
            if used % 8 and (ix[:, -1] >> (used % 8)).any():
                raise ValueError("PackedNM indices have non-zero bits past the last slot")
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "indices", ix)

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def groups(self) -> int:
        return math.ceil(self.k / self.m)

    @property
    def k_padded(self) -> int:
        return self.groups * self.m

    @property
    def padding(self) -> int:
        return self.k_padded - self.k

    @property
    def index_bits(self) -> int:
        return self.m.bit_length() - 1

    @property
    def index_bytes(self) -> int:
        if self.n == self.m:
            return 0
        return math.ceil(self.groups * self.n * self.index_bits / 8)

    @property
    def nbytes(self) -> int:
        """Bytes of values and indices together (for memory budgets)."""
        return int(self.values.nbytes + self.indices.nbytes)

    def unpacked_indices(self) -> np.ndarray:
        """int64 ``[rows, G*N]``: each slot's position (0..M-1) inside its group."""
        slots = self.groups * self.n
        if self.n == self.m:
            return np.tile(np.arange(self.m, dtype=np.int64), (self.rows, self.groups))
        b = self.index_bits
        bits = np.unpackbits(self.indices, axis=1, bitorder="little")[:, : slots * b]
        weights = (1 << np.arange(b, dtype=np.int64))
        return (bits.reshape(self.rows, slots, b).astype(np.int64) * weights).sum(-1)


def _pack_bits(idx: np.ndarray, b: int) -> np.ndarray:
    """``[rows, slots]`` small ints -> ``uint8 [rows, ceil(slots*b/8)]`` LSB-first."""
    rows, slots = idx.shape
    bits = ((idx[..., None] >> np.arange(b)) & 1).astype(np.uint8).reshape(rows, slots * b)
    return np.packbits(bits, axis=1, bitorder="little")


def pack(w, n: int, m: int) -> PackedNM:
    """Pack an N:M matrix (numpy or torch, any numeric dtype). Raises
    :class:`NMViolationError` for a matrix that breaks N:M."""
    _check_nm_args(n, m)
    arr = _as_2d(w)
    rows, k = arr.shape
    bad = _first_violation(arr, n, m)
    if bad is not None:
        raise NMViolationError(*bad, n, m)
    g = _groups(arr, m)  # [rows, G, M]
    if n == m:
        return PackedNM(values=g.reshape(rows, -1).copy(), n=n, m=m, k=k,
                        indices=np.zeros((rows, 0), np.uint8))
    # rank positions: non-zeros first, then zeros, each by ascending position; keep N; re-sort
    key = (g == 0).astype(np.int64) * m + np.arange(m)
    chosen = np.sort(np.argsort(key, axis=-1, kind="stable")[..., :n], axis=-1)  # [rows, G, N]
    values = np.take_along_axis(g, chosen, axis=-1).reshape(rows, -1)
    indices = _pack_bits(chosen.reshape(rows, -1), m.bit_length() - 1)
    return PackedNM(values=values, indices=indices, n=n, m=m, k=k)


def unpack(p: PackedNM) -> np.ndarray:
    """The dense ``[rows, k]`` matrix of a :class:`PackedNM` (padding dropped)."""
    if not isinstance(p, PackedNM):
        raise TypeError(f"unpack takes a PackedNM, got {type(p).__name__}")
    out = np.zeros((p.rows, p.groups, p.m), dtype=p.values.dtype)
    idx = p.unpacked_indices().reshape(p.rows, p.groups, p.n)
    np.put_along_axis(out, idx, p.values.reshape(p.rows, p.groups, p.n), axis=-1)
    return out.reshape(p.rows, -1)[:, : p.k]
