"""Prompts in, sampled completions out: chat templates, left padding, masks.

Shared by the trainer and the real-model rollout backend. Conventions:

* Prompts are left-padded, so every prompt ends at the same column and the
  completion starts at column ``Lp`` for every row; completions are sliced
  at the *padded* prompt length.
* Position ids are ``cumsum(attention_mask) - 1``: a left-padded prompt sees
  the same positions as the prompt alone, so its log-probs do not depend on
  what it is batched with.
* A completion ends at its first EOS, which is kept in the mask (the model
  must learn to stop); tokens after it are masked out. A completion without
  EOS was cut at ``max_new_tokens`` and is flagged ``truncated``.
* Sampling is plain temperature (and top-p) sampling from
  ``softmax(logits / temperature)``, built from the caller's settings only
  (:func:`sampling_config`): nothing of the model's own ``generation_config``
  (``top_k``, ``min_p``, ``typical_p``, ``min_new_tokens``, repetition
  penalties, bad or suppressed tokens, forced tokens, stop strings, ...)
  shapes a rollout. Only its EOS ids are kept, to end completions. The
  log-probs are taken of the same tempered distribution, so the trained
  log-probs are those of the distribution that produced the samples.
* Prompt sharing: the ``m`` rows of a group share one prompt, so by default
  the prompt (all but its last token) runs once per group and its KV cache
  is indexed out to the group's rows, in generation and in the log-prob
  passes (gradients flow back through the shared cache). Forward values and
  gradients match the full-sequence pass up to float rounding; only dropout,
  when left on (the trainer turns it off by default), differs, drawing one
  mask for the shared prompt instead of one per row. ``share_prompt=False``
  runs every row in full.
* Seeded rows: given ``row_seeds``, each row draws its tokens from its own
  random stream (one uniform per token from a counter-based generator,
  ``splitmix64(seed + (t + 1) * gamma)``, and inverse-CDF sampling of the
  same tempered, top-p distribution), so what a row samples does not depend
  on which rows it is batched with, on the generation batch size or on how
  many processes share the prompts. Without ``row_seeds`` rows share torch's
  global random stream.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = ["PromptItem", "Rollouts", "normalize_prompt", "prompt_groups", "render_prompts", "row_uniforms",
           "sample_completions", "sampling_config", "token_logprobs"]


@dataclass(frozen=True)
class PromptItem:
    """A prompt as chat messages plus the metadata the reward function receives."""

    messages: tuple
    """``({"role": ..., "content": ...}, ...)``"""
    original: Any
    """What the user passed (a string, messages, or a dict with metadata)."""


def normalize_prompt(item: Any, index: int, system_prompt: str | None = None) -> PromptItem:
    """Read one prompt item (string, chat messages, or dict) as chat messages.

    A dict may hold ``messages`` (chat messages), or ``prompt`` / ``text`` /
    ``question`` (a string or messages); its other keys are metadata that
    reach the reward function with the original item.
    """
    content = item
    if isinstance(item, dict):
        key = next((k for k in ("messages", "prompt", "text", "question") if k in item), None)
        if key is None:
            hint = ""
            if {"role", "content"} <= set(item):
                hint = ("; it looks like a chat message: pass a conversation as one prompt, a list of its messages, "
                        "inside the list of prompts: [messages]")
            raise ValueError(f"prompt {index} is a dict without 'messages', 'prompt', 'text' or 'question': "
                             f"keys {sorted(item)}{hint}")
        content = item[key]
    if isinstance(content, str):
        messages = [{"role": "user", "content": content}]
    elif isinstance(content, (list, tuple)) and content and all(isinstance(m, dict) for m in content):
        messages = [dict(m) for m in content]
        for m in messages:
            if "role" not in m or "content" not in m:
                raise ValueError(f"prompt {index}: every chat message needs 'role' and 'content', got {sorted(m)}")
    else:
        raise TypeError(
            f"prompt {index} must be a string, a list of chat messages, or a dict with 'messages'/'prompt'; "
            f"got {type(content).__name__}"
        )
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return PromptItem(tuple(messages), item)


def render_prompts(tokenizer, items: Sequence[PromptItem]) -> list[str]:
    """Prompt strings: the tokenizer's chat template, or a plain transcript when it has none."""
    if getattr(tokenizer, "chat_template", None):
        return [tokenizer.apply_chat_template(list(p.messages), tokenize=False, add_generation_prompt=True) for p in items]
    return ["\n".join(f"{m['role']}: {m['content']}" for m in p.messages) + "\nassistant: " for p in items]


@dataclass
class Rollouts:
    """Sampled completions of a batch of prompts, ``N`` rows.

    Shapes: ``prompt_ids`` / ``prompt_mask`` (N, Lp), ``completion_ids`` /
    ``completion_mask`` (N, Lc), ``truncated`` (N,) bool.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    texts: list
    truncated: torch.Tensor

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def completion_id_lists(self) -> list[list[int]]:
        """Each completion's token ids up to and including its first EOS (the masked-in tokens): N lists."""
        return [ids[mask.bool()].tolist() for ids, mask in zip(self.completion_ids.cpu(), self.completion_mask.cpu())]

    def rows(self, idx) -> "Rollouts":
        """The rows ``idx`` (a slice or index tensor)."""
        texts = self.texts[idx] if isinstance(idx, slice) else [self.texts[i] for i in idx.tolist()]
        return Rollouts(self.prompt_ids[idx], self.prompt_mask[idx], self.completion_ids[idx],
                        self.completion_mask[idx], texts, self.truncated[idx])


def completion_mask_from_eos(completion_ids: torch.Tensor, eos_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask (N, Lc) with tokens up to and including the first EOS, truncated (N,))."""
    is_eos = torch.zeros_like(completion_ids, dtype=torch.bool)
    for eos in eos_ids:
        is_eos |= completion_ids == eos
    has_eos = is_eos.any(dim=1)
    first = torch.where(has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, completion_ids.shape[1], dtype=torch.long))
    cols = torch.arange(completion_ids.shape[1], device=completion_ids.device)[None, :]
    return (cols <= first[:, None]).to(torch.long), ~has_eos


def eos_token_ids(tokenizer, model) -> list[int]:
    """Every id that ends a completion (the generation config may list several)."""
    ids = set()
    for source in (getattr(getattr(model, "generation_config", None), "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(i) for i in source)
    if not ids:
        raise ValueError("the tokenizer has no eos_token: set tokenizer.eos_token so completions can end")
    return sorted(ids)


def prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first row of each run of identical prompts (G,), group index of every row (N,)).

    Rows are compared with the row before them, so only consecutive repeats
    (the prompt-major layout of a rollout batch) share a group.
    """
    same = (prompt_ids[1:] == prompt_ids[:-1]).all(dim=1) & (prompt_mask[1:] == prompt_mask[:-1]).all(dim=1)
    starts = torch.cat([torch.ones(1, dtype=torch.bool, device=prompt_ids.device), ~same])  # (N,)
    return starts.nonzero().squeeze(1), starts.long().cumsum(0) - 1


def _base_model(model):
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _checkpointing(model) -> bool:
    base = _base_model(model)
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # newer name first
        if hasattr(type(base), name):
            return bool(getattr(base, name))
    return False


def _sharded(model) -> bool:
    """True for a model sharded with FSDP2 (``fully_shard``)."""
    import torch.distributed

    if not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@functools.cache
def _cache_keyword_of(model_class: type) -> str:
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def _cache_keyword(model) -> str:
    """The forward/generate keyword of the KV cache: ``cache`` in newer transformers, ``past_key_values`` before."""
    return _cache_keyword_of(type(_base_model(model)))


def prompt_cache(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, groups=None):
    """KV cache of every prompt but its last token, run once per group and indexed out to the rows.

    Parameters
    ----------
    prompt_ids, prompt_mask : (N, Lp) tensors
        Left-padded prompts, groups of identical rows consecutive.
    groups : tuple of tensors, optional
        :func:`prompt_groups` of the prompts, when the caller already has it.

    Returns
    -------
    Cache of length ``Lp - 1`` for all ``N`` rows. Built under the caller's
    grad mode: with grad enabled, gradients of anything computed on top of
    it reach the shared prompt pass.
    """
    first, group = groups if groups is not None else prompt_groups(prompt_ids, prompt_mask)
    ids, mask = prompt_ids[first, :-1], prompt_mask[first, :-1]  # (G, Lp - 1)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = out.get(_cache_keyword(model))
    if cache is None or not hasattr(cache, "batch_select_indices"):
        raise ValueError(f"{type(model).__name__} returned a {type(cache).__name__} that cannot be indexed by row; "
                         "set share_prompt_cache=False in the config")
    cache.batch_select_indices(group)
    return cache


def _shared_prompt(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, enabled: bool) -> dict:
    """``{cache keyword: prompt cache}`` to pass to the model, or ``{}`` to run the rows in full.

    Sharing pays when some rows repeat a prompt; it is off while activation
    checkpointing trains the model, because transformers then turns the
    cache off, and while a sharded (FSDP) model trains: FSDP gathers a layer's
    weights again for the backward only when a gradient reaches the layer's
    outputs, and the cache's keys and values leave the layer another way.
    """
    if not enabled or prompt_ids.shape[1] < 2 or (model.training and (_checkpointing(model) or _sharded(model))):
        return {}
    groups = prompt_groups(prompt_ids, prompt_mask)
    if len(groups[0]) == prompt_ids.shape[0]:
        return {}
    return {_cache_keyword(model): prompt_cache(model, prompt_ids, prompt_mask, groups)}


def sampling_config(*, temperature: float, top_p: float, max_new_tokens: int, pad_token_id: int,
                    eos_token_id: Sequence[int], seeded_rows: bool = False):
    """The complete generation settings of a rollout: sampling from ``softmax(logits / temperature)``, with top-p.

    Parameters
    ----------
    temperature, top_p : float
        The only logits processors; ``top_k`` is 0 (off) so that the
        transformers default of 50 does not apply.
    max_new_tokens : int
    pad_token_id : int
    eos_token_id : sequence of int
        Every id that ends a completion.
    seeded_rows : bool
        The tokens are drawn by a :class:`RowSeededSampler` logits processor
        (temperature and top-p included), which leaves one finite logit per
        row; transformers then only picks it (greedy, no sampling of its own).

    Returns
    -------
    transformers.GenerationConfig
    """
    from transformers import GenerationConfig

    if seeded_rows:
        return GenerationConfig(do_sample=False, temperature=None, top_p=None, top_k=None,
                                max_new_tokens=max_new_tokens, pad_token_id=pad_token_id,
                                eos_token_id=list(eos_token_id))
    return GenerationConfig(do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                            max_new_tokens=max_new_tokens, pad_token_id=pad_token_id, eos_token_id=list(eos_token_id))


_GOLDEN_GAMMA = 0x9E3779B97F4A7C15


def row_uniforms(row_seeds: np.ndarray, t: int) -> np.ndarray:
    """The ``t``-th uniform in [0, 1) of each row's stream: splitmix64 of ``seed + (t + 1) * gamma``, (N,) float64.

    Counter-based, so draw ``t`` of a row needs neither the earlier draws nor
    the other rows: splitmix64 (Steele, Lea and Flood 2014), the top 53 bits.
    """
    offset = np.uint64(((t + 1) * _GOLDEN_GAMMA) % 2**64)
    z = np.asarray(row_seeds, dtype=np.uint64) + offset  # array arithmetic wraps modulo 2**64, as meant
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


class RowSeededSampler:
    """A transformers logits processor that samples each row from its own seeded stream.

    Applies ``logits / temperature`` and top-p (the smallest set of tokens
    whose probability reaches ``top_p``; at least one token kept, as
    transformers' ``TopPLogitsWarper``), draws the token by inverse CDF with
    :func:`row_uniforms`, and returns scores that are 0 at the drawn token and
    ``-inf`` elsewhere, for a greedy ``generate`` to pick.

    Parameters
    ----------
    row_seeds : (b,) array of int
        One seed per row of the batch ``generate`` runs.
    prompt_width : int
        Columns of the (padded) prompt: the draw index is the number of tokens generated so far.
    temperature, top_p : float
    """

    def __init__(self, row_seeds, prompt_width: int, *, temperature: float, top_p: float = 1.0):
        self.row_seeds = np.asarray(row_seeds, dtype=np.uint64)
        self.prompt_width, self.temperature, self.top_p = prompt_width, temperature, top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = scores.float() / self.temperature
        if self.top_p < 1.0:
            logits = _top_p_filter(logits, self.top_p)
        cdf = torch.softmax(logits, dim=-1).double().cumsum(dim=-1)  # (b, V); float64 so the tail is not lost
        u = torch.as_tensor(row_uniforms(self.row_seeds, input_ids.shape[1] - self.prompt_width), device=cdf.device)
        # right=True: the first token whose cdf exceeds u * total, never a zero-probability one
        picked = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).clamp(max=cdf.shape[1] - 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, picked, 0.0)


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """``-inf`` outside the nucleus: tokens whose ascending cumulative probability stays <= 1 - top_p go."""
    ascending, order = torch.sort(logits, descending=False, dim=-1)
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative <= (1.0 - top_p)
    drop[:, -1] = False  # the most likely token always stays
    return logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))


@contextlib.contextmanager
def _only_generation_config(model, config):
    """Let ``config`` stand in for the model's own generation_config while ``generate`` runs.

    ``generate(generation_config=...)`` still fills every setting left unset
    (``None``: ``min_p``, ``bad_words_ids``, ``suppress_tokens``, ...) from the
    model's generation_config, so passing ours is not enough: the model's is
    swapped out meanwhile (on the transformers model under a peft wrapper, and
    on the wrapper when it holds its own) and put back afterwards.
    """
    holders = [_base_model(model)]
    if model is not holders[0] and "generation_config" in vars(model):
        holders.append(model)
    saved = [getattr(holder, "generation_config", None) for holder in holders]
    try:
        for holder in holders:
            holder.generation_config = config
        yield config
    finally:
        for holder, original in zip(holders, saved):
            holder.generation_config = original


@torch.no_grad()
def sample_completions(model, tokenizer, prompt_texts: Sequence[str], *, m: int, max_new_tokens: int,
                       temperature: float, top_p: float = 1.0, batch_size: int = 32,
                       generator_seed: int | None = None, share_prompt: bool = True,
                       progress: Callable[[int, int], None] | None = None,
                       row_seeds: Sequence[int] | None = None) -> Rollouts:
    """Sample ``m`` completions per prompt; rows are prompt-major (prompt i owns rows i*m .. i*m+m-1).

    Generation runs in batches of ``batch_size`` sequences; all rows share
    one left-padded prompt width so the completions line up. With
    ``share_prompt`` each batch runs its distinct prompts once and starts
    generation from their cache. The sampling settings are these arguments
    and nothing else (:func:`sampling_config`); the model's own
    ``generation_config`` is ignored apart from its EOS ids.
    ``progress(rows_done, rows_total)`` is called after each batch.
    ``row_seeds`` (``len(prompt_texts) * m`` ints), when given, give every
    row its own random stream (see the module docstring), so its sample
    does not depend on the batch it runs in; ``generator_seed`` is then unused.
    """
    device = next(model.parameters()).device
    enc = tokenizer(list(prompt_texts), return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    prompt_ids = enc["input_ids"].repeat_interleave(m, dim=0).to(device)  # (N, Lp)
    prompt_mask = enc["attention_mask"].repeat_interleave(m, dim=0).to(device)
    eos = eos_token_ids(tokenizer, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    seeds = _checked_row_seeds(row_seeds, prompt_ids.shape[0])
    settings = sampling_config(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                               pad_token_id=pad, eos_token_id=eos, seeded_rows=seeds is not None)
    chunks = []
    with _only_generation_config(model, settings):
        for start in range(0, prompt_ids.shape[0], batch_size):
            ids, mask = prompt_ids[start:start + batch_size], prompt_mask[start:start + batch_size]
            cached = _shared_prompt(model, ids, mask, share_prompt)
            if seeds is not None:
                from transformers import LogitsProcessorList

                cached["logits_processor"] = LogitsProcessorList([RowSeededSampler(seeds[start:start + batch_size], ids.shape[1],
                                                               temperature=temperature, top_p=top_p)])
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=settings, **cached)
            chunks.append(out[:, prompt_ids.shape[1]:])
            if progress is not None:
                progress(start + ids.shape[0], prompt_ids.shape[0])
    width = max(c.shape[1] for c in chunks)
    completion_ids = torch.cat([torch.nn.functional.pad(c, (0, width - c.shape[1]), value=pad) for c in chunks])
    completion_mask, truncated = completion_mask_from_eos(completion_ids, eos)
    texts = tokenizer.batch_decode(completion_ids * completion_mask + pad * (1 - completion_mask), skip_special_tokens=True)
    return Rollouts(prompt_ids, prompt_mask, completion_ids, completion_mask, texts, truncated)


def _checked_row_seeds(row_seeds, n_rows: int):
    """``row_seeds`` as a (n_rows,) uint64 array (None stays None); a wrong length or a negative seed is refused."""
    if row_seeds is None:
        return None
    seeds = np.asarray(row_seeds)
    if seeds.shape != (n_rows,) or not np.issubdtype(seeds.dtype, np.integer):
        raise ValueError(f"row_seeds must be {n_rows} integers (one per prompt x m rows), got shape {seeds.shape} "
                         f"of {seeds.dtype}")
    if (seeds < 0).any():
        raise ValueError("row_seeds must be non-negative integers (e.g. a stable hash modulo 2**63)")
    return seeds.astype(np.uint64)


def token_logprobs(model, rollouts: Rollouts, *, micro_batch_size: int, temperature: float = 1.0,
                   share_prompt: bool = True) -> torch.Tensor:
    """Log-probability of every completion token under ``model``, (N, Lc) float32.

    Gradients flow when called with grad enabled. Only the logits of the
    completion positions are materialized (``logits_to_keep``); they are
    divided by ``temperature``, the sampling temperature.
    """
    parts = []
    for start in range(0, len(rollouts), micro_batch_size):
        batch = rollouts.rows(slice(start, start + micro_batch_size))
        parts.append(micro_logprobs(model, batch, temperature, share_prompt=share_prompt))
    return torch.cat(parts)


def micro_logprobs(model, batch: Rollouts, temperature: float = 1.0, *, share_prompt: bool = True) -> torch.Tensor:
    """:func:`token_logprobs` of one micro-batch (its prompts once per group when ``share_prompt``)."""
    attention = torch.cat([batch.prompt_mask, batch.completion_mask], dim=1)  # (b, Lp + Lc)
    positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
    n_prompt, n_completion = batch.prompt_ids.shape[1], batch.completion_ids.shape[1]
    cached = _shared_prompt(model, batch.prompt_ids, batch.prompt_mask, share_prompt)
    if cached:
        # The last prompt token's logits predict the first completion token, so it runs on top of the cache.
        input_ids = torch.cat([batch.prompt_ids[:, -1:], batch.completion_ids], dim=1)  # (b, 1 + Lc)
        positions = positions[:, n_prompt - 1:]
    else:
        input_ids = torch.cat([batch.prompt_ids, batch.completion_ids], dim=1)  # (b, Lp + Lc)
    logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                   logits_to_keep=n_completion + 1, use_cache=bool(cached), **cached).logits[:, :-1]  # (b, Lc, V)
    logits = logits.float() / temperature
    picked = logits.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)
