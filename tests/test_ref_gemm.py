"""Sparse (packed N:M) and dense integer GEMMs of sw/ref, and the tiler that feeds the engine."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hw.config import preset
from sw.compiler.gemm_tiles import tile_gemm, untile_output
from sw.nm import nm_mask, pack, unpack
from sw.ref.gemm import dense_gemm_int, linear_float, max_safe_k, spmm_int, spmm_int_dataflow


@st.composite
def nm_problem(draw):
    m = draw(st.sampled_from([4, 8, 16]))
    n = draw(st.integers(1, m))
    rows = draw(st.integers(1, 9))
    k = draw(st.integers(1, 5 * m))
    tokens = draw(st.integers(1, 7))
    w = draw(arrays(np.int64, (rows, k), elements=st.integers(-128, 127)))
    x = draw(arrays(np.int64, (tokens, k), elements=st.integers(-128, 127)))
    w = np.where(nm_mask(w, n, m), w, 0)
    return w, x, n, m


@given(nm_problem(), st.booleans())
@settings(max_examples=150, deadline=None)
def test_sparse_gemm_equals_dense_gemm_of_unpacked(problem, with_bias):
    w, x, n, m = problem
    packed = pack(w, n, m)
    bias = np.arange(w.shape[0]) * 1000 - 3 if with_bias else None
    got = spmm_int(x, packed, bias)
    assert got.dtype == np.int32
    assert np.array_equal(got, dense_gemm_int(x, unpack(packed), bias))
    # the hardware's slot-by-slot dataflow and plain int64 arithmetic agree with it
    plain = x.astype(np.int64) @ w.astype(np.int64).T
    assert np.array_equal(spmm_int_dataflow(x, packed), plain)
    if bias is None:
        assert np.array_equal(got, plain)
    # and the integer result is the float GEMM exactly (all values are small integers)
    assert np.array_equal(got, linear_float(x, w, bias).numpy())


def test_accumulation_cannot_overflow_at_the_largest_preset_k():
    # the worst case of the largest reduction any preset allows: every product +2**14
    k = max(p.max_k for p in (preset(n) for n in ("tiny", "ecp5", "u200", "u280")))
    assert k <= max_safe_k()
    x = np.full((1, k), -128)
    w = np.full((2, k), -128)
    acc = dense_gemm_int(x, w)
    assert acc[0, 0] == k * 2**14 < 2**31 - 1
    assert spmm_int(x, pack(w, 4, 4))[0, 0] == k * 2**14


def test_bias_add_saturates():
    x = np.full((1, 4096), -128)
    w = np.full((2, 4096), -128)
    got = dense_gemm_int(x, w, bias=[2**31 - 1, -(2**31)])
    assert got.tolist() == [[2**31 - 1, 4096 * 2**14 - 2**31]]


def test_gemm_refuses_bad_input():
    packed = pack(np.zeros((2, 8), np.int8), 2, 4)
    with pytest.raises(ValueError, match=r"must be \[tokens, K=8\], got shape \(3, 7\)"):
        spmm_int(np.zeros((3, 7), np.int8), packed)
    with pytest.raises(TypeError, match="must be a PackedNM"):
        spmm_int(np.zeros((3, 8), np.int8), np.zeros((2, 8), np.int8))
    with pytest.raises(TypeError, match="activations must hold integers"):
        spmm_int(np.zeros((3, 8)), packed)
    with pytest.raises(ValueError, match="above 127"):
        dense_gemm_int(np.full((1, 4), 200), np.zeros((1, 4), np.int8))
    assert dense_gemm_int(np.full((1, 4), 200), np.ones((1, 4), np.int8), a_unsigned=True)[0, 0] \
        == 800
    with pytest.raises(ValueError, match="equal K"):
        dense_gemm_int(np.zeros((1, 4), np.int8), np.zeros((1, 5), np.int8))
    with pytest.raises(ValueError, match="bias has 3 entries"):
        dense_gemm_int(np.zeros((1, 4), np.int8), np.zeros((2, 4), np.int8), bias=[1, 2, 3])
    with pytest.raises(ValueError, match="K = 200000 could overflow"):
        dense_gemm_int(np.zeros((1, 200000), np.int8), np.zeros((1, 200000), np.int8))


@pytest.mark.parametrize(("n", "m"), [(1, 4), (2, 4), (4, 4), (2, 8), (3, 16)])
def test_tiler_round_trip_through_a_software_array(n, m):
    """The tiler's streams, multiplied the way the engine does (index mux per row), and
    reassembled, give the reference GEMM: pins the stream format independently of the RTL."""
    cfg = preset("tiny").replace(pe_rows=3, pe_cols=2, m=m, n_max=m)
    rng = np.random.default_rng(n * 100 + m)
    w = rng.integers(-128, 128, size=(7, 3 * m + 1))
    w = np.where(nm_mask(w, n, m), w, 0)
    x = rng.integers(-128, 128, size=(5, 3 * m + 1))
    s = tile_gemm(cfg, pack(w, n, m), x)
    beats, step, grp = [], 0, 0
    for n_, g_, _ in s.cmds:
        acc = np.zeros((cfg.pe_rows, cfg.pe_cols), np.int64)
        for _g in range(g_):
            acts = s.acts[grp].astype(np.int64)
            acts = np.where(acts >= 128, acts - 256, acts)  # int8 bytes
            grp += 1
            for t in range(n_):
                sel = np.full(cfg.pe_rows, t) if n_ == m else s.w_index[step]
                acc += s.w_values[step][:, None] * acts[:, sel].T
                step += 1
        beats += [acc[:, c] for c in range(cfg.pe_cols)]
    assert np.array_equal(untile_output(cfg, s, beats), spmm_int(x, pack(w, n, m)))


def test_tiler_refuses_what_the_config_cannot_hold():
    cfg = preset("tiny").replace(n_max=2, max_k=1024)
    with pytest.raises(ValueError, match="N = 3"):
        tile_gemm(cfg, pack(np.zeros((4, 8), np.int8), 3, 4), np.zeros((2, 8), np.int8))
    with pytest.raises(ValueError, match="K = 2048 exceeds the config's longest reduction"):
        tile_gemm(cfg, np.zeros((4, 2048), np.int8), np.zeros((2, 2048), np.int8))
    with pytest.raises(ValueError, match="M = 8"):
        tile_gemm(cfg, pack(np.zeros((4, 8), np.int8), 2, 8), np.zeros((2, 8), np.int8))
    with pytest.raises(ValueError, match=r"above 127"):
        tile_gemm(cfg, np.zeros((4, 8), np.int8), np.full((2, 8), 200))
