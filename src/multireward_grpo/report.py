"""Readable text reports of analysis results (entry layer: this module prints)."""

from __future__ import annotations

import sys
from typing import TextIO

import numpy as np

__all__ = ["format_summary", "summary_print"]

# How each interval method of Thm3Result.ci_method is named in the table header.
_CI_LABELS = {"two_level": "prompts+seeds", "prompts": "prompts"}


def _fmt(value: float, digits: int = 5) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}g}"


def _matrix(M: np.ndarray, names: list[str]) -> list[str]:
    width = max(7, max(len(n) for n in names) + 1)
    lines = [" " * width + "".join(f"{n:>{width}}" for n in names)]
    for name, row in zip(names, M):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>+{width}.3f}" for v in row))
    return lines


def format_summary(result, label: str = "", channel_names: list[str] | None = None) -> str:
    """A Theorem 3 result as a text table.

    Parameters
    ----------
    result : Thm3Result
    label : str
        Shown in the title.
    channel_names : list of str, optional
        Defaults to ``r0, r1, ...``.
    """
    R = len(result.w)
    names = list(channel_names) if channel_names else [f"r{i}" for i in range(R)]
    level = int(round(100 * result.confidence_level))
    title = f"Theorem 3 check{' ' + label if label else ''}: m={result.m}, P={result.P} prompts, K={result.K} seeds, tau2={_fmt(result.tau2)}"
    lines = [title, "=" * len(title), f"weights w = {np.array2string(np.asarray(result.w), precision=3)}"]
    if result.conditioning:
        rules = ", ".join(f"{c.gate}->{c.target} ({c.method}{', gamma=' + str(c.gamma) if c.gamma else ''})" for c in result.conditioning)
        lines.append(f"conditioning: {rules}")
    lines += ["", "pooled within-group correlation (Chat averaged over groups):", *_matrix(result.pooled_C, names)]
    degenerate = np.asarray(result.degenerate_groups)
    if degenerate.size and degenerate.any():
        parts = ", ".join(f"{n}: {d}" for n, d in zip(names, degenerate) if d)
        lines.append(f"constant-channel groups (z = 0 there, out of {result.n_groups}): {parts}")
    method = _CI_LABELS.get(getattr(result, "ci_method", "prompts"), str(getattr(result, "ci_method", "")))
    ci_header = f"{level}% CI ({method})"
    lines += ["", f"{'mode':<8}{'realized MSE':>14}{'predicted':>12}{'ratio':>9}{ci_header:>24}"]
    for mode in result.modes:
        realized, predicted = result.realized[mode].mean(), result.predicted[mode].mean()
        low, high = result.ratio_ci.get(mode, (np.nan, np.nan))
        ci = f"[{_fmt(low, 4)}, {_fmt(high, 4)}]"
        lines.append(f"{mode:<8}{_fmt(realized):>14}{_fmt(predicted):>12}{_fmt(result.ratio_pooled[mode], 4):>9}{ci:>24}")
    lines += [f"note: {note}" for note in getattr(result, "notes", ())]
    lines += [
        "",
        f"NA law (tau2/m) w'Chat w, pooled : {_fmt(result.predicted_pooled)}",
        f"AN law tau2/m                    : {_fmt(result.an_law)}",
    ]
    if result.predicted_population is not None:
        realized_na = result.realized_na.mean()
        lines += [
            f"NA law from population C        : {_fmt(result.predicted_population)}  (w'Cw, the m -> inf limit)",
            f"  with Fisher's 1/m E[Chat]      : {_fmt(result.predicted_population_fisher)}"
            f"  realized/that = {_fmt(realized_na / result.predicted_population_fisher, 4)}",
            f"  with exact Gaussian E[Chat]    : {_fmt(result.predicted_population_exact)}"
            f"  realized/that = {_fmt(realized_na / result.predicted_population_exact, 4)}",
        ]
    lines += ["", "influence Cov(A, z_l) per channel (Prop 1):", f"{'mode':<8}" + "".join(f"{n:>10}" for n in names)]
    for mode in result.modes:
        lines.append(f"{mode:<8}" + "".join(f"{v:>10.4f}" for v in result.influence[mode]))
    return "\n".join(lines)


def summary_print(result, label: str = "", *, channel_names: list[str] | None = None, file: TextIO | None = None) -> None:
    """Print :func:`format_summary` (to stdout unless ``file`` is given)."""
    print(format_summary(result, label, channel_names), file=file or sys.stdout)
