"""The GRPO objective: clipped importance-ratio policy loss plus a per-token k3 KL.

Per token ``t`` of completion ``i`` with advantage ``A_i``:

* the importance ratio ``r`` is, with ``importance_sampling_level="token"``,
  ``r_it = exp(logp_it - logp_old_it)`` (PPO, Schulman et al. 2017); with
  ``"sequence"`` (GSPO, Zheng et al. 2025) one ratio per completion,
  ``s_i = exp(mean_t (logp_it - logp_old_it))`` over its counted tokens,
  broadcast over them. The PPO term is
  ``-min(r A_i, clip(r, 1 - eps_low, 1 + eps_high) A_i)``; ``eps_high``
  defaults to ``eps_low`` (symmetric), and a larger one is DAPO's
  "clip-higher" (Yu et al. 2025). With one update per batch
  ``logp_old = logp.detach()``: every ratio is 1 in value and the gradient is
  the plain policy gradient (the same for both levels).
* ``q = logp_ref - logp``; the KL term is ``k3 = exp(q) - q - 1`` (Schulman,
  "Approximating KL divergence", 2020), an unbiased, non-negative per-token
  estimator of ``KL(pi || pi_ref)`` whose gradient pulls toward the reference.
  (The mean of ``logp - logp_ref`` over the policy's own samples, as a loss,
  has zero expected gradient: it pulls nowhere.)
* ``mask_truncated_completions``: a completion cut at ``max_new_tokens``
  without an EOS leaves the loss mask (DAPO's overlong filtering), for the
  policy term and the KL alike; its reward still enters its group's
  advantages. See :func:`loss_mask` for what that does to the denominators.

Aggregation over tokens (``loss_type``); every one but ``bnpo`` is exact
under micro-batching, because every micro-batch is divided by the
denominators of the whole batch (:class:`LossDenominators`):

``grpo``        mean over each completion's tokens, then mean over completions
                (Shao et al. 2024);
``dr_grpo``     sum over all tokens / (completions x max_new_tokens)
                (Liu et al. 2025), no length bias;
``token_mean``  sum over all tokens / total completion tokens (DAPO, Yu et
                al. 2025); ``dapo`` is accepted as another name for it;
``bnpo``        each micro-batch's token sum / that micro-batch's token
                count, averaged over the micro-batches: depends on
                ``micro_batch_size`` by design (TRL's ``bnpo``).

TRL's names against ours (TRL 1.x ``GRPOConfig.loss_type``; TRL's
``per_device_train_batch_size`` is our ``micro_batch_size``):

* TRL ``grpo`` = ours ``grpo``, and TRL ``dr_grpo`` = ours ``dr_grpo``, when
  ``micro_batch_size`` divides the batch (TRL averages per micro-batch, so a
  smaller last micro-batch weighs its sequences more there; ours weighs every
  sequence the same).
* TRL ``dapo`` = ours ``token_mean`` (``dapo`` is accepted as its alias):
  both divide by the token count of the whole batch, in one process and, in
  our multi-process trainer, of the global batch across processes.
* TRL ``bnpo`` = ours ``bnpo``: each micro-batch divided by its own (local)
  token count; in general it equals ``token_mean`` only with one micro-batch
  per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from multireward_grpo.train.config import IMPORTANCE_SAMPLING_LEVELS, LOSS_TYPE_ALIASES, LOSS_TYPES

__all__ = ["LossDenominators", "k3_kl", "loss_mask", "objective_options", "policy_loss"]


@dataclass(frozen=True)
class LossDenominators:
    """Sizes of the whole batch, so micro-batch losses add up exactly.

    Attributes
    ----------
    n_sequences : int
        Completions in the batch (truncated ones included, also when they are
        masked out of the loss).
    n_tokens : int
        Tokens of the batch's loss mask (see :func:`loss_mask`).
    max_new_tokens : int
        Dr. GRPO's constant length.
    n_micro_batches : int
        Micro-batches the batch is split into; only ``bnpo`` uses it.
    """

    n_sequences: int
    n_tokens: int
    max_new_tokens: int
    n_micro_batches: int = 1

    @classmethod
    def of_batch(cls, completion_mask, truncated=None, *, max_new_tokens: int, micro_batch_size: int | None = None,
                 mask_truncated_completions: bool = False) -> "LossDenominators":
        """The denominators of a batch, from the same mask :func:`policy_loss` uses.

        Parameters
        ----------
        completion_mask : (N, Lc) tensor of 0/1
        truncated : (N,) bool tensor, optional
            Needed when ``mask_truncated_completions`` is on.
        max_new_tokens : int
        micro_batch_size : int, optional
            Sequences per micro-batch (None: the whole batch in one).
        mask_truncated_completions : bool
        """
        mask = loss_mask(completion_mask, truncated, mask_truncated_completions=mask_truncated_completions)
        n_sequences = int(mask.shape[0])
        size = n_sequences if micro_batch_size is None else int(micro_batch_size)
        if size < 1:
            raise ValueError(f"micro_batch_size={micro_batch_size!r} must be a positive integer")
        return cls(n_sequences, int(mask.sum()), int(max_new_tokens), max(1, math.ceil(n_sequences / size)))


def loss_mask(completion_mask, truncated=None, *, mask_truncated_completions: bool = False):
    """The tokens that enter the loss: ``completion_mask``, less truncated completions when asked.

    A masked-out completion adds nothing to the loss or its gradient. It
    still counts in ``n_sequences`` (so ``grpo`` and ``dr_grpo`` divide by
    all completions, the truncated ones adding 0, as TRL does), while
    ``token_mean`` and ``bnpo`` divide by the remaining tokens only. When
    every completion of the batch is truncated the loss is exactly 0.

    Parameters
    ----------
    completion_mask : (N, Lc) tensor of 0/1
    truncated : (N,) bool tensor, optional
        Completions cut at ``max_new_tokens`` without an EOS.
    mask_truncated_completions : bool

    Returns
    -------
    (N, Lc) tensor of 0/1, of ``completion_mask``'s dtype (a new tensor when masking).
    """
    if not mask_truncated_completions:
        return completion_mask
    if truncated is None:
        raise ValueError("mask_truncated_completions=True needs the truncated flags (one bool per completion)")
    if tuple(truncated.shape) != (completion_mask.shape[0],):
        raise ValueError(f"truncated has shape {tuple(truncated.shape)} but there are {completion_mask.shape[0]} "
                         "completions; give one flag per completion")
    keep = (~truncated.bool()).to(completion_mask.dtype)
    return completion_mask * keep[:, None]


def objective_options(config) -> dict:
    """The keyword arguments of :func:`policy_loss` that a ``GRPOConfig`` sets."""
    return {
        "clip": config.ppo_clip, "clip_high": config.epsilon_high, "loss_type": config.loss_type,
        "importance_sampling_level": config.importance_sampling_level,
        "mask_truncated_completions": config.mask_truncated_completions, "kl_coef": config.kl_coef,
    }


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token ``exp(q) - q - 1`` with ``q = ref_logp - logp``; >= 0, 0 iff equal."""
    q = ref_logp - logp
    return torch.exp(q) - q - 1.0


def policy_loss(logp, old_logp, advantages, mask, *, clip: float, denominators: LossDenominators,
                loss_type: str = "grpo", ref_logp=None, kl_coef: float = 0.0, clip_high: float | None = None,
                importance_sampling_level: str = "token", truncated=None, mask_truncated_completions: bool = False):
    """Loss of one micro-batch and its (detached) statistics.

    Parameters
    ----------
    logp, old_logp : (b, Lc) tensors
        Token log-probs under the policy (with grad) and when sampled.
    advantages : (b,) tensor
    mask : (b, Lc) tensor of 0/1
        Completion tokens that count.
    clip : float
        PPO epsilon: the ratio's lower bound is ``1 - clip``.
    denominators : LossDenominators
        Sizes of the whole batch this micro-batch belongs to (built with the
        same ``mask_truncated_completions``, see :meth:`LossDenominators.of_batch`).
    loss_type : {"grpo", "dr_grpo", "token_mean", "dapo", "bnpo"}
        ``dapo`` is ``token_mean``.
    ref_logp : (b, Lc) tensor, optional
        Reference log-probs; needed when ``kl_coef > 0``.
    kl_coef : float
    clip_high : float, optional
        The ratio's upper bound is ``1 + clip_high`` (None: ``clip``, symmetric).
    importance_sampling_level : {"token", "sequence"}
        One ratio per token (PPO/GRPO) or one per completion (GSPO).
    truncated : (b,) bool tensor, optional
        Completions cut at ``max_new_tokens``; needed with ``mask_truncated_completions``.
    mask_truncated_completions : bool
        Leave truncated completions out of the loss (see :func:`loss_mask`).

    Returns
    -------
    loss : scalar tensor
        This micro-batch's share of the batch loss.
    stats : dict of float
        Sums over this micro-batch: pg, kl, clipped tokens (all, and those below ``1 - clip`` and above
        ``1 + clip_high`` apart), tokens.
    """
    loss_type = _check_options(loss_type, importance_sampling_level, clip, clip_high)
    clip_high = clip if clip_high is None else clip_high
    mask = loss_mask(mask, truncated, mask_truncated_completions=mask_truncated_completions).to(logp.dtype)
    adv = advantages.to(logp.dtype)[:, None]
    ratio = _importance_ratio(logp, old_logp, mask, importance_sampling_level)  # (b, Lc) or (b, 1)
    unclipped, clipped = ratio * adv, torch.clamp(ratio, 1.0 - clip, 1.0 + clip_high) * adv
    pg = -torch.minimum(unclipped, clipped)
    if pg.shape != logp.shape:  # GSPO: the sequence's term on each of its tokens
        pg = pg.expand_as(logp)  # (b, Lc)
    per_token = pg
    kl = None
    if kl_coef > 0:
        if ref_logp is None:
            raise ValueError("kl_coef > 0 needs ref_logp")
        kl = k3_kl(logp, ref_logp)
        per_token = pg + kl_coef * kl
    loss = _aggregate(per_token, mask, loss_type, denominators)
    with torch.no_grad():
        # the clip bites below 1 - clip only where A < 0, above 1 + clip_high only where A > 0
        low = ((ratio < 1.0 - clip) & (adv < 0)).to(mask.dtype) * mask
        high = ((ratio > 1.0 + clip_high) & (adv > 0)).to(mask.dtype) * mask
        stats = {
            "pg": float(_aggregate(pg, mask, loss_type, denominators)),
            "kl": 0.0 if kl is None else float((kl * mask).sum() / max(denominators.n_tokens, 1)),
            "clipped_tokens": float(low.sum() + high.sum()),
            "clipped_low_tokens": float(low.sum()),
            "clipped_high_tokens": float(high.sum()),
            "tokens": float(mask.sum()),
        }
    return loss, stats


def _check_options(loss_type, importance_sampling_level, clip, clip_high) -> str:
    """The canonical loss type; a bad option raises with the choices."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; use one of {', '.join(LOSS_TYPES)}")
    if importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(f"unknown importance_sampling_level {importance_sampling_level!r}; "
                         f"use one of {', '.join(IMPORTANCE_SAMPLING_LEVELS)}")
    for name, value in (("clip", clip), ("clip_high", clip_high)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return LOSS_TYPE_ALIASES.get(loss_type, loss_type)


def _importance_ratio(logp, old_logp, mask, level: str):
    """Token ratios (b, Lc), or GSPO's length-normalized sequence ratios (b, 1) over the counted tokens."""
    log_ratio = logp - old_logp
    if level == "token":
        return torch.exp(log_ratio)
    # A sequence with no counted token (e.g. a masked truncated one) gets ratio 1; its terms are masked anyway.
    mean_log_ratio = (log_ratio * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    return torch.exp(mean_log_ratio)


def _aggregate(per_token, mask, loss_type, d: LossDenominators):
    masked = per_token * mask
    if loss_type == "grpo":
        return (masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)).sum() / d.n_sequences
    if loss_type == "dr_grpo":
        return masked.sum() / (d.n_sequences * d.max_new_tokens)
    if loss_type == "token_mean":
        return masked.sum() / max(d.n_tokens, 1)
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0) / d.n_micro_batches
    raise ValueError(f"unknown loss_type {loss_type!r}; use one of {', '.join(LOSS_TYPES)}")
