"""report_to: TensorBoard and W&B receive the same numbers as history.jsonl."""

from __future__ import annotations

import json
import math
import sys
import types

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from multireward_grpo import GRPOConfig, GRPOTrainer  # noqa: E402
from tiny_lm import make_model, make_tokenizer  # noqa: E402

PROMPTS = ["say yes", "one two", "the cat", "hello"]


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def two_channels(completion, prompt):
    return (len(completion) % 3 / 2.0, float("e" in completion))


def _train(tmp_path, tokenizer, report_to, **kw):
    config = GRPOConfig(model="tiny", weights=(1.0, 0.5), n_steps=2, batch_prompts=2, m=2, max_new_tokens=4,
                        temperature=1.0, lr=1e-2, kl_coef=0.05, lora_r=2, lora_alpha=4, lora_dropout=0.0, device="cpu",
                        out_dir=str(tmp_path / "run"), checkpoint_every=0, sample_every=0, verbose=False,
                        eval_every=1, eval_m=2, report_to=report_to, **kw)
    trainer = GRPOTrainer(config, two_channels, PROMPTS, eval_prompts=PROMPTS[:2], model=make_model(tokenizer),
                          tokenizer=tokenizer)
    history = trainer.train()
    evals = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    return config, history, evals


def test_tensorboard_scalars_equal_the_history(tmp_path, tokenizer):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, history, evals = _train(tmp_path, tokenizer, ("tensorboard",))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for key in ("loss", "kl", "grad_norm", "mean_reward", "mean_channel_0", "mean_channel_1", "step_seconds"):
        logged = {e.step: e.value for e in events.Scalars(key)}
        assert sorted(logged) == [1, 2], key
        for record in history:  # TensorBoard stores float32
            assert logged[record["step"]] == pytest.approx(record[key], rel=1e-6, abs=1e-7), key
    names = evals[0]["eval"]["channel_names"]
    assert {"eval/aggregate", "eval/aggregate_se", *(f"eval/{n}" for n in names), *(f"eval/{n}_se" for n in names)} <= tags
    aggregate = {e.step: e.value for e in events.Scalars("eval/aggregate")}
    assert aggregate == {e["step"]: pytest.approx(e["eval"]["aggregate_mean"], rel=1e-6) for e in evals}


class _FakeRun:
    def __init__(self, **kwargs):
        self.init_kwargs = kwargs
        self.logged: list[tuple[dict, int]] = []
        self.finished = False

    def log(self, scalars, step):
        self.logged.append((dict(scalars), step))

    def finish(self):
        self.finished = True


def test_wandb_gets_the_config_every_step_and_the_evals(tmp_path, tokenizer, monkeypatch):
    runs = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: runs.append(_FakeRun(**kw)) or runs[-1]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_PROJECT", "my-project")
    config, history, evals = _train(tmp_path, tokenizer, ("wandb",))
    (run,) = runs
    assert run.init_kwargs["project"] == "my-project"
    assert run.init_kwargs["config"] == config.to_dict()
    assert run.init_kwargs["dir"] == str(tmp_path / "run")
    assert run.finished
    step_logs = [(s, step) for s, step in run.logged if "loss" in s]
    assert [step for _, step in step_logs] == [1, 2]
    for (scalars, _), record in zip(step_logs, history):
        assert scalars == {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
    eval_logs = [(s, step) for s, step in run.logged if "eval/aggregate" in s]
    assert [step for _, step in eval_logs] == [1, 2]
    for (scalars, _), record in zip(eval_logs, evals):
        assert scalars["eval/aggregate"] == record["eval"]["aggregate_mean"]
        second = record["eval"]["channel_names"][1]
        assert scalars[f"eval/{second}"] == record["eval"]["means"][1]
        assert math.isfinite(scalars[f"eval/{second}_se"])


def test_wandb_offline_run_is_written_under_out_dir(tmp_path, tokenizer, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))  # the explicit dir must win
    _train(tmp_path, tokenizer, ("wandb",))
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb")), "the offline run holds no .wandb log"


def test_missing_reporter_is_skipped_with_a_message(tmp_path, tokenizer, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "wandb", None)
    _, history, _ = _train(tmp_path, tokenizer, ("tensorboard", "wandb"))
    err = capsys.readouterr().err
    assert "pip install tensorboard" in err and "pip install wandb" in err
    assert len(history) == 2
    assert len((tmp_path / "run" / "history.jsonl").read_text().splitlines()) == 2


def _records(rewards):
    return [{"step": i + 1, "mean_reward": r, "kl": 0.0, "loss": 0.0, "step_seconds": 1.0}
            for i, r in enumerate(rewards)]


def test_log_line_shows_the_trailing_mean_reward(tmp_path, monkeypatch, capsys):
    from multireward_grpo.train.logging import RECENT_STEPS, StepLogger

    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # no progress bar: one line per step
    config = GRPOConfig(model="tiny", n_steps=20, verbose=True, out_dir=str(tmp_path))
    rewards = [0.1 * i for i in range(RECENT_STEPS + 3)]
    logger = StepLogger(config, tmp_path, start=2, records=_records(rewards[:2]))  # resumed after step 2
    for record in _records(rewards)[2:]:
        logger._emit(record)
    logger.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(rewards) - 2
    # after step 3 the window holds steps 1-3 (two from the checkpoint); at the end the last RECENT_STEPS
    assert "(mean of last 3: 0.1000)" in lines[0]
    expected = sum(rewards[-RECENT_STEPS:]) / RECENT_STEPS
    assert f"(mean of last {RECENT_STEPS}: {expected:.4f})" in lines[-1]


def test_progress_bar_shows_the_trailing_mean_reward(tmp_path):
    pytest.importorskip("tqdm")
    from multireward_grpo.train.logging import StepLogger

    config = GRPOConfig(model="tiny", n_steps=3, verbose=True, out_dir=str(tmp_path))
    logger = StepLogger(config, tmp_path)
    for record in _records([0.2, 0.4, 0.9]):
        logger._emit(record)
    assert logger.bar.n == 3
    assert "last3=0.500" in logger.bar.postfix and "reward=0.900" in logger.bar.postfix
    logger.close()
