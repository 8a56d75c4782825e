"""train and eval subcommands end to end on a tiny model saved to disk."""

from __future__ import annotations

import importlib.util
import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from multireward_grpo.cli import main  # noqa: E402
from multireward_grpo.examples.gsm8k import SAMPLE_PATH  # noqa: E402
from tiny_lm import make_model, make_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-model")
    tok = make_tokenizer()
    make_model(tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _train_args(model_dir, out, *extra):
    return ["train", "--task", "gsm8k", "--gsm8k-path", str(SAMPLE_PATH), "--model", str(model_dir),
            "--n-steps", "2", "--batch-prompts", "2", "--m", "2", "--max-new-tokens", "4", "--n-scenarios", "6",
            "--lora-r", "2", "--lora-alpha", "4", "--out-dir", str(out), "--device", "cpu", "--no-verbose", *extra]


def test_train_writes_history_checkpoint_and_adapter(model_dir, tmp_path, capsys):
    assert main(_train_args(model_dir, tmp_path / "run", "--checkpoint-every", "1", "--condition", "0:1")) == 0
    out = capsys.readouterr().out
    assert "done: 2 steps" in out and "first 1 vs last 1 steps:" in out
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    history = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2]
    assert (tmp_path / "run" / "final" / "adapter_config.json").exists()
    assert (tmp_path / "run" / "checkpoint-2" / "COMPLETE").exists()


def test_config_file_and_flags_override(model_dir, tmp_path, capsys):
    cfg = tmp_path / "grpo.toml"
    cfg.write_text('[grpo]\nmode = "an"\nkl_coef = 0.0\nm = 3\n')
    assert main(["train", "--config", str(cfg), "--m", "5", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["mode"] == "an" and printed["m"] == 5 and printed["kl_coef"] == 0.0
    cfg.write_text('[grpo]\nbogus = 1\n')
    assert main(["train", "--config", str(cfg), "--print-config"]) == 2
    assert "unknown GRPOConfig option(s) ['bogus']" in capsys.readouterr().err


def test_train_errors_are_one_line(model_dir, tmp_path, capsys):
    assert main(_train_args(model_dir, tmp_path / "r", "--weights", "1,1")) == 2
    assert "3 reward channels" in capsys.readouterr().err
    assert main(_train_args(model_dir, tmp_path / "r", "--m", "1")) == 2
    assert "m=1" in capsys.readouterr().err
    assert main(["train", "--model", str(tmp_path / "missing"), "--task", "gsm8k", "--gsm8k-path", str(SAMPLE_PATH),
                 "--device", "cpu", "--n-scenarios", "2"]) == 2
    assert "could not load model" in capsys.readouterr().err


def test_eval_every_evaluates_on_the_tasks_held_out_prompts(model_dir, tmp_path):
    # The trainer evaluates only when it has eval prompts: the command gives it the task's held-out set.
    assert main(_train_args(model_dir, tmp_path / "run", "--eval-every", "1", "--eval-m", "2",
                            "--n-eval-prompts", "2")) == 0
    records = [json.loads(x) for x in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(r["eval"]["n_prompts"] == 2 and r["eval"]["m"] == 2 for r in records)


def test_eval_compares_base_and_adapter(model_dir, tmp_path, capsys):
    main(_train_args(model_dir, tmp_path / "run"))
    capsys.readouterr()
    code = main(["eval", "--task", "gsm8k", "--gsm8k-path", str(SAMPLE_PATH), "--model", str(model_dir),
                 "--adapters", str(tmp_path / "run" / "final"), "--n-prompts", "3", "--m", "2", "--max-new-tokens", "4",
                 "--device", "cpu", "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload["results"]) == {"base", str(tmp_path / "run" / "final")}
    assert payload["results"]["base"]["n_prompts"] == 3


def test_fintech_task_trains_and_evaluates(model_dir, tmp_path, capsys):
    args = ["train", "--task", "fintech", "--model", str(model_dir), "--n-steps", "1", "--batch-prompts", "2",
            "--m", "2", "--max-new-tokens", "4", "--n-scenarios", "4", "--lora-r", "2", "--lora-alpha", "4",
            "--out-dir", str(tmp_path / "f"), "--device", "cpu", "--no-verbose", "--condition", "0:1"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["eval", "--task", "fintech", "--model", str(model_dir), "--adapters", str(tmp_path / "f" / "final"),
                 "--n-prompts", "2", "--m", "2", "--max-new-tokens", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "compliance" in out and "aggregate" in out and "base" in out


def test_trend_summary_compares_the_first_and_last_quarter():
    from multireward_grpo.cli.train import trend_summary

    history = [{"mean_reward": 0.1 * t, "mean_channel_0": 1.0, "mean_channel_1": float(t % 2)} for t in range(8)]
    lines = trend_summary(history, ("a", "b")).splitlines()
    assert lines[0] == "first 2 vs last 2 steps:"
    # mean_reward: (0 + 0.1) / 2 = 0.05 -> (0.6 + 0.7) / 2 = 0.65
    assert lines[1].split() == ["mean", "reward", "0.050", "->", "0.650", "(+0.600)"]
    assert lines[2].split() == ["a", "1.000", "->", "1.000", "(+0.000)"]
    assert lines[3].split() == ["b", "0.500", "->", "0.500", "(+0.000)"]


def test_ctrl_c_in_train_exits_130_and_names_the_checkpoint(model_dir, tmp_path, capsys, monkeypatch):
    from multireward_grpo.train import GRPOTrainer

    real_step = GRPOTrainer.train_step

    def step_then_ctrl_c(self):
        if self.step == 1:  # Ctrl-C while step 2 samples
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(GRPOTrainer, "train_step", step_then_ctrl_c)
    assert main(_train_args(model_dir, tmp_path / "run", "--checkpoint-every", "0")) == 130
    err = capsys.readouterr().err
    assert "interrupted after step 1" in err and "--resume-from latest" in err
    assert err.rstrip().endswith("multireward-grpo train: interrupted")
    assert (tmp_path / "run" / "checkpoint-1" / "COMPLETE").exists()
