"""The conditioning bias law (Prop 4): closed form, Monte Carlo and a rollout sweep.

Synthetic model
---------------
A gate ``a ~ Bern(p_a)`` and a conditioned channel ``b ~ Bern(p_b)``,
independent, and a per-rollout gradient signal

    g = alpha_c (a - p_a) + alpha_f (b - p_b) a + gamma (b - p_b)(1 - a) + noise,

``noise`` independent of ``(a, b)`` with mean 0. ``alpha_c`` is how much the
gate matters, ``alpha_f`` how much ``b`` matters where the gate passes and
``gamma`` how much ``b`` still matters where the gate fails.

Conditioning channel ``b`` on the gate (zero-fill) replaces ``b`` by ``ab``.
Weighted by ``w_b``, the gradient contribution it removes is

    beta = w_b [Cov(b, g) - Cov(ab, g)] = w_b Cov(b (1 - a), g)
         = w_b p_b (1 - p_a) [gamma (1 - p_b) - alpha_c p_a],

independent of ``alpha_f``. ``beta < 0`` (``gamma < gamma*``) means the
unconditioned channel credited gate-failing rollouts against the gate, a bias
conditioning removes; ``beta > 0`` (``gamma > gamma*``) means conditioning also
throws away useful signal. The sign changes at

    gamma* = alpha_c p_a / (1 - p_b).

Two different gammas
--------------------
The model's ``gamma`` above is a property of the world (of ``g``). The
contamination knob of :class:`multireward_grpo.advantage.Conditioning`,
``b <- b (c + gamma_k (1 - c))``, is a property of the estimator. On saved
rollouts ``g`` is fixed, so post-processing can sweep only the knob, and by
bilinearity of the covariance the bias that knob ``gamma_k`` removes is exactly
``(1 - gamma_k) * beta``: :func:`gamma_sweep_from_rollouts` estimates ``beta``
(the model's law at the rollouts' own, unknown model gamma), the linear knob
sweep, and fits the model's parameters by least squares so ``beta`` can be
compared with the closed form.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

__all__ = [
    "BiasEstimate",
    "BiasSweep",
    "gamma_star",
    "gamma_sweep_from_rollouts",
    "predicted_bias",
    "sample_bias_model",
    "simulate_bias",
]


# --------------------------------------------------------------------------- helpers


def _real(x: Any, name: str) -> np.ndarray:
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number or array, got {x!r}")
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number or array, got {x!r}") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {x!r}")
    return arr


def _prob(x: Any, name: str) -> np.ndarray:
    arr = _real(x, name)
    if np.any((arr < 0) | (arr > 1)):
        raise ValueError(f"{name} is a probability and must lie in [0, 1], got {x!r}")
    return arr


def _scalar(x: Any, name: str) -> float:
    arr = _real(x, name)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a single number here, got shape {arr.shape}")
    return float(arr)


def _out(arr: np.ndarray):
    """A Python float for 0-d results, the array otherwise."""
    return float(arr) if arr.ndim == 0 else arr


def _as_generator(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        if rng < 0:
            raise ValueError(f"rng seed must be a non-negative int, got {rng}")
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}; "
        "pass e.g. rng=0 or rng=np.random.default_rng(0)"
    )


def _to_dict(obj) -> dict:
    out = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        out[f.name] = v
    return out


# --------------------------------------------------------------------------- closed forms


def predicted_bias(p_a, p_b, alpha_c, alpha_f, gamma, w_b=1.0):
    """The bias that conditioning removes, in closed form (Prop 4).

    ``beta = w_b p_b (1 - p_a) [gamma (1 - p_b) - alpha_c p_a]``.

    Parameters
    ----------
    p_a, p_b : float or array in [0, 1]
        Pass rate of the gate and success rate of the conditioned channel.
    alpha_c, alpha_f : float or array
        Gate and conditioned-channel (gate passing) coefficients of ``g``;
        ``alpha_f`` cancels from ``beta`` and is accepted (and validated) so
        one parameter set describes the model everywhere.
    gamma : float or array
        The model's coefficient of ``b`` where the gate fails.
    w_b : float or array
        Weight of the conditioned channel.

    Returns
    -------
    float or ndarray
        ``beta``, broadcast over all arguments (a float when all are scalars).
    """
    p_a = _prob(p_a, "p_a")
    p_b = _prob(p_b, "p_b")
    alpha_c = _real(alpha_c, "alpha_c")
    _real(alpha_f, "alpha_f")
    gamma = _real(gamma, "gamma")
    w_b = _real(w_b, "w_b")
    return _out(w_b * p_b * (1.0 - p_a) * (gamma * (1.0 - p_b) - alpha_c * p_a))


def gamma_star(p_a, p_b, alpha_c):
    """The model gamma at which the removed bias changes sign.

    ``gamma* = alpha_c p_a / (1 - p_b)``. The sign change is real only when
    ``0 < p_a < 1`` and ``0 < p_b < 1``; at ``p_a = 1`` or ``p_b = 0`` the bias
    is 0 for every gamma, and the value returned is where the bracket
    ``gamma (1 - p_b) - alpha_c p_a`` vanishes.

    Parameters
    ----------
    p_a, p_b : float or array in [0, 1], ``p_b < 1``
    alpha_c : float or array

    Returns
    -------
    float or ndarray

    Raises
    ------
    ValueError
        If any ``p_b == 1``: then ``b - p_b`` is 0, the bias is
        ``-w_b alpha_c p_a (1 - p_a)`` whatever gamma is, and no gamma* exists.
    """
    p_a = _prob(p_a, "p_a")
    p_b = _prob(p_b, "p_b")
    alpha_c = _real(alpha_c, "alpha_c")
    if np.any(p_b == 1.0):
        raise ValueError(
            "gamma* = alpha_c p_a / (1 - p_b) is undefined for p_b = 1: the conditioned "
            "channel is then constant, the bias is -w_b alpha_c p_a (1 - p_a) for every "
            "gamma and never changes sign; use p_b < 1"
        )
    return _out(alpha_c * p_a / (1.0 - p_b))


# --------------------------------------------------------------------------- Monte Carlo


def sample_bias_model(p_a, p_b, alpha_c, alpha_f, gamma, *, size, noise_std=1.0, rng):
    """Draw rollouts ``(a, b, g)`` from the synthetic model.

    Parameters
    ----------
    p_a, p_b : float in [0, 1]
    alpha_c, alpha_f, gamma : float
    size : int or tuple of int
        Output shape, e.g. ``N`` or ``(P, m)``.
    noise_std : float >= 0
        Standard deviation of the Gaussian noise in ``g``.
    rng : numpy.random.Generator or int
        Source of randomness (an int is a seed).

    Returns
    -------
    a, b : ndarray of float (0/1), shape ``size``
    g : ndarray of float, shape ``size``
    """
    p_a = _scalar(_prob(p_a, "p_a"), "p_a")
    p_b = _scalar(_prob(p_b, "p_b"), "p_b")
    alpha_c, alpha_f, gamma = (_scalar(v, n) for v, n in ((alpha_c, "alpha_c"), (alpha_f, "alpha_f"), (gamma, "gamma")))
    noise_std = float(_real(noise_std, "noise_std"))
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    gen = _as_generator(rng)
    a = (gen.random(size) < p_a).astype(np.float64)
    b = (gen.random(size) < p_b).astype(np.float64)
    noise = gen.standard_normal(a.shape) * noise_std
    g = alpha_c * (a - p_a) + alpha_f * (b - p_b) * a + gamma * (b - p_b) * (1.0 - a) + noise
    return a, b, g


@dataclass(frozen=True)
class BiasEstimate:
    """A Monte Carlo estimate of the removed bias next to the closed form.

    Attributes
    ----------
    gamma : float or (k,) ndarray
        Model gamma(s) of the estimate.
    beta_hat : float or (k,) ndarray
        ``w_b * Cov(b (1 - a), g)``, the sample covariance with ddof = 1
        (``= w_b [Cov(b, g) - Cov(ab, g)]`` exactly, by bilinearity).
    stderr : float or (k,) ndarray
        Its standard error (delta method: the standard deviation of the
        per-sample products ``(u_i - u_bar)(g_i - g_bar)`` over ``sqrt(n)``).
    predicted : float or (k,) ndarray
        :func:`predicted_bias` at the same parameters.
    n : int
        Number of Monte Carlo samples.
    """

    gamma: Any
    beta_hat: Any
    stderr: Any
    predicted: Any
    n: int

    @property
    def z(self):
        """``(beta_hat - predicted) / stderr`` (inf where stderr is 0 and they differ)."""
        diff = np.asarray(self.beta_hat) - np.asarray(self.predicted)
        se = np.asarray(self.stderr)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(se > 0, diff / np.where(se > 0, se, 1.0), np.where(diff == 0, 0.0, np.inf))
        return _out(z)

    def to_dict(self) -> dict:
        """A JSON-serializable dict of the fields."""
        return _to_dict(self)


def simulate_bias(
    p_a,
    p_b,
    alpha_c,
    alpha_f,
    gamma,
    *,
    w_b: float = 1.0,
    n: int = 200_000,
    noise_std: float = 1.0,
    rng,
) -> BiasEstimate:
    """Estimate the removed bias ``beta`` by Monte Carlo.

    One sample of ``n`` rollouts ``(a, b, noise)`` serves every gamma (common
    random numbers: a sweep is smooth, its points are correlated). Since
    ``g = base + gamma h`` with ``h = (b - p_b)(1 - a)``, the covariance with
    ``u = b (1 - a)`` and its delta-method variance are computed once and
    evaluated for every gamma: no pass over the samples per gamma.

    Parameters
    ----------
    p_a, p_b, alpha_c, alpha_f : float
        Model parameters (``p_a, p_b`` in [0, 1]).
    gamma : float or (k,) array
        Model gamma(s).
    w_b : float
        Weight of the conditioned channel.
    n : int >= 2
        Monte Carlo sample size.
    noise_std : float >= 0
        Standard deviation of the Gaussian noise in ``g``.
    rng : numpy.random.Generator or int
        Source of randomness (an int is a seed).

    Returns
    -------
    BiasEstimate
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an int >= 2 (Monte Carlo samples), got {n!r}")
    gammas = _real(gamma, "gamma")
    if gammas.ndim > 1:
        raise ValueError(f"gamma must be a scalar or a 1-D array, got shape {gammas.shape}")
    w = float(_real(w_b, "w_b"))
    predicted = predicted_bias(p_a, p_b, alpha_c, alpha_f, gammas, w)
    a, b, base = sample_bias_model(p_a, p_b, alpha_c, alpha_f, 0.0, size=int(n), noise_std=noise_std, rng=rng)
    p_b_f = _scalar(p_b, "p_b")
    h = (b - p_b_f) * (1.0 - a)
    u = b * (1.0 - a)
    uc = u - u.mean()
    x = uc * (base - base.mean())  # per-sample products, gamma = 0 part
    y = uc * (h - h.mean())  # per-sample products, coefficient of gamma
    cov_x = x.sum() / (n - 1)
    cov_y = y.sum() / (n - 1)
    vx, vy = x.var(ddof=1), y.var(ddof=1)
    cxy = float(np.dot(x - x.mean(), y - y.mean())) / (n - 1)
    beta_hat = w * (cov_x + gammas * cov_y)
    var = np.maximum(vx + 2.0 * gammas * cxy + gammas**2 * vy, 0.0)
    stderr = abs(w) * np.sqrt(var / n)
    return BiasEstimate(
        gamma=_out(gammas),
        beta_hat=_out(np.asarray(beta_hat)),
        stderr=_out(np.asarray(stderr)),
        predicted=predicted,
        n=int(n),
    )


# --------------------------------------------------------------------------- rollouts


@dataclass(frozen=True)
class BiasSweep:
    """The bias law measured on saved rollouts (see :func:`gamma_sweep_from_rollouts`).

    Attributes
    ----------
    gammas : (k,) ndarray
        Contamination knob values swept.
    removed : (k,) ndarray
        ``w_b [Cov(b, g) - Cov(b_gamma, g)]``: the gradient contribution that
        conditioning with knob ``gamma`` removes; ``= (1 - gamma) beta_hat``.
    removed_stderr : (k,) ndarray
        ``|1 - gamma| * beta_stderr``.
    retained : (k,) ndarray
        ``w_b [Cov(b_gamma, g) - Cov(b c, g)] = gamma beta_hat``: the part of
        ``beta`` the contaminated gate lets through.
    beta_hat, beta_stderr : float
        ``w_b Cov(b (1 - c), g)``, the bias full conditioning removes (Prop 4's
        ``beta``), and its standard error.
    predicted_beta : float
        The closed form at the fitted parameters,
        ``w_b (1 - p_a) [gamma_m var_b - alpha_c p_a mean_b]`` (equal to
        :func:`predicted_bias` for a 0/1 target, where ``var_b = p_b (1 - p_b)``).
        It uses the model's independence of gate and target and one set of
        rates for all rollouts (``p_a``, ``mean_b``, ``var_b`` are pooled over
        every rollout); a gap between it and ``beta_hat`` beyond the standard
        error is evidence against the model, or of prompts whose rates differ.
    p_a_hat, mean_b_hat, var_b_hat : float
        Gate pass rate, target mean and (ddof 0) target variance.
    alpha_c_hat, alpha_f_hat, gamma_model_hat : float
        Least-squares fit of ``g`` on the model's three regressors (with an
        intercept, or group fixed effects when ``within_group``); NaN when the
        rollouts do not identify them (e.g. the gate always passes).
    gamma_star_hat : float
        ``alpha_c p_a mean_b / var_b`` at the fitted values (``gamma*`` for a
        0/1 target); NaN when ``var_b`` is 0 or the fit is not identified.
    n_rollouts : int
    n_groups : int or None
        Number of groups when ``within_group``.
    within_group : bool
    threshold, w_b : float
    """

    gammas: np.ndarray
    removed: np.ndarray
    removed_stderr: np.ndarray
    retained: np.ndarray
    beta_hat: float
    beta_stderr: float
    predicted_beta: float
    p_a_hat: float
    mean_b_hat: float
    var_b_hat: float
    alpha_c_hat: float
    alpha_f_hat: float
    gamma_model_hat: float
    gamma_star_hat: float
    n_rollouts: int
    n_groups: int | None
    within_group: bool
    threshold: float
    w_b: float

    def to_dict(self) -> dict:
        """A JSON-serializable dict of the fields (NaN stays float NaN)."""
        return _to_dict(self)


def _rollout_array(x, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError):
        raise TypeError(f"{name} could not be read as a numeric array") from None
    if arr.dtype.kind == "b":
        arr = arr.astype(np.float64)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape (N,) or (P, m); got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{name} contains NaN or infinite values; drop those rollouts first "
            "(the bias law needs every rollout's gate, target and g)"
        )
    return arr


def _centre(x: np.ndarray, within_group: bool) -> np.ndarray:
    """Centre over everything, or inside each group (axis 1) when within_group."""
    if within_group:
        return x - x.mean(axis=-1, keepdims=True)
    return x - x.mean()


def gamma_sweep_from_rollouts(
    gate,
    raw_target,
    g,
    gammas,
    *,
    w_b: float = 1.0,
    threshold: float = 0.5,
    within_group: bool | None = None,
) -> BiasSweep:
    """Measure the conditioning bias law on saved rollouts, sweeping the knob.

    The rollouts must carry the raw (ungated) target channel ``b`` and a
    per-rollout gradient signal or score proxy ``g``. With ``c = 1[gate >=
    threshold]`` the contaminated target of knob ``gamma`` is
    ``b_gamma = b (c + gamma (1 - c))`` (``gamma = 0``: zero-fill, ``gamma = 1``:
    no conditioning), and the estimator reported for each knob is

        removed(gamma) = w_b [Cov(b, g) - Cov(b_gamma, g)].

    The right estimator, and why: ``b - b_gamma = (1 - gamma) b (1 - c)``
    exactly, row by row, and a sample covariance is linear in each argument,
    so ``removed(gamma) = (1 - gamma) * beta_hat`` with
    ``beta_hat = w_b Cov(b (1 - c), g)`` *exactly* (not only in expectation).
    All the information is in the one number ``beta_hat``, the bias that full
    conditioning removes; its standard error scales by ``|1 - gamma|``. In
    the synthetic model ``E[beta_hat] = predicted_bias(p_a, p_b, alpha_c,
    alpha_f, gamma_model)``, where ``gamma_model`` is the world's coefficient
    of ``b`` on gate-failing rollouts (fixed by the rollouts) — the knob
    cannot move it. To see the law's sign change at ``gamma*``, compare
    ``beta_hat`` across rollout sets (or models) with different
    ``gamma_model``, or read ``gamma_model_hat`` against ``gamma_star_hat``.

    Covariances are sample covariances (ddof = 1). With ``within_group`` they
    are pooled within-group covariances (each group centred on its own mean,
    the group estimates averaged; this is what a group-relative advantage
    sees) and the standard error is the spread of the per-group estimates
    over ``sqrt(P)``; otherwise one covariance over all rollouts with a
    delta-method standard error (rollouts treated as independent).

    Parameters
    ----------
    gate : (N,) or (P, m) array
        Gate channel; it passes where ``gate >= threshold``.
    raw_target : array, same shape
        The conditioned channel before any gating.
    g : array, same shape
        Gradient signal (or score proxy) per rollout.
    gammas : float or (k,) array in [0, 1]
        Knob values to sweep.
    w_b : float
        Weight of the conditioned channel.
    threshold : float
        Gate pass rule, as in :class:`~multireward_grpo.advantage.Conditioning`.
    within_group : bool or None
        Default: True for ``(P, m)`` input, False for ``(N,)``.

    Returns
    -------
    BiasSweep
    """
    gate_a = _rollout_array(gate, "gate")
    b = _rollout_array(raw_target, "raw_target")
    g_a = _rollout_array(g, "g")
    if not (gate_a.shape == b.shape == g_a.shape):
        raise ValueError(
            f"gate {gate_a.shape}, raw_target {b.shape} and g {g_a.shape} must have the same shape"
        )
    knobs = np.atleast_1d(_real(gammas, "gammas"))
    if knobs.ndim != 1:
        raise ValueError(f"gammas must be a scalar or a 1-D array, got shape {knobs.shape}")
    if np.any((knobs < 0) | (knobs > 1)):
        raise ValueError(f"gammas are contamination knobs and must lie in [0, 1], got {knobs.tolist()}")
    w = float(_real(w_b, "w_b"))
    thr = float(_real(threshold, "threshold"))
    if within_group is None:
        within_group = gate_a.ndim == 2
    if within_group not in (True, False):
        raise TypeError(f"within_group must be None, True or False, got {within_group!r}")
    if within_group and gate_a.ndim != 2:
        raise ValueError("within_group=True needs (P, m) arrays (one row per group)")
    if not within_group:
        gate_a, b, g_a = gate_a.reshape(-1), b.reshape(-1), g_a.reshape(-1)
    n = gate_a.size
    if within_group:
        n_groups, m = gate_a.shape
        if m < 2 or n_groups < 2:
            raise ValueError(
                f"within-group covariances need at least 2 groups of at least 2 rollouts; got shape {gate_a.shape}. "
                "Pass within_group=False to pool all rollouts"
            )
    elif n < 3:
        raise ValueError(f"need at least 3 rollouts, got {n}")

    c = (gate_a >= thr).astype(np.float64)
    u = b * (1.0 - c)
    uc, gc = _centre(u, within_group), _centre(g_a, within_group)
    if within_group:
        per_group = np.einsum("pm,pm->p", uc, gc) / (m - 1)
        cov = float(per_group.mean())
        se = float(per_group.std(ddof=1) / np.sqrt(n_groups))
    else:
        prod = uc * gc
        cov = float(prod.sum() / (n - 1))
        se = float(prod.std(ddof=1) / np.sqrt(n))
    beta_hat, beta_se = w * cov, abs(w) * se

    # Fit the model: g ~ alpha_c (a - p_a) + alpha_f (b - mean_b) a + gamma (b - mean_b)(1 - a).
    p_a_hat = float(c.mean())
    mean_b = float(b.mean())
    var_b = float(b.var())
    design = np.stack([c - p_a_hat, (b - mean_b) * c, (b - mean_b) * (1.0 - c)], axis=-1)
    design = design - (design.mean(axis=-2, keepdims=True) if within_group else design.reshape(-1, 3).mean(axis=0))
    coef, _, rank, _ = np.linalg.lstsq(design.reshape(-1, 3), gc.reshape(-1), rcond=None)
    if rank < 3:
        alpha_c_hat = alpha_f_hat = gamma_m_hat = predicted = g_star = float("nan")
    else:
        alpha_c_hat, alpha_f_hat, gamma_m_hat = (float(v) for v in coef)
        predicted = w * (1.0 - p_a_hat) * (gamma_m_hat * var_b - alpha_c_hat * p_a_hat * mean_b)
        g_star = alpha_c_hat * p_a_hat * mean_b / var_b if var_b > 0 else float("nan")

    return BiasSweep(
        gammas=knobs,
        removed=(1.0 - knobs) * beta_hat,
        removed_stderr=np.abs(1.0 - knobs) * beta_se,
        retained=knobs * beta_hat,
        beta_hat=beta_hat,
        beta_stderr=beta_se,
        predicted_beta=float(predicted),
        p_a_hat=p_a_hat,
        mean_b_hat=mean_b,
        var_b_hat=var_b,
        alpha_c_hat=alpha_c_hat,
        alpha_f_hat=alpha_f_hat,
        gamma_model_hat=gamma_m_hat,
        gamma_star_hat=float(g_star),
        n_rollouts=int(n),
        n_groups=int(gate_a.shape[0]) if within_group else None,
        within_group=bool(within_group),
        threshold=thr,
        w_b=w,
    )
