"""Prop 4 (conditioning bias law): closed form, Monte Carlo, and the rollout sweep."""

from __future__ import annotations

import json

import numpy as np
import pytest

from multireward_grpo.analysis.bias import (
    BiasEstimate,
    gamma_star,
    gamma_sweep_from_rollouts,
    predicted_bias,
    sample_bias_model,
    simulate_bias,
)

# (p_a, p_b, alpha_c, alpha_f, w_b)
PARAMS = [
    (0.6, 0.3, 1.0, 0.5, 1.0),
    (0.3, 0.7, 2.0, -1.0, 0.5),
    (0.8, 0.5, 0.5, 2.0, 2.0),
]


# --------------------------------------------------------------------------- closed form


def test_closed_form_matches_covariance_algebra():
    # beta = w_b [Cov(b, g) - Cov(ab, g)] from the exact moments of the model,
    # enumerated over the four (a, b) outcomes (noise drops out of covariances).
    for p_a, p_b, ac, af, w_b in PARAMS:
        for gamma in (-1.0, 0.0, 0.4, 2.5):
            probs, bs, abs_, gs = [], [], [], []
            for a in (0.0, 1.0):
                for b in (0.0, 1.0):
                    probs.append((p_a if a else 1 - p_a) * (p_b if b else 1 - p_b))
                    bs.append(b)
                    abs_.append(a * b)
                    gs.append(ac * (a - p_a) + af * (b - p_b) * a + gamma * (b - p_b) * (1 - a))
            probs, bs, abs_, gs = map(np.array, (probs, bs, abs_, gs))

            def cov(x, y, probs=probs):
                return float(np.sum(probs * x * y) - np.sum(probs * x) * np.sum(probs * y))

            expected = w_b * (cov(bs, gs) - cov(abs_, gs))
            assert predicted_bias(p_a, p_b, ac, af, gamma, w_b) == pytest.approx(expected, abs=1e-12)


def test_predicted_bias_is_vectorized_and_alpha_f_free():
    gammas = np.linspace(-1, 3, 9)
    out = predicted_bias(0.6, 0.3, 1.0, 0.5, gammas)
    assert isinstance(out, np.ndarray) and out.shape == (9,)
    loop = [predicted_bias(0.6, 0.3, 1.0, 0.5, float(g)) for g in gammas]
    np.testing.assert_allclose(out, loop, rtol=0, atol=1e-15)
    assert isinstance(predicted_bias(0.6, 0.3, 1.0, 0.5, 0.2), float)
    np.testing.assert_array_equal(out, predicted_bias(0.6, 0.3, 1.0, -7.0, gammas))


def test_sign_flips_at_gamma_star():
    for p_a, p_b, ac, af, w_b in PARAMS:
        gs = gamma_star(p_a, p_b, ac)
        assert gs == pytest.approx(ac * p_a / (1 - p_b))
        assert predicted_bias(p_a, p_b, ac, af, gs, w_b) == pytest.approx(0.0, abs=1e-12)
        assert predicted_bias(p_a, p_b, ac, af, gs - 0.1, w_b) < 0 < predicted_bias(p_a, p_b, ac, af, gs + 0.1, w_b)


# --------------------------------------------------------------------------- Monte Carlo


@pytest.mark.parametrize("idx,seed", [(0, 11), (1, 12), (2, 13)])
def test_simulated_bias_matches_closed_form_over_gamma_grid(idx, seed):
    p_a, p_b, ac, af, w_b = PARAMS[idx]
    gammas = np.linspace(-0.5, 2.5, 13)
    est = simulate_bias(p_a, p_b, ac, af, gammas, w_b=w_b, n=200_000, noise_std=1.0, rng=seed)
    assert isinstance(est, BiasEstimate)
    np.testing.assert_allclose(est.predicted, predicted_bias(p_a, p_b, ac, af, gammas, w_b))
    z = np.asarray(est.z)
    assert np.all(np.abs(z) < 3.0), z
    assert np.all(np.asarray(est.stderr) > 0)


def test_simulated_sign_flip_is_significant():
    p_a, p_b, ac, af, w_b = PARAMS[0]
    gs = gamma_star(p_a, p_b, ac)
    est = simulate_bias(p_a, p_b, ac, af, [gs - 0.5, gs, gs + 0.5], w_b=w_b, n=200_000, rng=3)
    below, at, above = est.beta_hat
    se = est.stderr
    assert below < -5 * se[0] and above > 5 * se[2]
    assert abs(at) < 3 * se[1]


def test_simulate_matches_a_loop_reference():
    p_a, p_b, ac, af, w_b = PARAMS[1]
    gammas = [0.0, 0.7, 1.9]
    n = 20_000
    est = simulate_bias(p_a, p_b, ac, af, gammas, w_b=w_b, n=n, noise_std=0.5, rng=np.random.default_rng(5))
    for i, gamma in enumerate(gammas):
        a, b, g = sample_bias_model(p_a, p_b, ac, af, gamma, size=n, noise_std=0.5, rng=np.random.default_rng(5))
        u = b * (1 - a)
        ref_beta = w_b * (np.cov(b, g)[0, 1] - np.cov(a * b, g)[0, 1])
        prod = (u - u.mean()) * (g - g.mean())
        ref_se = abs(w_b) * prod.std(ddof=1) / np.sqrt(n)
        assert est.beta_hat[i] == pytest.approx(ref_beta, rel=1e-9, abs=1e-12)
        assert est.stderr[i] == pytest.approx(ref_se, rel=1e-9)


def test_stderr_is_calibrated_across_seeds():
    # The spread of beta_hat over independent runs matches the reported stderr.
    p_a, p_b, ac, af, _ = PARAMS[0]
    runs = [simulate_bias(p_a, p_b, ac, af, 1.5, n=5_000, rng=s) for s in range(300)]
    spread = np.std([r.beta_hat for r in runs], ddof=1)
    mean_se = np.mean([r.stderr for r in runs])
    assert spread == pytest.approx(mean_se, rel=0.15)


def test_simulation_is_reproducible_and_scalar_in_scalar_out():
    e1 = simulate_bias(0.5, 0.5, 1.0, 1.0, 0.3, n=1000, rng=7)
    e2 = simulate_bias(0.5, 0.5, 1.0, 1.0, 0.3, n=1000, rng=np.random.default_rng(7))
    assert e1 == e2
    assert isinstance(e1.beta_hat, float) and isinstance(e1.z, float)
    json.dumps(e1.to_dict())
    json.dumps(simulate_bias(0.5, 0.5, 1.0, 1.0, [0.1, 0.2], n=100, rng=1).to_dict())


# --------------------------------------------------------------------------- rollout sweep


def _loop_sweep(gate, b, g, gammas, w_b, threshold, within_group):
    """Reference: build each contaminated target and difference the covariances."""
    c = (gate >= threshold).astype(float)
    out = []
    for gamma in gammas:
        b_gamma = b * (c + gamma * (1 - c))
        if within_group:
            diffs = [np.cov(b[p], g[p])[0, 1] - np.cov(b_gamma[p], g[p])[0, 1] for p in range(b.shape[0])]
            out.append(w_b * np.mean(diffs))
        else:
            out.append(w_b * (np.cov(b.ravel(), g.ravel())[0, 1] - np.cov(b_gamma.ravel(), g.ravel())[0, 1]))
    return np.array(out)


@pytest.mark.parametrize("within_group", [True, False])
def test_sweep_matches_loop_reference(within_group):
    rng = np.random.default_rng(21)
    gate = rng.uniform(size=(40, 8))  # a continuous gate: the threshold rule matters
    b = rng.normal(size=(40, 8))  # a non-binary target
    g = rng.normal(size=(40, 8)) + 0.5 * b * (gate < 0.3)
    gammas = np.array([0.0, 0.25, 0.6, 1.0])
    sweep = gamma_sweep_from_rollouts(gate, b, g, gammas, w_b=1.5, threshold=0.3, within_group=within_group)
    ref = _loop_sweep(gate, b, g, gammas, 1.5, 0.3, within_group)
    np.testing.assert_allclose(sweep.removed, ref, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(sweep.retained, sweep.beta_hat - sweep.removed, rtol=1e-10, atol=1e-14)
    assert sweep.removed[-1] == 0.0 and sweep.removed[0] == sweep.beta_hat
    assert sweep.within_group is within_group


def test_sweep_within_group_stderr_matches_group_spread():
    rng = np.random.default_rng(22)
    gate, b, g = (rng.normal(size=(30, 6)) for _ in range(3))
    sweep = gamma_sweep_from_rollouts(gate, b, g, [0.0, 0.5], threshold=0.0)
    c = (gate >= 0).astype(float)
    per_group = [np.cov(b[p] * (1 - c[p]), g[p])[0, 1] for p in range(30)]
    assert sweep.beta_stderr == pytest.approx(np.std(per_group, ddof=1) / np.sqrt(30), rel=1e-10)
    assert sweep.removed_stderr[1] == pytest.approx(0.5 * sweep.beta_stderr)


@pytest.mark.parametrize("idx,seed", [(0, 31), (1, 32), (2, 33)])
def test_sweep_on_simulated_rollouts_matches_the_law(idx, seed):
    p_a, p_b, ac, af, w_b = PARAMS[idx]
    gs = gamma_star(p_a, p_b, ac)
    gammas = np.linspace(0, 1, 5)
    for k, gamma_model in enumerate((0.0, gs - 0.4, gs + 0.4, gs + 1.5)):
        a, b, g = sample_bias_model(p_a, p_b, ac, af, gamma_model, size=(4000, 16), rng=seed * 10 + k)
        gate = np.where(a > 0, 0.9, 0.1)  # a soft-scored gate that passes at 0.5
        sweep = gamma_sweep_from_rollouts(gate, b, g, gammas, w_b=w_b)
        beta = predicted_bias(p_a, p_b, ac, af, gamma_model, w_b)
        # The full-conditioning estimate is the law's beta at the rollouts' gamma.
        assert abs(sweep.beta_hat - beta) < 3 * sweep.beta_stderr
        # The knob sweep is (1 - knob) * beta.
        nonzero = gammas < 1
        z = (sweep.removed[nonzero] - (1 - gammas[nonzero]) * beta) / sweep.removed_stderr[nonzero]
        assert np.all(np.abs(z) < 3)
        # The fitted model recovers the world's parameters and the sign of beta.
        assert sweep.gamma_model_hat == pytest.approx(gamma_model, abs=0.15)
        assert sweep.alpha_c_hat == pytest.approx(ac, abs=0.1)
        assert sweep.gamma_star_hat == pytest.approx(gs, abs=0.1)
        assert abs(sweep.predicted_beta - beta) < 3 * sweep.beta_stderr
        if abs(beta) > 4 * sweep.beta_stderr:
            assert np.sign(sweep.beta_hat) == np.sign(beta)
            assert np.sign(sweep.gamma_model_hat - sweep.gamma_star_hat) == np.sign(beta / w_b)


def test_sweep_flat_input_and_json():
    a, b, g = sample_bias_model(0.6, 0.3, 1.0, 0.5, 0.2, size=50_000, rng=4)
    sweep = gamma_sweep_from_rollouts(a, b, g, 0.0)
    assert not sweep.within_group and sweep.n_groups is None and sweep.n_rollouts == 50_000
    beta = predicted_bias(0.6, 0.3, 1.0, 0.5, 0.2)
    assert abs(sweep.beta_hat - beta) < 3 * sweep.beta_stderr
    d = json.loads(json.dumps(sweep.to_dict()))
    assert d["gammas"] == [0.0]


def test_sweep_unidentified_fit_gives_nan_not_warnings():
    rng = np.random.default_rng(0)
    gate = np.ones((10, 4))  # the gate always passes: nothing to condition
    b = rng.integers(0, 2, size=(10, 4)).astype(float)
    g = rng.normal(size=(10, 4))
    sweep = gamma_sweep_from_rollouts(gate, b, g, [0.0, 1.0])
    assert sweep.beta_hat == 0.0
    assert np.isnan(sweep.gamma_model_hat) and np.isnan(sweep.gamma_star_hat)


def test_sweep_does_not_mutate_inputs():
    rng = np.random.default_rng(1)
    gate, b, g = (rng.normal(size=(5, 4)) for _ in range(3))
    copies = [x.copy() for x in (gate, b, g)]
    gamma_sweep_from_rollouts(gate, b, g, [0.0, 0.5])
    for x, y in zip((gate, b, g), copies):
        np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_probabilities_outside_unit_interval_are_rejected(bad):
    with pytest.raises(ValueError, match="p_a"):
        predicted_bias(bad, 0.3, 1.0, 0.5, 0.2)
    with pytest.raises(ValueError, match="p_b"):
        predicted_bias(0.3, bad, 1.0, 0.5, 0.2)
    with pytest.raises(ValueError, match="p_a"):
        gamma_star(bad, 0.3, 1.0)
    with pytest.raises(ValueError, match="p_b"):
        simulate_bias(0.3, bad, 1.0, 0.5, 0.2, n=10, rng=0)


def test_gamma_star_refuses_p_b_one():
    with pytest.raises(ValueError, match="p_b = 1"):
        gamma_star(0.5, 1.0, 1.0)
    with pytest.raises(ValueError, match="p_b = 1"):
        gamma_star(0.5, [0.2, 1.0], 1.0)
    np.testing.assert_allclose(gamma_star(0.5, [0.0, 0.5], 1.0), [0.5, 1.0])


def test_other_validation_errors():
    with pytest.raises(ValueError, match="finite"):
        predicted_bias(0.5, 0.5, float("inf"), 0.0, 0.0)
    with pytest.raises(TypeError, match="rng"):
        simulate_bias(0.5, 0.5, 1.0, 0.0, 0.0, n=10, rng=None)
    with pytest.raises(ValueError, match="n must be"):
        simulate_bias(0.5, 0.5, 1.0, 0.0, 0.0, n=1, rng=0)
    with pytest.raises(ValueError, match="noise_std"):
        sample_bias_model(0.5, 0.5, 1.0, 0.0, 0.0, size=3, noise_std=-1.0, rng=0)
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="same shape"):
        gamma_sweep_from_rollouts(x, x, np.zeros((4, 2)), [0.0])
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        gamma_sweep_from_rollouts(x, x, x, [1.5])
    with pytest.raises(ValueError, match="NaN"):
        gamma_sweep_from_rollouts(x, np.full((4, 3), np.nan), x, [0.0])
    with pytest.raises(ValueError, match="at least 2 groups"):
        gamma_sweep_from_rollouts(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros((1, 3)), [0.0])
    with pytest.raises(ValueError, match="within_group=True needs"):
        gamma_sweep_from_rollouts(np.zeros(6), np.zeros(6), np.zeros(6), [0.0], within_group=True)
