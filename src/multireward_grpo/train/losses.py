"""The GRPO objective: clipped token-ratio policy loss plus a per-token k3 KL.

Per token ``t`` of completion ``i`` with advantage ``A_i``:

* ``r = exp(logp - logp_old)``; the PPO term is
  ``-min(r A_i, clip(r, 1 - eps, 1 + eps) A_i)`` (Schulman et al. 2017).
  With one update per batch ``logp_old = logp.detach()``: ``r = 1`` in value
  and the gradient is the plain policy gradient.
* ``q = logp_ref - logp``; the KL term is ``k3 = exp(q) - q - 1`` (Schulman,
  "Approximating KL divergence", 2020), an unbiased, non-negative per-token
  estimator of ``KL(pi || pi_ref)`` whose gradient pulls toward the reference.
  (The mean of ``logp - logp_ref`` over the policy's own samples, as a loss,
  has zero expected gradient: it pulls nowhere.)

Aggregation over tokens (``loss_type``), exact under micro-batching because
every micro-batch is divided by the denominators of the whole batch:

``grpo``        mean over each completion's tokens, then mean over completions
                (Shao et al. 2024);
``dr_grpo``     sum over all tokens / (completions x max_new_tokens)
                (Liu et al. 2025), no length bias;
``token_mean``  sum over all tokens / total completion tokens (DAPO).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LossDenominators", "k3_kl", "policy_loss"]


@dataclass(frozen=True)
class LossDenominators:
    """Sizes of the whole batch, so micro-batch losses add up exactly."""

    n_sequences: int
    n_tokens: int
    max_new_tokens: int


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token ``exp(q) - q - 1`` with ``q = ref_logp - logp``; >= 0, 0 iff equal."""
    q = ref_logp - logp
    return torch.exp(q) - q - 1.0


def policy_loss(logp, old_logp, advantages, mask, *, clip: float, denominators: LossDenominators,
                loss_type: str = "grpo", ref_logp=None, kl_coef: float = 0.0):
    """Loss of one micro-batch and its (detached) statistics.

    Parameters
    ----------
    logp, old_logp : (b, Lc) tensors
        Token log-probs under the policy (with grad) and when sampled.
    advantages : (b,) tensor
    mask : (b, Lc) tensor of 0/1
        Completion tokens that count.
    clip : float
        PPO epsilon.
    denominators : LossDenominators
        Sizes of the whole batch this micro-batch belongs to.
    loss_type : {"grpo", "dr_grpo", "token_mean"}
    ref_logp : (b, Lc) tensor, optional
        Reference log-probs; needed when ``kl_coef > 0``.
    kl_coef : float

    Returns
    -------
    loss : scalar tensor
        This micro-batch's share of the batch loss.
    stats : dict of float
        Sums over this micro-batch (pg, kl, clipped tokens, tokens).
    """
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype)[:, None]
    ratio = torch.exp(logp - old_logp)
    unclipped, clipped = ratio * adv, torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * adv
    pg = -torch.minimum(unclipped, clipped)  # (b, Lc)
    per_token = pg
    kl = None
    if kl_coef > 0:
        if ref_logp is None:
            raise ValueError("kl_coef > 0 needs ref_logp")
        kl = k3_kl(logp, ref_logp)
        per_token = pg + kl_coef * kl
    loss = _aggregate(per_token, mask, loss_type, denominators)
    with torch.no_grad():
        outside = ((ratio < 1.0 - clip) & (adv < 0)) | ((ratio > 1.0 + clip) & (adv > 0))
        stats = {
            "pg": float(_aggregate(pg, mask, loss_type, denominators)),
            "kl": 0.0 if kl is None else float((kl * mask).sum() / denominators.n_tokens),
            "clipped_tokens": float((outside.to(mask.dtype) * mask).sum()),
            "tokens": float(mask.sum()),
        }
    return loss, stats


def _aggregate(per_token, mask, loss_type, d: LossDenominators):
    masked = per_token * mask
    if loss_type == "grpo":
        return (masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)).sum() / d.n_sequences
    if loss_type == "dr_grpo":
        return masked.sum() / (d.n_sequences * d.max_new_tokens)
    if loss_type == "token_mean":
        return masked.sum() / max(d.n_tokens, 1)
    raise ValueError(f"unknown loss_type {loss_type!r}; use grpo, dr_grpo or token_mean")
