"""The reward-function protocol the trainer consumes.

A reward function scores one completion on ``R`` channels:
``fn(completion, prompt) -> Sequence[float]`` of length ``R``. Channel 0 is
the gate for conditioning (by the package's convention). An object may also
declare ``channel_names`` (a tuple of ``R`` strings) and a batched method
``score_batch(completions, prompts) -> (N, R) array``, which the trainer
prefers when present. :func:`as_reward_function` wraps any of these (a plain
function too) into a :class:`CheckedRewardFunction` that validates every score
and turns errors into messages that name the completion, prompt and channel.
TRL-style functions (``f(prompts, completions, **kwargs)``, one channel each)
go through :func:`~multireward_grpo.rewards.trl_style.from_trl_reward_funcs`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

NAN_POLICIES = ("raise", "omit", "propagate")


@runtime_checkable
class RewardFunction(Protocol):
    """What the trainer calls: ``fn(completion, prompt) -> R channel scores``.

    Attributes
    ----------
    channel_names : tuple of str
        One name per channel, ``R`` in all; channel 0 is the gate for
        conditioning.

    Notes
    -----
    ``__call__(completion, prompt)`` returns a sequence of ``R`` real numbers
    (a list, tuple, 1-d numpy array or tensor). ``prompt`` is the prompt item
    as the user gave it (a string, chat messages, or a dict with metadata such
    as the gold answer).

    An implementation may add ``score_batch(completions, prompts)`` returning
    an ``(N, R)`` array (see :class:`BatchRewardFunction`); the trainer calls
    it instead of ``N`` single calls when it exists.

    Plain functions (without ``channel_names``) are accepted wherever a
    ``RewardFunction`` is: :func:`as_reward_function` names their channels
    ``r0 .. r{R-1}``.
    """

    channel_names: tuple[str, ...]

    def __call__(self, completion: str, prompt: Any) -> Sequence[float]: ...


@runtime_checkable
class BatchRewardFunction(Protocol):
    """A reward function with a batched path: ``score_batch -> (N, R)``."""

    def score_batch(self, completions: list[str], prompts: list) -> Any: ...


class RewardFunctionError(RuntimeError):
    """The user's reward function raised an exception.

    The original exception is chained as ``__cause__`` (so its traceback is
    kept). ``index`` is the completion's position in the batch (None when a
    batched ``score_batch`` call failed as a whole); ``completion`` and
    ``prompt`` are the inputs of the failing call.
    """

    def __init__(self, message: str, *, index: int | None = None, completion: Any = None, prompt: Any = None):
        super().__init__(message)
        self.index = index
        self.completion = completion
        self.prompt = prompt


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` of ``value``, cut to ``limit`` characters for error messages."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}…({len(text)} chars)"


def _default_names(n: int) -> tuple[str, ...]:
    return tuple(f"r{i}" for i in range(n))


def _check_names(names: Any, source: str) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(f"{source} must be a sequence of strings, got {_short(names)}")
    names = tuple(names)
    if not names:
        raise ValueError(f"{source} is empty: a reward function needs at least one channel")
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise TypeError(f"{source} must be non-empty strings, got {_short(bad[0])} in {_short(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{source} has duplicate names: {names}")
    return names


def _check_n_channels(n_channels: Any) -> None:
    if isinstance(n_channels, bool) or not isinstance(n_channels, (int, np.integer)) or n_channels < 1:
        raise ValueError(f"n_channels must be a positive int, got {n_channels!r}")


def _resolve_names(fn: Any, channel_names: Any, n_channels: Any) -> tuple[str, ...] | None:
    """Channel names from the argument, the function's attribute, or ``n_channels``.

    None means "not known yet": they are inferred from the first call.
    """
    if n_channels is not None:
        _check_n_channels(n_channels)
    declared = getattr(fn, "channel_names", None)
    if declared is not None:
        declared = _check_names(declared, "the reward function's channel_names")
    if channel_names is not None:
        names = _check_names(channel_names, "channel_names")
        if declared is not None and len(declared) != len(names):
            raise ValueError(
                f"channel_names={names} has {len(names)} names but the reward function declares "
                f"{len(declared)} channels {declared}; pass {len(declared)} names or leave channel_names unset"
            )
    else:
        names = declared
    if names is None:
        return None if n_channels is None else _default_names(int(n_channels))
    if n_channels is not None and int(n_channels) != len(names):
        raise ValueError(
            f"the reward function has {len(names)} channels {names} but n_channels={n_channels} "
            f"was requested: set n_channels={len(names)} (e.g. use {len(names)} weights), "
            f"or give the function {n_channels} channel_names"
        )
    return names


def _check_nan_policy(nan_policy: str) -> None:
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")


def _to_float(value: Any) -> float | None:
    """``float(value)`` for a real number (bools count as 0/1); None otherwise."""
    if value is None or isinstance(value, (str, bytes, complex, np.complexfloating)):
        return None  # float("1.5") would silently accept a string
    if isinstance(value, (numbers.Real, np.number, np.bool_)):
        return float(value)
    if hasattr(value, "__float__"):  # 0-d tensors and arrays, Decimal
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    return None


def _as_sequence(result: Any) -> list | None:
    """One call's scores as a list (a lone real number is one channel); None
    when ``result`` is not a flat sequence."""
    if hasattr(result, "tolist") and not isinstance(result, (list, tuple)):
        result = result.tolist()  # numpy arrays and scalars, torch tensors
    if _to_float(result) is not None:
        return [result]
    if isinstance(result, (str, bytes)) or not isinstance(result, Sequence):
        return None
    return list(result)


class CheckedRewardFunction:
    """A reward function wrapped with validation; made by :func:`as_reward_function`.

    Attributes
    ----------
    fn : callable
        The wrapped reward function.
    channel_names : tuple of str or None
        The channel names; None until they are inferred from the first call
        when neither the function nor the caller declared them.
    n_channels : int or None
        ``len(channel_names)``, or None while unknown.
    """

    def __init__(self, fn: Any, *, channel_names: Any = None, n_channels: Any = None):
        batch = getattr(fn, "score_batch", None)
        if not callable(fn) and not callable(batch):
            raise TypeError(
                f"a reward function must be callable as fn(completion, prompt) or have a "
                f"score_batch(completions, prompts) method, got {_short(fn)}"
            )
        self.fn = fn
        self._batch = batch if callable(batch) else None
        self._names = _resolve_names(fn, channel_names, n_channels)

    @property
    def channel_names(self) -> tuple[str, ...] | None:
        return self._names

    @property
    def n_channels(self) -> int | None:
        return None if self._names is None else len(self._names)

    def __repr__(self) -> str:
        return f"CheckedRewardFunction({_short(self.fn)}, channel_names={self._names})"

    def with_channels(self, *, channel_names: Sequence[str] | None = None,
                      n_channels: int | None = None) -> CheckedRewardFunction:
        """The same function checked against other channel names or another channel count."""
        return CheckedRewardFunction(self.fn, channel_names=channel_names, n_channels=n_channels)

    def __call__(self, completion: str, prompt: Any, *, nan_policy: str = "raise", context=None) -> np.ndarray:
        """Score one completion: a validated float64 array of shape ``(R,)`` (``context``: see :meth:`score_batch`)."""
        _check_nan_policy(nan_policy)
        _check_completions([completion], [prompt])
        rows = [self._call_one(0, completion, prompt)]
        return self._finish(rows, [completion], [prompt], nan_policy)[0]

    def score_batch(
        self, completions: Sequence[str], prompts: Sequence[Any], *, nan_policy: str = "raise", context=None
    ) -> np.ndarray:
        """Score ``N`` completions: a validated float64 array of shape ``(N, R)``.

        Uses the function's own ``score_batch`` when it has one, else calls it
        once per completion.

        Parameters
        ----------
        completions : sequence of str
            The generated texts.
        prompts : sequence
            The prompt item of each completion (same length as
            ``completions``), passed through to the function unchanged.
        nan_policy : {"raise", "omit", "propagate"}
            ``"raise"`` rejects a NaN score with an error naming the
            completion index, channel and prompt; ``"omit"`` and
            ``"propagate"`` keep NaN in the result for the advantage
            estimator's ``nan_policy`` to handle. Infinite scores are always
            an error.
        context : mapping, optional
            What a trainer knows about the batch beyond the texts
            (``completion_ids``, ``trainer_state``, ``log_extra``,
            ``log_metric``). Functions of the ``fn(completion, prompt)``
            protocol never see it; TRL-style functions get it as keyword
            arguments (see :mod:`~multireward_grpo.rewards.trl_style`).

        Returns
        -------
        numpy.ndarray
            ``(N, R)`` float64. An empty batch gives ``(0, R)`` (``(0, 0)``
            while ``R`` is still unknown).

        Raises
        ------
        RewardFunctionError
            The function raised; the original exception is its ``__cause__``.
        ValueError
            A wrong number of scores, NaN (under ``"raise"``) or inf.
        TypeError
            A score that is not a real number.
        """
        _check_nan_policy(nan_policy)
        completions, prompts = list(completions), list(prompts)
        _check_completions(completions, prompts)
        if not completions:
            return np.zeros((0, self.n_channels or 0))
        if self._batch is not None:
            rows = self._call_batch(completions, prompts)
        else:
            rows = [self._call_one(i, c, p) for i, (c, p) in enumerate(zip(completions, prompts))]
        return self._finish(rows, completions, prompts, nan_policy)

    # ------------------------------------------------------------------ internals

    def _call_one(self, index: int, completion: str, prompt: Any) -> list:
        try:
            result = self.fn(completion, prompt)
        except Exception as err:
            raise RewardFunctionError(
                f"reward function {_name(self.fn)} raised {type(err).__name__}: {err} "
                f"(completion {index}: {_short(completion)}; prompt: {_short(prompt)})",
                index=index,
                completion=completion,
                prompt=prompt,
            ) from err
        return result

    def _call_batch(self, completions: list, prompts: list) -> list:
        try:
            result = self._batch(completions, prompts)
        except Exception as err:
            raise RewardFunctionError(
                f"{_name(self.fn)}.score_batch raised {type(err).__name__}: {err} "
                f"(batch of {len(completions)} completions; first prompt: {_short(prompts[0])})",
                completion=completions,
                prompt=prompts,
            ) from err
        if hasattr(result, "tolist") and not isinstance(result, np.ndarray):
            result = result.tolist()  # torch tensors
        if isinstance(result, np.ndarray) and result.ndim != 2:
            raise ValueError(
                f"{_name(self.fn)}.score_batch returned an array of shape {result.shape}; "
                f"expected (N, R) = ({len(completions)}, {self.n_channels or 'R'})"
            )
        if isinstance(result, (str, bytes)) or not isinstance(result, (Sequence, np.ndarray)):
            raise TypeError(f"{_name(self.fn)}.score_batch returned {_short(result)}; expected an (N, R) array")
        if len(result) != len(completions):
            raise ValueError(
                f"{_name(self.fn)}.score_batch returned {len(result)} rows for {len(completions)} completions"
            )
        return list(result)

    def _finish(self, rows: list, completions: list, prompts: list, nan_policy: str) -> np.ndarray:
        # Names inferred from this call are kept only if the whole call is valid.
        names = self._names
        checked = []
        for i, row in enumerate(rows):
            names, values = self._row(i, row, completions[i], prompts[i], names)
            checked.append(values)
        out = np.array(checked, dtype=np.float64)
        _check_finite(out, nan_policy, names, completions, prompts)
        self._names = names
        return out

    def _row(self, index: int, result: Any, completion: str, prompt: Any, names: tuple | None) -> tuple:
        row = _as_sequence(result)
        if row is None:
            raise TypeError(
                f"reward function {_name(self.fn)} returned {_short(result)} ({type(result).__name__}) "
                f"for completion {index}; expected a sequence of "
                f"{len(names) if names else 'R'} real numbers (prompt: {_short(prompt)})"
            )
        if names is None:
            if not row:
                raise ValueError(
                    f"reward function {_name(self.fn)} returned no scores for completion {index} "
                    f"(prompt: {_short(prompt)}); it must return at least one channel"
                )
            names = _default_names(len(row))  # inferred from the first call
        if len(row) != len(names):
            raise ValueError(
                f"reward function {_name(self.fn)} returned {len(row)} scores for completion {index}, "
                f"expected {len(names)} (channels {names}); prompt: {_short(prompt)}; "
                f"completion: {_short(completion)}"
            )
        values = []
        for channel, value in zip(names, row):
            number = _to_float(value)
            if number is None:
                raise TypeError(
                    f"reward function {_name(self.fn)} returned {_short(value)} ({type(value).__name__}) "
                    f"for completion {index}, channel {channel!r}: scores must be real numbers "
                    f"(return float('nan') for a missing score); prompt: {_short(prompt)}"
                )
            values.append(number)
        return names, values


def _check_completions(completions: list, prompts: list) -> None:
    if len(completions) != len(prompts):
        raise ValueError(
            f"got {len(completions)} completions but {len(prompts)} prompts; pass one prompt per completion"
        )
    for i, completion in enumerate(completions):
        if not isinstance(completion, str):
            raise TypeError(f"completion {i} is {type(completion).__name__}, expected str: {_short(completion)}")


def _check_finite(out: np.ndarray, nan_policy: str, names: tuple, completions: list, prompts: list) -> None:
    """Raise on inf always, and on NaN under ``nan_policy="raise"``."""
    bad = np.isinf(out) if nan_policy != "raise" else ~np.isfinite(out)
    if not bad.any():
        return
    i, j = (int(k) for k in np.argwhere(bad)[0])
    value = out[i, j]
    advice = (
        "rewards must be finite; return float('nan') for a missing score"
        if np.isinf(value)
        else "return a finite score, or pass nan_policy='omit' (or 'propagate') to keep NaN for the estimator"
    )
    raise ValueError(
        f"reward function returned {value} for completion {i} (prompt {i}: {_short(prompts[i])}), "
        f"channel {names[j]!r} ({j}): {advice}; completion: {_short(completions[i])}"
    )


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def as_reward_function(
    fn: Any, *, channel_names: Sequence[str] | None = None, n_channels: int | None = None
) -> CheckedRewardFunction:
    """Wrap a reward function (object or plain function) with validation.

    Parameters
    ----------
    fn : callable or object
        ``fn(completion, prompt) -> Sequence[float]`` of length ``R``, and/or
        an object with ``score_batch(completions, prompts) -> (N, R)``. A
        :class:`CheckedRewardFunction` is returned unchanged when no option
        is given.
    channel_names : sequence of str, optional
        Overrides the function's own ``channel_names`` attribute.
    n_channels : int, optional
        The expected ``R`` (the trainer passes ``len(weights)``). It must
        agree with the channel names when those are known.

    Returns
    -------
    CheckedRewardFunction
        Channel names come from ``channel_names``, else the function's
        ``channel_names`` attribute, else ``r0 .. r{R-1}`` with ``R`` from
        ``n_channels`` or, failing that, from the first call.

    Raises
    ------
    ValueError
        The declared channels and ``n_channels`` disagree (the message says
        what to set).
    TypeError
        ``fn`` is neither callable nor has ``score_batch``.
    """
    if isinstance(fn, CheckedRewardFunction):
        if channel_names is None and (n_channels is None or n_channels == fn.n_channels):
            return fn
        return fn.with_channels(channel_names=channel_names, n_channels=n_channels)
    return CheckedRewardFunction(fn, channel_names=channel_names, n_channels=n_channels)
