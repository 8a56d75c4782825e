"""Prop 2 (advantage resolution): counting and the integer-relation test."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multireward_grpo.analysis.resolution import (
    FullResolution,
    find_integer_relation,
    linear_form_coefficients,
    na_reaches_full_resolution,
    resolution,
)

SQRT_PRIMES = [math.sqrt(p) for p in (2, 3, 5, 7, 11, 13, 17)]


# --------------------------------------------------------------------------- references


def brute_exact(levels, coeffs):
    """Distinct values of sum c_l n_l over the grid, in exact Fractions (itertools)."""
    coeffs = [Fraction(c) for c in coeffs]
    return len({sum(c * n for c, n in zip(coeffs, point)) for point in itertools.product(*(range(L) for L in levels))})


def brute_relation_exists(levels, coeffs):
    """Is there a nonzero d, |d_l| <= L_l - 1, with sum c_l d_l == 0 (exact, itertools)?"""
    coeffs = [Fraction(c) for c in coeffs]
    for d in itertools.product(*(range(-(L - 1), L) for L in levels)):
        if any(d) and sum(c * v for c, v in zip(coeffs, d)) == 0:
            return True
    return False


def brute_float(levels, coeffs, rtol=1e-9):
    """Pairwise float tie rule: values within rtol * range are one class (union-find)."""
    pts = list(itertools.product(*(range(L) for L in levels)))
    vals = [sum(c * n for c, n in zip(coeffs, p)) for p in pts]
    thr = rtol * sum(abs(c) * (L - 1) for c, L in zip(coeffs, levels))
    parent = list(range(len(vals)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(vals)):
        for j in range(i + 1, len(vals)):
            if abs(vals[i] - vals[j]) <= thr:
                parent[find(i)] = find(j)
    return len({find(i) for i in range(len(vals))})


# --------------------------------------------------------------------------- the paper's cases


@pytest.mark.parametrize("R", [1, 2, 3, 5])
def test_an_equal_weights_two_levels_gives_r_plus_one(R):
    assert resolution(2, [1] * R, mode="an") == R + 1
    assert resolution(2, [1.0] * R, mode="an") == R + 1  # float path, same answer


@pytest.mark.parametrize("L,R", [(2, 3), (3, 3), (4, 2), (5, 4)])
def test_an_equal_weights_counts_sums(L, R):
    assert resolution(L, [1] * R, mode="an") == R * (L - 1) + 1


@pytest.mark.parametrize("L,R", [(2, 3), (3, 3), (4, 4), (6, 3), (3, 6)])
def test_na_incommensurable_sigmas_reach_full(L, R):
    sigma = SQRT_PRIMES[:R]
    assert resolution(L, [1.0] * R, sigma, "na") == L**R
    result = na_reaches_full_resolution(L, [1.0] * R, sigma)
    assert result.full and bool(result) and result.witness is None
    assert result.n_points == L**R


def test_na_with_equal_sigmas_is_an():
    # Equal sigmas: NA's form is a multiple of AN's, same resolution.
    assert resolution(3, [1, 2, 1], [2, 2, 2], "na") == resolution(3, [1, 2, 1], mode="an")


def test_single_mode_counts_the_gate_levels():
    assert resolution([4, 3, 5], [1, 1, 1], mode="single") == 4


def test_gdpo_has_na_resolution():
    assert resolution(3, [1.0, 1.0], [1.0, SQRT_PRIMES[0]], "gdpo") == 9
    assert resolution(3, [1, 1], [1, 2], "gdpo") == resolution(3, [1, 1], [1, 2], "na")


def test_docstring_examples():
    assert resolution(2, [1, 1, 1], mode="an") == 4
    assert resolution(3, [1, 1], [1.0, 2**0.5]) == 9
    assert na_reaches_full_resolution(3, [1, 1], [1, 2]).witness == (1, -2)


# --------------------------------------------------------------------------- brute force


@pytest.mark.parametrize("seed", range(40))
def test_resolution_equals_brute_force_rational(seed):
    rng = np.random.default_rng(seed)
    R = int(rng.integers(1, 5))
    levels = [int(v) for v in rng.integers(1, 5, size=R)]
    w = [Fraction(int(a), int(b)) for a, b in zip(rng.integers(0, 6, size=R), rng.integers(1, 4, size=R))]
    sigma = [Fraction(int(a), int(b)) for a, b in zip(rng.integers(1, 6, size=R), rng.integers(1, 4, size=R))]
    coeffs = [a / b for a, b in zip(w, sigma)]
    assert resolution(levels, w, sigma, "na") == brute_exact(levels, coeffs)
    assert resolution(levels, w, mode="an") == brute_exact(levels, w)


@pytest.mark.parametrize("seed", range(15))
def test_resolution_equals_brute_force_float(seed):
    rng = np.random.default_rng(1000 + seed)
    R = int(rng.integers(1, 4))
    levels = [int(v) for v in rng.integers(1, 5, size=R)]
    # Mix generic floats with dyadic ones that collide exactly.
    w = [float(v) for v in rng.choice([0.5, 1.0, 1.5, 2.0, rng.uniform(0.1, 2.0)], size=R)]
    sigma = [float(v) for v in rng.choice([0.5, 1.0, SQRT_PRIMES[0], rng.uniform(0.2, 3.0)], size=R)]
    coeffs = [a / b for a, b in zip(w, sigma)]
    assert resolution(levels, w, sigma, "na") == brute_float(levels, coeffs)


def test_float_rounding_ties_are_merged():
    # 0.1 + 0.2 != 0.3 in float64, but they are the same advantage value.
    assert 0.1 + 0.2 != 0.3
    assert resolution(2, [0.1, 0.2, 0.3], mode="an") == brute_exact(
        [2, 2, 2], [Fraction(1, 10), Fraction(2, 10), Fraction(3, 10)]
    )
    # ... while rtol=0 sees the rounding as a distinct value: 0.1 + 0.2 vs 0.3.
    assert resolution(2, [0.1, 0.2, 0.3], mode="an", rtol=0.0) == 8


def test_exact_true_reads_floats_as_binary_fractions():
    # Dyadic floats are exact; the float and exact paths agree.
    assert resolution(3, [0.5, 0.25, 1.0], [1.0, 1.0, 2.0], "na", exact=True) == resolution(
        3, [Fraction(1, 2), Fraction(1, 4), 1], [1, 1, 2], "na"
    )


def test_exact_overflow_is_refused_with_advice():
    with pytest.raises(ValueError, match="exact=False"):
        # Ratios of binary fractions such as 0.1 / 0.3 have ~52-bit odd denominators.
        resolution(3, [0.1, 0.7], [0.3, 0.9], "na", exact=True)


def test_per_channel_levels():
    levels = [2, 3, 4]
    w = [1, 1, 1]
    assert resolution(levels, w, mode="an") == brute_exact(levels, w) == 1 + 1 + 2 + 3
    assert resolution(levels, [1.0] * 3, SQRT_PRIMES[:3], "na") == 24


def test_one_level_channels_and_zero_weights():
    assert resolution([1, 1], [1, 1], mode="an") == 1
    assert resolution([3, 4], [0, 1], mode="an") == 4
    assert resolution(3, [0, 0], mode="an") == 1
    assert not na_reaches_full_resolution([3, 4], [0, 1], [1, 1]).full


# --------------------------------------------------------------------------- relation test


def _check_witness(result: FullResolution, levels, coeffs):
    d = result.witness
    assert d is not None and any(d)
    assert next(v for v in d if v) > 0  # sign normalized
    assert all(abs(v) <= L - 1 for v, L in zip(d, levels))
    assert sum(Fraction(c) * v for c, v in zip(coeffs, d)) == 0
    assert result.residual == 0.0


@pytest.mark.parametrize("seed", range(60))
def test_relation_test_agrees_with_counting_rational(seed):
    rng = np.random.default_rng(seed)
    R = int(rng.integers(1, 5))
    levels = [int(v) for v in rng.integers(1, 5, size=R)]
    w = [int(v) for v in rng.integers(1, 5, size=R)]
    sigma = [int(v) for v in rng.integers(1, 6, size=R)]
    result = na_reaches_full_resolution(levels, w, sigma)
    assert result.exact
    full_by_count = resolution(levels, w, sigma, "na") == math.prod(levels)
    assert result.full == full_by_count
    coeffs = [Fraction(a, b) for a, b in zip(w, sigma)]
    assert result.full == (not brute_relation_exists(levels, coeffs))
    if not result.full:
        _check_witness(result, levels, coeffs)


@pytest.mark.parametrize("seed", range(60))
def test_relation_test_agrees_with_counting_float(seed):
    rng = np.random.default_rng(500 + seed)
    R = int(rng.integers(1, 6))
    L = int(rng.integers(2, 5))
    # Half the cases get a planted commensurability (sigma_1 = 2 sigma_0 or equal).
    sigma = list(rng.uniform(0.3, 3.0, size=R))
    if R >= 2 and seed % 2:
        sigma[1] = sigma[0] * float(rng.choice([1.0, 2.0, 0.5]))
    w = [1.0] * R
    result = na_reaches_full_resolution(L, w, sigma)
    assert not result.exact
    assert result.full == (resolution(L, w, sigma, "na") == L**R)
    if not result.full:
        coeffs = np.array(w) / np.array(sigma)
        assert abs(float(np.dot(coeffs, result.witness))) <= 1e-9 * float(np.sum(np.abs(coeffs)) * (L - 1))


@settings(max_examples=60, deadline=None)
@given(
    levels=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    data=st.data(),
)
def test_relation_test_property(levels, data):
    R = len(levels)
    w = data.draw(st.lists(st.fractions(min_value=0, max_value=3, max_denominator=4), min_size=R, max_size=R))
    sigma = data.draw(
        st.lists(st.fractions(min_value=Fraction(1, 4), max_value=3, max_denominator=4), min_size=R, max_size=R)
    )
    result = na_reaches_full_resolution(levels, w, sigma)
    count = resolution(levels, w, sigma, "na")
    coeffs = [a / b for a, b in zip(w, sigma)]
    assert count == brute_exact(levels, coeffs)
    assert result.full == (count == math.prod(levels))
    if not result.full:
        _check_witness(result, levels, coeffs)


def test_find_integer_relation_generic():
    res = find_integer_relation([3, 3, 3], [1, 1, -2])
    assert not res.full
    _check_witness(res, [3, 3, 3], [1, 1, -2])
    assert find_integer_relation(4, [1, 4, 16]).full  # base-4 digits are unique
    assert not find_integer_relation(5, [1, 4, 16]).full  # 4*1 - 1*4 = 0


def test_full_resolution_to_dict_round_trips_json():
    import json

    res = na_reaches_full_resolution(3, [1, 1], [1, 2])
    d = json.loads(json.dumps(res.to_dict()))
    assert d["full"] is False and d["witness"] == [1, -2] and d["levels"] == [3, 3]


# --------------------------------------------------------------------------- scale and limits


def test_million_point_grid_is_fast_and_exact():
    # 10**6 points, incommensurable coefficients: every value distinct.
    assert resolution(10, [1.0] * 6, SQRT_PRIMES[:6], "na") == 10**6


def test_large_an_grid_merges_partial_sums():
    # 10**20 grid points but only 9 * 20 + 1 distinct sums: allowed, and quick.
    assert resolution(10, [1] * 20, mode="an") == 181


def test_too_big_grid_is_refused():
    with pytest.raises(ValueError, match="max_points"):
        resolution(10, [1.0] * 8, SQRT_PRIMES[:7] + [math.sqrt(19)], "na")
    with pytest.raises(ValueError, match="max_points"):
        resolution(10, [1.0] * 3, SQRT_PRIMES[:3], "na", max_points=500)
    with pytest.raises(ValueError, match="max_points"):
        na_reaches_full_resolution(10, [1.0] * 3, SQRT_PRIMES[:3], max_points=20)


def test_inputs_are_not_mutated():
    w = [1.0, 2.0]
    sigma = np.array([1.0, 3.0])
    resolution([2, 3], w, sigma, "na")
    na_reaches_full_resolution([2, 3], w, sigma)
    assert w == [1.0, 2.0] and sigma.tolist() == [1.0, 3.0]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"L": 3, "w": [1, 1], "sigma": None, "mode": "na"}, ValueError, "needs sigma"),
        ({"L": 3, "w": [1, 1], "sigma": [1, 0], "mode": "na"}, ValueError, "sigma\\[1\\] must be > 0"),
        ({"L": 3, "w": [1, 1], "sigma": [1], "mode": "na"}, ValueError, "sigma has 1 entries"),
        ({"L": 0, "w": [1, 1], "mode": "an"}, ValueError, "at least 1 level"),
        ({"L": [2, 3, 4], "w": [1, 1], "mode": "an"}, ValueError, "L has 3 entries"),
        ({"L": 2.5, "w": [1, 1], "mode": "an"}, TypeError, "L must be"),
        ({"L": 3, "w": [1, float("nan")], "mode": "an"}, ValueError, "finite"),
        ({"L": 3, "w": [], "mode": "an"}, ValueError, "empty"),
        ({"L": 3, "w": [[1, 1]], "mode": "an"}, ValueError, "1-D"),
        ({"L": 3, "w": ["a", 1], "mode": "an"}, TypeError, "real number"),
        ({"L": 3, "w": [1, 1], "mode": "bogus"}, ValueError, "mode must be one of"),
    ],
)
def test_validation(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        resolution(**kwargs)


def test_validation_of_options():
    with pytest.raises(ValueError, match="rtol"):
        resolution(3, [1.0, 1.0], mode="an", rtol=-1.0)
    with pytest.raises(ValueError, match="max_points"):
        resolution(3, [1.0, 1.0], mode="an", max_points=0)
    with pytest.raises(TypeError, match="exact"):
        linear_form_coefficients(3, [1, 1], None, "an", exact="yes")
