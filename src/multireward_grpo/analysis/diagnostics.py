"""Per-channel diagnostics of one batch of groups: what each reward channel does to the advantages.

One implementation serves every place that reports them: our trainer's
``history.jsonl`` records and the TRL integration's metrics. Given a batch of
``B`` groups of ``m`` rollouts scored on ``R`` channels, the advantages that
were used and the estimator's options, :func:`channel_diagnostics` returns a
:class:`ChannelDiagnostics` with:

``zero_var_frac`` (R,)
    The share of the ``B`` groups in which the channel *as scored* is
    constant (no within-group contrast: that reward gives the group no
    signal), or has ``m - ddof <= 0`` observed values.
``influence`` (R,)
    Prop 1's ``infl_l(A) = Cov(A, z_l)``, pooled over groups. Per group ``b``
    and channel ``l``, with ``O`` the rollouts where the channel is observed
    (all ``m`` without missing rewards) and ``z_l`` the channel *as scored*
    standardized over ``O`` exactly as the estimators do it (the same
    ``ddof`` and ``eps``; exactly 0 for a constant channel)::

        c_bl = sum_{j in O} (A_bj - mean_O A_b) (z_bjl - mean_O z_bl) / (|O| - ddof)

    (0 where ``|O| - ddof <= 0``), and ``influence_l`` is the mean of
    ``c_bl`` over the groups (degenerate ones included: there the channel
    really has no influence). With the estimator's own ``ddof``,
    ``Cov(z_l, z_l) = sigma_l^2 / (sigma_l + eps)^2 ~ 1``, so NA's influence is
    ``sum_k w_k C_kl`` exactly as in Prop 1 (``w_l`` for uncorrelated
    channels) and AN's is ``sum_k w_k sigma_k C_kl / sqrt(w' Sigma w)``, with
    the group's own sample moments.
``correlation`` (R, R)
    ``Chat``: the within-group (Pearson) correlation of the channels *the
    estimator sees* (after ``conditioning``), averaged over the groups where
    both channels of the pair vary. A group in which channel ``k`` is constant
    has no correlation with ``k`` (NA gives ``k`` a zero there) and is left
    out of row and column ``k`` only; ``correlation_groups[k, l]`` counts the
    groups that entered entry ``(k, l)``, so ``degenerate_groups`` (the
    diagonal's complement) says how many groups each channel lost. An entry
    with no such group is NaN. Averaging pairwise keeps every group that says
    something about a pair, at the price that the pooled matrix need not be
    positive semi-definite. With missing rewards (``nan_policy="omit"``) a
    pair is correlated over the rollouts where both are observed, each channel
    centred and scaled over its own observed rollouts (as NA uses them).
    ``eps`` plays no part: it is a correlation, not a covariance of z-scores.
``noise_factor``
    ``w' Chat w``: Theorem 3's predicted ratio of NA's gradient MSE,
    ``(tau^2/m) w' E[Chat] w``, to AN's, ``~ tau^2/m``, for groups in which the
    channels vary (below 1: NA is less noisy than AN; positively correlated
    channels push it up to ``(sum w)^2``). NaN entries of ``Chat`` count as
    0: a channel that never varies adds nothing to NA's advantages, and a pair
    that never varies together is taken as uncorrelated.

Conditioning. With ``conditioning=`` the rules are applied here (as the
estimators apply them, with the same missing-reward mask) and ``Chat`` and
``noise_factor`` describe the conditioned channels the estimator sees, while
``zero_var_frac`` and ``influence`` describe the channels as scored (the
objective's own), as in :mod:`multireward_grpo.analysis.thm3`. Pass rewards
that are already conditioned, with ``conditioning=None``, to have every
statistic describe them.

Missing rewards (``nan_policy``, scipy's convention): ``"raise"`` refuses
NaN; ``"omit"`` leaves a missing reward out of its group and channel (the
advantages must then be finite); ``"propagate"`` leaves every group that
holds a NaN reward or advantage out of ``influence`` and ``correlation``
(counted in ``nan_groups``), and counts a channel holding a NaN as not
constant in ``zero_var_frac``.

numpy arrays and torch tensors are both accepted (statistics run in float64
for numpy, at least float32 for torch, on the tensor's device); the result is
numpy float64 either way. Inputs are never modified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from multireward_grpo._array import as_float_array, namespace
from multireward_grpo.advantage import (
    EstimatorOptions,
    _apply_moments,
    _check_nan_policy,
    _check_shape,
    _check_values,
    _first_position,
    _group_moments,
    _to_work,
    _validate_weights,
    apply_conditioning,
    parse_conditioning,
)

__all__ = ["ChannelDiagnostics", "channel_diagnostics"]

_LABELS = ("group", "rollout", "channel")


@dataclass(frozen=True)
class ChannelDiagnostics:
    """What each reward channel did in one batch of groups (see the module docstring).

    Arrays are read-only numpy float64 (counts int64); ``R`` is the number
    of channels.
    """

    zero_var_frac: np.ndarray
    """(R,) share of all groups in which the channel as scored is constant."""
    influence: np.ndarray
    """(R,) ``Cov(A, z_l)`` pooled over the usable groups (NaN when none is)."""
    correlation: np.ndarray
    """(R, R) pooled within-group correlation of the channels the estimator sees."""
    correlation_groups: np.ndarray
    """(R, R) int, the groups that entered each entry of ``correlation``."""
    noise_factor: float
    """``w' Chat w`` (NaN entries of ``Chat`` as 0)."""
    n_groups: int
    """Groups in the batch (``B``)."""
    nan_groups: int
    """Groups left out for a NaN reward or advantage (``nan_policy="propagate"`` only)."""

    @property
    def degenerate_groups(self) -> np.ndarray:
        """(R,) int: usable groups left out of ``correlation`` for each channel (constant there)."""
        return self.n_groups - self.nan_groups - np.diagonal(self.correlation_groups)


def channel_diagnostics(rewards, advantages, w=None, *, conditioning=None, ddof: int = 0, eps: float = 1e-8,
                        nan_policy: str = "raise") -> ChannelDiagnostics:
    """Zero-variance shares, influences, the pooled correlation and ``w' Chat w`` of a batch.

    Parameters
    ----------
    rewards : (B, m, R) array (numpy, array-like or torch)
        ``B`` groups of ``m`` rollouts scored on ``R`` channels, as scored
        (or already conditioned, with ``conditioning=None``); NaN is a missing
        reward, handled by ``nan_policy``.
    advantages : (B, m) array (numpy, array-like or torch)
        The advantages the estimator gave those rollouts.
    w : (R,) array, optional
        Objective weights (``w >= 0``, not all 0); default all ones.
    conditioning : optional
        Rules as in :func:`~multireward_grpo.advantage.apply_conditioning`
        that the estimator applied to ``rewards``.
    ddof : int
        The estimator's delta degrees of freedom (0: population std, the
        default of our estimators; TRL uses 1).
    eps : float
        The estimator's ``eps``, used in the z-scores of ``influence``.
    nan_policy : {"raise", "omit", "propagate"}
        The estimator's missing-reward policy.

    Returns
    -------
    ChannelDiagnostics
    """
    options = EstimatorOptions(ddof=ddof, eps=eps)
    raw, adv, weights, rules = _checked(rewards, advantages, w, conditioning, nan_policy)
    xp = namespace(raw)
    raw_mask = ~xp.isnan(raw) if nan_policy == "omit" and not xp.all_finite(raw) else None
    seen, seen_mask = _conditioned(raw, rules, raw_mask, nan_policy)
    usable = _usable_groups(raw, seen, adv) if nan_policy == "propagate" else None
    z, constant = _zscores(raw, raw_mask, options)
    influence = _influence(adv, z, raw_mask, options.ddof, usable)
    correlation, counts = _seen_correlation(seen, seen_mask, options, usable, (z, constant) if not rules else None)
    to_np = xp.to_numpy
    n_groups = int(raw.shape[0])
    nan_groups = 0 if usable is None else n_groups - int(xp.sum(usable))
    return ChannelDiagnostics(
        zero_var_frac=_frozen(to_np(xp.sum(xp.cast(constant, raw), axis=0)) / n_groups),
        influence=_frozen(to_np(influence)),
        correlation=_frozen(to_np(correlation)),
        correlation_groups=_frozen(to_np(counts).astype(np.int64)),
        noise_factor=_noise_factor(to_np(correlation), to_np(weights)),
        n_groups=n_groups,
        nan_groups=nan_groups,
    )


# --------------------------------------------------------------------------- inputs


def _checked(rewards, advantages, w, conditioning, nan_policy):
    """The rewards and advantages in the working dtype (advantages of the rewards' kind), weights, rules."""
    _check_nan_policy(nan_policy)
    rewards = as_float_array(rewards, "rewards")
    _check_shape(rewards, 3, "(B, m, R)")
    raw = _to_work(rewards)
    xp = namespace(raw)
    adv = as_float_array(advantages, "advantages")
    if tuple(adv.shape) != tuple(raw.shape[:2]):
        raise ValueError(f"advantages has shape {tuple(adv.shape)} but rewards is (B, m, R) = {tuple(raw.shape)}; "
                         "pass one advantage per rollout, shape (B, m)")
    adv = xp.like(raw, namespace(adv).to_numpy(adv)) if namespace(adv) is not xp else xp.to_dtype(adv, raw.dtype)
    weights = _validate_weights(w, raw.shape[-1], raw)
    rules = parse_conditioning(conditioning)
    for rule in rules:
        rule.check_channels(raw.shape[-1])
    _check_values(raw, nan_policy, _LABELS)
    _check_advantages(adv, nan_policy)
    return raw, adv, weights, rules


def _check_advantages(adv, nan_policy: str) -> None:
    """Infinite advantages are refused; NaN ones too, except under ``"propagate"``."""
    xp = namespace(adv)
    if xp.all_finite(adv):
        return
    bad = xp.isinf(adv) if nan_policy == "propagate" else ~xp.isfinite(adv)
    if xp.any(bad):
        group, rollout = _first_position(bad)
        raise ValueError(
            f"advantages must be finite; group {group}, rollout {rollout} is not (NaN advantages are accepted "
            "only with nan_policy='propagate', for groups that hold a missing reward)"
        )


def _conditioned(raw, rules, raw_mask, nan_policy: str):
    """The rewards the estimator saw and their observed mask, as the estimators form them."""
    if not rules:
        return raw, raw_mask
    xp = namespace(raw)
    seen = apply_conditioning(raw, rules, mask=raw_mask)
    if nan_policy != "omit":
        return seen, None
    seen_mask = ~xp.isnan(seen)  # a NaN gate leaves its target NaN
    return xp.where(seen_mask, seen, 0.0), seen_mask


def _usable_groups(raw, seen, adv):
    """(B,) bool: groups without a NaN reward (as scored or as seen) or advantage."""
    xp = namespace(raw)
    nan_count = xp.sum(xp.sum(xp.isnan(raw) | xp.isnan(seen), axis=-1), axis=-1) + xp.sum(xp.isnan(adv), axis=-1)
    return nan_count == 0


def _frozen(values: np.ndarray) -> np.ndarray:
    out = np.array(values, dtype=np.int64 if values.dtype.kind in "iu" else np.float64)
    out.setflags(write=False)
    return out


# --------------------------------------------------------------------------- statistics


def _zscores(x, mask, options: EstimatorOptions):
    """z of (B, m, C) values over their observed entries, and the (B, C) bool of constant channels.

    The estimators' own standardization (:mod:`multireward_grpo.advantage`):
    exact 0 for a constant channel, any finite scale.
    """
    xp = namespace(x)
    if mask is not None:
        x = xp.where(mask, x, 0.0)
    with xp.quiet():
        moments = _group_moments(x, mask, options, _LABELS, find_constant=True)
    return _apply_moments(moments, mask, options, _LABELS), moments.constant


def _observed_counts(z, mask):
    """(B, C) observed values per group and channel."""
    xp = namespace(z)
    if mask is None:
        return xp.full((z.shape[0], z.shape[-1]), float(z.shape[-2]), like=z)
    return xp.sum(xp.cast(mask, z), axis=-2)


def _influence(adv, z, mask, ddof: int, usable):
    """(R,) ``Cov(A, z_l)`` per group, with ``ddof``, averaged over the usable groups."""
    xp = namespace(z)
    dof = _observed_counts(z, mask) - ddof
    # z has mean 0 over the observed rollouts and 0 elsewhere, so sum_O (A - mean A)(z - mean z) = sum_j A_j z_j.
    with xp.quiet():
        cross = xp.einsum("bm,bmr->br", adv, z)
    per_group = xp.where(dof > 0, cross / xp.where(dof > 0, dof, 1.0), 0.0)
    if usable is None:
        return xp.sum(per_group, axis=0) / float(z.shape[0])
    kept = xp.sum(xp.where(usable[:, None], per_group, 0.0), axis=0)
    n_usable = float(xp.sum(usable))
    return kept / n_usable if n_usable > 0 else kept * xp.nan


def _seen_correlation(seen, mask, options: EstimatorOptions, usable, raw_zscores):
    """:func:`_pooled_correlation` of the channels the estimator sees.

    The correlation is a ratio, so ``eps`` (which scales each group and
    channel's z by ``sigma / (sigma + eps)``) cancels from it: the z-scores
    with the estimator's ``eps`` serve (those of the raw channels when
    nothing is conditioned). Only where ``sigma`` is so far below ``eps``
    that ``z**2`` leaves the normal range does it recompute them with
    ``eps = 0``, which the estimators' rescaling keeps exact at any scale.
    """
    z, constant = raw_zscores if raw_zscores is not None else _zscores(seen, mask, options)
    result = _pooled_correlation(z, constant, mask, usable, check_range=options.eps > 0)
    if result is None:
        z, constant = _zscores(seen, mask, EstimatorOptions(ddof=options.ddof, eps=0.0))
        result = _pooled_correlation(z, constant, mask, usable, check_range=False)
    return result


def _pair_norms(z, mask):
    """(B, R, R) ``sum_j z_jk^2`` over the rollouts where ``l`` is observed too, and the pair counts."""
    xp = namespace(z)
    if mask is None:
        squares = xp.einsum("bkk->bk", z.swapaxes(-2, -1) @ z)[..., None]  # (B, R, 1), broadcast over l
        return squares * xp.full((1, 1, z.shape[-1]), 1.0, like=z), float(z.shape[-2])
    observed = xp.cast(mask, z)
    return (z * z).swapaxes(-2, -1) @ observed, observed.swapaxes(-2, -1) @ observed


def _pooled_correlation(z, constant, mask, usable, *, check_range: bool):
    """(R, R) within-group correlations averaged over the groups where both channels vary, and the counts.

    With ``check_range``: None when a varying channel's sum of squared
    z-scores is below ``tiny / machine eps``, where subnormal rounding could
    show (the caller then recomputes z without ``eps``).
    """
    xp = namespace(z)
    with xp.quiet():
        cross = z.swapaxes(-2, -1) @ z  # (B, R, R); matmul is several times faster than einsum here
        norms, n_pairs = _pair_norms(z, mask)
        varies = ~constant
        if check_range and xp.any(varies & (xp.einsum("bkk->bk", norms) < _lowest_safe_norm(z))):
            return None
        valid = varies[:, :, None] & varies[:, None, :] & (norms > 0) & (norms.swapaxes(-2, -1) > 0) & (n_pairs >= 2)
        if usable is not None:
            valid = valid & usable[:, None, None]
        # Square roots taken apart: their product cannot underflow where norms * norms' would.
        scale = xp.sqrt(xp.where(valid, norms, 1.0)) * xp.sqrt(xp.where(valid, norms.swapaxes(-2, -1), 1.0))
        corr = xp.where(valid, cross / scale, 0.0)
    corr = xp.where(corr > 1.0, 1.0, xp.where(corr < -1.0, -1.0, corr))  # rounding only
    counts = xp.sum(xp.cast(valid, z), axis=0)
    pooled = xp.sum(corr, axis=0) / xp.where(counts > 0, counts, 1.0)
    return xp.where(counts > 0, pooled, xp.nan), counts


def _lowest_safe_norm(z) -> float:
    limits = namespace(z).limits(z)
    return math.ldexp(1.0, limits.minexp) / limits.eps


def _noise_factor(correlation: np.ndarray, weights: np.ndarray) -> float:
    """``w' Chat w`` with undefined entries of ``Chat`` taken as 0."""
    defined = np.where(np.isnan(correlation), 0.0, correlation).astype(np.float64)
    w = weights.astype(np.float64)
    return float(w @ defined @ w)
