"""Fixed-point primitives, quantization, requantization and residual add of sw/ref."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sw.ref.fixedpoint import (
    MAX_SHIFT,
    MULT_BITS,
    as_int_array,
    multiplier_value,
    quantize_multiplier,
    round_shift,
)
from sw.ref.quant import (
    ADD_MULT_BITS,
    V_MAX,
    RequantParams,
    acc_bound,
    add_float,
    add_int,
    add_params,
    dequantize,
    int_range,
    quantize_activations,
    quantize_weights,
    requant_params,
    requantize_float,
    requantize_int,
)

SEED = 20261124


@given(st.integers(-(2**46), 2**46), st.integers(0, 40))
@settings(max_examples=300, deadline=None)
def test_round_shift_is_round_half_up(x, s):
    # exact rational arithmetic: floor(x / 2**s + 1/2)
    import math
    from fractions import Fraction

    want = math.floor(Fraction(x, 2**s) + Fraction(1, 2))
    assert int(round_shift(x, s)) == want


def test_round_shift_ties_go_up():
    assert round_shift([5, -5, 3, -3, 2, -2], 1).tolist() == [3, -2, 2, -1, 1, -1]
    assert round_shift([7], 0).tolist() == [7]
    with pytest.raises(ValueError, match="shift must be in"):
        round_shift(1, MAX_SHIFT + 1)


@given(st.floats(2.0**-48, 2**MULT_BITS - 1, allow_nan=False))
@settings(max_examples=300, deadline=None)
def test_quantize_multiplier_is_normalised_and_accurate(r):
    m, s = quantize_multiplier(r)
    assert 2 ** (MULT_BITS - 1) <= int(m) < 2**MULT_BITS
    assert 0 <= int(s) <= MAX_SHIFT
    assert abs(float(multiplier_value(m, s)) - r) <= r * 2.0**-MULT_BITS


def test_quantize_multiplier_rejects_bad_values():
    for bad, msg in [(-1.0, "finite and >= 0"), (float("nan"), "finite"),
                     (2.0**MULT_BITS, "too large"), (1e-30, "too small")]:
        with pytest.raises(ValueError, match=msg):
            quantize_multiplier(bad)
    assert quantize_multiplier(0.0) == (0, 0)


def test_as_int_array_refuses_floats_and_out_of_range():
    with pytest.raises(TypeError, match="x must hold integers, got dtype float32"):
        as_int_array(np.zeros(3, np.float32), "x")
    with pytest.raises(TypeError, match="bool"):
        as_int_array(np.zeros(3, bool), "x")
    with pytest.raises(ValueError, match=r"x\[1\] = 200 is above 127"):
        as_int_array([0, 200, 3], "x", lo=-128, hi=127)
    assert as_int_array(torch.tensor([1, -2], dtype=torch.int8), "x").tolist() == [1, -2]


def test_weight_quantization_is_symmetric_per_channel():
    torch.manual_seed(SEED)
    w = torch.randn(16, 40)
    w[3] = 0  # an all-zero channel
    q, s = quantize_weights(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    assert (q.abs().amax(dim=1)[torch.arange(16) != 3] == 127).all()
    err = (dequantize(q, s, axis=0) - w.double()).abs()
    assert (err <= s[:, None] / 2 + 1e-12).all()  # half a step per channel
    with pytest.raises(ValueError, match="2-D"):
        quantize_weights(torch.randn(3))
    with pytest.raises(TypeError, match="floating-point"):
        quantize_weights(torch.ones(2, 2, dtype=torch.int32))


def test_activation_quantization_saturates():
    x = torch.tensor([-10.0, -1.0, 0.0, 0.26, 10.0])
    q = quantize_activations(x, 1.0 / 64)
    assert q.tolist() == [-128, -64, 0, 17, 127]
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        quantize_activations(x, 0.0)
    with pytest.raises(ValueError, match="non-finite"):
        quantize_activations(torch.tensor([float("nan")]), 1.0)


def test_requantize_int_within_one_lsb_of_float():
    rng = np.random.default_rng(SEED)
    channels = 64
    real = rng.uniform(1e-5, 0.05, size=channels)
    bias = rng.integers(-(2**20), 2**20, size=channels)
    p = requant_params(real, bias)
    acc = rng.integers(-(2**24), 2**24, size=(500, channels))
    acc[0] = 2**31 - 1
    acc[1] = -(2**31)
    got = requantize_int(acc, p)
    want = requantize_float(acc, p)
    assert got.dtype == np.int8
    assert np.abs(got - want).max() <= 1  # the docstring's bound
    assert np.mean(got == want) > 0.99  # and almost always exact


def test_requantize_saturates_instead_of_wrapping():
    p = requant_params([1.0, 1.0], [2**31 - 1, -(2**31)])
    acc = np.array([[2**31 - 1, -(2**31)], [5, -5]])
    assert requantize_int(acc, p).tolist() == [[127, -128], [127, -128]]
    p = RequantParams(m=np.array([1]), s=np.array([2]), bias=np.array([0]), real=np.array([0.25]))
    assert requantize_int(np.array([[6], [-6], [2], [-2]]), p).ravel().tolist() == [2, -1, 1, 0]


def test_requantize_rejects_bad_input():
    p = requant_params([0.1, 0.1])
    with pytest.raises(ValueError, match="has 3 channels along axis -1, requantizer has 2"):
        requantize_int(np.zeros((2, 3), np.int32), p)
    with pytest.raises(TypeError, match="float64"):
        requantize_int(np.zeros((2, 2)), p)
    with pytest.raises(ValueError, match="above 2147483647"):
        requantize_int(np.full((1, 2), 2**31), p)
    with pytest.raises(ValueError, match="bias has 3 channels, multipliers 2"):
        requant_params([0.1, 0.2], [1, 2, 3])


@pytest.mark.parametrize(
    "ratios", [(0.5, 0.7), (1.0, 1.0), (3.0, 0.01), (64.0, 40.0), (0.02, 0.03)]
)
def test_residual_add_within_one_lsb(ratios):
    rng = np.random.default_rng(SEED)
    so = 0.05
    p = add_params(ratios[0] * so, ratios[1] * so, so)
    a = rng.integers(-128, 128, size=4096)
    b = rng.integers(-128, 128, size=4096)
    edges = np.array([-128, 127, 0, -1])
    a = np.concatenate([a, np.repeat(edges, 4)])
    b = np.concatenate([b, np.tile(edges, 4)])
    got = add_int(a, b, p)
    assert np.abs(got - add_float(a, b, p)).max() <= 1
    assert p.m_a < 2**ADD_MULT_BITS and p.m_b < 2**ADD_MULT_BITS


def test_residual_add_rejects_mismatched_shapes():
    p = add_params(0.1, 0.1, 0.1)
    with pytest.raises(ValueError, match=r"equal shapes, got \(2,\) and \(3,\)"):
        add_int(np.zeros(2, np.int8), np.zeros(3, np.int8), p)
    with pytest.raises(ValueError, match="is above 127"):
        add_int(np.array([128]), np.array([0]), p)


def test_int16_residual_path_requant_and_add():
    rng = np.random.default_rng(SEED)
    p = requant_params(rng.uniform(1e-3, 0.5, size=16), out_bits=16)
    acc = rng.integers(-(2**22), 2**22, size=(200, 16))
    got = requantize_int(acc, p)
    assert got.dtype == np.int16
    assert np.abs(got - requantize_float(acc, p)).max() <= 2  # the docstring's int16 bound
    assert requantize_int(np.full((1, 16), 2**31 - 1), p).min() == 2**15 - 1  # saturates
    # FFN output (int16) + residual (int8) -> int16, with a realistic large scale ratio
    s_o, s_l, s_h = 190 / 32767, 28 / 127, 218 / 32767
    pa = add_params(s_o, s_l, s_h, a_bits=16, out_bits=16)
    a = rng.integers(-32768, 32768, size=5000)
    b = rng.integers(-128, 128, size=5000)
    got = add_int(a, b, pa)
    assert got.dtype == np.int16
    assert np.abs(got - add_float(a, b, pa)).max() <= 1
    with pytest.raises(ValueError, match="above 127"):
        add_int(a, b + 200, pa)  # b stays int8
    with pytest.raises(ValueError, match="int8 or int16, got 12 bits"):
        add_params(0.1, 0.1, 0.1, out_bits=12)


def _unsaturated(acc, p):
    """``sat(round_shift((acc + bias) * m, s))``: the requantizer without saturating
    ``acc + bias`` at all (int64 holds it: at most 2**32 * 2**15)."""
    v = np.asarray(acc, np.int64) + p.bias
    return np.clip(round_shift(v * p.m, p.s), *int_range(p.out_bits))


@pytest.mark.parametrize("out_bits", [8, 16])
def test_saturation_of_acc_plus_bias_changes_no_accepted_result(out_bits):
    """``acc + bias`` saturates to 27 bits (one DSP48E2 for the product); for parameters
    requant_params accepts, with the weights' own bound on ``|acc|``, that changes nothing,
    also at the activations that reach the bound and for biases near the 27-bit limits."""
    rng = np.random.default_rng([SEED, out_bits])
    channels, k = 48, 3072
    w = rng.integers(-127, 128, size=(channels, k))
    w[:, rng.random(k) < 0.5] = 0  # pruned
    w[0] = 127  # a channel whose bound is 128 * 127 * K = 2**25.6
    bound = acc_bound(w)
    # the activations that push each channel's sum furthest either way reach the bound, never
    # beyond it
    x = np.concatenate([rng.integers(-128, 128, size=(64, k)),
                        np.where(w > 0, -128, 127), np.where(w > 0, 127, -128)])
    acc = x @ w.T
    assert (np.abs(acc) <= bound).all() and (np.abs(acc) >= bound * 127 // 128 - 1).any()
    # biases up to the limit each channel allows, multipliers from tiny to large
    headroom = V_MAX - bound
    bias = (rng.uniform(-1, 1, size=channels) * np.maximum(headroom, 0)).astype(np.int64)
    bias[1] = V_MAX  # beyond any headroom: only a multiplier that saturates there passes
    real = np.exp(rng.uniform(np.log(1e-6), np.log(4.0), size=channels))
    real[1] = 1.0
    p = requant_params(real, bias, out_bits=out_bits, acc_bound=bound)
    assert (requantize_int(acc, p) == _unsaturated(acc, p)).all()


def test_requant_params_refuses_where_the_saturation_would_show():
    with pytest.raises(ValueError, match=r"requantizer channel 1 \(1 of 2 channels\): bias "
                                         r"67108000 with \|acc\| <= 5000 can pass the 27-bit"):
        requant_params([0.5, 1e-6], [0, 67_108_000], out_bits=16, acc_bound=[5000, 5000])
    # with no bound given, any int32 accumulator is assumed
    with pytest.raises(ValueError, match="with any int32 can pass"):
        requant_params([1e-7], out_bits=8)
    p = requant_params([1e-7], out_bits=8, acc_bound=[2**20])  # |acc| stays far inside
    acc = np.array([[2**20], [-(2**20)]])
    assert (requantize_int(acc, p) == _unsaturated(acc, p)).all()
    with pytest.raises(ValueError, match=r"weights must be \[out, K\]"):
        acc_bound(np.zeros(4, np.int8))
