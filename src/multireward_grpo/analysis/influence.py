"""The influence law (Prop 1): how much each reward channel moves the advantage.

The influence of channel ``l`` on an advantage ``A`` is ``infl_l(A) = Cov(A, z_l)``,
with ``z_l`` the channel standardized inside its group. For the oracle
(population-normalized) estimators, with channel covariance ``Sigma``
(standard deviations ``sigma``, correlation ``C``):

* AN: ``infl_l = sum_k w_k sigma_k C_kl / sqrt(w' Sigma w)`` — with ``C = I``
  proportional to ``w_l sigma_l``: the noisiest channel dominates;
* NA: ``infl_l = sum_k w_k C_kl`` — with ``C = I`` equal to ``w_l``.

:func:`realized_influence` measures the influence on rollouts (pooled over
groups), :func:`oracle_influence` gives the closed forms, and
:func:`within_group_covariance` estimates the ``Sigma`` to plug in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from multireward_grpo.advantage import (
    EstimatorOptions,
    _standardize_finding_constant,
    compute_advantage_batch,
)

__all__ = [
    "InfluenceResult",
    "influence_shares",
    "oracle_influence",
    "realized_influence",
    "within_group_covariance",
]

OracleMode = Literal["an", "na", "single", "gdpo"]


# --------------------------------------------------------------------------- validation


def _reward_tensor(rewards: Any) -> np.ndarray:
    try:
        arr = np.asarray(rewards)
    except (TypeError, ValueError):
        raise TypeError("rewards could not be read as a numeric array") from None
    if arr.dtype.kind == "b" or arr.dtype.kind in "iu":
        arr = arr.astype(np.float64)
    if arr.dtype.kind != "f":
        raise TypeError(f"rewards must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim not in (3, 4):
        hint = " For a single reward channel add a trailing axis: rewards[..., None]." if arr.ndim == 2 else ""
        raise ValueError(f"rewards must be (P, m, R) or (P, K, m, R); got shape {arr.shape}.{hint}")
    if any(s == 0 for s in arr.shape):
        raise ValueError(f"rewards is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            "rewards contain NaN or infinite values; the influence law needs complete "
            "groups: drop or impute the groups with missing rewards first"
        )
    return arr


def _weights(w: Any, n_channels: int) -> np.ndarray:
    if w is None:
        return np.ones(n_channels)
    try:
        arr = np.asarray(w, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"w must be a 1-D sequence of numbers, got {w!r}") from None
    if arr.ndim != 1 or arr.shape[0] != n_channels:
        raise ValueError(f"w must have one weight per channel ({n_channels}); got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"w must be finite, got {arr.tolist()}")
    if np.any(arr < 0):
        raise ValueError(f"w must be >= 0, got {arr.tolist()}")
    return arr


def _covariance_matrix(Sigma: Any) -> np.ndarray:
    try:
        S = np.asarray(Sigma, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError("Sigma must be a real (R, R) covariance matrix") from None
    if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] == 0:
        raise ValueError(f"Sigma must be a square (R, R) covariance matrix; got shape {S.shape}")
    if not np.all(np.isfinite(S)):
        raise ValueError("Sigma must be finite")
    scale = float(np.max(np.abs(S)))
    if not np.allclose(S, S.T, rtol=1e-8, atol=1e-12 * scale):
        raise ValueError(
            "Sigma must be symmetric; got max |Sigma - Sigma.T| = "
            f"{float(np.max(np.abs(S - S.T))):.3g}. Symmetrize it with (S + S.T) / 2 if that is rounding"
        )
    diag = np.diag(S)
    if np.any(diag <= 0):
        bad = np.flatnonzero(diag <= 0).tolist()
        raise ValueError(
            f"Sigma has a non-positive variance on channel(s) {bad}; a constant channel has "
            "no standardized value (z = 0) and no influence: drop it before calling"
        )
    S = (S + S.T) / 2.0
    min_eig = float(np.linalg.eigvalsh(S)[0])
    if min_eig < -1e-10 * float(np.max(diag)):
        raise ValueError(
            f"Sigma is not positive semi-definite (smallest eigenvalue {min_eig:.3g}); "
            "it is not a covariance matrix"
        )
    return S


# --------------------------------------------------------------------------- oracle


def oracle_influence(Sigma, w=None, *, mode: OracleMode = "an") -> np.ndarray:
    """Closed-form influence of each channel for the oracle estimators (Prop 1).

    Parameters
    ----------
    Sigma : (R, R) array
        Covariance of the channels inside a group: symmetric, positive
        semi-definite, positive diagonal.
    w : (R,) array, optional
        Objective weights (``w >= 0``); default all ones.
    mode : {"an", "na", "single", "gdpo"}
        ``"an"``: ``sum_k w_k sigma_k C_kl / sqrt(w' Sigma w)``;
        ``"na"``: ``sum_k w_k C_kl``;
        ``"single"``: ``C_0l`` (channel 0 alone);
        ``"gdpo"``: NA whitened by its own standard deviation,
        ``sum_k w_k C_kl / sqrt(w' C w)``.

    Returns
    -------
    (R,) ndarray
        ``infl_l`` for each channel ``l``.
    """
    S = _covariance_matrix(Sigma)
    R = S.shape[0]
    wv = _weights(w, R)
    sigma = np.sqrt(np.diag(S))
    C = S / np.outer(sigma, sigma)
    if mode == "na":
        return wv @ C
    if mode == "single":
        return C[0].copy()
    if mode == "an":
        var = float(wv @ S @ wv)
        if var <= 0:
            raise ValueError("w' Sigma w = 0: the weighted sum is constant and AN has no advantage to correlate")
        return (wv * sigma) @ C / np.sqrt(var)
    if mode == "gdpo":
        var = float(wv @ C @ wv)
        if var <= 0:
            raise ValueError("w' C w = 0: NA's advantage is constant and whitening it is undefined")
        return wv @ C / np.sqrt(var)
    raise ValueError(f"mode must be 'an', 'na', 'single' or 'gdpo', got {mode!r}")


def influence_shares(influence) -> np.ndarray:
    """Influences normalized to shares: ``infl_l / sum_k |infl_k|``.

    The shares sum to 1 when every influence is non-negative (the usual case
    with ``w >= 0`` and non-negative correlations); all zeros when every
    influence is 0.
    """
    v = np.asarray(influence, dtype=np.float64)
    total = float(np.sum(np.abs(v)))
    return v / total if total > 0 else np.zeros_like(v)


def within_group_covariance(rewards, *, ddof: int = 1) -> np.ndarray:
    """The channel covariance inside groups, averaged over groups.

    Parameters
    ----------
    rewards : (P, m, R) or (P, K, m, R) array
    ddof : int
        Delta degrees of freedom of each group's covariance (1: unbiased).
        :func:`oracle_influence` depends on ``Sigma`` only through ratios, so
        a common factor such as ``(m - 1) / m`` does not change it.

    Returns
    -------
    (R, R) ndarray
        The mean of the per-group covariance matrices: the plug-in ``Sigma``
        for :func:`oracle_influence`. When prompts differ in their covariance
        this is a pooled summary; the oracle at the pooled ``Sigma`` is then
        an approximation to the average of per-prompt oracles.
    """
    r = _reward_tensor(rewards)
    flat = r.reshape(-1, r.shape[-2], r.shape[-1])
    m = flat.shape[1]
    if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or ddof < 0:
        raise ValueError(f"ddof must be a non-negative int, got {ddof!r}")
    if m - ddof <= 0:
        raise ValueError(f"groups of m = {m} rollouts have no covariance with ddof = {ddof}")
    with np.errstate(over="ignore", invalid="ignore"):
        d = flat - flat.mean(axis=1, keepdims=True)
        cov = np.einsum("gmr,gms->rs", d, d) / (flat.shape[0] * (m - ddof))
    bad = np.flatnonzero(~np.isfinite(np.diagonal(cov)))
    if bad.size:
        raise ValueError(
            f"the within-group variance of channel {int(bad[0])} is beyond the float64 range (rewards of "
            f"magnitude up to {np.abs(flat[..., bad[0]]).max():.3g}); divide that channel by a constant c first "
            "(and multiply its weight by c, which leaves w . r unchanged)"
        )
    return cov


# --------------------------------------------------------------------------- realized


@dataclass(frozen=True)
class InfluenceResult:
    """Realized influence of each channel on an estimator's advantages.

    Attributes
    ----------
    influence : (R,) ndarray
        Mean over groups of the within-group covariance (ddof 0) between the
        advantages and each standardized channel.
    stderr : (R,) ndarray
        Standard error across groups: ``std(per_group, ddof=1) / sqrt(G)``
        (NaN with fewer than 2 groups).
    shares : (R,) ndarray
        ``influence / sum |influence|`` (see :func:`influence_shares`).
    mode : str
        The estimator, or ``"custom"`` when advantages were passed in.
    w : (R,) ndarray
    n_groups : int
        Groups pooled (``P`` or ``P * K``).
    group_size : int
        ``m``.
    n_degenerate : (R,) ndarray of int
        Groups where the channel is constant (``z = 0``, so its influence there
        is 0). Counted in the mean unless ``omit_degenerate``.
    n_used : (R,) ndarray of int
        Groups averaged per channel.
    per_group : (G, R) ndarray
        The per-group covariances (for bootstraps); left out of ``to_dict``.
    """

    influence: np.ndarray
    stderr: np.ndarray
    shares: np.ndarray
    mode: str
    w: np.ndarray
    n_groups: int
    group_size: int
    n_degenerate: np.ndarray
    n_used: np.ndarray
    per_group: np.ndarray

    def to_dict(self, *, include_per_group: bool = False) -> dict:
        """A JSON-serializable dict (``per_group`` only when asked for)."""
        out = {
            "influence": self.influence.tolist(),
            "stderr": self.stderr.tolist(),
            "shares": self.shares.tolist(),
            "mode": self.mode,
            "w": self.w.tolist(),
            "n_groups": self.n_groups,
            "group_size": self.group_size,
            "n_degenerate": self.n_degenerate.tolist(),
            "n_used": self.n_used.tolist(),
        }
        if include_per_group:
            out["per_group"] = self.per_group.tolist()
        return out


def realized_influence(
    rewards,
    w=None,
    *,
    mode: str = "na",
    conditioning: Any = None,
    advantages=None,
    scale_by_std: bool = True,
    ddof: int = 0,
    eps: float = 1e-8,
    omit_degenerate: bool = False,
) -> InfluenceResult:
    """Influence of each reward channel on the advantages, measured on rollouts.

    For each group ``g`` and channel ``l`` the within-group covariance
    ``c_gl = (1/m) sum_j (A_gj - mean_g A) z_gjl`` is formed (``z`` is the
    raw channel standardized in its group with the given ``ddof`` and ``eps``;
    ``z`` has group mean 0), and ``infl_l`` is the mean of ``c_gl`` over
    groups. Everything is vectorized over groups.

    Parameters
    ----------
    rewards : (P, m, R) or (P, K, m, R) array
        Raw rewards, complete (no NaN). The channels ``z_l`` are standardized
        from these raw values also when ``conditioning`` gates the estimator's
        input: the influence is on the channels as scored.
    w : (R,) array, optional
        Objective weights (``w >= 0``); default all ones.
    mode : str
        Estimator passed to
        :func:`multireward_grpo.advantage.compute_advantage_batch`.
    conditioning : optional
        Conditioning rules applied before the estimator.
    advantages : (P, m) or (P, K, m) array, optional
        Precomputed advantages (any estimator); then ``mode`` and
        ``conditioning`` are not used and the result's mode is ``"custom"``.
    scale_by_std, ddof, eps
        Estimator options (``ddof`` and ``eps`` also define ``z``).
    omit_degenerate : bool
        False (default): a group where channel ``l`` is constant contributes
        ``c_gl = 0`` (z = 0 there, the estimators' convention). True: such
        groups are left out of channel ``l``'s mean and standard error.

    Returns
    -------
    InfluenceResult

    Notes
    -----
    For ``(P, K, m, R)`` input each seed slice ``rewards[:, k]`` goes to the
    estimator as one batch (this matters only for batch-level estimators such
    as ``"gdpo"``); the ``P * K`` groups are then pooled.
    """
    r = _reward_tensor(rewards)
    R, m = r.shape[-1], r.shape[-2]
    wv = _weights(w, R)
    if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or ddof < 0:
        raise ValueError(f"ddof must be a non-negative int, got {ddof!r}")
    if not (isinstance(eps, (int, float, np.floating)) and np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if omit_degenerate not in (True, False):
        raise TypeError(f"omit_degenerate must be True or False, got {omit_degenerate!r}")

    if advantages is not None:
        A = np.asarray(advantages, dtype=np.float64)
        if A.shape != r.shape[:-1]:
            raise ValueError(
                f"advantages must have shape {r.shape[:-1]} (rewards without the channel axis); got {A.shape}"
            )
        label = "custom"
    else:
        opts = {"conditioning": conditioning, "scale_by_std": scale_by_std, "ddof": int(ddof), "eps": float(eps)}
        batches = [r] if r.ndim == 3 else [r[:, k] for k in range(r.shape[1])]
        parts = [np.asarray(compute_advantage_batch(x, wv, mode, **opts), dtype=np.float64) for x in batches]
        A = parts[0] if r.ndim == 3 else np.stack(parts, axis=1)
        label = str(mode)
    if not np.all(np.isfinite(A)):
        raise ValueError("advantages contain NaN or infinite values; the influence needs finite advantages")

    flat = r.reshape(-1, m, R)
    A = A.reshape(-1, m)
    G = flat.shape[0]
    # The estimators' z (scale-safe at any float64 scale); a channel counts as
    # degenerate only when it is exactly constant, not when its variance underflowed.
    options = EstimatorOptions(ddof=int(ddof), eps=float(eps))
    z, degenerate = _standardize_finding_constant(flat.astype(np.float64, copy=False), options)
    Ac = A - A.mean(axis=1, keepdims=True)
    per_group = np.einsum("gm,gmr->gr", Ac, z) / m
    used = ~degenerate if omit_degenerate else np.ones_like(degenerate)
    n_used = used.sum(axis=0)
    safe_n = np.maximum(n_used, 1)
    vals = np.where(used, per_group, 0.0)
    influence = np.where(n_used > 0, vals.sum(axis=0) / safe_n, np.nan)
    dev = np.where(used, per_group - influence[None, :], 0.0)
    var = (dev**2).sum(axis=0) / np.maximum(n_used - 1, 1)
    stderr = np.where(n_used >= 2, np.sqrt(var / safe_n), np.nan)
    return InfluenceResult(
        influence=influence,
        stderr=stderr,
        shares=influence_shares(np.nan_to_num(influence)),
        mode=label,
        w=wv,
        n_groups=int(G),
        group_size=int(m),
        n_degenerate=degenerate.sum(axis=0).astype(int),
        n_used=n_used.astype(int),
        per_group=per_group,
    )
