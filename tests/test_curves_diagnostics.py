"""Live Theorem-3 diagnostics: the trainer's per-step channel diagnostics reach history.jsonl, TensorBoard, W&B
and the diagnostics panels of curves.png, with the same numbers everywhere."""

from __future__ import annotations

import json
import math
import struct
import sys
import types

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from multireward_grpo import viz  # noqa: E402

DIAGNOSTIC_KEYS = ("zero_var_frac_{c}", "influence_{c}")


def _history(n_steps=12, n_channels=3, seed=0, with_diagnostics=True):
    rng = np.random.default_rng(seed)
    history = []
    for step in range(1, n_steps + 1):
        record = {"step": step, "mean_reward": float(rng.random()), "kl": float(rng.random() / 10)}
        for c in range(n_channels):
            record[f"mean_channel_{c}"] = float(rng.random())
            if with_diagnostics:
                record[f"zero_var_frac_{c}"] = float(rng.integers(0, 5) / 4)
                # mostly positive, sometimes negative: shares use |influence| in the denominator
                record[f"influence_{c}"] = float(rng.normal(0.5, 0.4))
        if with_diagnostics:
            record["noise_factor"] = float(rng.uniform(0.5, 2.5))
        history.append(record)
    return history


def _loop_trailing_mean(values, window):
    out = []
    for i in range(len(values)):
        finite = [v for v in values[max(0, i - window + 1):i + 1] if math.isfinite(v)]
        out.append(sum(finite) / len(finite) if finite else float("nan"))
    return np.array(out)


def _png_size(path):
    with open(path, "rb") as fh:
        header = fh.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])  # IHDR width, height


def test_diagnostics_panels_return_the_history_values(tmp_path):
    history = _history()
    out = viz.plot_training_curves(history, tmp_path / "curves.png", channel_names=["a", "b", "c"], window=4)
    diagnostics = out["diagnostics"]
    assert list(diagnostics["zero_var_frac"]) == ["a", "b", "c"]
    for c, name in enumerate("abc"):
        zero = [r[f"zero_var_frac_{c}"] for r in history]
        np.testing.assert_array_equal(diagnostics["zero_var_frac"][name], zero)
        # share = infl_c / sum_k |infl_k|, per step, by a loop
        shares = [r[f"influence_{c}"] / sum(abs(r[f"influence_{k}"]) for k in range(3)) for r in history]
        np.testing.assert_allclose(diagnostics["influence_share"][name], shares, rtol=1e-12)
        np.testing.assert_allclose(diagnostics["smoothed"]["zero_var_frac"][name], _loop_trailing_mean(zero, 4),
                                   rtol=1e-12)
        np.testing.assert_allclose(diagnostics["smoothed"]["influence_share"][name], _loop_trailing_mean(shares, 4),
                                   rtol=1e-12)
    noise = [r["noise_factor"] for r in history]
    np.testing.assert_array_equal(diagnostics["noise_factor"], noise)
    np.testing.assert_allclose(diagnostics["smoothed"]["noise_factor"], _loop_trailing_mean(noise, 4), rtol=1e-12)
    # the test history has a negative influence somewhere, so the |.| in the denominator matters
    assert any(r[f"influence_{c}"] < 0 for r in history for c in range(3))


def test_a_history_without_diagnostics_still_plots_rewards_and_kl(tmp_path):
    old = viz.plot_training_curves(_history(with_diagnostics=False), tmp_path / "old.png")
    new = viz.plot_training_curves(_history(), tmp_path / "new.png")
    assert old["diagnostics"] is None and new["diagnostics"] is not None
    np.testing.assert_array_equal(old["steps"], new["steps"])
    # three more panels make the figure taller, at the same width
    (old_w, old_h), (new_w, new_h) = _png_size(old["path"]), _png_size(new["path"])
    assert new_h > 1.5 * old_h and abs(new_w - old_w) < 0.1 * old_w


def test_records_without_diagnostics_leave_gaps(tmp_path):
    """A run resumed from an older history: its first records lack the keys, the later ones have them."""
    history = _history(with_diagnostics=False)[:4] + _history(seed=1)[4:]
    out = viz.plot_training_curves(history, tmp_path / "curves.png")
    diagnostics = out["diagnostics"]
    for key in ("zero_var_frac", "influence_share"):
        for values in diagnostics[key].values():
            assert np.all(np.isnan(values[:4])) and np.all(np.isfinite(values[4:]))
    assert np.all(np.isnan(diagnostics["noise_factor"][:4]))
    np.testing.assert_array_equal(diagnostics["noise_factor"][4:], [r["noise_factor"] for r in history[4:]])


def test_all_zero_influences_give_zero_shares(tmp_path):
    history = _history(n_steps=3, n_channels=2)
    for r in history:
        r["influence_0"] = r["influence_1"] = 0.0
    out = viz.plot_training_curves(history, tmp_path / "curves.png")
    assert all(np.array_equal(v, np.zeros(3)) for v in out["diagnostics"]["influence_share"].values())


# --------------------------------------------------------------------------- from a real (tiny) training run


class _FakeWriter:
    """A stand-in for TensorBoard's SummaryWriter: keeps every scalar."""

    def __init__(self):
        self.scalars: dict[str, dict[int, float]] = {}

    def add_scalar(self, tag, value, step):
        self.scalars.setdefault(tag, {})[step] = value

    def close(self):
        pass


class _FakeRun:
    def __init__(self):
        self.logged = []

    def log(self, scalars, step):
        self.logged.append((dict(scalars), step))

    def finish(self):
        pass


def test_trainer_diagnostics_reach_history_tensorboard_wandb_and_the_curves(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from multireward_grpo import GRPOTrainer
    from multireward_grpo.analysis.diagnostics import channel_diagnostics
    from multireward_grpo.train.logging import StepLogger
    from tiny_lm import make_model, make_tokenizer
    from trainer_helpers import PROMPTS, tiny_config

    writer, run = _FakeWriter(), _FakeRun()
    monkeypatch.setattr(StepLogger, "_tensorboard", lambda self: writer)
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: run))

    def reward(completion, prompt):
        # three channels, some of them often constant within a group (zero variance)
        return float("e" in completion), len(completion) % 3 / 2.0, float(len(completion) > 10)

    tokenizer = make_tokenizer()
    config = tiny_config(tmp_path / "run", weights=(1.0, 0.5, 0.25), n_steps=2, report_to=("tensorboard", "wandb"))
    steps = []  # (rewards, advantages) of each step, as the trainer computed them
    trainer = GRPOTrainer(config, reward, PROMPTS, model=make_model(tokenizer), tokenizer=tokenizer)
    real_advantages = trainer._advantages

    def advantages_spy(rewards):
        steps.append((np.array(rewards), real_advantages(rewards)))
        return steps[-1][1]

    monkeypatch.setattr(trainer, "_advantages", advantages_spy)
    history = trainer.train()
    lines = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    keys = [k.format(c=c) for k in DIAGNOSTIC_KEYS for c in range(3)] + ["noise_factor"]
    assert len(lines) == 2
    for step, (record, line) in enumerate(zip(history, lines), start=1):
        # the same numbers as one call of the shared implementation on that step's rewards and advantages
        rewards, adv = steps[step - 1]
        expected = channel_diagnostics(rewards.reshape(2, 4, 3), adv.detach().numpy().reshape(2, 4), config.weights)
        for c in range(3):
            assert record[f"zero_var_frac_{c}"] == pytest.approx(expected.zero_var_frac[c], abs=1e-12)
            assert record[f"influence_{c}"] == pytest.approx(expected.influence[c], rel=1e-5, abs=1e-7)
        assert record["noise_factor"] == pytest.approx(expected.noise_factor, rel=1e-5, nan_ok=True)
        for key in keys:
            assert line[key] == pytest.approx(record[key], nan_ok=True), key
            assert writer.scalars[key][step] == pytest.approx(record[key], nan_ok=True), key
        (logged,) = [s for s, at in run.logged if at == step and "loss" in s]
        assert all(logged[key] == pytest.approx(record[key], nan_ok=True) for key in keys)
    # the run is informative: some channel had constant groups and the noise factor was defined
    assert any(r[f"zero_var_frac_{c}"] > 0 for r in history for c in range(3))
    assert any(math.isfinite(r["noise_factor"]) for r in history)
    out = viz.plot_training_curves(lines, tmp_path / "curves.png")
    np.testing.assert_array_equal(out["diagnostics"]["noise_factor"], [r["noise_factor"] for r in lines])
    np.testing.assert_array_equal(out["diagnostics"]["zero_var_frac"]["channel 2"],
                                  [r["zero_var_frac_2"] for r in lines])
