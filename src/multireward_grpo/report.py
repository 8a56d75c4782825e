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

    Two ratios are printed: the *conditional* one (realized over the
    expectation given the very rewards analysed, ~1 for any rewards when the
    scores are simulated: it checks the score model) and the
    *population-law* one (realized over the law's prediction from each
    prompt's rollout distribution, with the finite-m correction: the one that
    tests Theorem 3), next to the law without the finite-m correction.

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
    tau2 = "estimated per prompt, mean " + _fmt(result.tau2) if _tau2_estimated(result) else _fmt(result.tau2)
    title = (f"Theorem 3 check{' ' + label if label else ''}: m={result.m}, P={result.P} prompts, K={result.K} seeds, "
             f"tau2={tau2}")
    lines = [title, "=" * len(title), f"weights w = {np.array2string(np.asarray(result.w), precision=3)}",
             _score_line(result)]
    if result.conditioning:
        rules = ", ".join(f"{c.gate}->{c.target} ({c.method}{', gamma=' + str(c.gamma) if c.gamma else ''})" for c in result.conditioning)
        lines.append(f"conditioning: {rules}")
    lines += ["", *_pooled_matrix_lines(result, names), *_degenerate_lines(result, names)]
    lines += _ratio_table(result)
    lines += [f"note: {note}" for note in getattr(result, "notes", ())]
    lines += _law_lines(result)
    lines += _score_lines(result, names)
    width = max([10] + [len(n) + 2 for n in names])
    lines += ["", "influence Cov(A, z_l) per channel (Prop 1):", f"{'mode':<8}" + "".join(f"{n:>{width}}" for n in names)]
    for mode in result.modes:
        lines.append(f"{mode:<8}" + "".join(f"{v:>{width}.4f}" for v in result.influence[mode]))
    return "\n".join(lines)


def _tau2_estimated(result) -> bool:
    return getattr(result, "score_source", "simulated") == "given" and np.ptp(getattr(result, "tau2_per_prompt", [0])) > 0


def _score_line(result) -> str:
    if getattr(result, "score_source", "simulated") == "given":
        how = ("the variance of ghat across seeds (ddof 1), since real scores give ghat a nonzero mean"
               if result.realized_estimator == "variance" else "mean_k ghat^2")
        return f"scores: given (real score projections); realized MSE = {how}"
    return "scores: simulated N(0, tau2), independent of the rewards; realized MSE = mean_k ghat^2"


def _pooled_matrix_lines(result, names) -> list[str]:
    diagonal = np.diag(np.asarray(result.pooled_C))
    if np.all(diagonal >= 1.0 - 1e-6):  # eps leaves a varying channel a hair below 1
        title = "pooled within-group correlation (Chat averaged over groups):"
    else:
        title = ("pooled within-group Chat (averaged over groups; NOT a correlation matrix: its diagonal is the share "
                 "of groups where each channel varies):")
    return [title, *_matrix(np.asarray(result.pooled_C), names)]


def _degenerate_lines(result, names) -> list[str]:
    degenerate = np.asarray(result.degenerate_groups)
    lines = []
    if degenerate.size and degenerate.any():
        parts = ", ".join(f"{n}: {d} ({d / result.n_groups:.0%})" for n, d in zip(names, degenerate) if d)
        lines.append(f"constant-channel groups (z = 0 there, out of {result.n_groups}): {parts}")
    an_constant = getattr(result, "an_constant_groups", 0)
    if an_constant:
        lines.append(f"groups with a constant AN scalar w.r (all AN advantages 0): {an_constant} "
                     f"({an_constant / result.n_groups:.0%})")
    return lines


def _ratio_table(result) -> list[str]:
    level = int(round(100 * result.confidence_level))
    method = _CI_LABELS.get(getattr(result, "ci_method", "prompts"), str(getattr(result, "ci_method", "")))
    ci_header = f"{level}% CI ({method})"
    header = f"{'':<28}{'realized MSE':>14}{'predicted':>12}{'ratio':>9}{ci_header:>24}"
    lines = ["", "conditional: predicted = (tau2/m) mean_k (1/m) sum_j A_j^2 given these very rewards; checks the",
             "  score model only (~1 for ANY rewards with simulated scores), it does not test the law", header]
    for mode in result.modes:
        lines.append(_ratio_row(mode, result.realized[mode].mean(), result.predicted[mode].mean(),
                                result.ratio_pooled[mode], result.ratio_ci.get(mode, (np.nan, np.nan))))
    law = getattr(result, "population_law", None)
    if law:
        lines += ["", "population law: predicted from each prompt's rollouts, E_m[Chat] with the finite-m correction "
                      f"(diagonal exact, off-diagonal: {result.population_offdiag}); THIS ratio tests Theorem 3", header]
        rows = [("na", "na", law["na"]), ("an", "an", law["an"]),
                ("na, no finite-m correction", "na_no_correction", result.population_law_no_correction)]
        for label, key, values in rows:
            realized = result.realized["na" if key == "na_no_correction" else key].mean()
            lines.append(_ratio_row(label, realized, np.mean(values), result.population_ratio_pooled[key],
                                    result.population_ratio_ci.get(key, (np.nan, np.nan))))
    return lines


def _ratio_row(label, realized, predicted, ratio, ci) -> str:
    interval = f"[{_fmt(ci[0], 4)}, {_fmt(ci[1], 4)}]"
    return f"{label:<28}{_fmt(realized):>14}{_fmt(predicted):>12}{_fmt(ratio, 4):>9}{interval:>24}"


def _law_lines(result) -> list[str]:
    lines = [
        "",
        f"NA law (tau2/m) w'Chat w, pooled over these groups : {_fmt(result.predicted_pooled)}",
        f"AN law tau2/m                                       : {_fmt(result.an_law)}",
    ]
    if getattr(result, "an_constant_groups", 0):
        lines.append(f"AN law given its constant-scalar groups             : {_fmt(result.an_law_constant_adjusted)}"
                     "  ((tau2/m) x share of groups where w.r varies)")
    if result.predicted_population is not None:
        realized_na = result.realized_na.mean()
        lines += [
            f"NA law from the given population C                  : {_fmt(result.predicted_population)}"
            "  (w'Cw, the m -> inf limit)",
            f"  with Fisher's 1/m E[Chat]                         : {_fmt(result.predicted_population_fisher)}"
            f"  realized/that = {_fmt(realized_na / result.predicted_population_fisher, 4)}",
            f"  with exact Gaussian E[Chat]                       : {_fmt(result.predicted_population_exact)}"
            f"  realized/that = {_fmt(realized_na / result.predicted_population_exact, 4)}",
        ]
    return lines


def _score_lines(result, names) -> list[str]:
    if getattr(result, "score_source", "simulated") != "given":
        return []
    lines = ["", "real scores: mean of ghat over all groups (0 if the scores are independent of the rewards):"]
    for mode in result.modes:
        mean, se = result.ghat_mean_pooled[mode]
        lines.append(f"  {mode:<8}{_fmt(mean, 4):>12} +- {_fmt(se, 3)} (SE)")
    corr = result.score_reward_correlation
    if corr is not None:
        n = result.P * result.K * result.m
        se = 1.0 / np.sqrt(max(n - result.P, 1))
        parts = ", ".join(f"{name} {_fmt(c, 3)}" for name, c in zip(names, corr))
        lines.append(f"correlation of g with each channel within prompts (Theorem 3 assumes 0; SE ~{se:.3f}): {parts}")
    return lines


def summary_print(result, label: str = "", *, channel_names: list[str] | None = None, file: TextIO | None = None) -> None:
    """Print :func:`format_summary` (to stdout unless ``file`` is given)."""
    print(format_summary(result, label, channel_names), file=file or sys.stdout)
