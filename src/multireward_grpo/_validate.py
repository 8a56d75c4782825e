"""Small input checks shared across modules (standard library and numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; TypeError for non-integers (bools included), ValueError below the minimum."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def did_you_mean(value: Any, choices) -> str:
    """``" (did you mean 'na'?)"`` when ``value`` is close to one of ``choices``, else ``""``."""
    import difflib

    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value.lower(), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_choice(name: str, value: Any, choices) -> str:
    """``value`` when it is one of ``choices`` (strings); else ValueError naming them, with a suggestion."""
    choices = tuple(choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {', '.join(map(repr, choices))}; got {value!r}")
    if value not in choices:
        raise ValueError(
            f"unknown {name} {value!r}{did_you_mean(value, choices)}; choose one of {', '.join(map(repr, choices))}"
        )
    return value


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
) -> float:
    """``value`` as a finite float within the bounds.

    Numbers only: a numeric string (``"1e-3"``, as PyYAML reads it) is
    accepted and converted; bools, None and other types raise TypeError; NaN,
    infinities and out-of-range values raise ValueError that names the bound.
    """
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise TypeError(f"{name} must be a number, got the string {value!r}") from None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if strict_minimum else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict_minimum else '>='} {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return value


def check_channel_index(name: str, value: Any, n_channels: int | None = None) -> int:
    """A channel index as a non-negative int (< ``n_channels`` when known).

    Negative indices are refused rather than wrapped: ``-1`` is a common
    "none" sentinel, and wrapping would let a rule gate a channel by itself.
    """
    index = check_int(name, value, -(2**63))
    if index < 0:
        raise ValueError(f"{name} must be a channel index >= 0 (negative indices are not accepted), got {index}")
    if n_channels is not None and index >= n_channels:
        raise ValueError(f"{name} is {index} but there are only {n_channels} channels (0..{n_channels - 1})")
    return index


def channel_labels(channel_names: Any, n_channels: int, *, default: str = "ch{}", counted_as: str = "channels") -> list:
    """``channel_names`` as strings, one per channel, or ``default.format(c)`` for each channel without names.

    ``counted_as`` says where the count comes from in the error (e.g. "weights in the config").
    """
    if channel_names is None:
        return [default.format(c) for c in range(n_channels)]
    names = [str(name) for name in channel_names]
    if len(names) != n_channels:
        raise ValueError(f"channel_names has {len(names)} names but there are {n_channels} {counted_as}; "
                         "pass one per channel")
    return names
