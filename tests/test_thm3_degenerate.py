"""Honest reports on degenerate data, real scores in analyze, and the analyze CLI on corpus files."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from multireward_grpo.analysis.thm3 import analyze, score_reward_correlation
from multireward_grpo.cli import main
from multireward_grpo.generation import Corpus, MockBackend, run_corpus, save_corpus
from multireward_grpo.report import format_summary


def _gated(rng, P=6, K=10, m=4, pass_rate=0.1):
    """(correctness, length gated by it, format): correctness is rare, so both are mostly constant."""
    correct = (rng.random((P, K, m)) < pass_rate).astype(float)
    length = rng.random((P, K, m)) * correct
    fmt = rng.random((P, K, m))
    return np.stack([correct, length, fmt], axis=-1)


def test_mostly_constant_channel_warns_and_is_counted():
    rewards = _gated(np.random.default_rng(0))
    with pytest.warns(RuntimeWarning) as record:
        res = analyze(rewards, [1.0, 1.0, 0.5], n_resamples=0)
    warned = [str(w.message) for w in record]
    assert any("channel 0 is constant in" in text for text in warned)
    assert any("channel 1 is constant in" in text for text in warned)
    constant = np.array([[np.ptp(rewards[p, k, :, c]) == 0 for c in range(3)]
                         for p in range(6) for k in range(10)])  # loop reference
    assert res.degenerate_groups.tolist() == constant.sum(0).tolist()
    assert any("channel 1 is constant" in n for n in res.notes)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        analyze(rewards, [1.0, 1.0, 0.5], n_resamples=0, constant_share_warn=1.0)  # threshold above: silent


def test_constant_an_scalar_groups_and_their_law():
    rng = np.random.default_rng(1)
    rewards = _gated(rng)[..., :2]  # drop the continuous channel: w.r is constant wherever nothing passed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = analyze(rewards, [1.0, 1.0], n_resamples=0, tau2=2.0)
    scalar = rewards @ np.array([1.0, 1.0])
    constant = np.ptp(scalar, axis=2) == 0  # (P, K) loop reference
    assert res.an_constant_groups == int(constant.sum()) > 0
    assert res.an_law_constant_adjusted == pytest.approx(2.0 / 4 * (1 - constant.mean()), rel=1e-12)
    text = format_summary(res)
    assert "AN law given its constant-scalar groups" in text and "constant AN scalar" in text
    # the conditional AN prediction accounts for them exactly: (tau2/m) x share of varying groups per prompt
    np.testing.assert_allclose(res.predicted["an"], 2.0 / 4 * (1 - constant.mean(axis=1)), rtol=1e-6)


def test_pooled_matrix_is_not_called_a_correlation_when_its_diagonal_is_below_one():
    rng = np.random.default_rng(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        degenerate = format_summary(analyze(_gated(rng), [1.0, 1.0, 0.5], n_resamples=0))
    assert "NOT a correlation matrix" in degenerate and "pooled within-group correlation" not in degenerate
    gaussian = format_summary(analyze(rng.normal(size=(4, 5, 4, 2)), [1.0, 1.0], n_resamples=0))
    assert "pooled within-group correlation (Chat" in gaussian and "NOT a correlation" not in gaussian


def test_output_says_which_ratio_tests_the_law():
    text = format_summary(analyze(np.random.default_rng(3).normal(size=(4, 5, 4, 2)), [1.0, 1.0], n_resamples=20))
    assert "THIS ratio tests Theorem 3" in text and "it does not test the law" in text
    assert "no finite-m correction" in text


def test_long_channel_names_keep_columns_apart():
    names = ["correctness_of_the_final_answer", "length_in_tokens_gated_by_correctness"]
    res = analyze(np.random.default_rng(4).normal(size=(3, 4, 4, 2)), [1.0, 1.0], n_resamples=0)
    text = format_summary(res, channel_names=names)
    rows = text.split("influence Cov(A, z_l) per channel (Prop 1):\n")[1].splitlines()
    assert rows[0].split() == ["mode", *names]
    for row in rows[1:]:
        assert len(row.split()) == 3  # mode + one number per channel, never run together


def _real_scores_case(rng, P=5, K=40, m=4, coupling=0.0):
    rewards = rng.normal(size=(P, K, m, 2))
    scores = 0.5 + rng.normal(size=(P, K, m)) * np.arange(1, P + 1)[:, None, None] + coupling * rewards[..., 0]
    return rewards, scores


def test_given_scores_use_the_ddof1_variance_and_per_prompt_tau2():
    rng = np.random.default_rng(5)
    rewards, scores = _real_scores_case(rng)
    res = analyze(rewards, [1.0, 1.0], scores=scores, n_resamples=0)
    assert res.score_source == "given" and res.realized_estimator == "variance"
    tau2 = scores.reshape(5, -1).var(axis=1, ddof=1)
    np.testing.assert_allclose(res.tau2_per_prompt, tau2, rtol=1e-12)
    for p in range(5):  # loop reference of the realized NA MSE and the mean of ghat
        ghat = []
        for k in range(40):
            r = rewards[p, k]
            z = (r - r.mean(0)) / (r.std(0) + 1e-8)
            ghat.append(np.mean(z.sum(1) * scores[p, k]))
        assert res.realized["na"][p] == pytest.approx(np.var(ghat, ddof=1), rel=1e-9)
        assert res.ghat_mean["na"][p] == pytest.approx(np.mean(ghat), rel=1e-9, abs=1e-12)
    # a given tau2 keeps the second moment, as before
    assert analyze(rewards, [1.0, 1.0], scores=scores, tau2=1.0, n_resamples=0).realized_estimator == "second_moment"
    assert "variance of ghat across seeds (ddof 1)" in format_summary(res)


def test_score_reward_correlation_detects_dependence():
    rng = np.random.default_rng(6)
    rewards, scores = _real_scores_case(rng, P=4, K=100, coupling=2.0)
    corr = score_reward_correlation(scores, rewards)
    # loop reference: centre each prompt, then one Pearson correlation over all rollouts
    g = (scores - scores.mean(axis=(1, 2), keepdims=True)).ravel()
    for c in range(2):
        r = (rewards[..., c] - rewards[..., c].mean(axis=(1, 2), keepdims=True)).ravel()
        assert corr[c] == pytest.approx(np.sum(g * r) / np.sqrt(np.sum(g * g) * np.sum(r * r)), rel=1e-12)
    se = 1 / np.sqrt(rewards[..., 0].size)
    assert corr[0] > 10 * se and abs(corr[1]) < 4 * se
    res = analyze(rewards, [1.0, 0.0], scores=scores, n_resamples=0)
    mean, stderr = res.ghat_mean_pooled["na"]
    assert mean > 5 * stderr  # dependent scores: ghat has a mean (the policy gradient along v)


def test_constant_scores_need_a_tau2():
    rewards = np.random.default_rng(7).normal(size=(2, 3, 4, 2))
    with pytest.raises(ValueError, match="prompt 0 are all equal"):
        analyze(rewards, [1.0, 1.0], scores=np.ones((2, 3, 4)))


# --------------------------------------------------------------------------- CLI


def _corpus(tmp_path, scores=False):
    corpus = run_corpus(MockBackend(C=np.eye(3)), [f"q{i}" for i in range(4)], m_grid=[4], K_seeds=12, progress=False)
    if scores:
        rng = np.random.default_rng(0)
        corpus = Corpus(**{**{k: getattr(corpus, k) for k in ("prompts", "golds", "channel_names", "seed_indices",
                                                             "m_grid", "groups", "subsample_from_max", "metadata")},
                           "scores": {k: rng.normal(size=k[2]) for k in corpus.groups}})
    return save_corpus(corpus, tmp_path / "c.jsonl")


def test_pass_is_null_without_a_check(tmp_path, capsys):
    path = _corpus(tmp_path)
    assert main(["analyze", str(path), "--json", "--n-resamples", "0", "--no-progress"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["pass"] is None and payload["tol"] is None
    assert main(["analyze", str(path), "--json", "--n-resamples", "0", "--no-progress", "--tol", "10"]) == 0
    assert json.loads(capsys.readouterr().out)["pass"] is True


def test_tol_checks_the_population_law(tmp_path, capsys):
    path = _corpus(tmp_path)
    main(["analyze", str(path), "--json", "--n-resamples", "0", "--no-progress", "--tol", "1e-9"])
    failures = json.loads(capsys.readouterr().out)["failures"]
    assert any("population law" in f for f in failures)


def test_channels_on_a_corpus_file(tmp_path, capsys):
    path = _corpus(tmp_path)
    names = list(json.loads(path.read_text().splitlines()[0])["channels"])
    picked = [names[2], names[0]]
    assert main(["analyze", str(path), "--json", "--n-resamples", "0", "--no-progress",
                 "--channels", ",".join(picked)]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert len(result["w"]) == 2
    assert main(["analyze", str(path), "--n-resamples", "0", "--no-progress", "--channels", picked[0]]) == 0
    out = capsys.readouterr().out
    assert f"{picked[0]:>10}" in out
    assert main(["analyze", str(path), "--channels", "nope"]) == 2
    assert "not in this corpus" in capsys.readouterr().err
    pytest.importorskip("pyarrow")
    from multireward_grpo.generation import load_corpus

    parquet = save_corpus(load_corpus(path), tmp_path / "c.parquet")
    assert main(["analyze", str(parquet), "--json", "--n-resamples", "0", "--no-progress",
                 "--channels", ",".join(picked)]) == 0
    (again,) = json.loads(capsys.readouterr().out)["results"]
    assert again["realized"] == result["realized"]


def test_analyze_uses_stored_scores(tmp_path, capsys):
    path = _corpus(tmp_path, scores=True)
    assert main(["analyze", str(path), "--json", "--n-resamples", "0", "--no-progress"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["score_source"] == "given" and result["realized_estimator"] == "variance"
    assert main(["analyze", str(path), "--json", "--n-resamples", "0", "--no-progress", "--simulated-scores"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["score_source"] == "simulated"


def test_drop_incomplete_keeps_the_scores_of_the_prompts_it_keeps(tmp_path, capsys):
    from multireward_grpo.generation import load_corpus, pack_scores

    full = load_corpus(_corpus(tmp_path, scores=True))
    partial = Corpus(**{**{k: getattr(full, k) for k in ("prompts", "golds", "channel_names", "seed_indices",
                                                        "m_grid", "subsample_from_max", "metadata")},
                        "groups": {k: a for k, a in full.groups.items() if k != (1, 3, 4)},
                        "scores": {k: g for k, g in full.scores.items() if k != (1, 3, 4)}})
    path = save_corpus(partial, tmp_path / "partial.jsonl")
    assert main(["analyze", str(path), "--n-resamples", "0", "--no-progress"]) == 2  # a missing seed: refused
    capsys.readouterr()
    assert main(["analyze", str(path), "--json", "--n-resamples", "0", "--no-progress", "--drop-incomplete"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["P"] == 3 and result["score_source"] == "given"
    kept = pack_scores(full, 4, prompts=[0, 2, 3])
    np.testing.assert_allclose(result["tau2_per_prompt"], kept.reshape(3, -1).var(axis=1, ddof=1), rtol=1e-12)
