"""Theorem 3: the correlation-aware gradient-MSE law, checked on rollouts.

Model. For one group (prompt ``p``, seed ``k``) with advantages ``A_j`` and
score projections ``g_j`` independent of the rewards, mean 0, variance
``tau2``, the surrogate gradient is ``ghat = (1/m) sum_j A_j g_j``. Given the
rewards, ``E[ghat] = 0`` and ``E[ghat^2] = (tau2 / m) * (1/m) sum_j A_j^2``.

* NA: ``(1/m) sum_j A_j^2 = w' Chat w`` with ``Chat = (1/m) sum_j z_j z_j'`` the
  within-group sample correlation (ddof 0), so ``MSE = (tau2/m) w' E[Chat] w``,
  and ``E[Chat] = C + O(1/m)`` (Fisher: ``E[Chat_lk] ~ C_lk - C_lk (1 - C_lk^2) / (2m)``).
* AN: the advantages have unit sample variance, so ``MSE ~ tau2 / m``
  whatever the correlations.

What :func:`analyze` computes, per prompt over its ``K`` seeds:

``realized``  ``mean_k ghat_pk^2``. The true mean of ``ghat`` is 0 by
    construction, so this is the unbiased MSE estimator; the variance of
    ``ghat`` around its sample mean with ddof 0 would be biased low by
    ``(K-1)/K``.
``predicted`` for any mode: ``(tau2/m) mean_k (1/m) sum_j A_j^2``, the exact
    conditional expectation. For NA it equals the law ``(tau2/m) w' Chat_p w``
    (``predicted_per_prompt``), with ``Chat_p`` averaged over the K seeds.

With ``conditioning``, the correlation and the predictions describe the
conditioned channels the estimators see, and the influence is measured
against the raw channels (the objective's own).

A channel constant inside a group has ``z = 0`` there, so that group's
``Chat`` has a 0 on its diagonal and is not a correlation matrix; such groups
are counted per channel in ``degenerate_groups`` and kept in the averages
(their advantages really are 0 on that channel).

Numerics: the z-scores and the advantages are the estimators' own
(:mod:`multireward_grpo.advantage`, in float64: NA from the same z, AN from
the ``"an"`` estimator), which rescale deviations and ``w . r`` by powers of
two where they would overflow or underflow, so rewards at any float64 scale
(1e-200 or 1.7e308) give the same correlations, ratios and
``degenerate_groups``; a constant channel is detected exactly, not from a
variance that underflowed. A statistic that is still not finite (a reported
MSE beyond the float64 range) raises ``ValueError``.

Which ratio tests the law. With simulated scores ``predicted`` is the
expectation of the realized MSE given the very rewards analysed, so
``ratio_pooled`` is ~1 for ANY reward tensor: it checks the score model, not
Theorem 3. The law is tested by ``population_ratio_pooled``: realized over
``population_law``, the MSE predicted from each prompt's rollout
distribution with the finite-m expectation of the within-group correlation
(:mod:`multireward_grpo.analysis.population`: exact diagonal including
constant groups, off-diagonals resampled or from Hotelling / Fisher), next
to the same law without the finite-m correction
(``population_law_no_correction``), which fails on small groups.

Real scores. ``scores`` may hold real score projections
(:mod:`multireward_grpo.generation.scores`). Their mean given the rewards
is no longer 0 when they depend on the rewards (``ghat`` then has the mean
``ghat_mean``, the policy gradient along the direction), so with
``tau2=None`` the realized MSE is the variance of ``ghat`` across seeds
(ddof 1), ``tau2`` is estimated per prompt, and
``score_reward_correlation`` checks the independence the theorem assumes.

Degenerate data. Channels constant in more than ``constant_share_warn`` of
the groups are warned about; groups whose AN scalar ``w . r`` is constant
(all AN advantages 0) are counted (``an_constant_groups``) with AN's law
given them (``an_law_constant_adjusted``).

Intervals (``ratio_ci``): the pooled ratio's percentile bootstrap interval,
by default two-level (prompts, then seeds within each resampled prompt; see
:func:`~multireward_grpo.analysis._stats.two_level_ratio_ci`), which keeps the
seed-level noise that resampling prompts alone misses when prompts are few.

Scores are simulated as ``N(0, tau2)`` from ``score_seed`` unless given; all
estimators share the same scores. Work is chunked over prompts, so memory
stays bounded for any ``P * K``; results do not depend on the chunk size.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields
from typing import Callable, Sequence

import numpy as np

from multireward_grpo.advantage import (
    EstimatorOptions,
    _standardize,
    _standardize_finding_constant,
    apply_conditioning,
    compute_advantage_batch,
    get_estimator,
    is_batch_level,
    parse_conditioning,
)
from multireward_grpo._matrices import validate_correlation
from multireward_grpo._validate import check_choice, check_float, check_int
from multireward_grpo.analysis.population import DEFAULT_N_PARTITIONS, population_law
from multireward_grpo.analysis._stats import (
    CI_METHODS,
    bootstrap_ratio_ci,
    two_level_ratio_ci,
)

__all__ = [
    "Thm3Result",
    "analyze",
    "expected_sample_correlation",
    "fisher_expected_correlation",
    "predicted_mse_population",
]

_DEFAULT_CHUNK_BYTES = 64 * 2**20
DEFAULT_CONSTANT_SHARE_WARN = 0.5
"""Share of groups above which a constant channel is warned about (``constant_share_warn``)."""
DEFAULT_CI_MIN_PROMPTS = 10
"""Fewest prompts for ``ci_method="prompts"``: resampling prompts alone gives a
zero-width interval at P = 1, and its nominal 95% interval covers ~74% at
P = 3, ~82% at P = 5 and ~90% from P = 10 on."""


@dataclass(frozen=True)
class Thm3Result:
    """Realized vs predicted gradient MSE (Theorem 3), per prompt and pooled.

    Arrays indexed by prompt have shape ``(P,)``; by channel ``(R,)``. Dicts
    are keyed by estimator mode.
    """

    m: int
    """Rollouts per group."""
    P: int
    """Prompts."""
    K: int
    """Seeds (independent groups) per prompt."""
    w: np.ndarray
    """(R,) objective weights."""
    realized_an: np.ndarray
    """(P,) realized MSE of AN, ``mean_k ghat^2``."""
    realized_na: np.ndarray
    """(P,) realized MSE of NA."""
    predicted_per_prompt: np.ndarray
    """(P,) the NA law ``(tau2/m) w' Chat_p w``."""
    predicted_pooled: float
    """The NA law with the correlation pooled over all groups."""
    influence_an: np.ndarray
    """(R,) Prop 1 influence ``Cov(A, z_l)`` of AN, averaged over groups (z of the raw channels)."""
    influence_na: np.ndarray
    """(R,) the same for NA."""
    pooled_C: np.ndarray
    """(R, R) ``Chat`` averaged over all groups."""
    tau2: float = 1.0
    """Score variance used by the predictions."""
    modes: tuple = ("na", "an")
    """Estimators analysed."""
    realized: dict = field(default_factory=dict)
    """mode -> (P,) realized MSE."""
    predicted: dict = field(default_factory=dict)
    """mode -> (P,) predicted MSE ``(tau2/m) mean_k (1/m) sum_j A_j^2``."""
    influence: dict = field(default_factory=dict)
    """mode -> (R,) influence."""
    ratio_per_prompt: dict = field(default_factory=dict)
    """mode -> (P,) realized / predicted."""
    ratio_pooled: dict = field(default_factory=dict)
    """mode -> sum_p realized / sum_p predicted."""
    ratio_ci: dict = field(default_factory=dict)
    """mode -> (low, high) percentile bootstrap interval of the pooled ratio (method ``ci_method``)."""
    confidence_level: float = 0.95
    """Level of ``ratio_ci``."""
    ci_method: str = "two_level"
    """How ``ratio_ci`` resamples: ``"two_level"`` (prompts, then seeds) or ``"prompts"``."""
    notes: tuple = ()
    """Warnings about the result (e.g. intervals left out), also issued as ``RuntimeWarning``."""
    an_law: float = float("nan")
    """``tau2 / m``, AN's MSE whatever the correlations."""
    degenerate_groups: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """(R,) number of (prompt, seed) groups in which the channel is constant."""
    conditioning: tuple = ()
    """Conditioning rules applied to the rewards before everything else."""
    population_C: np.ndarray | None = None
    """(R, R) population correlation, when given to :func:`analyze`."""
    predicted_population: float | None = None
    """``(tau2/m) w' C w`` from ``population_C``."""
    predicted_population_fisher: float | None = None
    """``(tau2/m) w' E[Chat] w`` with Fisher's 1/m correction of ``population_C``."""
    predicted_population_exact: float | None = None
    """``(tau2/m) w' E[Chat] w`` with the exact expectation for Gaussian channels."""
    an_constant_groups: int = 0
    """Groups whose AN scalar ``w . r`` is constant (all AN advantages 0)."""
    an_law_constant_adjusted: float = float("nan")
    """``(tau2/m) (1 - an_constant_groups / n_groups)`` (per prompt, averaged): AN's law given those groups."""
    score_source: str = "simulated"
    """``"simulated"`` (``N(0, tau2)`` from ``score_seed``) or ``"given"`` (the ``scores`` argument)."""
    realized_estimator: str = "second_moment"
    """``"second_moment"`` (``mean_k ghat^2``) or ``"variance"`` (ddof 1 across seeds): see :func:`analyze`."""
    tau2_per_prompt: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """(P,) score variance per prompt (estimated from real scores, else ``tau2``)."""
    ghat_mean: dict = field(default_factory=dict)
    """mode -> (P,) mean of ``ghat`` across seeds: 0 in expectation for simulated scores; with real scores
    that depend on the rewards, the policy gradient along ``v``."""
    ghat_mean_pooled: dict = field(default_factory=dict)
    """mode -> (mean, standard error) of ``ghat`` over all groups."""
    score_reward_correlation: np.ndarray | None = None
    """(R,) pooled within-prompt correlation of given scores with each channel (Theorem 3 assumes 0)."""
    population_law: dict = field(default_factory=dict)
    """mode ("na", "an") -> (P,) population-law MSE from each prompt's own rollouts
    (:mod:`~multireward_grpo.analysis.population`): the prediction that tests the law."""
    population_law_no_correction: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """(P,) ``(tau2/m) w' C_p w``: the NA law without the finite-m correction (the m -> inf limit)."""
    population_expected_C: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """(R, R) ``E_m[Chat]`` of the population law, averaged over prompts."""
    population_offdiag: str = "resample"
    """How the population law got the off-diagonal ``E_m[Chat]``."""
    population_ratio_per_prompt: dict = field(default_factory=dict)
    """law ("na", "an", "na_no_correction") -> (P,) realized / population law."""
    population_ratio_pooled: dict = field(default_factory=dict)
    """law -> pooled realized / population law."""
    population_ratio_ci: dict = field(default_factory=dict)
    """law -> (low, high) bootstrap interval of the pooled population ratio (method ``ci_method``)."""

    @property
    def n_groups(self) -> int:
        """Number of (prompt, seed) groups."""
        return self.P * self.K

    def to_dict(self) -> dict:
        """Plain JSON-serializable dict (arrays become lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    return value


# --------------------------------------------------------------------------- closed forms


def fisher_expected_correlation(C, m: int) -> np.ndarray:
    """Fisher's approximation of the expected within-group sample correlation.

    Parameters
    ----------
    C : (R, R) array
        Population correlation matrix.
    m : int
        Group size.

    Returns
    -------
    (R, R) array
        ``C - C (1 - C^2) / (2m)`` off the diagonal, 1 on it.
    """
    C = validate_correlation(C)
    if m < 2:
        raise ValueError(f"m must be >= 2, got {m}")
    expected = C - C * (1.0 - C**2) / (2.0 * m)
    np.fill_diagonal(expected, 1.0)
    return expected


def _hyp2f1_half_half(c: float, x: np.ndarray) -> np.ndarray:
    """``2F1(1/2, 1/2; c; x)`` for ``0 <= x < 1`` by its power series."""
    k = np.arange(20000, dtype=np.float64)[:, None]
    # term ratio t_{k+1} / t_k = (k + 1/2)^2 / ((k + c)(k + 1)) * x
    ratios = (k + 0.5) ** 2 / ((k + c) * (k + 1.0)) * x[None, :]
    terms = np.cumprod(np.vstack([np.ones((1, x.size)), ratios[:-1]]), axis=0)
    return terms.sum(axis=0)


def expected_sample_correlation(C, m: int) -> np.ndarray:
    """Exact expected within-group sample correlation of Gaussian channels.

    For bivariate normal samples of size ``m`` the Pearson correlation has
    mean ``rho * G * 2F1(1/2, 1/2; (m+1)/2; rho^2)`` with
    ``G = Gamma(m/2)^2 / (Gamma((m-1)/2) Gamma((m+1)/2))`` (Hotelling 1953);
    at ``m = 2`` this is ``(2/pi) arcsin(rho)``. It equals Fisher's
    ``rho - rho (1 - rho^2) / (2m)`` up to ``O(1/m^2)``.

    Parameters
    ----------
    C : (R, R) array
        Population correlation matrix.
    m : int
        Group size (>= 2).

    Returns
    -------
    (R, R) array with unit diagonal.
    """
    from math import lgamma

    C = validate_correlation(C)
    if m < 2:
        raise ValueError(f"m must be >= 2, got {m}")
    rho = np.clip(C.ravel(), -1.0, 1.0)
    interior = np.abs(rho) < 1.0 - 1e-12
    G = np.exp(2 * lgamma(m / 2) - lgamma((m - 1) / 2) - lgamma((m + 1) / 2))
    expected = rho.copy()  # |rho| = 1 gives r = rho exactly
    expected[interior] = rho[interior] * G * _hyp2f1_half_half((m + 1) / 2, rho[interior] ** 2)
    expected = expected.reshape(C.shape)
    np.fill_diagonal(expected, 1.0)
    return expected


def predicted_mse_population(C, w, m: int, *, tau2: float = 1.0, correction: str = "fisher") -> float:
    """The NA law from a population correlation: ``(tau2/m) w' E[Chat] w``.

    Parameters
    ----------
    C : (R, R) array
    w : (R,) array
    m : int
    tau2 : float
    correction : {"fisher", "exact", "none"}
        ``E[Chat]`` by Fisher's 1/m approximation, by the exact Gaussian
        expectation (:func:`expected_sample_correlation`), or ``C`` itself.
    """
    C = validate_correlation(C)
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (C.shape[0],):
        raise ValueError(f"C is {C.shape[0]}x{C.shape[0]} but w has shape {w.shape}")
    expected = {"fisher": fisher_expected_correlation, "exact": expected_sample_correlation}
    if correction not in ("fisher", "exact", "none"):
        raise ValueError(f"correction must be 'fisher', 'exact' or 'none', got {correction!r}")
    Chat = C if correction == "none" else expected[correction](C, m)
    return float(tau2 / m * w @ Chat @ w)


# --------------------------------------------------------------------------- analysis


def _validate(rewards, w, tau2, scores, C, modes):
    rewards = np.asarray(rewards)
    if rewards.dtype.kind not in "biuf":
        raise TypeError(f"rewards must be a real numeric array, got dtype {rewards.dtype}")
    if rewards.ndim != 4:
        raise ValueError(
            f"rewards must be (P, K, m, R) = prompts x seeds x rollouts x channels; got shape {rewards.shape}"
        )
    P, K, m, R = rewards.shape
    if P < 1 or R < 1:
        raise ValueError(f"rewards has no prompts or no channels: shape {rewards.shape}")
    if K < 2:
        raise ValueError(f"K (seeds per prompt) must be >= 2 to estimate an MSE across seeds; got K={K}")
    if m < 2:
        raise ValueError(f"m (rollouts per group) must be >= 2 for a group-relative advantage; got m={m}")
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (R,):
        raise ValueError(f"rewards has {R} channels but w has shape {w.shape}; pass one weight per channel")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise ValueError(f"w must be finite, >= 0 and not all zero; got {w.tolist()}")
    if not np.all(np.isfinite(rewards)):
        bad = np.argwhere(~np.isfinite(rewards))[0]
        raise ValueError(
            f"rewards must be finite; found {rewards[tuple(bad)]} at prompt {bad[0]}, seed {bad[1]}, "
            f"rollout {bad[2]}, channel {bad[3]}. Drop or re-score the prompts with missing rewards"
        )
    if tau2 is not None and not (isinstance(tau2, (int, float, np.integer, np.floating))
                                 and not isinstance(tau2, (bool, np.bool_)) and np.isfinite(tau2) and tau2 > 0):
        raise ValueError(f"tau2 (score variance) must be a positive number or None, got {tau2!r}")
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (P, K, m):
            raise ValueError(f"scores must be (P, K, m) = {(P, K, m)}; got shape {scores.shape}")
        if not np.all(np.isfinite(scores)):
            raise ValueError("scores must be finite")
    if C is not None:
        C = validate_correlation(C, R)
    modes = tuple(dict.fromkeys(("na", "an") + tuple(m_.strip().lower() for m_ in modes)))
    for mode in modes:
        get_estimator(mode)
        if is_batch_level(mode):
            raise ValueError(
                f"mode {mode!r} couples the groups of a batch, which has no meaning for one "
                "(prompt, seed) group; analyse its per-group part (e.g. 'na' for 'gdpo')"
            )
    return rewards.astype(np.float64, copy=False), w, scores, C, modes


def _chunks(P: int, per_prompt_bytes: int, chunk_bytes: int):
    step = max(1, chunk_bytes // max(per_prompt_bytes, 1))
    return [(start, min(P, start + step)) for start in range(0, P, step)]


def _check_interval_options(n_resamples, confidence_level, ci_method, ci_min_prompts) -> None:
    check_int("n_resamples", n_resamples, 0)
    if not 0 < confidence_level < 1:
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level}")
    check_choice("ci_method", ci_method, CI_METHODS)
    check_int("ci_min_prompts", ci_min_prompts, 1)


def analyze(
    rewards_pkmr,
    w,
    score_seed: int = 0,
    *,
    tau2: float | None = None,
    scores=None,
    realized_estimator: str = "auto",
    modes: Sequence[str] = ("na", "an"),
    conditioning=None,
    eps: float = 1e-8,
    C=None,
    n_resamples: int = 2000,
    confidence_level: float = 0.95,
    ci_method: str = "two_level",
    ci_min_prompts: int = DEFAULT_CI_MIN_PROMPTS,
    population_offdiag: str = "resample",
    n_partitions: int = DEFAULT_N_PARTITIONS,
    constant_share_warn: float = DEFAULT_CONSTANT_SHARE_WARN,
    chunk_bytes: int = _DEFAULT_CHUNK_BYTES,
    progress: Callable[[int, int], None] | None = None,
) -> Thm3Result:
    """Check Theorem 3 on a rollout tensor.

    Parameters
    ----------
    rewards_pkmr : (P, K, m, R) array
        Rewards of ``P`` prompts x ``K`` seeds x ``m`` rollouts x ``R`` channels.
        Any real dtype; the analysis runs in float64.
    w : (R,) array
        Objective weights.
    score_seed : int
        Seed of the simulated scores, of the bootstrap and of the
        population law's resampling.
    tau2 : float or None
        Variance of the score projections ``g``. None (default): 1 for
        simulated scores; with ``scores`` given, estimated per prompt as the
        variance (ddof 1) of its ``K m`` scores (``tau2_per_prompt``).
    scores : (P, K, m) array, optional
        Your own score projections instead of simulated ``N(0, tau2)`` ones,
        e.g. real ones (:mod:`multireward_grpo.generation.scores`).
    realized_estimator : {"auto", "second_moment", "variance"}
        The realized MSE per prompt: ``"second_moment"`` ``mean_k ghat^2``
        (unbiased when the true mean of ``ghat`` is 0, as it is for
        simulated scores by construction); ``"variance"`` the variance of
        ``ghat`` across the ``K`` seeds with ddof 1 (unbiased whatever the
        mean: real scores that depend on the rewards give ``ghat`` a nonzero
        mean, the policy gradient itself, reported in ``ghat_mean``).
        ``"auto"``: ``"variance"`` when ``scores`` are given and ``tau2`` is
        None (real scores), else ``"second_moment"``.
    modes : sequence of str
        Estimators to analyse; ``"na"`` and ``"an"`` are always included.
        Batch-level estimators (``"gdpo"``) are refused.
    conditioning : optional
        Rules as in :func:`~multireward_grpo.advantage.apply_conditioning`,
        applied to the rewards first; the correlation and the predictions then
        describe the conditioned channels, the influence the raw ones.
    eps : float
        Added to group standard deviations, in reward units (as the
        estimators do): a channel whose group spread is far below ``eps``
        gets ``z ~ 0`` there, though it is not counted as constant.
    C : (R, R) array, optional
        Population correlation, to report ``(tau2/m) w'Cw`` and its Fisher
        correction next to the realized values.
    n_resamples : int
        Bootstrap resamples for the pooled-ratio intervals; 0 skips them.
    confidence_level : float
        Level of the bootstrap intervals.
    ci_method : {"two_level", "prompts"}
        ``"two_level"`` (default): resample prompts, then seeds within each
        resampled prompt, from variance-component adjusted values so the
        seed noise is not counted twice
        (:func:`~multireward_grpo.analysis._stats.two_level_ratio_ci`). It
        has positive width at ``P = 1``, where it speaks for that one prompt.
        Measured coverage of the nominal 95% interval where the law holds
        (Gaussian channels, m = 4, 400 replications): 0.95-0.96 at P = 20,
        K = 40; 0.93-0.94 at P = 3, K = 40; at P = 1 it under-covers with few
        seeds (0.87 at K = 20, 0.92 at K = 100, 0.94 at K = 200), as a
        percentile bootstrap of a mean of ``K`` skewed (chi-square-like)
        values does.
        ``"prompts"``: resample prompts only (each prompt's seeds stay
        together); right for many prompts, too narrow for few (coverage
        0.74 at P = 3, 0.82 at P = 5, 0.90 at P = 10 to 20).
    ci_min_prompts : int
        ``ci_method="prompts"`` needs at least this many prompts (default
        :data:`DEFAULT_CI_MIN_PROMPTS` = 10); below it the intervals are
        ``(nan, nan)`` with a ``RuntimeWarning`` (and a line in ``notes``).
        Not used by ``"two_level"``.
    population_offdiag : {"resample", "gaussian", "fisher"}
        How the population law gets the off-diagonal ``E_m[Chat]`` (see
        :mod:`multireward_grpo.analysis.population`); its diagonal is always
        the exact expectation including constant groups.
    n_partitions : int
        Random partitions per prompt for ``population_offdiag="resample"``.
    constant_share_warn : float
        Warn (``RuntimeWarning`` and a line in ``notes``) when a channel is
        constant in more than this share of the groups (default
        :data:`DEFAULT_CONSTANT_SHARE_WARN` = 0.5): its ``z`` is then mostly
        0 and NA's law speaks about little data.
    chunk_bytes : int
        Work is done on slices of prompts of about this many bytes.
    progress : callable(done, total), optional
        Called after each chunk of prompts.

    Returns
    -------
    Thm3Result

    Raises
    ------
    ValueError
        On malformed input, and when a reported statistic is not finite in
        float64 (e.g. an MSE beyond ~1e308 from huge weights or scores),
        naming the mode or channel.
    """
    rewards, w, scores, C, modes = _validate(rewards_pkmr, w, tau2, scores, C, modes)
    rules = parse_conditioning(conditioning)
    for rule in rules:
        rule.check_channels(rewards.shape[-1])
    _check_interval_options(n_resamples, confidence_level, ci_method, ci_min_prompts)
    check_choice("realized_estimator", realized_estimator, REALIZED_ESTIMATORS)
    check_choice("population_offdiag", population_offdiag, ("resample", "gaussian", "fisher"))
    check_int("n_partitions", n_partitions, 1)
    check_float("constant_share_warn", constant_share_warn, minimum=0.0, maximum=1.0)
    options = EstimatorOptions(eps=eps)  # validates eps the way the estimators do
    P, K, m, R = rewards.shape
    tau2_p = _tau2_per_prompt(tau2, scores, P)
    if realized_estimator == "auto":
        realized_estimator = "variance" if scores is not None and tau2 is None else "second_moment"
    score_rng, boot_rng, pop_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(score_seed).spawn(3))
    population = {"offdiag": population_offdiag, "n_partitions": n_partitions, "rng": pop_rng}
    sums = _accumulate(rewards, w, scores, rules, modes, options=options, tau2=tau2_p, score_rng=score_rng,
                       population=population, chunk_bytes=chunk_bytes, progress=progress)
    cells = {mode: _realized_cells(sums["ghat"][mode], realized_estimator) for mode in modes}
    realized = {mode: cells[mode].mean(axis=1) for mode in modes}
    predicted = {mode: sums["predicted"][mode].mean(axis=1) for mode in modes}
    _require_finite_mse(realized, predicted)
    C_prompt = sums["sum_C_prompt"] / K
    pooled_C = C_prompt.mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_per_prompt = {mode: realized[mode] / predicted[mode] for mode in modes}
    interval_options = dict(method=ci_method, n_resamples=n_resamples, confidence_level=confidence_level,
                            min_prompts=ci_min_prompts, rng=boot_rng)
    ratio_ci, notes = _ratio_intervals(cells, sums["predicted"], **interval_options)
    law = _population_summary(cells, sums["population"], K, interval_options)
    notes = notes + _degenerate_notes(sums, P * K, constant_share_warn)
    return Thm3Result(
        m=m,
        P=P,
        K=K,
        w=w.copy(),
        realized_an=realized["an"],
        realized_na=realized["na"],
        predicted_per_prompt=tau2_p / m * np.einsum("i,pij,j->p", w, C_prompt, w),
        predicted_pooled=float(np.mean(tau2_p) / m * w @ pooled_C @ w),
        influence_an=sums["influence"]["an"] / (P * K),
        influence_na=sums["influence"]["na"] / (P * K),
        pooled_C=pooled_C,
        tau2=float(np.mean(tau2_p)),
        modes=modes,
        realized=realized,
        predicted=predicted,
        influence={mode: sums["influence"][mode] / (P * K) for mode in modes},
        ratio_per_prompt=ratio_per_prompt,
        ratio_pooled={mode: _safe_ratio(realized[mode].sum(), predicted[mode].sum()) for mode in modes},
        ratio_ci=ratio_ci,
        confidence_level=confidence_level,
        ci_method=ci_method,
        notes=notes,
        an_law=float(np.mean(tau2_p)) / m,
        degenerate_groups=sums["degenerate"],
        conditioning=rules,
        population_C=C,
        **_population_predictions(C, w, m, float(np.mean(tau2_p))),
        an_constant_groups=int(sums["an_constant"].sum()),
        an_law_constant_adjusted=float(np.mean(tau2_p / m * (1.0 - sums["an_constant"] / K))),
        score_source="simulated" if scores is None else "given",
        realized_estimator=realized_estimator,
        tau2_per_prompt=tau2_p.copy(),
        ghat_mean={mode: sums["ghat"][mode].mean(axis=1) for mode in modes},
        ghat_mean_pooled={mode: _pooled_mean(sums["ghat"][mode]) for mode in modes},
        score_reward_correlation=None if scores is None else score_reward_correlation(scores, rewards),
        **law,
    )


REALIZED_ESTIMATORS = ("auto", "second_moment", "variance")
"""Estimators of the realized MSE: see :func:`analyze`."""


def _tau2_per_prompt(tau2, scores, P: int) -> np.ndarray:
    """(P,) score variances: ``tau2`` itself, 1 by default, or each prompt's ddof-1 variance of its scores."""
    if tau2 is not None:
        return np.full(P, float(tau2))
    if scores is None:
        return np.ones(P)
    var = scores.reshape(P, -1).var(axis=1, ddof=1)
    if not np.all(var > 0):
        bad = int(np.flatnonzero(~(var > 0))[0])
        raise ValueError(f"the scores of prompt {bad} are all equal, so their variance tau2 is 0; "
                         "pass tau2= or check the score projections")
    return var


def _realized_cells(ghat: np.ndarray, estimator: str) -> np.ndarray:
    """(P, K) values whose mean over seeds is the realized MSE: ``ghat^2`` or ddof-1 squared deviations."""
    with np.errstate(over="ignore", invalid="ignore"):
        if estimator == "variance":
            K = ghat.shape[1]
            return (ghat - ghat.mean(axis=1, keepdims=True)) ** 2 * (K / (K - 1.0))
        return ghat**2


def _pooled_mean(ghat: np.ndarray) -> tuple[float, float]:
    """``(mean, standard error)`` of ``ghat`` over all groups; the SE from the spread across prompts' seeds."""
    P, K = ghat.shape
    within = ghat.var(axis=1, ddof=1).mean() / (P * K)  # seeds are the replicates; prompts may differ in mean
    return float(ghat.mean()), float(np.sqrt(within))


def score_reward_correlation(scores, rewards) -> np.ndarray:
    """Pooled within-prompt correlation of the scores with each reward channel.

    Parameters
    ----------
    scores : (P, K, m) array
    rewards : (P, K, m, R) array

    Returns
    -------
    (R,) array
        ``sum (g - gbar_p)(r - rbar_p) / sqrt(sum (g - gbar_p)^2 sum (r - rbar_p)^2)``
        over all rollouts, centring by each prompt's mean; NaN for a channel
        constant within every prompt. Theorem 3 assumes 0; with ``N``
        rollouts and ``P`` prompts its standard error under independence is
        about ``1 / sqrt(N - P)``.
    """
    P = rewards.shape[0]
    R = rewards.shape[-1]
    g = np.asarray(scores, dtype=np.float64).reshape(P, -1)
    r = np.asarray(rewards, dtype=np.float64).reshape(P, -1, R)
    g = g - g.mean(axis=1, keepdims=True)
    r = r - r.mean(axis=1, keepdims=True)
    cov = np.einsum("pn,pnr->r", g, r)
    scale = np.sqrt(np.sum(g**2) * np.sum(r**2, axis=(0, 1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, cov / scale, np.nan)


def _population_summary(cells: dict, population: dict, K: int, interval_options: dict) -> dict:
    """Thm3Result fields of the population law: per-prompt laws, ratios and their intervals."""
    laws = {"na": population["na"], "an": population["an"]}
    no_correction = population["na_no_correction"]
    out = {"population_law": laws, "population_law_no_correction": no_correction,
           "population_expected_C": population["expected_C"] / len(population["na"]),
           "population_offdiag": population["offdiag"]}
    dens = {mode: np.repeat(law[:, None], K, axis=1) for mode, law in laws.items()}
    dens["na_no_correction"] = np.repeat(no_correction[:, None], K, axis=1)
    nums = {"na": cells["na"], "an": cells["an"], "na_no_correction": cells["na"]}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["population_ratio_per_prompt"] = {mode: nums[mode].mean(1) / dens[mode][:, 0] for mode in nums}
    out["population_ratio_pooled"] = {mode: _safe_ratio(nums[mode].sum(), dens[mode].sum()) for mode in nums}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the conditional intervals already warned
        out["population_ratio_ci"] = _ratio_intervals(nums, dens, **interval_options)[0]
    return out


def _degenerate_notes(sums: dict, n_groups: int, share_warn: float) -> tuple:
    """Warnings about channels constant in most groups and groups where AN's scalar is constant."""
    notes = []
    shares = sums["degenerate"] / n_groups
    for channel in np.flatnonzero(shares > share_warn):
        notes.append(f"channel {channel} is constant in {shares[channel]:.0%} of the groups (over "
                     f"constant_share_warn={share_warn:g}): its z is 0 there, so NA's law rests on few groups; "
                     "a channel gated by another (e.g. length zeroed for wrong answers) or a weak model does this")
    an_constant = int(sums["an_constant"].sum())
    if an_constant:
        notes.append(f"AN's scalar w.r is constant in {an_constant} of {n_groups} groups (all AN advantages 0 "
                     "there): AN's MSE is (tau2/m) x the share of the other groups, not tau2/m")
    for note in notes[: len(notes) - (1 if an_constant else 0)]:
        warnings.warn(note, RuntimeWarning, stacklevel=3)
    return tuple(notes)


def _accumulate(rewards, w, scores, rules, modes, *, options, tau2, score_rng, population, chunk_bytes,
                progress) -> dict:
    """Per-group ``ghat`` and predictions, the population law and the sums over groups, chunk by chunk.

    Returns a dict: ``ghat`` and ``predicted`` (mode -> (P, K)),
    ``influence`` (mode -> (R,) sum over groups), ``sum_C_prompt`` (P, R, R),
    ``degenerate`` (R,) int, ``an_constant`` (P,) int and ``population``
    (the per-prompt laws of :func:`~multireward_grpo.analysis.population.population_law`).
    """
    P, K, m, R = rewards.shape
    out = {
        "ghat": {mode: np.zeros((P, K)) for mode in modes},
        "predicted": {mode: np.zeros((P, K)) for mode in modes},
        "influence": {mode: np.zeros(R) for mode in modes},
        "sum_C_prompt": np.zeros((P, R, R)),
        "degenerate": np.zeros(R, dtype=np.int64),
        "an_constant": np.zeros(P, dtype=np.int64),
        "population": {"na": np.zeros(P), "an": np.zeros(P), "na_no_correction": np.zeros(P),
                       "expected_C": np.zeros((R, R)), "offdiag": population["offdiag"]},
    }
    for start, stop in _chunks(P, K * m * R * 8 * 6, chunk_bytes):
        raw = rewards[start:stop].reshape(-1, m, R)  # (G, m, R)
        block = _require_finite_channels(apply_conditioning(raw, rules)) if rules else raw
        g = (
            scores[start:stop].reshape(-1, m)
            if scores is not None
            else np.sqrt(np.repeat(tau2[start:stop], K))[:, None] * score_rng.standard_normal(((stop - start) * K, m))
        )  # (G, m)
        tau2_g = np.repeat(tau2[start:stop], K)  # (G,)
        z, constant = _standardize_finding_constant(block, options)  # (G, m, R), what the estimators see
        # Influence (Prop 1) is measured against the objective's own channels.
        z_raw = _standardize(raw, None, options) if rules else z
        Chat = np.matmul(z.transpose(0, 2, 1), z) / m  # (G, R, R); matmul is ~4x faster than einsum here
        out["sum_C_prompt"][start:stop] = Chat.reshape(stop - start, K, R, R).sum(1)
        out["degenerate"] += constant.sum(axis=0)
        for mode in modes:
            adv = _advantages(mode, block, z, w, options)  # (G, m)
            if mode == "an":
                out["an_constant"][start:stop] = np.all(adv == 0, axis=1).reshape(-1, K).sum(axis=1)
            # An MSE beyond float64 (huge w or scores) becomes inf here and is reported by _require_finite_mse.
            with np.errstate(over="ignore", invalid="ignore"):
                out["ghat"][mode][start:stop] = (np.einsum("gm,gm->g", adv, g) / m).reshape(-1, K)
                out["predicted"][mode][start:stop] = (
                    tau2_g / m * np.einsum("gm,gm->g", adv, adv) / m).reshape(-1, K)
                out["influence"][mode] += np.tensordot(adv, z_raw, axes=([0, 1], [0, 1])) / m
        _add_population(out["population"], block.reshape(stop - start, K, m, R), w, tau2[start:stop],
                        slice(start, stop), population, options.eps)
        if progress is not None:
            progress(stop, P)
    return out


def _add_population(acc: dict, block: np.ndarray, w: np.ndarray, tau2: np.ndarray, rows: slice, settings: dict,
                    eps: float) -> None:
    law = population_law(block, w, tau2=tau2, offdiag=settings["offdiag"], n_partitions=settings["n_partitions"],
                         rng=settings["rng"], eps=eps)
    for key in ("na", "an", "na_no_correction"):
        acc[key][rows] = law[key]
    acc["expected_C"] += law["expected_C"].sum(axis=0)


def _advantages(mode: str, block: np.ndarray, z: np.ndarray, w: np.ndarray, options: EstimatorOptions) -> np.ndarray:
    """(G, m) advantages of ``mode``; the built-in ones straight from the estimator layer."""
    if mode == "na":
        return z @ w  # NA's advantages are z @ w: reuse z instead of standardizing again
    if mode == "single":
        return z[..., 0].copy()
    if mode == "an":
        # The registered estimator itself, without compute_advantage_batch's checks: block and w are checked.
        return get_estimator("an")(block, w, mask=None, options=options)
    with np.errstate(over="ignore", invalid="ignore"):
        adv = np.asarray(compute_advantage_batch(block, w, mode, eps=options.eps), dtype=np.float64)
    if not np.all(np.isfinite(adv)):
        raise ValueError(
            f"estimator {mode!r} returned non-finite advantages on these rewards; check that it handles "
            "their scale, or rescale the rewards"
        )
    return adv


def _require_finite_channels(x: np.ndarray) -> np.ndarray:
    """``x`` (G, m, R) itself; ValueError naming the first channel that holds a non-finite value."""
    if np.all(np.isfinite(x)):
        return x
    channel = int(np.flatnonzero(~np.all(np.isfinite(x), axis=(0, 1)))[0])
    group = int(np.flatnonzero(~np.all(np.isfinite(x[:, :, channel]), axis=1))[0])
    raise ValueError(
        f"channel {channel} holds non-finite values (group {group}: {x[group, :, channel].tolist()}), so its "
        "within-group statistics are not finite; drop or re-score those rollouts"
    )


def _require_finite_mse(realized: dict, predicted: dict) -> None:
    for mode in realized:
        for name, values in (("realized", realized[mode]), ("predicted", predicted[mode])):
            if not np.all(np.isfinite(values)):
                raise ValueError(
                    f"the {name} MSE of mode {mode!r} is not finite in float64 (it exceeds ~1e308): the scores "
                    "or the weights are too large. Rescale w or the scores (and tau2); the ratios do not change"
                )


def _ratio_intervals(ghat_sq, predicted, *, method, n_resamples, confidence_level, min_prompts, rng):
    """mode -> (low, high) bootstrap interval of the pooled ratio, and notes on them."""
    P = next(iter(ghat_sq.values())).shape[0]
    if method == "prompts" and n_resamples > 0 and P < min_prompts:
        note = (
            f"ratio intervals left out: ci_method='prompts' needs >= {min_prompts} prompts (ci_min_prompts) and "
            f"there are {P}; use ci_method='two_level', which also resamples seeds"
        )
        warnings.warn(note, RuntimeWarning, stacklevel=3)
        return {mode: (float("nan"), float("nan")) for mode in ghat_sq}, (note,)
    options = {"n_resamples": n_resamples, "confidence_level": confidence_level, "rng": rng}
    if method == "prompts":
        return {
            mode: bootstrap_ratio_ci(ghat_sq[mode].mean(1), predicted[mode].mean(1), **options) for mode in ghat_sq
        }, ()
    return {mode: two_level_ratio_ci(ghat_sq[mode], predicted[mode], **options) for mode in ghat_sq}, ()


def _population_predictions(C, w, m, tau2) -> dict:
    keys = {"none": "predicted_population", "fisher": "predicted_population_fisher", "exact": "predicted_population_exact"}
    if C is None:
        return {key: None for key in keys.values()}
    return {key: predicted_mse_population(C, w, m, tau2=tau2, correction=c) for c, key in keys.items()}


def _safe_ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")
