"""A synthetic rollout backend: R correlated reward channels, no model.

``MockBackend`` draws each group of ``m`` rollouts from a Gaussian copula:

1. a latent ``z_j ~ N(delta_p, C)`` per rollout ``j`` (``C`` the requested
   ``(R, R)`` correlation matrix, ``delta_p`` the prompt's difficulty shift);
2. each channel ``l`` maps its latent through a *non-decreasing* function
   ``x_jl = F_l^{-1}(Phi(z_jl))`` (the marginal's quantile function).

Because every map is non-decreasing, a positive requested correlation gives a
positive realized correlation for every marginal kind. (Thresholding
``Phi(z) < p`` for a Bernoulli is *decreasing* in ``z`` and silently flips the
sign; the Bernoulli here is ``1[z > Phi^{-1}(1 - p)]``.) Gaussian marginals
realize ``C`` exactly; discrete and bounded marginals attenuate it towards 0
(e.g. Bernoulli(p) vs Gaussian: ``rho * phi(t) / sqrt(p (1 - p))``).

Seeding is process-independent: the rollouts of ``(prompt, seed_idx)`` come
from ``np.random.SeedSequence`` keyed by ``(seed, BLAKE2b(prompt), seed_idx)``,
never from Python's salted ``hash()``. The stream does not depend on ``m``,
so a group of size ``m`` is exactly the first ``m`` rollouts of a larger group
with the same ``(prompt, seed_idx)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from statistics import NormalDist

import numpy as np

from multireward_grpo._matrices import validate_correlation
from multireward_grpo._seeding import make_rng
from multireward_grpo._validate import check_int

_STD_NORMAL = NormalDist()


def _special():
    # scipy.special costs ~0.4 s to import; only the Beta and Uniform marginals need it.
    from scipy import special

    return special

__all__ = ["Bernoulli", "Beta", "Gaussian", "Marginal", "MockBackend", "Uniform"]

# Gauss-Hermite nodes for the mean of a smooth marginal under a latent shift.
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(64)
_GH_W = _GH_W / _GH_W.sum()


def _check_finite(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


@dataclass(frozen=True)
class Bernoulli:
    """A 0/1 channel (e.g. correctness) passing with probability ``rate``.

    Realized as ``1[z > Phi^{-1}(1 - rate)]``, non-decreasing in the latent.
    """

    rate: float = 0.5

    def __post_init__(self):
        rate = _check_finite("Bernoulli.rate", self.rate)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"Bernoulli.rate must lie in [0, 1], got {rate}")
        object.__setattr__(self, "rate", rate)

    def from_latent(self, z: np.ndarray) -> np.ndarray:
        """Map standard-normal latents ``z`` (any shape) to rewards."""
        return (z > self._threshold()).astype(np.float64)

    def _threshold(self) -> float:
        """Latent cut ``Phi^{-1}(1 - rate)`` (+-inf at rates 0 and 1)."""
        if self.rate in (0.0, 1.0):
            return np.inf if self.rate == 0.0 else -np.inf
        return -_STD_NORMAL.inv_cdf(self.rate)

    def mean_at(self, shift: float) -> float:
        """Expected reward when the latent is ``N(shift, 1)``."""
        return float(_STD_NORMAL.cdf(shift - self._threshold())) if np.isfinite(self._threshold()) else float(self.rate)


@dataclass(frozen=True)
class Gaussian:
    """A real-valued channel ``mean + std * z``; realizes ``C`` exactly."""

    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self):
        _check_finite("Gaussian.mean", self.mean)
        std = _check_finite("Gaussian.std", self.std)
        if std < 0:
            raise ValueError(f"Gaussian.std must be >= 0, got {std}")
        object.__setattr__(self, "mean", float(self.mean))
        object.__setattr__(self, "std", std)

    def from_latent(self, z: np.ndarray) -> np.ndarray:
        """Map standard-normal latents ``z`` (any shape) to rewards."""
        return self.mean + self.std * np.asarray(z, dtype=np.float64)

    def mean_at(self, shift: float) -> float:
        """Expected reward when the latent is ``N(shift, 1)``."""
        return self.mean + self.std * float(shift)


def _check_interval(kind: str, lo: float, hi: float) -> tuple[float, float]:
    lo = _check_finite(f"{kind}.lo", lo)
    hi = _check_finite(f"{kind}.hi", hi)
    if not lo < hi:
        raise ValueError(f"{kind} needs lo < hi, got lo={lo}, hi={hi}")
    return lo, hi


@dataclass(frozen=True)
class Beta:
    """A bounded continuous channel: ``lo + (hi - lo) * Beta(a, b)``.

    ``Beta(2, 2)`` on ``[0, 1]`` (the default) resembles a judge's 0-1 score.
    """

    a: float = 2.0
    b: float = 2.0
    lo: float = 0.0
    hi: float = 1.0

    def __post_init__(self):
        for name in ("a", "b"):
            value = _check_finite(f"Beta.{name}", getattr(self, name))
            if value <= 0:
                raise ValueError(f"Beta.{name} must be > 0, got {value}")
            object.__setattr__(self, name, value)
        lo, hi = _check_interval("Beta", self.lo, self.hi)
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    def from_latent(self, z: np.ndarray) -> np.ndarray:
        """Map standard-normal latents ``z`` (any shape) to rewards."""
        special = _special()
        unit = special.betaincinv(self.a, self.b, special.ndtr(z))
        return self.lo + (self.hi - self.lo) * unit

    def mean_at(self, shift: float) -> float:
        """Expected reward when the latent is ``N(shift, 1)`` (quadrature)."""
        return float(np.dot(_GH_W, self.from_latent(_GH_X + shift)))


@dataclass(frozen=True)
class Uniform:
    """A bounded continuous channel, uniform on ``[lo, hi]``."""

    lo: float = 0.0
    hi: float = 1.0

    def __post_init__(self):
        lo, hi = _check_interval("Uniform", self.lo, self.hi)
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    def from_latent(self, z: np.ndarray) -> np.ndarray:
        """Map standard-normal latents ``z`` (any shape) to rewards."""
        return self.lo + (self.hi - self.lo) * _special().ndtr(z)

    def mean_at(self, shift: float) -> float:
        """Expected reward when the latent is ``N(shift, 1)``."""
        # Phi(z + s) with z ~ N(0, 1) has mean Phi(s / sqrt(2)).
        return self.lo + (self.hi - self.lo) * _STD_NORMAL.cdf(shift / np.sqrt(2.0))


Marginal = Bernoulli | Gaussian | Beta | Uniform
_MARGINAL_TYPES = (Bernoulli, Gaussian, Beta, Uniform)


def default_marginals(R: int, p: float = 0.5) -> tuple[Marginal, ...]:
    """Channel 0 ``Bernoulli(p)`` (correctness, the gate), the rest ``Beta(2, 2)``."""
    return (Bernoulli(p),) + tuple(Beta() for _ in range(R - 1))


def _factor(C: np.ndarray) -> np.ndarray:
    """``L`` with ``L @ L.T == C``; Cholesky, or eigen for singular ``C``."""
    try:
        return np.linalg.cholesky(C)
    except np.linalg.LinAlgError:  # PSD but singular (e.g. rho = 1)
        vals, vecs = np.linalg.eigh(C)
        return vecs * np.sqrt(np.clip(vals, 0.0, None))


def _check_marginals(marginals: Any) -> tuple[Marginal, ...]:
    if isinstance(marginals, _MARGINAL_TYPES):
        raise TypeError("marginals must be a sequence with one marginal per channel, e.g. [Bernoulli(0.5), Beta()]")
    marginals = tuple(marginals)
    if not marginals:
        raise ValueError("marginals is empty; give one marginal per reward channel")
    for i, marg in enumerate(marginals):
        if not isinstance(marg, _MARGINAL_TYPES):
            raise TypeError(
                f"marginals[{i}] is a {type(marg).__name__}; use Bernoulli, Gaussian, Beta or Uniform "
                "from multireward_grpo.generation.mock"
            )
    return marginals


def _check_difficulty(difficulty: Any, R: int) -> np.ndarray:
    d = np.array(difficulty, dtype=np.float64)
    if d.ndim == 0:
        d = np.full(R, float(d))
    if d.shape != (R,):
        raise ValueError(f"difficulty must be a float or a length-{R} array (one per channel), got shape {d.shape}")
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise ValueError(f"difficulty must be finite and >= 0 (a standard deviation), got {d.tolist()}")
    return d


class MockBackend:
    """Synthetic rollouts with ``R`` correlated reward channels.

    Parameters
    ----------
    C : (R, R) array, optional
        Latent correlation of the channels (Gaussian copula). Defaults to the
        identity. Must be symmetric with a unit diagonal and PSD.
    marginals : sequence of Bernoulli | Gaussian | Beta | Uniform, optional
        One marginal per channel. Default: channel 0 ``Bernoulli(p)`` (a
        correctness-like gate), channels 1.. ``Beta(2, 2)`` on ``[0, 1]``
        (judge-like scores). ``R`` is 3 when neither ``C`` nor ``marginals``
        is given.
    p : float, optional
        Pass rate of the default channel-0 Bernoulli (0.5 if omitted); only
        valid without ``marginals``.
    difficulty : float or (R,) array, default 0.0
        Standard deviation of a per-prompt latent shift ``delta_p ~ N(0,
        diag(d) C diag(d))``, drawn deterministically from the prompt and
        ``seed``. It moves a prompt's Bernoulli rate to
        ``Phi(delta + Phi^{-1}(rate))`` and a Gaussian mean to
        ``mean + std * delta``; 0 gives every prompt the stated marginals.
    seed : int, default 0
        Backend seed; with the prompt and the seed index it fixes every draw.
    channel_names : sequence of str, optional
        Defaults to ``("r0", "r1", ...)``.

    Examples
    --------
    >>> import numpy as np
    >>> C = np.array([[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]])
    >>> MockBackend(C=C).generate("p0", "0", m=8, seed_idx=0).shape
    (8, 3)
    """

    def __init__(self, C=None, *, marginals=None, p=None, difficulty=0.0, seed=0, channel_names=None):
        if marginals is not None and p is not None:
            raise ValueError("p sets the default channel-0 Bernoulli; with explicit marginals pass Bernoulli(p) there")
        if marginals is not None:
            marginals = _check_marginals(marginals)
        R = _resolve_R(C, marginals)
        self.C = validate_correlation(np.eye(R) if C is None else C, R, "marginals")
        self.marginals = marginals if marginals is not None else default_marginals(R, 0.5 if p is None else p)
        self.difficulty = _check_difficulty(difficulty, R)
        self.seed = check_int("seed", seed, 0)
        self.channel_names = _check_channel_names(channel_names, R)
        self._L = _factor(self.C)
        self.C.setflags(write=False)
        self.difficulty.setflags(write=False)

    @property
    def R(self) -> int:
        """Number of reward channels."""
        return self.C.shape[0]

    def prompt_shift(self, prompt: Any) -> np.ndarray:
        """The prompt's latent difficulty shift ``delta_p``, shape ``(R,)``."""
        if not np.any(self.difficulty):
            return np.zeros(self.R)
        xi = make_rng(self.seed, "mock-difficulty", prompt).standard_normal(self.R)
        return self.difficulty * (self._L @ xi)

    def prompt_means(self, prompt: Any) -> np.ndarray:
        """Expected reward of each channel for ``prompt``, shape ``(R,)``."""
        shift = self.prompt_shift(prompt)
        return np.array([marg.mean_at(s) for marg, s in zip(self.marginals, shift)])

    def generate(self, prompt: Any, gold: Any = None, m: int = 8, seed_idx: int = 0) -> np.ndarray:
        """One group of ``m`` rollouts for ``prompt``.

        Parameters
        ----------
        prompt : str or JSON-serializable
            Prompt (or prompt id); it keys the random stream.
        gold : any
            Ignored (accepted so the mock fits the backend protocol).
        m : int
            Group size (>= 1).
        seed_idx : int
            Seed index (>= 0); different indices give independent groups.

        Returns
        -------
        rewards : (m, R) float64 array
        """
        m = check_int("m", m, 1)
        seed_idx = check_int("seed_idx", seed_idx, 0)
        rng = make_rng(self.seed, "mock-rollouts", prompt, seed_idx)
        z = rng.standard_normal((m, self.R)) @ self._L.T + self.prompt_shift(prompt)
        out = np.empty((m, self.R))
        for col, marg in enumerate(self.marginals):
            out[:, col] = marg.from_latent(z[:, col])
        return out

    def describe(self) -> dict:
        """JSON-serializable settings; a corpus file records them to refuse mixing backends."""
        return {
            "backend": "MockBackend",
            "seed": self.seed,
            "C": self.C.tolist(),
            "marginals": [{"kind": type(m).__name__, **asdict(m)} for m in self.marginals],
            "difficulty": self.difficulty.tolist(),
            "channel_names": list(self.channel_names),
        }

    def __repr__(self) -> str:
        margs = ", ".join(repr(m) for m in self.marginals)
        return f"MockBackend(R={self.R}, marginals=[{margs}], seed={self.seed})"


def _resolve_R(C: Any, marginals: tuple | None) -> int:
    if marginals is not None:
        return len(marginals)
    if C is not None:
        return int(np.shape(C)[0]) if np.ndim(C) >= 1 else 0
    return 3


def _check_channel_names(names: Sequence[str] | None, R: int) -> tuple[str, ...]:
    if names is None:
        return tuple(f"r{i}" for i in range(R))
    names = tuple(names)
    if len(names) != R or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"channel_names must be {R} non-empty strings, got {names!r}")
    if len(set(names)) != R:
        raise ValueError(f"channel_names must be unique, got {names!r}")
    return names
