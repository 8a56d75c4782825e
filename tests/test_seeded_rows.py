"""Per-row seeded sampling: a plain-loop reference, batch independence, and the distribution it draws from."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_lm import make_model, make_tokenizer  # noqa: E402
from trainer_helpers import PROMPTS  # noqa: E402

from multireward_grpo.train.rollout import (  # noqa: E402
    RowSeededSampler,
    normalize_prompt,
    render_prompts,
    row_uniforms,
    sample_completions,
)

MASK64 = (1 << 64) - 1


def _splitmix_reference(seed: int, t: int) -> float:
    """splitmix64 in Python integers: state seed + (t + 1) * gamma, then the published mix."""
    z = (seed + (t + 1) * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    z ^= z >> 31
    return (z >> 11) / 2.0**53


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def test_row_uniforms_match_python_integer_reference():
    seeds = [0, 1, 12345, 2**63 - 1, 987654321987]
    for t in (0, 1, 7, 1000):
        expected = [_splitmix_reference(s, t) for s in seeds]
        np.testing.assert_array_equal(row_uniforms(np.array(seeds, dtype=np.uint64), t), expected)


def test_row_uniforms_are_uniform():
    u = row_uniforms(np.arange(200_000, dtype=np.uint64) * 7 + 3, 4)
    assert abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / u.size)  # 4 standard errors
    assert abs(u.var() - 1 / 12) < 0.002
    assert u.min() >= 0.0 and u.max() < 1.0


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_sampler_draws_the_tempered_nucleus_distribution(top_p):
    n = 100_000
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0, 0.5]]).repeat(n, 1)
    sampler = RowSeededSampler(np.arange(n) * 3 + 11, 0, temperature=0.7, top_p=top_p)
    scores = sampler(torch.zeros(n, 2, dtype=torch.long), logits)
    assert bool((torch.isfinite(scores).sum(1) == 1).all())  # one token left per row, for greedy to pick
    freq = np.bincount(scores.argmax(1).numpy(), minlength=5) / n
    p = torch.softmax(logits[0] / 0.7, 0).numpy()
    if top_p < 1:  # ascending cumulative 0.0105, 0.0337, 0.0780 <= 0.1 drop tokens 3, 0, 4 (transformers' rule)
        keep = np.cumsum(np.sort(p)) > 1 - top_p
        p = np.where(np.isin(np.arange(5), np.argsort(p)[keep]), p, 0.0)
        p /= p.sum()
    se = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) <= 5 * se + 1e-12), (freq, p)


def _reference_seeded(model, prompt_ids, prompt_mask, row_seeds, *, temperature, max_new_tokens, eos, pad):
    """One row at a time, no batching, no cache: inverse-CDF draws with the row's t-th uniform."""
    rows = []
    with torch.no_grad():
        for r in range(prompt_ids.shape[0]):
            keep = prompt_mask[r].bool()
            ids = prompt_ids[r][keep][None]
            drawn = []
            for t in range(max_new_tokens):
                logits = model(input_ids=ids).logits[0, -1].double() / temperature
                cdf = torch.softmax(logits, -1).cumsum(0)
                u = _splitmix_reference(int(row_seeds[r]), t)
                token = int(torch.searchsorted(cdf, torch.tensor([u * float(cdf[-1])], dtype=torch.float64),
                                               right=True).clamp(max=len(cdf) - 1))
                drawn.append(token)
                ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
                if token == eos:
                    break
            rows.append(drawn + [pad] * (max_new_tokens - len(drawn)))
    return torch.tensor(rows)


def test_seeded_samples_match_a_row_by_row_reference_and_ignore_batching(tokenizer):
    model = make_model(tokenizer).eval()
    items = [normalize_prompt(p, i) for i, p in enumerate(PROMPTS[:3])]
    texts = render_prompts(tokenizer, items)
    seeds = np.array([101, 202, 303, 404, 505, 606], dtype=np.int64)
    together = sample_completions(model, tokenizer, texts, m=2, max_new_tokens=6, temperature=0.8, row_seeds=seeds,
                                  batch_size=6)
    reference = _reference_seeded(model, together.prompt_ids, together.prompt_mask, seeds, temperature=0.8,
                                  max_new_tokens=6, eos=tokenizer.eos_token_id, pad=tokenizer.pad_token_id)
    width = together.completion_ids.shape[1]
    masked = together.completion_ids * together.completion_mask + tokenizer.pad_token_id * (1 - together.completion_mask)
    assert torch.equal(masked, reference[:, :width])
    # the last prompt alone, in batches of one row, without the prompt cache: the same rows
    alone = sample_completions(model, tokenizer, texts[2:], m=2, max_new_tokens=6, temperature=0.8,
                               row_seeds=seeds[4:], batch_size=1, share_prompt=False)
    assert alone.texts == together.texts[4:]


def test_row_seeds_are_checked(tokenizer):
    model = make_model(tokenizer)
    texts = render_prompts(tokenizer, [normalize_prompt("hello", 0)])
    with pytest.raises(ValueError, match="row_seeds must be 2 integers"):
        sample_completions(model, tokenizer, texts, m=2, max_new_tokens=2, temperature=1.0, row_seeds=[1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        sample_completions(model, tokenizer, texts, m=2, max_new_tokens=2, temperature=1.0, row_seeds=[1, -2])
