"""Real score projections g = <grad log pi(y|x), v>: finite differences against autograd, corpus storage."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from multireward_grpo.generation import HFBackend, load_corpus, pack_for_analysis, pack_scores, run_corpus, save_corpus  # noqa: E402
from multireward_grpo.generation.scores import ScoreProjection, ScoreProjector, sequence_logprobs  # noqa: E402
from multireward_grpo.train.rollout import render_prompts, normalize_prompt, sample_completions  # noqa: E402
from tiny_lm import make_model, make_tokenizer  # noqa: E402


def letters_reward(completion, prompt):
    letters = [c for c in completion if c.isalpha()]
    share_e = sum(c == "e" for c in letters) / len(letters) if letters else 0.0
    return (share_e, len(completion) / 40.0, float("a" in completion))


letters_reward.channel_names = ("share_e", "chars", "has_a")  # declared, so the header names them from the start


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def _rollouts(model, tok, prompts=("the cat", "one two three"), m=3, seed=5):
    texts = render_prompts(tok, [normalize_prompt(p, i) for i, p in enumerate(prompts)])
    return sample_completions(model, tok, texts, m=m, max_new_tokens=6, temperature=1.0, generator_seed=seed,
                              share_prompt=False)


def _autograd_projection(model, rollouts, direction, params, temperature):
    """Loop reference: for each rollout, backprop its log-prob and dot the gradient with v."""
    # nn.Embedding zeroes the gradient of its padding row, which the tiny model can sample mid-completion;
    # the finite differences see the true derivative, so the reference must too.
    model.get_input_embeddings().padding_idx = None
    out = []
    for j in range(len(rollouts)):
        model.zero_grad()
        logp = sequence_logprobs(model, rollouts.rows(slice(j, j + 1)), temperature=temperature)
        grads = torch.autograd.grad(logp.sum(), params)
        out.append(sum(float((g.double() * v.double()).sum()) for g, v in zip(grads, direction)))
    return np.array(out)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_finite_difference_equals_autograd_float64(tok, temperature):
    model = make_model(tok, seed=1).double()
    rollouts = _rollouts(model, tok)
    projector = ScoreProjector(model, ScoreProjection(direction_seed=3, step=1e-2))
    g = projector.project(rollouts, temperature=temperature)
    params = [p for p in model.parameters() if p.requires_grad]
    ref = _autograd_projection(model, rollouts, projector.direction(), params, temperature)
    assert np.all(np.abs(ref) > 1e-3)  # a real signal, not a vacuous comparison of zeros
    # Central differences: O(h^2) truncation plus rounding / (2h). Llama's RMSNorm computes in float32 even
    # in a float64 model, so the log-probs carry float32 rounding: h = 1e-2 balances the two (measured
    # deviation ~1e-4 relative; it grows to 3e-3 at h = 3e-3 and 3e-2 at h = 1e-4).
    np.testing.assert_allclose(g, ref, rtol=1e-3, atol=1e-4)


def test_finite_difference_float32_default_step(tok):
    model = make_model(tok, seed=2)
    rollouts = _rollouts(model, tok, seed=9)
    projector = ScoreProjector(model)
    g = projector.project(rollouts, temperature=1.0)
    params = [p for p in model.parameters() if p.requires_grad]
    ref = _autograd_projection(model, rollouts, projector.direction(), params, 1.0)
    # float32 forward passes and h = 1e-2: measured ~5e-4 relative on ordinary rollouts, 6e-3 on one whose
    # sampled padding token (a zero embedding row) makes log pi strongly curved along v
    np.testing.assert_allclose(g, ref, rtol=1e-2, atol=2e-3)


def test_direction_is_unit_seeded_and_model_unchanged(tok):
    model = make_model(tok, seed=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    a = ScoreProjector(model, ScoreProjection(direction_seed=7))
    b = ScoreProjector(model, ScoreProjection(direction_seed=7))
    c = ScoreProjector(model, ScoreProjection(direction_seed=8))
    norm = np.sqrt(sum(float(v.double().square().sum()) for v in a.direction()))
    assert abs(norm - 1.0) < 1e-6
    assert all(torch.equal(x, y) for x, y in zip(a.direction(), b.direction()))
    assert not torch.equal(a.direction()[0], c.direction()[0])
    assert a.dimension == sum(p.numel() for p in model.parameters())
    a.project(_rollouts(model, tok), temperature=1.0)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n  # restored bit for bit


def test_trainable_parameters_only(tok):
    model = make_model(tok, seed=1)
    for name, p in model.named_parameters():
        p.requires_grad_("layers.1" in name)
    projector = ScoreProjector(model, ScoreProjection())
    assert projector.dimension == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert ScoreProjector(model, ScoreProjection(parameters="all")).dimension == sum(
        p.numel() for p in model.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="parameters='all'"):
        ScoreProjector(model, ScoreProjection())


@pytest.mark.parametrize("bad, error", [({"step": 0.0}, ValueError), ({"step": "x"}, TypeError),
                                        ({"direction_seed": -1}, ValueError), ({"parameters": "lora"}, ValueError)])
def test_settings_validation(bad, error):
    with pytest.raises(error):
        ScoreProjection(**bad)


@pytest.fixture(scope="module")
def backend(tok):
    return HFBackend(model=make_model(tok), tokenizer=tok, reward_fn=letters_reward, max_new_tokens=6,
                     temperature=1.0, device="cpu", seed=3, score_projection=ScoreProjection(direction_seed=1))


def test_corpus_stores_scores_and_round_trips(backend, tmp_path):
    out = tmp_path / "c.jsonl"
    corpus = run_corpus(backend, [("hello", "1"), ("a dog", "2")], m_grid=[2, 4], K_seeds=3, progress=False, out=out)
    g = pack_scores(corpus, m=4)
    assert g.shape == (2, 3, 4) and np.all(np.isfinite(g)) and np.std(g) > 0
    np.testing.assert_array_equal(pack_scores(corpus, m=2), g[:, :, :2])  # nested like the rewards
    header = json.loads(out.read_text().splitlines()[0])
    assert header["metadata"]["backend"]["score_projection"]["direction_seed"] == 1
    assert header["metadata"]["backend"]["reward"]["function"].endswith("letters_reward")
    assert load_corpus(out) == corpus
    for name in ("c2.jsonl", "c2.parquet"):
        pytest.importorskip("pyarrow") if name.endswith("parquet") else None
        again = load_corpus(save_corpus(corpus, tmp_path / name))
        np.testing.assert_array_equal(pack_scores(again, m=4), g)
        np.testing.assert_array_equal(pack_for_analysis(again, m=4), pack_for_analysis(corpus, m=4))
    # the same direction and prompts: a resumed run regenerates identical scores
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:-1]) + "\n")
    resumed = run_corpus(backend, [("hello", "1"), ("a dog", "2")], m_grid=[2, 4], K_seeds=3, progress=False, out=out)
    np.testing.assert_allclose(pack_scores(resumed, m=4), g, rtol=1e-6, atol=1e-9)


def test_scores_match_a_direct_projection(backend):
    out = backend.generate("the cat", None, m=3, seed_idx=0)
    assert out["scores"].shape == (3,)
    again = backend.generate("the cat", None, m=3, seed_idx=0)
    np.testing.assert_array_equal(out["scores"], again["scores"])


def test_resume_with_other_scoring_is_refused(tok, tmp_path):
    out = tmp_path / "c.jsonl"
    model = make_model(tok)
    first = HFBackend(model=model, tokenizer=tok, reward_fn=letters_reward, max_new_tokens=4, device="cpu")
    run_corpus(first, ["hello"], m_grid=[2], K_seeds=2, progress=False, out=out)
    before = out.read_bytes()

    def other_reward(completion, prompt):
        return (0.0, 1.0, 0.0)

    for backend, what in [
        (HFBackend(model=model, tokenizer=tok, reward_fn=other_reward, max_new_tokens=4, device="cpu"), "reward"),
        (HFBackend(model=model, tokenizer=tok, reward_fn=letters_reward, max_new_tokens=4, device="cpu",
                   score_projection=ScoreProjection()), "score_projection"),
    ]:
        with pytest.raises(ValueError, match=what):
            run_corpus(backend, ["hello"], m_grid=[2], K_seeds=2, progress=False, out=out)
        assert out.read_bytes() == before


def test_math_reward_settings_are_in_the_header(tok):
    from multireward_grpo.rewards import RewardConfig

    a = HFBackend(model=make_model(tok), tokenizer=tok, max_new_tokens=4, device="cpu")
    b = HFBackend(model=make_model(tok), tokenizer=tok, max_new_tokens=4, device="cpu",
                  reward_config=RewardConfig(contamination_gamma=1.0))
    reward_a, reward_b = a.describe()["reward"], b.describe()["reward"]
    assert reward_a["function"].endswith("MathRewardFunction")
    assert reward_a["settings"]["config"]["contamination_gamma"] == 0.0
    assert reward_b["settings"]["config"]["contamination_gamma"] == 1.0
    json.dumps(a.describe())  # JSON-ready
