"""Estimator hardening: extreme scales and dtypes, NaN groups under GDPO,
negative channel indices, and input messages free of numpy/torch internals."""

from __future__ import annotations

import math
import os
import warnings
from decimal import Decimal, localcontext

import numpy as np
import pytest
from reference import batch_reference

import multireward_grpo as mg
from multireward_grpo import (
    Conditioning,
    EstimatorOptions,
    apply_conditioning,
    compute_advantage,
    compute_advantage_batch,
    compute_advantage_flat,
    group_standardize,
)
from multireward_grpo.advantage import parse_conditioning

MODES = ("na", "an", "single", "gdpo")
W = [1.0, 0.5, 2.0]


# --------------------------------------------------------------------------- a high-precision reference
#
# tests/reference.py works in float64, whose squares overflow from ~1e154. The
# same formulas in 60-digit Decimal arithmetic (exponent range ~1e6) hold at any
# float scale; float inputs convert to Decimal exactly.


def _dec_z(values, eps, ddof=0):
    m = len(values)
    if m - ddof <= 0 or all(v == values[0] for v in values):
        return [Decimal(0)] * m
    mu = sum(values, Decimal(0)) / m
    sd = (sum(((v - mu) ** 2 for v in values), Decimal(0)) / (m - ddof)).sqrt()
    return [(v - mu) / (sd + eps) for v in values]


def _dec_group(group, w, mode, eps):
    if mode == "an":
        return _dec_z([sum((wc * rc for wc, rc in zip(w, row)), Decimal(0)) for row in group], eps)
    if mode == "single":
        return _dec_z([row[0] for row in group], eps)
    out = [Decimal(0)] * len(group)
    for ch, wc in enumerate(w):
        for j, z in enumerate(_dec_z([row[ch] for row in group], eps)):
            out[j] += wc * z
    return out


def precise_reference(rewards, w, mode, eps=1e-8):
    """(P, m, R) floats -> (P, m) float64 advantages, computed in Decimal."""
    with localcontext() as ctx:
        ctx.prec, ctx.Emax, ctx.Emin = 60, 999_999, -999_999
        dec = [[[Decimal(float(v)) for v in row] for row in group] for group in np.asarray(rewards, dtype=np.float64)]
        dw, deps = [Decimal(float(v)) for v in w], Decimal(eps)
        inner = "na" if mode == "gdpo" else mode
        out = [_dec_group(group, dw, inner, deps) for group in dec]
        if mode == "gdpo":
            flat = _dec_z([a for row in out for a in row], deps)
            out = [flat[i * len(row) : (i + 1) * len(row)] for i, row in enumerate(out)]
        return np.array([[float(a) for a in row] for row in out])


def test_precise_reference_agrees_with_the_float64_loop_at_ordinary_scale():
    rewards = np.random.default_rng(0).normal(size=(4, 6, 3))
    for mode in MODES:
        np.testing.assert_allclose(
            precise_reference(rewards, W, mode), batch_reference(rewards.tolist(), W, mode), rtol=0, atol=1e-12
        )


def _scaled_rewards(scale, dtype, seed=0, shape=(5, 8, 3)):
    rng = np.random.default_rng(seed)
    rewards = (rng.normal(size=shape) * scale).astype(dtype)
    rewards[1, :, 2] = rewards[1, 0, 2]  # a zero-variance channel
    return rewards


# --------------------------------------------------------------------------- B6: extreme scales and dtypes

# (dtype, scale, rtol=atol): the output is rounded to the input dtype, so the
# tolerance is a few units in the last place of that dtype at advantages <~ 10.
NUMPY_CASES = [
    (np.float16, 300.0, 2e-3),
    (np.float16, 1000.0, 2e-3),
    (np.float32, 1e19, 1e-6),
    (np.float32, 1e30, 1e-6),
    (np.float64, 1e154, 1e-12),
    (np.float64, 1e300, 1e-12),
]


@pytest.mark.parametrize("dtype,scale,tol", NUMPY_CASES)
@pytest.mark.parametrize("mode", MODES)
def test_extreme_scales_match_the_precise_reference(dtype, scale, tol, mode):
    rewards = _scaled_rewards(scale, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from anywhere
        got = compute_advantage_batch(rewards, W, mode)
    assert got.dtype == dtype
    want = precise_reference(rewards, W, mode)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol, atol=tol)
    assert np.abs(want).max() > 0.5  # the comparison is not between zeros


@pytest.mark.parametrize("dtype,scale,tol", NUMPY_CASES)
def test_zero_variance_channel_is_exactly_zero_at_every_scale(dtype, scale, tol):
    rewards = _scaled_rewards(scale, dtype)
    constant = np.broadcast_to(rewards[:, :1, :], rewards.shape).copy()
    for mode in MODES:
        assert np.all(compute_advantage_batch(constant, W, mode) == 0)
    # The constant channel 2 of group 1 adds exactly nothing to NA.
    na = compute_advantage_batch(rewards[1:2], W, "na")
    without = compute_advantage_batch(rewards[1:2, :, :2], W[:2], "na")
    np.testing.assert_array_equal(na, without)


def test_values_near_the_top_of_the_float64_range():
    # Their sum overflows float64, their deviations from the first member do not.
    rng = np.random.default_rng(1)
    rewards = rng.uniform(2e307, 8e307, size=(6, 8, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for mode in ("na", "single"):
            np.testing.assert_allclose(
                compute_advantage_batch(rewards, W, mode), precise_reference(rewards, W, mode), rtol=1e-12, atol=1e-12
            )


def test_tiny_scales_with_eps_zero_are_not_mistaken_for_constants():
    # Squares of deviations of ~1e-200 underflow to 0 in float64.
    rewards = np.random.default_rng(2).normal(size=(4, 6, 2)) * 1e-200
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = compute_advantage_batch(rewards, [1.0, 1.0], "na", eps=0.0)
    want = precise_reference(rewards, [1.0, 1.0], "na", eps=0.0)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ("na", "an", "single"))
def test_ragged_groups_at_extreme_scale(mode):
    # The padded (masked) path rescales too.
    rng = np.random.default_rng(9)
    groups = [rng.normal(size=(size, 3)) * 1e300 for size in (3, 5, 2, 6)]
    rows, ids = np.concatenate(groups), np.repeat(np.arange(4), [len(g) for g in groups])
    order = rng.permutation(len(rows))
    got = compute_advantage_flat(rows[order], ids[order], W, mode)
    want = np.concatenate([precise_reference(g[None], W, mode)[0] for g in groups])[order]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_omitted_rewards_at_extreme_scale():
    rewards = np.random.default_rng(10).normal(size=(3, 6, 2)) * 1e300
    rewards[1, 2, 0] = np.nan
    got = compute_advantage_batch(rewards, None, "na", nan_policy="omit")[1]
    keep = [0, 1, 3, 4, 5]
    z0 = np.zeros(6)
    z0[keep] = precise_reference(rewards[1:2, keep, :1], [1.0], "na")[0]
    z1 = precise_reference(rewards[1:2, :, 1:], [1.0], "na")[0]
    np.testing.assert_allclose(got, z0 + z1, rtol=0, atol=1e-12)


def test_subgroup_conditioning_at_extreme_scale_and_in_float16():
    group = np.array([[1.0, 3e300], [1.0, -2e300], [0.0, 1e300], [1.0, 5e299]])
    # passers 0, 1, 3 have mean 5e299
    np.testing.assert_allclose(apply_conditioning(group, (0, 1, "subgroup"))[:, 1], [2.5e300, -2.5e300, 0, 0], rtol=1e-15)
    half = np.array([[1, 300], [1, -200], [0, 100], [1, 50]], dtype=np.float16)
    out = apply_conditioning(half, (0, 1, "subgroup"))
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out[:, 1], [250, -250, 0, 0])


def test_group_standardize_scales_and_dtype():
    x = _scaled_rewards(1e300, np.float64)
    z = group_standardize(x)
    want = precise_reference(x[..., :1], [1.0], "na")
    np.testing.assert_allclose(z[..., 0], want, atol=1e-12)
    x16 = _scaled_rewards(1000.0, np.float16)
    z16 = group_standardize(x16)
    assert z16.dtype == np.float16
    np.testing.assert_allclose(z16[..., 0].astype(float), precise_reference(x16[..., :1], [1.0], "na"), rtol=2e-3, atol=2e-3)


def _near_float_max(dtype, seed=11, shape=(5, 8, 3)):
    """Rewards spread over [-0.95, 0.95] x the dtype's maximum: their differences overflow it."""
    rng = np.random.default_rng(seed)
    rewards = rng.uniform(-0.95, 0.95, size=shape) * float(np.finfo(dtype).max)
    rewards[1, :, 2] = rewards[1, 0, 2]  # a zero-variance channel
    return rewards.astype(dtype)


@pytest.mark.parametrize("mode", MODES)
def test_values_whose_differences_overflow_are_standardized(mode):
    # x_j - x_0 overflows float64 here, and for "an" so does w.r: both are computed
    # in power-of-two units instead of raising.
    rewards = _near_float_max(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = compute_advantage_batch(rewards, W, mode)
    want = precise_reference(rewards, W, mode)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert np.abs(want).max() > 0.5
    assert np.all(compute_advantage_batch(rewards[1:2, :, 2:], [1.0], mode) == 0)


def test_group_standardize_and_ragged_groups_near_the_float64_maximum():
    np.testing.assert_array_equal(group_standardize(np.array([[[1.5e308], [-1.5e308]]]))[0, :, 0], [1.0, -1.0])
    rng = np.random.default_rng(12)
    groups = [rng.uniform(-1.0, 1.0, size=(size, 3)) * 1.7e308 for size in (3, 5, 2, 6)]
    rows, ids = np.concatenate(groups), np.repeat(np.arange(4), [len(g) for g in groups])
    order = rng.permutation(len(rows))
    for mode in ("na", "an", "single"):
        got = compute_advantage_flat(rows[order], ids[order], W, mode)
        want = np.concatenate([precise_reference(g[None], W, mode)[0] for g in groups])[order]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("eps", [1e-8, 0.0])
def test_an_weighted_sum_beyond_the_float64_range(eps):
    # w.r overflows float64 while every reward and weight is finite.
    rewards = np.full((1, 2, 2), 1e308) * [[[1.0], [0.5]]]
    np.testing.assert_allclose(compute_advantage_batch(rewards, [1.0, 1.0], "an", eps=eps), [[1.0, -1.0]], rtol=1e-15)
    scaled = _scaled_rewards(1e300, np.float64)
    w_big = [1e10, 1.0, 1e8]
    got = compute_advantage_batch(scaled, w_big, "an", eps=eps)
    np.testing.assert_allclose(got, precise_reference(scaled, w_big, "an", eps=eps), rtol=1e-12, atol=1e-12)
    # a zero weight keeps its channel out of w.r even where it is the largest reward
    lopsided = scaled.copy()
    lopsided[..., 0] = 1.7e308
    np.testing.assert_allclose(
        compute_advantage_batch(lopsided, [0.0, 1e10, 1e8], "an", eps=eps),
        precise_reference(lopsided, [0.0, 1e10, 1e8], "an", eps=eps),
        rtol=1e-12,
        atol=1e-12,
    )


def test_centring_near_the_float64_maximum_where_the_result_fits():
    # scale_by_std=False returns x - mean in reward units: representable here, though
    # x_1 - x_0 (and for "an" the sums w.r) overflow float64.
    pair = np.array([[[1.7e308], [-1.7e308]]])
    for mode in ("na", "single", "an"):
        np.testing.assert_array_equal(compute_advantage_batch(pair, None, mode, scale_by_std=False), [[1.7e308, -1.7e308]])
    sums = np.array([[[1.7e308, 1.7e308], [1.7e308, 1.6e308]]])  # w.r = 3.4e308, 3.3e308
    np.testing.assert_allclose(compute_advantage_batch(sums, [1.0, 1.0], "an", scale_by_std=False), [[5e306, -5e306]], rtol=1e-12)


@pytest.mark.parametrize(
    "call,match",
    [
        # centring without scaling overflows
        (
            lambda: compute_advantage_batch(np.array([[[1.7e308], [-1.7e308], [1.7e308]]]), scale_by_std=False),
            r"group 0.*too large",
        ),
        # the advantages do not fit float16
        (lambda: compute_advantage_batch(_scaled_rewards(1.0, np.float16), [6e4, 1.0, 1.0]), "float16"),
    ],
)
def test_statistics_that_are_still_not_finite_raise(call, match):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=match):
            call()


def test_ordinary_scale_results_are_unchanged_bit_for_bit():
    # Scaling by powers of two is exact: the ordinary range must give the same bits
    # whether or not the rescaled path runs (eps=0 forces it).
    rewards = np.random.default_rng(3).normal(size=(20, 7, 3))
    fast = compute_advantage_batch(rewards, W, "na", eps=0.0)
    reference = precise_reference(rewards, W, "na", eps=0.0)
    np.testing.assert_allclose(fast, reference, rtol=0, atol=1e-12)
    big = compute_advantage_batch(rewards * 2.0**600, W, "na", eps=0.0)
    np.testing.assert_array_equal(big, fast)


# --------------------------------------------------------------------------- B6 torch

torch_cases = [
    ("float16", 300.0, 2e-3),
    ("float16", 1000.0, 2e-3),
    ("bfloat16", 1000.0, 1.6e-2),
    ("float32", 1e19, 2e-5),
    ("float32", 1e30, 2e-5),
    ("float64", 1e300, 1e-12),
]


@pytest.mark.parametrize("dtype_name,scale,tol", torch_cases)
@pytest.mark.parametrize("mode", MODES)
def test_torch_extreme_scales(dtype_name, scale, tol, mode):
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, dtype_name)
    tensor = torch.tensor(_scaled_rewards(scale, np.float64)).to(dtype)
    got = compute_advantage_batch(tensor, W, mode)
    assert got.dtype == dtype and isinstance(got, torch.Tensor)
    want = precise_reference(tensor.double().numpy(), W, mode)
    np.testing.assert_allclose(got.double().numpy(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("mode", MODES)
def test_torch_values_whose_differences_overflow(dtype_name, mode):
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, dtype_name)
    # bfloat16 is computed in float32 and shares its range.
    rewards = _near_float_max(np.float64 if dtype_name == "float64" else np.float32)
    tensor = torch.tensor(rewards).to(dtype)
    got = compute_advantage_batch(tensor, W, mode)
    assert got.dtype == dtype
    want = precise_reference(tensor.double().numpy(), W, mode)
    tol = {"float32": 2e-5, "bfloat16": 1.6e-2, "float64": 1e-12}[dtype_name]
    np.testing.assert_allclose(got.double().numpy(), want, rtol=tol, atol=tol)


def test_torch_half_is_computed_in_float32():
    torch = pytest.importorskip("torch")
    rewards = torch.tensor(_scaled_rewards(1.0, np.float64, seed=4))
    half = compute_advantage_batch(rewards.half(), W, "na")
    from_float32 = compute_advantage_batch(rewards.half().float(), W, "na").half()
    assert torch.equal(half, from_float32)


# --------------------------------------------------------------------------- B7: gdpo with NaN groups


def _nan_batch(seed=5, P=6, m=5):
    rewards = np.random.default_rng(seed).normal(size=(P, m, 3))
    rewards[2, 1, 1] = np.nan
    return rewards


def test_gdpo_propagate_leaves_the_nan_group_out_of_the_whitening():
    rewards = _nan_batch()
    adv = compute_advantage_batch(rewards, W, "gdpo", nan_policy="propagate")
    assert np.all(np.isnan(adv[2]))
    keep = [0, 1, 3, 4, 5]
    assert not np.any(np.isnan(adv[keep]))
    np.testing.assert_allclose(adv[keep], batch_reference(rewards[keep].tolist(), W, "gdpo"), rtol=0, atol=1e-10)


def test_gdpo_propagate_torch_and_flat_agree_with_the_batch():
    torch = pytest.importorskip("torch")
    rewards = _nan_batch()
    want = compute_advantage_batch(rewards, W, "gdpo", nan_policy="propagate")
    got = compute_advantage_batch(torch.tensor(rewards), W, "gdpo", nan_policy="propagate")
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12, equal_nan=True)
    # ragged: drop one rollout of group 0 so the flat path pads
    flat, ids = rewards.reshape(-1, 3)[1:], np.repeat(np.arange(6), 5)[1:]
    adv = compute_advantage_flat(flat, ids, W, "gdpo", nan_policy="propagate")
    assert np.all(np.isnan(adv[ids == 2])) and not np.any(np.isnan(adv[ids != 2]))
    groups = [rewards[0, 1:]] + [rewards[p] for p in (1, 3, 4, 5)]
    na = np.concatenate([np.array(batch_reference([g.tolist()], W, "na")[0]) for g in groups])
    np.testing.assert_allclose(adv[ids != 2], (na - na.mean()) / (na.std() + 1e-8), atol=1e-10)


def test_gdpo_omit_is_unchanged():
    rewards = _nan_batch()
    adv = compute_advantage_batch(rewards, W, "gdpo", nan_policy="omit")
    na = compute_advantage_batch(rewards, W, "na", nan_policy="omit").reshape(-1)
    np.testing.assert_allclose(adv.reshape(-1), (na - na.mean()) / (na.std() + 1e-8), atol=1e-12)


# --------------------------------------------------------------------------- B9: negative channel indices

R3 = np.random.default_rng(6).random((4, 3))


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda: Conditioning(-2, 1), "gate"),
        (lambda: Conditioning(0, -1), "target"),
        (lambda: Conditioning(np.int64(-1), 0), "gate"),
        (lambda: parse_conditioning((-2, 1)), "gate"),
        (lambda: parse_conditioning([{"gate": 0, "target": -3}]), "target"),
        (lambda: apply_conditioning(R3, -2, 1), "gate"),
        (lambda: apply_conditioning(R3, 0, -1, "subgroup"), "target"),
        (lambda: apply_conditioning(R3, (-1, 0)), "gate"),
        (lambda: compute_advantage(R3, conditioning=(-2, 1)), "gate"),
        (lambda: compute_advantage_batch(R3[None], conditioning=[(0, 1), (2, -1)]), "target"),
        (lambda: compute_advantage_flat(R3, [0, 0, 1, 1], conditioning=(-1, 2)), "gate"),
    ],
)
def test_negative_channel_indices_are_refused(call, field):
    with pytest.raises(ValueError, match=rf"Conditioning\.{field}.*negative indices are not accepted"):
        call()


def test_positional_form_refuses_non_integer_indices_instead_of_truncating():
    with pytest.raises(TypeError, match=r"Conditioning\.target.*channel index"):
        apply_conditioning(R3, 0, 1.5)
    with pytest.raises(ValueError, match=r"impl.*did you mean 'subgroup'"):
        apply_conditioning(R3, 0, 1, "subgrup")


# --------------------------------------------------------------------------- B11: input messages

# Text that only numpy, torch or the interpreter would write: none of it may
# reach the user.
INTERNALS = (
    "ufunc",
    "could not convert",
    "unhashable",
    "not supported between",
    "inhomogeneous",
    "setting an array element",
    "float() argument",
    "unexpected keyword argument",
    "required positional argument",
    "object is not iterable",
    "object is not subscriptable",
    "list indices",
    "only integer tensors",
)

R = np.random.default_rng(7).random((4, 2))
RB = R[None]


def _torch_float_ids():
    torch = pytest.importorskip("torch")
    return torch.tensor([0.0, 0.0, 1.0, 1.0])


def _torch_bool_ids():
    torch = pytest.importorskip("torch")
    return torch.tensor([True, True, False, False])


BAD_INPUTS = [
    # compute_advantage / _batch / _flat: weights
    ("compute_advantage", "w string", lambda: compute_advantage(R, "1,1"), TypeError, ["w", "[1.0, 1.0]"]),
    ("compute_advantage", "w strings", lambda: compute_advantage(R, ["a", 1]), TypeError, ["w[0]", "number"]),
    ("compute_advantage", "w set", lambda: compute_advantage(R, {1.0, 2.0}), TypeError, ["w", "set", "list"]),
    ("compute_advantage_batch", "w dict", lambda: compute_advantage_batch(RB, {"a": 1, "b": 2}), TypeError, ["w", "dict", "list"]),
    ("compute_advantage", "w None entry", lambda: compute_advantage(R, [1.0, None]), TypeError, ["w[1]", "number"]),
    ("compute_advantage", "w ragged", lambda: compute_advantage(R, [[1.0], [1.0, 2.0]]), ValueError, ["w", "1-D"]),
    ("compute_advantage", "w complex", lambda: compute_advantage(R, [1j, 1.0]), TypeError, ["w", "real"]),
    ("compute_advantage", "w count", lambda: compute_advantage(R, [1.0]), ValueError, ["weights has 1", "one weight per reward channel"]),
    # mode
    ("compute_advantage", "mode list", lambda: compute_advantage(R, None, ["na"]), TypeError, ["mode", "string", "'na'", "an, gdpo, na, single"]),
    ("compute_advantage", "mode typo", lambda: compute_advantage(R, None, "naa"), ValueError, ["unknown mode 'naa'", "did you mean 'na'", "valid modes"]),
    ("compute_advantage_batch", "mode None", lambda: compute_advantage_batch(RB, None, None), TypeError, ["mode", "string"]),
    # nan_policy and options
    ("compute_advantage", "nan_policy typo", lambda: compute_advantage(R, nan_policy="omitt"), ValueError, ["nan_policy", "did you mean 'omit'"]),
    ("compute_advantage", "nan_policy list", lambda: compute_advantage(R, nan_policy=["omit"]), TypeError, ["nan_policy", "string"]),
    ("compute_advantage", "eps string", lambda: compute_advantage(R, eps="tiny"), TypeError, ["eps", "number"]),
    ("compute_advantage", "eps None", lambda: compute_advantage(R, eps=None), TypeError, ["eps", "number"]),
    ("compute_advantage", "ddof string", lambda: compute_advantage(R, ddof="1"), TypeError, ["ddof", "int"]),
    ("compute_advantage", "scale_by_std", lambda: compute_advantage(R, scale_by_std="yes"), TypeError, ["scale_by_std", "True or False"]),
    # rewards
    ("compute_advantage", "rewards ragged", lambda: compute_advantage([[1.0, 2.0], [3.0]]), TypeError, ["rewards", "same length"]),
    ("compute_advantage", "rewards None", lambda: compute_advantage(None), TypeError, ["rewards", "NoneType"]),
    ("compute_advantage_batch", "rewards dict", lambda: compute_advantage_batch({"a": 1}), TypeError, ["rewards", "dict"]),
    ("compute_advantage", "rewards strings", lambda: compute_advantage([["a", "b"], ["c", "d"]]), TypeError, ["rewards", "numeric"]),
    ("compute_advantage", "rewards None entry", lambda: compute_advantage([[1.0, None], [2.0, 3.0]]), TypeError, ["rewards", "None"]),
    # group ids
    ("compute_advantage_flat", "ids None", lambda: compute_advantage_flat(R, [0, None, 1, 1]), TypeError, ["group_ids[1]", "None"]),
    ("compute_advantage_flat", "ids mixed", lambda: compute_advantage_flat(R, [1, "1", 2, 2]), TypeError, ["group_ids", "mixes", "one type"]),
    ("compute_advantage_flat", "ids float list", lambda: compute_advantage_flat(R, [0.0, 0.0, 1.0, 1.0]), TypeError, ["group_ids", "integers or strings"]),
    ("compute_advantage_flat", "ids string", lambda: compute_advantage_flat(R, "aabb"), TypeError, ["group_ids", "one id per rollout"]),
    ("compute_advantage_flat", "ids set", lambda: compute_advantage_flat(R, {0, 1}), TypeError, ["group_ids", "set"]),
    ("compute_advantage_flat", "ids int", lambda: compute_advantage_flat(R, 3), TypeError, ["group_ids", "one id per rollout"]),
    ("compute_advantage_flat", "ids unhashable", lambda: compute_advantage_flat(R, [0, {}, 1, 1]), TypeError, ["group_ids[1]", "dict"]),
    ("compute_advantage_flat", "ids object floats", lambda: compute_advantage_flat(R, np.array([0, 1.5, 1, 1], dtype=object)), TypeError, ["group_ids[1]", "float"]),
    ("compute_advantage_flat", "ids bool", lambda: compute_advantage_flat(R, np.array([True, True, False, False])), TypeError, ["group_ids", "bool"]),
    ("compute_advantage_flat", "ids ragged", lambda: compute_advantage_flat(R, [[0, 1], [1]]), ValueError, ["group_ids", "1-D"]),
    # conditioning
    ("compute_advantage", "cond bytes", lambda: compute_advantage(R, conditioning=b"0:1"), TypeError, ["conditioning must be"]),
    ("compute_advantage", "cond text", lambda: compute_advantage(R, conditioning="0->1"), ValueError,
     ["conditioning rule '0->1'", "GATE:TARGET"]),
    ("compute_advantage", "cond set", lambda: compute_advantage(R, conditioning={0, 1}), TypeError, ["conditioning", "set"]),
    ("parse_conditioning", "cond dict key", lambda: parse_conditioning({"gaet": 0, "target": 1}), TypeError, ["'gaet'", "did you mean 'gate'"]),
    ("parse_conditioning", "cond dict missing", lambda: parse_conditioning({"gate": 0}), TypeError, ["target", "missing"]),
    ("parse_conditioning", "cond tuple 4", lambda: parse_conditioning((0, 1, "zero_fill", 0.3)), TypeError, ["(gate, target[, method])"]),
    ("Conditioning", "gamma string", lambda: Conditioning(0, 1, gamma="half"), TypeError, ["Conditioning.gamma", "number"]),
    ("Conditioning", "gamma None", lambda: Conditioning(0, 1, gamma=None), TypeError, ["Conditioning.gamma", "number"]),
    ("Conditioning", "gamma range", lambda: Conditioning(0, 1, gamma=1.5), ValueError, ["Conditioning.gamma", "[0, 1]"]),
    ("Conditioning", "threshold string", lambda: Conditioning(0, 1, threshold="high"), TypeError, ["Conditioning.threshold", "number"]),
    ("Conditioning", "threshold None", lambda: Conditioning(0, 1, threshold=None), TypeError, ["Conditioning.threshold", "number"]),
    ("Conditioning", "method typo", lambda: Conditioning(0, 1, "zero-fill"), ValueError, ["conditioning method", "did you mean 'zero_fill'"]),
    ("Conditioning", "method list", lambda: Conditioning(0, 1, ["subgroup"]), TypeError, ["conditioning method", "string"]),
    ("Conditioning", "gate float", lambda: Conditioning(0.0, 1), TypeError, ["Conditioning.gate", "channel index"]),
    ("Conditioning", "gate string", lambda: Conditioning("0", 1), TypeError, ["Conditioning.gate", "channel index"]),
    ("Conditioning", "same channel", lambda: Conditioning(1, 1), ValueError, ["gate and the target must be different channels"]),
    ("compute_advantage", "too few channels", lambda: compute_advantage(R, conditioning=(0, 5)), ValueError, ["target=5", "2 channels"]),
    # apply_conditioning
    ("apply_conditioning", "apply rewards 1-D", lambda: apply_conditioning([1.0, 2.0], (0, 1)), ValueError, ["rewards", "(m, R)"]),
    ("apply_conditioning", "apply cond_idx alone", lambda: apply_conditioning(R, (0, 1), 1), TypeError, ["cond_idx", "int gate index"]),
    ("apply_conditioning", "apply impl list", lambda: apply_conditioning(R, 0, 1, ["none"]), TypeError, ["impl", "string"]),
    ("apply_conditioning", "apply mask shape", lambda: apply_conditioning(R, (0, 1), mask=np.ones((3, 2), bool)), ValueError, ["mask", "shape"]),
    # EstimatorOptions
    ("EstimatorOptions", "options eps", lambda: EstimatorOptions(eps=-1.0), ValueError, ["eps", ">= 0"]),
    ("EstimatorOptions", "options eps string", lambda: EstimatorOptions(eps="x"), TypeError, ["eps", "number"]),
    ("EstimatorOptions", "options ddof", lambda: EstimatorOptions(ddof=-1), ValueError, ["ddof", ">= 0"]),
    # group_standardize
    ("group_standardize", "gs list x", lambda: group_standardize([[1.0, 2.0]]), ValueError, ["x", "(B, m, C)"]),
    ("group_standardize", "gs strings", lambda: group_standardize(np.array([[["a"]]])), TypeError, ["x", "numeric"]),
    ("group_standardize", "gs mask shape", lambda: group_standardize(RB, mask=np.ones((1, 4, 1), bool)), ValueError, ["mask", "shape"]),
    ("group_standardize", "gs mask dtype", lambda: group_standardize(RB, mask=np.ones((1, 4, 2))), TypeError, ["mask", "bool"]),
    ("group_standardize", "gs options", lambda: group_standardize(RB, options={"eps": 0}), TypeError, ["options", "EstimatorOptions"]),
    # registry
    ("get_estimator", "get list", lambda: mg.get_estimator(["na"]), TypeError, ["mode", "string"]),
    ("get_estimator", "get typo", lambda: mg.get_estimator("gdp"), ValueError, ["did you mean 'gdpo'"]),
    ("is_batch_level", "is_batch_level", lambda: mg.is_batch_level(None), TypeError, ["mode", "string"]),
    ("register_estimator", "register name", lambda: mg.register_estimator(["x"], lambda *a, **k: None), TypeError, ["estimator name", "string"]),
    ("register_estimator", "register empty", lambda: mg.register_estimator(" ", lambda *a, **k: None), ValueError, ["estimator name", "non-empty"]),
    ("register_estimator", "register fn", lambda: mg.register_estimator("xyz_not_callable", 3), TypeError, ["callable"]),
    ("register_estimator", "register batch_level", lambda: mg.register_estimator("xyz_bl", lambda *a, **k: None, batch_level="yes"), TypeError, ["batch_level", "True or False"]),
    ("register_estimator", "register description", lambda: mg.register_estimator("xyz_d", lambda *a, **k: None, description=3), TypeError, ["description", "string"]),
    ("unregister_estimator", "unregister list", lambda: mg.unregister_estimator(["x"]), TypeError, ["estimator name", "string"]),
    ("unregister_estimator", "unregister typo", lambda: mg.unregister_estimator("nope_never"), ValueError, ["no estimator named", "registered names"]),
]


def _torch_id_cases():
    return [
        ("compute_advantage_flat", "ids float torch", lambda: compute_advantage_flat(R, _torch_float_ids()), TypeError,
         ["group_ids", "float", ".long()"]),
        ("compute_advantage_flat", "ids bool torch", lambda: compute_advantage_flat(R, _torch_bool_ids()), TypeError,
         ["group_ids", "bool"]),
    ]


CASES = BAD_INPUTS + _torch_id_cases()


@pytest.mark.parametrize("function,label,call,exc_type,needles", CASES, ids=[c[1] for c in CASES])
def test_bad_inputs_get_clear_messages(function, label, call, exc_type, needles):
    with pytest.raises(exc_type) as info:
        call()
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    for internal in INTERNALS:
        assert internal not in message, f"{internal!r} leaked into {message!r}"
    # Raised by this package, not from inside numpy or torch, and without a
    # chained numpy/torch traceback.
    raised_in = os.path.normpath(str(info.traceback[-1].path))
    assert os.sep + "multireward_grpo" + os.sep in raised_in, raised_in
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_every_public_function_with_arguments_has_bad_input_cases():
    import inspect

    from multireward_grpo import advantage

    with_arguments = {
        name
        for name in advantage.__all__
        if callable(getattr(advantage, name)) and inspect.signature(getattr(advantage, name)).parameters
    }
    assert with_arguments - {case[0] for case in CASES} == set()


def test_numeric_strings_are_read_as_numbers_like_yaml_gives_them():
    rule = Conditioning(0, 1, gamma="0.25", threshold="5e-1")
    assert rule.gamma == 0.25 and rule.threshold == 0.5
    assert EstimatorOptions(eps="1e-6").eps == 1e-6
    np.testing.assert_array_equal(compute_advantage(R, ["1", "2e0"]), compute_advantage(R, [1.0, 2.0]))


def test_integer_ids_of_any_integer_type_group_together():
    rewards = np.random.default_rng(8).normal(size=(6, 2))
    ids_python = [3, 1, 3, 1, 2, 2]
    want = compute_advantage_flat(rewards, ids_python, None, "na")
    mixed_ints = [np.int64(3), 1, np.int32(3), 1, 2, np.uint8(2)]
    np.testing.assert_array_equal(compute_advantage_flat(rewards, mixed_ints, None, "na"), want)
    strings = np.array(["c", "a", "c", "a", "b", "b"], dtype=object)
    np.testing.assert_array_equal(compute_advantage_flat(rewards, strings, None, "na"), want)


def test_mode_messages_keep_the_registered_names_in_order():
    with pytest.raises(ValueError) as info:
        compute_advantage(R, mode="nope")
    assert "valid modes: an, gdpo, na, single" in str(info.value)
    assert math.isfinite(compute_advantage(R, mode=" NA ").sum())  # names are case/space-insensitive
