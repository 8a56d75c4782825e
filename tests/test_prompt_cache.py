"""Prompt sharing: one prompt pass per group, its KV cache indexed out to the group's rows.

The shared path must give the full-sequence path's log-probs, gradients and
samples (up to float rounding), however micro-batches cut the groups.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from multireward_grpo import GRPOConfig  # noqa: E402
from multireward_grpo.train.rollout import (  # noqa: E402
    normalize_prompt,
    prompt_cache,
    prompt_groups,
    render_prompts,
    sample_completions,
    token_logprobs,
)
from multireward_grpo.train.trainer import enable_checkpointing, quiet_peft  # noqa: E402
from tiny_lm import make_model, make_tokenizer  # noqa: E402

# Prompts of different lengths, so rows of the short ones are left-padded.
PROMPTS = ["hi", "one two three four five six seven eight nine", "the cat", "please help we will"]
TOL = dict(atol=2e-5, rtol=2e-5)  # float32 rounding of two orderings of the same sums


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def _texts(tokenizer, prompts=PROMPTS):
    return render_prompts(tokenizer, [normalize_prompt(p, i) for i, p in enumerate(prompts)])


def _lora(model):
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    with quiet_peft():
        wrapped = peft.get_peft_model(model, config)
    torch.manual_seed(1)
    for name, param in wrapped.named_parameters():
        if "lora_B" in name:  # B starts at 0; a non-zero B makes the adapter (and its gradients) non-trivial
            param.data.normal_(0, 0.3)
    return wrapped


def test_prompt_groups_finds_runs_of_identical_rows():
    ids = torch.tensor([[0, 5, 6], [0, 5, 6], [7, 8, 9], [7, 8, 9], [7, 8, 9], [0, 5, 6]])
    mask = torch.tensor([[0, 1, 1]] * 2 + [[1, 1, 1]] * 3 + [[0, 1, 1]])
    first, group = prompt_groups(ids, mask)
    assert first.tolist() == [0, 2, 5]  # a repeat that is not consecutive starts a new group
    assert group.tolist() == [0, 0, 1, 1, 1, 2]


def test_prompt_groups_tells_apart_rows_that_differ_only_in_padding():
    ids = torch.tensor([[3, 4], [3, 4]])
    mask = torch.tensor([[1, 1], [0, 1]])
    assert prompt_groups(ids, mask)[1].tolist() == [0, 1]


@pytest.mark.parametrize("micro_batch_size", [1, 2, 3, 4, 5, 12])
def test_shared_logprobs_equal_full_sequence_logprobs(tokenizer, micro_batch_size):
    model = make_model(tokenizer)
    rollouts = sample_completions(model, tokenizer, _texts(tokenizer), m=3, max_new_tokens=6, temperature=1.0,
                                  generator_seed=0, share_prompt=False)
    assert rollouts.prompt_mask.sum(1).min() < rollouts.prompt_mask.shape[1]  # some rows really are padded
    full = token_logprobs(model, rollouts, micro_batch_size=micro_batch_size, temperature=0.7, share_prompt=False)
    shared = token_logprobs(model, rollouts, micro_batch_size=micro_batch_size, temperature=0.7)
    mask = rollouts.completion_mask.bool()
    torch.testing.assert_close(shared[mask], full[mask], **TOL)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_shared_gradients_equal_full_sequence_gradients(tokenizer, checkpointing):
    model = _lora(make_model(tokenizer))
    if checkpointing:
        enable_checkpointing(model.base_model.model)
    rollouts = sample_completions(model, tokenizer, _texts(tokenizer), m=4, max_new_tokens=5, temperature=1.0,
                                  generator_seed=3, share_prompt=False)
    weights = torch.linspace(-1.0, 1.0, len(rollouts))[:, None]  # stands in for per-row advantages
    model.train()
    grads = {}
    for share in (False, True):
        model.zero_grad(set_to_none=True)
        logp = token_logprobs(model, rollouts, micro_batch_size=4, share_prompt=share)
        (logp * rollouts.completion_mask * weights).sum().backward()
        grads[share] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert grads[False] and all(g.abs().sum() > 0 for g in grads[False].values())
    for name, g in grads[False].items():
        torch.testing.assert_close(grads[True][name], g, atol=1e-5, rtol=1e-4, msg=name)


def test_shared_prompt_sampling_draws_the_same_completions(tokenizer):
    model = make_model(tokenizer)
    kw = dict(m=4, max_new_tokens=6, temperature=1.0, generator_seed=11, batch_size=6)  # batches cut groups
    full = sample_completions(model, tokenizer, _texts(tokenizer), share_prompt=False, **kw)
    shared = sample_completions(model, tokenizer, _texts(tokenizer), **kw)
    assert shared.texts == full.texts
    assert torch.equal(shared.completion_mask, full.completion_mask)


def test_prompt_cache_covers_every_row_but_the_last_prompt_token(tokenizer):
    model = make_model(tokenizer)
    rollouts = sample_completions(model, tokenizer, _texts(tokenizer), m=2, max_new_tokens=2, temperature=1.0,
                                  generator_seed=0, share_prompt=False)
    cache = prompt_cache(model, rollouts.prompt_ids, rollouts.prompt_mask)
    assert cache.get_seq_length() == rollouts.prompt_ids.shape[1] - 1
    keys = cache.layers[0].keys
    assert keys.shape[0] == len(rollouts)
    torch.testing.assert_close(keys[0], keys[1])  # rows of one group hold the same prompt state


class _TupleCacheModel(torch.nn.Module):
    """A model whose forward returns a legacy tuple cache, which cannot be indexed by row."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None,
                logits_to_keep=0):
        return {"past_key_values": ((torch.zeros(1),),)}


def test_a_cache_that_cannot_be_indexed_says_which_option_to_set():
    ids = torch.tensor([[1, 2, 3], [1, 2, 3]])
    with pytest.raises(ValueError, match="share_prompt_cache=False"):
        prompt_cache(_TupleCacheModel(), ids, torch.ones_like(ids))


def test_config_documents_the_option():
    assert GRPOConfig().share_prompt_cache is True
    assert "KV cache" in GRPOConfig.__dataclass_fields__["share_prompt_cache"].metadata["help"]
