"""Evaluation: mean reward per channel with standard errors across prompts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["EvalResult", "eval_rewards", "evaluate_model", "summarize"]


@dataclass(frozen=True)
class EvalResult:
    """Per-channel and aggregate means over ``P`` prompts x ``m`` completions.

    Standard errors are across prompts (the prompt is the unit: completions
    of one prompt are not independent draws of the task).
    """

    channel_names: tuple
    means: np.ndarray
    """(R,) mean reward per channel."""
    stderrs: np.ndarray
    """(R,) standard error of each mean across prompts."""
    aggregate_mean: float
    """Mean of ``w.r``."""
    aggregate_stderr: float
    n_prompts: int
    m: int
    per_prompt: np.ndarray
    """(P, R) mean reward of each prompt."""

    def to_dict(self) -> dict:
        return {
            "channel_names": list(self.channel_names), "means": self.means.tolist(), "stderrs": self.stderrs.tolist(),
            "aggregate_mean": self.aggregate_mean, "aggregate_stderr": self.aggregate_stderr,
            "n_prompts": self.n_prompts, "m": self.m,
        }


def summarize(rewards: np.ndarray, weights, channel_names, m: int) -> EvalResult:
    """rewards (P, m, R) -> EvalResult."""
    per_prompt = np.nanmean(rewards, axis=1)  # (P, R)
    P = per_prompt.shape[0]
    se = np.nanstd(per_prompt, axis=0, ddof=1) / np.sqrt(P) if P > 1 else np.full(per_prompt.shape[1], np.nan)
    aggregate = per_prompt @ np.asarray(weights, dtype=float)
    agg_se = float(np.std(aggregate, ddof=1) / np.sqrt(P)) if P > 1 else float("nan")
    return EvalResult(tuple(channel_names), per_prompt.mean(0), se, float(aggregate.mean()), agg_se, P, m, per_prompt)


def evaluate_model(model, tokenizer, reward, items, *, m: int, seed: int, weights, max_new_tokens: int,
                   temperature: float, top_p: float = 1.0, batch_size: int = 32, nan_policy: str = "raise",
                   share_prompt: bool = True, progress: Callable[[int, int], None] | None = None,
                   reward_context: dict | None = None) -> EvalResult:
    """Sample ``m`` completions per prompt item and score them.

    Parameters
    ----------
    model, tokenizer
        A causal LM (with or without an adapter) and its tokenizer.
    reward
        A checked reward function (``multireward_grpo.rewards.as_reward_function``).
    items : list of PromptItem
    m : int
        Completions per prompt.
    seed : int
        Sampling seed, so two models are compared on the same random stream.
    share_prompt : bool
        Run each prompt once and share its KV cache across its ``m`` samples.
    progress : callable, optional
        ``progress(prompts_done, prompts_total)``, called after each
        generation batch (a prompt counts once all its ``m`` completions are
        sampled); the CLI draws its progress bar with it.
    reward_context : dict, optional
        More of the reward's ``context`` (e.g. ``trainer_state``); the
        completions' token ids are always in it.
    """
    rewards = eval_rewards(model, tokenizer, reward, items, m=m, max_new_tokens=max_new_tokens,
                           temperature=temperature, top_p=top_p, batch_size=batch_size, nan_policy=nan_policy,
                           share_prompt=share_prompt, progress=progress, reward_context=reward_context,
                           generator_seed=seed)
    return summarize(rewards, weights, reward.channel_names, m)


def eval_rewards(model, tokenizer, reward, items, *, m: int, max_new_tokens: int, temperature: float,
                 top_p: float = 1.0, batch_size: int = 32, nan_policy: str = "raise", share_prompt: bool = True,
                 progress: Callable[[int, int], None] | None = None, reward_context: dict | None = None,
                 generator_seed: int | None = None, row_seeds=None) -> np.ndarray:
    """The ``(P, m, R)`` rewards of ``m`` completions per prompt item (see :func:`evaluate_model`).

    ``row_seeds`` (``P * m`` ints) give each row its own random stream (see
    :func:`~multireward_grpo.train.rollout.sample_completions`), so a
    prompt's samples do not depend on which process or batch evaluates it;
    otherwise ``generator_seed`` seeds torch's global stream.
    """
    from multireward_grpo.train.rollout import render_prompts, sample_completions

    model.eval()
    rollouts = sample_completions(model, tokenizer, render_prompts(tokenizer, items), m=m,
                                  max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                  batch_size=batch_size, generator_seed=generator_seed, share_prompt=share_prompt,
                                  progress=_per_prompt(progress, m), row_seeds=row_seeds)
    originals = [items[i // m].original for i in range(len(rollouts))]
    context = {"completion_ids": rollouts.completion_id_lists(), **(reward_context or {})}
    rewards = reward.score_batch(rollouts.texts, originals, nan_policy=nan_policy, context=context)
    return rewards.reshape(len(items), m, -1)


def _per_prompt(progress: Callable[[int, int], None] | None, m: int) -> Callable[[int, int], None] | None:
    """A generation-row callback that reports whole prompts (``m`` rows each) to ``progress``."""
    if progress is None:
        return None
    return lambda rows_done, rows_total: progress(rows_done // m, rows_total // m)
