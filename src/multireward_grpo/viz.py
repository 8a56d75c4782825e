"""Plots of the theory harness (Theorem 3, Props 1 and 4) and of training runs.

Every function writes one figure to ``out_path`` (PNG unless the suffix names
another format matplotlib knows, e.g. ``.pdf``) and returns a small dict of
the numbers it drew and its ``title``, so scripts and tests can check them
without reading pixels. Figures are written through
:func:`multireward_grpo._fileio.atomic_writer`: a unique temporary file in the
target folder replaces the target at the end, so a failed draw leaves the old
file and a symlink at the target is replaced, never written through.

Titles name what was run: the functions that draw a run or a corpus take a
``source`` (the corpus, backend or simulation), or ``model`` and ``mode``
(training) or ``model`` and ``task`` (evaluation), and put it on a second
title line; the CLI passes them.

matplotlib is imported inside the functions, never at module import, so
``import multireward_grpo.viz`` stays light. Figures are drawn on an explicit
Agg canvas without ``pyplot``: no window ever opens, the caller's backend
(e.g. a notebook's) is left alone, and no figure lingers in pyplot's registry.

Functions
---------
plot_money_scatter  predicted vs realized gradient MSE per prompt (Theorem 3)
plot_mse_vs_m       pooled realized MSE against m, with the laws (Theorem 3)
plot_law_ratios     realized / predicted MSE per m with intervals: population law and score model (Theorem 3)
plot_influence      per-channel influence of each estimator (Prop 1)
plot_bias_vs_gamma  removed bias against the model's gamma (Prop 4)
plot_eval_comparison  held-out rewards of several models, with error bars
plot_training_curves  rewards and KL per training step, raw and smoothed
describe_corpus     a one-line description of a corpus for a title
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from multireward_grpo.analysis.thm3 import Thm3Result

__all__ = [
    "describe_corpus", "plot_bias_vs_gamma", "plot_eval_comparison", "plot_influence", "plot_law_ratios",
    "plot_money_scatter", "plot_mse_vs_m", "plot_training_curves", "trailing_mean",
]

_INSTALL_HINT = 'plotting needs matplotlib: pip install "multireward-grpo[viz]"'
_MODE_COLORS = {"na": "tab:blue", "an": "tab:red"}
_OTHER_COLORS = ("tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:olive", "tab:cyan")
_Z95 = 1.96
_SOURCE_WIDTH = 80  # characters of a title's source line; longer names are cut in the middle
_DPI = 150


# --------------------------------------------------------------------------- helpers


def _new_figure(figsize=(6.4, 4.8)):
    """A figure on an Agg canvas, or ImportError naming the extra to install."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_path) -> str:
    """Write ``fig`` to ``out_path`` atomically, in the format its suffix names (PNG without one)."""
    from multireward_grpo._fileio import atomic_writer

    path = Path(out_path)
    fmt = _file_format(fig, path)
    with atomic_writer(path, "wb") as fh:
        # bbox "tight" keeps long legends and titles from being clipped at the edge.
        fig.savefig(fh, format=fmt, dpi=_DPI, bbox_inches="tight")
    return str(path)


def _file_format(fig, path: Path) -> str:
    fmt = path.suffix[1:].lower() or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"cannot save a figure as {path.name!r}: {path.suffix!r} is not a format matplotlib writes; "
                         f"use one of {', '.join('.' + k for k in sorted(supported))} (e.g. .png)")
    return fmt


def _shorten(text: str, width: int = _SOURCE_WIDTH) -> str:
    """``text`` cut in the middle to at most ``width`` characters, keeping both ends readable."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    head = (width - 1) // 3  # the end of a path or model id says more than its start
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def _title(default: str, source: str | None, title: str | None) -> str:
    """The explicit ``title``, else ``default`` with ``source`` on a second line."""
    if title is not None:
        return title
    return f"{default}\n{_shorten(source)}" if source else default


def describe_corpus(corpus, path=None) -> str:
    """One line naming a corpus for a plot title: its file name, backend and model.

    Parameters
    ----------
    corpus : Corpus
        Its ``metadata["backend"]`` (written by ``run_corpus``) names the backend
        and, for a real model, the model.
    path : str or path-like, optional
        The file it was read from.

    Returns
    -------
    str
        e.g. ``"rollouts.jsonl, hf, Qwen/Qwen2.5-0.5B-Instruct"``; ``"corpus"`` when nothing is known.
    """
    backend = (getattr(corpus, "metadata", None) or {}).get("backend")
    parts = [Path(path).name] if path is not None else []
    if isinstance(backend, Mapping):
        parts += [str(backend[key]) for key in ("backend", "model") if backend.get(key)]
    return ", ".join(parts) or "corpus"


def _color(mode: str, index: int) -> str:
    return _MODE_COLORS.get(mode, _OTHER_COLORS[index % len(_OTHER_COLORS)])


def _label(mode: str) -> str:
    return mode.upper() if mode in _MODE_COLORS else mode


def _vector(values, name: str, length: int | None = None) -> np.ndarray:
    """A finite 1-D float array, optionally of a given length."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers; got shape {arr.shape}")
    if length is not None and arr.size != length:
        raise ValueError(f"{name} has {arr.size} entries but {length} were expected; pass one per point")
    if not np.all(np.isfinite(arr)):
        bad = int(np.argmin(np.isfinite(arr)))
        raise ValueError(f"{name} must be finite; entry {bad} is {arr[bad]}")
    return arr


def _positive(arr: np.ndarray, name: str, hint: str) -> np.ndarray:
    if np.any(arr <= 0):
        bad = np.flatnonzero(arr <= 0)
        raise ValueError(
            f"{name} must be > 0 on a log axis; entries {bad[:5].tolist()} are {arr[bad[:5]].tolist()}. {hint}"
        )
    return arr


def _loglog_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares line of log(y) on log(x): (slope, intercept, R^2); NaN where undefined."""
    lx, ly = np.log(x), np.log(y)
    dx, dy = lx - lx.mean(), ly - ly.mean()
    sxx, syy = float(dx @ dx), float(dy @ dy)
    if lx.size < 2 or sxx == 0:
        return float("nan"), float("nan"), float("nan")
    slope = float(dx @ dy) / sxx
    intercept = float(ly.mean() - slope * lx.mean())
    resid = dy - slope * dx
    r2 = 1.0 - float(resid @ resid) / syy if syy > 0 else float("nan")
    return slope, intercept, r2


def _mode_arrays(result, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(realized, predicted) per prompt of one mode, falling back to the NA/AN fields."""
    realized, predicted = getattr(result, "realized", {}) or {}, getattr(result, "predicted", {}) or {}
    if mode in realized and mode in predicted:
        return np.asarray(realized[mode], float), np.asarray(predicted[mode], float)
    if mode == "na":
        return np.asarray(result.realized_na, float), np.asarray(result.predicted_per_prompt, float)
    if mode == "an":
        real = np.asarray(result.realized_an, float)
        return real, np.full(real.shape, float(result.an_law))
    raise ValueError(f"the result has no realized/predicted MSE for mode {mode!r}")


def _result_modes(result) -> list[str]:
    # NA and AN are always analysed; draw them first so their colours stay put.
    modes = list(getattr(result, "modes", ()) or ())
    return ["na", "an"] + [m for m in modes if m not in ("na", "an")]


def _ratio_label(result, mode: str) -> str:
    ratio = (getattr(result, "ratio_pooled", {}) or {}).get(mode)
    if ratio is None:
        return _label(mode)
    lo, hi = (getattr(result, "ratio_ci", {}) or {}).get(mode, (float("nan"), float("nan")))
    level = 100 * float(getattr(result, "confidence_level", 0.95))
    ci = f" [{lo:.3f}, {hi:.3f}] {level:g}% CI" if np.isfinite(lo) and np.isfinite(hi) else ""
    return f"{_label(mode)}: realized/predicted = {ratio:.3f}{ci}"


# --------------------------------------------------------------------------- Theorem 3


def plot_money_scatter(result: Thm3Result, out_path, title_suffix: str = "", *, title: str | None = None,
                       source: str | None = None, drop_nonpositive: bool = False, fit_line="auto") -> dict:
    """Per-prompt predicted vs realized gradient MSE on log-log axes (Theorem 3).

    NA (blue) is plotted at ``x = predicted['na']``, AN (red) at
    ``x = predicted['an']``, other analysed modes in other colours; the
    ``y = x`` line is where the law holds exactly. The legend gives each
    mode's pooled ratio with its bootstrap interval.

    A dashed blue line, the least-squares fit of ``log(realized)`` on
    ``log(predicted)`` for NA, is drawn only when it can say something: when
    the prompts' predictions span a wider range than the seed noise of a
    single prompt. A prompt's realized MSE is the mean of ``K`` values of
    ``ĝ²``, scaled chi-square(1) draws for Gaussian scores, so on the log
    scale it scatters with standard deviation ``sqrt(2/K)``; the line is drawn
    when ``log(max predicted / min predicted)`` exceeds the full width
    ``2 z sqrt(2/K)`` of that interval (``z`` from ``confidence_level``).
    Below it (e.g. mock prompts that all share one correlation) the slope
    would fit noise; the figure says so instead and the pooled ratio is the
    test of the law.

    Parameters
    ----------
    result : Thm3Result
        From :func:`multireward_grpo.analysis.thm3.analyze`.
    out_path : str or path-like
        Where to write the figure.
    title_suffix : str
        Appended to the default title's first line.
    title : str, optional
        Replaces the whole title.
    source : str, optional
        What the rollouts come from (corpus file, backend, model), shown on
        the title's second line; see :func:`describe_corpus`.
    drop_nonpositive : bool
        Leave out prompts whose realized or predicted MSE is <= 0 (prompts
        whose groups are all degenerate) instead of raising; they cannot be
        placed on a log axis. The count is returned as ``n_dropped``.
    fit_line : {"auto", True, False}
        Draw NA's fit line by the rule above (default), always (when the
        predictions are not all equal), or never.

    Returns
    -------
    dict
        ``slope``, ``intercept``, ``r2`` (NA's log-log fit, computed whether
        drawn or not; NaN when all predicted values are equal),
        ``fit_shown`` and ``fit_reason`` (why the line is or is not drawn),
        ``n_points`` (NA prompts drawn), ``n_dropped`` (mode -> prompts left
        out), ``ratio_pooled`` and ``ratio_ci`` (mode -> value), ``legend``
        (labels), ``title``, ``path``.

    Raises
    ------
    ValueError
        On mismatched lengths, no prompts, MSEs <= 0 without
        ``drop_nonpositive``, or an unknown ``fit_line``.
    """
    if fit_line not in ("auto", True, False):
        raise ValueError(f"fit_line must be 'auto', True or False; got {fit_line!r}")
    fig = _new_figure((7.0, 6.0))
    ax = fig.add_subplot()
    drawn, n_dropped = {}, {}
    for i, mode in enumerate(_result_modes(result)):
        x, y, n_dropped[mode] = _scatter_points(result, mode, drop_nonpositive)
        drawn[mode] = (x, y)
        ax.scatter(x, y, s=14, alpha=0.6, color=_color(mode, i), label=_ratio_label(result, mode), zorder=3)
    slope, intercept, r2 = _loglog_fit(*drawn["na"])
    lo, hi = _span(np.concatenate([np.concatenate(v) for v in drawn.values()]))
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=1, label="y = x (law holds)")
    shown, reason = _fit_decision(fit_line, drawn["na"][0], result)
    if shown:
        xs = np.array([lo, hi])
        ax.plot(xs, np.exp(intercept) * xs**slope, "--", color="tab:blue", lw=1,
                label=f"NA least-squares fit of log realized on log predicted: slope {slope:.3f}, R² = {r2:.3f}")
    else:
        ax.text(0.98, 0.02, f"no fit line: {reason}", transform=ax.transAxes, ha="right", va="bottom",
                fontsize="x-small", color="0.35", wrap=True)
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi),
           xlabel="predicted gradient MSE per prompt", ylabel="realized gradient MSE per prompt (mean over seeds)")
    m, P, K = getattr(result, "m", "?"), getattr(result, "P", len(drawn["na"][0])), getattr(result, "K", "?")
    full_title = _title(f"Theorem 3: predicted vs realized (m={m}, P={P}, K={K}){title_suffix}", source, title)
    ax.set_title(full_title)
    legend = ax.legend(loc="upper left", fontsize="small")
    return {"slope": slope, "intercept": intercept, "r2": r2, "fit_shown": shown, "fit_reason": reason,
            "n_points": int(drawn["na"][0].size), "n_dropped": n_dropped,
            "ratio_pooled": dict(getattr(result, "ratio_pooled", {}) or {}),
            "ratio_ci": dict(getattr(result, "ratio_ci", {}) or {}),
            "legend": [t.get_text() for t in legend.get_texts()], "title": full_title, "path": _save(fig, out_path)}


def _fit_decision(fit_line, predicted: np.ndarray, result) -> tuple[bool, str]:
    """Whether NA's fit line is drawn, and why (see :func:`plot_money_scatter`)."""
    from scipy.stats import norm

    spread = float(np.log(predicted.max() / predicted.min()))
    if spread == 0:
        return False, "all predicted values are equal"
    if fit_line is not True and fit_line is not False:
        K = getattr(result, "K", None)
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
            return False, f"K = {K!r} seeds, so the seed noise of a prompt is unknown"
        level = float(getattr(result, "confidence_level", 0.95))
        width = 2 * float(norm.ppf(0.5 + level / 2)) * np.sqrt(2.0 / K)
        ratio = f"predictions span ×{np.exp(spread):.3g}; one prompt's {100 * level:g}% seed-noise interval is ×{np.exp(width):.3g}"
        if spread <= width:
            return False, f"{ratio}, so a slope would fit noise"
        return True, ratio
    return fit_line, "requested" if fit_line else "turned off (fit_line=False)"


def _scatter_points(result, mode: str, drop_nonpositive: bool):
    realized, predicted = _mode_arrays(result, mode)
    x = _vector(predicted, f"predicted[{mode!r}]")
    y = _vector(realized, f"realized[{mode!r}]", x.size)
    keep = (x > 0) & (y > 0)
    if drop_nonpositive:
        if not keep.any():
            raise ValueError(f"no prompt of mode {mode!r} has a positive realized and predicted MSE to plot")
        return x[keep], y[keep], int(np.sum(~keep))
    hint = "Pass drop_nonpositive=True to leave such (all-degenerate) prompts out, or drop them before analyze()."
    _positive(x, f"predicted MSE of {mode!r}", hint)
    _positive(y, f"realized MSE of {mode!r}", hint)
    return x, y, 0


def _span(values: np.ndarray) -> tuple[float, float]:
    # A margin on both sides so the extreme points are not cut by the frame.
    lo, hi = float(values.min()), float(values.max())
    return lo / 1.25, hi * 1.25


def plot_mse_vs_m(results_by_m: Mapping[int, Thm3Result] | Sequence[Thm3Result], out_path, *,
                  title: str | None = None, source: str | None = None) -> dict:
    """Pooled realized gradient MSE against ``m`` on log-log axes, with the laws.

    For NA and AN: the mean over prompts of the realized MSE, with error bars
    of ``z`` standard errors across prompts (``z`` from the results'
    ``confidence_level``; none when a result has one prompt), against the
    predicted law (NA: ``predicted_pooled`` at each m; AN: ``tau2/m``), the
    population law with Fisher's correction when every result has one, and a
    grey ``1/m`` reference line.

    Parameters
    ----------
    results_by_m : dict int -> Thm3Result, or sequence of Thm3Result
        One analysis per group size; a sequence is keyed by each ``result.m``.
    out_path : str or path-like
    title : str, optional
        Replaces the whole title.
    source : str, optional
        What the rollouts come from, on the title's second line.

    Returns
    -------
    dict
        ``slopes`` (mode -> fitted log-log slope, ~ -1 when the law holds),
        ``m`` (sorted list), ``realized_mean``, ``error`` and ``predicted``
        (mode -> list over m), ``title``, ``path``.

    Raises
    ------
    ValueError
        On fewer than two distinct m, a key that is not its result's m, or a
        pooled MSE <= 0.
    """
    items = _by_m(results_by_m)
    ms = np.array([m for m, _ in items], dtype=np.float64)
    fig = _new_figure((7.0, 5.2))
    ax = fig.add_subplot()
    out = {"slopes": {}, "m": [int(m) for m in ms], "realized_mean": {}, "error": {}, "predicted": {}}
    handles = []  # explicit order: matplotlib would list the error bars after every line
    for i, mode in enumerate(("na", "an")):
        mean, err, law = _pooled(items, mode)
        slope = _loglog_fit(ms, mean)[0]
        handles.append(ax.errorbar(ms, mean, yerr=err, fmt="o", color=_color(mode, i), capsize=3,
                                   label=f"{_label(mode)} realized (slope {slope:.3f})", zorder=3))
        handles += ax.plot(ms, law, "-", color=_color(mode, i), lw=1.2,
                           label="NA law (τ²/m)·wᵀĈw" if mode == "na" else "AN law τ²/m")
        out["slopes"][mode], out["realized_mean"][mode] = slope, mean.tolist()
        out["error"][mode], out["predicted"][mode] = err.tolist(), law.tolist()
    handles += _population_line(ax, items, ms)
    ref = 2.0 * max(out["realized_mean"]["na"][0], out["realized_mean"]["an"][0]) * ms[0] / ms
    handles += ax.plot(ms, ref, ":", color="0.5", label="∝ 1/m reference")
    _log_m_axis(ax, ms)
    ax.set(ylabel="gradient MSE (mean over prompts)")
    out["title"] = _title("Theorem 3: gradient MSE vs group size m", source, title)
    ax.set_title(out["title"])
    ax.legend(handles=handles, fontsize="small")
    out["path"] = _save(fig, out_path)
    return out


_LAW_SERIES = (  # (label, which ratios, key, colour, marker, filled)
    ("NA / population law", "population", "na", "tab:blue", "o", True),
    ("AN / population law", "population", "an", "tab:red", "o", True),
    ("NA / law without finite-m correction", "population", "na_no_correction", "tab:blue", "s", False),
    ("NA / score model (conditional)", "conditional", "na", "tab:blue", "x", True),
    ("AN / score model (conditional)", "conditional", "an", "tab:red", "x", True),
)


def plot_law_ratios(results: Thm3Result | Sequence[Thm3Result], out_path, *, title: str | None = None,
                    source: str | None = None) -> dict:
    """Realized over predicted gradient MSE at each group size, with intervals, against the line ratio = 1.

    The population-law ratios (NA and AN, and NA against the law without the
    finite-m correction; :mod:`multireward_grpo.analysis.population`) test
    Theorem 3 on the rollouts; the conditional ratios only check the score
    model and sit at about 1 for any rewards when the scores are simulated.
    Each point carries its bootstrap interval (the results'
    ``population_ratio_ci`` / ``ratio_ci``, level ``confidence_level``).
    Results without a population law (e.g. given a correlation only) draw
    the conditional ratios alone. The ratio axis is logarithmic, so 0.5 and
    2 sit equally far from 1.

    Parameters
    ----------
    results : Thm3Result or sequence of Thm3Result
        One analysis per group size (distinct ``m``).
    out_path : str or path-like
    title : str, optional
        Replaces the whole title.
    source : str, optional
        What the rollouts come from, on the title's second line.

    Returns
    -------
    dict
        ``m`` (sorted list); ``series``: label -> ``{"ratio", "low", "high"}``
        (lists over m; NaN where a result lacks the ratio or its interval);
        ``title``, ``path``.

    Raises
    ------
    ValueError
        No results, two results with one m, or no finite positive ratio to draw.
    """
    items = sorted(([results] if hasattr(results, "ratio_pooled") else list(results)), key=lambda r: int(r.m))
    ms = [int(r.m) for r in items]
    if not items or len(set(ms)) != len(ms):
        raise ValueError(f"need one result per group size; got m = {ms}")
    series = {}
    for label, kind, key, *_ in _LAW_SERIES:
        rows = [_law_ratio(r, kind, key) for r in items]
        if any(np.isfinite(row[0]) for row in rows):
            series[label] = {name: [row[i] for row in rows] for i, name in enumerate(("ratio", "low", "high"))}
    drawn = [v for s in series.values() for v in s["ratio"] if np.isfinite(v) and v > 0]
    if not drawn:
        raise ValueError("no finite positive ratio to draw: every group was degenerate (a constant channel or "
                         "aggregate); analyze prompts whose rollouts differ")
    fig = _new_figure((7.0, 5.0))
    ax = fig.add_subplot()
    width = 0.6 / len(series)
    for j, (label, kind, key, color, marker, filled) in enumerate(s for s in _LAW_SERIES if s[0] in series):
        x = np.arange(len(ms)) + (j - (len(series) - 1) / 2) * width
        ratio, low, high = (np.asarray(series[label][n], dtype=float) for n in ("ratio", "low", "high"))
        err = np.vstack([np.where(np.isfinite(low), ratio - low, 0.0), np.where(np.isfinite(high), high - ratio, 0.0)])
        ax.errorbar(x, ratio, yerr=err, fmt=marker, color=color, mfc=color if filled else "none", capsize=3,
                    alpha=1.0 if kind == "population" else 0.55, label=label)
    ax.axhline(1.0, color="0.3", lw=1, label="ratio = 1 (law holds)")
    from matplotlib.ticker import FormatStrFormatter

    ax.set_yscale("log")
    for axis_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis_formatter(FormatStrFormatter("%g"))  # 0.9, not 9 x 10^-1
    ax.set_xticks(np.arange(len(ms)), [f"m = {m}" for m in ms])
    level = 100 * float(getattr(items[0], "confidence_level", 0.95))
    ax.set_ylabel(f"realized / predicted gradient MSE ({level:g}% interval)")
    full_title = _title("Theorem 3: realized / predicted gradient MSE", source, title)
    ax.set_title(full_title)
    ax.legend(fontsize="small")
    return {"m": ms, "series": series, "title": full_title, "path": _save(fig, out_path)}


def _law_ratio(result, kind: str, key: str) -> tuple[float, float, float]:
    """``(ratio, low, high)`` of one of a result's pooled ratios (NaN where missing)."""
    pooled = result.population_ratio_pooled if kind == "population" else result.ratio_pooled
    intervals = result.population_ratio_ci if kind == "population" else result.ratio_ci
    ratio = (pooled or {}).get(key)
    low, high = (intervals or {}).get(key, (np.nan, np.nan))
    return (np.nan if ratio is None else float(ratio)), float(low), float(high)


def _by_m(results_by_m) -> list:
    if isinstance(results_by_m, Mapping):
        items = list(results_by_m.items())
        for key, res in items:
            if int(key) != int(res.m):
                raise ValueError(f"results_by_m[{key}] holds a result with m={res.m}; key each result by its own m")
    else:
        items = [(int(res.m), res) for res in results_by_m]
    ms = [int(m) for m, _ in items]
    if len(set(ms)) != len(ms):
        raise ValueError(f"several results share an m ({sorted(ms)}); pass one result per group size")
    if len(ms) < 2:
        raise ValueError(f"need results at >= 2 distinct values of m to draw a trend; got m = {ms}")
    if min(ms) < 1:
        raise ValueError(f"m must be positive to sit on a log axis; got m = {sorted(ms)}")
    return sorted(((int(m), r) for m, r in items), key=lambda kv: kv[0])


def _pooled(items, mode: str):
    from scipy.stats import norm

    mean, err, law = [], [], []
    for m, res in items:
        realized = _vector(_mode_arrays(res, mode)[0], f"realized[{mode!r}] at m={m}")
        z = norm.ppf(0.5 + float(getattr(res, "confidence_level", 0.95)) / 2)
        mean.append(realized.mean())
        err.append(z * realized.std(ddof=1) / np.sqrt(realized.size) if realized.size > 1 else 0.0)
        law.append(float(res.predicted_pooled) if mode == "na" else float(res.an_law))
    hint = "Every m needs prompts with non-degenerate groups; drop all-constant prompts before analyze()."
    mean = _positive(np.array(mean), f"pooled realized MSE of {mode!r}", hint)
    return mean, np.array(err), _positive(np.array(law), f"{mode!r} law", hint)


def _population_line(ax, items, ms) -> list:
    pop = [getattr(r, "predicted_population_fisher", None) for _, r in items]
    if not all(p is not None and np.isfinite(p) and p > 0 for p in pop):
        return []
    return ax.plot(ms, pop, "--", color="tab:blue", lw=1, label="NA population law (τ²/m)·wᵀE[Ĉ]w (Fisher)")


def _log_m_axis(ax, ms) -> None:
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    ax.set(xscale="log", yscale="log", xlabel="rollouts per group m")
    # Tick exactly the m values that were run; decade ticks would hide them.
    ax.xaxis.set_major_locator(FixedLocator(ms))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(ms[0] / 1.25, ms[-1] * 1.25)


# --------------------------------------------------------------------------- Prop 1


def plot_influence(result_or_dict: Thm3Result | Mapping[str, Any], out_path, *,
                   oracle: Mapping[str, Any] | None = None, channel_names: Sequence[str] | None = None,
                   normalize: bool = True, title: str | None = None, source: str | None = None) -> dict:
    """Grouped bars of each estimator's per-channel influence (Prop 1).

    The influence of channel ``l`` on advantage ``A`` is ``Cov(A, z_l)``.
    Its share is ``infl_l / sum_k |infl_k|`` (the absolute sum keeps the sign
    of a negatively correlated channel); the shares are what Prop 1 compares:
    NA's follow ``w``, AN's lean toward the noisy channels.

    Parameters
    ----------
    result_or_dict : Thm3Result or dict mode -> (R,) array
        A Thm3Result (its ``influence`` dict, or ``influence_na`` /
        ``influence_an`` when that is empty) or the influences themselves.
    out_path : str or path-like
    oracle : dict mode -> (R,) array, optional
        Predicted influences (e.g. the oracle closed forms of
        :mod:`multireward_grpo.analysis.influence`), drawn as black diamonds
        on the bars of the same mode and normalized like them.
    channel_names : sequence of R str, optional
        Defaults to ``ch0 ... ch{R-1}``.
    normalize : bool
        Draw shares (default) or raw influences.
    title : str, optional
        Replaces the whole title.
    source : str, optional
        What the rewards come from (corpus, simulation), on the title's second line.

    Returns
    -------
    dict
        ``shares`` and ``influence`` (mode -> list over channels; shares NaN
        for an all-zero mode), ``oracle_shares`` (mode -> list), ``channels``, ``title``, ``path``.

    Raises
    ------
    ValueError
        On no modes, modes of different lengths, an oracle mode absent from
        the influences or of the wrong length, or a wrong number of names.
    """
    influence = _influence_dict(result_or_dict)
    R = next(iter(influence.values())).size
    names = _channel_names(channel_names, R)
    oracle = {mode: _vector(v, f"oracle[{mode!r}]", R) for mode, v in (oracle or {}).items()}
    for mode in oracle:
        if mode not in influence:
            raise ValueError(f"oracle has mode {mode!r} but the influences have modes {list(influence)}")
    scale = _shares if normalize else (lambda v: v)
    # Widen with the number of bars, but cap it so many channels stay legible on a page.
    fig = _new_figure((min(12.0, max(6.0, 0.45 * R * len(influence) + 3.0)), 4.8))
    ax = fig.add_subplot()
    width, oracle_label = 0.8 / len(influence), "oracle prediction"
    x = np.arange(R, dtype=np.float64)
    for i, (mode, infl) in enumerate(influence.items()):
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(pos, np.nan_to_num(scale(infl)), width, color=_color(mode, i), label=f"{_label(mode)} realized")
        if mode in oracle:
            ax.plot(pos, scale(oracle[mode]), "D", color="black", ms=6, label=oracle_label)
            oracle_label = None  # one legend entry for all oracle markers
    ax.axhline(0.0, color="0.3", lw=0.8)
    ax.set_xticks(x, names)
    ax.set(xlabel="reward channel", ylabel="influence share" if normalize else "influence Cov(A, z_ℓ)")
    full_title = _title("Prop 1: per-channel influence", source, title)
    ax.set_title(full_title)
    ax.legend(fontsize="small")
    return {"shares": {k: _shares(v).tolist() for k, v in influence.items()},
            "influence": {k: v.tolist() for k, v in influence.items()},
            "oracle_shares": {k: _shares(v).tolist() for k, v in oracle.items()},
            "channels": names, "title": full_title, "path": _save(fig, out_path)}


def _influence_dict(result_or_dict) -> dict[str, np.ndarray]:
    if isinstance(result_or_dict, Mapping):
        raw = dict(result_or_dict)
    else:
        raw = dict(getattr(result_or_dict, "influence", {}) or {}) or {
            "na": result_or_dict.influence_na, "an": result_or_dict.influence_an}
    if not raw:
        raise ValueError("no influences to plot; pass a Thm3Result or a dict mode -> (R,) array")
    first = np.asarray(next(iter(raw.values()))).size
    return {str(mode): _vector(v, f"influence[{mode!r}]", first) for mode, v in raw.items()}


def _channel_names(channel_names, R: int) -> list[str]:
    from multireward_grpo._validate import channel_labels

    return channel_labels(channel_names, R)


def _shares(values: np.ndarray) -> np.ndarray:
    total = float(np.abs(values).sum())
    return values / total if total > 0 else np.full(values.shape, np.nan)


# --------------------------------------------------------------------------- Prop 4


def plot_bias_vs_gamma(gammas, beta_hat, stderr, predicted, out_path, *, gamma_star: float | None = None,
                       title: str | None = None, source: str | None = None) -> dict:
    """The bias conditioning removes, against the model's gamma (Prop 4).

    Draws the simulated ``beta_hat`` with ``±1.96`` standard-error bars, the
    closed-form line, the zero line and a vertical line at ``gamma*``, and
    locates where the curves cross 0 by linear interpolation between
    neighbouring gammas.

    Parameters
    ----------
    gammas : (k,) array
        Distinct model gammas, k >= 2 (any order; they are sorted).
    beta_hat, stderr : (k,) arrays
        Simulated bias and its standard error (>= 0), e.g. from
        :func:`multireward_grpo.analysis.bias.simulate_bias`.
    predicted : (k,) array or None
        Closed form :func:`~multireward_grpo.analysis.bias.predicted_bias` at
        the same gammas; None leaves the line out.
    out_path : str or path-like
    gamma_star : float, optional
        Where the closed form changes sign.
    title : str, optional
        Replaces the whole title.
    source : str, optional
        The simulation's settings, on the title's second line.

    Returns
    -------
    dict
        ``crossing`` (first zero of the simulated curve, NaN if none),
        ``crossings`` (all of them), ``crossing_predicted`` (NaN if none or
        no ``predicted``), ``gamma_star``, ``title``, ``path``.

    Raises
    ------
    ValueError
        On mismatched lengths, fewer than two or repeated gammas, non-finite
        values or a negative standard error.
    """
    g, beta, se, pred = _bias_inputs(gammas, beta_hat, stderr, predicted)
    crossings = _zero_crossings(g, beta)
    fig = _new_figure((7.0, 4.8))
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.3", lw=0.8)
    ax.errorbar(g, beta, yerr=_Z95 * se, fmt="o", color="tab:blue", capsize=3, label="simulated β̂ ± 1.96 SE")
    if pred is not None:
        ax.plot(g, pred, "-", color="tab:red", label="closed form β(γ)")
    if gamma_star is not None:
        gamma_star = float(_vector([gamma_star], "gamma_star")[0])
        ax.axvline(gamma_star, ls="--", color="0.4", label=f"γ* = {gamma_star:.4g}")
    if crossings:
        ax.plot(crossings[:1], [0.0], "x", color="black", ms=9, mew=2,
                label=f"simulated zero at γ = {crossings[0]:.4g}")
    ax.set(xlabel="model γ (how much b matters where the gate fails)", ylabel="removed bias β")
    full_title = _title("Prop 4: bias removed by conditioning vs γ", source, title)
    ax.set_title(full_title)
    ax.legend(fontsize="small")
    pred_cross = _zero_crossings(g, pred) if pred is not None else []
    return {"crossing": crossings[0] if crossings else float("nan"), "crossings": crossings,
            "crossing_predicted": pred_cross[0] if pred_cross else float("nan"),
            "gamma_star": gamma_star, "title": full_title, "path": _save(fig, out_path)}


def _bias_inputs(gammas, beta_hat, stderr, predicted):
    g = _vector(gammas, "gammas")
    if g.size < 2 or np.unique(g).size != g.size:
        raise ValueError(f"gammas must hold >= 2 distinct values; got {g.tolist()}")
    beta = _vector(beta_hat, "beta_hat", g.size)
    se = _vector(stderr, "stderr", g.size)
    if np.any(se < 0):
        raise ValueError(f"stderr must be >= 0 (a standard error); got {se.tolist()}")
    pred = None if predicted is None else _vector(predicted, "predicted", g.size)
    order = np.argsort(g)
    return g[order], beta[order], se[order], None if pred is None else pred[order]


def _zero_crossings(x: np.ndarray, y: np.ndarray) -> list[float]:
    """Roots of the piecewise-linear curve through (x, y), x sorted ascending."""
    roots = set(x[y == 0].tolist())
    i = np.flatnonzero(y[:-1] * y[1:] < 0)
    roots.update((x[i] - y[i] * (x[i + 1] - x[i]) / (y[i + 1] - y[i])).tolist())
    return sorted(float(r) for r in roots)


# --------------------------------------------------------------------------- trainer evaluation


def plot_eval_comparison(results: Mapping[str, Any], out_path, *, title: str | None = None,
                         model: str | None = None, task: str | None = None) -> dict:
    """Grouped bars: mean reward per channel (and aggregate) for each model, +-1.96 SE.

    Parameters
    ----------
    results : mapping of name -> EvalResult
        From :func:`multireward_grpo.train.evaluation.evaluate_model`, all on one reward.
    out_path : path of the PNG
    title : str, optional
        Replaces the whole title.
    model, task : str, optional
        The base model and the task, named on the title's second line.

    Returns
    -------
    dict with the plotted ``means`` (models x columns), the ``title`` and the ``path``.
    """
    if not results:
        raise ValueError("results is empty: pass at least one model's EvalResult")
    names = list(results)
    channels = list(next(iter(results.values())).channel_names)
    if any(list(r.channel_names) != channels for r in results.values()):
        raise ValueError("every EvalResult must be on the same reward channels")
    columns = channels + ["aggregate"]
    means = np.array([list(r.means) + [r.aggregate_mean] for r in results.values()])  # (models, columns)
    errors = 1.96 * np.array([list(r.stderrs) + [r.aggregate_stderr] for r in results.values()])
    fig = _new_figure((min(12.0, max(6.4, 0.8 * len(columns) * len(names))), 4.8))
    ax = fig.add_subplot()
    width = 0.8 / len(names)
    x = np.arange(len(columns))
    for i, name in enumerate(names):
        ax.bar(x + (i - (len(names) - 1) / 2) * width, means[i], width, yerr=np.nan_to_num(errors[i]),
               capsize=3, label=name, color=f"C{i}")
    ax.set_xticks(x, columns)
    ax.set_ylabel("mean reward (+-1.96 SE across prompts)")
    source = ", ".join(part for part in (task and f"{task} task", model and f"base model {model}") if part)
    full_title = _title("Held-out evaluation", source, title)
    ax.set_title(full_title)
    ax.legend(fontsize=8)
    return {"means": means, "title": full_title, "path": _save(fig, out_path)}


# --------------------------------------------------------------------------- training curves


def trailing_mean(values, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each index (fewer at the start), NaNs skipped.

    Parameters
    ----------
    values : (T,) array
    window : int >= 1

    Returns
    -------
    (T,) array; NaN where the window holds no finite value.
    """
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be an int >= 1, got {window!r}")
    x = np.asarray(values, dtype=float)
    finite = np.isfinite(x)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, x, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    ends = np.arange(1, len(x) + 1)
    starts = np.maximum(ends - window, 0)
    n = counts[ends] - counts[starts]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[ends] - sums[starts]) / n, np.nan)


def plot_training_curves(history: Sequence[Mapping[str, Any]], out_path, *, channel_names: Sequence[str] | None = None,
                         window: int = 5, title: str | None = None, model: str | None = None,
                         mode: str | None = None) -> dict:
    """Rewards per step (raw and trailing mean), the KL and, when logged, the channel diagnostics.

    The diagnostics panels (drawn when the history has the trainer's
    ``zero_var_frac_{c}``, ``influence_{c}`` and ``noise_factor`` keys; a
    history without them plots the rewards and KL only) show per channel the
    share of groups where it is constant (no signal), its share of the
    influence ``infl_c / sum_k |infl_k|`` (Prop 1, see
    :func:`~multireward_grpo.analysis.influence.influence_shares`), and
    Theorem 3's predicted NA-vs-AN gradient-noise factor ``w' Chat w`` with
    AN's level 1 for reference. A record without them (a run resumed from an
    older history) leaves a gap.

    Parameters
    ----------
    history : sequence of dicts
        ``GRPOTrainer.train()``'s return value or the lines of
        ``history.jsonl``: each needs ``step``, ``mean_reward``, ``kl`` and
        ``mean_channel_{c}``.
    out_path : path of the PNG
    channel_names : sequence of str, optional
        Legend names of the channels (``channel c`` when None).
    window : int
        Steps in the trailing mean drawn over the noisy per-step values.
    title : str, optional
        Replaces the whole title.
    model, mode : str, optional
        The trained model and the advantage estimator (``GRPOConfig.model``
        and ``.mode``), named on the title's second line.

    Returns
    -------
    dict with ``steps`` (T,), ``smoothed`` (name -> (T,) trailing means),
    ``diagnostics`` (None without them, else a dict with ``zero_var_frac`` and
    ``influence_share``, each channel name -> (T,) per-step values,
    ``noise_factor`` (T,), and ``smoothed``, the same three as trailing
    means), ``title`` and ``path``.
    """
    steps, series, kl = _history_series(history, channel_names)
    diagnostics = _diagnostic_series(history, list(series)[1:], window)
    fig = _new_figure((7.2, 5.6) if diagnostics is None else (7.2, 10.4))
    ratios = (3, 1) if diagnostics is None else (3, 1, 1.3, 1.3, 1.3)
    axes = fig.subplots(len(ratios), 1, sharex=True, height_ratios=ratios)
    top, bottom = axes[0], axes[1]
    smoothed = {}
    for i, (name, values) in enumerate(series.items()):
        color = "black" if i == 0 else f"C{i - 1}"
        smoothed[name] = trailing_mean(values, window)
        top.plot(steps, values, color=color, alpha=0.25, linewidth=1)
        top.plot(steps, smoothed[name], color=color, linewidth=2.2 if i == 0 else 1.6, label=name)
    top.set_ylabel(f"reward (faint: per step; bold: mean of last {window})")
    top.legend(fontsize=8, loc="best")
    source = ", ".join(part for part in (model and f"model {model}", mode and f"mode {mode}") if part)
    full_title = _title("GRPO training", source, title)
    top.set_title(full_title)
    bottom.plot(steps, kl, color="tab:gray")
    bottom.set_ylabel("KL to reference")
    if diagnostics is not None:
        _draw_diagnostics(axes[2:], steps, diagnostics)
    axes[-1].set_xlabel("step")
    return {"steps": steps, "smoothed": smoothed, "diagnostics": diagnostics, "title": full_title,
            "path": _save(fig, out_path)}


_DIAGNOSTIC_KEYS = ("zero_var_frac_{c}", "influence_{c}")


def _diagnostic_series(history, names, window) -> dict | None:
    """Per-step diagnostics of the history (NaN where a record lacks them), or None when no record has them."""
    records = list(history)
    n_channels = len(names)
    keys = [key.format(c=c) for key in _DIAGNOSTIC_KEYS for c in range(n_channels)] + ["noise_factor"]
    if not any(key in record for record in records for key in keys):
        return None

    def column(key):
        return np.array([float(r.get(key, np.nan)) for r in records])

    influence = np.column_stack([column(f"influence_{c}") for c in range(n_channels)])  # (T, R)
    shares = np.array([_influence_shares_or_nan(row) for row in influence]).reshape(influence.shape)
    out = {
        "zero_var_frac": {name: column(f"zero_var_frac_{c}") for c, name in enumerate(names)},
        "influence_share": {name: shares[:, c] for c, name in enumerate(names)},
        "noise_factor": column("noise_factor"),
    }
    out["smoothed"] = {
        "zero_var_frac": {name: trailing_mean(v, window) for name, v in out["zero_var_frac"].items()},
        "influence_share": {name: trailing_mean(v, window) for name, v in out["influence_share"].items()},
        "noise_factor": trailing_mean(out["noise_factor"], window),
    }
    return out


def _influence_shares_or_nan(influence) -> np.ndarray:
    """``infl_c / sum_k |infl_k|`` of one step; NaN when a channel's influence is missing (no record)."""
    from multireward_grpo.analysis.influence import influence_shares

    if not np.all(np.isfinite(influence)):
        return np.full(influence.shape, np.nan)
    return influence_shares(influence)


def _draw_diagnostics(axes, steps, diagnostics) -> None:
    """Zero-variance share, influence share (per channel) and the noise factor, faint per step, bold smoothed."""
    zero_ax, share_ax, noise_ax = axes
    smoothed = diagnostics["smoothed"]
    for c, name in enumerate(diagnostics["zero_var_frac"]):
        for ax, key in ((zero_ax, "zero_var_frac"), (share_ax, "influence_share")):
            ax.plot(steps, diagnostics[key][name], color=f"C{c}", alpha=0.25, linewidth=1)
            ax.plot(steps, smoothed[key][name], color=f"C{c}", linewidth=1.6, label=name)
    zero_ax.set_ylabel("groups where the\nchannel is constant")
    zero_ax.set_ylim(-0.04, 1.04)
    share_ax.set_ylabel("influence share\nCov(A, z_c) / sum |Cov|")
    share_ax.axhline(0.0, color="0.6", linewidth=0.8)
    share_ax.legend(fontsize=7, loc="best", ncol=min(len(diagnostics["zero_var_frac"]), 4))
    noise_ax.plot(steps, diagnostics["noise_factor"], color="tab:purple", alpha=0.25, linewidth=1)
    noise_ax.plot(steps, smoothed["noise_factor"], color="tab:purple", linewidth=1.6, label="NA: w'Ĉw (predicted)")
    noise_ax.axhline(1.0, color="0.3", linestyle="--", linewidth=1, label="AN: 1")
    noise_ax.set_ylabel("gradient noise\nNA / AN (Theorem 3)")
    noise_ax.legend(fontsize=7, loc="best")


def _history_series(history, channel_names):
    records = list(history)
    if not records:
        raise ValueError("history is empty: train at least one step first")
    first = records[0]
    if not isinstance(first, Mapping) or not {"step", "mean_reward", "kl"} <= set(first):
        raise ValueError("history records need 'step', 'mean_reward' and 'kl' (GRPOTrainer.train() or history.jsonl)")
    n_channels = sum(1 for key in first if key.startswith("mean_channel_"))
    names = list(channel_names) if channel_names is not None else [f"channel {c}" for c in range(n_channels)]
    if len(names) != n_channels:
        raise ValueError(f"channel_names has {len(names)} names but the history has {n_channels} channels")

    def column(key):
        try:
            return np.array([float(r[key]) for r in records])
        except KeyError:
            raise ValueError(f"a history record lacks {key!r}; every record must have the same keys") from None

    series = {"mean reward": column("mean_reward")}
    series.update({name: column(f"mean_channel_{c}") for c, name in enumerate(names)})
    return column("step"), series, column("kl")
