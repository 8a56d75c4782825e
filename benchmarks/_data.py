"""Seeded reward arrays for the timings and the equality checks."""

from __future__ import annotations

import numpy as np

M, R = 8, 3
WEIGHTS = np.array([1.0, 0.5, 2.0])
MODES = ("an", "na", "single")
DYADIC_CONSTANTS = np.array([0.0, 0.25, 0.5, 1.0, -1.0])
THM3_WEIGHTS = np.array([1.0, 0.5, 2.0])
THM3_RHO = 0.5


def random_rewards(P: int, m: int = M, r: int = R, seed: int = 0) -> np.ndarray:
    """Standard-normal float64 rewards of shape (P, m, r), C-contiguous."""
    return np.random.default_rng(seed).standard_normal((P, m, r))


def binary_zero_var(P: int, seed: int = 1) -> np.ndarray:
    """Integer 0/1 rewards (as float64) with many zero-variance channels.

    A third of the groups get channel 1 held constant, a tenth get every
    channel constant; the rest are i.i.d. 0/1 (which already leaves some
    channels constant by chance).
    """
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 2, size=(P, M, R)).astype(np.float64)
    third = rng.random(P) < 1 / 3
    out[third, :, 1] = rng.integers(0, 2, size=(int(third.sum()), 1))
    tenth = rng.random(P) < 0.1
    out[tenth] = rng.integers(0, 2, size=(int(tenth.sum()), 1, R))
    return out


def mixed_zero_var(P: int, seed: int = 2) -> np.ndarray:
    """Normal rewards where one random channel per group is a constant.

    The constants are dyadic (0, 0.25, 0.5, 1, -1), so the group mean of the
    constant channel is exact in float64 and both implementations should give
    exactly zero deviation there.
    """
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((P, M, R))
    chan = rng.integers(0, R, size=P)
    out[np.arange(P), :, chan] = rng.choice(DYADIC_CONSTANTS, size=(P, 1))
    return out


def inexact_constants(P: int, seed: int = 3) -> np.ndarray:
    """Groups whose channel 0 is a non-dyadic constant (0.1, 0.7, pi, ...).

    The float64 mean of such a column may differ from the value by an ulp,
    so an implementation that does not special-case zero variance returns
    rounding noise divided by eps. Used for an INFO line, not a PASS/FAIL check.
    """
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((P, M, R))
    out[:, :, 0] = rng.choice([0.1, 0.7, 1 / 3, 0.3, np.pi, 123.456], size=(P, 1))
    return out


def single_groups(n: int, seed: int = 4) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """``n`` single groups (rewards (m, r), weights (r,), mode) of varied shape.

    m is drawn from 2..16 and r from 1..5; every fourth group has 0/1 rewards
    (so zero-variance channels occur); modes cycle through ``MODES``.
    """
    rng = np.random.default_rng(seed)
    groups = []
    for i in range(n):
        m, r = int(rng.integers(2, 17)), int(rng.integers(1, 6))
        if i % 4 == 3:
            rew = rng.integers(0, 2, size=(m, r)).astype(np.float64)
        else:
            rew = rng.standard_normal((m, r)) * rng.uniform(0.1, 10, r) + rng.standard_normal(r)
        groups.append((rew, rng.uniform(0.1, 3.0, r), MODES[i % len(MODES)]))
    return groups


def check_datasets(quick: bool) -> dict[str, np.ndarray]:
    """The (P, m, R) arrays used by the batch equality checks, by name."""
    P = 5_000 if quick else 50_000
    return {
        "zero-var 0/1": binary_zero_var(P),
        "zero-var dyadic const": mixed_zero_var(P),
        "m=1 groups": random_rewards(1_000, m=1, seed=5),
    }


def thm3_rewards(P: int, K: int, m: int = 16, seed: int = 6) -> np.ndarray:
    """Theory-harness rewards of shape (P, K, m, 3): prompts x seeds x rollouts x channels.

    Channels 0 and 1 are standard normal with correlation ``THM3_RHO``;
    channel 2 is a 0/1 gate, Bernoulli(0.8) (so about 0.8^m of the groups have
    it constant at 1). In 1% of the groups channel 0 or 1 is held at a dyadic
    constant (exact mean), so constant channels occur on every channel.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((P, K, m, 2))
    x[..., 1] = THM3_RHO * x[..., 0] + np.sqrt(1 - THM3_RHO**2) * x[..., 1]
    gate = (rng.random((P, K, m, 1)) < 0.8).astype(np.float64)
    out = np.concatenate([x, gate], axis=-1)
    p, k = np.nonzero(rng.random((P, K)) < 0.01)
    out[p, k, :, rng.integers(0, 2, size=p.size)] = rng.choice(DYADIC_CONSTANTS, size=(p.size, 1))
    return out
