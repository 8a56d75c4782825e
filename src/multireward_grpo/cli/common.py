"""Argument types and helpers shared by the CLI subcommands (no heavy imports)."""

from __future__ import annotations

import argparse
import json
import sys


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


def conditioning_rule(text: str):
    """'GATE:TARGET[:METHOD[:GAMMA]]' -> Conditioning."""
    from multireward_grpo.advantage import Conditioning

    parts = text.split(":")
    try:
        gate, target = int(parts[0]), int(parts[1])
        method = parts[2] if len(parts) > 2 else "zero_fill"
        gamma = float(parts[3]) if len(parts) > 3 else 0.0
        return Conditioning(gate, target, method, gamma=gamma)
    except (IndexError, ValueError, TypeError) as err:
        raise argparse.ArgumentTypeError(
            f"bad --condition {text!r} ({err}); use GATE:TARGET[:METHOD[:GAMMA]], "
            "e.g. 0:1, 0:2:subgroup or 0:1:zero_fill:0.3"
        ) from None


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
