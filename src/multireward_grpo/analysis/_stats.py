"""Resampling helpers shared by the analysis modules (math layer)."""

from __future__ import annotations

import numpy as np

# Bootstrap count matrices are built this many (resample x prompt) cells at a time.
_MAX_CELLS = 4_000_000


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
    unit indices, drawn for a block of resamples at once.

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
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0, got {n_resamples}")
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
    alpha = (1.0 - confidence_level) / 2.0
    low, high = np.nanquantile(ratios, [alpha, 1.0 - alpha]) if np.any(np.isfinite(ratios)) else (np.nan, np.nan)
    return (float(low), float(high))
