"""Integer LayerNorm and GELU of sw/ref against their torch float references."""

import numpy as np
import pytest
import torch

from sw.ref.gelu import GELU_BOUND, gelu_float, gelu_int, gelu_params
from sw.ref.layernorm import (
    LAYERNORM_BOUND,
    MANT_BITS,
    MAX_GAIN,
    isqrt,
    layernorm_float,
    layernorm_int,
    layernorm_params,
    recip_mantissa,
)

SEED = 99


def ln_error(x, p):
    q = layernorm_int(x, p)
    f = np.clip(layernorm_float(x, p), -128, 127)  # int8 outputs saturate
    assert q.dtype == np.int8
    return np.abs(q - f).max()


def bert_like(h, rng):
    return rng.uniform(0.5, 2.0, h) * rng.choice([-1, 1], h, p=[0.05, 0.95]), \
        rng.uniform(-0.5, 0.5, h)


@pytest.mark.parametrize("h", [1, 2, 384, 768, 1024])
@pytest.mark.parametrize("scale_out", [2 / 127, 6 / 127])
def test_layernorm_random_rows_within_bound(h, scale_out):
    rng = np.random.default_rng([SEED, h])
    gamma, beta = bert_like(h, rng)
    p = layernorm_params(0.05, gamma, beta, scale_out)
    x = rng.integers(-128, 128, size=(40, h))
    x[:10] = np.round(rng.normal(0, 3, size=(10, h))).clip(-128, 127)  # low variance
    assert ln_error(x, p) <= LAYERNORM_BOUND


def test_layernorm_edge_rows():
    rng = np.random.default_rng(SEED)
    for h in (384, 768):
        gamma, beta = bert_like(h, rng)
        p = layernorm_params(0.03, gamma, beta, 3 / 127)
        rows = np.stack([
            np.full(h, 17),  # all equal: output is beta
            np.full(h, -128),
            np.where(np.arange(h) == 5, 127, 0),  # one huge value
            np.where(np.arange(h) % 2 == 0, -128, 127),  # alternating extremes
            np.where(np.arange(h) == 0, 1, 0),  # the smallest non-zero variance
        ])
        assert ln_error(rows, p) <= LAYERNORM_BOUND
        want_beta = np.sign(beta / p.scale_out) * np.floor(np.abs(beta / p.scale_out) + 0.5)
        assert np.abs(layernorm_int(rows[:1], p)[0] - want_beta).max() <= 1
        # saturating outputs: a large gamma drives values past int8, which must clamp
        p_big = layernorm_params(0.03, gamma * 4, beta, 3 / 127)
        q = layernorm_int(rows, p_big)
        assert q.max() == 127 and q.min() == -128
        assert ln_error(rows, p_big) <= LAYERNORM_BOUND


def test_recip_mantissa_keeps_the_leading_bits():
    """``m 2**e`` is ``r`` with the bits below its leading MANT_BITS cleared."""
    rng = np.random.default_rng(SEED)
    r = np.concatenate([[0, 1, 2**MANT_BITS - 1, 2**MANT_BITS, 2**48, 2**48 - 1],
                        rng.integers(0, 2**49, 200)]).astype(np.int64)
    e, m = recip_mantissa(r)
    assert (m < 2**MANT_BITS).all() and (e >= 0).all()
    assert ((m << e) <= r).all() and (r < (m + 1) << e).all()
    assert (m[e > 0] >= 2 ** (MANT_BITS - 1)).all()  # normalised whenever bits are dropped
    assert (e[r < 2**MANT_BITS] == 0).all()


@pytest.mark.parametrize("in_bits", [8, 16])
def test_layernorm_largest_gain_and_smallest_variance_within_bound(in_bits):
    """The largest gain the params accept (the error bound's worst scaling), with rows of
    the smallest non-zero variance (the largest reciprocal, and so the largest ``e``, that a
    row of unequal values gives with eps 0), small and extreme values."""
    rng = np.random.default_rng([SEED, in_bits])
    h, lim = 768, 2 ** (in_bits - 1)
    gamma, beta = bert_like(h, rng)
    s_out = np.abs(gamma).max() * np.sqrt(h) / (MAX_GAIN * 0.999)
    p = layernorm_params(0.05, gamma, beta, s_out, eps=0.0, in_bits=in_bits)
    x = rng.integers(-lim, lim, size=(30, h))
    x[:5] = rng.integers(-3, 4, size=(5, h))
    x[5] = np.where(np.arange(h) == 7, 1, 0)  # V = H**2 - H: the smallest with eps 0
    x[6] = np.where(np.arange(h) % 2 == 0, -lim, lim - 1)
    assert ln_error(x, p) <= LAYERNORM_BOUND


def test_layernorm_accepts_torch_and_matches_bert_eps():
    rng = np.random.default_rng(SEED)
    ln = torch.nn.LayerNorm(384, eps=1e-12)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.3, 0.3)
    p = layernorm_params(0.04, ln.weight, ln.bias, 4 / 127, eps=ln.eps)
    x = torch.from_numpy(rng.integers(-128, 128, size=(8, 384)).astype(np.int8))
    ref = ln(x.double().float() * 0.04).detach().numpy() / (4 / 127)
    assert np.abs(layernorm_int(x, p) - np.clip(ref, -128, 127)).max() <= LAYERNORM_BOUND + 1e-3


def test_layernorm_bad_input():
    p = layernorm_params(0.05, np.ones(8), np.zeros(8), 0.05)
    with pytest.raises(ValueError, match=r"must be \[..., H=8\], got shape \(2, 9\)"):
        layernorm_int(np.zeros((2, 9), np.int8), p)
    with pytest.raises(TypeError, match="must hold integers"):
        layernorm_int(np.zeros((2, 8)), p)
    with pytest.raises(ValueError, match="equal length"):
        layernorm_params(0.05, np.ones(8), np.zeros(7), 0.05)
    with pytest.raises(ValueError, match="hidden size 2048 is outside 1..1024"):
        layernorm_params(0.05, np.ones(2048), np.zeros(2048), 0.05)
    with pytest.raises(ValueError, match="out of range"):
        layernorm_params(0.05, np.full(8, 1e4), np.zeros(8), 0.01)
    with pytest.raises(ValueError, match="scale_out must be finite and > 0"):
        layernorm_params(0.05, np.ones(8), np.zeros(8), 0.0)


def test_isqrt_exact():
    v = np.array([0, 1, 2, 3, 4, 15, 16, 17, 2**62 - 1, (2**31 - 1) ** 2])
    s = isqrt(v)
    assert (s * s <= v).all() and ((s + 1) * (s + 1) > v).all()


@pytest.mark.parametrize(("range_in", "range_out"), [(8, 8), (12, 8), (20, 20), (3, 1), (6, 3)])
def test_gelu_exhaustive_within_bound(range_in, range_out):
    p = gelu_params(range_in / 127, range_out / 127)
    x = np.arange(-128, 128)
    q = gelu_int(x, p)
    f = gelu_float(x, p)
    inside = np.abs(f) <= 127
    assert np.abs(q[inside] - f[inside]).max() <= GELU_BOUND
    assert (q[~inside] == np.clip(np.round(f[~inside]), -128, 127)).all()  # saturation
    assert q.dtype == np.int8


def test_gelu_bad_input():
    p = gelu_params(0.1, 0.1)
    with pytest.raises(ValueError, match="above 127"):
        gelu_int(np.array([128]), p)
    with pytest.raises(ValueError, match="scale_in must be finite"):
        gelu_params(float("nan"), 0.1)


@pytest.mark.parametrize("h", [384, 768])
def test_layernorm_int16_input_within_bound(h):
    """The residual path's int16 rows, with one outlier channel as real BERT has."""
    rng = np.random.default_rng([SEED, h, 16])
    gamma, beta = bert_like(h, rng)
    x = np.round(rng.normal(0, 360, size=(30, h))).astype(np.int64)
    x[:, 7] = rng.integers(20000, 32767, size=30)  # the outlier channel
    x = np.clip(x, -32768, 32767)
    p = layernorm_params(218 / 32767, gamma, beta, 8 / 127, in_bits=16)
    q = layernorm_int(x, p)
    f = np.clip(layernorm_float(x, p), -128, 127)
    assert np.abs(q - f).max() <= LAYERNORM_BOUND
    with pytest.raises(ValueError, match="(below -128|above 127)"):
        layernorm_int(x, layernorm_params(0.05, gamma, beta, 4 / 127))  # int8 params
    with pytest.raises(ValueError, match="int8 or int16, got 32 bits"):
        layernorm_params(0.05, gamma, beta, 4 / 127, in_bits=32)
