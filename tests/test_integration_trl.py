"""MultiRewardGRPOTrainer inside TRL 1.16, on a tiny random Llama (CPU, offline).

The advantages are captured where TRL's loss reads them (``_compute_loss``),
with TRL's shuffle of the generation batch turned off so rows keep the order
of the gathered rewards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

import trl.trainer.grpo_trainer as trl_grpo  # noqa: E402

from multireward_grpo._seeding import stable_hash64  # noqa: E402
from multireward_grpo.advantage import compute_advantage_flat  # noqa: E402
from multireward_grpo.analysis.diagnostics import channel_diagnostics  # noqa: E402
from multireward_grpo.integrations import trl as integration  # noqa: E402
from multireward_grpo.integrations.trl import (  # noqa: E402
    ALLOW_UNTESTED_ENV,
    TRL_CONVENTIONS,
    MultiRewardGRPOTrainer,
    check_trl_version,
)
from tiny_lm import make_model, make_tokenizer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`(is_)?gradient_checkpointing.*is deprecated:FutureWarning")

GROUP = 4
WEIGHTS = [1.0, 0.5, 2.0]


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(autouse=True)
def keep_row_order(monkeypatch):
    """TRL shuffles the generation batch before the loss; the comparison needs the gathered order."""
    monkeypatch.setattr(trl_grpo, "shuffle_sequence_dict", lambda batch: batch)


# --------------------------------------------------------------------------- rewards (integer-valued, so float32-exact)


def _text(completion) -> str:
    return completion if isinstance(completion, str) else completion[0]["content"]


def e_count(completions, **kwargs):
    """Channel 0: how many 'e' letters (0, 1, 2 ...)."""
    return [float(_text(c).count("e")) for c in completions]


def has_space(completions, **kwargs):
    """Channel 1: 1 when the completion holds a space, a 0/1 gate."""
    return [float(" " in _text(c)) for c in completions]


def length_band(completions, **kwargs):
    """Channel 2: the length in bands of 4 characters."""
    return [float(len(_text(c)) // 4) for c in completions]


def e_count_missing(completions, **kwargs):
    """Channel 0 with None for rows 0 and 5 of each call (row 5 is missing on every channel)."""
    return [None if i in (0, 5) else v for i, v in enumerate(e_count(completions))]


def has_space_missing(completions, **kwargs):
    return [None if i in (5, 6) else v for i, v in enumerate(has_space(completions))]


def length_band_missing(completions, **kwargs):
    return [None if i == 5 else v for i, v in enumerate(length_band(completions))]


FUNCS = [e_count, has_space, length_band]
FUNCS_MISSING = [e_count_missing, has_space_missing, length_band_missing]


# --------------------------------------------------------------------------- trainers that record


class _Recording:
    """Keeps the gathered rewards of each generation and the advantages each loss call reads."""

    def _calculate_rewards(self, *args):
        rewards = super()._calculate_rewards(*args)
        self.recorded_rewards.append(rewards.detach().clone())
        return rewards

    def _compute_loss(self, model, inputs):
        self.recorded_advantages.append(inputs["advantages"].detach().clone())
        return super()._compute_loss(model, inputs)


class RecordingTRL(_Recording, trl.GRPOTrainer):
    pass


class RecordingOurs(_Recording, MultiRewardGRPOTrainer):
    pass


def _dataset(n_prompts=2):
    return datasets.Dataset.from_dict(
        {"prompt": [[{"role": "user", "content": f"say something {i}"}] for i in range(n_prompts)]})


def _config(tmp_path, **kwargs):
    settings = dict(output_dir=str(tmp_path / "out"), use_cpu=True, num_generations=GROUP,
                    per_device_train_batch_size=2 * GROUP, max_completion_length=6, max_steps=2, beta=0.0,
                    learning_rate=1e-3, report_to=[], logging_steps=1, save_strategy="no", seed=0,
                    disable_tqdm=True, reward_weights=WEIGHTS, dataloader_num_workers=0)
    settings.update(kwargs)
    return trl.GRPOConfig(**settings)


def _trainer(cls, tokenizer, tmp_path, *, funcs=FUNCS, config=None, dataset=None, **ours):
    trainer = cls(model=make_model(tokenizer), reward_funcs=list(funcs), args=config or _config(tmp_path),
                  train_dataset=dataset if dataset is not None else _dataset(), processing_class=tokenizer, **ours)
    trainer.recorded_rewards, trainer.recorded_advantages = [], []
    return trainer


def _ours_on(rewards, group, **estimator):
    """compute_advantage_flat on TRL's gathered rewards, with TRL's convention that NaN advantages are 0."""
    ids = torch.arange(rewards.shape[0]) // group
    return torch.nan_to_num(compute_advantage_flat(rewards, ids, WEIGHTS, **estimator), nan=0.0)


# --------------------------------------------------------------------------- the advantages that reach the loss

CASES = {
    "na": dict(estimator="na"),
    "an": dict(estimator="an"),
    "single": dict(estimator="single"),
    "gdpo": dict(estimator="gdpo"),
    "zero_fill": dict(estimator="na", conditioning=[(1, 0, "zero_fill")]),
    "subgroup": dict(estimator="na", conditioning=[(1, 2, "subgroup")], ddof=1),
    "nan_omit": dict(estimator="na", nan_policy="omit", funcs=FUNCS_MISSING),
}


@pytest.mark.parametrize("case", list(CASES))
def test_advantages_reaching_the_loss_are_ours(case, tokenizer, tmp_path):
    ours = dict(CASES[case])
    funcs = ours.pop("funcs", FUNCS)
    trainer = _trainer(RecordingOurs, tokenizer, tmp_path, funcs=funcs, **ours)
    trainer.train()
    estimator = {"mode": ours.get("estimator", "na"), "conditioning": ours.get("conditioning"),
                 "ddof": ours.get("ddof", 0), "nan_policy": ours.get("nan_policy", "omit")}
    assert len(trainer.recorded_rewards) == len(trainer.recorded_advantages) == 2  # two steps, one generation each
    for rewards, advantages in zip(trainer.recorded_rewards, trainer.recorded_advantages):
        assert rewards.shape == (2 * GROUP, 3)
        torch.testing.assert_close(advantages, _ours_on(rewards, GROUP, **estimator), rtol=1e-5, atol=1e-5)
    assert max(float(a.abs().max()) for a in trainer.recorded_advantages) > 0.5  # a real signal was compared
    if case == "nan_omit":
        assert torch.isnan(rewards).any() and advantages[5] == 0.0  # the unscorable row gets 0, as in TRL
    # Our metrics are in TRL's logs, one record per step, with the shared diagnostics' values.
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    names = ["e_count", "has_space", "length_band"] if case != "nan_omit" else [f.__name__ for f in FUNCS_MISSING]
    for entry, rewards, advantages in zip(logs, trainer.recorded_rewards, trainer.recorded_advantages):
        expected = channel_diagnostics(rewards.double().reshape(2, GROUP, 3), advantages.double().reshape(2, GROUP),
                                       WEIGHTS, conditioning=estimator["conditioning"], ddof=estimator["ddof"],
                                       nan_policy=estimator["nan_policy"])
        assert entry["multireward/noise_factor"] == pytest.approx(expected.noise_factor, rel=1e-5, abs=1e-6)
        for c, name in enumerate(names):
            assert entry[f"multireward/{name}/zero_var_frac"] == pytest.approx(expected.zero_var_frac[c], abs=1e-12)
            assert entry[f"multireward/{name}/influence"] == pytest.approx(expected.influence[c], rel=1e-4, abs=1e-5)
        defined = ~np.isnan(expected.correlation[0, 1])
        assert (f"multireward/corr/{names[0]}/{names[1]}" in entry) == defined
    # The completions table shows ours too.
    np.testing.assert_allclose(list(trainer._logs["advantages"])[-2 * GROUP:], trainer.recorded_advantages[-1],
                               rtol=1e-6, atol=1e-6)


def test_eval_groups_use_num_generations_eval(tokenizer, tmp_path):
    config = _config(tmp_path, max_steps=1, num_generations_eval=2, per_device_eval_batch_size=4,
                     eval_strategy="no")
    trainer = _trainer(RecordingOurs, tokenizer, tmp_path, config=config, estimator="an")
    trainer.eval_dataset = _dataset(2)
    metrics = trainer.evaluate()
    rewards, advantages = trainer.recorded_rewards[-1], trainer.recorded_advantages[-1]
    assert rewards.shape == (4, 3)
    torch.testing.assert_close(advantages, _ours_on(rewards, 2, mode="an", nan_policy="omit"), rtol=1e-5, atol=1e-5)
    assert "eval_multireward/noise_factor" in metrics


# --------------------------------------------------------------------------- TRL's own computation as the reference


@pytest.mark.parametrize("estimator, aggregation, funcs", [
    ("gdpo", "normalize_then_sum", FUNCS_MISSING),  # missing rewards included: both leave them out alike
    ("an", "sum_then_normalize", FUNCS),
])
def test_equals_trls_own_aggregation(estimator, aggregation, funcs, tokenizer, tmp_path):
    config = _config(tmp_path, multi_objective_aggregation=aggregation)
    reference = _trainer(RecordingTRL, tokenizer, tmp_path, funcs=funcs, config=config)
    reference.train()
    ours = _trainer(RecordingOurs, tokenizer, tmp_path, funcs=funcs, config=config, estimator=estimator,
                    **TRL_CONVENTIONS)
    ours.train()
    for step in range(2):
        # The same seed and model give the same completions, so the same rewards reach both trainers.
        torch.testing.assert_close(ours.recorded_rewards[step], reference.recorded_rewards[step], equal_nan=True)
        torch.testing.assert_close(ours.recorded_advantages[step], reference.recorded_advantages[step],
                                   rtol=1e-5, atol=2e-5)
    assert any(a.abs().max() > 0.5 for a in reference.recorded_advantages)  # a real signal was compared


def test_learnable_reward_rises(tokenizer, tmp_path):
    """The e-count reward (weight 1; the length band weighs 0) under NA rises over a seeded 10-step run: the
    mean of the last 3 steps must beat the first 3 by more than 2 'e' per completion (measured: 0.54 -> 6.58)."""
    config = _config(tmp_path, max_steps=10, learning_rate=3e-2, max_completion_length=8, seed=1,
                     reward_weights=[1.0, 0.0])
    trainer = _trainer(MultiRewardGRPOTrainer, tokenizer, tmp_path, funcs=[e_count, length_band], config=config,
                       estimator="na")
    trainer.train()
    means = [entry["rewards/e_count/mean"] for entry in trainer.state.log_history if "rewards/e_count/mean" in entry]
    assert len(means) == 10
    first, last = np.mean(means[:3]), np.mean(means[-3:])
    assert last > first + 2.0, (first, last, means)


# --------------------------------------------------------------------------- rollout log -> analyze


def test_rollout_log_is_analyzable(tokenizer, tmp_path, capsys):
    from multireward_grpo.cli import main

    log = tmp_path / "rollouts.jsonl"
    trainer = _trainer(RecordingOurs, tokenizer, tmp_path, funcs=FUNCS_MISSING, rollout_log=log)
    trainer.train()
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == 2 * 2 * GROUP  # two steps of two groups
    names = [f.__name__ for f in FUNCS_MISSING]
    assert list(rows[0]) == ["prompt_idx", "seed_idx", "rollout_idx", "m"] + names + ["prompt"]
    recorded = torch.cat(trainer.recorded_rewards).numpy()
    logged = np.array([[np.nan if row[n] is None else row[n] for n in names] for row in rows], dtype=np.float32)
    np.testing.assert_array_equal(logged, recorded)  # float32 values read back exactly
    prompts = {row["prompt"] for row in rows}
    assert {row["prompt_idx"] for row in rows} == {stable_hash64(p) >> 1 for p in prompts}
    for pid in {row["prompt_idx"] for row in rows}:  # each prompt's two groups are its seeds 0 and 1
        seeds = [row["seed_idx"] for row in rows if row["prompt_idx"] == pid]
        assert sorted(seeds) == [0] * GROUP + [1] * GROUP
    # Missing rewards stop analyze unless it may drop those prompts; here every prompt holds one.
    capsys.readouterr()
    assert main(["analyze", str(log), "--n-resamples", "0", "--no-progress"]) == 2
    assert "no value for channel" in capsys.readouterr().err
    complete = tmp_path / "complete.jsonl"
    _trainer(MultiRewardGRPOTrainer, tokenizer, tmp_path, rollout_log=complete).train()
    capsys.readouterr()  # TRL prints its logs
    assert main(["analyze", str(complete), "--n-resamples", "0", "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["results"][0]["P"] == 2 and report["results"][0]["K"] == 2


def test_rollout_log_continues_seeds_and_checks_its_channels(tmp_path):
    path = tmp_path / "log.jsonl"
    labels = ("a", "b")
    grouped = np.arange(16, dtype=np.float32).reshape(2, 4, 2)
    grouped[0, 1, 0] = np.nan
    prompts = ["p"] * 4 + [[{"role": "user", "content": "q"}]] * 4
    rows = integration._rollout_rows(grouped, prompts, labels, {})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    seeds = integration._existing_seeds(path, labels)
    assert seeds == {stable_hash64("p") >> 1: 1, stable_hash64('[{"content": "q", "role": "user"}]') >> 1: 1}
    again = integration._rollout_rows(grouped, prompts, labels, seeds)
    assert {row["seed_idx"] for row in again} == {1}
    assert rows[1]["a"] is None and rows[2]["a"] == 4.0
    with pytest.raises(ValueError, match=r"holds the reward columns \['a', 'b'\] but this trainer's reward functions "
                                         r"are \['a', 'c'\]"):
        integration._existing_seeds(path, ("a", "c"))
    path.write_text(path.read_text() + '{"prompt_idx": 1, "se')
    with pytest.raises(ValueError, match="ends with a partial line"):
        integration._existing_seeds(path, labels)
    path.write_text("not json\n")
    with pytest.raises(ValueError, match="line 1 is not a rollout row"):
        integration._existing_seeds(path, labels)


# --------------------------------------------------------------------------- validation (before TRL loads anything)


def _build(tmp_path, *, funcs=FUNCS, config=None, **ours):
    return MultiRewardGRPOTrainer(model="no-such-model-is-loaded", reward_funcs=list(funcs),
                                  args=config or _config(tmp_path), **ours)


@pytest.mark.parametrize("ours, config, error, match", [
    ({"estimator": "gdpoo"}, {}, ValueError, "did you mean 'gdpo'"),
    ({"estimator": 3}, {}, TypeError, "mode must be a string"),
    ({"conditioning": [(0, 3)]}, {}, ValueError, r"conditioning target 3 is not a reward function: .* 3 were passed"),
    ({"conditioning": [(0, 0)]}, {}, ValueError, "gate and the target must be different channels"),
    ({"conditioning": b"0:1"}, {}, TypeError, "conditioning must be"),
    ({"nan_policy": "skip"}, {}, ValueError, "nan_policy must be one of"),
    ({"ddof": -1}, {}, ValueError, "ddof must be >= 0"),
    ({"ddof": 4}, {}, ValueError, "ddof=4 leaves no degrees of freedom in groups of num_generations=4"),
    ({"ddof": 2}, {"num_generations_eval": 2}, ValueError, "num_generations_eval=2"),
    ({"eps": -1e-3}, {}, ValueError, "eps must be >= 0"),
    ({"scale_by_std": "yes"}, {}, TypeError, "scale_by_std must be True, False or None"),
    ({"scale_by_std": True}, {"scale_rewards": "none"}, ValueError, "contradicts GRPOConfig"),
    ({}, {"scale_rewards": "batch"}, ValueError, "scale_rewards='batch'"),
    ({}, {"reward_weights": [1.0, -1.0, 1.0]}, ValueError, "negate the reward function instead of its weight"),
    ({}, {"reward_weights": [0.0, 0.0, 0.0]}, ValueError, "reward_weights are all 0"),
    ({"rollout_log": "out.parquet"}, {}, ValueError, "must be a .jsonl file"),
    ({"rollout_log": 3}, {}, TypeError, "rollout_log must be a path"),
    ({"rollout_log": "/dev/null/log.jsonl"}, {}, FileNotFoundError, "cannot create the folder of rollout_log"),
    ({"not_a_trl_argument": 1}, {}, TypeError, "not_a_trl_argument"),
])
def test_bad_arguments_fail_before_the_model_loads(ours, config, error, match, tmp_path):
    with pytest.raises(error, match=match):
        _build(tmp_path, config=_config(tmp_path, **config), **ours)


def test_rollout_log_path_checks(tmp_path):
    folder = tmp_path / "dir.jsonl"
    folder.mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        _build(tmp_path, rollout_log=folder)
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "target.jsonl")
    with pytest.raises(ValueError, match="symbolic link"):
        _build(tmp_path, rollout_log=link)


def test_checks_that_need_the_trainer(tokenizer, tmp_path):
    def prompt(completions, **kwargs):
        return [0.0] * len(completions)

    with pytest.raises(ValueError, match="reward function name 'prompt' is a column of the rollout log"):
        _trainer(MultiRewardGRPOTrainer, tokenizer, tmp_path, funcs=[e_count, prompt],
                 config=_config(tmp_path, reward_weights=None), rollout_log=tmp_path / "log.jsonl")
    trainer = _trainer(MultiRewardGRPOTrainer, tokenizer, tmp_path, funcs=FUNCS_MISSING, nan_policy="raise")
    grouped = np.ones((2, GROUP, 3))
    grouped[1, 2, 1] = np.nan
    with pytest.raises(ValueError, match="reward function 'has_space_missing' returned None for completion 2 of "
                                         "group 1 .* pass nan_policy='omit'"):
        trainer.multireward_advantages(grouped)
    duplicates = _trainer(MultiRewardGRPOTrainer, tokenizer, tmp_path, funcs=[e_count, e_count, has_space])
    assert duplicates._multireward_labels == ("e_count", "e_count_1", "has_space")


def test_process_slice_and_propagate_without_training(tokenizer, tmp_path):
    """The added step on a gathered batch of 4 groups, as process 1 of 2 sees it (rows 8..15 are its own)."""
    from types import SimpleNamespace

    trainer = _trainer(MultiRewardGRPOTrainer, tokenizer, tmp_path, nan_policy="propagate", estimator="gdpo")
    trainer.accelerator = SimpleNamespace(process_index=1, is_main_process=False)
    rewards = torch.tensor(np.random.default_rng(0).integers(0, 4, (16, 3)), dtype=torch.float32)
    rewards[13, 1] = float("nan")  # group 3 holds a missing reward
    output = {"advantages": torch.full((8,), 7.0)}
    trainer._use_our_advantages(output, rewards, "train")
    expected = _ours_on(rewards, GROUP, mode="gdpo", nan_policy="propagate")
    torch.testing.assert_close(output["advantages"], expected[8:], rtol=1e-5, atol=1e-6)
    assert torch.all(output["advantages"][4:] == 0.0)  # the NaN group gets no update
    assert output["advantages"].dtype == torch.float32
    logged = trainer._metrics["train"]
    assert len(logged["multireward/noise_factor"]) == 1
    grouped = rewards.double().reshape(4, GROUP, 3)
    reference = channel_diagnostics(grouped, compute_advantage_flat(rewards.double(), torch.arange(16) // GROUP,
                                                                    WEIGHTS, "gdpo", nan_policy="propagate")
                                    .reshape(4, GROUP), WEIGHTS, nan_policy="propagate")
    assert reference.nan_groups == 1
    assert logged["multireward/e_count/influence"][0] == pytest.approx(reference.influence[0], rel=1e-6)


# --------------------------------------------------------------------------- version guard and imports


def test_version_guard(monkeypatch, tmp_path):
    monkeypatch.delenv(ALLOW_UNTESTED_ENV, raising=False)
    assert check_trl_version("1.16.0") == "1.16.0"
    assert check_trl_version("1.16.7.dev0") == "1.16.7.dev0"
    for version in ("1.15.2", "1.17.0", "2.0", "garbage"):
        with pytest.raises(RuntimeError, match=rf"was tested with trl 1\.16\.x; found {version}"):
            check_trl_version(version)
    with pytest.warns(UserWarning, match="running anyway"):
        assert check_trl_version("1.17.0", allow_untested=True) == "1.17.0"
    monkeypatch.setenv(ALLOW_UNTESTED_ENV, "1")
    with pytest.warns(UserWarning, match="found 1.17.0"):
        check_trl_version("1.17.0")
    monkeypatch.delenv(ALLOW_UNTESTED_ENV)
    monkeypatch.setattr(trl, "__version__", "1.18.0")
    with pytest.raises(RuntimeError, match="found 1.18.0"):
        _build(tmp_path)
    with pytest.warns(UserWarning, match="found 1.18.0"), pytest.raises(ValueError, match="did you mean"):
        _build(tmp_path, allow_untested_trl=True, estimator="gdpoo")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_integrations_package_is_light():
    done = _python("import sys, multireward_grpo.integrations; "
                   "print(sorted(m for m in ('trl', 'torch', 'transformers') if m in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_missing_trl_names_the_extra():
    done = _python("import sys; sys.modules['trl'] = None\n"
                   "try:\n    import multireward_grpo.integrations.trl\n"
                   "except ImportError as err:\n    print(err)")
    assert done.returncode == 0, done.stderr
    assert 'pip install "multireward-grpo[trl]"' in done.stdout
