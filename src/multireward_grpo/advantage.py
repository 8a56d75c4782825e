"""Group-relative advantage estimators for several reward channels.

A group is ``m`` rollouts of one prompt, each scored on ``R`` reward channels,
with objective weights ``w`` (``w >= 0``). Per channel ``l`` the group mean is
``mu_l``, the group standard deviation ``sigma_l`` (``ddof`` = 0 by default)
and ``z_jl = (r_jl - mu_l) / (sigma_l + eps)``.

Built-in estimators (``mode=``):

``"an"``  aggregate, then normalize (classic GRPO): ``s_j = w . r_j`` and
          ``A_j = (s_j - mean(s)) / (std(s) + eps)``.
``"na"``  normalize each channel, then aggregate (decoupled; MO-GRPO / GDPO
          without batch whitening): ``A_j = sum_l w_l z_jl``.
``"single"``  the gate channel (channel 0) alone: ``A_j = z_j0``. Its weight
          is not applied: a single normalized channel has no scale to weigh.
``"gdpo"``  ``"na"``, then the advantages of the whole batch are whitened once
          more (GDPO).

Statistical conventions, each a named option (see :class:`EstimatorOptions`):

* ``ddof=0``: population standard deviation inside the group.
* ``eps=1e-8``: added to the standard deviation before dividing.
* A channel that is constant inside a group has zero variance; its ``z`` is
  exactly 0 (no signal), whatever ``eps`` is. Statistics are computed on the
  values shifted by one member of the group, so a constant channel gives an
  exact 0 rather than rounding noise divided by ``eps``.
* A group with ``m - ddof <= 0`` rollouts (e.g. a one-rollout group) has no
  within-group contrast: its advantages are 0.
* ``scale_by_std=False`` drops the division by the standard deviation and
  keeps the centring (Dr. GRPO, Liu et al. 2025, "Understanding R1-Zero-Like
  Training: A Critical Perspective").
* ``nan_policy`` follows scipy: ``"raise"`` (default) rejects NaN rewards,
  ``"propagate"`` returns NaN for every group that holds one, ``"omit"``
  drops the missing reward from that group's statistics: under ``"na"`` the
  rollout keeps the contribution of its observed channels, under ``"an"``
  (which needs every weighted channel to form ``s_j``) the rollout is left out
  of the group and gets advantage 0. Infinite rewards are always an error.
  Under ``"gdpo"`` a NaN group is also left out of the batch whitening, so
  it alone is NaN.

Precision: statistics are computed in float64 for numpy input and in at least
float32 for torch input (float16 and bfloat16 are upcast), and advantages are
returned in the input dtype. Where the squared deviations of a group would
overflow (or, with ``eps`` near 0, underflow) the deviations are first scaled
by a power of two, which is exact, so rewards of any finite scale give the
same advantages; deviations that overflow themselves (values near the
dtype's maximum) are taken of the halved values, and a weighted sum
``w . r`` that overflows is formed in power-of-two units per group. A result
that does not fit (centred values with ``scale_by_std=False``, advantages
beyond the range of the output dtype) raises ValueError naming the group.

Conditioning (:class:`Conditioning`, :func:`apply_conditioning`) gates one
channel by another before the estimator runs.

Every function accepts numpy arrays (or array-likes) and returns numpy, or
accepts torch tensors and returns torch tensors on the same device and dtype.
Inputs are never modified.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterable, Literal, NamedTuple, Protocol

import numpy as np

from multireward_grpo._array import as_float_array, is_torch, namespace
from multireward_grpo._validate import (
    check_channel_index,
    check_choice,
    check_float,
    check_int,
    did_you_mean,
)

__all__ = [
    "Conditioning",
    "EstimatorOptions",
    "NAN_POLICIES",
    "apply_conditioning",
    "compute_advantage",
    "compute_advantage_batch",
    "compute_advantage_flat",
    "get_estimator",
    "group_standardize",
    "is_batch_level",
    "list_estimators",
    "parse_conditioning",
    "register_estimator",
    "unregister_estimator",
]

NAN_POLICIES = ("raise", "omit", "propagate")
NanPolicy = Literal["raise", "omit", "propagate"]


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class EstimatorOptions:
    """Statistical conventions shared by every estimator."""

    ddof: int = 0
    """Delta degrees of freedom of the group standard deviation (0: population,
    the GRPO convention; 1: sample)."""

    eps: float = 1e-8
    """Added to the standard deviation before dividing, so near-constant groups
    do not explode. Zero-variance groups give 0 whatever ``eps`` is."""

    scale_by_std: bool = True
    """Divide by the group standard deviation. ``False`` keeps only the
    centring (Dr. GRPO)."""

    def __post_init__(self):
        # Stored normalized (a numpy int, a YAML string "1e-8"), so the fields are plain Python values.
        object.__setattr__(self, "ddof", check_int("ddof", self.ddof, 0))
        object.__setattr__(self, "eps", check_float("eps", self.eps, minimum=0.0))
        object.__setattr__(self, "scale_by_std", _check_bool("scale_by_std", self.scale_by_std))


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


# --------------------------------------------------------------------------- group statistics


def _shifted(x, mask):
    """``x`` minus one observed member of its group (0 where unobserved), and the group sizes.

    Shifting by a member makes a constant channel exactly 0 in every later
    step, and keeps the one-pass variance free of cancellation
    (``|mean(d)| <= sqrt(m) * std``, so the relative error stays ~m ulp).
    """
    xp = namespace(x)
    if mask is None:
        return x - x[..., :1, :], float(x.shape[-2])
    first = xp.take_along(x, xp.first_true(mask, axis=-2), axis=-2)
    return xp.where(mask, x - first, 0.0), xp.cast(xp.sum(mask, axis=-2, keepdims=True), x)


def _sums(d, with_squares: bool):
    """Group sums of ``d`` and (when asked) of ``d**2``, each (B, 1, C)."""
    xp = namespace(d)
    # einsum reduces over the short m axis ~5x faster than numpy's sum(axis=-2).
    sum_d = xp.einsum("...mc->...c", d)[..., None, :]
    sum_sq = xp.einsum("...mc,...mc->...c", d, d)[..., None, :] if with_squares else None
    return sum_d, sum_sq


def _underflow_floor(group_size: int, limits) -> float:
    """The smallest ``eps`` for which squares lost to underflow cannot show.

    Underflow perturbs the variance by at most ``(m + 1)`` times the smallest
    subnormal, so the standard deviation by at most the square root of that;
    against ``std + eps >= eps`` this stays below one unit in the last place
    once ``eps`` is above this floor (~3e-146 in float64, ~1e-15 in float32
    at m = 8). The default ``eps=1e-8`` is far above it.
    """
    return math.sqrt((group_size + 1) * limits.smallest_subnormal) / limits.eps


def _needs_rescale(sum_d, sum_sq, group_size: int, options: EstimatorOptions, limits) -> bool:
    xp = namespace(sum_d)
    if sum_sq is None:  # centring only: no squares, only the sum can overflow
        return xp.any(~(xp.abs(sum_d) <= limits.max / 2))
    if options.eps < _underflow_floor(group_size, limits):
        return True
    # Half the maximum leaves room for sum_d * mean_d <= sum_sq to round upwards.
    # A NaN reward (nan_policy="propagate") compares False and stays NaN.
    return xp.any(sum_sq > limits.max / 2)


def _rescale(x, mask, d, labels):
    """``d`` divided by a power of two per group and channel, and those exponents.

    The power of two brings the largest ``|d|`` of each group and channel into
    [1, 2): exact (mantissas are untouched), and the squares can neither
    overflow nor underflow. Where the deviations themselves overflow (values
    near the dtype's maximum of both signs) they are taken of ``x / 2``
    instead, which is exact for normal numbers, and land in [2, 4): so the
    exponent never exceeds the dtype's largest and ``2**exponent`` is finite.
    Returns a new ``d``; the one passed in may be overwritten.
    """
    xp = namespace(d)
    limits = xp.limits(d)
    peak = xp.max_abs(d, axis=-2)  # (B, 1, C)
    halved = xp.isinf(peak)
    if xp.any(halved):
        d = xp.where(halved, _shifted(x * 0.5, mask)[0], d)
        peak = xp.max_abs(d, axis=-2)
        _refuse_infinite_peak(peak, labels)
    exponent = xp.binary_exponent(peak, limits.minexp, limits.maxexp - 1)
    # A halved channel is divided by 2**(exponent - 1), which with the halving is 2**exponent in all:
    # its exponent stays below the dtype's largest (a single power of two could not reach the full one).
    shift = exponent - xp.cast(halved, exponent)
    d *= xp.ldexp(xp.full(tuple(peak.shape), 1.0, like=peak), -shift)
    return d, exponent


def _refuse_infinite_peak(peak, labels) -> None:
    """Halved deviations of finite values are finite: an infinite one means an infinite input."""
    xp = namespace(peak)
    infinite = xp.isinf(peak)
    if xp.any(infinite):
        raise ValueError(
            f"{_describe(_first_position(infinite), labels)} holds non-finite values, so its group statistics "
            "are not finite; drop or re-score those rollouts"
        )


def _mean_and_factor(sum_d, sum_sq, n, options: EstimatorOptions, exponent, unit_exponent, like):
    """Group mean of ``d`` and the factor with ``(d - mean) * factor`` = z (or the centred value).

    ``d`` is the shifted ``x`` divided by ``2**exponent`` (None: 1), and ``x``
    the values divided by ``2**unit_exponent`` (None: 1): ``eps`` is carried
    into the units of ``d`` by both, the centred value into those of ``x``.
    """
    xp = namespace(like)
    if isinstance(n, float):  # no mask: one size for every group
        mean_d = sum_d / n
        dof = n - options.ddof
        dof_ok = dof > 0
        if not dof_ok:  # too few rollouts for any contrast
            return mean_d, xp.zeros(tuple(sum_d.shape), like=sum_d)
    else:
        mean_d = sum_d / xp.where(n > 0, n, 1.0)
        dof_ok = n - options.ddof > 0
        dof = xp.where(dof_ok, n - options.ddof, 1.0)
    if not options.scale_by_std:
        factor = xp.full(tuple(sum_d.shape), 1.0, like=sum_d) if dof_ok is True else xp.cast(dof_ok, like)
        return mean_d, factor if exponent is None else xp.ldexp(factor, exponent)
    var = (sum_sq - sum_d * mean_d) / dof
    if dof_ok is not True:
        var = xp.where(dof_ok, var, 0.0)
    std = xp.sqrt(xp.where(var > 0, var, 0.0))
    eps = options.eps
    if exponent is not None or unit_exponent is not None:
        eps_exponent = _add_exponents(exponent, unit_exponent)
        # A spread far below eps can make eps overflow in these units: z is then 0, as it should be.
        eps = xp.ldexp(xp.full(tuple(std.shape), options.eps, like=std), -eps_exponent)
    positive = std > 0
    return mean_d, xp.where(positive, 1.0 / xp.where(positive, std + eps, 1.0), 0.0)


def _add_exponents(first, second):
    if first is None or second is None:
        return second if first is None else first
    return first + second


_LABELS = ("group", "", "channel")


class _Moments(NamedTuple):
    """What :func:`_group_moments` returns: ``(d - mean_d) * factor`` is z."""

    d: Any
    """(B, m, C) ``x`` minus one observed member of its group (0 where
    unobserved), possibly divided by a power of two per group and channel."""
    mean_d: Any
    """(B, 1, C) group mean of ``d`` over observed values."""
    factor: Any
    """(B, 1, C) ``(d - mean_d) * factor`` is z (``(x - mean) / (std + eps)``),
    or the centred ``x - mean`` when ``options.scale_by_std`` is False; 0 for
    zero-variance groups and groups with ``m - ddof <= 0`` values."""
    constant: Any = None
    """(B, C) bool, True where the channel is constant in its group or the
    group has ``m - ddof <= 0`` values; None unless asked for."""


def _group_moments(x, mask, options: EstimatorOptions, labels=_LABELS, *, unit_exponent=None, find_constant=False):
    """Shifted values, their group mean and the factor that standardizes them.

    Parameters
    ----------
    x : (B, m, C) array, in the working dtype (see :func:`_to_work`)
    mask : (B, m, C) bool array or None
        True where a value is observed.
    options : EstimatorOptions
    labels : names of the axes of ``x`` for error messages
    unit_exponent : (B, 1, 1) or (B, 1, C) int array, optional
        ``x`` holds the values divided by ``2**unit_exponent`` (values whose
        aggregate overflows the dtype): ``eps`` is converted to those units;
        centred values (``scale_by_std=False``) stay in them. The deviations
        are then always rescaled, since ``eps`` in these units is far below
        the underflow floor.
    find_constant : bool
        Also return which channels are constant in their group (exactly: a
        varying channel whose squared deviations underflow to 0 is not).

    Returns
    -------
    _Moments

    Run it inside ``namespace(x).quiet()``: overflow is detected from the
    sums, not reported as numpy warnings.
    """
    xp = namespace(x)
    d, n = _shifted(x, mask)
    with_squares = options.scale_by_std or find_constant
    sum_d, sum_sq = _sums(d, with_squares)
    exponent = None
    if unit_exponent is not None or _needs_rescale(sum_d, sum_sq, x.shape[-2], options, xp.limits(x)):
        d, exponent = _rescale(x, mask, d, labels)
        sum_d, sum_sq = _sums(d, with_squares)
    mean_d, factor = _mean_and_factor(sum_d, sum_sq, n, options, exponent, unit_exponent, x)
    constant = _exactly_constant(d, sum_sq, n, options.ddof) if find_constant else None
    return _Moments(d, mean_d, factor, constant)


def _exactly_constant(d, sum_sq, n, ddof: int):
    """(B, C) bool: every observed deviation is exactly 0, or ``n - ddof <= 0``.

    A nonzero sum of squares proves a nonzero deviation; a zero one does not
    (deviations below ~1e-162 square to 0 in float64), so only the channels
    whose sum is 0 have their deviations looked at.
    """
    xp = namespace(d)
    zero_sum = sum_sq[..., 0, :] == 0
    constant = sum_sq[..., 0, :] == 0  # a second array: torch refuses a mask that aliases its target
    if xp.any(zero_sum):
        constant[zero_sum] = xp.sum(d.swapaxes(-2, -1)[zero_sum] != 0, axis=-1) == 0
    if isinstance(n, float):
        return constant if n - ddof > 0 else constant | True  # no within-group contrast anywhere
    return constant | ~(n[..., 0, :] - ddof > 0)


def _apply_moments(moments: _Moments, mask, options: EstimatorOptions, labels):
    """z (or the centred values) from :func:`_group_moments`; updates ``moments.d`` in place."""
    xp = namespace(moments.d)
    with xp.quiet():
        # d is a fresh array of our own: update it in place, saving two allocations.
        d = moments.d
        d -= moments.mean_d
        d *= moments.factor
    out = d if mask is None else xp.where(mask, d, 0.0)
    if not options.scale_by_std and not xp.all_finite(out):
        _refuse_overflow(out, labels, "centred values")
    return out


def _standardize(x, mask, options: EstimatorOptions, labels=_LABELS, *, unit_exponent=None):
    """:func:`group_standardize` on an array already in the working dtype, unchecked.

    ``unit_exponent`` as in :func:`_group_moments`.
    """
    with namespace(x).quiet():
        moments = _group_moments(x, mask, options, labels, unit_exponent=unit_exponent)
    return _apply_moments(moments, mask, options, labels)


def _standardize_finding_constant(x, options: EstimatorOptions, labels=_LABELS):
    """z of a (B, m, C) array in the working dtype, and the (B, C) bool array of constant channels.

    The z is :func:`_standardize`'s; a channel counts as constant only when
    its values are exactly equal in the group (or the group has
    ``m - ddof <= 0`` values), not when its variance underflowed: at any
    reward scale the count of degenerate groups does not change. For the
    theory harness, which reports those groups.
    """
    with namespace(x).quiet():
        moments = _group_moments(x, None, options, labels, find_constant=True)
    return _apply_moments(moments, None, options, labels), moments.constant


def _refuse_overflow(values, labels, what: str) -> None:
    """ValueError at the first infinite entry of ``values`` (NaN is a propagated missing reward)."""
    xp = namespace(values)
    infinite = xp.isinf(values)
    if xp.any(infinite):
        raise ValueError(
            f"the {what} of {_describe(_first_position(infinite), labels)} are too large for "
            f"{_dtype_name(values)} (they overflow it); rescale the rewards (e.g. divide them by a constant) "
            "or the weights"
        )


def _dtype_name(x) -> str:
    return str(x.dtype).replace("torch.", "")


def _to_work(x):
    """``x`` in the dtype statistics are computed in: float64 for numpy, at least float32 for torch."""
    return namespace(x).to_work(x)


def _to_output(values, dtype, what: str):
    """``values`` cast back to the caller's ``dtype``; ValueError when they do not fit it."""
    xp = namespace(values)
    if values.dtype == dtype:
        return values
    out_max = xp.dtype_max(dtype)
    too_large = xp.abs(values) > out_max  # NaN compares False
    if xp.any(too_large):
        raise ValueError(
            f"{what} reach {float(xp.to_numpy(xp.abs(values)[too_large]).max()):.4g}, beyond the range of "
            f"{str(dtype).replace('torch.', '')} (max {out_max:.4g}); pass the rewards in a wider float dtype "
            "or use smaller weights"
        )
    return xp.to_dtype(values, dtype)


def _check_x(x, mask, options):
    x = as_float_array(x, "x")
    if x.ndim != 3:
        raise ValueError(
            f"x must be (B, m, C): B groups of m rollouts with C values each; got shape {tuple(x.shape)}"
        )
    if options is not None and not isinstance(options, EstimatorOptions):
        raise TypeError(f"options must be an EstimatorOptions (or None for the defaults), got {type(options).__name__}")
    if mask is not None:
        _check_mask(mask, x, "x")
    return x


def _check_mask(mask, like, like_name: str) -> None:
    """``mask`` must be a bool array of the kind (numpy/torch) and shape of ``like``."""
    if is_torch(mask) != is_torch(like):
        kind = "a torch bool tensor" if is_torch(like) else "a numpy bool array"
        raise TypeError(f"mask must be {kind} like {like_name}, got {type(mask).__name__}")
    dtype = getattr(mask, "dtype", None)
    if dtype is None or str(dtype) not in ("bool", "torch.bool"):
        raise TypeError(f"mask must be a boolean array (True where a value is observed), got dtype {dtype}")
    if tuple(mask.shape) != tuple(like.shape):
        raise ValueError(f"mask must have the shape of {like_name} {tuple(like.shape)}, got shape {tuple(mask.shape)}")


def group_standardize(x, *, mask=None, options: EstimatorOptions | None = None):
    """Standardize each channel inside each group.

    Parameters
    ----------
    x : (B, m, C) array (numpy, array-like or torch)
        ``B`` groups of ``m`` rollouts with ``C`` values each. A NaN makes its
        group and channel NaN.
    mask : (B, m, C) bool array, optional
        True where a value is observed; unobserved values are left out of the
        statistics and get 0. Same kind (numpy/torch) and shape as ``x``.
    options : EstimatorOptions, optional
        ``ddof``, ``eps`` and ``scale_by_std``.

    Returns
    -------
    z : (B, m, C) array of the dtype of ``x``
        ``(x - mean) / (std + eps)`` per group and channel; exactly 0 for a
        constant channel and for groups with ``m - ddof <= 0`` observed values.
        Computed in float64 (numpy) or at least float32 (torch) at any scale.
    """
    x = _check_x(x, mask, options)
    z = _standardize(_to_work(x), mask, options or EstimatorOptions())
    return _to_output(z, x.dtype, "standardized values")


# --------------------------------------------------------------------------- registry


class Estimator(Protocol):
    """The one signature every estimator has.

    Parameters
    ----------
    rewards : (B, m, R) float array (numpy or torch), conditioning applied
        In the working dtype: float64 for numpy, at least float32 for torch.
    w : (R,) array of the same kind and dtype, ``w >= 0``
    mask : (B, m, R) bool array or None
        None when every reward is observed (the fast path); otherwise True
        where observed. Unobserved entries hold arbitrary finite values.
    options : EstimatorOptions

    Returns
    -------
    advantages : (B, m) array; rollouts with no observed reward get 0.
    """

    def __call__(self, rewards, w, *, mask, options: EstimatorOptions): ...


@dataclass(frozen=True)
class _Entry:
    fn: Callable
    description: str
    batch_level: bool


_ESTIMATORS: dict[str, _Entry] = {}
_BUILTIN: set[str] = set()


def list_estimators() -> dict[str, str]:
    """Registered estimator names mapped to their one-line descriptions."""
    return {name: _ESTIMATORS[name].description for name in sorted(_ESTIMATORS)}


def _valid_names() -> str:
    return ", ".join(sorted(_ESTIMATORS))


def _mode_key(mode: Any) -> str:
    """``mode`` stripped and lower-cased; TypeError for anything but a string."""
    if not isinstance(mode, str):
        hint = f"; pass mode={mode[0]!r}" if isinstance(mode, (list, tuple)) and len(mode) == 1 else ""
        raise TypeError(
            f"mode must be a string naming an estimator, one of {_valid_names()}; "
            f"got {type(mode).__name__} {mode!r}{hint}"
        )
    return mode.strip().lower()


def register_estimator(
    name: str, fn: Callable | None = None, *, description: str = "", batch_level: bool = False
):
    """Register an advantage estimator under ``name`` (usable as a decorator).

    The function must follow the :class:`Estimator` signature
    ``fn(rewards (B, m, R), w (R,), *, mask, options) -> (B, m)``; conditioning
    and NaN handling are done before it is called, so an estimator only sees
    the math. Set ``batch_level=True`` when a group's advantages depend on the
    other groups of the batch (like ``"gdpo"``'s whitening). Registering a
    name twice raises ``ValueError``.
    """
    if not isinstance(name, str):
        raise TypeError(f"estimator name must be a string, got {type(name).__name__} {name!r}")
    if not name.strip():
        raise ValueError(f"estimator name must be a non-empty string, got {name!r}")
    key = name.strip().lower()
    if not isinstance(description, str):
        raise TypeError(f"description must be a string (one line shown by list_estimators), got {description!r}")
    batch_level = _check_bool("batch_level", batch_level)

    def decorate(func: Callable) -> Callable:
        if key in _ESTIMATORS:
            raise ValueError(
                f"an estimator named {key!r} is already registered; "
                f"registered names: {_valid_names()}. Pick another name, or "
                "unregister_estimator() a custom one first"
            )
        if not callable(func):
            raise TypeError(f"estimator {key!r} must be callable, got {type(func).__name__}")
        doc = (func.__doc__ or "").strip().splitlines()
        _ESTIMATORS[key] = _Entry(func, description or (doc[0] if doc else ""), batch_level)
        return func

    return decorate(fn) if fn is not None else decorate


def unregister_estimator(name: str) -> None:
    """Remove a user-registered estimator (built-ins cannot be removed)."""
    if not isinstance(name, str):
        raise TypeError(f"estimator name must be a string, got {type(name).__name__} {name!r}")
    key = name.strip().lower()
    if key in _BUILTIN:
        raise ValueError(f"{key!r} is a built-in estimator and cannot be unregistered")
    if key not in _ESTIMATORS:
        raise ValueError(f"no estimator named {key!r}{did_you_mean(key, _ESTIMATORS)}; registered names: {_valid_names()}")
    del _ESTIMATORS[key]


def get_estimator(name: str) -> Callable:
    """The estimator registered under ``name``; unknown names list the valid ones."""
    key = _mode_key(name)
    if key not in _ESTIMATORS:
        raise ValueError(f"unknown mode {name!r}{did_you_mean(key, _ESTIMATORS)}; valid modes: {_valid_names()}")
    return _ESTIMATORS[key].fn


def is_batch_level(name: str) -> bool:
    """True when estimator ``name`` couples the groups of a batch (e.g. ``"gdpo"``)."""
    get_estimator(name)
    return _ESTIMATORS[name.strip().lower()].batch_level


def _builtin(name: str, description: str, batch_level: bool = False):
    def decorate(func):
        register_estimator(name, func, description=description, batch_level=batch_level)
        _BUILTIN.add(name)
        return func

    return decorate


@_builtin("an", "aggregate then normalize (classic GRPO): z-score of w.r inside the group")
def _an(rewards, w, *, mask, options):
    xp = namespace(rewards)
    rollout_ok = None
    if mask is not None:
        # A channel with zero weight does not enter w.r, so its gaps do not matter.
        needed = mask | (w == 0)
        rollout_ok = xp.sum(~needed, axis=-1, keepdims=True) == 0  # (B, m, 1)
        rewards = xp.where(mask, rewards, 0.0)
    with xp.quiet():
        scalar = xp.einsum("bmr,r->bm", rewards, w)[..., None]  # (B, m, 1)
    if xp.all_finite(scalar) or not _sum_overflowed(scalar, rewards):
        return _standardize(scalar, rollout_ok, options)[..., 0]
    scalar, unit = _weighted_sum_in_units(rewards, w)
    out = _standardize(scalar, rollout_ok, options, unit_exponent=unit)
    if not options.scale_by_std:
        with xp.quiet():
            out = xp.ldexp(out, unit)  # the centred values back in reward units
        _refuse_overflow(out, _LABELS, "centred values")
    return out[..., 0]


def _sum_overflowed(scalar, rewards) -> bool:
    """True when ``w . r`` is not finite for a rollout whose rewards are (NaN is a missing reward)."""
    xp = namespace(scalar)
    missing = xp.sum(xp.isnan(rewards), axis=-1, keepdims=True) > 0  # (B, m, 1)
    return xp.any(~xp.isfinite(scalar) & ~missing)


def _weighted_sum_in_units(rewards, w):
    """``w . r`` per rollout in units of ``2**unit`` per group, for sums beyond the dtype's range.

    Returns ``(scalar, unit)``: ``scalar`` (B, m, 1) with ``|scalar| < 4 R``,
    ``unit`` (B, 1, 1) int. Each group's rewards are divided by the power of
    two that brings their largest ``|value|`` on a weighted channel into
    [1, 2), the weights by the one that brings the largest into [1, 2): both
    exact (up to rewards below 2**-1022 of that largest one).
    """
    xp = namespace(rewards)
    limits = xp.limits(rewards)
    weighted = xp.where(w > 0, xp.abs(rewards), 0.0)  # a zero-weight channel does not set the scale
    peak = xp.max_abs(xp.max_abs(weighted, axis=-2), axis=-1)  # (B, 1, 1)
    reward_exponent = xp.binary_exponent(peak, limits.minexp, limits.maxexp - 1)
    weight_exponent = xp.binary_exponent(xp.max_abs(w[None], axis=-1)[0], limits.minexp, limits.maxexp - 1)  # (1,)
    with xp.quiet():
        scaled = xp.ldexp(rewards, -reward_exponent)
        scalar = xp.einsum("bmr,r->bm", scaled, xp.ldexp(w, -weight_exponent))[..., None]
    return scalar, reward_exponent + weight_exponent


@_builtin("na", "normalize each channel, then aggregate (decoupled, MO-GRPO/GDPO without whitening)")
def _na(rewards, w, *, mask, options):
    xp = namespace(rewards)
    if mask is not None:
        return xp.einsum("bmr,r->bm", _standardize(rewards, mask, options), w)
    # sum_l w_l f_l (d_l - mean_l) without materializing z: one pass fewer.
    with xp.quiet():
        d, mean_d, factor, _ = _group_moments(rewards, None, options)
        wf = factor[..., 0, :] * w  # (B, R)
        advantages = xp.einsum("bmr,br->bm", d, wf) - xp.einsum("br,br->b", mean_d[..., 0, :], wf)[:, None]
    if options.scale_by_std or xp.all_finite(advantages):
        return advantages
    # Centred values near the dtype's maximum: d * f can overflow where d - mean does not.
    return xp.einsum("bmr,r->bm", _standardize(rewards, None, options), w)


@_builtin("single", "the gate channel (channel 0) alone, z-scored inside the group")
def _single(rewards, w, *, mask, options):
    gate_mask = None if mask is None else mask[..., :1]
    return _standardize(rewards[..., :1], gate_mask, options)[..., 0]


@_builtin("gdpo", "na, then the advantages of the whole batch whitened once more (GDPO)", batch_level=True)
def _gdpo(rewards, w, *, mask, options):
    xp = namespace(rewards)
    advantages = _na(rewards, w, mask=mask, options=options)
    batch = advantages.reshape(1, -1, 1)
    if mask is None and xp.all_finite(advantages):
        return _standardize(batch, None, options).reshape(advantages.shape)
    # A NaN group (nan_policy="propagate") stays NaN and out of the whitening,
    # so it does not turn the whole batch NaN; padded rollouts stay out too.
    finite = xp.isfinite(advantages)
    members = finite if mask is None else finite & (xp.sum(mask, axis=-1) > 0)
    whitened = _standardize(batch, members.reshape(1, -1, 1), options).reshape(advantages.shape)
    return xp.where(finite, whitened, xp.nan)


# --------------------------------------------------------------------------- conditioning

ConditioningMethod = Literal["zero_fill", "subgroup"]


@dataclass(frozen=True)
class Conditioning:
    """Gate reward channel ``target`` by channel ``gate``.

    The gate *passes* for a rollout when ``rewards[gate] >= threshold``
    (default 0.5, the midpoint of a 0/1 gate; a NaN gate passes nowhere and
    makes the gated value NaN, which ``nan_policy`` then handles).

    ``method="zero_fill"``: ``r_target <- r_target * (c + gamma * (1 - c))``
    with ``c`` the pass indicator; ``gamma = 0`` zeroes the target where the
    gate fails, ``gamma = 1`` leaves it untouched (the contamination knob of
    Prop 4).

    ``method="subgroup"``: the target is centred over the passing rollouts
    only, ``r_target <- r_target - mean_{passing}(r_target)`` there, and 0
    elsewhere; with fewer than 2 passing rollouts the group has no passing
    contrast and the target is 0 for every rollout.

    ``gate`` and ``target`` are channel indices >= 0: a negative index is
    refused rather than wrapped, since ``Conditioning(-2, 1)`` on three
    channels would gate channel 1 by itself. ``gamma`` and ``threshold``
    accept numbers or numeric strings (``"0.5"``, as PyYAML may read them)
    and are stored as floats.
    """

    gate: int
    """Index of the gate channel (channel 0 by the seed's convention)."""
    target: int
    """Index of the channel that counts only where the gate passes."""
    method: ConditioningMethod = "zero_fill"
    """``"zero_fill"`` or ``"subgroup"``."""
    gamma: float = 0.0
    """Contamination in [0, 1] for ``zero_fill``: the weight a failing
    rollout's target keeps."""
    threshold: float = 0.5
    """The gate passes where ``rewards[..., gate] >= threshold``."""

    def __post_init__(self):
        # Stored normalized (numpy ints, YAML strings such as "0.5"), so fields are plain Python values.
        for field in ("gate", "target"):
            object.__setattr__(self, field, _channel_index(f"Conditioning.{field}", getattr(self, field)))
        if self.gate == self.target:
            raise ValueError(f"the gate and the target must be different channels, both are {self.gate} "
                             "(a rule counts channel TARGET only where channel GATE passes)")
        check_choice("conditioning method", self.method, ("zero_fill", "subgroup"))
        gamma = check_float("Conditioning.gamma", self.gamma)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"Conditioning.gamma must be in [0, 1], got {gamma!r}")
        if self.method == "subgroup" and gamma != 0.0:
            raise ValueError("Conditioning.gamma applies to method='zero_fill' only; set gamma=0")
        object.__setattr__(self, "gamma", gamma)
        object.__setattr__(self, "threshold", check_float("Conditioning.threshold", self.threshold))

    def check_channels(self, n_channels: int) -> None:
        """Raise ValueError when gate or target is not a channel of ``n_channels``."""
        for field in ("gate", "target"):
            value = _channel_index(f"Conditioning.{field}", getattr(self, field))
            if value >= n_channels:
                raise ValueError(
                    f"Conditioning.{field}={value} but rewards have {n_channels} channels "
                    f"(valid indices 0..{n_channels - 1})"
                )


def _channel_index(name: str, value: Any) -> int:
    """A channel index as an int >= 0: negative indices would wrap, letting a rule gate a channel by itself."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a channel index (an int >= 0), got {type(value).__name__} {value!r}")
    return check_channel_index(name, value)


_CONDITIONING_FIELDS = tuple(f.name for f in fields(Conditioning))
ConditioningSpec = Any  # Conditioning | "GATE:TARGET[:METHOD[:GAMMA]]" | tuple | dict | a sequence of those
_SPEC_FORMS = ("a Conditioning, a 'GATE:TARGET[:METHOD[:GAMMA]]' string, a (gate, target[, method]) tuple, "
               "a dict of Conditioning fields, or a list of those")
_RULE_FORMAT = "use GATE:TARGET[:METHOD[:GAMMA]] with channel indices, e.g. 0:1, 0:2:subgroup or 0:1:zero_fill:0.3"


def parse_conditioning(spec: ConditioningSpec, *, n_channels: int | None = None) -> tuple[Conditioning, ...]:
    """Normalize a ``conditioning=`` argument to a tuple of :class:`Conditioning`.

    The one parser of conditioning rules: the trainer's config, the CLI's
    ``--condition`` and the integrations all go through it.

    Parameters
    ----------
    spec : None, Conditioning, str, tuple, dict, or a list/tuple of those
        A ``"GATE:TARGET[:METHOD[:GAMMA]]"`` string (``"0:1"``,
        ``"0:2:subgroup"``, ``"0:1:zero_fill:0.3"``), a ``(gate, target[,
        method])`` tuple or a dict of Conditioning fields (``gate``,
        ``target``, ``method``, ``gamma``, ``threshold``). Rules apply in the
        order given.
    n_channels : int, optional
        The number of reward channels; when given, every gate and target must
        be below it.

    Returns
    -------
    rules : tuple of Conditioning

    Raises
    ------
    TypeError, ValueError
        A malformed rule, quoted in the message.
    """
    if spec is None:
        return ()
    if isinstance(spec, (Conditioning, Mapping, str)) or (
        isinstance(spec, tuple) and spec and isinstance(spec[0], (int, float, np.number))
    ):
        spec = [spec]
    if isinstance(spec, AbstractSet):
        raise TypeError(f"conditioning must be {_SPEC_FORMS}; got a {type(spec).__name__}, which has no order (rules apply in order)")
    if not isinstance(spec, Iterable) or isinstance(spec, bytes):
        raise TypeError(f"conditioning must be {_SPEC_FORMS}; got {spec!r}")
    return tuple(_parse_rule(item, n_channels) for item in spec)


def _parse_rule(item, n_channels: int | None = None) -> Conditioning:
    rule = item if isinstance(item, Conditioning) else _build_rule(item)
    if n_channels is not None:
        try:
            rule.check_channels(n_channels)
        except ValueError as err:
            raise ValueError(f"conditioning rule {item!r}: {err}") from None
    return rule


def _build_rule(item) -> Conditioning:
    if isinstance(item, str):
        fields_ = _rule_text_fields(item)
    elif isinstance(item, Mapping):
        fields_ = _rule_mapping_fields(item)
    elif isinstance(item, (tuple, list)) and 2 <= len(item) <= 3:
        fields_ = dict(zip(("gate", "target", "method"), item))
    else:
        raise TypeError(f"cannot read conditioning entry {item!r}; {_SPEC_FORMS[:-len(', or a list of those')]}")
    try:
        return Conditioning(**fields_)
    except (TypeError, ValueError) as err:
        raise type(err)(f"conditioning rule {item!r}: {err}") from None


def _rule_mapping_fields(item: Mapping) -> dict:
    unknown = [key for key in item if key not in _CONDITIONING_FIELDS]
    if unknown:
        raise TypeError(
            f"unknown conditioning field {unknown[0]!r}{did_you_mean(unknown[0], _CONDITIONING_FIELDS)}; "
            f"the fields are {', '.join(_CONDITIONING_FIELDS)}"
        )
    missing = [key for key in ("gate", "target") if key not in item]
    if missing:
        raise TypeError(f"conditioning entry {dict(item)!r} is missing {' and '.join(map(repr, missing))}; give at least gate and target")
    return dict(item)


def _rule_text_fields(text: str) -> dict:
    """``"GATE:TARGET[:METHOD[:GAMMA]]"`` as Conditioning fields."""
    label = f"conditioning rule {text!r}"
    parts = [part.strip() for part in text.split(":")]
    if not 2 <= len(parts) <= 4:
        raise ValueError(f"{label}: {_RULE_FORMAT}")
    try:
        fields_ = {"gate": int(parts[0]), "target": int(parts[1])}
    except ValueError:
        raise ValueError(f"{label}: GATE and TARGET must be integers; {_RULE_FORMAT}") from None
    if len(parts) > 2:
        fields_["method"] = parts[2]
    if len(parts) > 3:
        try:
            fields_["gamma"] = float(parts[3])
        except ValueError:
            raise ValueError(f"{label}: GAMMA must be a number in [0, 1], got {parts[3]!r}; {_RULE_FORMAT}") from None
    return fields_


def _apply_one(rewards, rule: Conditioning, mask):
    xp = namespace(rewards)
    gate = rewards[..., rule.gate]
    target = rewards[..., rule.target]
    passes = gate >= rule.threshold  # NaN compares False
    gate_nan = xp.isnan(gate)
    if rule.method == "zero_fill":
        c = xp.cast(passes, rewards)
        gated = xp.where(gate_nan, xp.nan, target * (c + rule.gamma * (1.0 - c)))
    else:
        members = passes if mask is None else passes & mask[..., rule.gate] & mask[..., rule.target]
        members = members[..., None]  # (..., m, 1)
        centred = _standardize(
            target[..., None], members, EstimatorOptions(scale_by_std=False), ("group",) * (target.ndim - 1) + ("", "")
        )[..., 0]
        n_pass = xp.sum(members, axis=-2)  # (..., 1)
        gated = xp.where(n_pass >= 2, centred, 0.0)
        gated = xp.where(gate_nan | (passes & xp.isnan(target)), xp.nan, gated)
    out = rewards * 1.0  # a copy: inputs are never modified
    out[..., rule.target] = gated
    return out


def _rules_from_call(conditioning, cond_idx, impl) -> ConditioningSpec:
    """The rules of either call form of :func:`apply_conditioning`."""
    if isinstance(conditioning, (int, np.integer)) and not isinstance(conditioning, (bool, np.bool_)):
        if cond_idx is None:
            raise TypeError("apply_conditioning(rewards, gate_idx, cond_idx, impl) needs cond_idx")
        impl = check_choice("impl", impl, ("zero_fill", "subgroup", "none"))
        # Built even for impl="none", so bad indices are refused (not truncated by int()) in every form.
        rule = Conditioning(conditioning, cond_idx, "zero_fill" if impl == "none" else impl)
        return None if impl == "none" else rule
    if cond_idx is not None:
        raise TypeError("cond_idx is only used with an int gate index as the second argument")
    return conditioning


def apply_conditioning(rewards, conditioning: ConditioningSpec, cond_idx: int | None = None,
                       impl: str = "zero_fill", *, mask=None):
    """Gate reward channels by other channels, inside each group.

    Parameters
    ----------
    rewards : (m, R) or (..., m, R) array (numpy or torch)
        One group, or a batch of groups along the leading axes.
    conditioning : Conditioning, tuple, dict, a sequence of those, or int
        Rules applied in the order given; a later rule sees the output of the
        earlier ones (so chains like 0 gates 1 gates 2 work). An int is the
        gate index of the 0.1 call form
        ``apply_conditioning(rewards, gate_idx, cond_idx, impl)``, where
        ``impl`` is ``"zero_fill"``, ``"subgroup"`` or ``"none"`` (identity).
        Channel indices are ints >= 0 (negative ones are refused).
    cond_idx : int, optional
        The gated channel, with an int ``conditioning`` only.
    impl : str
        The method, with an int ``conditioning`` only.
    mask : (..., m, R) bool array, optional
        True where a reward is observed; ``subgroup`` centring uses observed
        values only.

    Returns
    -------
    conditioned : array of the same shape, kind and dtype (a new array).
    """
    rules = parse_conditioning(_rules_from_call(conditioning, cond_idx, impl))
    rewards = as_float_array(rewards, "rewards")
    if rewards.ndim < 2:
        raise ValueError(f"rewards must be (m, R) or (..., m, R); got shape {tuple(rewards.shape)}")
    if mask is not None:
        _check_mask(mask, rewards, "rewards")
    for rule in rules:
        rule.check_channels(rewards.shape[-1])
    squeeze = rewards.ndim == 2
    out = _to_work(rewards[None] if squeeze else rewards)
    mask = None if mask is None else (mask[None] if squeeze else mask)
    for rule in rules:
        out = _apply_one(out, rule, mask)
    if not rules:
        out = out * 1.0
    return _to_output(out[0] if squeeze else out, rewards.dtype, "conditioned rewards")


# --------------------------------------------------------------------------- validation


def _weights_as_numpy(w) -> np.ndarray:
    """``w`` as a float64 numpy array; TypeError for anything but numbers in order."""
    if is_torch(w):
        if w.is_complex():
            raise TypeError("w (the channel weights) must hold real numbers, got a complex tensor")
        return np.asarray(namespace(w).to_numpy(w), dtype=np.float64)
    if not isinstance(w, (list, tuple, np.ndarray)):
        _refuse_unordered_weights(w)
    try:
        arr = np.asarray(w)
    except (ValueError, TypeError):
        raise ValueError("w (the channel weights) must be a 1-D sequence of numbers; its entries are ragged nested lists") from None
    return arr.astype(np.float64, copy=False) if arr.dtype.kind in "biuf" else _non_numeric_weights(arr)


def _refuse_unordered_weights(w) -> None:
    if isinstance(w, (str, bytes)):
        raise TypeError(
            f"w (the channel weights) must be a sequence of numbers, one per reward channel, "
            f"got the string {w!r}{_list_hint(w)}"
        )
    if isinstance(w, (Mapping, AbstractSet)):
        raise TypeError(
            f"w (the channel weights) must be a list, tuple or array of numbers in channel order; "
            f"got a {type(w).__name__}, which has no channel order"
        )


def _non_numeric_weights(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind == "c":
        raise TypeError(f"w (the channel weights) must hold real numbers, got complex values {arr.tolist()}")
    if arr.dtype.kind not in "OUS" or arr.ndim != 1:
        raise TypeError(f"w (the channel weights) must be a 1-D sequence of numbers, got dtype {arr.dtype} with shape {arr.shape}")
    # Numbers as strings ("1e-3", as PyYAML reads it) are read like check_float reads them.
    return np.array([check_float(f"w[{i}]", value) for i, value in enumerate(arr.tolist())], dtype=np.float64)


def _list_hint(text) -> str:
    """``"; did you mean [1.0, 1.0]?"`` when ``text`` is comma-separated numbers."""
    try:
        values = [float(part) for part in str(text).replace(";", ",").split(",")]
    except ValueError:
        return ""
    return f"; did you mean {values}?"


def _validate_weights(w, n_channels: int, like):
    """``w`` as a (R,) array of the kind and dtype of ``like``."""
    xp = namespace(like)
    if w is None:
        return xp.full((n_channels,), 1.0, like)
    w_np = _weights_as_numpy(w)
    if w_np.ndim != 1:
        raise ValueError(f"weights must be a 1-D sequence of length R; got shape {w_np.shape}")
    if w_np.shape[0] != n_channels:
        raise ValueError(
            f"rewards has {n_channels} channels but weights has {w_np.shape[0]}; "
            "pass one weight per reward channel"
        )
    if not np.all(np.isfinite(w_np)):
        raise ValueError(f"weights must be finite, got {w_np.tolist()}")
    if np.any(w_np < 0):
        raise ValueError(f"weights must be >= 0, got {w_np.tolist()}")
    if not np.any(w_np > 0):
        raise ValueError("weights are all zero: at least one channel needs a positive weight")
    return xp.like(like, w_np)


def _check_nan_policy(nan_policy: str) -> None:
    if not isinstance(nan_policy, str):
        raise TypeError(f"nan_policy must be a string, one of {NAN_POLICIES}; got {type(nan_policy).__name__} {nan_policy!r}")
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}{did_you_mean(nan_policy, NAN_POLICIES)}")


def _first_position(bad) -> tuple[int, ...]:
    xp = namespace(bad)
    flat = np.flatnonzero(xp.to_numpy(bad.reshape(-1)))
    return tuple(int(i) for i in np.unravel_index(int(flat[0]), tuple(bad.shape)))


def _describe(position: tuple[int, ...], labels: tuple[str, ...]) -> str:
    return ", ".join(f"{label} {idx}" for label, idx in zip(labels, position) if label)


def _check_values(rewards, nan_policy: str, labels: tuple[str, ...]):
    """Reject infinities always and NaN under 'raise'; one cheap pass when clean."""
    xp = namespace(rewards)
    if xp.all_finite(rewards):
        return
    infinite = ~xp.isfinite(rewards) & ~xp.isnan(rewards)
    if bool(xp.sum(infinite) > 0):
        where = _describe(_first_position(infinite), labels)
        raise ValueError(f"rewards must be finite; found an infinite value at {where} (use NaN for a missing reward)")
    nans = xp.isnan(rewards)
    n_nan = int(xp.sum(nans))
    if n_nan and nan_policy == "raise":
        where = _describe(_first_position(nans), labels)
        raise ValueError(
            f"rewards contain {n_nan} NaN value(s), the first at {where}; pass "
            "nan_policy='omit' to leave missing rewards out of the group statistics "
            "or nan_policy='propagate' to get NaN advantages for those groups"
        )


def _check_shape(rewards, ndim: int, expected: str) -> None:
    if rewards.ndim != ndim:
        hint = " For a single reward channel add a trailing axis: rewards[..., None]." if rewards.ndim == ndim - 1 else ""
        raise ValueError(f"rewards must be {expected}; got shape {tuple(rewards.shape)}.{hint}")
    if any(size == 0 for size in rewards.shape):
        names = expected.strip("()").split(", ")
        empty = [n for n, s in zip(names, rewards.shape) if s == 0]
        raise ValueError(f"rewards is empty along {', '.join(empty)} (shape {tuple(rewards.shape)}); groups need at least one rollout and one channel")


# --------------------------------------------------------------------------- public entry points


def _advantages(rewards, w, mode, conditioning, options, nan_policy, labels, pad_mask=None):
    """The shared core: rewards (B, m, R) in the working dtype -> advantages (B, m).

    ``labels`` names the axes for error messages; None means the values were
    already checked by the caller.
    """
    _check_nan_policy(nan_policy)
    estimator = get_estimator(mode)
    xp = namespace(rewards)
    weights = _validate_weights(w, rewards.shape[-1], rewards)
    rules = parse_conditioning(conditioning)
    for rule in rules:
        rule.check_channels(rewards.shape[-1])
    if labels is not None:
        _check_values(rewards, nan_policy, labels)
    mask = pad_mask
    omit = nan_policy == "omit" and not xp.all_finite(rewards)
    if omit:
        mask = _and(mask, ~xp.isnan(rewards))
    for rule in rules:
        rewards = _apply_one(rewards, rule, mask)
    if omit:
        mask = _and(mask, ~xp.isnan(rewards))  # a NaN gate leaves its target NaN
        rewards = xp.where(mask, rewards, 0.0)
    advantages = estimator(rewards, weights, mask=mask, options=options)
    if tuple(advantages.shape) != tuple(rewards.shape[:2]):
        raise ValueError(
            f"estimator {mode!r} returned shape {tuple(advantages.shape)}, "
            f"expected {tuple(rewards.shape[:2])} (one advantage per rollout)"
        )
    _check_finite_advantages(advantages, rewards, mode)
    return advantages


def _check_finite_advantages(advantages, rewards, mode) -> None:
    """ValueError for a non-finite advantage in a group whose rewards are all finite."""
    xp = namespace(advantages)
    if xp.all_finite(advantages):
        return
    nan_groups = xp.sum(xp.sum(xp.isnan(rewards), axis=-1), axis=-1) > 0  # (B,): NaN under "propagate"
    bad = ~xp.isfinite(advantages) & ~nan_groups[:, None]
    if xp.any(bad):
        group = _first_position(bad)[0]
        raise ValueError(
            f"mode {mode!r} gave non-finite advantages for group {group}, whose rewards are finite: "
            f"the rewards or weights are too large for {_dtype_name(rewards)}; rescale them "
            "(e.g. divide the rewards by a constant)"
        )


def _and(mask, other):
    return other if mask is None else mask & other


def compute_advantage(
    rewards,
    w=None,
    mode: str = "na",
    *,
    conditioning: ConditioningSpec = None,
    scale_by_std: bool = True,
    ddof: int = 0,
    eps: float = 1e-8,
    nan_policy: NanPolicy = "raise",
):
    """Advantages of one group of rollouts.

    Parameters
    ----------
    rewards : (m, R) array (numpy, array-like or torch)
        ``m`` rollouts scored on ``R`` reward channels.
    w : (R,) array, optional
        Objective weights, ``w >= 0``; default all ones. A list, tuple, numpy
        array or torch tensor of numbers in channel order.
    mode : str
        A registered estimator: ``"na"`` (default), ``"an"``, ``"single"``,
        ``"gdpo"`` or one added with :func:`register_estimator`.
    conditioning : Conditioning, tuple, dict or a sequence of those, optional
        Gates applied to the rewards before the estimator.
    scale_by_std, ddof, eps : see :class:`EstimatorOptions`.
    nan_policy : {"raise", "omit", "propagate"}
        What a NaN reward does (see the module docstring).

    Returns
    -------
    advantages : (m,) array of the input's kind and float dtype.
    """
    rewards = as_float_array(rewards, "rewards")
    _check_shape(rewards, 2, "(m, R)")
    options = EstimatorOptions(ddof=ddof, eps=eps, scale_by_std=scale_by_std)
    work = _to_work(rewards)
    advantages = _advantages(work[None], w, mode, conditioning, options, nan_policy, ("", "rollout", "channel"))
    return _to_output(advantages[0], rewards.dtype, "advantages")


def compute_advantage_batch(
    rewards,
    w=None,
    mode: str = "na",
    *,
    conditioning: ConditioningSpec = None,
    scale_by_std: bool = True,
    ddof: int = 0,
    eps: float = 1e-8,
    nan_policy: NanPolicy = "raise",
):
    """Advantages of a batch of equal-size groups.

    Parameters
    ----------
    rewards : (P, m, R) array (numpy, array-like or torch)
        ``P`` groups (prompts) of ``m`` rollouts scored on ``R`` channels.
    w, mode, conditioning, scale_by_std, ddof, eps, nan_policy
        As in :func:`compute_advantage`. For ``mode="gdpo"`` the batch is the
        whole ``(P, m)`` array (less the NaN groups under ``"propagate"``).

    Returns
    -------
    advantages : (P, m) array of the input's kind and float dtype.
    """
    rewards = as_float_array(rewards, "rewards")
    _check_shape(rewards, 3, "(P, m, R)")
    options = EstimatorOptions(ddof=ddof, eps=eps, scale_by_std=scale_by_std)
    advantages = _advantages(_to_work(rewards), w, mode, conditioning, options, nan_policy, ("group", "rollout", "channel"))
    return _to_output(advantages, rewards.dtype, "advantages")


def compute_advantage_flat(
    rewards,
    group_ids,
    w=None,
    mode: str = "na",
    *,
    conditioning: ConditioningSpec = None,
    scale_by_std: bool = True,
    ddof: int = 0,
    eps: float = 1e-8,
    nan_policy: NanPolicy = "raise",
):
    """Advantages of rollouts in ragged groups, as TRL and verl hand them over.

    Parameters
    ----------
    rewards : (N, R) array (numpy, array-like or torch)
        One row per rollout, in any order.
    group_ids : (N,) array, tensor or sequence
        The group (prompt) of each rollout: all integers or all strings
        (mixing them is refused, since ``1`` and ``"1"`` would read as one
        group). Float ids are refused for numpy and torch alike rather than
        grouped by value: convert integer-valued ones with ``ids.astype(int)``
        / ``ids.long()``. Groups may have different sizes and need not be
        contiguous.
    w, mode, conditioning, scale_by_std, ddof, eps, nan_policy
        As in :func:`compute_advantage`. For ``mode="gdpo"`` the batch is all
        ``N`` rollouts (less the NaN groups under ``"propagate"``).

    Returns
    -------
    advantages : (N,) array of the input's kind and float dtype, in input order.
    """
    rewards = as_float_array(rewards, "rewards")
    _check_shape(rewards, 2, "(N, R)")
    options = EstimatorOptions(ddof=ddof, eps=eps, scale_by_std=scale_by_std)
    inverse, counts = _group_index(group_ids, rewards)
    work = _to_work(rewards)
    _check_values(work, nan_policy, ("rollout", "channel"))
    return _to_output(_flat_advantages(work, inverse, counts, w, mode, conditioning, options, nan_policy), rewards.dtype, "advantages")


def _flat_advantages(rewards, inverse, counts, w, mode, conditioning, options, nan_policy):
    """(N,) advantages of checked (N, R) rewards in the working dtype, grouped by ``inverse``."""
    xp = namespace(rewards)
    n_groups, size, n_channels = int(counts.shape[0]), int(counts.max()), rewards.shape[-1]
    if int(counts.min()) == size and xp.is_nondecreasing(inverse):
        # Contiguous equal-size groups (the usual TRL/verl layout): a free reshape.
        dense = rewards.reshape(n_groups, size, n_channels)
        return _advantages(dense, w, mode, conditioning, options, nan_policy, None).reshape(-1)
    pos = xp.positions_in_group(inverse, counts)
    dense = xp.zeros((n_groups, size, n_channels), like=rewards)
    dense[inverse, pos] = rewards
    pad_mask = xp.zeros((n_groups, size, n_channels), like=rewards) != 0
    pad_mask[inverse, pos] = True
    advantages = _advantages(dense, w, mode, conditioning, options, nan_policy, None, pad_mask)
    return advantages[inverse, pos]


# --------------------------------------------------------------------------- group ids

_IDS_FORM = "group_ids must be a 1-D sequence or array with one id per rollout (all ints or all strings)"


def _group_index(group_ids, rewards):
    """(inverse (N,), counts (G,)) of the group ids, as indices for ``rewards``."""
    n = rewards.shape[0]
    ids = _read_group_ids(group_ids)
    if ids.shape[0] != n:
        raise ValueError(f"rewards has {n} rows but group_ids has {ids.shape[0]}; pass one group id per rollout")
    inverse, counts = namespace(ids).group_index(ids)
    xp = namespace(rewards)
    if is_torch(inverse) != is_torch(rewards) or (is_torch(inverse) and inverse.device != rewards.device):
        to_np = namespace(inverse).to_numpy
        inverse = xp.index(to_np(inverse) if is_torch(inverse) else inverse, rewards)
        counts = xp.index(to_np(counts) if is_torch(counts) else counts, rewards)
    return inverse, counts


def _read_group_ids(group_ids):
    """``group_ids`` as a 1-D integer or string array (or integer tensor); TypeError otherwise."""
    if is_torch(group_ids):
        return _torch_group_ids(group_ids)
    if group_ids is None or isinstance(group_ids, (str, bytes, Mapping, AbstractSet)) or not isinstance(group_ids, Iterable):
        unordered = " (a set has no order)" if isinstance(group_ids, AbstractSet) else ""
        raise TypeError(f"{_IDS_FORM}; got {type(group_ids).__name__} {group_ids!r}{unordered}")
    if isinstance(group_ids, np.ndarray) and group_ids.dtype.kind != "O":
        ids = group_ids
    else:
        try:
            ids = np.asarray(group_ids, dtype=object)
        except (ValueError, TypeError):
            raise ValueError("group_ids must be 1-D with one id per rollout; got ragged nested sequences") from None
    if ids.ndim != 1:
        raise ValueError(f"group_ids must be 1-D with one id per rollout; got shape {tuple(ids.shape)}")
    if ids.dtype.kind == "O":
        return _object_group_ids(ids)
    if ids.dtype.kind in "iuUS":
        return ids
    raise TypeError(f"group_ids must be integers or strings, got dtype {ids.dtype}; {_ID_HINTS.get(ids.dtype.kind, '')}")


_ID_HINTS = {
    "f": "float ids are not grouped by value: convert integer-valued ones with ids.astype(int)",
    "b": "booleans look like a mask: pass the group (prompt) id of each rollout",
}


def _object_group_ids(ids: np.ndarray) -> np.ndarray:
    values = ids.tolist()
    types = set(map(type, values))
    if all(issubclass(t, (int, np.integer)) and not issubclass(t, (bool, np.bool_)) for t in types):
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            return np.array([str(v) for v in values])  # ids beyond int64 still group by value
    if all(issubclass(t, str) for t in types):
        return np.array(values, dtype=str)
    for i, value in enumerate(values):
        _check_one_id(i, value)
    example_int = next(v for v in values if isinstance(v, (int, np.integer)))
    example_str = next(v for v in values if isinstance(v, str))
    raise TypeError(
        f"group_ids mixes integers and strings (e.g. {example_int!r} and {example_str!r}); use one type for "
        "every id, since 1 and '1' would otherwise read as one group"
    )


def _check_one_id(index: int, value) -> None:
    if value is None:
        raise TypeError(f"group_ids[{index}] is None; every rollout needs a group id (an int or a string)")
    if isinstance(value, (list, tuple, np.ndarray)):
        raise ValueError(f"group_ids must be 1-D with one id per rollout; group_ids[{index}] is a {type(value).__name__}")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, str)):
        kind = f"the float {value!r}" if isinstance(value, (float, np.floating)) else f"a {type(value).__name__}"
        raise TypeError(f"group_ids[{index}] is {kind}; group ids must be integers or strings")


def _torch_group_ids(ids):
    import torch

    if ids.ndim != 1:
        raise ValueError(f"group_ids must be 1-D with one id per rollout; got shape {tuple(ids.shape)}")
    if ids.dtype == torch.bool:
        raise TypeError(f"group_ids must hold integers (or strings), got a bool tensor; {_ID_HINTS['b']}")
    if ids.is_floating_point() or ids.is_complex():
        raise TypeError(
            f"group_ids must hold integers (or strings), got a {ids.dtype} tensor; float ids are not grouped "
            "by value (numpy refuses them too): convert integer-valued ones with ids.long()"
        )
    return ids
