"""Validation of correlation matrices (math layer: numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["validate_correlation"]

# Tolerances for accepting a user's correlation matrix (round-off, not intent).
_SYM_TOL = 1e-8
_DIAG_TOL = 1e-8
_PSD_TOL = 1e-8


def validate_correlation(C: Any, R: int | None = None, what: str = "channels") -> np.ndarray:
    """Check that ``C`` is an ``(R, R)`` correlation matrix; return a clean copy.

    Raises
    ------
    ValueError
        With what was wrong (shape, asymmetry, diagonal, not PSD) and a fix.
    """
    try:
        C = np.array(C, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError("C must be a numeric (R, R) array-like correlation matrix") from None
    if C.ndim != 2 or C.shape[0] != C.shape[1] or C.shape[0] == 0:
        raise ValueError(f"C must be a square (R, R) correlation matrix with R >= 1, got shape {C.shape}")
    if R is not None and C.shape[0] != R:
        raise ValueError(
            f"C is {C.shape[0]}x{C.shape[0]} but there are {R} {what}; "
            "pass one row of C per channel"
        )
    if not np.all(np.isfinite(C)):
        raise ValueError("C contains NaN or inf; every entry must be a finite correlation")
    _check_symmetric_unit_diag(C)
    C = (C + C.T) / 2.0
    np.fill_diagonal(C, 1.0)
    _check_psd(C)
    return C


def _check_symmetric_unit_diag(C: np.ndarray) -> None:
    asym = np.abs(C - C.T)
    if asym.max() > _SYM_TOL:
        i, j = np.unravel_index(np.argmax(asym), asym.shape)
        raise ValueError(
            f"C is not symmetric: C[{i},{j}]={C[i, j]} but C[{j},{i}]={C[j, i]}; "
            "a correlation matrix must equal its transpose (use (C + C.T) / 2 if this is round-off)"
        )
    diag = np.diag(C)
    if np.abs(diag - 1.0).max() > _DIAG_TOL:
        raise ValueError(
            f"C must have ones on the diagonal, got diag(C)={diag.tolist()}; "
            "if this is a covariance matrix S, pass S / outer(sqrt(diag(S)), sqrt(diag(S)))"
        )
    off = np.abs(C - np.eye(C.shape[0]))
    if off.max() > 1.0 + _SYM_TOL:
        i, j = np.unravel_index(np.argmax(off), off.shape)
        raise ValueError(f"C[{i},{j}]={C[i, j]} is not a correlation; entries must lie in [-1, 1]")


def _check_psd(C: np.ndarray) -> None:
    smallest = float(np.linalg.eigvalsh(C)[0])
    if smallest < -_PSD_TOL:
        raise ValueError(
            f"C is not positive semi-definite (smallest eigenvalue {smallest:.3g}): the requested "
            "correlations cannot hold together (e.g. rho12 = rho13 = 0.9 with rho23 = -0.9); "
            "weaken some of them or project C onto the nearest correlation matrix"
        )
