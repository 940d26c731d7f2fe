"""The N:M format: masks, checks, pack/unpack round trips and the bit layout."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sw.nm import (
    NMViolationError,
    PackedNM,
    check_nm,
    is_nm,
    nm_mask,
    pack,
    same_density,
    unpack,
)


@st.composite
def matrices(draw):
    m = draw(st.sampled_from([4, 8, 16]))
    n = draw(st.integers(1, m))
    rows = draw(st.integers(1, 8))
    k = draw(st.integers(1, 70))
    w = draw(arrays(np.int8, (rows, k), elements=st.integers(-128, 127)))
    return w, n, m


def reference_mask(w: np.ndarray, n: int, m: int) -> np.ndarray:
    """Independent per-group reference with plain loops: N largest |w|, lower column on ties."""
    rows, k = w.shape
    keep = np.zeros((rows, k), bool)
    for r in range(rows):
        for g0 in range(0, k, m):
            cols = list(range(g0, min(g0 + m, k)))
            ranked = sorted(cols, key=lambda c: (-abs(int(w[r, c])), c))
            for c in ranked[:n]:
                keep[r, c] = True
    return keep


@given(matrices())
@settings(max_examples=200, deadline=None)
def test_mask_is_nm_and_keeps_the_largest(case):
    w, n, m = case
    mask = nm_mask(w, n, m)
    assert mask.dtype == np.bool_ and mask.shape == w.shape
    assert np.array_equal(mask, reference_mask(w, n, m))
    sparse = np.where(mask, w, 0)
    check_nm(sparse, n, m)
    assert is_nm(sparse, n, m)


@given(matrices())
@settings(max_examples=200, deadline=None)
def test_unpack_of_pack_is_identity(case):
    w, n, m = case
    sparse = np.where(nm_mask(w, n, m), w, 0).astype(np.int8)
    p = pack(sparse, n, m)
    assert p.values.dtype == np.int8
    assert p.values.shape == (w.shape[0], p.groups * n)
    assert p.k == w.shape[1] and p.k_padded % m == 0 and 0 <= p.padding < m
    out = unpack(p)
    assert out.dtype == np.int8 and np.array_equal(out, sparse)
    idx = p.unpacked_indices().reshape(w.shape[0], p.groups, n)
    assert (idx < m).all() and (idx >= 0).all()
    if n > 1:
        assert (np.diff(idx, axis=-1) > 0).all()  # distinct, ascending
    # every stored non-zero sits at its own column
    assert np.count_nonzero(p.values) == np.count_nonzero(sparse)


def test_bit_layout_by_hand():
    # M = 4 (2-bit indices), N = 2, one row, K = 10 -> 3 groups (last padded by 2)
    w = np.array([[0, 5, 0, -3,   7, 0, 0, 0,   0, 9]], np.int8)
    p = pack(w, 2, 4)
    # group 0: non-zeros at 1, 3 -> slots (5 @1), (-3 @3)
    # group 1: one non-zero at 0, padded with the lowest free position 1 -> (7 @0), (0 @1)
    # group 2: non-zero at 1 (col 9); free lowest position 0 -> (0 @0), (9 @1)
    assert p.values.tolist() == [[5, -3, 7, 0, 0, 9]]
    # indices 1,3,0,1,0,1 at 2 bits each, LSB first:
    # byte 0 = 1 | 3<<2 | 0<<4 | 1<<6 = 0b01001101 = 0x4D; byte 1 = 0 | 1<<2 = 0x04
    assert p.indices.tolist() == [[0x4D, 0x04]]
    assert p.padding == 2 and p.nbytes == 6 + 2
    assert unpack(p).tolist() == w.tolist()


def test_dense_packs_without_indices():
    w = np.arange(-6, 6, dtype=np.int8).reshape(2, 6)
    p = pack(w, 4, 4)
    assert p.indices.shape == (2, 0)
    assert p.values.tolist() == [[-6, -5, -4, -3, -2, -1, 0, 0], [0, 1, 2, 3, 4, 5, 0, 0]]
    assert np.array_equal(unpack(p), w)


def test_check_names_the_first_bad_row_and_group():
    w = np.zeros((5, 16), np.int8)
    w[3, 4:7] = 1  # row 3, group 1: three non-zeros
    w[4, 0:4] = 1  # a later violation
    with pytest.raises(NMViolationError, match=r"row 3, group 1 \(columns 4..7\) has 3 "
                                               r"non-zeros, N:M = 2:4 allows 2") as e:
        pack(w, 2, 4)
    assert (e.value.row, e.value.group, e.value.count) == (3, 1, 3)
    assert not is_nm(w, 2, 4)


def test_torch_and_numpy_agree():
    torch.manual_seed(0)
    w = torch.randn(6, 20)
    mask = nm_mask(w, 2, 8)
    assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool
    assert np.array_equal(mask.numpy(), nm_mask(w.numpy(), 2, 8))
    p_t, p_n = pack(w * mask, 2, 8), pack((w * mask).numpy(), 2, 8)
    assert np.array_equal(p_t.values, p_n.values) and np.array_equal(p_t.indices, p_n.indices)


def test_bad_input_is_refused():
    w = np.zeros((2, 8), np.int8)
    with pytest.raises(ValueError, match=r"2-D \[rows, K\], got shape \(2, 2, 2\)"):
        pack(np.zeros((2, 2, 2)), 2, 4)
    with pytest.raises(ValueError, match="M must be 4, 8 or 16, got 6"):
        nm_mask(w, 2, 6)
    with pytest.raises(ValueError, match="N must be an int in 1..M = 1..4, got 0"):
        pack(w, 0, 4)
    with pytest.raises(ValueError, match="got 5"):
        check_nm(w, 5, 4)
    with pytest.raises(ValueError, match="at least one row and one column"):
        pack(np.zeros((0, 4)), 2, 4)
    good = pack(w, 2, 4)
    with pytest.raises(ValueError, match=r"indices must be uint8 \(2, 1\)"):
        PackedNM(values=good.values, indices=np.zeros((2, 3), np.uint8), n=2, m=4, k=8)
    with pytest.raises(ValueError, match="not strictly ascending"):
        PackedNM(values=good.values, indices=np.zeros((2, 1), np.uint8), n=2, m=4, k=8)
    with pytest.raises(ValueError, match=r"values must be \[rows, G\*N = 4\]"):
        PackedNM(values=np.zeros((2, 5), np.int8), indices=good.indices, n=2, m=4, k=8)
    with pytest.raises(TypeError, match="unpack takes a PackedNM"):
        unpack(w)


@pytest.mark.parametrize("n, m, m_to", [(2, 4, 8), (1, 4, 8), (1, 4, 16), (3, 8, 16),
                                         (4, 4, 8), (1, 8, 8)])
def test_n_m_weights_are_also_their_same_density_in_wider_groups(n, m, m_to):
    """Weights pruned n:m satisfy ``same_density(n, m, m_to):m_to`` where m divides m_to,
    and that N keeps the density."""
    w = np.random.default_rng(7).standard_normal((6, 48)).astype(np.float32)
    pruned = w * nm_mask(w, n, m)
    nc = same_density(n, m, m_to)
    assert nc * m == n * m_to
    assert is_nm(pruned, nc, m_to)


def test_same_density_without_an_equivalent_or_with_bad_arguments():
    assert same_density(1, 8, 4) is None and same_density(3, 8, 4) is None
    assert same_density(2, 8, 4) == 1
    for bad in [(0, 4, 8), (5, 4, 8), (2, 4, 0), (2.0, 4, 8)]:
        with pytest.raises(ValueError, match="same_density needs"):
            same_density(*bad)
