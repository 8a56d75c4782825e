"""Statistics shared by the analysis modules (math layer).

Within-group z-scores are not here: the analysis uses the estimators' own
(:mod:`multireward_grpo.advantage`), which are safe at any float64 scale.

* :func:`bootstrap_ratio_ci` (units resampled) and :func:`two_level_ratio_ci`
  (prompts, then seeds within each prompt): percentile intervals of a pooled
  ratio ``sum(numerators) / sum(denominators)``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CI_METHODS",
    "bootstrap_ratio_ci",
    "two_level_ratio_ci",
    "two_level_ratio_draws",
    "variance_component_factors",
]

CI_METHODS = ("two_level", "prompts")
"""Interval methods of the pooled ratio: see :func:`two_level_ratio_ci` and :func:`bootstrap_ratio_ci`."""

# Bootstrap index matrices are built this many (resample x prompt) cells at a time.
_MAX_CELLS = 4_000_000
# The inner (seed-level) resamples of the two-level bootstrap: at most this many
# (pattern x prompt x seed) cells, and at least _MIN_POOL patterns.
_POOL_CELLS = 4_000_000
_MIN_POOL = 8


# --------------------------------------------------------------------------- intervals


def _percentile_interval(draws: np.ndarray, confidence_level: float) -> tuple[float, float]:
    alpha = (1.0 - confidence_level) / 2.0
    if not np.any(np.isfinite(draws)):
        return (float("nan"), float("nan"))
    low, high = np.nanquantile(draws, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def _check_resampling(n_resamples: int, confidence_level: float) -> None:
    if isinstance(n_resamples, (bool, np.bool_)) or not isinstance(n_resamples, (int, np.integer)):
        raise TypeError(f"n_resamples must be an int, got {n_resamples!r}")
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0, got {n_resamples}")
    if not 0 < confidence_level < 1:
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level}")


def bootstrap_ratio_ci(
    numerators,
    denominators,
    *,
    n_resamples: int = 2000,
    confidence_level: float = 0.95,
    rng: np.random.Generator | int | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``sum(numerators) / sum(denominators)``.

    Units (e.g. prompts) are resampled with replacement, keeping each unit's
    numerator and denominator together. Vectorized: each resample is a row of
    unit indices, drawn for a block of resamples at once. With few units the
    interval is too narrow (zero width from one unit); see
    :func:`two_level_ratio_ci` for prompts with several seeds each.

    Parameters
    ----------
    numerators, denominators : (P,) arrays
    n_resamples : int
        0 returns (nan, nan).
    confidence_level : float
    rng : Generator or int seed

    Returns
    -------
    (low, high)
    """
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"numerators and denominators must be 1-D of one length; got {num.shape} and {den.shape}")
    _check_resampling(n_resamples, confidence_level)
    if n_resamples == 0 or num.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(rng)
    P = num.size
    ratios = np.empty(n_resamples)
    step = max(1, _MAX_CELLS // P)
    for start in range(0, n_resamples, step):
        stop = min(n_resamples, start + step)
        idx = rng.integers(0, P, size=(stop - start, P))  # (B, P) resampled units
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios[start:stop] = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    return _percentile_interval(ratios, confidence_level)


def variance_component_factors(values) -> tuple[float, float]:
    """Davison & Hinkley's factors for a two-level bootstrap of (P, K) values.

    Resampling prompts and then seeds within each prompt counts the
    within-prompt noise twice (once through the prompt means, once through the
    seeds). Resampling the adjusted values
    ``ybar + d1 (ybar_p - ybar) + d2 (y_pk - ybar_p)`` instead gives a
    bootstrap variance of the grand mean equal to the unbiased
    variance-component estimate ``s_b^2 / P + s_w^2 / (P K)``, with
    ``s_w^2 = SSW / (P (K - 1))`` and
    ``s_b^2 = max(0, SSB / (P - 1) - s_w^2 / K)`` (Davison & Hinkley 1997,
    *Bootstrap Methods and their Application*, section 3.8).

    Parameters
    ----------
    values : (P, K) array
        K >= 2 values per prompt.

    Returns
    -------
    (d1, d2) : floats
        ``d2 = sqrt(K / (K - 1))``;
        ``d1 = sqrt(max(0, P / (P - 1) - SSW / (K (K - 1) SSB)))`` with
        ``SSB = sum_p (ybar_p - ybar)^2`` and ``SSW = sum_pk (y_pk - ybar_p)^2``.
        ``d1 = 0`` when ``P = 1`` or the prompt means are all equal: the
        prompt level has nothing to add.
    """
    y = np.asarray(values, dtype=np.float64)
    P, K = y.shape
    if K < 2:
        raise ValueError(f"a two-level bootstrap needs >= 2 seeds per prompt; got K={K}")
    top = np.max(np.abs(y))
    y = y / top if top > 0 else y  # the factors are scale-free: keep the squares in range
    prompt_mean = y.mean(axis=1)
    ssw = float(np.sum((y - prompt_mean[:, None]) ** 2))
    ssb = float(np.sum((prompt_mean - prompt_mean.mean()) ** 2))
    d2 = float(np.sqrt(K / (K - 1.0)))
    if P < 2 or ssb == 0:
        return 0.0, d2
    return float(np.sqrt(max(0.0, P / (P - 1.0) - ssw / (K * (K - 1.0) * ssb)))), d2


def _resample_counts(rng: np.random.Generator, n_patterns: int, K: int) -> np.ndarray:
    """(n_patterns, K) counts of K draws with replacement from K seeds."""
    picks = rng.integers(0, K, size=(n_patterns, K)) + K * np.arange(n_patterns)[:, None]
    return np.bincount(picks.ravel(), minlength=n_patterns * K).reshape(n_patterns, K).astype(np.float64)


def _two_level_table(num: np.ndarray, den: np.ndarray, rng: np.random.Generator, pool_size: int):
    """Adjusted numerator and denominator totals of one prompt slot: two (P * J,) arrays.

    Entry ``p * J + j``: prompt ``p``'s adjusted level ``K (ybar + d1 (ybar_p - ybar))``
    plus ``d2`` times its seed deviations summed under inner resample pattern ``j``.
    """
    P, K = num.shape
    total_den = den.sum()
    ratio = num.sum() / total_den if total_den != 0 else 0.0
    d1, d2 = variance_component_factors(num - ratio * den)  # the ratio's linearization
    counts_t = _resample_counts(rng, pool_size, K).T  # (K, J)
    tables = []
    for values in (num, den):
        prompt_mean = values.mean(axis=1, keepdims=True)  # (P, 1)
        grand = prompt_mean.mean()
        level = K * (grand + d1 * (prompt_mean - grand))
        # One matrix product gives every prompt's seed deviations summed under every pattern.
        tables.append((level + d2 * ((values - prompt_mean) @ counts_t)).ravel())
    return tables


def _paired_2d(numerators, denominators) -> tuple[np.ndarray, np.ndarray]:
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 2:
        raise ValueError(
            f"numerators and denominators must both be (P, K) = prompts x seeds; got {num.shape} and {den.shape}"
        )
    if num.shape[0] < 1 or num.shape[1] < 2:
        raise ValueError(f"a two-level bootstrap needs >= 1 prompt and >= 2 seeds per prompt; got {num.shape}")
    if not (np.all(np.isfinite(num)) and np.all(np.isfinite(den))):
        raise ValueError("numerators and denominators must be finite")
    return num, den


def two_level_ratio_draws(
    numerators,
    denominators,
    *,
    n_resamples: int = 2000,
    rng: np.random.Generator | int | None = None,
    pool_size: int | None = None,
) -> np.ndarray:
    """Bootstrap draws of the pooled ratio, resampling prompts then seeds.

    Each draw picks ``P`` prompts with replacement and, for each pick, ``K``
    seeds of that prompt with replacement, from the variance-component
    adjusted values of :func:`variance_component_factors`; the statistic is
    ``sum(numerators) / sum(denominators)`` over the drawn cells.

    Vectorized: the seed-level resamples come from ``pool_size`` count
    patterns drawn once (shared by all prompts, a matrix product), and each
    pick takes a random (prompt, pattern) pair, so the work is
    ``O(n_resamples * P + pool_size * P * K)`` instead of
    ``O(n_resamples * P * K)``. Each pick's seed resample is an exact draw;
    only its independence across picks is approximated, by ``pool_size``
    patterns per prompt.

    Parameters
    ----------
    numerators, denominators : (P, K) arrays
        Per (prompt, seed) values, e.g. ``ghat^2`` and its prediction.
    n_resamples : int
    rng : Generator or int seed
    pool_size : int, optional
        Seed-level patterns; default ``min(n_resamples, max(8, 4e6 // (P K)))``.

    Returns
    -------
    (n_resamples,) array
    """
    num, den = _paired_2d(numerators, denominators)
    rng = np.random.default_rng(rng)
    P, K = num.shape
    if pool_size is None:
        pool_size = min(n_resamples, max(_MIN_POOL, _POOL_CELLS // (P * K)))
    if n_resamples == 0:
        return np.empty(0)
    num_table, den_table = _two_level_table(num, den, rng, max(1, int(pool_size)))
    draws = np.empty(n_resamples)
    step = max(1, _MAX_CELLS // P)
    for start in range(0, n_resamples, step):
        stop = min(n_resamples, start + step)
        picks = rng.integers(0, num_table.size, size=(stop - start, P))  # uniform (prompt, pattern) pairs
        # Gathering from two flat tables is ~30x faster than from one (N, 2) table.
        with np.errstate(divide="ignore", invalid="ignore"):
            draws[start:stop] = num_table[picks].sum(axis=1) / den_table[picks].sum(axis=1)
    return draws


def two_level_ratio_ci(
    numerators,
    denominators,
    *,
    n_resamples: int = 2000,
    confidence_level: float = 0.95,
    rng: np.random.Generator | int | None = None,
    pool_size: int | None = None,
) -> tuple[float, float]:
    """Two-level percentile bootstrap interval of ``sum(numerators) / sum(denominators)``.

    Prompts are resampled, then seeds within each resampled prompt (see
    :func:`two_level_ratio_draws`), so the interval keeps the seed-level noise
    when there are few prompts: it has positive width at ``P = 1`` (where it
    speaks for that prompt only) and covers at about its level from ``P = 1``
    on, where resampling prompts alone gives zero width at ``P = 1`` and
    under-covers below ~10 prompts.

    Parameters
    ----------
    numerators, denominators : (P, K) arrays
    n_resamples : int
        0 returns (nan, nan).
    confidence_level : float
    rng : Generator or int seed
    pool_size : int, optional
        See :func:`two_level_ratio_draws`.

    Returns
    -------
    (low, high)
    """
    _check_resampling(n_resamples, confidence_level)
    draws = two_level_ratio_draws(numerators, denominators, n_resamples=n_resamples, rng=rng, pool_size=pool_size)
    return _percentile_interval(draws, confidence_level)
