"""Reward functions: the protocol the trainer consumes, and the math channels.

- :mod:`~multireward_grpo.rewards.protocol`: the protocol
  (:class:`RewardFunction`, :class:`BatchRewardFunction`) and
  :func:`as_reward_function`, which wraps any of them into a
  :class:`CheckedRewardFunction` that validates every score and names the
  completion, prompt and channel in its errors.
- :mod:`~multireward_grpo.rewards.trl_style`: TRL-style reward functions
  (``f(prompts, completions, **kwargs) -> list[float | None]``, one channel
  each) as one reward function: :func:`from_trl_reward_funcs`,
  :class:`TRLRewardFunctions`.
- :mod:`~multireward_grpo.rewards.answers`: answer extraction and comparison
  (:func:`extract_answer`, :func:`parse_number`, :func:`normalize_answer`,
  :func:`answers_match`).
- :mod:`~multireward_grpo.rewards.math_channels`: the GSM8K-style channels
  ``(correctness, length, format)``: :class:`MathRewardFunction`,
  :func:`score_generation`, :class:`RewardConfig`.

Everything is importable from ``multireward_grpo.rewards`` as before. This
package imports numpy only (plus the standard library).
"""

from multireward_grpo.rewards.answers import (
    answers_match,
    extract_answer,
    extract_gold_answer,
    normalize_answer,
    parse_number,
)
from multireward_grpo.rewards.math_channels import (
    MathRewardFunction,
    RewardConfig,
    count_tokens,
    reward_correctness,
    reward_format,
    reward_length,
    score_generation,
)
from multireward_grpo.rewards.protocol import (
    BatchRewardFunction,
    CheckedRewardFunction,
    RewardFunction,
    RewardFunctionError,
    as_reward_function,
)
from multireward_grpo.rewards.trl_style import TRLRewardFunctions, from_trl_reward_funcs

__all__ = [
    "BatchRewardFunction",
    "CheckedRewardFunction",
    "MathRewardFunction",
    "RewardConfig",
    "RewardFunction",
    "RewardFunctionError",
    "TRLRewardFunctions",
    "answers_match",
    "as_reward_function",
    "count_tokens",
    "extract_answer",
    "extract_gold_answer",
    "from_trl_reward_funcs",
    "normalize_answer",
    "parse_number",
    "reward_correctness",
    "reward_format",
    "reward_length",
    "score_generation",
]
