"""Real score projections for Theorem 3: ``g_j = <grad_theta log pi(y_j | x), v>``.

Theorem 3 is about the surrogate gradient ``ghat = (1/m) sum_j A_j g_j``
where ``g_j`` is the score (the gradient of the sequence log-probability) of
rollout ``j`` projected on a direction ``v`` of the trainable parameters.
The theory harness simulates ``g`` by default; this module computes the real
one for a Hugging Face causal LM, so the harness can check the theorem's
independence assumption (``g`` independent of the rewards) and its variance
law on the model's own gradients.

Method: central finite differences of the sequence log-probability along a
fixed random unit direction ``v``,

``g_j = (log pi_{theta + h v}(y_j | x) - log pi_{theta - h v}(y_j | x)) / (2 h)``,

two forward passes per group. The error is ``O(h^2)`` (the third directional
derivative) plus the rounding of the log-probabilities divided by ``2h``; the
log-probabilities are summed in float64. ``v`` is a standard normal vector
over the chosen parameters, one block per parameter drawn from a generator
seeded by ``(direction_seed, parameter name)`` (a stable hash), scaled to unit
norm over all of them, so the same seed gives the same direction in every
process and a resumed corpus continues with it.

The policy is the trainer's: ``log pi`` of a completion is the sum over its
tokens (up to and including the first EOS) of ``log softmax(logits / T)``
with ``T`` the sampling temperature; top-p truncation is not part of it (as
in the trainer's loss).

The model's weights are never modified in place: each parameter's ``.data``
is pointed at a shifted copy and back at the untouched original, so the model
is bit-for-bit unchanged afterwards.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from multireward_grpo._validate import check_choice, check_float, check_int

__all__ = ["PARAMETER_SETS", "ScoreProjection", "ScoreProjector"]

PARAMETER_SETS = ("trainable", "all")
"""Which parameters ``v`` spans: those with ``requires_grad`` (LoRA adapters
when a PEFT model is passed, every weight of a plain model) or all of them."""


@dataclass(frozen=True)
class ScoreProjection:
    """Settings of the score projections (recorded in a corpus header).

    Attributes
    ----------
    direction_seed : int
        Seed of the random unit direction ``v``.
    step : float
        Finite-difference step ``h`` along ``v`` (parameter units; ``|v| = 1``).
        Default 1e-2: on SmolLM2-135M in float32 the projections change by
        less than 1% between ``h = 3e-3`` and ``h = 3e-2`` (rounding of the
        float32 log-probabilities dominates below ~1e-3).
    parameters : {"trainable", "all"}
        The parameters ``v`` spans (see :data:`PARAMETER_SETS`).
    """

    direction_seed: int = 0
    step: float = 1e-2
    parameters: str = "trainable"

    def __post_init__(self):
        check_int("direction_seed", self.direction_seed, 0)
        object.__setattr__(self, "step", check_float("step", self.step, minimum=0.0, strict_minimum=True))
        check_choice("parameters", self.parameters, PARAMETER_SETS)

    def describe(self) -> dict:
        """JSON settings: the method and the fields above."""
        return {"method": "central_finite_difference", **asdict(self)}


class ScoreProjector:
    """Computes ``g_j`` for rollouts of one model along one fixed direction.

    Parameters
    ----------
    model : torch.nn.Module
        A causal LM (a PEFT model spans its adapters with ``"trainable"``).
    settings : ScoreProjection
    share_prompt : bool
        Run each distinct prompt once per forward pass (see :func:`sequence_logprobs`).

    Attributes
    ----------
    dimension : int
        Number of scalar parameters ``v`` spans.
    """

    def __init__(self, model, settings: ScoreProjection = ScoreProjection(), *, share_prompt: bool = True):
        if not isinstance(settings, ScoreProjection):
            raise TypeError(f"settings must be a ScoreProjection, got {type(settings).__name__}")
        self.model, self.settings, self.share_prompt = model, settings, bool(share_prompt)
        named = _named_parameters(model, settings.parameters)
        self._params = [p for _, p in named]
        self._direction = _unit_direction(named, settings.direction_seed)
        self.dimension = sum(p.numel() for p in self._params)

    def direction(self) -> list:
        """The unit direction ``v`` as one tensor per spanned parameter (copies)."""
        return [v.clone() for v in self._direction]

    def project(self, rollouts, *, temperature: float) -> "Any":
        """``(N,)`` float64 numpy array of ``g_j`` for the rows of ``rollouts``.

        Parameters
        ----------
        rollouts : multireward_grpo.train.rollout.Rollouts
            Sampled completions (token ids and masks).
        temperature : float
            The sampling temperature, which the policy's log-probabilities use.
        """
        import torch

        check_float("temperature", temperature, minimum=0.0, strict_minimum=True)
        h = self.settings.step
        with torch.no_grad():
            with self._shifted(h):
                plus = sequence_logprobs(self.model, rollouts, temperature=temperature, share_prompt=self.share_prompt)
            with self._shifted(-h):
                minus = sequence_logprobs(self.model, rollouts, temperature=temperature, share_prompt=self.share_prompt)
        return ((plus - minus) / (2.0 * h)).cpu().numpy()

    @contextmanager
    def _shifted(self, step: float):
        originals = [p.data for p in self._params]
        try:
            for p, v, original in zip(self._params, self._direction, originals):
                p.data = original + step * v.to(original.dtype)
            yield
        finally:
            for p, original in zip(self._params, originals):
                p.data = original


def _named_parameters(model, which: str) -> list:
    named = [(n, p) for n, p in model.named_parameters() if which == "all" or p.requires_grad]
    if not named:
        raise ValueError(f"the model has no {which} parameters to project the score on; "
                         "use ScoreProjection(parameters='all') for a frozen model")
    return named


def _unit_direction(named: list, seed: int) -> list:
    """A standard normal block per parameter (seeded by its name), scaled to unit norm overall."""
    import torch

    from multireward_grpo._seeding import stable_hash64

    blocks, total = [], 0.0
    for name, p in named:
        gen = torch.Generator(device="cpu").manual_seed(stable_hash64(seed, "score-direction", name) % (2**63))
        block = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        total += float(block.square().sum())
        blocks.append(block)
    scale = 1.0 / math.sqrt(total)
    # float64 draws and norm; stored in the parameter's dtype and device, where the shift is added
    return [(b * scale).to(device=p.device, dtype=p.dtype) for b, (_, p) in zip(blocks, named)]


def sequence_logprobs(model, rollouts, *, temperature: float, share_prompt: bool = True):
    """``(N,)`` float64 tensor: ``log pi(y | x)`` of each completion, summed over its masked-in tokens.

    One forward pass over prompt + completion (left-padded prompts, position
    ids from the attention mask, as the trainer does). With ``share_prompt``
    the distinct prompts run once and the completions on top of their cache
    (the trainer's :func:`~multireward_grpo.train.rollout.micro_logprobs`
    layout; ~3x less work for a group of 8 with a long prompt). The
    log-softmax of ``logits / temperature`` is taken in float64 (not
    float32, as the trainer does) so that the finite differences of
    :class:`ScoreProjector` are limited by the model's own precision.
    """
    import torch

    from multireward_grpo.train.rollout import _shared_prompt

    attention = torch.cat([rollouts.prompt_mask, rollouts.completion_mask], dim=1)
    positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
    n_prompt, n_completion = rollouts.prompt_ids.shape[1], rollouts.completion_ids.shape[1]
    cached = _shared_prompt(model, rollouts.prompt_ids, rollouts.prompt_mask, share_prompt)
    if cached:
        # the last prompt token's logits predict the first completion token, so it runs on top of the cache
        input_ids = torch.cat([rollouts.prompt_ids[:, -1:], rollouts.completion_ids], dim=1)
        positions = positions[:, n_prompt - 1:]
    else:
        input_ids = torch.cat([rollouts.prompt_ids, rollouts.completion_ids], dim=1)
    logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                   logits_to_keep=n_completion + 1, use_cache=bool(cached), **cached).logits[:, :-1]  # (N, Lc, V)
    logits = logits.to(torch.float64) / temperature
    picked = logits.gather(-1, rollouts.completion_ids.unsqueeze(-1)).squeeze(-1)
    token_logp = picked - torch.logsumexp(logits, dim=-1)
    return (token_logp * rollouts.completion_mask.to(torch.float64)).sum(dim=1)
