"""Estimator hardening: extreme scales and dtypes, NaN groups under GDPO, and
negative channel indices."""

from __future__ import annotations

import warnings
from decimal import Decimal, localcontext

import numpy as np
import pytest

from multireward_grpo import (
    Conditioning,
    apply_conditioning,
    compute_advantage,
    compute_advantage_batch,
    compute_advantage_flat,
    group_standardize,
)
from multireward_grpo.advantage import parse_conditioning
from reference import batch_reference

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


@pytest.mark.parametrize(
    "call,match",
    [
        # the deviation of two members overflows float64 itself
        (lambda: compute_advantage_batch(np.array([[[1.5e308], [-1.5e308]]])), r"group 0, channel 0.*too large"),
        # w.r overflows
        (lambda: compute_advantage_batch(np.full((1, 2, 2), 1e308) * [[[1], [0.5]]], [1.0, 1.0], "an"), r"w\.r.*group 0"),
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
