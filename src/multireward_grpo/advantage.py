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

Conditioning (:class:`Conditioning`, :func:`apply_conditioning`) gates one
channel by another before the estimator runs.

Every function accepts numpy arrays (or array-likes) and returns numpy, or
accepts torch tensors and returns torch tensors on the same device and dtype.
Inputs are never modified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Protocol

import numpy as np

from multireward_grpo._array import as_float_array, is_torch, namespace

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
        if isinstance(self.ddof, bool) or not isinstance(self.ddof, (int, np.integer)):
            raise TypeError(f"ddof must be an int, got {type(self.ddof).__name__}")
        if self.ddof < 0:
            raise ValueError(f"ddof must be >= 0, got {self.ddof}")
        if not (isinstance(self.eps, (int, float, np.floating)) and np.isfinite(self.eps)):
            raise ValueError(f"eps must be a finite number, got {self.eps!r}")
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if not isinstance(self.scale_by_std, (bool, np.bool_)):
            raise TypeError(f"scale_by_std must be True or False, got {self.scale_by_std!r}")


# --------------------------------------------------------------------------- group statistics


def _group_moments(x, mask, options: EstimatorOptions):
    """Shifted values, their group mean and the per-group scale factor.

    Parameters
    ----------
    x : (B, m, C) array
    mask : (B, m, C) bool array or None
        True where a value is observed.

    Returns
    -------
    d : (B, m, C) array
        ``x`` minus one observed member of its group (0 where unobserved).
    mean_d : (B, 1, C) array
        Group mean of ``d`` over observed values.
    factor : (B, 1, C) array
        ``1 / (std + eps)``; 0 for zero-variance or degenerate groups; 1 when
        ``options.scale_by_std`` is False.
    """
    xp = namespace(x)
    if mask is None:
        # Shifting by a member makes a constant channel exactly 0 in every
        # later step, and keeps the one-pass variance below free of cancellation
        # (|mean(d)| <= sqrt(m) * std, so the relative error stays ~m ulp).
        d = x - x[..., :1, :]
        n = float(x.shape[-2])
        ok = n - options.ddof > 0
        # einsum reduces over the short m axis ~5x faster than numpy's sum(axis=-2).
        sum_d = xp.einsum("...mc->...c", d)[..., None, :]
        mean_d = sum_d / n
        if not options.scale_by_std:
            return d, mean_d, (sum_d * 0.0 + 1.0) if ok else sum_d * 0.0
        if not ok:
            return d, mean_d, sum_d * 0.0
        sum_sq = xp.einsum("...mc,...mc->...c", d, d)[..., None, :]
        var = (sum_sq - sum_d * mean_d) / (n - options.ddof)
    else:
        first = xp.take_along(x, xp.first_true(mask, axis=-2), axis=-2)
        d = xp.where(mask, x - first, 0.0)
        n = xp.cast(xp.sum(mask, axis=-2, keepdims=True), x)
        dof = n - options.ddof
        ok = dof > 0
        sum_d = xp.einsum("...mc->...c", d)[..., None, :]
        mean_d = sum_d / xp.where(n > 0, n, 1.0)
        if not options.scale_by_std:
            return d, mean_d, xp.cast(ok, x)
        sum_sq = xp.einsum("...mc,...mc->...c", d, d)[..., None, :]
        var = xp.where(ok, (sum_sq - sum_d * mean_d) / xp.where(ok, dof, 1.0), 0.0)
    std = xp.sqrt(xp.where(var > 0, var, 0.0))
    positive = std > 0
    factor = xp.where(positive, 1.0 / xp.where(positive, std + options.eps, 1.0), 0.0)
    return d, mean_d, factor


def group_standardize(x, *, mask=None, options: EstimatorOptions | None = None):
    """Standardize each channel inside each group.

    Parameters
    ----------
    x : (B, m, C) array (numpy or torch)
        ``B`` groups of ``m`` rollouts with ``C`` values each.
    mask : (B, m, C) bool array, optional
        True where a value is observed; unobserved values are left out of the
        statistics and get 0.
    options : EstimatorOptions, optional
        ``ddof``, ``eps`` and ``scale_by_std``.

    Returns
    -------
    z : (B, m, C) array
        ``(x - mean) / (std + eps)`` per group and channel; exactly 0 for a
        constant channel and for groups with ``m - ddof <= 0`` observed values.
    """
    options = options or EstimatorOptions()
    xp = namespace(x)
    d, mean_d, factor = _group_moments(x, mask, options)
    # d is a fresh array of our own: update it in place, saving two allocations.
    d -= mean_d
    d *= factor
    return d if mask is None else xp.where(mask, d, 0.0)


# --------------------------------------------------------------------------- registry


class Estimator(Protocol):
    """The one signature every estimator has.

    Parameters
    ----------
    rewards : (B, m, R) float array (numpy or torch), conditioning applied
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
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"estimator name must be a non-empty string, got {name!r}")
    key = name.strip().lower()

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
        _ESTIMATORS[key] = _Entry(func, description or (doc[0] if doc else ""), bool(batch_level))
        return func

    return decorate(fn) if fn is not None else decorate


def unregister_estimator(name: str) -> None:
    """Remove a user-registered estimator (built-ins cannot be removed)."""
    key = str(name).strip().lower()
    if key in _BUILTIN:
        raise ValueError(f"{key!r} is a built-in estimator and cannot be unregistered")
    if key not in _ESTIMATORS:
        raise ValueError(f"no estimator named {key!r}; registered names: {_valid_names()}")
    del _ESTIMATORS[key]


def get_estimator(name: str) -> Callable:
    """The estimator registered under ``name``; unknown names list the valid ones."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in _ESTIMATORS:
        raise ValueError(f"unknown mode {name!r}; valid modes: {_valid_names()}")
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
    if mask is None:
        scalar = xp.einsum("bmr,r->bm", rewards, w)[..., None]  # (B, m, 1)
        return group_standardize(scalar, options=options)[..., 0]
    # A channel with zero weight does not enter w.r, so its gaps do not matter.
    needed = mask | (w == 0)
    rollout_ok = xp.sum(~needed, axis=-1, keepdims=True) == 0  # (B, m, 1)
    scalar = xp.einsum("bmr,r->bm", xp.where(mask, rewards, 0.0), w)[..., None]
    return group_standardize(scalar, mask=rollout_ok, options=options)[..., 0]


@_builtin("na", "normalize each channel, then aggregate (decoupled, MO-GRPO/GDPO without whitening)")
def _na(rewards, w, *, mask, options):
    xp = namespace(rewards)
    if mask is not None:
        return xp.einsum("bmr,r->bm", group_standardize(rewards, mask=mask, options=options), w)
    # sum_l w_l f_l (d_l - mean_l) without materializing z: one pass fewer.
    d, mean_d, factor = _group_moments(rewards, None, options)
    wf = factor[..., 0, :] * w  # (B, R)
    return xp.einsum("bmr,br->bm", d, wf) - xp.einsum("br,br->b", mean_d[..., 0, :], wf)[:, None]


@_builtin("single", "the gate channel (channel 0) alone, z-scored inside the group")
def _single(rewards, w, *, mask, options):
    gate_mask = None if mask is None else mask[..., :1]
    return group_standardize(rewards[..., :1], mask=gate_mask, options=options)[..., 0]


@_builtin("gdpo", "na, then the advantages of the whole batch whitened once more (GDPO)", batch_level=True)
def _gdpo(rewards, w, *, mask, options):
    xp = namespace(rewards)
    advantages = _na(rewards, w, mask=mask, options=options)
    batch = advantages.reshape(1, -1, 1)
    batch_mask = None if mask is None else (xp.sum(mask, axis=-1) > 0).reshape(1, -1, 1)
    whitened = group_standardize(batch, mask=batch_mask, options=options)
    return whitened.reshape(advantages.shape)


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
        for field in ("gate", "target"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"Conditioning.{field} must be a channel index (int), got {value!r}")
        if self.gate == self.target:
            raise ValueError(f"Conditioning gate and target must differ, both are {self.gate}")
        if self.method not in ("zero_fill", "subgroup"):
            raise ValueError(
                f"unknown conditioning method {self.method!r}; use 'zero_fill' or 'subgroup'"
            )
        if not (np.isfinite(self.gamma) and 0.0 <= self.gamma <= 1.0):
            raise ValueError(f"Conditioning.gamma must be in [0, 1], got {self.gamma!r}")
        if self.method == "subgroup" and self.gamma != 0.0:
            raise ValueError("Conditioning.gamma applies to method='zero_fill' only; set gamma=0")
        if not np.isfinite(self.threshold):
            raise ValueError(f"Conditioning.threshold must be finite, got {self.threshold!r}")

    def check_channels(self, n_channels: int) -> None:
        """Raise ValueError when gate or target is not a channel of ``n_channels``."""
        for field in ("gate", "target"):
            value = getattr(self, field)
            if not -n_channels <= value < n_channels:
                raise ValueError(
                    f"Conditioning.{field}={value} but rewards have {n_channels} channels "
                    f"(valid indices 0..{n_channels - 1})"
                )


ConditioningSpec = Any  # Conditioning | tuple | dict | a sequence of those


def parse_conditioning(spec: ConditioningSpec) -> tuple[Conditioning, ...]:
    """Normalize a ``conditioning=`` argument to a tuple of :class:`Conditioning`.

    Accepts None, a Conditioning, a ``(gate, target[, method])`` tuple, a dict
    of Conditioning fields, or a sequence of those.
    """
    if spec is None:
        return ()
    if isinstance(spec, (Conditioning, dict)) or (
        isinstance(spec, tuple) and spec and isinstance(spec[0], (int, float, np.number))
    ):
        spec = [spec]
    if not isinstance(spec, Iterable) or isinstance(spec, (str, bytes)):
        raise TypeError(
            "conditioning must be a Conditioning, a (gate, target[, method]) tuple, "
            f"a dict of Conditioning fields, or a list of those; got {spec!r}"
        )
    parsed = []
    for item in spec:
        if isinstance(item, Conditioning):
            parsed.append(item)
        elif isinstance(item, dict):
            parsed.append(Conditioning(**item))
        elif isinstance(item, (tuple, list)) and 2 <= len(item) <= 3:
            parsed.append(Conditioning(*item))
        else:
            raise TypeError(
                f"cannot read conditioning entry {item!r}; use Conditioning(gate, target, ...) "
                "or a (gate, target[, method]) tuple"
            )
    return tuple(parsed)


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
        centred = group_standardize(
            target[..., None], mask=members, options=EstimatorOptions(scale_by_std=False)
        )[..., 0]
        n_pass = xp.sum(members, axis=-2)  # (..., 1)
        gated = xp.where(n_pass >= 2, centred, 0.0)
        gated = xp.where(gate_nan | (passes & xp.isnan(target)), xp.nan, gated)
    out = rewards * 1.0  # a copy: inputs are never modified
    out[..., rule.target] = gated
    return out


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
    if isinstance(conditioning, (int, np.integer)) and not isinstance(conditioning, bool):
        if cond_idx is None:
            raise TypeError("apply_conditioning(rewards, gate_idx, cond_idx, impl) needs cond_idx")
        conditioning = None if impl == "none" else Conditioning(int(conditioning), int(cond_idx), impl)
    elif cond_idx is not None:
        raise TypeError("cond_idx is only used with an int gate index as the second argument")
    rewards = as_float_array(rewards, "rewards")
    if rewards.ndim < 2:
        raise ValueError(f"rewards must be (m, R) or (..., m, R); got shape {tuple(rewards.shape)}")
    rules = parse_conditioning(conditioning)
    for rule in rules:
        rule.check_channels(rewards.shape[-1])
    squeeze = rewards.ndim == 2
    out = rewards[None] if squeeze else rewards
    mask = None if mask is None else (mask[None] if squeeze else mask)
    for rule in rules:
        out = _apply_one(out, rule, mask)
    if not rules:
        out = out * 1.0
    return out[0] if squeeze else out


# --------------------------------------------------------------------------- validation


def _validate_weights(w, n_channels: int, like):
    """``w`` as a (R,) array of the kind and dtype of ``like``."""
    xp = namespace(like)
    if w is None:
        return xp.full((n_channels,), 1.0, like)
    w_np = np.asarray(namespace(w).to_numpy(w) if is_torch(w) else w, dtype=np.float64)
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
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")


def _first_position(bad) -> tuple[int, ...]:
    xp = namespace(bad)
    flat = np.flatnonzero(xp.to_numpy(bad.reshape(-1)))
    return tuple(int(i) for i in np.unravel_index(int(flat[0]), tuple(bad.shape)))


def _describe(position: tuple[int, ...], labels: tuple[str, ...]) -> str:
    return ", ".join(f"{label} {idx}" for label, idx in zip(labels, position) if label)


def _check_values(rewards, nan_policy: str, labels: tuple[str, ...]):
    """Reject infinities always and NaN under 'raise'; one cheap pass when clean."""
    xp = namespace(rewards)
    if bool(xp.isfinite(xp.sum(rewards))):
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
    """The shared core: rewards (B, m, R) -> advantages (B, m).

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
    omit = nan_policy == "omit" and not bool(xp.isfinite(xp.sum(rewards)))
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
    return advantages


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
        Objective weights, ``w >= 0``; default all ones.
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
    return _advantages(rewards[None], w, mode, conditioning, options, nan_policy, ("", "rollout", "channel"))[0]


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
        whole ``(P, m)`` array.

    Returns
    -------
    advantages : (P, m) array of the input's kind and float dtype.
    """
    rewards = as_float_array(rewards, "rewards")
    _check_shape(rewards, 3, "(P, m, R)")
    options = EstimatorOptions(ddof=ddof, eps=eps, scale_by_std=scale_by_std)
    return _advantages(rewards, w, mode, conditioning, options, nan_policy, ("group", "rollout", "channel"))


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
    group_ids : (N,) array or sequence
        The group (prompt) of each rollout: integers or strings; groups may
        have different sizes and need not be contiguous.
    w, mode, conditioning, scale_by_std, ddof, eps, nan_policy
        As in :func:`compute_advantage`. For ``mode="gdpo"`` the batch is all
        ``N`` rollouts.

    Returns
    -------
    advantages : (N,) array of the input's kind and float dtype, in input order.
    """
    rewards = as_float_array(rewards, "rewards")
    _check_shape(rewards, 2, "(N, R)")
    options = EstimatorOptions(ddof=ddof, eps=eps, scale_by_std=scale_by_std)
    xp = namespace(rewards)
    inverse, counts = _group_index(group_ids, rewards)
    _check_values(rewards, nan_policy, ("rollout", "channel"))
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


def _group_index(group_ids, rewards):
    """(inverse (N,), counts (G,)) of the group ids, as indices for ``rewards``."""
    n = rewards.shape[0]
    ids = group_ids if is_torch(group_ids) else np.asarray(group_ids)
    if ids.ndim != 1:
        raise ValueError(f"group_ids must be 1-D with one id per rollout; got shape {tuple(ids.shape)}")
    if ids.shape[0] != n:
        raise ValueError(f"rewards has {n} rows but group_ids has {ids.shape[0]}; pass one group id per rollout")
    if not is_torch(ids) and ids.dtype.kind in "fc":
        raise TypeError("group_ids must be integers or strings, not floats")
    inverse, counts = namespace(ids).group_index(ids)
    xp = namespace(rewards)
    if is_torch(inverse) != is_torch(rewards) or (is_torch(inverse) and inverse.device != rewards.device):
        to_np = namespace(inverse).to_numpy
        inverse = xp.index(to_np(inverse) if is_torch(inverse) else inverse, rewards)
        counts = xp.index(to_np(counts) if is_torch(counts) else counts, rewards)
    return inverse, counts
