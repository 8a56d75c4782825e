"""Theorem 3's population law: a prediction of the gradient MSE that can disagree with the data.

The conditional prediction of :func:`~multireward_grpo.analysis.thm3.analyze`
(``(tau2/m) mean_k (1/m) sum_j A_j^2``) is the expectation of the realized
MSE given the very rewards it is computed from, so realized / conditional is
~1 for *any* reward tensor when the scores are simulated: it checks the
score model, not the law. The law itself says that the NA MSE at group size
``m`` is ``(tau2/m) w' E_m[Chat] w``, with ``E_m[Chat]`` the expected
within-group correlation of ``m`` rollouts drawn from the prompt's rollout
distribution, a function of the population correlation ``C_p`` and the
marginals. This module predicts it per prompt from all ``K m`` rollouts of
the prompt:

Diagonal (every marginal, exact). ``Chat_ll`` is 1 in a group where channel
``l`` varies and 0 where it is constant, so ``E_m[Chat_ll] = 1 - P(constant)``
with ``P(constant) = sum_v q_v^m`` over the channel's levels ``v`` (a 0/1
channel with pass rate ``p``: ``1 - p^m - (1-p)^m``). It is estimated by the
U-statistic ``sum_v n_v (n_v - 1) ... (n_v - m + 1) / (N (N-1) ... (N-m+1))``
(``n_v`` rollouts at level ``v`` among ``N = K m``), the share of all
``m``-subsets of the prompt's rollouts that are constant: unbiased for
``sum_v q_v^m`` (:func:`constant_group_probability`).

Off-diagonal, by ``offdiag``:

``"resample"`` (default, any marginals)
    The prompt's ``N`` rollouts are split at random into ``K`` groups of
    ``m`` (``n_partitions`` times) and their ``Chat`` averaged. Each group is
    a uniformly random ``m``-subset, so this is an unbiased (incomplete)
    U-statistic of ``E_m[Chat_lk]`` for iid rollouts, whatever the levels;
    constant groups count as 0, as in the estimator.
``"gaussian"``
    Hotelling's exact ``E[r]`` for bivariate normal channels applied to
    ``C_p`` (:func:`~multireward_grpo.analysis.thm3.expected_sample_correlation`).
``"fisher"``
    Fisher's ``C - C (1 - C^2) / (2m)``.
``"none"``
    ``C_p`` itself, and a diagonal of 1 (0 for a channel constant in the
    whole prompt): the ``m -> inf`` law without the finite-``m`` correction,
    which the harness reports so that a wrong law can be seen to fail.

AN: its advantages have unit sample variance except in groups where the
scalar ``w . r`` is constant (all advantages 0), so its law is
``(tau2/m) (1 - P(w . r constant))``, with the same U-statistic.

What the ratio realized / population-law tests: that the groups are iid
draws of the prompt's rollout distribution, that the scores are independent
of the rewards with variance ``tau2``, and (with ``"gaussian"``/``"fisher"``)
the Gaussian finite-``m`` expectation. ``C_p`` and the U-statistics are
estimated from the same rollouts; their sampling error (``O(1/(K m))``) is
not in the bootstrap interval, which resamples the realized values only.
"""

from __future__ import annotations

import numpy as np

from multireward_grpo._validate import check_choice, check_int
from multireward_grpo.advantage import EstimatorOptions, _standardize_finding_constant

__all__ = [
    "DEFAULT_N_PARTITIONS",
    "OFFDIAG_METHODS",
    "constant_group_probability",
    "expected_group_correlation",
    "population_law",
    "prompt_correlation",
]

OFFDIAG_METHODS = ("resample", "gaussian", "fisher", "none")
"""How :func:`expected_group_correlation` gets the off-diagonal ``E_m[Chat_lk]``."""

DEFAULT_N_PARTITIONS = 4
"""Random partitions of each prompt's rollouts for ``offdiag="resample"``: 4
partitions of ``K`` groups give ``4 K`` groups per prompt. ``w' Chat w`` varies
far less across groups than ``ghat^2`` (a chi-square-like value with relative
variance ~2), so the resampled law's sampling error is well below that of the
realized MSE (``K`` groups); each partition costs about one pass of the
analysis."""


def constant_group_probability(values, m: int) -> np.ndarray:
    """U-statistic of ``P(a group of m is constant)``: the share of constant ``m``-subsets.

    Parameters
    ----------
    values : (..., N) array
        ``N`` iid values (rollouts of one prompt) per leading index.
    m : int
        Group size, ``2 <= m <= N``.

    Returns
    -------
    (...) array
        ``sum_v n_v (n_v - 1) ... (n_v - m + 1) / (N (N-1) ... (N-m+1))`` over
        the distinct values ``v`` (``n_v`` of them): unbiased for
        ``sum_v q_v^m`` when the values are iid with level probabilities
        ``q_v``. Exact ties only: continuous values give 0.
    """
    values = np.asarray(values, dtype=np.float64)
    N = values.shape[-1]
    m = check_int("m", m, 2)
    if m > N:
        raise ValueError(f"m={m} is larger than the {N} values given")
    flat = np.sort(values.reshape(-1, N), axis=1)
    out = np.zeros(flat.shape[0])
    # only rows holding a run of >= m equal values contribute (none for continuous values)
    candidates = np.flatnonzero(np.any(flat[:, m - 1:] == flat[:, : N - m + 1], axis=1))
    if candidates.size:
        out[candidates] = _tied_share(flat[candidates], m)
    return out.reshape(values.shape[:-1])


def _tied_share(flat: np.ndarray, m: int) -> np.ndarray:
    """``sum over runs of n (n-1) ... (n-m+1) / (N (N-1) ... (N-m+1))`` per sorted row of ``flat`` (rows, N)."""
    rows, N = flat.shape
    starts = np.ones_like(flat, dtype=bool)  # a run starts at column 0 or where the value changes
    starts[:, 1:] = flat[:, 1:] != flat[:, :-1]
    row_of_start, col_of_start = np.nonzero(starts)
    ends = np.append(col_of_start[1:], N)
    ends[np.append(row_of_start[1:] != row_of_start[:-1], True)] = N  # a row's last run ends at N
    counts = (ends - col_of_start).astype(np.float64)
    tied = counts >= m
    steps = np.arange(m)
    terms = np.prod((counts[tied, None] - steps) / (N - steps), axis=1)
    out = np.zeros(rows)
    np.add.at(out, row_of_start[tied], terms)
    return out


def prompt_correlation(rollouts, *, eps: float = 1e-8) -> np.ndarray:
    """Correlation of the channels over all of a prompt's rollouts (ddof 0).

    Parameters
    ----------
    rollouts : (P, N, R) array
        ``N`` rollouts per prompt.
    eps : float
        As in the estimators' z-scores.

    Returns
    -------
    (P, R, R) array
        ``C_p``; a channel constant over the prompt's ``N`` rollouts has a 0
        row, column and diagonal entry.
    """
    rollouts = np.asarray(rollouts, dtype=np.float64)
    z, _ = _standardize_finding_constant(rollouts, EstimatorOptions(eps=eps))
    return np.matmul(z.transpose(0, 2, 1), z) / rollouts.shape[1]


def _closed_form_offdiag(C: np.ndarray, m: int, method: str) -> np.ndarray:
    """``E_m[Chat]`` from ``C`` (P, R, R) elementwise, by Hotelling's exact Gaussian expectation or Fisher's.

    Hotelling: ``E[r] = rho G 2F1(1/2, 1/2; (m+1)/2; rho^2)`` with
    ``G = Gamma(m/2)^2 / (Gamma((m-1)/2) Gamma((m+1)/2))`` (as
    :func:`~multireward_grpo.analysis.thm3.expected_sample_correlation`, here for
    all prompts at once). Rows of a channel constant over the prompt stay 0.
    """
    from scipy.special import gammaln, hyp2f1

    rho = np.clip((C + C.transpose(0, 2, 1)) / 2.0, -1.0, 1.0)
    if method == "fisher":
        return rho - rho * (1.0 - rho**2) / (2.0 * m)
    G = np.exp(2 * gammaln(m / 2) - gammaln((m - 1) / 2) - gammaln((m + 1) / 2))
    interior = np.abs(rho) < 1.0 - 1e-12  # |rho| = 1 gives r = rho exactly
    out = rho.copy()
    out[interior] = rho[interior] * G * hyp2f1(0.5, 0.5, (m + 1) / 2, rho[interior] ** 2)
    return out


def _resampled(rollouts: np.ndarray, m: int, n_partitions: int, rng: np.random.Generator, eps: float) -> np.ndarray:
    """Mean ``Chat`` over random partitions of each prompt's rollouts into groups of ``m``: (P, R, R)."""
    P, N, R = rollouts.shape
    options = EstimatorOptions(eps=eps)
    total = np.zeros((P, R, R))
    for _ in range(n_partitions):
        order = rng.permuted(np.broadcast_to(np.arange(N), (P, N)), axis=1)
        groups = np.take_along_axis(rollouts, order[:, :, None], axis=1).reshape(P * (N // m), m, R)
        z, _ = _standardize_finding_constant(groups, options)
        Chat = np.matmul(z.transpose(0, 2, 1), z) / m
        total += Chat.reshape(P, N // m, R, R).mean(axis=1)
    return total / n_partitions


def expected_group_correlation(rollouts, m: int, *, offdiag: str = "resample",
                               n_partitions: int = DEFAULT_N_PARTITIONS,
                               rng: np.random.Generator | int | None = None, eps: float = 1e-8) -> np.ndarray:
    """``E_m[Chat]`` per prompt: the expected within-group correlation at group size ``m``.

    Parameters
    ----------
    rollouts : (P, N, R) array
        All rollouts of each prompt (``N`` a multiple of ``m``, e.g. ``K m``).
    m : int
        Group size.
    offdiag : {"resample", "gaussian", "fisher", "none"}
        See the module docstring. ``"none"`` also drops the diagonal's
        finite-``m`` correction (the ``m -> inf`` law).
    n_partitions : int
        Random partitions for ``"resample"``.
    rng : Generator or int seed
        For ``"resample"``.
    eps : float
        As in the estimators' z-scores.

    Returns
    -------
    (P, R, R) array
    """
    rollouts = np.asarray(rollouts, dtype=np.float64)
    if rollouts.ndim != 3:
        raise ValueError(f"rollouts must be (P, N, R); got shape {rollouts.shape}")
    P, N, R = rollouts.shape
    m = check_int("m", m, 2)
    if N % m:
        raise ValueError(f"the {N} rollouts per prompt do not split into groups of m={m}")
    check_choice("offdiag", offdiag, OFFDIAG_METHODS)
    check_int("n_partitions", n_partitions, 1)
    return _expected(rollouts, m, prompt_correlation(rollouts, eps=eps), offdiag, n_partitions, rng, eps)


def _expected(rollouts, m, C, offdiag, n_partitions, rng, eps) -> np.ndarray:
    """:func:`expected_group_correlation` from checked inputs and the prompts' correlation ``C`` (P, R, R)."""
    R = rollouts.shape[-1]
    if offdiag == "none":
        return C
    if offdiag == "resample":
        expected = _resampled(rollouts, m, n_partitions, np.random.default_rng(rng), eps)
    else:
        expected = _closed_form_offdiag(C, m, offdiag)
    diagonal = 1.0 - constant_group_probability(rollouts.transpose(0, 2, 1), m)  # (P, R)
    idx = np.arange(R)
    expected[:, idx, idx] = diagonal
    return expected


def population_law(rewards_pkmr, w, *, tau2, offdiag: str = "resample", n_partitions: int = DEFAULT_N_PARTITIONS,
                   rng: np.random.Generator | int | None = None, eps: float = 1e-8) -> dict:
    """Per-prompt population-law predictions of the NA and AN gradient MSE.

    Parameters
    ----------
    rewards_pkmr : (P, K, m, R) array
        Rewards (after any conditioning).
    w : (R,) array
        Objective weights.
    tau2 : float or (P,) array
        Score variance (per prompt when estimated from real scores).
    offdiag, n_partitions, rng, eps
        See :func:`expected_group_correlation`.

    Returns
    -------
    dict
        ``"na"``: (P,) ``(tau2/m) w' E_m[Chat] w``; ``"an"``: (P,)
        ``(tau2/m) (1 - P(w . r constant))``; ``"na_no_correction"``: (P,)
        ``(tau2/m) w' C_p w``; ``"expected_C"`` and ``"prompt_C"``: (P, R, R).
    """
    rewards = np.asarray(rewards_pkmr, dtype=np.float64)
    P, K, m, R = rewards.shape
    w = np.asarray(w, dtype=np.float64)
    tau2 = np.broadcast_to(np.asarray(tau2, dtype=np.float64), (P,))
    rollouts = rewards.reshape(P, K * m, R)
    check_choice("offdiag", offdiag, OFFDIAG_METHODS)
    check_int("n_partitions", n_partitions, 1)
    C = prompt_correlation(rollouts, eps=eps)
    expected = _expected(rollouts, m, C, offdiag, n_partitions, rng, eps)
    # Scaling by a power of two is exact, so ties of w . r survive it and w . r stays finite at any reward scale.
    top = np.max(np.abs(rollouts))
    scale = 2.0 ** -np.frexp(top)[1] if top > 0 else 1.0
    an_constant = constant_group_probability((rollouts * scale) @ (w / np.max(w)), m)
    return {
        "na": tau2 / m * np.einsum("i,pij,j->p", w, expected, w),
        "an": tau2 / m * (1.0 - an_constant),
        "na_no_correction": tau2 / m * np.einsum("i,pij,j->p", w, C, w),
        "expected_C": expected,
        "prompt_C": C,
    }
