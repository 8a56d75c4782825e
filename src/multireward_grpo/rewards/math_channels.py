"""The math reward channels (GSM8K-style).

:class:`MathRewardFunction` scores ``(correctness, length, format)``;
:func:`score_generation` returns the same plus the raw, ungated length for
the conditioning-bias (Prop 4) sweep.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from multireward_grpo.rewards.answers import (
    _find_marked,
    answers_match,
    extract_answer,
    extract_gold_answer,
)
from multireward_grpo.rewards.protocol import _check_names, _short, _to_float


def count_tokens(text: str, tokenize: Any = None) -> int:
    """Number of tokens in ``text``.

    ``tokenize`` may be None (whitespace-separated words), an object with an
    ``encode`` method (a Hugging Face tokenizer: called with
    ``add_special_tokens=False`` so BOS/EOS are not counted; tokenizers whose
    ``encode`` lacks that argument, e.g. tiktoken, are called with the text
    alone), or a callable returning a sequence of tokens. ``encode`` is
    preferred over calling the object, because calling a Hugging Face
    tokenizer returns a dict-like encoding, not tokens.
    """
    if tokenize is None:
        return len(text.split())
    encode = getattr(tokenize, "encode", None)
    if callable(encode):
        try:
            return len(encode(text, add_special_tokens=False))
        except TypeError:
            return len(encode(text))
    if callable(tokenize):
        return len(tokenize(text))
    raise TypeError(f"tokenize must be a callable or have .encode, got {_short(tokenize)}")


def reward_length(generation: str, target_tokens: int = 200, *, tokenize: Any = None) -> float:
    """Length channel: ``1 - tanh(|log(n / target_tokens)|)``, in ``[0, 1]``.

    ``n`` is :func:`count_tokens` of the generation. The reward is 1 at the
    target, symmetric in the log ratio (``n = 2T`` and ``n = T/2`` both give
    ``1 - tanh(log 2) = 0.4``), decreasing toward 0 as the ratio moves away
    from 1 in either direction; in closed form ``2 q^2 / (1 + q^2)`` with
    ``q = min(n/T, T/n)``. An empty generation (``n = 0``) gets 0.
    """
    _check_target(target_tokens)
    n = count_tokens(generation, tokenize)
    if n == 0:
        return 0.0
    return float(1.0 - math.tanh(abs(math.log(n / target_tokens))))


def reward_format(generation: str, *, min_reasoning_words: int = 5) -> float:
    r"""Format channel, in ``{0, 0.5, 1}``.

    * 0.5 for an explicit final-answer marker with a non-empty answer:
      ``\boxed{...}``, ``#### N`` or a phrase "answer is N" / "answer: N"
      (the markers of :func:`extract_answer`; a bare number without a marker
      earns nothing);
    * 0.5 more when at least ``min_reasoning_words`` whitespace-separated
      words of reasoning come before that (final) marker.
    """
    found = _find_marked(generation)
    if found is None:
        return 0.0
    reasoning = len(generation[: found[1]].split())
    return 1.0 if reasoning >= min_reasoning_words else 0.5


def reward_correctness(generation: str, gold_answer: Any, *, rel_tol: float = 1e-6, fallback: bool = True) -> float:
    """Correctness channel (the gate): 1.0 when the answer matches, else 0.0.

    The prediction is :func:`extract_answer` of the generation (with
    ``fallback``), the gold is :func:`extract_gold_answer` of ``gold_answer``
    (GSM8K ``"... #### 72"`` works), compared with :func:`answers_match`.
    """
    pred = extract_answer(generation, fallback=fallback)
    return 1.0 if answers_match(pred, extract_gold_answer(gold_answer), rel_tol=rel_tol) else 0.0


def _check_target(target_tokens: Any) -> None:
    if isinstance(target_tokens, bool) or not isinstance(target_tokens, numbers.Real) or not target_tokens > 0:
        raise ValueError(f"target_tokens must be a positive number, got {target_tokens!r}")
    if not math.isfinite(target_tokens):
        raise ValueError(f"target_tokens must be finite, got {target_tokens!r}")


@dataclass(frozen=True)
class RewardConfig:
    """Settings of the math reward channels (frozen; use ``dataclasses.replace``)."""

    target_tokens: int = 200
    """Length at which the length channel is 1 (see :func:`reward_length`)."""
    weights: tuple = (1.0, 1.0, 0.5)
    """Objective weights of (correctness, length, format), for the estimator
    (``GRPOConfig(weights=...)``); the reward function itself does not apply
    them."""
    contamination_gamma: float = 0.0
    """Prop 4's gamma in [0, 1]: the length channel is multiplied by
    ``c + gamma * (1 - c)`` with ``c`` the gate pass indicator. 0 zero-fills
    the length of incorrect answers (full conditioning), 1 leaves it alone."""
    threshold: float = 0.5
    """The correctness gate passes when ``correctness >= threshold``
    (correctness is 0 or 1 here; use the same value as the estimator's
    ``Conditioning(threshold=...)``)."""

    def __post_init__(self):
        _check_target(self.target_tokens)
        weights = tuple(self.weights) if isinstance(self.weights, (Sequence, np.ndarray)) else self.weights
        if not isinstance(weights, tuple) or len(weights) != 3:
            raise ValueError(
                f"RewardConfig.weights must be 3 numbers (correctness, length, format), got {self.weights!r}"
            )
        if any(_to_float(w) is None or not math.isfinite(float(w)) or float(w) < 0 for w in weights):
            raise ValueError(f"RewardConfig.weights must be finite and >= 0, got {self.weights!r}")
        object.__setattr__(self, "weights", tuple(float(w) for w in weights))
        gamma = _to_float(self.contamination_gamma)
        if gamma is None or not 0.0 <= gamma <= 1.0:
            raise ValueError(f"RewardConfig.contamination_gamma must be in [0, 1], got {self.contamination_gamma!r}")
        threshold = _to_float(self.threshold)
        if threshold is None or not math.isfinite(threshold):
            raise ValueError(f"RewardConfig.threshold must be a finite number, got {self.threshold!r}")


def score_generation(
    generation: str, gold_answer: Any, config: RewardConfig = RewardConfig(), tokenize: Any = None
) -> tuple[float, float, float, float]:
    """Score one generation on the math channels.

    Returns
    -------
    tuple of 4 floats
        ``(correctness, length, format, raw_length)``: ``raw_length`` is
        :func:`reward_length`; ``length = raw_length * (c + gamma * (1 - c))``
        with ``c = 1[correctness >= config.threshold]`` and
        ``gamma = config.contamination_gamma``. The raw channel is returned
        for the conditioning-bias (Prop 4) sweep, which re-gates it.
    """
    correctness = reward_correctness(generation, gold_answer)
    raw = reward_length(generation, config.target_tokens, tokenize=tokenize)
    passed = 1.0 if correctness >= config.threshold else 0.0
    gated = raw * (passed + config.contamination_gamma * (1.0 - passed))
    return correctness, gated, reward_format(generation), raw


_GOLD_KEYS = ("gold", "answer")


def _find_gold(prompt: Any, gold: Any) -> Any:
    if gold is not None:
        return gold
    if isinstance(prompt, dict):
        for key in _GOLD_KEYS:
            if prompt.get(key) is not None:
                return prompt[key]
    if isinstance(prompt, tuple) and len(prompt) == 2:
        return prompt[1]
    raise ValueError(
        f"MathRewardFunction needs the gold answer and found none in the prompt {_short(prompt)}: "
        f"pass prompts as dicts with a 'gold' (or 'answer') field, as (question, gold) tuples, "
        f"or call it with gold=..."
    )


@dataclass
class MathRewardFunction:
    """GSM8K-style reward: channels ``(correctness, length, format)``.

    Channel 0, correctness, is the gate; the length channel is gated by it as
    set by ``config.contamination_gamma`` (0 by default: an incorrect answer
    gets length 0). See :func:`score_generation`.

    The gold answer of a call is found, in this order: the ``gold=``
    argument; ``prompt["gold"]``, then ``prompt["answer"]`` for a dict prompt
    (GSM8K rows have ``answer = "... #### 72"``); ``prompt[1]`` for a
    ``(question, gold)`` tuple. Anything else (a bare string, chat messages)
    raises ValueError saying so.

    Parameters
    ----------
    config : RewardConfig
        Target length, gamma, gate threshold (and the weights to give the
        estimator).
    tokenize : callable or tokenizer, optional
        Token counter for the length channel (see :func:`count_tokens`);
        whitespace words when None.
    channel_names : tuple of 3 str
        Names of the three channels, in order.
    """

    config: RewardConfig = RewardConfig()
    tokenize: Callable[[str], list] | None = None
    channel_names: tuple = ("correctness", "length", "format")

    def __post_init__(self):
        if not isinstance(self.config, RewardConfig):
            raise TypeError(f"config must be a RewardConfig, got {type(self.config).__name__}")
        if self.tokenize is not None and not (
            callable(self.tokenize) or callable(getattr(self.tokenize, "encode", None))
        ):
            raise TypeError(f"tokenize must be a callable or have .encode, got {_short(self.tokenize)}")
        names = _check_names(self.channel_names, "MathRewardFunction.channel_names")
        if len(names) != 3:
            raise ValueError(f"MathRewardFunction has 3 channels; got channel_names={names}")
        self.channel_names = names

    @property
    def n_channels(self) -> int:
        return 3

    def __call__(self, completion: str, prompt: Any = None, *, gold: Any = None) -> tuple[float, float, float]:
        """``(correctness, length, format)`` of one completion."""
        if not isinstance(completion, str):
            raise TypeError(f"completion must be a str, got {type(completion).__name__}")
        scores = score_generation(completion, _find_gold(prompt, gold), self.config, self.tokenize)
        return scores[:3]

    def score_batch(
        self, completions: Sequence[str], prompts: Sequence[Any], *, gold: Sequence[Any] | None = None
    ) -> np.ndarray:
        """``(N, 3)`` float64 scores; ``gold`` optionally gives one gold per completion."""
        completions, prompts = list(completions), list(prompts)
        golds = [None] * len(completions) if gold is None else list(gold)
        if not len(completions) == len(prompts) == len(golds):
            raise ValueError(
                f"got {len(completions)} completions, {len(prompts)} prompts and {len(golds)} gold answers; "
                f"they must have the same length"
            )
        rows = [self(c, p, gold=g) for c, p, g in zip(completions, prompts, golds)]
        return np.array(rows, dtype=np.float64).reshape(len(rows), 3)
