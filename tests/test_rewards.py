"""Reward protocol validation and the math reward channels."""

from __future__ import annotations

import dataclasses
import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multireward_grpo.rewards import (
    CheckedRewardFunction,
    MathRewardFunction,
    RewardConfig,
    RewardFunction,
    RewardFunctionError,
    as_reward_function,
    count_tokens,
    reward_format,
    reward_length,
    score_generation,
)

# =========================================================================== length


def words(n: int) -> str:
    return " ".join(["w"] * n)


def test_length_is_one_at_target_and_zero_when_empty():
    assert reward_length(words(200)) == 1.0
    assert reward_length(words(7), 7) == 1.0
    assert reward_length("") == 0.0
    assert reward_length("   \n ") == 0.0


@pytest.mark.parametrize("n", [1, 3, 50, 100, 150, 199, 201, 400, 1000])
def test_length_closed_form(n):
    target = 100
    q = min(n / target, target / n)
    assert reward_length(words(n), target) == pytest.approx(2 * q**2 / (1 + q**2), rel=1e-12)
    assert reward_length(words(n), target) == pytest.approx(1 - math.tanh(abs(math.log(n / target))), rel=1e-12)


@given(st.integers(1, 40), st.integers(1, 6))
@settings(max_examples=60, deadline=None)
def test_length_symmetric_in_log_ratio(base, k):
    # With T = base * k, n = T * k and n = T / k have log ratios of equal size.
    target = base * k
    assert reward_length(words(target * k), target) == pytest.approx(reward_length(words(base), target), rel=1e-12)


def test_length_monotone_away_from_target():
    target = 50
    below = [reward_length(words(n), target) for n in range(1, target + 1)]
    above = [reward_length(words(n), target) for n in range(target, 4 * target)]
    assert all(a < b for a, b in itertools.pairwise(below))
    assert all(a > b for a, b in itertools.pairwise(above))
    assert all(0.0 < r <= 1.0 for r in below + above)


def test_length_uses_tokenizer():
    assert count_tokens("abc def", list) == 7  # a callable: characters as tokens
    assert reward_length("abcd", 4, tokenize=list) == 1.0

    class HFLike:
        def __call__(self, text):  # calling an HF tokenizer returns an encoding, not tokens
            return {"input_ids": [], "attention_mask": []}

        def encode(self, text, add_special_tokens=True):
            return [0] * len(text) + ([1] if add_special_tokens else [])

    class TiktokenLike:
        def encode(self, text):
            return list(range(len(text)))

    assert count_tokens("abcd", HFLike()) == 4  # special tokens not counted
    assert count_tokens("abcd", TiktokenLike()) == 4
    with pytest.raises(TypeError, match="tokenize must be"):
        count_tokens("a", 3)


def test_length_rejects_bad_target():
    for bad in (0, -1, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="target_tokens"):
            reward_length("a", bad)


# =========================================================================== format


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("We add 3 and 4 to get 7. \\boxed{7}", 1.0),
        ("She has 16 eggs and eats 3.\n#### 13", 1.0),
        ("First compute the total cost here. The answer is 12.", 1.0),
        ("\\boxed{7}", 0.5),  # marker, no reasoning
        ("The answer is 7", 0.5),  # "The" is one word of reasoning, fewer than 5
        ("We add 3 and 4 and get 7 in total.", 0.0),  # no marker
        ("", 0.0),
        ("Lots of words here before it \\boxed{}", 0.0),  # an empty box is no answer
    ],
)
def test_format_reward(text, expected):
    assert reward_format(text) == expected


def test_format_min_reasoning_words_is_an_option():
    assert reward_format("one two \\boxed{3}", min_reasoning_words=2) == 1.0
    assert reward_format("one two \\boxed{3}", min_reasoning_words=3) == 0.5


# =========================================================================== gating


CORRECT = "We sell 9 eggs at 2 dollars each. The answer is 18."
WRONG = "We sell 9 eggs at 3 dollars each. The answer is 27."


def test_gamma_zero_zero_fills_length_when_incorrect():
    config = RewardConfig(target_tokens=5, contamination_gamma=0.0)
    c, length, fmt, raw = score_generation(WRONG, "#### 18", config)
    assert c == 0.0 and length == 0.0
    assert raw == reward_length(WRONG, 5) > 0.0  # raw is returned ungated
    assert fmt == 1.0


def test_gamma_one_leaves_length_and_correct_answers_are_never_gated():
    for gamma in (0.0, 0.3, 1.0):
        config = RewardConfig(target_tokens=5, contamination_gamma=gamma)
        c, length, _, raw = score_generation(CORRECT, "18", config)
        assert c == 1.0 and length == raw
    c, length, _, raw = score_generation(WRONG, "18", RewardConfig(target_tokens=5, contamination_gamma=1.0))
    assert c == 0.0 and length == raw


def test_gamma_scales_length_of_incorrect_answers():
    config = RewardConfig(target_tokens=5, contamination_gamma=0.25)
    _, length, _, raw = score_generation(WRONG, "18", config)
    assert length == pytest.approx(0.25 * raw)


def test_threshold_is_the_gate_rule():
    # correctness is 1 here; a threshold above 1 means the gate never passes
    config = RewardConfig(target_tokens=5, threshold=1.5)
    c, length, _, raw = score_generation(CORRECT, "18", config)
    assert c == 1.0 and length == 0.0 and raw > 0.0


def test_reward_config_validation():
    assert RewardConfig(weights=[1, 2, 3]).weights == (1.0, 2.0, 3.0)
    with pytest.raises(ValueError, match="3 numbers"):
        RewardConfig(weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="finite and >= 0"):
        RewardConfig(weights=(1.0, -1.0, 0.5))
    with pytest.raises(ValueError, match=r"contamination_gamma must be in \[0, 1\]"):
        RewardConfig(contamination_gamma=1.5)
    with pytest.raises(ValueError, match="threshold must be a finite"):
        RewardConfig(threshold=float("nan"))
    with pytest.raises(ValueError, match="target_tokens"):
        RewardConfig(target_tokens=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        RewardConfig().target_tokens = 3


# =========================================================================== MathRewardFunction


def test_math_reward_function_finds_gold_in_every_documented_place():
    fn = MathRewardFunction(RewardConfig(target_tokens=12))
    expected = score_generation(CORRECT, "18", RewardConfig(target_tokens=12))[:3]
    assert fn(CORRECT, {"prompt": "q", "gold": "18"}) == expected
    assert fn(CORRECT, {"question": "q", "answer": "She sells ... #### 18"}) == expected
    assert fn(CORRECT, ("q", "18")) == expected
    assert fn(CORRECT, "q", gold=18) == expected
    assert fn(CORRECT, {"gold": "18", "answer": "99"})[0] == 1.0  # "gold" is looked up first
    assert isinstance(fn, RewardFunction)
    assert fn.channel_names == ("correctness", "length", "format") and fn.n_channels == 3


@pytest.mark.parametrize("prompt", ["a bare question", [{"role": "user", "content": "q"}], {"prompt": "q"}, None])
def test_math_reward_function_missing_gold(prompt):
    with pytest.raises(ValueError, match=r"needs the gold answer.*'gold' \(or 'answer'\).*gold=\.\.\."):
        MathRewardFunction()(CORRECT, prompt)


def test_math_reward_function_validation():
    with pytest.raises(TypeError, match="config must be a RewardConfig"):
        MathRewardFunction(config={"target_tokens": 3})
    with pytest.raises(ValueError, match="has 3 channels"):
        MathRewardFunction(channel_names=("a", "b"))
    with pytest.raises(TypeError, match="tokenize must be"):
        MathRewardFunction(tokenize=5)
    assert MathRewardFunction(channel_names=["c", "l", "f"]).channel_names == ("c", "l", "f")


def test_math_score_batch_equals_per_item():
    fn = MathRewardFunction(RewardConfig(target_tokens=10, contamination_gamma=0.5), tokenize=list)
    completions = [CORRECT, WRONG, "", "\\boxed{18}", "so 18", "The answer is 1/2."]
    prompts = [{"gold": "18"}, ("q", "18"), {"answer": "#### 18"}, {"gold": 18}, ("q", "18"), ("q", "0.5")]
    batch = fn.score_batch(completions, prompts)
    loop = np.array([fn(c, p) for c, p in zip(completions, prompts)])
    assert batch.shape == (6, 3) and batch.dtype == np.float64
    np.testing.assert_array_equal(batch, loop)
    checked = as_reward_function(fn)
    np.testing.assert_array_equal(checked.score_batch(completions, prompts), loop)
    np.testing.assert_array_equal(np.array([checked(c, p) for c, p in zip(completions, prompts)]), loop)
    assert fn.score_batch([], []).shape == (0, 3)


def test_math_score_batch_with_explicit_gold_and_lengths():
    fn = MathRewardFunction()
    out = fn.score_batch([CORRECT, WRONG], ["q1", "q2"], gold=["18", "27"])
    assert out[:, 0].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="same length"):
        fn.score_batch([CORRECT], ["q1", "q2"])


# =========================================================================== protocol


def three(completion, prompt):
    return (1.0, len(completion) / 10, 0.5)


def test_plain_function_channel_names_inferred_from_first_call():
    checked = as_reward_function(three)
    assert isinstance(checked, CheckedRewardFunction)
    assert checked.channel_names is None and checked.n_channels is None
    out = checked.score_batch(["abc", "abcdefghij"], ["p", "p"])
    assert out.shape == (2, 3) and out.dtype == np.float64
    np.testing.assert_allclose(out, [[1.0, 0.3, 0.5], [1.0, 1.0, 0.5]])
    assert checked.channel_names == ("r0", "r1", "r2") and checked.n_channels == 3
    assert isinstance(checked, RewardFunction)


def test_names_from_n_channels_attribute_and_argument():
    assert as_reward_function(three, n_channels=3).channel_names == ("r0", "r1", "r2")
    three.channel_names = ("a", "b", "c")
    try:
        assert as_reward_function(three).channel_names == ("a", "b", "c")
        assert as_reward_function(three, channel_names=("x", "y", "z")).channel_names == ("x", "y", "z")
        with pytest.raises(ValueError, match=r"has 3 channels .* but n_channels=2 .* set n_channels=3"):
            as_reward_function(three, n_channels=2)
        with pytest.raises(ValueError, match="has 2 names but the reward function declares 3"):
            as_reward_function(three, channel_names=("x", "y"))
    finally:
        del three.channel_names


def test_channel_name_and_n_channels_validation():
    with pytest.raises(ValueError, match="duplicate"):
        as_reward_function(three, channel_names=("a", "a", "b"))
    with pytest.raises(TypeError, match="sequence of strings"):
        as_reward_function(three, channel_names="abc")
    with pytest.raises(ValueError, match="n_channels must be a positive int"):
        as_reward_function(three, n_channels=0)
    with pytest.raises(TypeError, match="must be callable"):
        as_reward_function(42)


def test_wrong_length_names_expected_got_and_index():
    def flaky(completion, prompt):
        return (1.0, 2.0) if completion == "bad" else (1.0, 2.0, 3.0)

    checked = as_reward_function(flaky, n_channels=3)
    with pytest.raises(ValueError, match=r"returned 2 scores for completion 2, expected 3 \(channels"):
        checked.score_batch(["ok", "ok", "bad"], ["p0", "p1", "p2"])
    inferred = as_reward_function(flaky)
    with pytest.raises(ValueError, match=r"returned 3 scores for completion 1, expected 2"):
        inferred.score_batch(["bad", "ok"], ["p", "p"])


def test_non_numeric_values_are_rejected():
    cases = [("yes", r"returned 'yes' \(str\) for completion 0, channel 'r1'"), (None, r"returned None \(NoneType\)")]
    for value, message in cases:
        checked = as_reward_function(lambda c, p, v=value: (1.0, v), n_channels=2)
        with pytest.raises(TypeError, match=message):
            checked.score_batch(["x"], ["p"])
    with pytest.raises(TypeError, match=r"returned 'abc' \(str\) for completion 0; expected a sequence of 2"):
        as_reward_function(lambda c, p: "abc", n_channels=2).score_batch(["x"], ["p"])
    with pytest.raises(TypeError, match=r"returned \{'a': 1\} \(dict\)"):
        as_reward_function(lambda c, p: {"a": 1}).score_batch(["x"], ["p"])


def test_accepted_return_types():
    import fractions

    returns = [
        [1, 0.5],
        (True, np.float32(0.5)),
        np.array([1.0, 0.5]),
        (fractions.Fraction(1), np.array(0.5)),
    ]
    for value in returns:
        out = as_reward_function(lambda c, p, v=value: v).score_batch(["x"], ["p"])
        np.testing.assert_array_equal(out, [[1.0, 0.5]])
    single = as_reward_function(lambda c, p: 0.25)  # a lone number is one channel
    np.testing.assert_array_equal(single.score_batch(["x", "y"], [1, 2]), [[0.25], [0.25]])


def test_nan_policy_raise_names_index_channel_value_and_completion():
    def fn(completion, prompt):
        return (1.0, float("nan") if prompt == "p1" else 0.5)

    fn.channel_names = ("correct", "style")
    checked = as_reward_function(fn)
    long_completion = "x" * 500
    with pytest.raises(
        ValueError,
        match=r"returned nan for completion 1 \(prompt 1: 'p1'\), channel 'style' \(1\).*"
        r"nan_policy='omit'.*completion: 'xxx.*…\(502 chars\)",
    ):
        checked.score_batch(["a", long_completion], ["p0", "p1"])
    for policy in ("omit", "propagate"):
        out = checked.score_batch(["a", "b"], ["p0", "p1"], nan_policy=policy)
        assert np.isnan(out[1, 1]) and out[0, 1] == 0.5
    with pytest.raises(ValueError, match="nan_policy must be one of"):
        checked.score_batch(["a"], ["p0"], nan_policy="ignore")


@pytest.mark.parametrize("policy", ["raise", "omit", "propagate"])
def test_inf_is_always_an_error(policy):
    checked = as_reward_function(lambda c, p: (1.0, -math.inf), channel_names=("a", "b"))
    with pytest.raises(
        ValueError, match=r"returned -inf for completion 0 .* channel 'b' \(1\): rewards must be finite"
    ):
        checked.score_batch(["x"], ["p"], nan_policy=policy)


def test_exception_in_user_function_is_wrapped_with_cause():
    original = KeyError("gold")

    def broken(completion, prompt):
        if prompt == "boom":
            raise original
        return (1.0,)

    checked = as_reward_function(broken)
    with pytest.raises(
        RewardFunctionError, match=r"broken raised KeyError: 'gold' \(completion 2: 'c2'; prompt: 'boom'\)"
    ) as info:
        checked.score_batch(["c0", "c1", "c2"], ["ok", "ok", "boom"])
    error = info.value
    assert isinstance(error, RuntimeError)
    assert error.__cause__ is original and error.__cause__.__traceback__ is not None
    assert (error.index, error.completion, error.prompt) == (2, "c2", "boom")


def test_exception_in_batched_method_is_wrapped():
    class Batched:
        channel_names = ("a",)

        def score_batch(self, completions, prompts):
            raise ZeroDivisionError("oops")

    with pytest.raises(RewardFunctionError, match=r"score_batch raised ZeroDivisionError: oops \(batch of 2") as info:
        as_reward_function(Batched()).score_batch(["x", "y"], ["p", "q"])
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_batched_method_is_preferred_and_validated():
    class Batched:
        channel_names = ("a", "b")
        calls = 0

        def __call__(self, completion, prompt):
            raise AssertionError("the per-item path must not be used")

        def score_batch(self, completions, prompts):
            Batched.calls += 1
            return np.array([[len(c), 1.0] for c in completions])

    checked = as_reward_function(Batched())
    np.testing.assert_array_equal(checked.score_batch(["ab", "abc"], [0, 1]), [[2, 1], [3, 1]])
    assert Batched.calls == 1

    class Short(Batched):
        def score_batch(self, completions, prompts):
            return np.zeros((len(completions) - 1, 2))

    with pytest.raises(ValueError, match="returned 1 rows for 2 completions"):
        as_reward_function(Short()).score_batch(["a", "b"], [0, 1])

    class Wide(Batched):
        def score_batch(self, completions, prompts):
            return np.zeros((len(completions), 3))

    with pytest.raises(ValueError, match=r"returned 3 scores for completion 0, expected 2"):
        as_reward_function(Wide()).score_batch(["a"], [0])

    class Flat(Batched):
        def score_batch(self, completions, prompts):
            return np.zeros(len(completions))

    with pytest.raises(ValueError, match=r"array of shape \(2,\); expected \(N, R\) = \(2, 2\)"):
        as_reward_function(Flat()).score_batch(["a", "b"], [0, 1])


def test_batched_path_equals_per_item_path():
    rng = np.random.default_rng(0)
    table = {f"c{i}": rng.random(3) for i in range(20)}

    def per_item(completion, prompt):
        return table[completion] * prompt

    class Batched:
        def score_batch(self, completions, prompts):
            return np.stack([table[c] * p for c, p in zip(completions, prompts)])

    completions = list(table)
    prompts = list(range(1, 21))
    loop = as_reward_function(per_item).score_batch(completions, prompts)
    batched = as_reward_function(Batched()).score_batch(completions, prompts)
    np.testing.assert_array_equal(loop, batched)


def test_batch_input_validation_and_empty_batch():
    checked = as_reward_function(three, n_channels=3)
    with pytest.raises(ValueError, match="got 2 completions but 1 prompts"):
        checked.score_batch(["a", "b"], ["p"])
    with pytest.raises(TypeError, match="completion 1 is int, expected str"):
        checked.score_batch(["a", 5], ["p", "p"])
    assert checked.score_batch([], []).shape == (0, 3)
    assert as_reward_function(three).score_batch([], []).shape == (0, 0)


def test_single_call_and_idempotent_wrapping():
    checked = as_reward_function(three)
    np.testing.assert_array_equal(checked("abcde", "p"), [1.0, 0.5, 0.5])
    assert as_reward_function(checked) is checked
    renamed = as_reward_function(checked, channel_names=("a", "b", "c"))
    assert renamed is not checked and renamed.fn is three and renamed.channel_names == ("a", "b", "c")


def test_import_does_not_load_torch():
    heavy = ("torch", "transformers", "matplotlib")
    code = f"import sys, multireward_grpo.rewards; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_inferred_names_are_kept_only_after_a_valid_call():
    checked = as_reward_function(lambda c, p: (1.0, 2.0) if c == "two" else (float("nan"),))
    with pytest.raises(ValueError, match="returned nan"):
        checked.score_batch(["one"], ["p"])
    assert checked.channel_names is None  # the failed call fixed nothing
    assert checked.score_batch(["two"], ["p"]).shape == (1, 2)
    assert checked.channel_names == ("r0", "r1")
