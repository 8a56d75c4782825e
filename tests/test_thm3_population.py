"""Theorem 3's population law: closed forms, loop references, and a check that can fail."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from scipy.stats import norm

from multireward_grpo.analysis.population import (
    constant_group_probability,
    expected_group_correlation,
    population_law,
    prompt_correlation,
)
from multireward_grpo.analysis.thm3 import analyze, expected_sample_correlation


def _subsets_chat(values: np.ndarray, m: int) -> np.ndarray:
    """Loop reference: Chat (ddof 0, constant channel -> z = 0) averaged over every m-subset of the rows."""
    total, count = np.zeros((values.shape[1],) * 2), 0
    for rows in itertools.combinations(range(len(values)), m):
        group = values[list(rows)]
        sd = group.std(axis=0)
        z = np.where(sd > 0, (group - group.mean(0)) / np.where(sd > 0, sd, 1.0), 0.0)
        total += z.T @ z / m
        count += 1
    return total / count


def test_constant_group_probability_is_the_share_of_constant_subsets():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 3, size=9).astype(float)
    for m in (2, 3, 5):
        share = np.mean([len(set(values[list(c)])) == 1 for c in itertools.combinations(range(9), m)])
        assert constant_group_probability(values, m) == pytest.approx(share, rel=1e-12, abs=1e-15)
    assert constant_group_probability(rng.normal(size=12), 3) == 0.0  # continuous: no ties


@pytest.mark.parametrize("p, m", [(0.3, 4), (0.5, 2), (0.9, 8)])
def test_constant_group_probability_is_unbiased_for_bernoulli(p, m):
    # E[share of constant m-subsets] = p^m + (1-p)^m exactly (a U-statistic), for any N >= m
    rng = np.random.default_rng(1)
    draws = (rng.random((4000, 16)) < p).astype(float)
    estimates = constant_group_probability(draws, m)
    se = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert abs(estimates.mean() - (p**m + (1 - p) ** m)) < 4 * se


def test_resampled_expectation_matches_every_subset():
    rng = np.random.default_rng(2)
    latent = rng.multivariate_normal([0, 0, 0], [[1, 0.6, -0.3], [0.6, 1, 0.1], [-0.3, 0.1, 1]], size=12)
    values = np.column_stack([(latent[:, 0] > 0.3), latent[:, 1], np.round(latent[:, 2])]).astype(float)
    exact = _subsets_chat(values, 4)  # 495 subsets
    estimate = expected_group_correlation(values[None], 4, n_partitions=3000, rng=3)[0]
    # diagonal: the exact U-statistic; off-diagonal: 3000 partitions x 3 groups, Monte Carlo error ~0.005
    np.testing.assert_allclose(np.diag(estimate), np.diag(exact), rtol=1e-12)
    np.testing.assert_allclose(estimate, exact, atol=0.02)


def test_closed_form_offdiagonals_use_the_prompt_correlation():
    rng = np.random.default_rng(3)
    rollouts = rng.multivariate_normal([0, 0], [[1, 0.5], [0.5, 1]], size=(3, 64))
    C = prompt_correlation(rollouts)
    gaussian = expected_group_correlation(rollouts, 4, offdiag="gaussian")
    for p in range(3):
        Cp = (C[p] + C[p].T) / 2
        np.fill_diagonal(Cp, 1.0)
        np.testing.assert_allclose(gaussian[p], expected_sample_correlation(Cp, 4), atol=1e-12)
    none = expected_group_correlation(rollouts, 4, offdiag="none")
    np.testing.assert_allclose(none, C)


def test_population_law_formulas():
    rng = np.random.default_rng(4)
    rewards = (rng.random((2, 5, 4, 2)) < 0.4).astype(float)
    w = np.array([1.0, 2.0])
    law = population_law(rewards, w, tau2=np.array([1.0, 3.0]), rng=0)
    rollouts = rewards.reshape(2, 20, 2)
    for p, tau2 in enumerate((1.0, 3.0)):
        assert law["na"][p] == pytest.approx(tau2 / 4 * w @ law["expected_C"][p] @ w, rel=1e-12)
        scalar_constant = constant_group_probability(rollouts[p] @ w, 4)
        assert law["an"][p] == pytest.approx(tau2 / 4 * (1 - scalar_constant), rel=1e-12)
        assert law["na_no_correction"][p] == pytest.approx(tau2 / 4 * w @ law["prompt_C"][p] @ w, rel=1e-12)


def _gaussian(rng, P, K, m, rho):
    return rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=(P, K, m))


def _bernoulli(rng, P, K, m, pass_rates, latent_rho):
    """0/1 channels through a Gaussian copula: channel l passes with probability pass_rates[l]."""
    latent = rng.multivariate_normal([0, 0], [[1, latent_rho], [latent_rho, 1]], size=(P, K, m))
    return (latent < norm.ppf(pass_rates)).astype(float)


GROUP_SIZES = (2, 4, 8, 16, 32)


@pytest.mark.parametrize("marginals", ["gaussian", "bernoulli"])
def test_population_law_holds_and_the_uncorrected_law_is_rejected(marginals):
    """Targets: ratio 1 within its CI at every m; the law without the finite-m correction rejected at m <= 8.

    Gaussian channels with rho = -0.7 (the finite-m correction of E[Chat_01] is relatively large when w'Cw
    is small) use Hotelling's exact E[r]; Bernoulli channels (pass rates 0.2 and 0.6) use the exact diagonal
    1 - p^m - (1-p)^m and resampled off-diagonals. ~160k rollouts per m. 99% intervals over 5 sizes x 2 laws.
    """
    rng = np.random.default_rng(5 if marginals == "gaussian" else 6)
    pass_rates = np.array([0.2, 0.6])
    for m in GROUP_SIZES:
        P, K = 20, 8000 // m
        if marginals == "gaussian":
            rewards, offdiag = _gaussian(rng, P, K, m, -0.7), "gaussian"
        else:
            rewards, offdiag = _bernoulli(rng, P, K, m, pass_rates, 0.5), "resample"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # constant-channel warnings of the Bernoulli case
            res = analyze(rewards, [1.0, 1.0], m, population_offdiag=offdiag, n_resamples=400,
                          confidence_level=0.99)
        for law in ("na", "an"):
            low, high = res.population_ratio_ci[law]
            assert low <= 1.0 <= high, (marginals, m, law, res.population_ratio_pooled[law], (low, high))
        low, high = res.population_ratio_ci["na_no_correction"]
        if m <= 8:
            assert not low <= 1.0 <= high, (marginals, m, res.population_ratio_pooled["na_no_correction"])
        if marginals == "bernoulli":  # the exact diagonal against the closed form of the known pass rates
            closed = 1 - pass_rates**m - (1 - pass_rates) ** m
            np.testing.assert_allclose(np.diag(res.population_expected_C), closed, atol=0.01)


def test_conditional_ratio_cannot_fail_but_the_population_law_can():
    """Rewards whose groups are NOT iid draws of the prompt's distribution (a shift of channel 1 per group):
    within groups the channels correlate at 0.8, over the prompt at 0.8 / sqrt(10) ~ 0.25. The conditional
    ratio stays ~1; the population law predicts w'E[Chat]w ~ 2.5 where the groups give ~3.6 (ratio ~1.4)."""
    rng = np.random.default_rng(7)
    P, K, m = 20, 300, 4
    rewards = _gaussian(rng, P, K, m, 0.8)
    rewards[..., 1] += 3.0 * rng.normal(size=(P, K, 1))  # a shift per group: invisible within a group
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = analyze(rewards, [1.0, 1.0], 0, n_resamples=400)
    low, high = res.ratio_ci["na"]
    assert low <= 1.0 <= high  # the conditional check passes whatever the rewards
    low, high = res.population_ratio_ci["na"]
    assert low > 1.2, res.population_ratio_pooled["na"]
