"""TRL-style reward functions as one multi-channel reward function.

TRL's ``GRPOTrainer`` takes ``reward_funcs=[f1, f2, ...]``, each called once
per batch as ``f(prompts=..., completions=..., **kwargs) -> list[float | None]``.
:func:`from_trl_reward_funcs` turns such a list into a
:class:`TRLRewardFunctions`, a checked reward function with one channel per
function (in order, named after the functions), so the same reward code runs
on TRL and on :class:`~multireward_grpo.train.GRPOTrainer` without edits.

What a function receives, as in TRL 1.16 (``GRPOTrainer._calculate_rewards``):

* ``prompts``: one entry per completion, the prompt as the user gave it: a
  plain string, chat messages, or, for a row (a dict, a ``datasets`` row),
  the value of its ``"prompt"`` key. The trainer's ``system_prompt`` is not
  added to it (TRL has none).
* ``completions``: the completion text for a plain-string prompt; for a chat
  prompt, ``[{"role": "assistant", "content": text}]``. TRL picks one format
  for the whole batch from its first prompt; here each completion follows its
  own prompt, which is the same whenever the prompts share a format (always
  for a ``datasets.Dataset``).
* ``completion_ids``: the completion's token ids up to and including its
  first EOS, one ``list[int]`` per completion (None outside a trainer, e.g.
  a direct :meth:`TRLRewardFunctions.score_batch` call).
* one keyword per column of the row other than ``"prompt"``, each a list
  aligned with the completions. Columns named ``"completion"`` or
  ``"completion_ids"`` are dropped, as TRL drops them; columns named like
  another keyword argument are refused.
* ``trainer_state``: a ``transformers.TrainerState`` whose ``global_step``
  and ``max_steps`` count optimizer updates, as in TRL (None outside a
  trainer).
* ``log_metric(name, value)``: the step's mean of each name joins the
  trainer's history; ``log_extra(column, values)``: accepted and discarded
  (this trainer keeps no completions table). Both are no-ops outside a
  trainer.

Not supported (refused with a message): model ids and ``nn.Module`` reward
models (wrap a model in a function), TRL's ``environments``. Async reward
functions are supported: the batch's async functions run concurrently.

Differences from TRL worth knowing: rewards are kept in float64 (TRL stores
float32); a ``None`` (missing reward) is NaN and is then handled by the
trainer's ``nan_policy`` (``"raise"`` refuses it, with the function and the
completion named); an infinite reward is always an error.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from multireward_grpo.rewards.protocol import (
    CheckedRewardFunction,
    RewardFunctionError,
    _check_completions,
    _check_finite,
    _check_names,
    _check_nan_policy,
    _short,
    _to_float,
)

__all__ = ["RewardMetricLog", "TRLRewardFunctions", "from_trl_reward_funcs", "trl_completion", "trl_function_name"]

PASSED_KWARGS = ("completion_ids", "trainer_state", "log_extra", "log_metric")
"""The keyword arguments every call passes besides ``prompts``, ``completions`` and the columns."""
DROPPED_COLUMNS = ("prompt", "completion", "completion_ids")
"""Row keys that never become keyword arguments (TRL drops the same three)."""
RESERVED_COLUMNS = ("prompts", "completions", "trainer_state", "log_extra", "log_metric")
"""Column names refused: they would collide with a keyword argument of the call."""


def trl_function_name(func: Any) -> str:
    """The channel name of a reward function: its ``__name__`` (through ``functools.partial``), else its class name."""
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", None) or type(func).__name__


def _is_async(func: Any) -> bool:
    """Whether calling ``func`` returns a coroutine (functions, partials and instances with ``async def __call__``)."""
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)


def _is_conversational(prompt: Any) -> bool:
    """TRL's test: a non-empty list of messages whose first is a dict with a ``role``."""
    return (isinstance(prompt, (list, tuple)) and len(prompt) > 0 and isinstance(prompt[0], dict)
            and "role" in prompt[0])


def trl_completion(text: str, prompt: Any) -> Any:
    """The completion as TRL hands it to reward functions: the text, or one assistant message for a chat prompt."""
    return [{"role": "assistant", "content": text}] if _is_conversational(prompt) else text


# --------------------------------------------------------------------------- construction


def _check_function(index: int, func: Any) -> None:
    if isinstance(func, str):
        raise TypeError(f"reward_funcs[{index}] is the model id {func!r}: reward models are not supported here; "
                        "load the model yourself and wrap it in a function f(prompts, completions, **kwargs)")
    if callable(getattr(func, "forward", None)) and callable(getattr(func, "parameters", None)):
        raise TypeError(f"reward_funcs[{index}] is a model ({type(func).__name__}): reward models are not supported "
                        "here; wrap it in a function f(prompts, completions, **kwargs) that returns one float per "
                        "completion")
    if not callable(func):
        raise TypeError(f"reward_funcs[{index}] is {_short(func)} ({type(func).__name__}), not a function; "
                        "TRL-style reward functions are called as f(prompts, completions, **kwargs)")


def _looks_per_completion(parameters: Sequence[str]) -> bool:
    return len(parameters) >= 2 and parameters[0] in ("completion", "text", "response") and parameters[1] == "prompt"


def _check_signature(index: int, func: Any, kwarg_names: Sequence[str], *, complete: bool = True) -> None:
    """Refuse a function that cannot take ``f(prompts=..., completions=..., **kwargs)`` with these names.

    ``complete=False`` accepts required parameters not among ``kwarg_names``:
    they may be columns of prompts not seen yet.
    """
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return  # builtins and C callables without a signature: their call will tell
    bind = signature.bind if complete else signature.bind_partial
    try:
        bind(prompts=None, completions=None, **dict.fromkeys(kwarg_names))
    except TypeError as err:
        names = list(signature.parameters)
        hint = ("; it looks like a per-completion reward function f(completion, prompt): pass it as reward_fn, "
                "not in reward_funcs" if _looks_per_completion(names) else
                "; give it the signature f(prompts, completions, **kwargs)")
        raise TypeError(
            f"reward function {trl_function_name(func)!r} (reward_funcs[{index}]) has parameters ({', '.join(names)}) "
            f"but is called as f(prompts=..., completions=..., {', '.join(f'{k}=...' for k in kwarg_names)}): "
            f"{err}{hint}"
        ) from None


def _unique_names(funcs: Sequence[Any]) -> tuple[str, ...]:
    """Function names; a name shared by several functions (two lambdas) gets its position appended."""
    names = [trl_function_name(f) for f in funcs]
    return tuple(f"{n}_{i}" if names.count(n) > 1 else n for i, n in enumerate(names))


# --------------------------------------------------------------------------- prompts and columns


def _row_prompt(index: int, item: Any) -> tuple[Any, dict]:
    """``(prompt, columns)`` of one prompt item: a row's ``"prompt"`` and its other keys, or the item itself."""
    if isinstance(item, Mapping):
        if "prompt" not in item:
            raise ValueError(
                f"prompt {index} is a row with keys {sorted(item)} but no 'prompt': TRL-style reward functions "
                "read the prompt from a 'prompt' key (TRL's dataset format); rename the prompt's key to 'prompt'"
            )
        columns = {k: v for k, v in item.items() if k not in DROPPED_COLUMNS}
        reserved = sorted(set(columns) & set(RESERVED_COLUMNS))
        if reserved:
            raise ValueError(f"prompt {index} has a column {reserved[0]!r}, which is also a keyword argument of "
                             "TRL-style reward functions; rename that column")
        return item["prompt"], columns
    return item, {}


def split_prompts(items: Sequence[Any]) -> tuple[list, dict[str, list]]:
    """The TRL view of prompt items: ``(prompts, columns)``, each column a list aligned with ``items``.

    Every item must have the same columns (the first item's), as the rows of
    one dataset do.

    Parameters
    ----------
    items : sequence, length N
        Strings, chat messages, or rows (dicts with a ``"prompt"`` key).

    Returns
    -------
    prompts : list, length N
    columns : dict of str to list (each of length N)
    """
    prompts, columns = [], {}
    expected = None
    for index, item in enumerate(items):
        prompt, row = _row_prompt(index, item)
        if expected is None:
            expected = sorted(row)
            columns = {k: [] for k in expected}
        elif sorted(row) != expected:
            raise ValueError(
                f"prompt {index} has the columns {sorted(row)} but prompt 0 has {expected}: TRL-style reward "
                "functions get one keyword argument per column, so every prompt needs the same columns"
            )
        prompts.append(prompt)
        for key in expected:
            columns[key].append(row[key])
    return prompts, columns


# --------------------------------------------------------------------------- the metric log


class RewardMetricLog:
    """What ``log_metric`` and ``log_extra`` write during one step.

    ``log_metric(name, value)`` keeps every value under ``name``;
    :meth:`means` gives each name's mean over the step (TRL averages the same
    way per logging step). ``log_extra(column, values)`` checks its
    arguments and discards the values: this trainer has no completions
    table.
    """

    def __init__(self):
        self.values: dict[str, list[float]] = defaultdict(list)

    def log_metric(self, name: str, value: float) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"log_metric: name must be a non-empty string, got {_short(name)}")
        number = _to_float(value)
        if number is None:
            raise TypeError(f"log_metric({name!r}, ...): the value must be a real number, got {_short(value)}")
        self.values[name].append(number)

    def log_extra(self, column: str, values: Sequence[Any]) -> None:
        if not isinstance(column, str) or not column:
            raise TypeError(f"log_extra: column must be a non-empty string, got {_short(column)}")

    def means(self) -> dict[str, float]:
        """``{name: mean of the values logged under it}``."""
        return {name: math.fsum(values) / len(values) for name, values in self.values.items()}


# --------------------------------------------------------------------------- the adapter


class TRLRewardFunctions(CheckedRewardFunction):
    """TRL-style reward functions as one checked reward function with one channel per function.

    Made by :func:`from_trl_reward_funcs`; see the module docstring for what
    each function receives.

    Attributes
    ----------
    funcs : tuple of callable
        The reward functions, channel ``l`` being ``funcs[l]``.
    fn : tuple of callable
        The same tuple (the attribute every checked reward function has).
    channel_names : tuple of str
        One per function: its ``__name__`` unless overridden.
    """

    def __init__(self, funcs: Sequence[Any], *, channel_names: Sequence[str] | None = None):
        if isinstance(funcs, (str, bytes, Mapping)) or not isinstance(funcs, Sequence) or callable(funcs):
            raise TypeError(f"reward_funcs must be a list of reward functions, got {_short(funcs)}"
                            + ("; wrap it: [f]" if callable(funcs) else ""))
        if not funcs:
            raise ValueError("reward_funcs is empty: pass at least one reward function")
        for index, func in enumerate(funcs):
            _check_function(index, func)
            _check_signature(index, func, PASSED_KWARGS, complete=False)
        self.funcs = self.fn = tuple(funcs)
        self._batch = None
        if channel_names is None:
            self._names = _check_names(_unique_names(funcs), "the names of reward_funcs (rename a function, or "
                                                            "pass channel_names to from_trl_reward_funcs)")
        else:
            self._names = _check_names(channel_names, "channel_names")
        if len(self._names) != len(self.funcs):
            raise ValueError(f"channel_names has {len(self._names)} names but reward_funcs has {len(self.funcs)} "
                             "functions; give one name per function")

    def __repr__(self) -> str:
        return f"TRLRewardFunctions({', '.join(self._names)})"

    def with_channels(self, *, channel_names: Sequence[str] | None = None,
                      n_channels: int | None = None) -> TRLRewardFunctions:
        """The same functions under other channel names; ``n_channels`` must be the number of functions."""
        if n_channels is not None and n_channels != len(self.funcs):
            raise ValueError(
                f"reward_funcs has {len(self.funcs)} functions {self._names} but {n_channels} channels were "
                f"requested: give one weight per reward function ({len(self.funcs)} weights)"
            )
        names = self._names if channel_names is None else channel_names
        return TRLRewardFunctions(self.funcs, channel_names=names)

    def check_prompts(self, items: Sequence[Any], name: str = "prompts") -> None:
        """Fail early on prompts these functions cannot take: no ``"prompt"`` key, uneven columns, or a
        column a function has no parameter for (and no ``**kwargs``)."""
        if not items:
            return
        try:
            _, columns = split_prompts(items)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
        for index, func in enumerate(self.funcs):
            _check_signature(index, func, PASSED_KWARGS + tuple(columns))

    def __call__(self, completion: str, prompt: Any, *, nan_policy: str = "raise", context=None) -> np.ndarray:
        """Score one completion: ``(R,)`` float64."""
        return self.score_batch([completion], [prompt], nan_policy=nan_policy, context=context)[0]

    def score_batch(self, completions: Sequence[str], prompts: Sequence[Any], *, nan_policy: str = "raise",
                    context: Mapping[str, Any] | None = None) -> np.ndarray:
        """Call every function once on the batch: ``(N, R)`` float64, NaN where a function returned None.

        Parameters
        ----------
        completions : sequence of str, length N
            The completion texts (turned into TRL's format per prompt).
        prompts : sequence, length N
            The prompt item of each completion: a string, chat messages, or a
            row with a ``"prompt"`` key and columns.
        nan_policy : {"raise", "omit", "propagate"}
            ``"raise"`` refuses a missing (None or NaN) reward, naming the
            function and the completion; the others keep NaN for the
            advantage estimator.
        context : mapping, optional
            ``completion_ids`` (N lists of ints), ``trainer_state``,
            ``log_extra`` and ``log_metric`` for the call; a missing id list
            or state is None, a missing log function a no-op.

        Raises
        ------
        RewardFunctionError
            A function raised; the message names it.
        ValueError
            A function returned the wrong number of rewards, a missing reward
            under ``nan_policy="raise"``, or inf.
        TypeError
            A reward that is neither a real number nor None (the message names
            the function and the completion index).
        """
        _check_nan_policy(nan_policy)
        completions, items = list(completions), list(prompts)
        _check_completions(completions, items)
        if not completions:
            return np.zeros((0, len(self.funcs)))
        context = _check_context(context, len(completions))
        # A copy, so a function that edits its inputs cannot change the prompts of later steps.
        trl_prompts, columns = copy.deepcopy(split_prompts(items))
        kwargs = {"completion_ids": None, "trainer_state": None, **_no_op_logs(), **context, **columns}
        trl_completions = [trl_completion(text, p) for text, p in zip(completions, trl_prompts)]
        outputs = self._call_all(trl_prompts, trl_completions, kwargs)
        out = np.column_stack([self._column(i, output, completions, items) for i, output in enumerate(outputs)])
        self._check_missing(out, nan_policy, completions, items)
        _check_finite(out, nan_policy, self._names, completions, items)
        return out

    # ------------------------------------------------------------------ internals

    def _call_all(self, prompts: list, completions: list, kwargs: dict) -> list:
        """Every function's output, in order; the async ones run concurrently."""
        outputs, pending = [None] * len(self.funcs), {}
        for index, func in enumerate(self.funcs):
            _check_signature(index, func, list(kwargs))  # a missing column is named, not a TypeError from inside
            call = functools.partial(self._call_one, index, func, prompts, completions, kwargs)
            if _is_async(func):
                pending[index] = call
            else:
                outputs[index] = call()
        if pending:
            for index, output in zip(pending, _run_async([call() for call in pending.values()])):
                outputs[index] = output
        return outputs

    def _call_one(self, index: int, func: Any, prompts: list, completions: list, kwargs: dict) -> Any:
        """One function's call (its coroutine, for an async function), its errors named."""
        try:
            result = func(prompts=prompts, completions=completions, **kwargs)
        except Exception as err:
            raise self._error(index, err, prompts) from err
        if inspect.iscoroutine(result):
            return self._named(index, result, prompts)
        return result

    async def _named(self, index: int, coroutine: Any, prompts: list) -> Any:
        try:
            return await coroutine
        except Exception as err:
            raise self._error(index, err, prompts) from err

    def _error(self, index: int, err: Exception, prompts: list) -> RewardFunctionError:
        return RewardFunctionError(
            f"reward function {self._names[index]!r} (reward_funcs[{index}]) raised {type(err).__name__}: {err} "
            f"(batch of {len(prompts)} completions; first prompt: {_short(prompts[0])})",
            prompt=prompts,
        )

    def _column(self, index: int, output: Any, completions: list, items: list) -> np.ndarray:
        """One function's output as an (N,) float64 column, None -> NaN."""
        name = self._names[index]
        if hasattr(output, "tolist") and not isinstance(output, (list, tuple)):
            output = output.tolist()  # numpy arrays, torch tensors
        if isinstance(output, (str, bytes, Mapping)) or not isinstance(output, Sequence):
            raise TypeError(f"reward function {name!r} returned {_short(output)} ({type(output).__name__}); "
                            f"expected a list of {len(completions)} rewards (floats, or None where it has none)")
        if len(output) != len(completions):
            raise ValueError(f"reward function {name!r} returned {len(output)} rewards for {len(completions)} "
                             "completions: it must return one reward per completion (None where it has none)")
        column = np.empty(len(completions))
        for i, value in enumerate(output):
            number = math.nan if value is None else _to_float(value)
            if number is None:
                raise TypeError(
                    f"reward function {name!r} returned {_short(value)} ({type(value).__name__}) for completion {i}: "
                    f"rewards must be real numbers, or None for a missing reward; prompt: {_short(items[i])}; "
                    f"completion: {_short(completions[i])}"
                )
            column[i] = number
        return column

    def _check_missing(self, out: np.ndarray, nan_policy: str, completions: list, items: list) -> None:
        if nan_policy != "raise" or not np.isnan(out).any():
            return
        i, j = (int(k) for k in np.argwhere(np.isnan(out))[0])
        raise ValueError(
            f"reward function {self._names[j]!r} returned no reward (None or NaN) for completion {i} "
            f"(prompt: {_short(items[i])}; completion: {_short(completions[i])}); with nan_policy='raise' every "
            "reward must be present: return a number, or set nan_policy='omit' (or 'propagate') to let the "
            "estimator handle missing rewards"
        )


def _check_context(context: Mapping[str, Any] | None, n_completions: int) -> dict:
    context = dict(context or {})
    unknown = sorted(set(context) - set(PASSED_KWARGS))
    if unknown:
        raise ValueError(f"context has the unknown keys {unknown}; it may hold {list(PASSED_KWARGS)}")
    ids = context.get("completion_ids")
    if ids is not None and len(ids) != n_completions:
        raise ValueError(f"context['completion_ids'] has {len(ids)} entries for {n_completions} completions; "
                         "pass one list of token ids per completion")
    return context


def _no_op_logs() -> dict:
    log = RewardMetricLog()
    return {"log_extra": log.log_extra, "log_metric": log.log_metric}


def _run_async(coroutines: list) -> list:
    """Await ``coroutines`` concurrently; in a thread of its own when this thread already runs an event loop."""

    async def gather():
        return await asyncio.gather(*coroutines)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(gather())
    with ThreadPoolExecutor(max_workers=1) as pool:  # asyncio.run cannot nest inside a running loop (Jupyter)
        return pool.submit(asyncio.run, gather()).result()


def from_trl_reward_funcs(reward_funcs: Sequence[Any], *,
                          channel_names: Sequence[str] | None = None) -> TRLRewardFunctions:
    """Use TRL-style reward functions as one reward function with a channel per function.

    Parameters
    ----------
    reward_funcs : list of callable, length R
        Each ``f(prompts, completions, **kwargs) -> list[float | None]`` (or
        an ``async def``), exactly as passed to TRL's ``GRPOTrainer``.
    channel_names : sequence of str, optional
        One per function; default: each function's ``__name__`` (a name
        shared by several functions gets its position appended: ``<lambda>_0``).

    Returns
    -------
    TRLRewardFunctions
        ``score_batch(completions, prompts) -> (N, R)``; channel ``l`` holds
        ``reward_funcs[l]``'s rewards, NaN where it returned None.

    Raises
    ------
    TypeError
        An entry is a model id, a model, not callable, or cannot be called as
        ``f(prompts=..., completions=..., completion_ids=..., trainer_state=...,
        log_extra=..., log_metric=...)``.
    ValueError
        An empty list, or ``channel_names`` of the wrong length.
    """
    return TRLRewardFunctions(reward_funcs, channel_names=channel_names)
