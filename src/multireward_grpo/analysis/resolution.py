"""Advantage resolution (Prop 2): how many distinct advantage values a grid allows.

Each reward channel ``l`` takes the integer levels ``{0, ..., L_l - 1}``; a
rollout's reward vector is a grid point ``n = (n_1, ..., n_R)``. Inside a group
every estimator is an affine map of a linear form of ``n``:

* AN: ``A`` is an affine map of ``s = sum_l w_l n_l``;
* NA: ``A`` is an affine map of ``sum_l (w_l / sigma_l) n_l``, ``sigma_l`` the
  population standard deviation that normalizes channel ``l``;
* single: ``A`` is an affine map of ``n_0``.

A common affine map with a nonzero slope does not change how many distinct
values there are, so the *resolution* of an estimator is the number of
distinct values of its linear form ``sum_l c_l n_l`` over the grid.

NA reaches the full ``prod_l L_l`` (``L**R`` for equal levels) exactly when
no nonzero integer vector ``d`` with ``|d_l| <= L_l - 1`` has
``sum_l c_l d_l = 0`` (two grid points collide iff their difference is such a
relation). :func:`na_reaches_full_resolution` decides this by a
meet-in-the-middle search over the difference lattice, independently of the
counting in :func:`resolution`, and returns a witness relation when one exists.

Exact and floating-point arithmetic
-----------------------------------
When every weight (and every ``sigma`` for NA) is an ``int``, a numpy integer
or a :class:`fractions.Fraction`, the coefficients are rational and both
functions work in exact integer arithmetic (``exact=None`` picks this
automatically; ``exact=True`` forces it, reading floats as the exact binary
fractions they are; ``exact=False`` forces floats).

Otherwise values are computed in float64 and two values count as equal when
they differ by at most ``rtol * scale``, where ``scale = sum_l |c_l| (L_l - 1)``
is the range of the linear form over the grid. The default ``rtol = 1e-9`` is
far above float64 rounding in a sum of ``R`` terms (about ``R * 1e-16 *
scale``) and far below the typical smallest gap between genuinely different
values of a grid of ``N <= 1e7`` points (about ``scale / N``). The two functions
use the same rule (``|difference| <= rtol * scale`` means a tie), so
``resolution(...) == prod(L)`` agrees with ``na_reaches_full_resolution(...).full``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from numbers import Real
from typing import Literal

import numpy as np

__all__ = [
    "DEFAULT_MAX_POINTS",
    "DEFAULT_RTOL",
    "FullResolution",
    "find_integer_relation",
    "linear_form_coefficients",
    "na_reaches_full_resolution",
    "resolution",
]

DEFAULT_RTOL = 1e-9
"""Relative tolerance (of the value range) under which two float values tie."""

DEFAULT_MAX_POINTS = 10_000_000
"""Largest intermediate array (points) the counting and the search will build."""

_INT_LIMIT = 2**62
_MODES = ("an", "na", "single", "gdpo")

Mode = Literal["an", "na", "single", "gdpo"]
Levels = int | Sequence[int]


# --------------------------------------------------------------------------- validation


def _is_exact(x) -> bool:
    return isinstance(x, (int, np.integer, Fraction)) and not isinstance(x, (bool, np.bool_))


def _as_list(x, name: str) -> list:
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of numbers, got {x!r}")
    arr = np.asarray(x, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence (one entry per channel); got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty; pass one entry per reward channel")
    out = []
    for i, v in enumerate(arr.tolist()):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (Real, Fraction, np.integer, np.floating)):
            raise TypeError(f"{name}[{i}] must be a real number, got {v!r}")
        if not math.isfinite(float(v)):
            raise ValueError(f"{name}[{i}] must be finite, got {v!r}")
        out.append(v)
    return out


def _levels(L: Levels, n_channels: int) -> tuple[int, ...]:
    if isinstance(L, (bool, np.bool_)):
        raise TypeError(f"L must be an int >= 1 or one int per channel, got {L!r}")
    if isinstance(L, (int, np.integer)):
        levels = (int(L),) * n_channels
    else:
        try:
            seq = list(L)
        except TypeError:
            raise TypeError(f"L must be an int >= 1 or one int per channel, got {L!r}") from None
        if len(seq) != n_channels:
            raise ValueError(
                f"L has {len(seq)} entries but there are {n_channels} channels (from w); "
                "pass one number of levels per channel or a single int"
            )
        for i, v in enumerate(seq):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"L[{i}] must be an int number of levels, got {v!r}")
        levels = tuple(int(v) for v in seq)
    for i, v in enumerate(levels):
        if v < 1:
            raise ValueError(f"every channel needs at least 1 level; L[{i}] = {v}")
    return levels


def linear_form_coefficients(
    L: Levels,
    w,
    sigma=None,
    mode: Mode = "na",
    *,
    exact: bool | None = None,
) -> tuple[tuple[int, ...], tuple, bool]:
    """The linear form whose distinct values an estimator's advantages follow.

    Parameters
    ----------
    L : int or sequence of int, length R
        Number of integer levels ``{0, ..., L_l - 1}`` of each channel.
    w : (R,) sequence of real
        Objective weights.
    sigma : (R,) sequence of positive real, optional
        Population standard deviations that normalize the channels; required
        for ``mode="na"`` (and ``"gdpo"``), ignored otherwise.
    mode : {"an", "na", "single", "gdpo"}
        ``"gdpo"`` whitens NA's advantages with one batch-wide affine map, so
        it has NA's resolution.
    exact : bool or None
        ``None``: exact rational arithmetic when every weight (and sigma) is
        an int / numpy integer / Fraction, floats otherwise. ``True``: exact,
        floats read as their exact binary fractions. ``False``: floats.

    Returns
    -------
    levels : tuple of R ints
    coefficients : tuple of R Fractions (exact) or floats
        ``c_l``: ``w_l`` (AN), ``w_l / sigma_l`` (NA), ``(1, 0, ..., 0)`` (single).
    exact : bool
        Whether the coefficients are exact.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if exact not in (None, True, False):
        raise TypeError(f"exact must be None, True or False, got {exact!r}")
    weights = _as_list(w, "w")
    n_channels = len(weights)
    levels = _levels(L, n_channels)
    sig = None
    if mode in ("na", "gdpo"):
        if sigma is None:
            raise ValueError(
                "mode='na' needs sigma, the population std that normalizes each channel "
                "(e.g. sqrt(p(1-p)) * (L-1) for a two-level channel); pass sigma=[...]"
            )
        sig = _as_list(sigma, "sigma")
        if len(sig) != n_channels:
            raise ValueError(f"sigma has {len(sig)} entries but w has {n_channels}; pass one per channel")
        for i, s in enumerate(sig):
            if float(s) <= 0:
                raise ValueError(f"sigma[{i}] must be > 0 (a normalizing standard deviation), got {s!r}")
    if mode == "single":
        return levels, tuple(Fraction(int(i == 0)) for i in range(n_channels)), True
    inputs = weights + (sig or [])
    use_exact = all(_is_exact(v) for v in inputs) if exact is None else exact
    if use_exact:
        wq = [Fraction(v) if _is_exact(v) else Fraction(float(v)) for v in weights]
        if sig is None:
            coeffs = tuple(wq)
        else:
            sq = [Fraction(v) if _is_exact(v) else Fraction(float(v)) for v in sig]
            coeffs = tuple(a / b for a, b in zip(wq, sq))
        return levels, coeffs, True
    wf = np.array([float(v) for v in weights])
    if sig is not None:
        wf = wf / np.array([float(v) for v in sig])
    return levels, tuple(float(c) for c in wf), False


def _integer_coefficients(levels, coeffs) -> list[int]:
    """Exact rational coefficients scaled to coprime integers (same tie structure)."""
    denom = 1
    for c in coeffs:
        denom = denom * c.denominator // math.gcd(denom, c.denominator)
    ints = [int(c * denom) for c in coeffs]
    g = 0
    for v in ints:
        g = math.gcd(g, v)
    if g > 1:
        ints = [v // g for v in ints]
    span = sum(abs(v) * (n - 1) for v, n in zip(ints, levels))
    if span >= _INT_LIMIT:
        raise ValueError(
            "the exact (rational) coefficients need integers beyond 64 bits "
            f"(value range {span}); use Fractions with smaller denominators, or pass "
            "exact=False to compare float values with a relative tolerance"
        )
    return ints


def _check_rtol(rtol: float, name: str) -> float:
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float, np.floating)) or not math.isfinite(rtol):
        raise TypeError(f"{name} must be a finite float, got {rtol!r}")
    if rtol < 0:
        raise ValueError(f"{name} must be >= 0, got {rtol}")
    return float(rtol)


def _check_max_points(max_points: int) -> int:
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 1:
        raise ValueError(f"max_points must be a positive int, got {max_points!r}")
    return int(max_points)


def _prepared(levels, coeffs, exact, rtol):
    """(integer-or-float coefficient array, tie threshold, dtype)."""
    if exact:
        return np.array(_integer_coefficients(levels, coeffs), dtype=np.int64), 0, np.int64
    c = np.asarray(coeffs, dtype=np.float64)
    scale = float(np.sum(np.abs(c) * (np.asarray(levels) - 1)))
    return c, rtol * scale, np.float64


# --------------------------------------------------------------------------- counting


def resolution(
    L: Levels,
    w,
    sigma=None,
    mode: Mode = "na",
    *,
    rtol: float = DEFAULT_RTOL,
    exact: bool | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
) -> int:
    """Number of distinct advantage values an estimator can produce on a grid.

    Parameters
    ----------
    L : int or sequence of int, length R
        Levels per channel: channel ``l`` takes the values ``0 .. L_l - 1``.
    w : (R,) sequence of real
        Objective weights (any finite reals; ``w >= 0`` in training).
    sigma : (R,) sequence of positive real, optional
        Normalizing population std per channel; required for NA.
    mode : {"an", "na", "single", "gdpo"}
        Which estimator's linear form to count (see the module docstring).
    rtol : float
        Float ties: two sorted values are distinct when their gap exceeds
        ``rtol * sum_l |c_l| (L_l - 1)``. Unused in exact arithmetic.
    exact : bool or None
        Arithmetic, see :func:`linear_form_coefficients`.
    max_points : int
        Largest array the counting may build. Values are accumulated one
        channel at a time and exact duplicates among partial sums are merged
        as they appear (duplicates stay duplicates), so the work is bounded by
        ``(distinct partial sums) * L_l``: about ``prod(L)`` for generic
        weights, much less for AN with integer weights. A grid that needs more
        raises ``ValueError``.

    Returns
    -------
    int
        The number of distinct values, between 1 and ``prod(L)``.

    Examples
    --------
    >>> resolution(2, [1, 1, 1], mode="an")        # sums 0..3
    4
    >>> resolution(3, [1, 1], [1.0, 2 ** 0.5])     # incommensurable: 3**2
    9
    """
    levels, coeffs, is_exact = linear_form_coefficients(L, w, sigma, mode, exact=exact)
    rtol = _check_rtol(rtol, "rtol")
    max_points = _check_max_points(max_points)
    c, threshold, dtype = _prepared(levels, coeffs, is_exact, rtol)
    values = np.zeros(1, dtype=dtype)
    # Channels with the fewest levels first keeps the partial arrays small longest.
    for idx in sorted(range(len(levels)), key=lambda i: levels[i]):
        n = levels[idx]
        if n == 1 or c[idx] == 0:
            continue
        size = values.size * n
        if size > max_points:
            total = math.prod(levels)
            raise ValueError(
                f"counting needs an array of {size:,} partial sums (grid of {total:,} points) "
                f"but max_points={max_points:,}; use fewer levels or channels, or raise "
                "max_points (about 24 bytes of memory per point)"
            )
        steps = c[idx] * np.arange(n, dtype=dtype)
        values = np.unique((values[:, None] + steps[None, :]).ravel())
    if threshold == 0 or values.size < 2:
        return int(values.size)
    return 1 + int(np.count_nonzero(np.diff(values) > threshold))


# --------------------------------------------------------------------------- integer relations


@dataclass(frozen=True)
class FullResolution:
    """Outcome of the integer-relation test for full resolution.

    Attributes
    ----------
    full : bool
        True when no nonzero integer vector ``d`` with ``|d_l| <= L_l - 1``
        has ``sum_l c_l d_l = 0`` (within the tie rule), i.e. every grid point
        gets its own advantage value and the resolution is ``prod(L)``.
    witness : tuple of int or None
        A relation ``d`` (first nonzero entry positive) when ``full`` is
        False: the grid points ``n`` and ``n + d`` share an advantage value.
    residual : float or None
        ``sum_l c_l d_l`` for the witness (0 in exact arithmetic).
    n_points : int
        ``prod(L)``, the full resolution.
    levels : tuple of int
    coefficients : tuple of float
        ``c_l`` (as floats, also when the test ran in exact arithmetic).
    exact : bool
        Whether the test ran in exact rational arithmetic.
    tol : float
        The relative tolerance used (0 in exact arithmetic).
    """

    full: bool
    witness: tuple[int, ...] | None
    residual: float | None
    n_points: int
    levels: tuple[int, ...]
    coefficients: tuple[float, ...]
    exact: bool
    tol: float

    def __bool__(self) -> bool:
        return self.full

    def to_dict(self) -> dict:
        """A JSON-serializable dict of the fields."""
        d = asdict(self)
        d["witness"] = None if self.witness is None else list(self.witness)
        d["levels"] = list(self.levels)
        d["coefficients"] = list(self.coefficients)
        return d


def _half_sums(levels, c, channels, dtype):
    """All values of sum_{l in channels} c_l d_l, |d_l| <= L_l - 1, in C order."""
    sums = np.zeros(1, dtype=dtype)
    shape = []
    for idx in channels:
        k = levels[idx] - 1
        d = np.arange(-k, k + 1, dtype=dtype)
        sums = (sums[:, None] + (c[idx] * d)[None, :]).ravel()
        shape.append(2 * k + 1)
    return sums, tuple(shape)


def _split(levels, max_points):
    """Channels split into two halves of balanced difference-lattice size."""
    order = sorted(range(len(levels)), key=lambda i: -levels[i])
    halves: tuple[list[int], list[int]] = ([], [])
    logs = [0.0, 0.0]
    for idx in order:
        side = 0 if logs[0] <= logs[1] else 1
        halves[side].append(idx)
        logs[side] += math.log(2 * levels[idx] - 1)
    for half in halves:
        size = math.prod(2 * levels[i] - 1 for i in half)
        if size > max_points:
            raise ValueError(
                f"the meet-in-the-middle search needs {size:,} half-sums but "
                f"max_points={max_points:,}; use fewer levels or channels, or raise max_points"
            )
    return sorted(halves[0]), sorted(halves[1])


def _search(levels, c, threshold, dtype, max_points):
    """A nonzero relation vector (as a tuple) with |sum c d| <= threshold, or None."""
    n_channels = len(levels)
    half_a, half_b = _split(levels, max_points)
    sums_a, shape_a = _half_sums(levels, c, half_a, dtype)
    sums_b, shape_b = _half_sums(levels, c, half_b, dtype)
    zero_a = sums_a.size // 2  # the all-zero difference vector is the centre in C order
    zero_b = sums_b.size // 2
    order_b = np.argsort(sums_b, kind="stable")
    sorted_b = sums_b[order_b]
    lo = np.searchsorted(sorted_b, -sums_a - threshold, side="left")
    hi = np.searchsorted(sorted_b, -sums_a + threshold, side="right")
    hits = hi - lo
    hits[zero_a] -= 1  # the trivial pair (0, 0) always matches
    rows = np.flatnonzero(hits > 0)
    if rows.size == 0:
        return None
    i = int(rows[0])
    candidates = order_b[lo[i] : hi[i]]
    if i == zero_a:
        candidates = candidates[candidates != zero_b]
    j = int(candidates[0])
    d = [0] * n_channels
    for idx, v in zip(half_a, np.unravel_index(i, shape_a) if shape_a else ()):
        d[idx] = int(v) - (levels[idx] - 1)
    for idx, v in zip(half_b, np.unravel_index(j, shape_b) if shape_b else ()):
        d[idx] = int(v) - (levels[idx] - 1)
    first = next(v for v in d if v != 0)
    if first < 0:
        d = [-v for v in d]
    return tuple(d)


def find_integer_relation(
    L: Levels,
    coefficients,
    *,
    tol: float = DEFAULT_RTOL,
    exact: bool | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
) -> FullResolution:
    """Search for a nonzero integer ``d``, ``|d_l| <= L_l - 1``, with ``c . d = 0``.

    Meet in the middle: the channels are split into two halves, all partial
    sums ``sum_{l in half} c_l d_l`` of each half are enumerated (vectorized),
    and a sorted search pairs every sum of one half with the opposite sums of
    the other. The work is about the square root of the difference lattice's
    ``prod_l (2 L_l - 1)`` points.

    Parameters
    ----------
    L : int or sequence of int, length R
        Levels per channel.
    coefficients : (R,) sequence of real
        The linear form ``c``. Ints / Fractions are handled exactly (see
        ``exact``).
    tol : float
        Float arithmetic: ``|c . d| <= tol * sum_l |c_l| (L_l - 1)`` counts as
        a relation (the same tie rule as :func:`resolution`'s ``rtol``).
    exact : bool or None
        ``None``: exact when every coefficient is an int / numpy integer /
        Fraction. ``True``: exact, floats read as exact binary fractions.
    max_points : int
        Largest half-sum array allowed.

    Returns
    -------
    FullResolution
        ``full`` is True when no relation exists.
    """
    levels, coeffs, is_exact = linear_form_coefficients(L, coefficients, None, "an", exact=exact)
    tol = _check_rtol(tol, "tol")
    max_points = _check_max_points(max_points)
    c, threshold, dtype = _prepared(levels, coeffs, is_exact, tol)
    witness = _search(levels, c, threshold, dtype, max_points)
    residual = None
    if witness is not None:
        residual = float(sum(Fraction(x) * v for x, v in zip(coeffs, witness))) if is_exact else float(
            np.dot(np.asarray(coeffs, dtype=np.float64), np.asarray(witness, dtype=np.float64))
        )
    return FullResolution(
        full=witness is None,
        witness=witness,
        residual=residual,
        n_points=math.prod(levels),
        levels=levels,
        coefficients=tuple(float(x) for x in coeffs),
        exact=is_exact,
        tol=0.0 if is_exact else tol,
    )


def na_reaches_full_resolution(
    L: Levels,
    w,
    sigma,
    *,
    tol: float = DEFAULT_RTOL,
    exact: bool | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
) -> FullResolution:
    """Does NA give every grid point its own advantage value (Prop 2)?

    NA's advantage follows ``sum_l (w_l / sigma_l) n_l``; it reaches the full
    resolution ``prod(L)`` iff no nonzero integer vector ``d`` with
    ``|d_l| <= L_l - 1`` has ``sum_l (w_l / sigma_l) d_l = 0``.

    Parameters
    ----------
    L : int or sequence of int, length R
        Levels per channel.
    w : (R,) sequence of real
        Objective weights.
    sigma : (R,) sequence of positive real
        Normalizing population std per channel.
    tol, exact, max_points
        See :func:`find_integer_relation`.

    Returns
    -------
    FullResolution
        ``.full`` (also the truth value of the result) and ``.witness``, a
        relation when one exists.

    Examples
    --------
    >>> na_reaches_full_resolution(3, [1, 1], [1, 2]).witness   # 1*d1 + (1/2)*d2 = 0
    (1, -2)
    >>> bool(na_reaches_full_resolution(3, [1, 1], [1.0, 2 ** 0.5]))
    True
    """
    levels, coeffs, is_exact = linear_form_coefficients(L, w, sigma, "na", exact=exact)
    if is_exact:
        coeffs = list(coeffs)
    return find_integer_relation(levels, coeffs, tol=tol, exact=is_exact, max_points=max_points)
