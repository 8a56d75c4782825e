"""Advantage estimators: loop references, closed forms, properties, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import multireward_grpo as mg
from multireward_grpo import (
    Conditioning,
    apply_conditioning,
    compute_advantage,
    compute_advantage_batch,
    compute_advantage_flat,
)
from reference import batch_reference, conditioned_group

MODES = ("na", "an", "single", "gdpo")
ATOL = 1e-10  # float64 vectorized vs loop: rounding differs by a few ulp only


def random_rewards(rng, P, m, R, *, ties=True):
    """Mixed groups: continuous channels, 0/1 channels and constant channels."""
    rewards = rng.normal(size=(P, m, R)) * rng.uniform(0.1, 5.0, size=R)
    if ties:
        rewards[:, :, 0] = rng.integers(0, 2, size=(P, m))  # a 0/1 gate with ties
        constant = rng.random((P, R)) < 0.2  # zero-variance channels
        rewards = np.where(constant[:, None, :], rewards[:, :1, :], rewards)
    return rewards


# --------------------------------------------------------------------------- loop references


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ddof,scale", [(0, True), (1, True), (0, False)])
def test_batch_matches_loop_reference(mode, ddof, scale):
    rng = np.random.default_rng(0)
    rewards = random_rewards(rng, 40, 6, 3)
    w = np.array([1.0, 0.7, 0.25])
    got = compute_advantage_batch(rewards, w, mode, ddof=ddof, scale_by_std=scale)
    want = batch_reference(rewards.tolist(), w.tolist(), mode, ddof=ddof, scale_by_std=scale)
    np.testing.assert_allclose(got, np.array(want), rtol=0, atol=ATOL)


@pytest.mark.parametrize("mode", MODES)
def test_single_group_matches_batch_row(mode):
    rng = np.random.default_rng(1)
    rewards = random_rewards(rng, 5, 8, 3)
    w = [1.0, 1.0, 0.5]
    for group in rewards:
        np.testing.assert_allclose(
            compute_advantage(group, w, mode=mode),
            compute_advantage_batch(group[None], w, mode)[0],
            rtol=0,
            atol=0,
        )


def test_seed_readme_example_closed_form():
    rewards = np.array([[1.0, 0.3, 1.0], [0.0, 0.9, 1.0], [1.0, 0.1, 0.0], [0.0, 0.5, 1.0]])
    w = np.array([1.0, 1.0, 0.5])
    z = (rewards - rewards.mean(0)) / (rewards.std(0) + 1e-8)
    s = rewards @ w
    np.testing.assert_allclose(compute_advantage(rewards, w, mode="na"), z @ w, atol=1e-12)
    np.testing.assert_allclose(
        compute_advantage(rewards, w, mode="an"), (s - s.mean()) / (s.std() + 1e-8), atol=1e-12
    )


def test_default_weights_are_ones_and_default_mode_is_na():
    rewards = np.random.default_rng(2).normal(size=(6, 4))
    np.testing.assert_array_equal(compute_advantage(rewards), compute_advantage(rewards, np.ones(4), "na"))


def test_gdpo_whitens_the_batch():
    rewards = np.random.default_rng(3).normal(size=(30, 8, 3))
    adv = compute_advantage_batch(rewards, [1, 2, 3], "gdpo")
    assert abs(adv.mean()) < 1e-12
    assert adv.std() == pytest.approx(1.0, abs=1e-6)  # eps=1e-8 shrinks by ~1e-8


# --------------------------------------------------------------------------- conventions


@pytest.mark.parametrize("mode", MODES)
def test_zero_variance_channel_contributes_exactly_zero(mode):
    # 0.1 * 8 / 8 != 0.1 in floating point: a naive mean leaves rounding noise
    # that eps would blow up to ~1e-9 instead of 0.
    rewards = np.full((1, 8, 3), 0.1)
    adv = compute_advantage_batch(rewards, [1.0, 1.0, 1.0], mode)
    assert np.all(adv == 0.0)
    varied = rewards.copy()
    varied[0, :, 1] = np.arange(8.0)
    na = compute_advantage_batch(varied, [1.0, 1.0, 1.0], "na")
    only_channel_1 = compute_advantage_batch(varied[..., 1:2], [1.0], "na")
    np.testing.assert_array_equal(na, only_channel_1)


def test_zero_variance_is_zero_even_with_eps_zero():
    rewards = np.ones((2, 4, 2))
    assert np.all(compute_advantage_batch(rewards, None, "na", eps=0.0) == 0)
    assert np.all(compute_advantage_batch(rewards, None, "an", eps=0.0) == 0)


@pytest.mark.parametrize("mode", MODES)
def test_one_rollout_groups_get_zero(mode):
    rewards = np.array([[[0.3, 2.0]], [[1.0, -1.0]]])  # (P=2, m=1, R=2)
    assert np.all(compute_advantage_batch(rewards, None, mode) == 0)


def test_ddof_one_with_two_rollouts_and_ddof_larger_than_group():
    rewards = np.array([[[0.0], [2.0]]])
    # ddof=1: std = sqrt(2), centred values +-1
    np.testing.assert_allclose(
        compute_advantage_batch(rewards, None, "na", ddof=1)[0], [-1 / (np.sqrt(2) + 1e-8), 1 / (np.sqrt(2) + 1e-8)]
    )
    assert np.all(compute_advantage_batch(rewards, None, "na", ddof=2) == 0)


def test_scale_by_std_false_is_plain_centring():
    rewards = np.random.default_rng(4).normal(size=(5, 6, 2))
    w = np.array([2.0, 0.5])
    got = compute_advantage_batch(rewards, w, "na", scale_by_std=False)
    want = ((rewards - rewards.mean(axis=1, keepdims=True)) * w).sum(-1)
    np.testing.assert_allclose(got, want, atol=1e-12)
    got_an = compute_advantage_batch(rewards, w, "an", scale_by_std=False)
    s = rewards @ w
    np.testing.assert_allclose(got_an, s - s.mean(axis=1, keepdims=True), atol=1e-12)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(5)
    rewards = random_rewards(rng, 6, 5, 3)
    rewards[0, 1, 2] = np.nan
    before = rewards.copy()
    w = np.array([1.0, 1.0, 0.5])
    for mode in MODES:
        compute_advantage_batch(rewards, w, mode, nan_policy="omit", conditioning=[(0, 1), (0, 2, "subgroup")])
    apply_conditioning(rewards, (0, 1))
    np.testing.assert_array_equal(rewards, before)
    np.testing.assert_array_equal(w, [1.0, 1.0, 0.5])


def test_dtype_and_list_inputs():
    rewards32 = np.random.default_rng(6).normal(size=(3, 4, 2)).astype(np.float32)
    for mode in MODES:
        assert compute_advantage_batch(rewards32, None, mode).dtype == np.float32
    ints = [[1, 0], [0, 1], [1, 1]]
    out = compute_advantage(ints, [1, 1])
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, compute_advantage(np.array(ints, dtype=float), [1.0, 1.0]))


# --------------------------------------------------------------------------- NaN policy


def test_nan_raise_names_the_position():
    rewards = np.zeros((3, 4, 2))
    rewards[2, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"group 2, rollout 1, channel 0.*nan_policy='omit'"):
        compute_advantage_batch(rewards)
    with pytest.raises(ValueError, match=r"at rollout 1, channel 0"):
        compute_advantage(rewards[2])


def test_inf_is_always_an_error():
    rewards = np.zeros((2, 3, 2))
    rewards[1, 2, 1] = np.inf
    for policy in ("raise", "omit", "propagate"):
        with pytest.raises(ValueError, match="infinite value at group 1, rollout 2, channel 1"):
            compute_advantage_batch(rewards, nan_policy=policy)


def test_nan_propagate_poisons_only_its_group():
    rng = np.random.default_rng(7)
    rewards = rng.normal(size=(4, 5, 2))
    rewards[1, 3, 1] = np.nan
    for mode in ("na", "an"):
        adv = compute_advantage_batch(rewards, None, mode, nan_policy="propagate")
        assert np.all(np.isnan(adv[1]))
        clean = np.delete(np.arange(4), 1)
        np.testing.assert_allclose(adv[clean], compute_advantage_batch(rewards[clean], None, mode))


def test_nan_omit_matches_reference_on_observed_values():
    rng = np.random.default_rng(8)
    rewards = rng.normal(size=(1, 6, 2))
    rewards[0, 2, 1] = np.nan
    w = np.array([1.0, 2.0])
    na = compute_advantage_batch(rewards, w, "na", nan_policy="omit")[0]
    z0 = compute_advantage(rewards[0, :, :1], [1.0])
    keep = [0, 1, 3, 4, 5]
    z1 = np.zeros(6)
    z1[keep] = compute_advantage(rewards[0, keep, 1:], [1.0])
    np.testing.assert_allclose(na, w[0] * z0 + w[1] * z1, atol=1e-12)
    an = compute_advantage_batch(rewards, w, "an", nan_policy="omit")[0]
    want = np.zeros(6)
    want[keep] = compute_advantage(rewards[0, keep], w, "an")
    np.testing.assert_allclose(an, want, atol=1e-12)


def test_nan_in_zero_weight_channel_does_not_drop_rollout_under_an():
    rewards = np.random.default_rng(9).normal(size=(1, 5, 2))
    rewards[0, 0, 1] = np.nan
    got = compute_advantage_batch(rewards, [1.0, 0.0], "an", nan_policy="omit")
    np.testing.assert_allclose(got[0], compute_advantage(rewards[0, :, :1], [1.0], "an"), atol=1e-12)


# --------------------------------------------------------------------------- ragged groups


@pytest.mark.parametrize("mode", MODES)
def test_flat_ragged_matches_loop_reference(mode):
    rng = np.random.default_rng(10)
    sizes = [1, 3, 7, 2, 5]
    groups = [random_rewards(rng, 1, s, 3)[0] for s in sizes]
    rows = [(g, j, r) for g, grp in enumerate(groups) for j, r in enumerate(grp)]
    order = rng.permutation(len(rows))
    ids = np.array([rows[i][0] for i in order]) * 7 + 3  # arbitrary non-contiguous labels
    rewards = np.array([rows[i][2] for i in order])
    w = [1.0, 0.5, 2.0]
    got = compute_advantage_flat(rewards, ids, w, mode)
    ref_groups = batch_reference_ragged(groups, w, mode)
    want = np.array([ref_groups[rows[i][0]][rows[i][1]] for i in order])
    np.testing.assert_allclose(got, want, atol=ATOL)


def batch_reference_ragged(groups, w, mode):
    if mode != "gdpo":
        return [batch_reference([g.tolist()], w, mode)[0] for g in groups]
    na = [batch_reference([g.tolist()], w, "na")[0] for g in groups]
    flat = np.concatenate(na)
    white = (flat - flat.mean()) / (flat.std() + 1e-8)
    return np.split(white, np.cumsum([len(g) for g in groups])[:-1])


def test_flat_equal_contiguous_groups_equal_batch_and_string_ids():
    rewards = np.random.default_rng(11).normal(size=(12, 4, 3))
    flat = rewards.reshape(-1, 3)
    ids = np.repeat([f"uid-{i}" for i in range(12)], 4)
    for mode in MODES:
        np.testing.assert_allclose(
            compute_advantage_flat(flat, ids, None, mode),
            compute_advantage_batch(rewards, None, mode).reshape(-1),
            rtol=0,
            atol=1e-12,
        )


def test_flat_nan_message_names_rollout_row():
    rewards = np.zeros((5, 2))
    rewards[3, 1] = np.nan
    with pytest.raises(ValueError, match="rollout 3, channel 1"):
        compute_advantage_flat(rewards, [0, 0, 1, 1, 1])


# --------------------------------------------------------------------------- properties (hypothesis)

# Values on a 0.01 grid: distinct values stay distinct after the affine maps
# below, so a property failure is a bug and not rounding of near-ties.
finite = st.integers(-100_000, 100_000).map(lambda k: k / 100)
groups = hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(2, 9), st.integers(1, 4)), elements=finite)


def _weights(n):
    return hnp.arrays(np.float64, n, elements=st.floats(0.05, 5.0))


@settings(max_examples=60, deadline=None)
@given(groups, st.data())
def test_na_invariant_to_positive_affine_map_of_one_channel(rewards, data):
    w = data.draw(_weights(rewards.shape[-1]))
    ch = data.draw(st.integers(0, rewards.shape[-1] - 1))
    a = data.draw(st.floats(0.1, 10.0))
    b = data.draw(st.floats(-100.0, 100.0))
    mapped = rewards.copy()
    mapped[..., ch] = a * mapped[..., ch] + b
    # eps makes the map exact only up to eps/std; compare with eps = 0.
    base = compute_advantage_batch(rewards, w, "na", eps=0.0)
    np.testing.assert_allclose(compute_advantage_batch(mapped, w, "na", eps=0.0), base, atol=1e-6 * (1 + np.abs(base).max()))


@settings(max_examples=60, deadline=None)
@given(groups, st.data())
def test_an_invariant_to_positive_affine_map_of_weighted_sum(rewards, data):
    w = data.draw(_weights(rewards.shape[-1]))
    a = data.draw(st.floats(0.1, 10.0))
    b = data.draw(st.floats(-100.0, 100.0))
    # scaling every channel by a and shifting every channel by b/sum(w) maps s -> a s + b
    mapped = a * rewards + b / w.sum()
    for scalar in (rewards @ w, mapped @ w):
        spread = np.ptp(scalar, axis=1)
        if np.any((spread > 0) & (spread < 1e-6 * (1 + np.abs(scalar).max()))):
            return  # a near-tie that rounding can turn into an exact tie, or an exact tie into a near-tie
    base = compute_advantage_batch(rewards, w, "an", eps=0.0)
    np.testing.assert_allclose(compute_advantage_batch(mapped, w, "an", eps=0.0), base, atol=1e-6 * (1 + np.abs(base).max()))


@settings(max_examples=60, deadline=None)
@given(groups, st.data(), st.sampled_from(MODES))
def test_group_sums_are_zero_and_permutation_equivariant(rewards, data, mode):
    w = data.draw(_weights(rewards.shape[-1]))
    adv = compute_advantage_batch(rewards, w, mode)
    scale = 1 + np.abs(adv).max()
    if mode == "gdpo":
        assert abs(adv.sum()) < 1e-8 * scale * adv.size
    else:
        assert np.all(np.abs(adv.sum(axis=1)) < 1e-8 * scale * adv.shape[1])
    perm = np.array(data.draw(st.permutations(range(rewards.shape[1]))))
    np.testing.assert_allclose(
        compute_advantage_batch(rewards[:, perm], w, mode), adv[:, perm], atol=1e-9 * scale
    )


@settings(max_examples=40, deadline=None)
@given(groups, st.data())
def test_conditioning_zero_fill_semantics(rewards, data):
    if rewards.shape[-1] < 2:
        return
    gate, target = 0, rewards.shape[-1] - 1
    gamma = data.draw(st.sampled_from([0.0, 0.3, 1.0]))
    out = apply_conditioning(rewards, Conditioning(gate, target, gamma=gamma, threshold=0.0))
    passes = rewards[..., gate] >= 0.0
    np.testing.assert_array_equal(out[..., target], np.where(passes, rewards[..., target], gamma * rewards[..., target]))
    untouched = [c for c in range(rewards.shape[-1]) if c != target]
    np.testing.assert_array_equal(out[..., untouched], rewards[..., untouched])


# --------------------------------------------------------------------------- conditioning


@pytest.mark.parametrize("method,gamma", [("zero_fill", 0.0), ("zero_fill", 0.4), ("subgroup", 0.0)])
def test_conditioning_matches_loop_reference(method, gamma):
    rng = np.random.default_rng(12)
    rewards = random_rewards(rng, 30, 6, 3)
    rule = Conditioning(0, 1, method, gamma=gamma)
    got = apply_conditioning(rewards, rule)
    want = np.array([conditioned_group(g.tolist(), 0, 1, method=method, gamma=gamma) for g in rewards])
    np.testing.assert_allclose(got, want, atol=1e-12)
    adv = compute_advantage_batch(rewards, [1, 1, 1], "na", conditioning=[rule])
    np.testing.assert_array_equal(adv, compute_advantage_batch(got, [1, 1, 1], "na"))


def test_subgroup_constant_passers_give_exact_zero_and_few_passers_degenerate():
    group = np.array([[1.0, 0.1], [1.0, 0.1], [1.0, 0.1], [0.0, 0.9]])
    out = apply_conditioning(group, (0, 1, "subgroup"))
    assert np.all(out[:, 1] == 0.0)
    one_passer = np.array([[1.0, 0.3], [0.0, 0.1], [0.0, 0.9]])
    assert np.all(apply_conditioning(one_passer, (0, 1, "subgroup"))[:, 1] == 0.0)
    two = np.array([[1.0, 0.2], [1.0, 0.6], [0.0, 0.9]])
    np.testing.assert_allclose(apply_conditioning(two, (0, 1, "subgroup"))[:, 1], [-0.2, 0.2, 0.0], atol=1e-15)


def test_conditioning_threshold_rule_and_chain():
    group = np.array([[0.49, 1.0, 1.0], [0.5, 1.0, 1.0], [0.9, 0.0, 1.0]])
    out = apply_conditioning(group, [(0, 1), (1, 2)])
    np.testing.assert_array_equal(out[:, 1], [0.0, 1.0, 0.0])  # 0.49 fails, 0.5 passes
    np.testing.assert_array_equal(out[:, 2], [0.0, 1.0, 0.0])  # gated by the gated channel 1
    assert np.all(apply_conditioning(group, Conditioning(0, 1, threshold=0.95))[:, 1] == 0)


def test_conditioning_spec_forms_agree():
    rewards = np.random.default_rng(13).random((4, 5, 3))
    want = compute_advantage_batch(rewards, None, "na", conditioning=[Conditioning(0, 2, "subgroup")])
    for spec in [(0, 2, "subgroup"), [(0, 2, "subgroup")], {"gate": 0, "target": 2, "method": "subgroup"}, Conditioning(0, 2, "subgroup")]:
        np.testing.assert_array_equal(compute_advantage_batch(rewards, None, "na", conditioning=spec), want)


def test_nan_gate_under_omit_drops_only_the_target():
    rewards = np.random.default_rng(14).random((1, 6, 2))
    rewards[0, :, 0] = [1, 0, 1, 1, 0, 1]
    rewards[0, 2, 0] = np.nan
    adv = compute_advantage_batch(rewards, [1.0, 1.0], "na", conditioning=(0, 1), nan_policy="omit")
    keep = [0, 1, 3, 4, 5]
    gated = apply_conditioning(rewards[0, keep], (0, 1))
    want = np.zeros(6)
    want[keep] = compute_advantage(gated, [1.0, 1.0])
    # rollout 2 has no observed channel left: 0
    np.testing.assert_allclose(adv[0], want, atol=1e-12)


# --------------------------------------------------------------------------- registry


def test_registry_lists_rejects_duplicates_and_unknown():
    names = mg.list_estimators()
    assert {"an", "na", "single", "gdpo"} <= set(names)
    with pytest.raises(ValueError, match="already registered.*an, gdpo, na, single"):
        mg.register_estimator("na", lambda r, w, *, mask, options: r[..., 0])
    with pytest.raises(ValueError, match="unknown mode 'nope'; valid modes: an, gdpo, na, single"):
        compute_advantage(np.ones((3, 2)), mode="nope")
    with pytest.raises(ValueError, match="built-in"):
        mg.unregister_estimator("an")


def test_custom_estimator_gets_the_same_signature_everywhere():
    @mg.register_estimator("max_channel", description="z of the max channel")
    def max_channel(rewards, w, *, mask, options):
        scalar = rewards.max(axis=-1)[..., None]
        return mg.group_standardize(scalar, options=options)[..., 0]

    try:
        rewards = np.random.default_rng(15).normal(size=(3, 4, 2))
        batch = compute_advantage_batch(rewards, None, "max_channel")
        flat = compute_advantage_flat(rewards.reshape(-1, 2), np.repeat(np.arange(3), 4), None, "max_channel")
        np.testing.assert_array_equal(batch.reshape(-1), flat)
        assert "max_channel" in mg.list_estimators()
    finally:
        mg.unregister_estimator("max_channel")

    mg.register_estimator("bad_shape", lambda r, w, *, mask, options: r)
    try:
        with pytest.raises(ValueError, match="returned shape .* expected"):
            compute_advantage_batch(np.ones((2, 3, 2)), None, "bad_shape")
    finally:
        mg.unregister_estimator("bad_shape")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: compute_advantage(np.ones(4)), r"must be \(m, R\); got shape \(4,\).*rewards\[\.\.\., None\]"),
        (lambda: compute_advantage_batch(np.ones((4, 3))), r"must be \(P, m, R\); got shape \(4, 3\)"),
        (lambda: compute_advantage(np.ones((4, 3)), [1.0, 1.0]), "rewards has 3 channels but weights has 2"),
        (lambda: compute_advantage(np.ones((4, 2)), [1.0, -1.0]), "weights must be >= 0"),
        (lambda: compute_advantage(np.ones((4, 2)), [1.0, np.nan]), "weights must be finite"),
        (lambda: compute_advantage(np.ones((4, 2)), [0.0, 0.0]), "weights are all zero"),
        (lambda: compute_advantage(np.ones((4, 2)), [[1.0, 1.0]]), "weights must be a 1-D"),
        (lambda: compute_advantage(np.ones((0, 2))), "empty along m"),
        (lambda: compute_advantage_batch(np.ones((0, 3, 2))), "empty along P"),
        (lambda: compute_advantage(np.ones((3, 2)), mode="bogus"), "unknown mode"),
        (lambda: compute_advantage(np.ones((3, 2)), nan_policy="skip"), "nan_policy must be one of"),
        (lambda: compute_advantage(np.ones((3, 2)), ddof=-1), "ddof must be >= 0"),
        (lambda: compute_advantage(np.ones((3, 2)), eps=-1.0), "eps must be >= 0"),
        (lambda: compute_advantage(np.ones((3, 2)), conditioning=(0, 5)), "target=5 but rewards have 2 channels"),
        (lambda: compute_advantage(np.ones((3, 2)), conditioning=(1, 1)), "must be different channels"),
        (lambda: Conditioning(0, 1, "drop"), "unknown conditioning method"),
        (lambda: Conditioning(0, 1, gamma=1.5), r"gamma must be in \[0, 1\]"),
        (lambda: Conditioning(0, 1, "subgroup", gamma=0.5), "zero_fill' only"),
        (lambda: compute_advantage_flat(np.ones((4, 2)), [0, 0, 1]), "4 rows but group_ids has 3"),
        (lambda: compute_advantage_flat(np.ones((4, 2)), [[0, 0, 1, 1]]), "group_ids must be 1-D"),
    ],
)
def test_bad_input_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: compute_advantage(np.array([["a", "b"]])), "real numeric array"),
        (lambda: compute_advantage([[1.0, 2.0], [3.0]]), "could not be read"),
        (lambda: compute_advantage(np.ones((3, 2)), conditioning=b"0:1"), "conditioning must be"),
        (lambda: compute_advantage(np.ones((3, 2)), ddof=0.5), "ddof must be an int"),
        (lambda: compute_advantage_flat(np.ones((2, 2)), [0.5, 1.5]), "integers or strings"),
        (lambda: compute_advantage(np.ones((3, 2)), conditioning=(0.0, 1)), "channel index"),
    ],
)
def test_bad_input_type_errors(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_apply_conditioning_positional_gate_form():
    group = np.array([[1.0, 0.2, 1.0], [0.0, 0.6, 1.0], [1.0, 0.9, 0.0], [0.0, 0.1, 1.0]])
    np.testing.assert_array_equal(apply_conditioning(group, 0, 1), apply_conditioning(group, (0, 1)))
    np.testing.assert_array_equal(apply_conditioning(group, 0, 1, "subgroup"), apply_conditioning(group, (0, 1, "subgroup")))
    np.testing.assert_array_equal(apply_conditioning(group, 0, 1, "none"), group)
    with pytest.raises(TypeError, match="needs cond_idx"):
        apply_conditioning(group, 0)


def test_is_batch_level():
    assert mg.is_batch_level("gdpo") and not mg.is_batch_level("na")


def test_conditioning_text_form_is_the_same_rule_everywhere():
    """'GATE:TARGET[:METHOD[:GAMMA]]' parses to the Conditioning the tuple and dict forms give."""
    from multireward_grpo.advantage import parse_conditioning
    from multireward_grpo.train.config import parse_conditioning_rule

    assert parse_conditioning("0:1") == parse_conditioning((0, 1)) == (Conditioning(0, 1),)
    assert parse_conditioning(["0:2:subgroup", "1:2:zero_fill:0.3"]) == (
        Conditioning(0, 2, "subgroup"), Conditioning(1, 2, gamma=0.3))
    assert parse_conditioning_rule([0, 1], n_channels=2) == Conditioning(0, 1)
    rewards = np.array([[1.0, 0.2], [0.0, 0.9], [1.0, 0.4], [0.0, 0.1]])
    np.testing.assert_array_equal(compute_advantage(rewards, conditioning="0:1"),
                                  compute_advantage(rewards, conditioning=[(0, 1)]))
    with pytest.raises(ValueError, match=r"conditioning rule '0:2': Conditioning.target=2 but rewards have 2"):
        parse_conditioning("0:2", n_channels=2)
