"""Plots of the theory harness: files written, numbers returned, inputs checked."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from scipy.stats import norm

from multireward_grpo import viz
from multireward_grpo.analysis.thm3 import Thm3Result, analyze

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000


def make_result(m=8, realized_na=None, predicted_na=None, realized_an=None, *, tau2=1.0, P=20, seed=0, **extra):
    """A Thm3Result built by hand, so the plotted numbers are known exactly."""
    rng = np.random.default_rng(seed)
    pred_na = np.asarray(predicted_na if predicted_na is not None else rng.uniform(0.5, 2.0, P) / m, float)
    real_na = np.asarray(realized_na if realized_na is not None else pred_na, float)
    real_an = np.asarray(realized_an if realized_an is not None else np.full(pred_na.size, tau2 / m), float)
    P = pred_na.size
    fields = {
        "m": m, "P": P, "K": 50, "w": np.ones(3), "realized_an": real_an, "realized_na": real_na,
        "predicted_per_prompt": pred_na, "predicted_pooled": float(pred_na.mean()),
        "influence_an": np.array([0.6, 0.3, 0.1]), "influence_na": np.array([0.5, 0.3, 0.2]),
        "pooled_C": np.eye(3), "tau2": tau2, "an_law": tau2 / m,
        "realized": {"na": real_na, "an": real_an},
        "predicted": {"na": pred_na, "an": np.full(P, tau2 / m)},
        "ratio_pooled": {"na": real_na.sum() / pred_na.sum(), "an": real_an.sum() / (P * tau2 / m)},
        "ratio_ci": {"na": (0.9, 1.1), "an": (0.95, 1.05)},
    }
    fields.update(extra)
    return Thm3Result(**fields)


# --------------------------------------------------------------------------- import contract


def test_import_does_not_load_matplotlib():
    code = "import sys, multireward_grpo.viz; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r'pip install "multireward-grpo\[viz\]"'):
        viz.plot_money_scatter(make_result(), tmp_path / "x.png")


# --------------------------------------------------------------------------- money scatter


def test_money_scatter_perfect_law_has_unit_slope(tmp_path):
    res = make_result()
    out = viz.plot_money_scatter(res, tmp_path / "money.png", " (exact)")
    _assert_png(tmp_path / "money.png")
    assert out["slope"] == pytest.approx(1.0, abs=1e-12)
    assert out["r2"] == pytest.approx(1.0, abs=1e-12)
    assert out["intercept"] == pytest.approx(0.0, abs=1e-12)
    assert out["n_points"] == res.P
    assert out["ratio_pooled"] == res.ratio_pooled
    assert out["ratio_ci"]["na"] == (0.9, 1.1)


def test_money_scatter_power_law_slope(tmp_path):
    pred = np.geomspace(0.01, 1.0, 15)
    out = viz.plot_money_scatter(make_result(predicted_na=pred, realized_na=2.0 * pred**0.5), tmp_path / "p.png",
                                 title="custom title")
    assert out["slope"] == pytest.approx(0.5, abs=1e-12)
    assert out["intercept"] == pytest.approx(np.log(2.0), abs=1e-12)
    assert out["r2"] == pytest.approx(1.0, abs=1e-12)


def test_money_scatter_equal_predictions_give_nan_slope(tmp_path):
    out = viz.plot_money_scatter(make_result(predicted_na=np.full(5, 0.2), realized_na=[0.1, 0.2, 0.3, 0.2, 0.25]),
                                 tmp_path / "flat.png")
    assert np.isnan(out["slope"]) and np.isnan(out["r2"])
    _assert_png(tmp_path / "flat.png")


def test_money_scatter_on_analyze_output(tmp_path):
    rng = np.random.default_rng(1)
    rewards = rng.normal(size=(12, 20, 8, 3))
    res = analyze(rewards, w=np.array([1.0, 1.0, 0.5]), modes=("na", "an", "single"), n_resamples=200)
    out = viz.plot_money_scatter(res, tmp_path / "a.png")
    _assert_png(tmp_path / "a.png")
    assert out["n_points"] == 12 and set(out["n_dropped"]) == {"na", "an", "single"}
    assert out["ratio_pooled"]["na"] == res.ratio_pooled["na"]
    x, y = np.log(res.predicted["na"]), np.log(res.realized["na"])
    assert out["slope"] == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-10)


def test_money_scatter_nonpositive_raises_or_drops(tmp_path):
    real = np.array([0.1, 0.0, 0.2, 0.15])
    res = make_result(predicted_na=[0.1, 0.1, 0.2, 0.15], realized_na=real)
    with pytest.raises(ValueError, match="drop_nonpositive=True"):
        viz.plot_money_scatter(res, tmp_path / "z.png")
    out = viz.plot_money_scatter(res, tmp_path / "z.png", drop_nonpositive=True)
    assert out["n_dropped"] == {"na": 1, "an": 0} and out["n_points"] == 3


def test_money_scatter_mismatched_lengths(tmp_path):
    res = make_result(predicted_na=[0.1, 0.2, 0.3], realized_na=[0.1, 0.2])
    with pytest.raises(ValueError, match="2 entries but 3"):
        viz.plot_money_scatter(res, tmp_path / "bad.png")


# --------------------------------------------------------------------------- mse vs m


def _results_1_over_m(ms, P=10):
    rng = np.random.default_rng(3)
    shape = rng.uniform(0.5, 1.5, P)  # the same prompt mix at every m: the pooled mean is exactly c/m
    return {m: make_result(m, realized_na=2.0 * shape / m, predicted_na=2.0 * shape / m,
                           realized_an=shape / m, seed=m) for m in ms}


def test_mse_vs_m_exact_inverse_m_slope(tmp_path):
    results = _results_1_over_m([4, 8, 16, 32])
    out = viz.plot_mse_vs_m(results, tmp_path / "m.png")
    _assert_png(tmp_path / "m.png")
    assert out["m"] == [4, 8, 16, 32]
    assert out["slopes"]["na"] == pytest.approx(-1.0, abs=1e-12)
    assert out["slopes"]["an"] == pytest.approx(-1.0, abs=1e-12)
    assert out["predicted"]["an"] == pytest.approx([1 / 4, 1 / 8, 1 / 16, 1 / 32])
    assert out["predicted"]["na"] == pytest.approx([results[m].predicted_pooled for m in out["m"]])


def test_mse_vs_m_error_bars_are_standard_errors(tmp_path):
    results = _results_1_over_m([4, 16])
    out = viz.plot_mse_vs_m(list(results.values())[::-1], tmp_path / "seq.png", title="t")
    z = norm.ppf(0.975)
    for i, m in enumerate([4, 16]):
        real = results[m].realized["na"]
        se = np.sqrt(sum((r - real.mean()) ** 2 for r in real) / (real.size - 1) / real.size)
        assert out["error"]["na"][i] == pytest.approx(z * se, rel=1e-12)
        assert out["realized_mean"]["na"][i] == pytest.approx(sum(real) / real.size, rel=1e-12)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({}, ">= 2 distinct values of m"),
        ([], ">= 2 distinct values of m"),
        ({8: make_result(8)}, ">= 2 distinct values of m"),
        ({4: make_result(8), 8: make_result(8)}, "key each result by its own m"),
        ([make_result(8), make_result(8)], "one result per group size"),
        ([make_result(4, realized_an=np.zeros(20)), make_result(8)], "must be > 0 on a log axis"),
    ],
)
def test_mse_vs_m_bad_inputs(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        viz.plot_mse_vs_m(bad, tmp_path / "bad.png")


# --------------------------------------------------------------------------- influence


def test_influence_shares_from_result_and_oracle(tmp_path):
    res = make_result()
    oracle = {"na": [1.0, 1.0, 2.0]}
    out = viz.plot_influence(res, tmp_path / "i.png", oracle=oracle, channel_names=["acc", "fmt", "len"])
    _assert_png(tmp_path / "i.png")
    assert out["shares"]["na"] == pytest.approx([0.5, 0.3, 0.2])
    assert out["shares"]["an"] == pytest.approx([0.6, 0.3, 0.1])
    assert out["oracle_shares"]["na"] == pytest.approx([0.25, 0.25, 0.5])
    assert out["channels"] == ["acc", "fmt", "len"]


def test_influence_from_dict_with_extra_mode_and_negative_channel(tmp_path):
    infl = {"na": [2.0, -1.0, 1.0], "an": [3.0, 0.5, 0.5], "single": [1.0, 0.0, 0.0]}
    out = viz.plot_influence(infl, tmp_path / "d.png", normalize=False)
    assert out["shares"]["na"] == pytest.approx([0.5, -0.25, 0.25])
    assert out["shares"]["single"] == pytest.approx([1.0, 0.0, 0.0])
    assert out["channels"] == ["ch0", "ch1", "ch2"]
    _assert_png(tmp_path / "d.png")


@pytest.mark.parametrize(
    "infl, kwargs, match",
    [
        ({}, {}, "no influences"),
        ({"na": [1.0, 2.0], "an": [1.0, 2.0, 3.0]}, {}, "3 entries but 2"),
        ({"na": [1.0, 2.0]}, {"oracle": {"an": [1.0, 1.0]}}, "oracle has mode 'an'"),
        ({"na": [1.0, 2.0]}, {"oracle": {"na": [1.0]}}, "1 entries but 2"),
        ({"na": [1.0, 2.0]}, {"channel_names": ["a"]}, "1 names but there are 2"),
        ({"na": [1.0, np.nan]}, {}, "must be finite"),
    ],
)
def test_influence_bad_inputs(tmp_path, infl, kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.plot_influence(infl, tmp_path / "bad.png", **kwargs)


# --------------------------------------------------------------------------- bias vs gamma


def test_bias_zero_crossing_of_linear_curve(tmp_path):
    gammas = np.linspace(0.0, 1.0, 7)  # the root 0.3 is not on the grid
    beta = 2.0 * (gammas - 0.3)
    pred = 1.5 * (gammas - 0.4)
    out = viz.plot_bias_vs_gamma(gammas[::-1], beta[::-1], np.full(7, 0.05)[::-1], pred[::-1],
                                 tmp_path / "b.png", gamma_star=0.4)
    _assert_png(tmp_path / "b.png")
    assert out["crossing"] == pytest.approx(0.3, abs=1e-12)
    assert out["crossings"] == pytest.approx([0.3])
    assert out["crossing_predicted"] == pytest.approx(0.4, abs=1e-12)
    assert out["gamma_star"] == 0.4


def test_bias_crossings_on_grid_points_and_none(tmp_path):
    gammas = np.array([0.0, 0.5, 1.0, 1.5])
    out = viz.plot_bias_vs_gamma(gammas, [-1.0, 0.0, 1.0, -1.0], np.zeros(4), None, tmp_path / "c.png")
    assert out["crossings"] == pytest.approx([0.5, 1.25])
    assert np.isnan(out["crossing_predicted"]) and out["gamma_star"] is None
    out = viz.plot_bias_vs_gamma(gammas, [1.0, 2.0, 3.0, 4.0], np.ones(4), None, tmp_path / "n.png")
    assert np.isnan(out["crossing"]) and out["crossings"] == []


@pytest.mark.parametrize(
    "args, match",
    [
        (([0.0, 1.0], [0.1], [0.1, 0.1], None), "1 entries but 2"),
        (([0.0, 1.0], [0.1, 0.2], [0.1, 0.1], [0.0]), "1 entries but 2"),
        (([0.5], [0.1], [0.1], None), ">= 2 distinct values"),
        (([0.5, 0.5], [0.1, 0.2], [0.1, 0.1], None), ">= 2 distinct values"),
        (([], [], [], None), "non-empty"),
        (([0.0, 1.0], [0.1, 0.2], [-0.1, 0.1], None), "stderr must be >= 0"),
        (([0.0, 1.0], [0.1, np.inf], [0.1, 0.1], None), "must be finite"),
    ],
)
def test_bias_bad_inputs(tmp_path, args, match):
    with pytest.raises(ValueError, match=match):
        viz.plot_bias_vs_gamma(*args, tmp_path / "bad.png")


# --------------------------------------------------------------------------- training curves


def _loop_trailing_mean(values, window):
    out = []
    for t in range(len(values)):
        chunk = [v for v in values[max(0, t - window + 1):t + 1] if np.isfinite(v)]
        out.append(sum(chunk) / len(chunk) if chunk else np.nan)
    return np.array(out)


@pytest.mark.parametrize("window", [1, 2, 5, 40])
def test_trailing_mean_matches_a_loop(window):
    values = np.random.default_rng(3).normal(size=30)
    values[[4, 5, 6, 7, 8, 20]] = np.nan  # a run of NaNs longer than a small window
    np.testing.assert_allclose(viz.trailing_mean(values, window), _loop_trailing_mean(values, window),
                               rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("window", [0, -1, 2.5, True])
def test_trailing_mean_rejects_bad_windows(window):
    with pytest.raises(ValueError, match="window"):
        viz.trailing_mean([1.0, 2.0], window)


def _history(T=12, R=3):
    rng = np.random.default_rng(0)
    records = []
    for t in range(1, T + 1):
        record = {"step": t, "mean_reward": float(rng.uniform()), "kl": 0.01 * t, "loss": 0.0}
        record.update({f"mean_channel_{c}": float(rng.uniform()) for c in range(R)})
        records.append(record)
    return records


def test_training_curves_plot_the_history(tmp_path):
    history = _history()
    out = viz.plot_training_curves(history, tmp_path / "curves.png", channel_names=["a", "b", "c"], window=4)
    _assert_png(out["path"])
    np.testing.assert_array_equal(out["steps"], np.arange(1, 13))
    assert list(out["smoothed"]) == ["mean reward", "a", "b", "c"]
    expected = _loop_trailing_mean([r["mean_channel_1"] for r in history], 4)
    np.testing.assert_allclose(out["smoothed"]["b"], expected, rtol=1e-12)


def test_training_curves_check_their_input(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        viz.plot_training_curves([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="'kl'"):
        viz.plot_training_curves([{"step": 1, "mean_reward": 0.5}], tmp_path / "x.png")
    with pytest.raises(ValueError, match="3 channels"):
        viz.plot_training_curves(_history(), tmp_path / "x.png", channel_names=["a"])
    broken = _history()
    del broken[5]["mean_channel_2"]
    with pytest.raises(ValueError, match="mean_channel_2"):
        viz.plot_training_curves(broken, tmp_path / "x.png")


# --------------------------------------------------------------------------- saving: atomic, never through a link


def _draw_each(tmp_path):
    """One call per plot function, each writing to the path it is given."""
    from multireward_grpo.train.evaluation import EvalResult

    results = _results_1_over_m([4, 8])
    gammas = np.linspace(0.0, 1.0, 5)
    evals = {"base": EvalResult(("a", "b"), np.array([0.3, 0.5]), np.array([0.02, 0.03]), 0.8, 0.04, 10, 4,
                                np.zeros((10, 2)))}
    return {
        "money": lambda path: viz.plot_money_scatter(make_result(), path),
        "mse_vs_m": lambda path: viz.plot_mse_vs_m(results, path),
        "influence": lambda path: viz.plot_influence(make_result(), path),
        "bias": lambda path: viz.plot_bias_vs_gamma(gammas, gammas - 0.5, np.full(5, 0.01), None, path),
        "eval": lambda path: viz.plot_eval_comparison(evals, path),
        "curves": lambda path: viz.plot_training_curves(_history(), path),
    }


@pytest.mark.parametrize("kind", ["money", "mse_vs_m", "influence", "bias", "eval", "curves"])
def test_a_symlink_at_the_target_is_replaced_not_written_through(tmp_path, kind):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"keep me")
    target = tmp_path / "plots" / "figure.png"
    target.parent.mkdir()
    target.symlink_to(victim)
    out = _draw_each(tmp_path)[kind](target)
    assert out["path"] == str(target)
    assert not target.is_symlink()
    _assert_png(target)
    assert victim.read_bytes() == b"keep me"
    assert [p.name for p in target.parent.iterdir()] == ["figure.png"]  # no temporary file left behind


@pytest.mark.parametrize(("suffix", "magic"), [(".pdf", b"%PDF"), (".svg", b"<?xml"), ("", PNG_MAGIC), (".PNG", PNG_MAGIC)])
def test_the_suffix_sets_the_format(tmp_path, suffix, magic):
    path = tmp_path / f"figure{suffix}"
    out = viz.plot_money_scatter(make_result(), path)
    assert out["path"] == str(path) and path.read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_an_unknown_suffix_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"'\.xyz'.*png"):
        viz.plot_money_scatter(make_result(), tmp_path / "figure.xyz")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_draw_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "money.png"
    path.write_bytes(b"old figure")

    def broken_savefig(self, *args, **kwargs):
        raise RuntimeError("renderer failed")

    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="renderer failed"):
        viz.plot_money_scatter(make_result(), path)
    assert path.read_bytes() == b"old figure"
    assert [p.name for p in tmp_path.iterdir()] == ["money.png"]


# --------------------------------------------------------------------------- the money plot's fit line


def _noise_width(K, level=0.95):
    """Full width, on the log scale, of one prompt's interval: mean of K scaled chi2(1) draws."""
    return 2 * norm.ppf(0.5 + level / 2) * np.sqrt(2.0 / K)


@pytest.mark.parametrize("K", [50, 200])
def test_fit_line_only_when_predictions_span_more_than_the_seed_noise(tmp_path, K):
    width = _noise_width(K)
    narrow = 0.1 * np.exp(np.linspace(0.0, 0.9 * width, 12))
    wide = 0.1 * np.exp(np.linspace(0.0, 1.1 * width, 12))
    out = viz.plot_money_scatter(make_result(predicted_na=narrow, K=K), tmp_path / "narrow.png")
    assert out["fit_shown"] is False
    assert not any("fit" in label for label in out["legend"])
    assert "span" in out["fit_reason"] and np.isfinite(out["slope"])  # the slope is still returned
    out = viz.plot_money_scatter(make_result(predicted_na=wide, K=K), tmp_path / "wide.png")
    assert out["fit_shown"] is True
    assert any(label.startswith("NA least-squares fit of log realized on log predicted") for label in out["legend"])


def test_fit_line_can_be_forced_either_way(tmp_path):
    flat = make_result(predicted_na=np.full(6, 0.2), realized_na=[0.1, 0.2, 0.3, 0.2, 0.25, 0.2])
    out = viz.plot_money_scatter(flat, tmp_path / "a.png", fit_line=True)
    assert out["fit_shown"] is False and "equal" in out["fit_reason"]  # no line through one x value
    wide = make_result(predicted_na=np.geomspace(0.01, 1.0, 8))
    assert viz.plot_money_scatter(wide, tmp_path / "b.png", fit_line=False)["fit_shown"] is False
    narrow = make_result(predicted_na=0.1 * np.exp(np.linspace(0, 0.01, 8)))
    assert viz.plot_money_scatter(narrow, tmp_path / "c.png", fit_line=True)["fit_shown"] is True
    with pytest.raises(ValueError, match="fit_line must be"):
        viz.plot_money_scatter(wide, tmp_path / "d.png", fit_line="sometimes")


def test_thm3_check_on_equal_prompts_draws_no_fit_line(tmp_path, monkeypatch):
    """Every mock prompt has the same correlation: the predictions are equal up to noise."""
    from multireward_grpo.cli import main

    calls = _record(monkeypatch, "plot_money_scatter")
    assert main(["thm3-check", "--n-prompts", "12", "--K", "100", "--plot", str(tmp_path), "--no-progress",
                 "--n-resamples", "50"]) == 0
    (out,) = calls
    assert out["fit_shown"] is False


# --------------------------------------------------------------------------- titles name what was run


def _record(monkeypatch, name):
    """Wrap viz.<name> so a test sees what each call returned (the CLI imports viz lazily)."""
    calls = []
    original = getattr(viz, name)

    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out)
        return out

    monkeypatch.setattr(viz, name, wrapper)
    return calls


def test_titles_name_the_source(tmp_path):
    source = "rollouts.parquet, hf, Qwen/Qwen2.5-0.5B-Instruct"
    out = viz.plot_money_scatter(make_result(), tmp_path / "a.png", source=source)
    assert source in out["title"] and "m=8" in out["title"]
    out = viz.plot_mse_vs_m(_results_1_over_m([4, 8]), tmp_path / "b.png", source=source)
    assert source in out["title"]
    out = viz.plot_influence(make_result(), tmp_path / "c.png", source=source)
    assert source in out["title"]
    gammas = np.linspace(0.0, 1.0, 5)
    out = viz.plot_bias_vs_gamma(gammas, gammas - 0.5, np.full(5, 0.01), None, tmp_path / "d.png", source="sim")
    assert out["title"].endswith("sim")
    out = viz.plot_money_scatter(make_result(), tmp_path / "e.png", source=source, title="mine")
    assert out["title"] == "mine"


def test_training_and_eval_titles_name_model_mode_and_task(tmp_path):
    from multireward_grpo.train.evaluation import EvalResult

    out = viz.plot_training_curves(_history(), tmp_path / "c.png", model="HuggingFaceTB/SmolLM2-135M-Instruct",
                                   mode="na")
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in out["title"] and "mode na" in out["title"]
    evals = {"base": EvalResult(("a",), np.array([0.3]), np.array([0.02]), 0.3, 0.02, 10, 4, np.zeros((10, 1)))}
    out = viz.plot_eval_comparison(evals, tmp_path / "e.png", model="org/base-model", task="fintech")
    assert "org/base-model" in out["title"] and "fintech" in out["title"]


def test_a_long_source_is_shortened_in_the_middle(tmp_path):
    source = "/very/long/" + "x" * 200 + "/model-folder"
    title = viz.plot_training_curves(_history(), tmp_path / "c.png", model=source, mode="an")["title"]
    assert "model-folder" in title and "…" in title and max(len(line) for line in title.splitlines()) <= 90


def test_cli_plots_name_backend_corpus_and_model(tmp_path, monkeypatch, capsys):
    from multireward_grpo.cli import main
    from multireward_grpo.generation import MockBackend, run_corpus, save_corpus

    money = _record(monkeypatch, "plot_money_scatter")
    trend = _record(monkeypatch, "plot_mse_vs_m")
    assert main(["thm3-check", "--n-prompts", "6", "--K", "30", "--m", "4,8", "--rho", "0.3", "--plot",
                 str(tmp_path / "a"), "--no-progress", "--n-resamples", "20", "--tol", "0.5"]) in (0, 1)
    assert all("MockBackend" in out["title"] and "rho=0.3" in out["title"] for out in money + trend)
    corpus = run_corpus(MockBackend(C=np.eye(2), seed=1), [(f"p{i}", "0") for i in range(5)], m_grid=[4], K_seeds=20)
    save_corpus(corpus, tmp_path / "rollouts.jsonl")
    money.clear()
    main(["analyze", str(tmp_path / "rollouts.jsonl"), "--plot", str(tmp_path / "b"), "--no-progress",
          "--n-resamples", "20"])
    assert "rollouts.jsonl" in money[0]["title"] and "MockBackend" in money[0]["title"]
    influence = _record(monkeypatch, "plot_influence")
    main(["prop1", "--n-groups", "50", "--m", "8", "--plot", str(tmp_path / "c")])
    assert "simulated" in influence[0]["title"]
    bias = _record(monkeypatch, "plot_bias_vs_gamma")
    main(["prop4", "--n", "2000", "--gammas", "0,0.5,1.5", "--plot", str(tmp_path / "d")])
    assert "p_a=0.6" in bias[0]["title"]
    capsys.readouterr()


def test_cli_train_and_eval_plots_name_model_and_mode(tmp_path, monkeypatch, capsys):
    """The CLI hands the config's model and mode to the curves, the base model and task to the eval chart."""
    import argparse

    import multireward_grpo.train as train_pkg
    from multireward_grpo.cli import main
    from multireward_grpo.cli.train import _report_eval
    from multireward_grpo.train.evaluation import EvalResult

    class FakeTrainer:
        def __init__(self, config, reward, prompts, **kwargs):
            self.config = config

        def train(self):
            return _history(T=8)

    monkeypatch.setattr(train_pkg, "GRPOTrainer", FakeTrainer)
    curves = _record(monkeypatch, "plot_training_curves")
    assert main(["train", "--model", "org/tiny-model", "--mode", "an", "--n-scenarios", "4",
                 "--out-dir", str(tmp_path / "run")]) == 0
    assert "org/tiny-model" in curves[0]["title"] and "mode an" in curves[0]["title"]
    chart = _record(monkeypatch, "plot_eval_comparison")
    evals = {"base": EvalResult(("compliance", "politeness", "action"), np.array([0.9, 0.4, 0.1]),
                                np.full(3, 0.02), 1.35, 0.04, 10, 4, np.zeros((10, 3)))}
    args = argparse.Namespace(plot=str(tmp_path / "eval"), json=True, m=4, model="org/base-model", task="fintech")
    assert _report_eval(evals, evals["base"].channel_names, args) == 0
    assert "org/base-model" in chart[0]["title"] and "fintech" in chart[0]["title"]
    capsys.readouterr()


def test_describe_corpus_names_file_backend_and_model():
    from types import SimpleNamespace

    real = SimpleNamespace(metadata={"backend": {"backend": "hf", "model": "Qwen/Qwen2.5-0.5B-Instruct", "seed": 0}})
    assert viz.describe_corpus(real, "/data/run1/rollouts.parquet") == "rollouts.parquet, hf, Qwen/Qwen2.5-0.5B-Instruct"
    assert viz.describe_corpus(SimpleNamespace(metadata={}), None) == "corpus"
    assert viz.describe_corpus(SimpleNamespace(metadata={"backend": "odd"}), "c.jsonl") == "c.jsonl"


# --------------------------------------------------------------------------- law ratios per m


def test_law_ratios_draw_the_results_ratios_and_intervals(tmp_path):
    rng = np.random.default_rng(3)
    results = [analyze(rng.normal(size=(10, 30, m, 3)), w=np.array([1.0, 1.0, 0.5]), n_resamples=200,
                       score_seed=m) for m in (8, 4)]  # unsorted on purpose
    out = viz.plot_law_ratios(results, tmp_path / "ratios.png", source="gaussian mock")
    _assert_png(tmp_path / "ratios.png")
    assert out["m"] == [4, 8] and "gaussian mock" in out["title"]
    by_m = {r.m: r for r in results}
    population = out["series"]["NA / population law"]
    assert population["ratio"] == [by_m[m].population_ratio_pooled["na"] for m in (4, 8)]
    assert population["low"] == [by_m[m].population_ratio_ci["na"][0] for m in (4, 8)]
    conditional = out["series"]["AN / score model (conditional)"]
    assert conditional["high"] == [by_m[m].ratio_ci["an"][1] for m in (4, 8)]
    uncorrected = out["series"]["NA / law without finite-m correction"]["ratio"]
    assert uncorrected == [by_m[m].population_ratio_pooled["na_no_correction"] for m in (4, 8)]
    for m in (4, 8):  # Gaussian channels: the population law holds within its interval at every m
        low, high = by_m[m].population_ratio_ci["na"]
        assert low <= 1.0 <= high


def test_law_ratios_without_a_population_law_draw_the_conditional_ratios(tmp_path):
    result = analyze(np.random.default_rng(0).normal(size=(6, 20, 4, 2)), w=np.array([1.0, 1.0]), n_resamples=100)
    result = dataclasses.replace(result, population_ratio_pooled={}, population_ratio_ci={})
    out = viz.plot_law_ratios(result, tmp_path / "one.png")
    assert set(out["series"]) == {"NA / score model (conditional)", "AN / score model (conditional)"}
    assert out["m"] == [4]


def test_law_ratios_refuse_what_they_cannot_draw(tmp_path):
    result = analyze(np.random.default_rng(0).normal(size=(6, 20, 4, 2)), w=np.array([1.0, 1.0]), n_resamples=100)
    with pytest.raises(ValueError, match=r"one result per group size; got m = \[4, 4\]"):
        viz.plot_law_ratios([result, result], tmp_path / "x.png")
    empty = dataclasses.replace(result, population_ratio_pooled={}, ratio_pooled={"na": float("nan")})
    with pytest.raises(ValueError, match="no finite positive ratio"):
        viz.plot_law_ratios(empty, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
