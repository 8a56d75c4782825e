"""Channel diagnostics: a plain-loop reference, closed forms, NaN groups, numpy vs torch."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from multireward_grpo.advantage import apply_conditioning, compute_advantage_batch
from multireward_grpo.analysis.diagnostics import channel_diagnostics
from multireward_grpo.analysis.influence import oracle_influence, realized_influence

W3 = np.array([1.0, 2.0, 0.5])


# --------------------------------------------------------------------------- a plain-loop reference


def _observed(values):
    return [j for j, v in enumerate(values) if not math.isnan(v)]


def _ref_z(values, ddof, eps):
    """z over the observed entries (None elsewhere), and whether the channel has no contrast."""
    obs = _observed(values)
    vals = [values[j] for j in obs]
    if len(vals) - ddof <= 0 or all(v == vals[0] for v in vals):
        return [0.0 if j in obs else None for j in range(len(values))], True
    mu = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - ddof))
    return [(values[j] - mu) / (sd + eps) if j in obs else None for j in range(len(values))], False


def _ref_cov(adv, z, ddof):
    obs = [j for j, v in enumerate(z) if v is not None]
    if len(obs) - ddof <= 0:
        return 0.0
    a_bar = sum(adv[j] for j in obs) / len(obs)
    z_bar = sum(z[j] for j in obs) / len(obs)
    return sum((adv[j] - a_bar) * (z[j] - z_bar) for j in obs) / (len(obs) - ddof)


def _ref_corr(zk, zl):
    both = [j for j in range(len(zk)) if zk[j] is not None and zl[j] is not None]
    if len(both) < 2:
        return None
    nk = sum(zk[j] ** 2 for j in both)
    nl = sum(zl[j] ** 2 for j in both)
    if nk == 0 or nl == 0:
        return None
    return sum(zk[j] * zl[j] for j in both) / math.sqrt(nk * nl)


def loop_reference(rewards, adv, w, *, seen=None, ddof=0, eps=1e-8, propagate=False):
    """The module docstring's definitions, one group, channel and pair at a time."""
    seen = rewards if seen is None else seen
    B, _, R = rewards.shape
    zero = [0] * R
    infl_sum, used = [0.0] * R, 0
    corr_sum = [[0.0] * R for _ in range(R)]
    counts = [[0] * R for _ in range(R)]
    for b in range(B):
        for c in range(R):
            col = [float(v) for v in rewards[b, :, c]]
            if not (propagate and any(math.isnan(v) for v in col)):
                zero[c] += _ref_z(col, ddof, eps)[1]
        if propagate and (np.isnan(rewards[b]).any() or np.isnan(seen[b]).any() or np.isnan(adv[b]).any()):
            continue
        used += 1
        for c in range(R):
            z, _ = _ref_z([float(v) for v in rewards[b, :, c]], ddof, eps)
            infl_sum[c] += _ref_cov([float(a) for a in adv[b]], z, ddof)
        zs = [_ref_z([float(v) for v in seen[b, :, c]], ddof, 0.0) for c in range(R)]
        for k in range(R):
            for l in range(R):
                if zs[k][1] or zs[l][1]:
                    continue
                value = _ref_corr(zs[k][0], zs[l][0])
                if value is not None:
                    corr_sum[k][l] += value
                    counts[k][l] += 1
    corr = np.array([[corr_sum[k][l] / counts[k][l] if counts[k][l] else np.nan for l in range(R)] for k in range(R)])
    noise = sum(w[k] * w[l] * corr[k, l] for k in range(R) for l in range(R) if counts[k][l])
    return {
        "zero_var_frac": np.array(zero) / B,
        "influence": np.array(infl_sum) / used if used else np.full(R, np.nan),
        "correlation": corr,
        "correlation_groups": np.array(counts),
        "noise_factor": noise,
        "nan_groups": B - used,
    }


def _assert_matches(result, ref, atol=1e-10):
    for key in ("zero_var_frac", "influence", "correlation", "noise_factor"):
        np.testing.assert_allclose(getattr(result, key), ref[key], rtol=1e-10, atol=atol, err_msg=key)
    np.testing.assert_array_equal(result.correlation_groups, ref["correlation_groups"])
    assert result.nan_groups == ref["nan_groups"]


def _levels(seed, shape, levels=3):
    """Small integer rewards, so constant channels and tied values are common."""
    return np.random.default_rng(seed).integers(0, levels, size=shape).astype(np.float64)


# --------------------------------------------------------------------------- against the loop


@pytest.mark.parametrize("mode", ["na", "an", "gdpo", "single"])
@pytest.mark.parametrize("ddof", [0, 1])
def test_matches_loop_reference(mode, ddof):
    rewards = _levels(1, (40, 5, 3)) + np.random.default_rng(2).normal(0, 0.3, (40, 5, 3)) * (np.arange(40) % 2)[:, None, None]
    adv = compute_advantage_batch(rewards, W3, mode, ddof=ddof)
    result = channel_diagnostics(rewards, adv, W3, ddof=ddof)
    _assert_matches(result, loop_reference(rewards, adv, W3, ddof=ddof))
    assert result.zero_var_frac.max() > 0  # the data exercises the degenerate branch


@pytest.mark.parametrize("method", ["zero_fill", "subgroup"])
def test_conditioning_correlates_what_the_estimator_sees(method):
    rewards = _levels(3, (60, 6, 3), levels=2)
    rewards[..., 2] += np.random.default_rng(4).normal(0, 0.5, (60, 6))
    rules = [(0, 2, method)]
    adv = compute_advantage_batch(rewards, W3, "na", conditioning=rules)
    result = channel_diagnostics(rewards, adv, W3, conditioning=rules)
    seen = apply_conditioning(rewards, rules)
    _assert_matches(result, loop_reference(rewards, adv, W3, seen=seen))
    # Conditioned rewards given as such describe every statistic by them.
    already = channel_diagnostics(seen, adv, W3)
    np.testing.assert_allclose(already.correlation, result.correlation, rtol=1e-12)
    assert not np.allclose(already.influence, result.influence)  # influence is on the channels as scored


@pytest.mark.parametrize("mode", ["na", "an"])
def test_missing_rewards_under_omit(mode):
    rewards = _levels(5, (30, 6, 3)) + np.random.default_rng(6).normal(0, 0.2, (30, 6, 3))
    rng = np.random.default_rng(7)
    rewards[rng.random(rewards.shape) < 0.15] = np.nan
    rewards[0, :, 1] = np.nan  # a channel with no observed value in a group
    rewards[1, :5, 0] = np.nan  # one observed value: no contrast
    adv = compute_advantage_batch(rewards, W3, mode, nan_policy="omit", ddof=1)
    result = channel_diagnostics(rewards, adv, W3, nan_policy="omit", ddof=1)
    _assert_matches(result, loop_reference(rewards, adv, W3, ddof=1))
    assert result.nan_groups == 0


def test_propagate_leaves_nan_groups_out():
    rewards = np.random.default_rng(8).normal(size=(20, 5, 3))
    rewards[[2, 7, 11], 1, [0, 2, 1]] = np.nan
    adv = compute_advantage_batch(rewards, W3, "na", nan_policy="propagate")
    result = channel_diagnostics(rewards, adv, W3, nan_policy="propagate")
    _assert_matches(result, loop_reference(rewards, adv, W3, propagate=True))
    assert result.nan_groups == 3
    keep = np.setdiff1d(np.arange(20), [2, 7, 11])
    clean = channel_diagnostics(rewards[keep], adv[keep], W3)
    np.testing.assert_allclose(result.influence, clean.influence, rtol=1e-12)
    np.testing.assert_allclose(result.correlation, clean.correlation, rtol=1e-12)
    # A channel holding a NaN is not constant; the other channels of that group still count.
    rewards[2, :, 1] = 4.0
    again = channel_diagnostics(rewards, adv, W3, nan_policy="propagate")
    np.testing.assert_allclose(again.zero_var_frac, [0.0, 1 / 20, 0.0])


def test_zero_variance_share_matches_the_records_old_definition():
    """The trainer's ``zero_var_frac_{c}`` was ``all(group == group[0])`` per channel: unchanged without NaN."""
    rewards = _levels(9, (50, 4, 3), levels=2)
    old = np.mean(np.all(rewards == rewards[:, :1], axis=1), axis=0)
    result = channel_diagnostics(rewards, compute_advantage_batch(rewards, W3, "na"), W3)
    np.testing.assert_array_equal(result.zero_var_frac, old)


# --------------------------------------------------------------------------- closed forms


def _orthogonal_batch(n_groups=12):
    """Groups in which the channels are exactly uncorrelated (a 2x2 factorial, shuffled and scaled)."""
    rng = np.random.default_rng(10)
    design = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # columns orthogonal once centred
    groups = []
    for _ in range(n_groups):
        group = design[rng.permutation(4)] * rng.uniform(0.5, 3.0, 3) + rng.normal(0, 5, 3)
        groups.append(group)
    return np.stack(groups)


def test_orthogonal_channels_na_influence_is_the_weight():
    rewards = _orthogonal_batch()
    centred = rewards - rewards.mean(axis=1, keepdims=True)
    assert np.abs(np.einsum("bmk,bml->bkl", centred, centred)[:, [0, 0, 1], [1, 2, 2]]).max() < 1e-12
    adv = compute_advantage_batch(rewards, W3, "na", eps=0.0)
    result = channel_diagnostics(rewards, adv, W3, eps=0.0)
    np.testing.assert_allclose(result.correlation, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(result.influence, W3, rtol=1e-12)  # Prop 1: NA influence = sum_k w_k C_kl = w_l
    assert result.noise_factor == pytest.approx(float(np.sum(W3**2)), rel=1e-12)
    # With eps the exact value is w_l * mean_b sigma_bl^2 / (sigma_bl + eps)^2.
    eps = 0.05
    sigma = rewards.std(axis=1)  # (B, R), ddof 0
    with_eps = channel_diagnostics(rewards, compute_advantage_batch(rewards, W3, "na", eps=eps), W3, eps=eps)
    np.testing.assert_allclose(with_eps.influence, W3 * np.mean(sigma**2 / (sigma + eps) ** 2, axis=0), rtol=1e-12)
    np.testing.assert_allclose(with_eps.correlation, np.eye(3), atol=1e-12)  # eps plays no part in the correlation


def test_na_noise_factor_is_theorem3_mean_square_advantage():
    """Theorem 3: NA's ``(1/m) sum_j A_j^2 = w' Chat w`` exactly (ddof 0, eps 0, no degenerate group)."""
    rewards = np.random.default_rng(11).normal(size=(200, 6, 3)) @ np.array([[1, 0.6, 0], [0, 0.8, 0.3], [0, 0, 1]])
    adv = compute_advantage_batch(rewards, W3, "na", eps=0.0)
    result = channel_diagnostics(rewards, adv, W3, eps=0.0)
    assert result.noise_factor == pytest.approx(float(np.mean(adv**2)), rel=1e-12)
    assert np.all(result.correlation_groups == 200)


def test_independent_channels_at_large_m():
    """C = I: Chat -> I and w' Chat w -> sum w^2; tolerances are 5 standard errors of the pooled mean."""
    B, m = 40, 400
    rewards = np.random.default_rng(12).normal(size=(B, m, 3)) * np.array([1.0, 4.0, 0.2])
    result = channel_diagnostics(rewards, compute_advantage_batch(rewards, W3, "na"), W3)
    se = 1 / math.sqrt(B * m)
    off = result.correlation[~np.eye(3, dtype=bool)]
    assert np.abs(off).max() < 5 * se
    assert abs(result.noise_factor - np.sum(W3**2)) < 5 * se * 2 * (W3[0] * W3[1] + W3[0] * W3[2] + W3[1] * W3[2])


def test_an_influence_per_group_closed_form():
    """AN, one group: Cov(A, z_l) = sum_k w_k S_kl / ((sigma_s + eps)(sigma_l + eps)), S the ddof covariance."""
    rng = np.random.default_rng(13)
    for ddof, eps in [(0, 1e-8), (1, 1e-4), (1, 0.3)]:
        group = rng.normal(size=(7, 3)) * np.array([1.0, 2.0, 0.5])
        S = np.cov(group, rowvar=False, ddof=ddof)
        sigma_s = math.sqrt(W3 @ S @ W3)
        expected = (W3 @ S) / ((sigma_s + eps) * (np.sqrt(np.diag(S)) + eps))
        adv = compute_advantage_batch(group[None], W3, "an", ddof=ddof, eps=eps)
        result = channel_diagnostics(group[None], adv, W3, ddof=ddof, eps=eps)
        np.testing.assert_allclose(result.influence, expected, rtol=1e-10)


def test_an_and_na_influence_match_the_oracle_at_large_m():
    """Prop 1's population forms, within 0.03 (about 5 standard errors at B = 60, m = 300)."""
    Sigma = np.array([[1.0, 0.6, 0.0], [0.6, 4.0, -0.4], [0.0, -0.4, 0.25]])
    rewards = np.random.default_rng(14).multivariate_normal(np.zeros(3), Sigma, size=(60, 300))
    for mode in ("an", "na"):
        adv = compute_advantage_batch(rewards, W3, mode)
        result = channel_diagnostics(rewards, adv, W3)
        np.testing.assert_allclose(result.influence, oracle_influence(Sigma, W3, mode=mode), atol=0.03)


def test_influence_equals_realized_influence_at_ddof_0():
    rewards = _levels(15, (30, 5, 3)) + np.random.default_rng(16).normal(0, 0.1, (30, 5, 3))
    for mode in ("na", "an", "gdpo"):
        adv = compute_advantage_batch(rewards, W3, mode)
        expected = realized_influence(rewards, W3, advantages=adv).influence
        np.testing.assert_allclose(channel_diagnostics(rewards, adv, W3).influence, expected, rtol=1e-12)


def test_never_varying_channel():
    rewards = np.random.default_rng(17).normal(size=(10, 4, 3))
    rewards[..., 1] = 1.0
    result = channel_diagnostics(rewards, compute_advantage_batch(rewards, W3, "na"), W3)
    assert result.zero_var_frac.tolist() == [0.0, 1.0, 0.0]
    assert result.degenerate_groups.tolist() == [0, 10, 0]
    assert np.isnan(result.correlation[1]).all() and np.isnan(result.correlation[:, 1]).all()
    assert result.influence[1] == 0.0
    defined = result.correlation[np.ix_([0, 2], [0, 2])]
    assert result.noise_factor == pytest.approx(W3[[0, 2]] @ defined @ W3[[0, 2]], rel=1e-14)


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_scale_free(scale):
    rewards = np.random.default_rng(18).normal(size=(15, 5, 3))
    base = channel_diagnostics(rewards, compute_advantage_batch(rewards, W3, "na"), W3)
    scaled = rewards * scale
    result = channel_diagnostics(scaled, compute_advantage_batch(scaled, W3, "na", eps=0.0), W3, eps=0.0)
    np.testing.assert_allclose(result.correlation, base.correlation, rtol=1e-12)
    np.testing.assert_allclose(result.influence, base.influence, rtol=1e-6)
    np.testing.assert_array_equal(result.zero_var_frac, base.zero_var_frac)


def test_correlation_exact_when_sigma_is_far_below_eps():
    """z**2 underflows with eps = 1e-8 at a 1e-170 scale; the correlation is then taken without eps."""
    rewards = np.random.default_rng(22).normal(size=(15, 5, 3))
    base = channel_diagnostics(rewards, compute_advantage_batch(rewards, W3, "na"), W3)
    tiny = rewards * 1e-170
    result = channel_diagnostics(tiny, compute_advantage_batch(tiny, W3, "na"), W3)
    np.testing.assert_allclose(result.correlation, base.correlation, rtol=1e-12)
    np.testing.assert_array_equal(result.correlation_groups, base.correlation_groups)
    for method in ("zero_fill", "subgroup"):  # the conditioned channels take the same path (a sign gate: scale-free)
        rules = [{"gate": 0, "target": 1, "method": method, "threshold": 0.0}]
        expected = channel_diagnostics(rewards, compute_advantage_batch(rewards, W3, "na", conditioning=rules), W3,
                                       conditioning=rules, eps=0.0)
        conditioned = channel_diagnostics(tiny, compute_advantage_batch(tiny, W3, "na", conditioning=rules), W3,
                                          conditioning=rules)
        np.testing.assert_allclose(conditioned.correlation, expected.correlation, rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------- kinds and contract


@pytest.mark.parametrize("nan_policy", ["raise", "omit", "propagate"])
def test_torch_equals_numpy(nan_policy):
    torch = pytest.importorskip("torch")
    rewards = _levels(19, (25, 6, 3)) + np.random.default_rng(20).normal(0, 0.3, (25, 6, 3))
    if nan_policy != "raise":
        rewards[3, 2, 1] = rewards[9, 0, 0] = np.nan
    rules = [(0, 1, "subgroup")]
    adv = compute_advantage_batch(rewards, W3, "na", conditioning=rules, nan_policy=nan_policy, ddof=1)
    kw = {"conditioning": rules, "nan_policy": nan_policy, "ddof": 1}
    ref = channel_diagnostics(rewards, adv, W3, **kw)
    as_torch = channel_diagnostics(torch.tensor(rewards), torch.tensor(adv), torch.tensor(W3), **kw)
    single = channel_diagnostics(torch.tensor(rewards, dtype=torch.float32), torch.tensor(adv, dtype=torch.float32), W3, **kw)
    mixed = channel_diagnostics(torch.tensor(rewards), adv, W3, **kw)
    for key in ("zero_var_frac", "influence", "correlation", "correlation_groups", "noise_factor"):
        np.testing.assert_allclose(getattr(as_torch, key), getattr(ref, key), rtol=1e-12, atol=1e-14, err_msg=key)
        np.testing.assert_allclose(getattr(mixed, key), getattr(ref, key), rtol=1e-12, atol=1e-14, err_msg=key)
        np.testing.assert_allclose(getattr(single, key), getattr(ref, key), rtol=1e-5, atol=1e-6, err_msg=key)
        assert isinstance(getattr(as_torch, key), (np.ndarray, float))


def test_result_is_frozen_and_inputs_untouched():
    rewards = np.random.default_rng(21).normal(size=(6, 4, 3))
    rewards[0, 0, 0] = np.nan
    adv = compute_advantage_batch(rewards, W3, "na", nan_policy="omit")
    before = (rewards.copy(), adv.copy())
    result = channel_diagnostics(rewards, adv, W3, conditioning=[(0, 1)], nan_policy="omit")
    np.testing.assert_array_equal(rewards, before[0])
    np.testing.assert_array_equal(adv, before[1])
    with pytest.raises(ValueError):
        result.influence[0] = 1.0
    with pytest.raises(AttributeError):
        result.noise_factor = 0.0


@pytest.mark.parametrize("kwargs, error, match", [
    ({"advantages": np.zeros((3, 4))}, ValueError, r"advantages has shape \(3, 4\) but rewards is"),
    ({"w": [1.0, 1.0]}, ValueError, "rewards has 3 channels but weights has 2"),
    ({"w": [1.0, -1.0, 1.0]}, ValueError, "weights must be >= 0"),
    ({"nan_policy": "omitt"}, ValueError, "did you mean 'omit'"),
    ({"ddof": -1}, ValueError, "ddof must be >= 0"),
    ({"eps": "abc"}, TypeError, "eps must be a number"),
    ({"conditioning": [(0, 5)]}, ValueError, "Conditioning.target=5 but rewards have 3 channels"),
    ({"rewards": np.zeros((4, 3))}, ValueError, r"rewards must be \(B, m, R\)"),
    ({"rewards": "abc"}, TypeError, "rewards must be a real numeric array"),
])
def test_validation(kwargs, error, match):
    call = {"rewards": np.zeros((4, 3, 3)), "advantages": np.zeros((4, 3)), "w": W3, **kwargs}
    with pytest.raises(error, match=match):
        channel_diagnostics(call.pop("rewards"), call.pop("advantages"), **call)


def test_missing_values_are_refused_where_the_policy_says_so():
    rewards = np.zeros((2, 3, 3))
    rewards[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="nan_policy='omit'"):
        channel_diagnostics(rewards, np.zeros((2, 3)), W3)
    nan_advantage = np.zeros((2, 3))
    nan_advantage[1, 2] = np.nan
    with pytest.raises(ValueError, match="group 1, rollout 2 is not"):
        channel_diagnostics(rewards, nan_advantage, W3, nan_policy="omit")
    bad = np.zeros((2, 3))
    bad[0, 1] = np.inf
    with pytest.raises(ValueError, match="advantages must be finite; group 0, rollout 1"):
        channel_diagnostics(np.zeros((2, 3, 3)), bad, W3, nan_policy="propagate")
    rewards[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match="infinite value"):
        channel_diagnostics(rewards, np.zeros((2, 3)), W3, nan_policy="omit")


# --------------------------------------------------------------------------- our trainer's records


def test_trainer_history_records_use_the_shared_diagnostics(tmp_path):
    """One step of the tiny trainer: the record's keys are channel_diagnostics of that step's rewards."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from tiny_lm import make_model, make_tokenizer
    from trainer_helpers import PROMPTS, e_reward, tiny_config

    from multireward_grpo import GRPOTrainer

    def reward(completion, prompt):
        share, short = e_reward(completion, prompt)
        return (share, float("nan") if len(completion) % 3 == 0 else short, 1.0)  # some rewards missing

    tokenizer = make_tokenizer()
    config = tiny_config(tmp_path / "run", n_steps=1, weights=(1.0, 0.5, 1.0), conditioning=("1:0",),
                         nan_policy="omit", sample_every=0)
    trainer = GRPOTrainer(config, reward, PROMPTS, model=make_model(tokenizer), tokenizer=tokenizer)
    seen = {}
    advantages_of = trainer._advantages

    def spy(rewards):
        seen["rewards"], seen["advantages"] = rewards.copy(), advantages_of(rewards)
        return seen["advantages"]

    trainer._advantages = spy
    record = trainer.train()[0]
    grouped = seen["rewards"].reshape(config.batch_prompts, config.m, 3)
    expected = channel_diagnostics(grouped, seen["advantages"].reshape(config.batch_prompts, config.m).numpy(),
                                   config.weights, conditioning=[(1, 0)], nan_policy="omit")
    for c in range(3):
        assert record[f"zero_var_frac_{c}"] == pytest.approx(float(expected.zero_var_frac[c]), abs=1e-15)
        assert record[f"influence_{c}"] == pytest.approx(float(expected.influence[c]), rel=1e-12, abs=1e-15)
    assert record["noise_factor"] == pytest.approx(expected.noise_factor, rel=1e-12)
    assert record["zero_var_frac_2"] == 1.0  # the constant channel
    assert np.isnan(grouped[..., 1]).any()
    old = np.mean(np.all(grouped == grouped[:, :1], axis=1), axis=0)
    for c in (0, 2):  # channels without missing rewards: the key means what it always did
        assert record[f"zero_var_frac_{c}"] == old[c]
    lines = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert {"influence_0", "influence_1", "noise_factor"} <= set(lines[0])
