"""Integer softmax of sw/ref against torch.softmax: the stated bound, edge rows, masks."""

import numpy as np
import pytest

from sw.ref.softmax import (
    D_MAX,
    EXP_BITS,
    FRAC_BITS,
    RECIP_BITS,
    SOFTMAX_BOUND,
    exp2_neg_int,
    softmax_float,
    softmax_int,
    softmax_params,
)

SEED = 7
SCALE = 1 / (64 * 8)  # e.g. s_q = s_k = 1/8 * ... folded with 1/sqrt(64)


def check(x, mask=None, scale=SCALE):
    p = softmax_params(scale)
    q = softmax_int(x, p, mask)
    f = softmax_float(np.asarray(x, np.float64) * scale, mask).numpy()
    err = np.abs(q / 255.0 - f).max()
    assert q.dtype == np.uint8
    assert err <= SOFTMAX_BOUND, f"max error {err * 255:.3f} LSB > bound"
    return q, err


@pytest.mark.parametrize("length", [1, 7, 128, 384, 512, 4096])
@pytest.mark.parametrize("spread", [0.01, 0.3, 2.0, 8.0, 60.0])
def test_random_rows_within_bound(length, spread):
    rng = np.random.default_rng([SEED, length, int(spread * 100)])
    x = np.round(rng.normal(0, spread / SCALE, size=(8, length))).astype(np.int64)
    check(np.clip(x, -(2**31), 2**31 - 1))


def test_edge_rows():
    rng = np.random.default_rng(SEED)
    L = 512
    rows = [
        np.zeros(L, np.int64),  # all equal: uniform
        np.full(L, -(2**31)),  # very negative, all equal
        np.concatenate([[2**31 - 1], np.full(L - 1, -(2**31))]),  # one huge value
        rng.integers(-(2**31), -(2**31) + 1000, size=L),  # very negative
        np.where(np.arange(L) % 2 == 0, 2**31 - 1, -(2**31)),  # saturating alternation
        np.concatenate([[0, 0], np.full(L - 2, -(10**6))]),  # two-way tie, rest vanishing
    ]
    q, _ = check(np.stack(rows))
    assert q[0].min() == q[0].max()  # uniform row stays uniform
    assert q[2, 0] == 255 and q[2, 1:].max() == 0
    assert q[5, 0] == q[5, 1] == 128  # 0.5 * 255 = 127.5 rounds up


def test_masks():
    rng = np.random.default_rng(SEED)
    x = rng.integers(-(2**14), 2**14, size=(6, 128))
    mask = rng.random((6, 128)) < 0.7
    mask[0] = False  # fully masked row
    mask[1] = True
    mask[2, :] = False
    mask[2, 5] = True  # a single key
    q, _ = check(x, mask)
    assert q[0].max() == 0  # documented: a fully masked row is all zeros
    assert (q[~mask] == 0).all()
    assert q[2, 5] == 255
    # masked keys do not influence the others, whatever their value
    x2 = np.where(mask, x, 2**31 - 1)
    assert (softmax_int(x2, softmax_params(SCALE), mask) == q).all()
    # key mask broadcast over rows ([L] for every row)
    check(x, mask[3])


def test_row_sums_close_to_one():
    rng = np.random.default_rng(SEED)
    x = rng.integers(-(2**16), 2**16, size=(50, 384))
    q = softmax_int(x, softmax_params(SCALE)).astype(np.int64)
    # each of 384 entries rounds by at most (bound) => the sum is within 384 * bound
    assert np.abs(q.sum(axis=1) - 255).max() <= 384 * SOFTMAX_BOUND * 255


def test_exp2_table_accuracy():
    u = np.arange(0, 30 << FRAC_BITS)
    e = exp2_neg_int(u)
    exact = 2.0**EXP_BITS * np.exp2(-u / 2**FRAC_BITS)
    # relative chord error (ln2/32)^2/8 plus one unit of the floor
    assert (np.abs(e - exact) <= exact * 6e-5 + 1).all()
    assert e[0] == 2**EXP_BITS and (np.diff(e) <= 0).all()  # exact at 0, monotone


def test_bad_input():
    p = softmax_params(SCALE)
    with pytest.raises(TypeError, match="scores must hold integers"):
        softmax_int(np.zeros((2, 3)), p)
    with pytest.raises(ValueError, match="row length 600 exceeds the longest row 512"):
        softmax_int(np.zeros((1, 600), np.int32), p, max_row=512)
    with pytest.raises(TypeError, match="key mask must be boolean"):
        softmax_int(np.zeros((1, 4), np.int32), p, np.ones(4))
    with pytest.raises(ValueError, match="does not fit scores"):
        softmax_int(np.zeros((1, 4), np.int32), p, np.ones(3, bool))
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        softmax_params(-1.0)
    with pytest.raises(ValueError, match="out of range"):
        softmax_params(1e6)


def _unsaturated(x, p):
    """Steps 1-6 of sw.ref.softmax without the saturation of d (unmasked rows)."""
    x = np.asarray(x, np.int64)
    d = x.max(axis=-1, keepdims=True) - x
    u = (d * p.mult + ((1 << p.shift) >> 1)) >> p.shift
    e = exp2_neg_int(u)
    r = (255 << RECIP_BITS) // e.sum(axis=-1, keepdims=True)
    return ((e * r + (1 << (RECIP_BITS - 1))) >> RECIP_BITS).astype(np.uint8)


@pytest.mark.parametrize("scale", ["smallest", 1e-6, 3e-5, SCALE])
def test_saturated_difference_changes_nothing(scale):
    """d saturates at D_MAX (one DSP48E2 for d * A): for every scale softmax_params accepts,
    rows whose differences go far past it give the unsaturated algorithm's result."""
    if scale == "smallest":  # the smallest scale accepted, found by bisection
        lo, hi = 1e-8, 1e-5
        for _ in range(60):
            mid = (lo + hi) / 2
            try:
                softmax_params(mid)
                hi = mid
            except ValueError:
                lo = mid
        scale = hi
    p = softmax_params(scale)
    assert (D_MAX * p.mult + ((1 << p.shift) >> 1)) >> p.shift >> FRAC_BITS > EXP_BITS
    rng = np.random.default_rng(SEED)
    L = 256
    around = rng.integers(-3, 4, size=(8, L)) + D_MAX  # differences right at the saturation
    rows = np.concatenate([
        rng.integers(-(2**31), 2**31, size=(8, L)),  # differences up to 2**32
        np.where(rng.random((8, L)) < 0.5, 2**31 - 1, 2**31 - 1 - around),
        np.round(rng.normal(0, 30 / scale, size=(8, L))).clip(-(2**31), 2**31 - 1),
    ]).astype(np.int64)
    assert (rows.max(axis=1, keepdims=True) - rows).max() > D_MAX
    assert (softmax_int(rows, p) == _unsaturated(rows, p)).all()


def test_scale_too_small_for_the_saturation():
    with pytest.raises(ValueError, match=r"scale 2e-07 is too small.*smallest scale accepted"):
        softmax_params(2e-7)
