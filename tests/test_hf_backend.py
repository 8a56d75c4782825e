"""The real-model rollout backend on a tiny random Llama."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from multireward_grpo import analyze  # noqa: E402
from multireward_grpo.generation import HFBackend, QwenBackend, pack_for_analysis, run_corpus  # noqa: E402
from tiny_lm import make_model, make_tokenizer  # noqa: E402


def letters_reward(completion, prompt):
    letters = [c for c in completion if c.isalpha()]
    share_e = sum(c == "e" for c in letters) / len(letters) if letters else 0.0
    return (share_e, len(completion) / 40.0, float("a" in completion))


@pytest.fixture(scope="module")
def backend():
    tok = make_tokenizer()
    return HFBackend(model=make_model(tok), tokenizer=tok, reward_fn=letters_reward, max_new_tokens=8,
                     temperature=1.0, device="cpu", seed=3)


def test_groups_are_reproducible_and_seed_dependent(backend):
    a = backend.generate("the cat", "0", m=4, seed_idx=0)
    b = backend.generate("the cat", "0", m=4, seed_idx=0)
    c = backend.generate("the cat", "0", m=4, seed_idx=1)
    assert a["completions"] == b["completions"]
    np.testing.assert_array_equal(a["rewards"], b["rewards"])
    assert a["completions"] != c["completions"]
    assert a["rewards"].shape == (4, 3)


def test_run_corpus_and_analyze_on_real_generations(backend, tmp_path):
    corpus = run_corpus(backend, [("hello", "1"), ("one two", "2"), ("a dog", "3")], m_grid=[4], K_seeds=3,
                        progress=False, out=tmp_path / "c.jsonl")
    rewards = pack_for_analysis(corpus, m=4)
    assert rewards.shape == (3, 3, 4, 3)
    assert corpus.completions  # texts kept with the rewards
    result = analyze(rewards, [1.0, 1.0, 0.5], n_resamples=0)
    np.testing.assert_allclose(result.predicted["na"], result.predicted_per_prompt, rtol=1e-10)


def test_default_reward_is_math_and_qwen_alias_keeps_names():
    tok = make_tokenizer()
    backend = QwenBackend("unused", device="cpu", max_new_tokens=4, model=make_model(tok), tokenizer=tok)
    out = backend.generate("What is 2+2?", "4", m=2, seed_idx=0)
    assert out["rewards"].shape == (2, 3)
    assert backend.channel_names == ("correctness", "length", "format")
