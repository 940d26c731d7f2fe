"""Tiling of one GEMM onto the spmm engine: the streams the engine consumes, and back.

A GEMM ``out[tokens, rows] = x[tokens, K] . w[rows, K]^T`` (``w`` packed N:M) is cut into tiles
of ``R`` rows by ``C`` tokens (rows outer, tokens inner); each tile streams its ``G * N``
weight steps and ``G`` activation groups (see :class:`hw.spmm.engine.SpmmEngine`). Rows and
tokens beyond the matrix are zero padding and are dropped again by :func:`untile_output`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hw.config import AcceleratorConfig
from sw.nm import PackedNM, pack
from sw.perf.engine import GemmShape, check_gemm
from sw.ref.fixedpoint import INT8_MAX, INT8_MIN, UINT8_MAX, as_int_array

__all__ = ["EngineStreams", "tile_gemm", "untile_output"]


@dataclass(frozen=True)
class EngineStreams:
    """Everything the engine consumes for one GEMM, as arrays (benches pack them into beats).

    ``cmds``: ``[(n, groups, act_unsigned)]`` one per tile; ``w_values``/``w_index``:
    ``[steps, R]``; ``acts``: ``[groups_total, C, M]`` raw bytes; ``tiles``: ``(row0, tok0)``.
    """

    cmds: list[tuple[int, int, int]]
    w_values: np.ndarray
    w_index: np.ndarray
    acts: np.ndarray
    tiles: list[tuple[int, int]]
    rows: int
    tokens: int
    steps_per_tile: int


def tile_gemm(config: AcceleratorConfig, w, x, *, act_unsigned: bool = False) -> EngineStreams:
    """Cut ``x [tokens, K] . w [rows, K]^T`` into engine tiles.

    ``w`` is a :class:`PackedNM` (M must be the config's) or a dense integer matrix (run
    dense, N = M). ``x`` holds int8 values, or uint8 with ``act_unsigned`` (P.V).
    Refuses, with the reason, an N:M the config cannot run and a K beyond ``config.max_k``.
    """
    R, C, M = config.pe_rows, config.pe_cols, config.m
    if not isinstance(w, PackedNM):
        wi = as_int_array(w, "weights", lo=INT8_MIN, hi=INT8_MAX)
        if wi.ndim != 2:
            raise ValueError(f"weights must be 2-D [rows, K], got shape {wi.shape}")
        w = pack(wi, M, M)
    lo, hi = (0, UINT8_MAX) if act_unsigned else (INT8_MIN, INT8_MAX)
    xi = as_int_array(x, "activations", lo=lo, hi=hi)
    if xi.ndim != 2 or xi.shape[1] != w.k or xi.shape[0] < 1:
        raise ValueError(f"activations must be [tokens >= 1, K={w.k}], got shape {xi.shape}")
    check_gemm(config, GemmShape(rows=w.rows, k=w.k, tokens=xi.shape[0], n=w.n, m=w.m))
    tokens, rows, G, N = xi.shape[0], w.rows, w.groups, w.n

    rb, tb = math.ceil(rows / R), math.ceil(tokens / C)
    vals = np.zeros((rb * R, G * N), np.int64)
    vals[:rows] = w.values
    idx = np.zeros((rb * R, G * N), np.int64)
    if N != M:
        idx[:rows] = w.unpacked_indices()
    xp = np.zeros((tb * C, G * M), np.int64)
    xp[:tokens, : w.k] = xi
    groups_of = (xp & 0xFF).reshape(tb * C, G, M)  # raw bytes

    cmds, wv, wx, acts, tiles = [], [], [], [], []
    for i in range(rb):
        for j in range(tb):
            cmds.append((N, G, int(act_unsigned)))
            tiles.append((i * R, j * C))
            wv.append(vals[i * R:(i + 1) * R].T)  # [G*N, R]
            wx.append(idx[i * R:(i + 1) * R].T)
            acts.append(groups_of[j * C:(j + 1) * C].transpose(1, 0, 2))  # [G, C, M]
    return EngineStreams(cmds=cmds, w_values=np.concatenate(wv), w_index=np.concatenate(wx),
                         acts=np.concatenate(acts), tiles=tiles, rows=rows, tokens=tokens,
                         steps_per_tile=G * N)


def untile_output(config: AcceleratorConfig, s: EngineStreams, beats) -> np.ndarray:
    """Reassemble the engine's output beats (``[tiles * C, R]``, in order) -> ``[tokens, rows]``."""
    R, C = config.pe_rows, config.pe_cols
    b = np.asarray(beats, dtype=np.int64)
    if b.shape != (len(s.tiles) * C, R):
        raise ValueError(f"expected {len(s.tiles) * C} beats of {R} lanes, got shape {b.shape}")
    out = np.zeros((math.ceil(s.tokens / C) * C, math.ceil(s.rows / R) * R), np.int64)
    for t, (r0, c0) in enumerate(s.tiles):
        out[c0:c0 + C, r0:r0 + R] = b[t * C:(t + 1) * C]
    return out[: s.tokens, : s.rows].astype(np.int32)
