"""Argument types and helpers shared by the CLI subcommands (no heavy imports).

Every numeric flag has a ``type=`` from here, so a value out of its range is
refused while parsing, as one line naming the flag.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from typing import Callable, Optional, Sequence

from multireward_grpo._validate import did_you_mean


class ArgumentParser(argparse.ArgumentParser):
    """argparse with errors on one line (no usage block) and "did you mean" for a mistyped choice.

    ``subcommands`` maps each subcommand name to its parser (set by
    ``cli.build_parser``), so unknown flags can be matched against the right
    command's options.
    """

    subcommands: dict

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {suggest_choice(message)} (see {self.prog} --help)\n")


_INVALID_CHOICE = re.compile(r"invalid choice: '(?P<value>[^']*)' \(choose from (?P<choices>.*)\)$")


def suggest_choice(message: str) -> str:
    """argparse's "invalid choice" message with the closest choice suggested."""
    found = _INVALID_CHOICE.search(message)
    if not found:
        return message
    choices = [c.strip().strip("'") for c in found["choices"].split(",")]
    hint = did_you_mean(found["value"], choices)
    return message[: found.start()] + f"invalid choice: {found['value']!r}{hint} (choose from {found['choices']})"


def unrecognized_message(parser: argparse.ArgumentParser, extras: Sequence[str]) -> str:
    """"unrecognized arguments: ..." with the closest known flag for each mistyped one."""
    flags = [s for s in parser._option_string_actions if s.startswith("--")]
    hints = []
    for extra in extras:
        if extra.startswith("--"):
            hint = did_you_mean(extra.split("=", 1)[0], flags)
            if hint:
                hints.append(f"{extra.split('=', 1)[0]}{hint}")
    return f"unrecognized arguments: {' '.join(extras)}" + (f"; {', '.join(hints)}" if hints else "")


# A value that argparse would take for a flag: -1, -1e-3, -.5, -inf, -1:2, -1,2
_NEGATIVE_VALUE = re.compile(r"-(\d|\.\d|inf|nan)", re.IGNORECASE)


def join_negative_values(parser: ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``--opt -1e-3`` -> ``--opt=-1e-3`` for options that take one value.

    argparse reads a token such as ``-1e-3`` or ``-1:2`` as an unknown flag
    and reports that ``--opt`` expected a value; joining it to its option
    lets the value reach its own validation, whose message is the useful one.
    """
    joined: list[str] = []
    command = parser
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "--":
            return joined + tokens[i:]
        if command is parser and token in getattr(parser, "subcommands", {}):
            command = parser.subcommands[token]
        action = command._option_string_actions.get(token) if token.startswith("--") else None
        takes_one_value = action is not None and action.nargs is None
        if takes_one_value and i + 1 < len(tokens) and _NEGATIVE_VALUE.match(tokens[i + 1]):
            joined.append(f"{token}={tokens[i + 1]}")
            i += 2
            continue
        joined.append(token)
        i += 1
    return joined


# --------------------------------------------------------------------------- argument types


def _argument_type(name: str, convert: Callable) -> Callable:
    """An argparse ``type=``: ``convert``'s ValueError/TypeError becomes argparse's one-line error."""

    def parse(text: str):
        try:
            return convert(text)
        except (TypeError, ValueError) as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = name
    return parse


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {text!r}")
    return value


def _bound_error(value: float, low, high, low_open: bool, high_open: bool) -> Optional[str]:
    if low is not None and (value <= low if low_open else value < low):
        return f"must be {'>' if low_open else '>='} {low:g}"
    if high is not None and (value >= high if high_open else value > high):
        return f"must be {'<' if high_open else '<='} {high:g}"
    return None


def number(low: Optional[float] = None, high: Optional[float] = None, *, low_open: bool = False,
           high_open: bool = False) -> Callable:
    """A ``type=`` for a finite float in ``[low, high]`` (``low_open``/``high_open`` exclude the bound itself)."""

    def convert(text: str) -> float:
        value = _finite(text)
        problem = _bound_error(value, low, high, low_open, high_open)
        if problem:
            raise ValueError(f"{problem}, got {text!r}")
        return value

    return _argument_type("number", convert)


def integer(minimum: int) -> Callable:
    """A ``type=`` for an int >= ``minimum``."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise ValueError(f"must be >= {minimum}, got {text!r}")
        return value

    return _argument_type("integer", convert)


def integers(minimum: int) -> Callable:
    """A ``type=`` for comma-separated ints, each >= ``minimum``: '4,8,16' -> [4, 8, 16]."""

    def convert(text: str) -> list[int]:
        values = ints(text)
        if not values:
            raise ValueError(f"expected comma-separated integers like 4,8,16; got {text!r}")
        low = [v for v in values if v < minimum]
        if low:
            raise ValueError(f"every value must be >= {minimum}, got {text!r}")
        return values

    return _argument_type("integers", convert)


def numbers(low: Optional[float] = None, *, low_open: bool = False, not_all_zero: bool = False) -> Callable:
    """A ``type=`` for comma-separated finite floats, each >= ``low`` (> with ``low_open``)."""

    def convert(text: str) -> list[float]:
        values = floats(text)
        if not values:
            raise ValueError(f"expected comma-separated numbers like 1,1,0.5; got {text!r}")
        for value in values:
            if not math.isfinite(value):
                raise ValueError(f"every value must be a finite number, got {text!r}")
            problem = _bound_error(value, low, None, low_open, False)
            if problem:
                raise ValueError(f"every value {problem}, got {text!r}")
        if not_all_zero and not any(values):
            raise ValueError(f"the values must not all be 0, got {text!r}")
        return values

    return _argument_type("numbers", convert)


# Objective weights: one finite weight >= 0 per channel, at least one of them positive.
weight_list = numbers(0.0, not_all_zero=True)


def mode_names(allowed: Optional[Sequence[str]] = None) -> Callable:
    """A ``type=`` for comma-separated estimator names, checked against the registry (or ``allowed``)."""

    def convert(text: str) -> list[str]:
        from multireward_grpo.advantage import list_estimators

        choices = list(allowed) if allowed is not None else list(list_estimators())
        modes = [m.lower() for m in names(text)]
        if not modes:
            raise ValueError(f"expected comma-separated estimator names like na,an; got {text!r}")
        for mode in modes:
            if mode not in choices:
                raise ValueError(f"unknown mode {mode!r}{did_you_mean(mode, choices)}; "
                                 f"choose from {', '.join(choices)}")
        return modes

    return _argument_type("modes", convert)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")


def floats(text: str) -> list[float]:
    """'1,1,0.5' -> [1.0, 1.0, 0.5]."""
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 1,1,0.5; got {text!r}") from None


def ints(text: str) -> list[int]:
    """'4,8,16' -> [4, 8, 16]."""
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 4,8,16; got {text!r}") from None


def names(text: str) -> list[str]:
    """'na,an' -> ['na', 'an']."""
    return [x.strip() for x in text.split(",") if x.strip()]


def _conditioning(text: str):
    from multireward_grpo.train.config import parse_conditioning_rule

    return parse_conditioning_rule(text)


def _checked_text(text: str) -> str:
    _conditioning(text)
    return text


# 'GATE:TARGET[:METHOD[:GAMMA]]' -> Conditioning; negative indices and gate == target are refused.
conditioning_rule = _argument_type("conditioning_rule", _conditioning)
# The same check, keeping the text (the trainer's config stores rules as written).
condition_text = _argument_type("condition_text", _checked_text)


def print_json(payload) -> None:
    json.dump(payload, sys.stdout, indent=2, allow_nan=True)
    sys.stdout.write("\n")


class Progress:
    """A progress bar on stderr: tqdm when installed, else a one-line counter.

    Silent when disabled or when stderr is not a terminal.
    """

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty()
        self.total, self.desc, self._bar = total, desc, None
        if self.enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=desc, leave=False)
            except ImportError:
                self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.n = done
            self._bar.refresh()
        else:
            sys.stderr.write(f"\r{self.desc}: {done}/{total}")
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            sys.stderr.write("\n")
