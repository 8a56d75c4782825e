"""MockBackend: marginals, copula correlations, difficulty and seeding.

Statistical checks use fixed seeds and tolerances of about 5 standard errors
(binomial / CLT), so they are deterministic and not flaky by construction.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import special, stats

from multireward_grpo._seeding import make_rng, seed_sequence, stable_hash64
from multireward_grpo.generation import Bernoulli, Beta, Gaussian, MockBackend, Uniform

SRC = str(Path(__file__).resolve().parents[1] / "src")
N = 40_000  # rollouts per statistical check


def _draw(marginals, C=None, *, seed=0, n=N, prompt="x"):
    return MockBackend(C, marginals=marginals, seed=seed).generate(prompt, None, m=n, seed_idx=0)


def _corr2(rho):
    return np.array([[1.0, rho], [rho, 1.0]])


# ----------------------------------------------------------------------------- marginals


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.5, 0.9])
def test_bernoulli_rate_within_binomial_tolerance(rate):
    x = _draw([Bernoulli(rate)])[:, 0]
    assert set(np.unique(x)) <= {0.0, 1.0}
    assert abs(x.mean() - rate) <= 5 * np.sqrt(rate * (1 - rate) / N)


def test_bernoulli_degenerate_rates_are_constant():
    x = _draw([Bernoulli(0.0), Bernoulli(1.0)], n=500)
    assert np.all(x[:, 0] == 0) and np.all(x[:, 1] == 1)


def test_gaussian_mean_std_and_shape():
    x = _draw([Gaussian(2.0, 3.0)])[:, 0]
    assert abs(x.mean() - 2.0) <= 5 * 3.0 / np.sqrt(N)
    assert abs(x.std() - 3.0) <= 5 * 3.0 / np.sqrt(2 * N)
    assert stats.kstest(x, stats.norm(2.0, 3.0).cdf).pvalue > 1e-3


def test_beta_mean_support_and_shape():
    lo, hi, a, b = -1.0, 3.0, 2.0, 5.0
    x = _draw([Beta(a, b, lo, hi)])[:, 0]
    dist = stats.beta(a, b, loc=lo, scale=hi - lo)
    assert x.min() >= lo and x.max() <= hi
    assert abs(x.mean() - dist.mean()) <= 5 * dist.std() / np.sqrt(N)
    assert stats.kstest(x, dist.cdf).pvalue > 1e-3


def test_uniform_mean_support_and_shape():
    x = _draw([Uniform(1.0, 4.0)])[:, 0]
    assert x.min() >= 1.0 and x.max() <= 4.0
    assert abs(x.mean() - 2.5) <= 5 * (3.0 / np.sqrt(12)) / np.sqrt(N)
    assert stats.kstest(x, stats.uniform(1.0, 3.0).cdf).pvalue > 1e-3


def test_defaults_channel0_bernoulli_rest_beta():
    backend = MockBackend()
    assert backend.R == 3 and backend.channel_names == ("r0", "r1", "r2")
    assert backend.marginals == (Bernoulli(0.5), Beta(2, 2), Beta(2, 2))
    assert MockBackend(C=np.eye(5), p=0.2).marginals[0] == Bernoulli(0.2)
    x = MockBackend(np.eye(4)).generate("p", "0", 6, 0)
    assert x.shape == (6, 4) and x.dtype == np.float64


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Bernoulli(1.5), r"rate must lie in \[0, 1\]"),
        (lambda: Bernoulli(float("nan")), "finite"),
        (lambda: Gaussian(0.0, -1.0), "std must be >= 0"),
        (lambda: Beta(0.0, 1.0), "Beta.a must be > 0"),
        (lambda: Beta(1.0, 1.0, 2.0, 1.0), "lo < hi"),
        (lambda: Uniform(1.0, 1.0), "lo < hi"),
    ],
)
def test_marginal_validation(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_marginals_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Bernoulli(0.5).rate = 0.2


# ----------------------------------------------------------------------------- copula


@pytest.mark.parametrize("rho", [-0.7, -0.3, 0.3, 0.7])
def test_gaussian_marginals_realize_C(rho):
    x = _draw([Gaussian(), Gaussian(5.0, 0.1)], _corr2(rho), seed=1)
    # SE of a sample correlation is (1 - rho^2)/sqrt(N) ~ 0.005; 0.02 is ~4 SE.
    assert abs(np.corrcoef(x.T)[0, 1] - rho) < 0.02


_KINDS = {
    "bernoulli": Bernoulli(0.2),
    "gaussian": Gaussian(1.0, 2.0),
    "beta": Beta(2.0, 5.0),
    "uniform": Uniform(-1.0, 1.0),
}


@pytest.mark.parametrize("rho", [0.6, -0.6])
@pytest.mark.parametrize("first", list(_KINDS))
@pytest.mark.parametrize("second", list(_KINDS))
def test_realized_sign_matches_requested_for_every_kind(first, second, rho):
    x = _draw([_KINDS[first], _KINDS[second]], _corr2(rho), seed=2, n=20_000)
    realized = np.corrcoef(x.T)[0, 1]
    # Monotone maps keep the sign and can only attenuate the magnitude.
    assert np.sign(realized) == np.sign(rho)
    assert abs(realized) > 0.2 and abs(realized) <= abs(rho) + 0.02


def test_bernoulli_gaussian_point_biserial_closed_form():
    p, rho = 0.2, 0.8
    x = _draw([Bernoulli(p), Gaussian()], _corr2(rho), seed=3)
    t = special.ndtri(1 - p)
    expected = rho * stats.norm.pdf(t) / np.sqrt(p * (1 - p))
    assert abs(np.corrcoef(x.T)[0, 1] - expected) < 0.02


def test_bernoulli_pair_phi_coefficient_closed_form():
    p1, p2, rho = 0.3, 0.6, 0.5
    x = _draw([Bernoulli(p1), Bernoulli(p2)], _corr2(rho), seed=4)
    t1, t2 = special.ndtri(1 - p1), special.ndtri(1 - p2)
    # P(z1 > t1, z2 > t2) = P(-z1 < -t1, -z2 < -t2), (-z1, -z2) has the same correlation.
    both = stats.multivariate_normal(cov=_corr2(rho)).cdf([-t1, -t2])
    expected = (both - p1 * p2) / np.sqrt(p1 * (1 - p1) * p2 * (1 - p2))
    assert abs(np.corrcoef(x.T)[0, 1] - expected) < 0.02


def test_uniform_pair_spearman_closed_form():
    rho = 0.6
    x = _draw([Uniform(), Uniform()], _corr2(rho), seed=5)
    expected = 6 / np.pi * np.arcsin(rho / 2)
    assert abs(np.corrcoef(x.T)[0, 1] - expected) < 0.02


def test_seed_C_three_channels_default_marginals():
    C = np.array([[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]])
    x = MockBackend(C=C).generate("p0", "0", N, 0)
    R = np.corrcoef(x.T)
    assert R[0, 1] > 0.3  # Bernoulli(0.5) vs Beta(2, 2): attenuated but positive
    assert abs(R[0, 2]) < 0.02 and abs(R[1, 2]) < 0.02


def test_singular_C_is_accepted():
    x = _draw([Gaussian(), Gaussian()], _corr2(1.0), n=100)
    np.testing.assert_allclose(x[:, 0], x[:, 1], atol=1e-6)


@pytest.mark.parametrize(
    "C, marginals, match",
    [
        (np.ones((2, 3)), None, "square"),
        (np.eye(2), [Bernoulli(), Beta(), Beta()], "2x2 but there are 3 marginals"),
        (np.array([[1, 0.5], [0.4, 1]]), None, "not symmetric"),
        (np.array([[2, 0.5], [0.5, 1]]), None, "ones on the diagonal"),
        (np.array([[1, 1.5], [1.5, 1]]), None, r"\[-1, 1\]"),
        (np.array([[1, 0.9, 0.9], [0.9, 1, -0.9], [0.9, -0.9, 1]]), None, "not positive semi-definite"),
        (np.array([[1, np.nan], [np.nan, 1]]), None, "NaN"),
    ],
)
def test_C_validation_messages(C, marginals, match):
    with pytest.raises(ValueError, match=match):
        MockBackend(C, marginals=marginals)


def test_constructor_validation():
    with pytest.raises(ValueError, match="with explicit marginals"):
        MockBackend(marginals=[Bernoulli()], p=0.3)
    with pytest.raises(TypeError, match="one marginal per channel"):
        MockBackend(marginals=Bernoulli())
    with pytest.raises(TypeError, match="marginals\\[1\\]"):
        MockBackend(marginals=[Bernoulli(), "beta"])
    with pytest.raises(ValueError, match="channel_names"):
        MockBackend(channel_names=["a", "b"])
    with pytest.raises(ValueError, match="difficulty"):
        MockBackend(difficulty=-0.1)
    with pytest.raises(TypeError, match="seed"):
        MockBackend(seed=1.5)
    backend = MockBackend()
    with pytest.raises(ValueError, match="m must be >= 1"):
        backend.generate("p", None, 0, 0)
    with pytest.raises(ValueError, match="seed_idx"):
        backend.generate("p", None, 4, -1)
    with pytest.raises(TypeError, match="m must be an int"):
        backend.generate("p", None, 4.0, 0)


# ----------------------------------------------------------------------------- difficulty


def test_zero_difficulty_gives_every_prompt_the_stated_marginals():
    backend = MockBackend(marginals=[Bernoulli(0.3), Gaussian(1.0, 2.0)])
    assert np.all(backend.prompt_shift("a") == 0)
    np.testing.assert_allclose(backend.prompt_means("a"), [0.3, 1.0])


def test_difficulty_shifts_prompts_deterministically():
    backend = MockBackend(marginals=[Bernoulli(0.5), Gaussian(0.0, 1.0)], difficulty=1.0, seed=7)
    shifts = np.array([backend.prompt_shift(f"p{i}") for i in range(400)])
    assert abs(shifts.std() - 1.0) < 0.15  # delta ~ N(0, 1): 400 prompts, SE ~ 0.035
    np.testing.assert_array_equal(backend.prompt_shift("p3"), shifts[3])
    other = MockBackend(marginals=backend.marginals, difficulty=1.0, seed=8)
    assert not np.array_equal(other.prompt_shift("p3"), shifts[3])


@pytest.mark.parametrize("prompt", ["easy?", "hard?", "p17"])
def test_per_prompt_rates_match_prompt_means(prompt):
    backend = MockBackend(marginals=[Bernoulli(0.5), Beta(2, 2), Uniform(0, 10)], difficulty=0.8, seed=1)
    x = backend.generate(prompt, None, N, 0)
    means = backend.prompt_means(prompt)
    rate = means[0]
    assert abs(x[:, 0].mean() - rate) <= 5 * np.sqrt(rate * (1 - rate) / N)
    assert abs(x[:, 1].mean() - means[1]) <= 5 * 0.5 / np.sqrt(N)
    assert abs(x[:, 2].mean() - means[2]) <= 5 * 10 / np.sqrt(12 * N)


# ----------------------------------------------------------------------------- seeding


def test_same_inputs_same_draws_and_independent_keys():
    a, b = MockBackend(seed=3), MockBackend(seed=3)
    np.testing.assert_array_equal(a.generate("q", None, 8, 5), b.generate("q", "ignored gold", 8, 5))
    assert not np.array_equal(a.generate("q", None, 8, 5), a.generate("q", None, 8, 6))
    assert not np.array_equal(a.generate("q", None, 8, 5), a.generate("r", None, 8, 5))
    assert not np.array_equal(a.generate("q", None, 8, 5), MockBackend(seed=4).generate("q", None, 8, 5))


def test_smaller_group_is_prefix_of_larger():
    backend = MockBackend(difficulty=0.5)
    np.testing.assert_array_equal(backend.generate("q", None, 4, 2), backend.generate("q", None, 16, 2)[:4])


def test_chat_prompts_are_seedable():
    chat = [{"role": "user", "content": "hi"}]
    backend = MockBackend()
    np.testing.assert_array_equal(backend.generate(chat, None, 4, 0), backend.generate(list(chat), None, 4, 0))


def test_stable_hash_is_pinned_and_keyed():
    # Pinned values: a change here silently reshuffles every corpus ever generated.
    assert stable_hash64("p0") == 1505868520176372616
    assert stable_hash64("mock-rollouts", "p0", 3) == 6674080197614393071
    assert stable_hash64("ab", "c") != stable_hash64("a", "bc")
    assert stable_hash64(1) != stable_hash64("1")
    assert 0 <= stable_hash64("x") < 2**64
    assert seed_sequence(0, "k").entropy == seed_sequence(0, "k").entropy
    with pytest.raises(ValueError):
        make_rng(-1, "k")
    with pytest.raises(TypeError, match="stable seed"):
        stable_hash64(object())


_CHILD = """
import json, sys, numpy as np
from multireward_grpo.generation import MockBackend
b = MockBackend(C=np.array([[1, .5, 0], [.5, 1, 0], [0, 0, 1]]), difficulty=0.5, seed=11)
print(json.dumps([b.generate(f"p{i}", "0", 8, k).tolist() for i in range(3) for k in range(3)]))
"""


def test_draws_identical_across_processes_with_different_hash_seeds():
    b = MockBackend(C=np.array([[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]]), difficulty=0.5, seed=11)
    here = [b.generate(f"p{i}", "0", 8, k).tolist() for i in range(3) for k in range(3)]
    for hash_seed in ("1", "98765"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": SRC}
        out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
        assert json.loads(out.stdout) == here


def test_describe_is_json_and_repr_is_short():
    backend = MockBackend(marginals=[Bernoulli(0.4), Gaussian(1, 2)], difficulty=[0.1, 0.2], seed=5)
    info = json.loads(json.dumps(backend.describe()))
    assert info["seed"] == 5 and info["marginals"][0] == {"kind": "Bernoulli", "rate": 0.4}
    assert "R=2" in repr(backend)


def test_import_is_light():
    code = (
        "import sys, multireward_grpo.generation\n"
        "heavy = [m for m in ('torch', 'pyarrow', 'pandas', 'transformers', 'tqdm') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": SRC},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
