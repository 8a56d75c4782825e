"""Prop 1 (influence law): realized influence on rollouts against the closed forms."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multireward_grpo.advantage import Conditioning, compute_advantage_batch
from multireward_grpo.analysis.influence import (
    InfluenceResult,
    influence_shares,
    oracle_influence,
    realized_influence,
    within_group_covariance,
)

SIGMAS = np.array([1.0, 3.0, 0.5])
C_IDENTITY = np.eye(3)
C_CORR = np.array([[1.0, 0.5, -0.3], [0.5, 1.0, 0.2], [-0.3, 0.2, 1.0]])
M = 64


def gaussian_rewards(C, sigmas, *, groups, m=M, seed):
    """(groups, m, R) Gaussian rewards with covariance D C D and per-group means."""
    rng = np.random.default_rng(seed)
    Sigma = C * np.outer(sigmas, sigmas)
    chol = np.linalg.cholesky(Sigma)
    means = rng.normal(size=(groups, 1, len(sigmas))) * 5.0  # prompts differ in level only
    return rng.standard_normal((groups, m, len(sigmas))) @ chol.T + means, Sigma


def loop_influence(rewards, advantages, eps=1e-8):
    """Plain-loop reference: per group, per channel, the ddof-0 covariance with z."""
    G, _, R = rewards.shape
    per_group = np.zeros((G, R))
    for g in range(G):
        a = advantages[g] - advantages[g].mean()
        for l in range(R):
            col = rewards[g, :, l]
            sd = col.std()
            if np.all(col == col[0]):
                continue
            z = (col - col.mean()) / (sd + eps)
            per_group[g, l] = np.mean(a * z)
    return per_group


# --------------------------------------------------------------------------- oracle


def test_oracle_closed_forms_with_identity_correlation():
    w = np.array([1.0, 2.0, 0.5])
    Sigma = np.diag(SIGMAS**2)
    an = oracle_influence(Sigma, w, mode="an")
    na = oracle_influence(Sigma, w, mode="na")
    # AN is proportional to w_l sigma_l (the noisy channel dominates), NA equals w.
    np.testing.assert_allclose(an, w * SIGMAS / np.sqrt(np.sum((w * SIGMAS) ** 2)))
    np.testing.assert_allclose(influence_shares(an), w * SIGMAS / np.sum(w * SIGMAS))
    np.testing.assert_allclose(na, w)
    np.testing.assert_allclose(influence_shares(na), w / w.sum())


def test_oracle_closed_forms_with_correlation_against_a_loop():
    w = np.array([1.0, 1.0, 2.0])
    Sigma = C_CORR * np.outer(SIGMAS, SIGMAS)
    denom = np.sqrt(sum(w[k] * w[j] * Sigma[k, j] for k in range(3) for j in range(3)))
    for l in range(3):
        an_l = sum(w[k] * SIGMAS[k] * C_CORR[k, l] for k in range(3)) / denom
        na_l = sum(w[k] * C_CORR[k, l] for k in range(3))
        assert oracle_influence(Sigma, w, mode="an")[l] == pytest.approx(an_l)
        assert oracle_influence(Sigma, w, mode="na")[l] == pytest.approx(na_l)
    np.testing.assert_allclose(oracle_influence(Sigma, w, mode="single"), C_CORR[0])
    gdpo = oracle_influence(Sigma, w, mode="gdpo")
    np.testing.assert_allclose(gdpo, (w @ C_CORR) / np.sqrt(w @ C_CORR @ w))


def test_oracle_is_scale_free_in_sigma():
    Sigma = C_CORR * np.outer(SIGMAS, SIGMAS)
    for mode in ("an", "na", "gdpo"):
        np.testing.assert_allclose(oracle_influence(7.0 * Sigma, mode=mode), oracle_influence(Sigma, mode=mode))


@pytest.mark.parametrize(
    "Sigma,match",
    [
        (np.array([[1.0, 0.5], [0.4, 1.0]]), "symmetric"),
        (np.array([[1.0, 2.0], [2.0, 1.0]]), "positive semi-definite"),
        (np.array([[1.0, 0.0], [0.0, 0.0]]), "non-positive variance"),
        (np.ones((2, 3)), "square"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), "finite"),
    ],
)
def test_oracle_validates_sigma(Sigma, match):
    with pytest.raises(ValueError, match=match):
        oracle_influence(Sigma, mode="na")


def test_oracle_validates_weights_and_mode():
    with pytest.raises(ValueError, match="one weight per channel"):
        oracle_influence(np.eye(2), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=">= 0"):
        oracle_influence(np.eye(2), [1.0, -1.0])
    with pytest.raises(ValueError, match="w' Sigma w = 0"):
        oracle_influence(np.eye(2), [0.0, 0.0], mode="an")
    with pytest.raises(ValueError, match="mode must be"):
        oracle_influence(np.eye(2), mode="bogus")


# --------------------------------------------------------------------------- realized vs oracle


@pytest.mark.parametrize("C", [C_IDENTITY, C_CORR], ids=["C=I", "C=corr"])
@pytest.mark.parametrize("mode", ["an", "na"])
def test_realized_matches_oracle(C, mode):
    """Tolerance: 4 standard errors across groups, plus 0.01 for the O(1/m) bias of
    sample correlations (|rho| (1 - rho^2) / (2m) <= 0.003 at m = 64)."""
    w = np.array([1.0, 1.0, 2.0])
    rewards, Sigma = gaussian_rewards(C, SIGMAS, groups=3000, seed=42)
    res = realized_influence(rewards, w, mode=mode)
    expected = oracle_influence(Sigma, w, mode=mode)
    assert np.all(np.abs(res.influence - expected) <= 4 * res.stderr + 0.01), (res.influence, expected)
    # The plug-in Sigma from the rollouts gives the same prediction.
    plug_in = oracle_influence(within_group_covariance(rewards), w, mode=mode)
    np.testing.assert_allclose(plug_in, expected, atol=0.02)


def test_realized_proportionality_with_identity_correlation():
    w = np.array([1.0, 1.0, 1.0])
    rewards, _ = gaussian_rewards(C_IDENTITY, SIGMAS, groups=3000, seed=7)
    an = realized_influence(rewards, w, mode="an")
    na = realized_influence(rewards, w, mode="na")
    # AN: shares follow sigma (1 : 3 : 0.5); the noisy channel dominates.
    np.testing.assert_allclose(an.shares, SIGMAS / SIGMAS.sum(), atol=0.02)
    assert np.argmax(an.influence) == 1
    # NA: shares follow w, whatever the scales.
    np.testing.assert_allclose(na.shares, w / w.sum(), atol=0.02)


def test_realized_matches_loop_reference():
    rng = np.random.default_rng(3)
    rewards = rng.integers(0, 3, size=(25, 6, 3)).astype(float)
    rewards[::4, :, 2] = 1.0  # some constant (degenerate) channels
    w = np.array([1.0, 0.5, 2.0])
    for mode in ("an", "na", "single"):
        res = realized_influence(rewards, w, mode=mode)
        adv = compute_advantage_batch(rewards, w, mode)
        per_group = loop_influence(rewards, adv)
        np.testing.assert_allclose(res.per_group, per_group, atol=1e-12)
        np.testing.assert_allclose(res.influence, per_group.mean(axis=0), atol=1e-12)
        np.testing.assert_allclose(res.stderr, per_group.std(axis=0, ddof=1) / np.sqrt(25), atol=1e-12)
        degenerate = np.array([[np.all(rewards[g, :, l] == rewards[g, 0, l]) for l in range(3)] for g in range(25)])
        np.testing.assert_array_equal(res.n_degenerate, degenerate.sum(axis=0))
        omit = realized_influence(rewards, w, mode=mode, omit_degenerate=True)
        for l in range(3):
            keep = ~degenerate[:, l]
            assert omit.influence[l] == pytest.approx(per_group[keep, l].mean(), abs=1e-12)
            assert omit.n_used[l] == keep.sum()


def test_four_d_input_pools_seeds():
    rng = np.random.default_rng(4)
    rewards = rng.normal(size=(5, 3, 8, 2))
    res4 = realized_influence(rewards, [1.0, 2.0], mode="na")
    res3 = realized_influence(rewards.reshape(15, 8, 2), [1.0, 2.0], mode="na")
    np.testing.assert_allclose(res4.influence, res3.influence, atol=1e-12)
    assert res4.n_groups == 15 and res4.group_size == 8
    # gdpo whitens each seed slice as its own batch.
    adv = np.stack([compute_advantage_batch(rewards[:, k], [1.0, 2.0], "gdpo") for k in range(3)], axis=1)
    custom = realized_influence(rewards, [1.0, 2.0], advantages=adv)
    gdpo = realized_influence(rewards, [1.0, 2.0], mode="gdpo")
    np.testing.assert_allclose(gdpo.influence, custom.influence, atol=1e-12)
    assert custom.mode == "custom" and gdpo.mode == "gdpo"


def test_conditioning_is_applied_to_the_estimator_not_to_z():
    rng = np.random.default_rng(5)
    gate = rng.integers(0, 2, size=(400, 16, 1)).astype(float)
    target = rng.normal(size=(400, 16, 1))
    rewards = np.concatenate([gate, target], axis=-1)
    cond = Conditioning(gate=0, target=1)
    res = realized_influence(rewards, [1.0, 1.0], mode="na", conditioning=cond)
    adv = compute_advantage_batch(rewards, [1.0, 1.0], "na", conditioning=cond)
    ref = loop_influence(rewards, adv).mean(axis=0)
    np.testing.assert_allclose(res.influence, ref, atol=1e-12)
    plain = realized_influence(rewards, [1.0, 1.0], mode="na")
    assert res.influence[1] < plain.influence[1]  # gating weakens the target's pull


# --------------------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    channel=st.integers(0, 2),
    scale=st.floats(0.1, 10.0),
    shift=st.floats(-5.0, 5.0),
)
def test_na_influence_invariant_to_affine_map_of_a_channel(seed, channel, scale, shift):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(12, 6, 3))
    mapped = rewards.copy()
    mapped[..., channel] = scale * mapped[..., channel] + shift
    a = realized_influence(rewards, [1.0, 2.0, 0.5], mode="na", eps=0.0)
    b = realized_influence(mapped, [1.0, 2.0, 0.5], mode="na", eps=0.0)
    np.testing.assert_allclose(a.influence, b.influence, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_influence_invariant_to_permuting_rollouts(seed):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(10, 7, 3))
    perm = rng.permutation(7)
    for mode in ("an", "na"):
        a = realized_influence(rewards, mode=mode)
        b = realized_influence(rewards[:, perm], mode=mode)
        np.testing.assert_allclose(a.influence, b.influence, atol=1e-12)


# --------------------------------------------------------------------------- API details


def test_result_to_dict_is_json_and_inputs_untouched():
    rng = np.random.default_rng(6)
    rewards = rng.normal(size=(4, 5, 2))
    before = rewards.copy()
    res = realized_influence(rewards, [1.0, 1.0], mode="an")
    np.testing.assert_array_equal(rewards, before)
    assert isinstance(res, InfluenceResult)
    d = json.loads(json.dumps(res.to_dict()))
    assert set(d) >= {"influence", "stderr", "shares", "mode", "n_groups", "n_degenerate"}
    assert "per_group" not in d
    assert len(res.to_dict(include_per_group=True)["per_group"]) == 4


def test_single_group_has_nan_stderr_without_warnings():
    res = realized_influence(np.random.default_rng(0).normal(size=(1, 5, 2)), mode="na")
    assert np.all(np.isnan(res.stderr)) and np.all(np.isfinite(res.influence))


@pytest.mark.parametrize(
    "rewards,kwargs,exc,match",
    [
        (np.zeros((4, 3)), {}, ValueError, "trailing axis"),
        (np.full((2, 3, 2), np.nan), {}, ValueError, "NaN"),
        (np.zeros((2, 3, 2)), {"w": [1.0]}, ValueError, "one weight per channel"),
        (np.zeros((2, 3, 2)), {"advantages": np.zeros((2, 4))}, ValueError, "advantages must have shape"),
        (np.zeros((2, 3, 2)), {"ddof": -1}, ValueError, "ddof"),
        (np.array([["a"]]), {}, TypeError, "numeric"),
    ],
)
def test_validation(rewards, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        realized_influence(rewards, **kwargs)


def test_within_group_covariance_matches_numpy():
    rng = np.random.default_rng(8)
    rewards = rng.normal(size=(6, 9, 3))
    ref = np.mean([np.cov(rewards[g].T, ddof=1) for g in range(6)], axis=0)
    np.testing.assert_allclose(within_group_covariance(rewards), ref, atol=1e-12)
    with pytest.raises(ValueError, match="no covariance"):
        within_group_covariance(np.zeros((2, 1, 2)))
