"""Theorem 3 harness: closed forms, loop references, statistics, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from multireward_grpo.analysis._stats import bootstrap_ratio_ci
from multireward_grpo.analysis.thm3 import (
    analyze,
    expected_sample_correlation,
    fisher_expected_correlation,
    predicted_mse_population,
)
from reference import group_an, group_na, zscores

W3 = np.array([1.0, 1.0, 0.5])


def gaussian_rewards(rng, P, K, m, C):
    """(P, K, m, R) Gaussian channels with correlation C (unequal scales and means)."""
    L = np.linalg.cholesky(C)
    z = rng.standard_normal((P, K, m, C.shape[0])) @ L.T
    return 3.0 + z * np.linspace(0.5, 2.0, C.shape[0])  # the law is scale-free per channel


def corr3(rho):
    return np.array([[1.0, rho, 0.0], [rho, 1.0, rho / 2], [0.0, rho / 2, 1.0]])


# --------------------------------------------------------------------------- the law across m and rho


@pytest.mark.parametrize("rho", [-0.6, 0.0, 0.6])
@pytest.mark.parametrize("m", [2, 4, 8, 16, 32, 64, 128])
def test_realized_mse_follows_the_law(m, rho):
    C = corr3(rho)
    n_groups = 24_000  # relative SE of a mean of ghat^2 is sqrt(2 / n_groups) ~ 0.9%
    K = 40
    rewards = gaussian_rewards(np.random.default_rng(m * 7 + int(10 * rho) + 100), n_groups // K, K, m, C)
    res = analyze(rewards, W3, score_seed=1, C=C, n_resamples=0)
    tol = 5 * math.sqrt(2 / n_groups)
    # NA: m * realized = w' E[Chat] w, exactly for Gaussian channels ...
    exact = W3 @ expected_sample_correlation(C, m) @ W3
    assert m * res.realized_na.mean() / exact == pytest.approx(1.0, abs=tol)
    # ... and the sample-correlation plug-in agrees with the exact expectation,
    # within 5 standard errors of its mean over prompts
    plugin_se = res.predicted_per_prompt.std(ddof=1) / math.sqrt(res.P) / res.predicted_pooled
    assert res.predicted_pooled * m / exact == pytest.approx(1.0, abs=5 * plugin_se)
    # AN: tau2 / m whatever the correlation
    assert m * res.realized_an.mean() == pytest.approx(1.0, abs=tol)
    # and the per-mode ratios are ~1
    for mode in ("na", "an"):
        assert res.ratio_pooled[mode] == pytest.approx(1.0, abs=tol)


def test_law_approaches_w_C_w_with_fisher_correction():
    C = corr3(0.6)
    limit = W3 @ C @ W3
    errors_fisher, errors_plain = [], []
    for m in (8, 16, 32, 64, 128):
        exact = W3 @ expected_sample_correlation(C, m) @ W3
        errors_fisher.append(abs(W3 @ fisher_expected_correlation(C, m) @ W3 - exact))
        errors_plain.append(abs(limit - exact))
    errors_fisher, errors_plain = np.array(errors_fisher), np.array(errors_plain)
    # plain w'Cw is off by O(1/m), Fisher's correction by O(1/m^2)
    assert np.all(errors_fisher < errors_plain / 5)
    np.testing.assert_allclose(errors_plain[:-1] / errors_plain[1:], 2.0, rtol=0.1)
    np.testing.assert_allclose(errors_fisher[:-1] / errors_fisher[1:], 4.0, rtol=0.15)


def test_exact_expected_correlation_closed_forms():
    for rho in (-0.9, -0.3, 0.0, 0.5, 0.99):
        C = np.array([[1.0, rho], [rho, 1.0]])
        assert expected_sample_correlation(C, 2)[0, 1] == pytest.approx(2 / math.pi * math.asin(rho), abs=1e-12)
    C = np.array([[1.0, 1.0], [1.0, 1.0]])
    assert expected_sample_correlation(C, 5)[0, 1] == 1.0


def test_exact_expected_correlation_against_simulation():
    rng = np.random.default_rng(3)
    for m, rho in [(3, 0.6), (5, -0.8)]:
        x = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=(100_000, m))
        xc = x - x.mean(1, keepdims=True)
        r = (xc[..., 0] * xc[..., 1]).sum(1) / np.sqrt((xc[..., 0] ** 2).sum(1) * (xc[..., 1] ** 2).sum(1))
        se = r.std() / math.sqrt(r.size)
        assert abs(r.mean() - expected_sample_correlation(np.array([[1, rho], [rho, 1]]), m)[0, 1]) < 4 * se


# --------------------------------------------------------------------------- loop references


def _loop_reference(rewards, w, g, tau2=1.0):
    P, K, m, R = rewards.shape
    out = {"pred": [], "real_na": [], "real_an": [], "C": np.zeros((R, R)), "inf_na": np.zeros(R), "inf_an": np.zeros(R)}
    for p in range(P):
        pred, real_na, real_an = 0.0, 0.0, 0.0
        for k in range(K):
            group = rewards[p, k].tolist()
            z = [zscores([row[c] for row in group]) for c in range(R)]
            Chat = np.array([[sum(z[i][j] * z[l][j] for j in range(m)) / m for l in range(R)] for i in range(R)])
            out["C"] += Chat / (P * K)
            pred += tau2 / m * float(w @ Chat @ w) / K
            a_na, a_an = group_na(group, w), group_an(group, w)
            real_na += (sum(a * s for a, s in zip(a_na, g[p, k])) / m) ** 2 / K
            real_an += (sum(a * s for a, s in zip(a_an, g[p, k])) / m) ** 2 / K
            for c in range(R):
                out["inf_na"][c] += sum(a * zz for a, zz in zip(a_na, z[c])) / m / (P * K)
                out["inf_an"][c] += sum(a * zz for a, zz in zip(a_an, z[c])) / m / (P * K)
        out["pred"].append(pred)
        out["real_na"].append(real_na)
        out["real_an"].append(real_an)
    return out


def test_matches_loop_reference_with_user_scores():
    rng = np.random.default_rng(4)
    rewards = gaussian_rewards(rng, 5, 6, 7, corr3(0.4))
    rewards[1, 2, :, 2] = 0.25  # a degenerate group
    rewards[0, :, :, 0] = rng.integers(0, 2, size=(6, 7))  # ties
    g = rng.normal(size=(5, 6, 7)) * 1.7
    res = analyze(rewards, W3, scores=g, tau2=1.7**2, n_resamples=0)
    ref = _loop_reference(rewards, W3, g, tau2=1.7**2)
    np.testing.assert_allclose(res.predicted_per_prompt, ref["pred"], rtol=1e-10)
    np.testing.assert_allclose(res.realized_na, ref["real_na"], rtol=1e-10)
    np.testing.assert_allclose(res.realized_an, ref["real_an"], rtol=1e-10)
    np.testing.assert_allclose(res.pooled_C, ref["C"], atol=1e-12)
    np.testing.assert_allclose(res.influence_na, ref["inf_na"], atol=1e-12)
    np.testing.assert_allclose(res.influence_an, ref["inf_an"], atol=1e-12)
    # NA's conditional prediction is the law itself: (1/m) sum A^2 = w' Chat w
    np.testing.assert_allclose(res.predicted["na"], res.predicted_per_prompt, rtol=1e-10)
    assert res.degenerate_groups.tolist() == [0, 0, 1]


def test_realized_mse_is_unbiased_with_two_seeds():
    # With K = 2 the ddof-0 variance around the sample mean would be low by half.
    rewards = gaussian_rewards(np.random.default_rng(5), 20_000, 2, 4, corr3(0.3))
    res = analyze(rewards, W3, score_seed=2, n_resamples=0)
    tol = 5 * math.sqrt(2 / 40_000)
    assert res.ratio_pooled["na"] == pytest.approx(1.0, abs=tol)
    assert res.ratio_pooled["an"] == pytest.approx(1.0, abs=tol)


def test_chunking_does_not_change_results():
    rewards = gaussian_rewards(np.random.default_rng(6), 13, 5, 6, corr3(0.2))
    whole = analyze(rewards, W3, score_seed=3, n_resamples=100)
    calls = []
    pieces = analyze(rewards, W3, score_seed=3, n_resamples=100, chunk_bytes=1, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (13, 13) and len(calls) == 13
    for key in ("realized_na", "realized_an", "predicted_per_prompt", "pooled_C", "influence_na"):
        np.testing.assert_allclose(getattr(pieces, key), getattr(whole, key), rtol=1e-12, atol=1e-15)
    assert pieces.ratio_ci == whole.ratio_ci


def test_other_modes_and_conditioning():
    rng = np.random.default_rng(7)
    rewards = gaussian_rewards(rng, 30, 40, 8, corr3(0.3))
    rewards[..., 0] = (rewards[..., 0] > 3.0).astype(float)  # a 0/1 gate
    res = analyze(rewards, W3, modes=["single"], conditioning=[(0, 1)], n_resamples=200)
    assert res.modes == ("na", "an", "single")
    for mode in res.modes:
        assert res.ratio_pooled[mode] == pytest.approx(1.0, abs=0.06)
        low, high = res.ratio_ci[mode]
        assert low < res.ratio_pooled[mode] < high
    # the NA law uses the conditioned channel: recompute by hand
    from multireward_grpo import apply_conditioning

    plain = analyze(apply_conditioning(rewards, (0, 1)), W3, n_resamples=0)
    np.testing.assert_allclose(res.predicted_per_prompt, plain.predicted_per_prompt, rtol=1e-12)
    with pytest.raises(ValueError, match="couples the groups"):
        analyze(rewards, W3, modes=["gdpo"])


def test_to_dict_is_json_ready():
    import json

    res = analyze(gaussian_rewards(np.random.default_rng(8), 3, 4, 5, corr3(0.1)), W3, C=corr3(0.1), n_resamples=50)
    payload = json.loads(json.dumps(res.to_dict()))
    assert payload["P"] == 3 and len(payload["predicted_per_prompt"]) == 3
    assert set(payload["ratio_pooled"]) == {"na", "an"}


def test_population_predictions():
    C = corr3(0.5)
    for correction, E in [("none", C), ("fisher", fisher_expected_correlation(C, 8)), ("exact", expected_sample_correlation(C, 8))]:
        assert predicted_mse_population(C, W3, 8, tau2=2.0, correction=correction) == pytest.approx(2.0 / 8 * W3 @ E @ W3)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_matches_loop_reference():
    rng = np.random.default_rng(9)
    num, den = rng.random(17), rng.random(17) + 0.5
    low, high = bootstrap_ratio_ci(num, den, n_resamples=500, confidence_level=0.9, rng=11)
    loop_rng = np.random.default_rng(11)
    ratios = []
    for _ in range(500):
        idx = loop_rng.integers(0, 17, size=17)
        ratios.append(num[idx].sum() / den[idx].sum())
    np.testing.assert_allclose([low, high], np.quantile(ratios, [0.05, 0.95]), rtol=1e-12)


def test_bootstrap_interval_covers_at_its_level():
    # Ratio of means of independent prompts; true ratio 2. Coverage over 300
    # replications should be near 0.95 (binomial SD ~ 0.013; percentile
    # intervals under-cover slightly at P = 60).
    rng = np.random.default_rng(10)
    covered = 0
    for rep in range(300):
        den = rng.exponential(1.0, size=60)
        num = 2.0 * den * rng.lognormal(0, 0.3, size=60) / math.exp(0.045)
        low, high = bootstrap_ratio_ci(num, den, n_resamples=1000, rng=rep)
        covered += low <= 2.0 <= high
    assert 0.89 <= covered / 300 <= 0.99


def test_bootstrap_speed_scale_is_vectorized():
    # 2,000 resamples over 150 prompts is a single matrix product per block.
    low, high = bootstrap_ratio_ci(np.ones(150), np.ones(150), n_resamples=2000, rng=0)
    assert low == high == 1.0


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"rewards_pkmr": np.ones((2, 3, 4))}, r"must be \(P, K, m, R\)"),
        ({"w": [1.0, 1.0]}, "3 channels but w has shape"),
        ({"rewards_pkmr": np.random.default_rng(0).random((2, 1, 4, 3))}, "K .* must be >= 2"),
        ({"rewards_pkmr": np.random.default_rng(0).random((2, 3, 1, 3))}, "m .* must be >= 2"),
        ({"w": [1.0, -1.0, 1.0]}, "w must be finite, >= 0"),
        ({"tau2": 0.0}, "tau2"),
        ({"scores": np.ones((2, 3, 5))}, r"scores must be \(P, K, m\)"),
        ({"C": np.eye(2)}, "C is 2x2 but there are 3 channels"),
        ({"modes": ["bogus"]}, "unknown mode"),
        ({"confidence_level": 1.5}, "confidence_level"),
        ({"conditioning": (0, 7)}, "target=7"),
    ],
)
def test_bad_inputs(kwargs, match):
    args = {"rewards_pkmr": np.random.default_rng(0).random((2, 3, 4, 3)), "w": W3}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        analyze(**args)


def test_nan_rewards_name_the_position():
    rewards = np.random.default_rng(0).random((2, 3, 4, 3))
    rewards[1, 2, 0, 1] = np.nan
    with pytest.raises(ValueError, match="prompt 1, seed 2, rollout 0, channel 1"):
        analyze(rewards, W3)


# --------------------------------------------------------------------------- extreme reward scales


def _unit_rewards():
    """Rewards scaled so max |r| = 1, with a constant channel in one group and ties."""
    rng = np.random.default_rng(21)
    rewards = gaussian_rewards(rng, 4, 6, 5, corr3(0.4))
    rewards[0, :, :, 0] = rng.integers(0, 2, size=(6, 5))  # ties
    rewards[0, 0, :, 0] = [0.0, 1.0, 1.0, 1.0, 1.0]  # one odd member
    rewards[2, 3, :, 1] = 0.3  # a constant channel in one group
    return rewards / np.abs(rewards).max()


def _assert_same_analysis(res, ref, rtol):
    assert res.degenerate_groups.tolist() == ref.degenerate_groups.tolist()
    np.testing.assert_allclose(res.pooled_C, ref.pooled_C, rtol=rtol, atol=rtol)
    for key in ("predicted_per_prompt", "influence_na", "influence_an"):
        np.testing.assert_allclose(getattr(res, key), getattr(ref, key), rtol=rtol, atol=1e-15)
    for mode in ref.modes:
        np.testing.assert_allclose(res.realized[mode], ref.realized[mode], rtol=rtol)
        np.testing.assert_allclose(res.predicted[mode], ref.predicted[mode], rtol=rtol)
        np.testing.assert_allclose(res.ratio_per_prompt[mode], ref.ratio_per_prompt[mode], rtol=rtol)
        assert res.ratio_pooled[mode] == pytest.approx(ref.ratio_pooled[mode], rel=rtol)
        np.testing.assert_allclose(res.ratio_ci[mode], ref.ratio_ci[mode], rtol=rtol)


@pytest.mark.parametrize("scale", [1e200, 1e-200, 1.7e308, 1e-305])
def test_extreme_reward_scales_give_the_same_analysis(scale):
    # The harness's statistics are scale-free once eps (an absolute floor on
    # the std, in reward units) is 0. A naive variance overflows from ~1e154
    # (the channel becomes z = 0, "constant") and underflows below ~1e-162.
    # 1.7e308 also overflows the differences and w.r; 1e-305 is near subnormal.
    rewards = _unit_rewards()
    options = {"eps": 0.0, "modes": ["single"], "n_resamples": 200, "score_seed": 5}
    ref = analyze(rewards, W3, **options)
    assert ref.degenerate_groups.tolist() == [0, 1, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / underflow warnings either
        res = analyze(rewards * scale, W3, **options)
    _assert_same_analysis(res, ref, rtol=1e-9)


def test_default_eps_does_not_make_tiny_rewards_constant():
    # With eps = 1e-8 a channel whose spread is ~1e-200 has z ~ 0, as in the
    # estimators; it must still not be counted as a constant channel.
    rewards = _unit_rewards()
    res = analyze(rewards * 1e-200, W3, n_resamples=0)
    assert res.degenerate_groups.tolist() == [0, 1, 0]
    # at huge scales eps is negligible: the same analysis as eps = 0
    ref = analyze(rewards, W3, eps=0.0, n_resamples=200)
    _assert_same_analysis(analyze(rewards * 1e200, W3, n_resamples=200), ref, rtol=1e-9)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_low_precision_rewards_are_analysed_in_float64(dtype):
    # In float16 the squares of deviations of rewards ~300 would overflow (max 65504).
    rewards = (_unit_rewards() * 300.0).astype(dtype)
    res = analyze(rewards, W3, n_resamples=100)
    ref = analyze(rewards.astype(np.float64), W3, n_resamples=100)
    _assert_same_analysis(res, ref, rtol=1e-12)
    assert res.pooled_C.dtype == res.realized_na.dtype == np.float64
    assert np.all(np.isfinite(res.pooled_C))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"w": W3 * 1e200}, "MSE of mode 'na' is not finite"),
        ({"scores": np.full((4, 6, 5), 1e200), "tau2": 1.0}, "realized MSE of mode 'na' is not finite"),
    ],
)
def test_statistics_beyond_float64_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        analyze(_unit_rewards(), **{"w": W3, "n_resamples": 0, **kwargs})


def test_non_finite_conditioned_channel_is_named(monkeypatch):
    import multireward_grpo.analysis.thm3 as thm3

    def overflowing_conditioning(rewards, rules):
        out = rewards.copy()
        out[1, 2, 1] = np.inf
        return out

    monkeypatch.setattr(thm3, "apply_conditioning", overflowing_conditioning)
    with pytest.raises(ValueError, match="channel 1 holds non-finite values"):
        analyze(_unit_rewards(), W3, conditioning=[(0, 1)], n_resamples=0)


@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_influence_z_scores_are_scale_free(scale):
    from multireward_grpo.analysis.influence import realized_influence

    rewards = _unit_rewards()
    advantages = np.random.default_rng(22).normal(size=rewards.shape[:-1])
    ref = realized_influence(rewards, W3, advantages=advantages, eps=0.0)
    res = realized_influence(rewards * scale, W3, advantages=advantages, eps=0.0)
    assert res.n_degenerate.tolist() == ref.n_degenerate.tolist() == [0, 1, 0]
    np.testing.assert_allclose(res.influence, ref.influence, rtol=1e-9)
    np.testing.assert_allclose(res.stderr, ref.stderr, rtol=1e-9)


def _predictions_from_the_estimators(rewards, w, mode, eps, tau2=1.0):
    """(P,) predicted MSE ``(tau2/m) mean_k (1/m) sum_j A_j^2`` from compute_advantage_batch."""
    from multireward_grpo.advantage import compute_advantage_batch

    P, K, m, R = rewards.shape
    adv = compute_advantage_batch(rewards.reshape(-1, m, R), w, mode, eps=eps)
    return (tau2 / m * np.einsum("gm,gm->g", adv, adv) / m).reshape(P, K).mean(axis=1)


@pytest.mark.parametrize("scale", [1.0, 1e200, 1.7e308, 1e-305])
@pytest.mark.parametrize("eps", [1e-8, 0.0])
def test_harness_advantages_are_the_estimators_at_every_scale(scale, eps):
    # The harness standardizes with the estimator layer's code (NA from its z,
    # AN from the "an" estimator itself), so its predictions are the estimators'.
    rewards = _unit_rewards() * scale
    res = analyze(rewards, W3, eps=eps, modes=["single"], n_resamples=0)
    for mode in ("na", "an", "single"):
        want = _predictions_from_the_estimators(rewards, W3, mode, eps)
        np.testing.assert_allclose(res.predicted[mode], want, rtol=1e-12, atol=0)
    if scale == 1.0:  # AN is the estimator's output itself, not a re-implementation
        np.testing.assert_array_equal(res.predicted["an"], _predictions_from_the_estimators(rewards, W3, "an", eps))


def test_influence_z_scores_are_the_estimators_near_the_float64_maximum():
    from multireward_grpo.advantage import EstimatorOptions, group_standardize
    from multireward_grpo.analysis.influence import realized_influence

    unit = _unit_rewards()[:, 0]  # (P, m, R)
    rewards = unit * 1.7e308  # differences and w.r overflow float64
    advantages = np.random.default_rng(23).normal(size=rewards.shape[:-1])
    res = realized_influence(rewards, W3, advantages=advantages, eps=0.0)
    # z is group_standardize's own, bit for bit
    z = group_standardize(rewards, options=EstimatorOptions(eps=0.0))
    centred = advantages - advantages.mean(axis=1, keepdims=True)
    np.testing.assert_array_equal(res.per_group, np.einsum("gm,gmr->gr", centred, z) / rewards.shape[1])
    assert res.n_degenerate.tolist() == [0, 0, 0] and np.abs(res.influence).max() > 0.1
    for mode in ("an", "na"):
        got = realized_influence(rewards, W3, mode=mode, eps=0.0)
        np.testing.assert_allclose(got.influence, realized_influence(unit, W3, mode=mode, eps=0.0).influence, rtol=1e-12)


def test_within_group_covariance_beyond_float64_names_the_channel():
    from multireward_grpo.analysis.influence import within_group_covariance

    rewards = _unit_rewards()
    rewards[..., 2] *= 1e200
    with pytest.raises(ValueError, match="channel 2"):
        within_group_covariance(rewards)
    assert np.all(np.isfinite(within_group_covariance(_unit_rewards())))


def test_custom_estimator_with_non_finite_advantages_is_named():
    from multireward_grpo.advantage import register_estimator, unregister_estimator

    def blows_up(rewards, w, *, mask, options):
        return np.full(rewards.shape[:2], np.inf)

    register_estimator("test_blows_up", blows_up)
    try:
        with pytest.raises(ValueError, match="'test_blows_up' (gave|returned) non-finite advantages"):
            analyze(_unit_rewards(), W3, modes=["test_blows_up"], n_resamples=0)
    finally:
        unregister_estimator("test_blows_up")
