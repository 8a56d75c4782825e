"""TRL-style reward functions and datasets in our trainer (and, unchanged, in TRL's)."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import math

import numpy as np
import pytest
from trainer_helpers import PROMPTS, e_reward, tiny_config

from multireward_grpo.rewards import (
    RewardFunctionError,
    TRLRewardFunctions,
    as_reward_function,
    from_trl_reward_funcs,
)

# Keys that measure wall-clock time: the only history entries two identical runs may differ in.
TIMING_KEYS = {"gen_tokens_per_s", "train_tokens_per_s", "gen_seconds", "step_seconds"}
ANSWERS = {p: f"answer-{i}" for i, p in enumerate(PROMPTS)}


# --------------------------------------------------------------------------- TRL-style reward functions


def _text(completion):
    """A TRL completion's text: the string itself, or the content of its one assistant message."""
    return completion if isinstance(completion, str) else completion[0]["content"]


def e_share(prompts, completions, **kwargs):
    """Channel 0 of ``e_reward``, TRL-style."""
    return [e_reward(_text(c), None)[0] for c in completions]


def short(prompts, completions, **kwargs):
    """Channel 1 of ``e_reward``, TRL-style."""
    return [e_reward(_text(c), None)[1] for c in completions]


def short_or_none(prompts, completions, **kwargs):
    """``short``, missing (None) for completions of odd length."""
    return [None if len(_text(c)) % 2 else e_reward(_text(c), None)[1] for c in completions]


def e_reward_or_nan(completion, prompt):
    """The single-function equivalent of ``(e_share, short_or_none)``."""
    share, is_short = e_reward(completion, prompt)
    return share, float("nan") if len(completion) % 2 else is_short


class Recorder:
    """A TRL-style reward function that keeps every call's arguments and returns ``e_share``."""

    __name__ = "recorder"

    def __init__(self):
        self.calls = []

    def __call__(self, prompts, completions, **kwargs):
        self.calls.append({"prompts": prompts, "completions": completions, **kwargs})
        return e_share(prompts, completions)


def _rows(**columns):
    """A prompt row per PROMPTS entry: ``{"prompt": p, "answer": ..., **columns}``."""
    return [{"prompt": p, "answer": ANSWERS[p], **{k: f(p) for k, f in columns.items()}} for p in PROMPTS]


def _chat(p):
    return [{"role": "user", "content": p}]


# --------------------------------------------------------------------------- the adapter


def test_one_channel_per_function_named_after_it_in_order():
    def correctness(prompts, completions, **kwargs):
        return [1.0] * len(completions)

    recorder = Recorder()
    partial = functools.partial(correctness)
    funcs = from_trl_reward_funcs([correctness, recorder, partial, lambda prompts, completions, **kw: [0.0],
                                   lambda prompts, completions, **kw: [0.0]])
    assert funcs.channel_names == ("correctness_0", "recorder", "correctness_2", "<lambda>_3", "<lambda>_4")
    assert funcs.n_channels == 5
    f = _named("f", lambda prompts, completions, **kw: [0.0])
    with pytest.raises(ValueError, match=r"duplicate names: \('f_0', 'f_1', 'f_1'\)"):
        from_trl_reward_funcs([f, f, _named("f_1", lambda prompts, completions, **kw: [0.0])])
    renamed = from_trl_reward_funcs([correctness, recorder], channel_names=["c", "r"])
    assert renamed.channel_names == ("c", "r")
    out = renamed.score_batch(["abc", "eee"], ["p", "q"])
    np.testing.assert_array_equal(out, [[1.0, 0.0], [1.0, 1.0]])  # e_share of "abc" is 0, of "eee" is 1
    assert out.dtype == np.float64 and out.shape == (2, 2)


def test_columns_and_completion_ids_arrive_as_kwargs_aligned_with_completions():
    recorder = Recorder()
    funcs = from_trl_reward_funcs([recorder])
    rows = [{"prompt": "p0", "answer": "a0", "level": 0, "completion": "gold"},
            {"prompt": "p1", "answer": "a1", "level": 1, "completion": "gold"}]
    items = [rows[0], rows[0], rows[1], rows[1], rows[1]]  # groups of different size: alignment is per completion
    completions = ["c0", "c1", "c2", "c3", "c4"]
    ids = [[1], [2, 3], [4], [5, 6, 7], [8]]
    state = object()
    funcs.score_batch(completions, items, context={"completion_ids": ids, "trainer_state": state})
    (call,) = recorder.calls
    assert call["prompts"] == ["p0", "p0", "p1", "p1", "p1"]
    assert call["completions"] == completions
    assert call["answer"] == ["a0", "a0", "a1", "a1", "a1"]
    assert call["level"] == [0, 0, 1, 1, 1]
    assert call["completion_ids"] == ids
    assert call["trainer_state"] is state
    assert callable(call["log_metric"]) and callable(call["log_extra"])
    # TRL drops a dataset's "completion" column (the generated completion takes its place), and so do we.
    assert set(call) == {"prompts", "completions", "answer", "level", "completion_ids", "trainer_state",
                         "log_extra", "log_metric"}


def test_outside_a_trainer_ids_and_state_are_none_and_logs_are_no_ops():
    recorder = Recorder()
    from_trl_reward_funcs([recorder]).score_batch(["x"], ["plain prompt"])
    call = recorder.calls[0]
    assert call["prompts"] == ["plain prompt"] and call["completion_ids"] is None and call["trainer_state"] is None
    call["log_metric"]("anything", 1.0)
    call["log_extra"]("column", ["value"])
    with pytest.raises(ValueError, match=r"unknown keys \['environments'\]"):
        from_trl_reward_funcs([recorder]).score_batch(["x"], ["p"], context={"environments": []})
    with pytest.raises(ValueError, match=r"context\['completion_ids'\] has 2 entries for 1 completions"):
        from_trl_reward_funcs([recorder]).score_batch(["x"], ["p"], context={"completion_ids": [[1], [2]]})


def test_chat_prompts_get_completions_as_one_assistant_message():
    recorder = Recorder()
    chat = _chat("hello")
    funcs = from_trl_reward_funcs([recorder])
    out = funcs.score_batch(["eee", "abc", "plain"], [{"prompt": chat}, {"prompt": chat}, {"prompt": "a string"}])
    call = recorder.calls[0]
    assert call["prompts"] == [chat, chat, "a string"]
    assert call["completions"] == [[{"role": "assistant", "content": "eee"}],
                                   [{"role": "assistant", "content": "abc"}], "plain"]
    np.testing.assert_array_equal(out[:, 0], [1.0, 0.0, 0.0])


def test_a_function_editing_its_inputs_cannot_change_the_prompts():
    def vandal(prompts, completions, answer, **kwargs):
        prompts[0][0]["content"] = "changed"
        answer[0].append("changed")
        return [0.0] * len(completions)

    row = {"prompt": _chat("hello"), "answer": ["gold"]}
    from_trl_reward_funcs([vandal]).score_batch(["a"], [row])
    assert row == {"prompt": _chat("hello"), "answer": ["gold"]}


@pytest.mark.parametrize("policy", ["omit", "propagate"])
def test_none_is_a_missing_reward_kept_as_nan(policy):
    funcs = from_trl_reward_funcs([e_share, short_or_none])
    texts = ["ab", "abc", "eeee", "e"]
    out = funcs.score_batch(texts, ["p"] * 4, nan_policy=policy)
    expected = np.array([e_reward_or_nan(t, "p") for t in texts])
    np.testing.assert_array_equal(out, expected)  # NaN where short_or_none returned None (odd lengths)
    assert np.isnan(out[:, 1]).tolist() == [False, True, False, True]


def test_none_under_raise_names_the_function_and_the_completion():
    funcs = from_trl_reward_funcs([e_share, short_or_none])
    with pytest.raises(ValueError, match=r"'short_or_none' returned no reward .* completion 1 .*nan_policy='omit'"):
        funcs.score_batch(["ab", "abc"], ["p", "p"], nan_policy="raise")


def test_wrong_number_of_rewards_names_the_function():
    def two_short(prompts, completions, **kwargs):
        return [1.0] * (len(completions) - 1)

    with pytest.raises(ValueError, match=r"'two_short' returned 2 rewards for 3 completions"):
        from_trl_reward_funcs([e_share, two_short]).score_batch(["a", "b", "c"], ["p"] * 3)


@pytest.mark.parametrize("bad", ["1.0", [1.0], {"r": 1}, complex(1, 0)])
def test_a_non_number_names_the_function_and_the_completion_index(bad):
    def sloppy(prompts, completions, **kwargs):
        return [0.5, 0.5, bad]

    with pytest.raises(TypeError, match=r"'sloppy' returned .* for completion 2: rewards must be real numbers"):
        from_trl_reward_funcs([sloppy]).score_batch(["a", "b", "c"], ["p"] * 3)


def test_not_a_list_and_inf_are_refused():
    with pytest.raises(TypeError, match=r"'scalar' returned 1.0 .*expected a list of 2 rewards"):
        from_trl_reward_funcs([_named("scalar", lambda prompts, completions, **kw: 1.0)]).score_batch(["a", "b"],
                                                                                                    ["p"] * 2)
    with pytest.raises(ValueError, match=r"returned inf for completion 1 .*channel 'infinite'"):
        from_trl_reward_funcs([_named("infinite", lambda prompts, completions, **kw: [0.0, math.inf])]).score_batch(
            ["a", "b"], ["p"] * 2, nan_policy="omit")


def test_numpy_and_tensor_outputs_and_bools_are_numbers():
    torch = pytest.importorskip("torch")
    funcs = from_trl_reward_funcs([
        _named("array", lambda prompts, completions, **kw: np.array([0.25, 0.5])),
        _named("tensor", lambda prompts, completions, **kw: torch.tensor([1.5, -2.0])),
        _named("bools", lambda prompts, completions, **kw: [True, False]),
    ])
    np.testing.assert_array_equal(funcs.score_batch(["a", "b"], ["p", "p"]), [[0.25, 1.5, 1.0], [0.5, -2.0, 0.0]])


def test_an_exception_is_wrapped_with_the_function_named():
    def broken(prompts, completions, **kwargs):
        raise KeyError("gold")

    with pytest.raises(RewardFunctionError, match=r"reward function 'broken' \(reward_funcs\[1\]\) raised KeyError") as err:
        from_trl_reward_funcs([e_share, broken]).score_batch(["a"], ["p"])
    assert isinstance(err.value.__cause__, KeyError)


def test_wrong_signatures_are_refused_when_built():
    def per_completion(completion, prompt):
        return 1.0

    def no_kwargs(prompts, completions):
        return [1.0] * len(completions)

    with pytest.raises(TypeError, match=r"'per_completion' .*looks like a per-completion reward function .*reward_fn"):
        from_trl_reward_funcs([e_share, per_completion])
    with pytest.raises(TypeError, match=r"'no_kwargs' \(reward_funcs\[0\]\) has parameters \(prompts, completions\) "
                                        r".*completion_ids=.*\*\*kwargs"):
        from_trl_reward_funcs([no_kwargs])


def test_a_function_without_a_parameter_for_a_column_is_refused_with_the_prompts():
    def fixed(prompts, completions, completion_ids, trainer_state, log_extra, log_metric):
        return [0.0] * len(completions)

    funcs = from_trl_reward_funcs([fixed])  # fine without columns
    funcs.check_prompts(["a", _chat("b")])
    with pytest.raises(TypeError, match=r"'fixed' .*answer=.*unexpected keyword argument 'answer'"):
        funcs.check_prompts(_rows())


def test_prompt_rows_need_a_prompt_key_and_the_same_columns():
    funcs = from_trl_reward_funcs([e_share])
    with pytest.raises(ValueError, match=r"prompt 1 is a row with keys \['answer', 'question'\] but no 'prompt'"):
        funcs.check_prompts([{"prompt": "a", "answer": 1}, {"question": "b", "answer": 2}])
    with pytest.raises(ValueError, match=r"prompt 2 has the columns \['level'\] but prompt 0 has \['answer'\]"):
        funcs.check_prompts([{"prompt": "a", "answer": 1}, {"prompt": "b", "answer": 2}, {"prompt": "c", "level": 3}])
    with pytest.raises(ValueError, match=r"column 'trainer_state', which is also a keyword argument"):
        funcs.check_prompts([{"prompt": "a", "trainer_state": 1}])


@pytest.mark.parametrize("entry, message", [
    ("org/reward-model", r"reward_funcs\[0\] is the model id 'org/reward-model'"),
    (3, r"reward_funcs\[0\] is 3 \(int\), not a function"),
])
def test_model_ids_and_non_functions_are_refused(entry, message):
    with pytest.raises(TypeError, match=message):
        from_trl_reward_funcs([entry])


def test_a_reward_model_is_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"reward_funcs\[0\] is a model \(Linear\)"):
        from_trl_reward_funcs([torch.nn.Linear(2, 1)])


def test_the_list_itself_is_checked():
    with pytest.raises(TypeError, match=r"must be a list of reward functions.*wrap it: \[f\]"):
        from_trl_reward_funcs(e_share)
    with pytest.raises(ValueError, match="reward_funcs is empty"):
        from_trl_reward_funcs([])
    with pytest.raises(ValueError, match="channel_names has 1 names but reward_funcs has 2"):
        from_trl_reward_funcs([e_share, short], channel_names=["a"])


def test_a_channel_count_other_than_the_function_count_is_refused():
    funcs = from_trl_reward_funcs([e_share, short])
    assert as_reward_function(funcs, n_channels=2) is funcs
    with pytest.raises(ValueError, match=r"reward_funcs has 2 functions \('e_share', 'short'\) but 3 channels"):
        as_reward_function(funcs, n_channels=3)
    renamed = as_reward_function(funcs, channel_names=["x", "y"])
    assert isinstance(renamed, TRLRewardFunctions) and renamed.channel_names == ("x", "y")


def test_single_completion_call():
    funcs = from_trl_reward_funcs([e_share, short])
    np.testing.assert_array_equal(funcs("eee", "p"), e_reward("eee", "p"))


# --------------------------------------------------------------------------- async reward functions


async def async_e_share(prompts, completions, **kwargs):
    await asyncio.sleep(0)
    return e_share(prompts, completions)


def test_async_functions_give_the_sync_result():
    texts = ["ab", "eeee", "abcdefghijklmn"]
    sync = from_trl_reward_funcs([e_share, short]).score_batch(texts, ["p"] * 3)
    mixed = from_trl_reward_funcs([async_e_share, short]).score_batch(texts, ["p"] * 3)
    np.testing.assert_array_equal(mixed, sync)


def test_async_functions_run_concurrently_also_inside_a_running_loop():
    # Each function waits for the other's event: run one after the other, they would both time out.
    def make_pair():
        events = {}

        async def first(prompts, completions, **kwargs):
            events.setdefault("first", asyncio.Event()).set()
            await asyncio.wait_for(events.setdefault("second", asyncio.Event()).wait(), 5)
            return [1.0] * len(completions)

        async def second(prompts, completions, **kwargs):
            events.setdefault("second", asyncio.Event()).set()
            await asyncio.wait_for(events.setdefault("first", asyncio.Event()).wait(), 5)
            return [2.0] * len(completions)

        return from_trl_reward_funcs([first, second])

    np.testing.assert_array_equal(make_pair().score_batch(["a"], ["p"]), [[1.0, 2.0]])

    async def inside_a_loop():  # as in a notebook, where asyncio.run cannot be nested
        return make_pair().score_batch(["a"], ["p"])

    np.testing.assert_array_equal(asyncio.run(inside_a_loop()), [[1.0, 2.0]])


def test_an_async_exception_names_the_function():
    async def failing(prompts, completions, **kwargs):
        raise RuntimeError("judge unreachable")

    with pytest.raises(RewardFunctionError, match=r"'failing' \(reward_funcs\[1\]\) raised RuntimeError: judge"):
        from_trl_reward_funcs([e_share, failing]).score_batch(["a"], ["p"])


def _named(name, func):
    func.__name__ = name
    return func


# --------------------------------------------------------------------------- in our trainer

torch_needed = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("torch", "transformers", "peft", "datasets")),
    reason="needs torch, transformers, peft and datasets",
)


@pytest.fixture(scope="module")
def tokenizer():
    pytest.importorskip("torch")
    from tiny_lm import make_tokenizer

    return make_tokenizer()


def _run(tmp_path, tokenizer, name, *, reward_fn=None, reward_funcs=None, prompts, n_steps=2, **kw):
    from tiny_lm import make_model

    from multireward_grpo import GRPOTrainer

    trainer = GRPOTrainer(tiny_config(tmp_path / name, n_steps=n_steps, **kw), reward_fn, prompts,
                          reward_funcs=reward_funcs, model=make_model(tokenizer), tokenizer=tokenizer)
    return trainer, trainer.train()


def _assert_same_history(left, right):
    assert len(left) == len(right)
    for a, b in zip(left, right):
        assert set(a) == set(b)
        for key in set(a) - TIMING_KEYS:
            assert a[key] == b[key] or (a[key] != a[key] and b[key] != b[key]), (a["step"], key, a[key], b[key])


def _same_lora_weights(left, right) -> bool:
    import torch

    lora = [{k: v.detach() for k, v in t.model.named_parameters() if "lora_" in k} for t in (left, right)]
    return lora[0].keys() == lora[1].keys() and all(torch.equal(v, lora[1][k]) for k, v in lora[0].items())


@torch_needed
def test_reward_funcs_on_a_dataset_give_the_history_of_the_single_function(tmp_path, tokenizer):
    from datasets import Dataset

    dataset = Dataset.from_list(_rows())
    common = {"kl_coef": 0.05, "weights": (1.0, 0.5)}
    single, single_history = _run(tmp_path, tokenizer, "single", reward_fn=e_reward, prompts=PROMPTS, **common)
    trl, trl_history = _run(tmp_path, tokenizer, "trl", reward_funcs=[e_share, short], prompts=dataset, **common)
    _assert_same_history(single_history, trl_history)
    assert trl.reward.channel_names == ("e_share", "short")
    assert single_history[-1]["kl"] > 0  # the reference pass ran, so its numbers are compared too
    assert all(h["grad_norm"] > 0 for h in single_history)  # the weights moved, so comparing them means something
    assert _same_lora_weights(single, trl)


@torch_needed
@pytest.mark.parametrize("policy", ["omit", "propagate"])
def test_none_follows_the_nan_policy_as_nan_does(tmp_path, tokenizer, policy):
    from datasets import Dataset

    common = {"nan_policy": policy, "weights": (1.0, 0.5), "n_steps": 1}
    _, nan_history = _run(tmp_path, tokenizer, "nan", reward_fn=e_reward_or_nan, prompts=PROMPTS, **common)
    recorder = Recorder()
    _, trl_history = _run(tmp_path, tokenizer, "none", reward_funcs=[recorder, short_or_none],
                          prompts=Dataset.from_list(_rows()), **common)
    _assert_same_history(nan_history, trl_history)
    odd = [len(c) % 2 == 1 for call in recorder.calls for c in call["completions"]]
    assert any(odd), "the test needs missing rewards to mean anything"


@torch_needed
def test_none_under_raise_stops_the_first_step_naming_the_function(tmp_path, tokenizer):
    def always_missing(prompts, completions, **kwargs):
        return [None] * len(completions)

    with pytest.raises(ValueError, match=r"'always_missing' returned no reward .* completion 0"):
        _run(tmp_path, tokenizer, "raise", reward_funcs=[e_share, always_missing], prompts=PROMPTS, n_steps=1)


@torch_needed
def test_the_trainer_passes_columns_ids_and_state(tmp_path, tokenizer):
    from datasets import Dataset

    recorder = Recorder()
    trainer, _ = _run(tmp_path, tokenizer, "columns", reward_funcs=[recorder, short],
                            prompts=Dataset.from_list(_rows(length=len)), num_iterations=2)
    assert len(recorder.calls) == 2
    for step, call in enumerate(recorder.calls):
        n = len(call["completions"])
        assert n == 2 * 4  # batch_prompts x m
        assert call["answer"] == [ANSWERS[p] for p in call["prompts"]]
        assert call["length"] == [len(p) for p in call["prompts"]]
        assert [tokenizer.decode(ids, skip_special_tokens=True) for ids in call["completion_ids"]] == call["completions"]
        assert all(ids[-1] == tokenizer.eos_token_id or len(ids) == 6 for ids in call["completion_ids"])
        state = call["trainer_state"]
        assert (state.global_step, state.max_steps) == (2 * step, 2 * 2)  # optimizer updates, as in TRL
        assert state.epoch == pytest.approx(2 * step / len(PROMPTS))
        groups = [call["prompts"][i:i + 4] for i in range(0, n, 4)]
        assert all(len(set(g)) == 1 for g in groups)  # the m completions of a prompt sit together
    recorder.calls.clear()
    result = trainer.evaluate(Dataset.from_list(_rows(length=len)[:3]), m=2)
    assert result.channel_names == ("recorder", "short") and result.n_prompts == 3
    assert recorder.calls[0]["trainer_state"].global_step == 2 * 2
    assert len(recorder.calls[0]["completion_ids"]) == 6


@torch_needed
def test_chat_prompts_in_a_dataset(tmp_path, tokenizer):
    from datasets import Dataset

    chats = [_chat(p) for p in PROMPTS]
    recorder = Recorder()
    _, single_history = _run(tmp_path, tokenizer, "single", reward_fn=e_reward, prompts=chats, n_steps=1)
    _, trl_history = _run(tmp_path, tokenizer, "trl", reward_funcs=[recorder, short],
                          prompts=Dataset.from_list([{"prompt": c} for c in chats]), n_steps=1)
    _assert_same_history(single_history, trl_history)
    call = recorder.calls[0]
    assert all(p in chats for p in call["prompts"])
    assert all(c == [{"role": "assistant", "content": c[0]["content"]}] and isinstance(c[0]["content"], str)
               for c in call["completions"])


@torch_needed
def test_log_metric_joins_the_history(tmp_path, tokenizer):
    def logging_reward(prompts, completions, log_metric, **kwargs):
        log_metric("judge/calls", 1.0)
        log_metric("judge/calls", 3.0)
        return e_share(prompts, completions)

    _, history = _run(tmp_path, tokenizer, "log", reward_funcs=[logging_reward, short], prompts=PROMPTS, n_steps=1)
    assert history[0]["judge/calls"] == 2.0  # the mean of the step's values, as TRL logs it

    def clashing(prompts, completions, log_metric, **kwargs):
        log_metric("loss", 0.0)
        return [0.0] * len(completions)

    with pytest.raises(ValueError, match=r"metric 'loss' .*history has a key of that name"):
        _run(tmp_path, tokenizer, "clash", reward_funcs=[clashing, short], prompts=PROMPTS, n_steps=1)


# --------------------------------------------------------------------------- intake errors (before any model loads)


def _construct(tmp_path, *args, **kwargs):
    from multireward_grpo import GRPOTrainer

    return GRPOTrainer(tiny_config(tmp_path / "run"), *args, **kwargs)


@torch_needed
def test_weights_must_match_the_functions(tmp_path):
    from multireward_grpo import GRPOTrainer

    config = tiny_config(tmp_path / "run", weights=(1.0, 0.5, 0.2))
    with pytest.raises(ValueError, match=r"reward_funcs has 2 functions \('e_share', 'short'\) but config.weights "
                                         r"has 3 entries \(1.0, 0.5, 0.2\): give one weight per reward function"):
        GRPOTrainer(config, prompts=PROMPTS, reward_funcs=[e_share, short])


@torch_needed
def test_exactly_one_of_reward_fn_and_reward_funcs(tmp_path):
    with pytest.raises(TypeError, match="got both reward_fn and reward_funcs: pass one"):
        _construct(tmp_path, e_reward, PROMPTS, reward_funcs=[e_share, short])
    with pytest.raises(TypeError, match=r"needs a reward: reward_fn=f .* or reward_funcs=\[f1, f2, \.\.\.\]"):
        _construct(tmp_path, prompts=PROMPTS)
    with pytest.raises(TypeError, match=r"reward_fn is a list of 2 functions: pass TRL-style .* reward_funcs=\[\.\.\.\]"):
        _construct(tmp_path, [e_share, short], PROMPTS)
    with pytest.raises(TypeError, match="needs prompts"):
        _construct(tmp_path, reward_funcs=[e_share, short])


@torch_needed
def test_dataset_shapes_that_cannot_be_prompts(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = Dataset.from_list(_rows())
    with pytest.raises(TypeError, match=r"DatasetDict with the splits \['test', 'train'\]: pass one split"):
        _construct(tmp_path, e_reward, DatasetDict({"train": rows, "test": rows}))
    with pytest.raises(TypeError, match="streamed .*dataset"):
        _construct(tmp_path, e_reward, rows.to_iterable_dataset())
    with pytest.raises(ValueError, match=r"columns \['query', 'answer'\] but no 'prompt' column"):
        _construct(tmp_path, e_reward, Dataset.from_list([{"query": p, "answer": "a"} for p in PROMPTS]))
    with pytest.raises(ValueError, match=r"eval_prompts: prompt 0 is a row with keys \['answer', 'question'\]"):
        _construct(tmp_path, reward_funcs=[e_share, short], prompts=rows,
                   eval_prompts=Dataset.from_list([{"question": "q", "answer": "a"}]))


@torch_needed
def test_a_dataset_reads_as_its_rows():
    from datasets import Dataset

    from multireward_grpo.train.trainer import prompt_items

    items = prompt_items(Dataset.from_list([{"prompt": _chat("hi"), "answer": "a"}, {"prompt": _chat("yo"),
                                                                                   "answer": "b"}]), "be brief")
    assert [item.original for item in items] == [{"prompt": _chat("hi"), "answer": "a"},
                                                 {"prompt": _chat("yo"), "answer": "b"}]
    assert items[0].messages == ({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"})


# --------------------------------------------------------------------------- the same functions under TRL


@torch_needed
@pytest.mark.filterwarnings("ignore:`(is_)?gradient_checkpointing.*is deprecated:FutureWarning")  # TRL's own config
def test_the_same_reward_functions_run_unchanged_under_trl(tmp_path, tokenizer):
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from tiny_lm import make_model

    def answer_given(prompts, completions, answer, **kwargs):
        return [None if a.endswith("7") else float(a in _text(c)) for c, a in zip(completions, answer)]

    dataset = Dataset.from_list([{"prompt": _chat(r["prompt"]), "answer": r["answer"]} for r in _rows()])
    funcs = [Recorder(), short, answer_given]
    args = trl.GRPOConfig(output_dir=str(tmp_path / "trl"), max_steps=1, per_device_train_batch_size=4,
                          num_generations=4, max_completion_length=6, report_to="none", use_cpu=True,
                          logging_steps=1, save_strategy="no", bf16=False, seed=0, reward_weights=[1.0, 0.5, 0.5])
    trl_trainer = trl.GRPOTrainer(model=make_model(tokenizer), reward_funcs=funcs, args=args, train_dataset=dataset,
                                  processing_class=tokenizer)
    trl_trainer.train()
    logged = trl_trainer.state.log_history[0]
    assert {"rewards/recorder/mean", "rewards/short/mean", "rewards/answer_given/mean"} <= set(logged)
    trl_call = funcs[0].calls[0]
    assert trl_call["answer"] == [ANSWERS[p[0]["content"]] for p in trl_call["prompts"]]

    funcs[0].calls.clear()
    _, history = _run(tmp_path, tokenizer, "ours", reward_funcs=funcs, prompts=dataset, n_steps=1,
                      weights=(1.0, 0.5, 0.5), nan_policy="omit")
    ours_call = funcs[0].calls[0]
    assert ours_call["answer"] == [ANSWERS[p[0]["content"]] for p in ours_call["prompts"]]
    # The same argument names and formats reach the function under both trainers.
    assert set(ours_call) == set(trl_call)
    for call, n in ((trl_call, 4), (ours_call, 2 * 4)):  # TRL: one prompt x 4 generations; ours: 2 prompts x m=4
        assert all(type(call[k]) is list and len(call[k]) == n for k in ("prompts", "completions", "completion_ids",
                                                                           "answer"))
    for key in ("prompts", "completions", "completion_ids", "answer"):
        assert type(ours_call[key][0]) is type(trl_call[key][0]), key
    assert ours_call["completions"][0][0].keys() == trl_call["completions"][0][0].keys() == {"role", "content"}
    assert type(ours_call["trainer_state"]) is type(trl_call["trainer_state"])
    assert history[0]["step"] == 1
