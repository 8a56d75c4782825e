"""Reward functions: the protocol the trainer consumes, and the math channels.

Two parts.

**The protocol.** A reward function scores one completion on ``R`` channels:
``fn(completion, prompt) -> Sequence[float]`` of length ``R``. Channel 0 is
the gate for conditioning (by the package's convention). An object may also
declare ``channel_names`` (a tuple of ``R`` strings) and a batched method
``score_batch(completions, prompts) -> (N, R) array``, which the trainer
prefers when present. :func:`as_reward_function` wraps any of these (a plain
function too) into a :class:`CheckedRewardFunction` that validates every score
and turns errors into messages that name the completion, prompt and channel.

**The math channels** (GSM8K-style): :class:`MathRewardFunction` scores
``(correctness, length, format)``; :func:`score_generation` returns the same
plus the raw, ungated length for the conditioning-bias (Prop 4) sweep. The
answer extraction (:func:`extract_answer`, :func:`parse_number`,
:func:`normalize_answer`, :func:`answers_match`) is documented on each
function.

This module imports numpy only (plus the standard library).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "BatchRewardFunction",
    "CheckedRewardFunction",
    "MathRewardFunction",
    "RewardConfig",
    "RewardFunction",
    "RewardFunctionError",
    "answers_match",
    "as_reward_function",
    "count_tokens",
    "extract_answer",
    "extract_gold_answer",
    "normalize_answer",
    "parse_number",
    "reward_correctness",
    "reward_format",
    "reward_length",
    "score_generation",
]

NAN_POLICIES = ("raise", "omit", "propagate")

# =========================================================================== protocol


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

    def __call__(self, completion: str, prompt: Any, *, nan_policy: str = "raise") -> np.ndarray:
        """Score one completion: a validated float64 array of shape ``(R,)``."""
        _check_nan_policy(nan_policy)
        _check_completions([completion], [prompt])
        rows = [self._call_one(0, completion, prompt)]
        return self._finish(rows, [completion], [prompt], nan_policy)[0]

    def score_batch(
        self, completions: Sequence[str], prompts: Sequence[Any], *, nan_policy: str = "raise"
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
        fn = fn.fn
    return CheckedRewardFunction(fn, channel_names=channel_names, n_channels=n_channels)


# =========================================================================== answers
#
# Extraction works on what models write: LaTeX (\boxed, \frac, \text, \$),
# markdown emphasis, currency, thousands separators, units, sentence endings.

_NUM = r"[+-]?(?:\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?"
_TEX_FRAC = rf"([+-]?)\\frac\{{\s*({_NUM})\s*\}}\{{\s*({_NUM})\s*\}}"
_TEX_FRAC_SHORT = r"([+-]?)\\frac(\d)(\d)"  # \frac12 is valid LaTeX for 1/2
_SLASH_FRAC = rf"({_NUM})\s*/\s*({_NUM})"
# Units after a number: words (letters, spaces, periods, hyphens, slashes,
# an optional power such as m^2) or a percent sign.
_UNITS = r"(?:\s*(?:%|[A-Za-z][A-Za-z .\-/]*(?:\^\{?\d\}?)?))?"
# No leading or trailing \s*: _simplify strips the ends, and a \s* after the
# units (which may hold spaces) would make failed matches quadratic.
_NUMBER_RE = re.compile(rf"(?P<num>{_TEX_FRAC}|{_TEX_FRAC_SHORT}|{_SLASH_FRAC}|{_NUM}){_UNITS}")
_TOKEN_RE = re.compile(rf"{_TEX_FRAC}|{_TEX_FRAC_SHORT}|{_SLASH_FRAC}|{_NUM}")

_TEX_WRAPPERS = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|boxed|operatorname)\s*\{([^{}]*)\}")
_TEX_NOISE = (
    ("\u2212", "-"),  # unicode minus
    ("\\dfrac", "\\frac"),
    ("\\tfrac", "\\frac"),
    ("\\left", ""),
    ("\\right", ""),
    ("\\displaystyle", ""),
    ("{,}", ","),  # LaTeX thousands separator 1{,}234
    ("\\!", ""),
    ("\\,", ""),
    ("\\;", ""),
    ("\\:", ""),
    ("\\ ", " "),
    ("\\$", ""),
    ("$", ""),
    ("\\%", "%"),
    ("^{\\circ}", ""),
    ("^\\circ", ""),
    ("\\circ", ""),
    ("°", ""),
)
_ASSIGNMENT = re.compile(r"^[A-Za-z][A-Za-z_]*\s*=\s*")  # "x = 5"


def _simplify(text: str) -> str:
    """Drop typesetting that does not change an answer's value."""
    for old, new in _TEX_NOISE:
        text = text.replace(old, new)
    previous = None
    while previous != text:  # unwrap nested \text{\textbf{...}}
        previous, text = text, _TEX_WRAPPERS.sub(r" \1 ", text)
    text = _ASSIGNMENT.sub("", text.strip())
    return text.strip().rstrip(".").strip()


def _number_value(core: str) -> Fraction | None:
    """Exact value of a number written as ``_NUMBER_RE`` matched it."""
    match = re.fullmatch(_TEX_FRAC, core) or re.fullmatch(_TEX_FRAC_SHORT, core)
    if match:
        sign, num, den = match.groups()
        return _ratio(num, den, negative=sign == "-")
    match = re.fullmatch(_SLASH_FRAC, core)
    if match:
        return _ratio(*match.groups())
    return Fraction(core.replace(",", ""))


def _ratio(num: str, den: str, *, negative: bool = False) -> Fraction | None:
    denominator = Fraction(den.replace(",", ""))
    if denominator == 0:
        return None
    value = Fraction(num.replace(",", "")) / denominator
    return -value if negative else value


def _numeric_core(answer: str) -> str | None:
    """The number in ``answer`` when the answer is one number (plus units)."""
    match = _NUMBER_RE.fullmatch(_simplify(answer))
    if match is None:
        return None
    core = match.group("num")
    return core if _number_value(core) is not None else None


def parse_number(answer: str | None) -> Fraction | None:
    """The exact value of an answer that is a single number, else None.

    Accepted: integers and decimals (``-3``, ``.5``, ``5.``, ``2.50``,
    ``1e3``), thousands separators (``1,234``, LaTeX ``1{,}234``), fractions
    ``a/b``, ``\\frac{a}{b}``, ``\\dfrac``, ``\\tfrac`` and ``\\frac12``, a
    leading ``$`` or ``\\$``, math delimiters ``$...$``, ``\\text{...}`` and
    trailing unit words (``42 apples``, ``5\\text{ cm}``), ``%`` (dropped:
    ``50%`` is 50, as GSM8K writes percentages), degrees, trailing periods,
    and a leading assignment (``x = 5``). A zero denominator is not a number.

    Returns
    -------
    fractions.Fraction or None
        Exact, so ``0.5``, ``1/2`` and ``\\frac{1}{2}`` are equal.
    """
    if answer is None:
        return None
    core = _numeric_core(str(answer))
    return None if core is None else _number_value(core)


def _normalize_text(answer: str) -> str:
    text = _simplify(answer).lower()
    text = re.sub(r"\s+", "", text)
    while len(text) > 1 and text[0] == "{" and text[-1] == "}":
        text = text[1:-1]
    return text.rstrip(".")


def normalize_answer(answer: str) -> str:
    """Canonical form of an answer, for comparisons and logging.

    A number (see :func:`parse_number`) becomes its exact value written as an
    integer or a reduced fraction: ``"1,234.0"`` -> ``"1234"``, ``"0.5"`` and
    ``"\\frac{1}{2}"`` -> ``"1/2"``. Anything else is lower-cased with LaTeX
    wrappers (``\\text``, ``\\boxed``, ``$``, ``\\left``...), all whitespace,
    outer braces and trailing periods removed.
    """
    if not isinstance(answer, str):
        raise TypeError(f"normalize_answer expects a str, got {type(answer).__name__}: {_short(answer)}")
    value = parse_number(answer)
    return str(value) if value is not None else _normalize_text(answer)


def answers_match(pred: str | None, gold: str | None, *, rel_tol: float = 1e-6) -> bool:
    """Whether a predicted answer equals the gold answer.

    Both are *answers* (see :func:`extract_answer` and
    :func:`extract_gold_answer` for getting them out of full texts). When both
    parse as numbers they are compared as exact fractions, then within
    ``rel_tol`` (``|p - g| <= rel_tol * max(|p|, |g|)``; so ``0.3333333``
    matches ``1/3`` at the default ``1e-6`` but ``0.33`` does not). Otherwise
    their :func:`normalize_answer` strings must be equal. A missing (None or
    empty) answer never matches.
    """
    if not (isinstance(rel_tol, numbers.Real) and math.isfinite(rel_tol) and rel_tol >= 0):
        raise ValueError(f"rel_tol must be a finite number >= 0, got {rel_tol!r}")
    if pred is None or gold is None:
        return False
    p, g = parse_number(pred), parse_number(gold)
    if p is not None and g is not None:
        return p == g or abs(p - g) <= Fraction(rel_tol) * max(abs(p), abs(g))
    p_text, g_text = _normalize_text(str(pred)), _normalize_text(str(gold))
    return bool(p_text) and p_text == g_text


# --------------------------------------------------------------------------- markers

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*(\{)?")
_HASH_RE = re.compile(r"####[ \t]*([^\n]*)")
_PHRASE_RE = re.compile(r"\banswer\s*(?:\*\*)?\s*(?:is\s*:?|:|=)", re.IGNORECASE)
# End of the answer after "The answer is": a period that ends a sentence, a
# comma or semicolon followed by a space, or the end of the line.
_SENTENCE_END = re.compile(r"(?<=\S)\.(?=\s|$)|[;,](?=\s)|\n")


def _balanced(text: str, start: int) -> str | None:
    """Text from ``start`` up to the brace that closes an already-open ``{``."""
    depth, i = 1, start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2  # \{ and \} are literal braces
            continue
        depth += char == "{"
        depth -= char == "}"
        if depth == 0:
            return text[start:i]
        i += 1
    return None  # truncated generation: no closing brace


def _last_boxed(text: str) -> tuple[str, int] | None:
    found = None
    for match in _BOXED_RE.finditer(text):
        if match.group(1):
            content = _balanced(text, match.end())
        else:  # "\boxed 5"
            bare = re.match(r"\s*([^\s$]+)", text[match.end() :])
            content = bare.group(1) if bare else None
        if content is not None and content.strip():
            found = (content.strip(), match.start())
    return found


def _last_hash(text: str) -> tuple[str, int] | None:
    found = None
    for match in _HASH_RE.finditer(text):
        content = _clean(match.group(1))
        # "#### Step 1" is a markdown heading, not GSM8K's answer marker
        if content and not content[0].isalpha() and re.search(r"\d", content):
            found = (match.group(1), match.start())
    return found


def _last_phrase(text: str) -> tuple[str, int] | None:
    found = None
    for match in _PHRASE_RE.finditer(text):
        rest = text[match.end() :].lstrip()
        end = _SENTENCE_END.search(rest)
        span = rest[: end.start()] if end else rest
        if _clean(span):
            found = (span, match.start())
    return found


def _clean(span: str) -> str:
    """Strip delimiters around an answer: markdown emphasis, $, \\( \\), periods."""
    text = span.strip()
    for _ in range(3):  # "**$5$**." needs a few rounds
        text = text.strip("*_ \t").rstrip(".").strip()
        for left, right in (("\\(", "\\)"), ("\\[", "\\]"), ("$$", "$$"), ("$", "$")):
            if text.startswith(left) and text.endswith(right) and len(text) >= len(left) + len(right):
                text = text[len(left) : len(text) - len(right)].strip()
    return text


def _find_marked(text: str) -> tuple[str, int] | None:
    """The explicitly marked final answer and where its marker starts."""
    for finder in (_last_boxed, _last_hash, _last_phrase):
        found = finder(text)
        if found is not None:
            return found
    return None


def _tidy(span: str) -> str:
    """The answer inside a marked span: its number when it is one, else the text."""
    text = _clean(span)
    if "=" in text:  # "5 + 3 = 8": the result is after the last "="
        text = _clean(text.rsplit("=", 1)[1]) or text
    core = _numeric_core(text)
    if core is not None:
        return core
    simple = _simplify(text)
    tokens = [m.group(0) for m in _TOKEN_RE.finditer(simple)]
    # One number among plain words ("therefore 18") is the answer; with
    # symbols around it ("x^2", "2x + 1") the span is an expression.
    if len(tokens) == 1 and re.fullmatch(r"[A-Za-z\s.,:;'!?]*", simple.replace(tokens[0], " ", 1)):
        return tokens[0].rstrip(".")
    return text


def _last_number(text: str) -> str | None:
    tokens = [m.group(0) for m in _TOKEN_RE.finditer(_simplify(text))]
    return tokens[-1].rstrip(".") if tokens else None


def extract_answer(text: str, *, fallback: bool = True) -> str | None:
    r"""The final answer in a model's output, or None.

    Markers are tried in this order, and within a kind the **last** one wins
    (a model that revises itself ends with its final answer):

    1. ``\boxed{...}`` (or ``\fbox{...}``, or ``\boxed 5``), with nested
       braces (``\boxed{\frac{1}{2}}``); an unclosed box is ignored.
    2. ``#### N`` (GSM8K), up to the end of its line.
    3. A phrase "answer is N", "answer: N", "answer = N" (any case, e.g. "The
       final answer is", "**Answer:**"), up to the end of the sentence
       (a period followed by a space or the end, ``, ``, ``;``, a new line).
    4. With ``fallback=True`` (the default, as GSM8K evaluations do), the
       last number in the text (integers, decimals, ``a/b``, ``\frac``).

    Inside a marked span, ``$``/``\(...\)`` delimiters, markdown emphasis and
    trailing periods are dropped; with an ``=``, the part after the last
    ``=`` is kept; when the span is one number with words around it
    (``42 apples``, ``$1,234``, ``5\text{ cm}``, ``therefore 18``) the number
    is returned as written (``"42"``, ``"1,234"``, ``"5"``, ``"18"``).
    Otherwise the cleaned span is returned.

    Parameters
    ----------
    text : str
        The model's output.
    fallback : bool, keyword-only
        Use the last number when no marker is present.

    Returns
    -------
    str or None
        None when nothing was found.
    """
    if not isinstance(text, str):
        raise TypeError(f"extract_answer expects a str, got {type(text).__name__}: {_short(text)}")
    found = _find_marked(text)
    if found is not None:
        return _tidy(found[0])
    return _last_number(text) if fallback else None


def extract_gold_answer(gold: Any) -> str:
    """The final answer of a gold string.

    A GSM8K solution (``"... #### 72"``) or any text with a marker (see
    :func:`extract_answer`) gives the marked answer; a bare answer
    (``"72"``, ``"\\frac{1}{2}"``, ``"Paris"``) is used whole. Numbers (int,
    float, Fraction) are accepted and converted with ``str``.
    """
    if isinstance(gold, bool) or not isinstance(gold, (str, numbers.Real)):
        raise TypeError(f"the gold answer must be a str or a number, got {type(gold).__name__}: {_short(gold)}")
    text = str(gold)
    found = _find_marked(text)
    answer = _tidy(found[0]) if found is not None else _clean(text)
    if not answer:
        raise ValueError(f"the gold answer is empty: {_short(gold)}")
    return answer


# =========================================================================== channels


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
