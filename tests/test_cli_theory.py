"""The theory subcommands: exit codes, JSON output, files, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from multireward_grpo.cli import main
from multireward_grpo.generation import MockBackend, run_corpus, save_corpus


def _json(capsys, argv):
    code = main(argv)
    return code, json.loads(capsys.readouterr().out)


def test_thm3_check_defaults_pass(capsys):
    code, payload = _json(capsys, ["thm3-check", "--json", "--n-prompts", "20", "--K", "100"])
    assert code == 0 and payload["pass"] is True
    (result,) = payload["results"]
    assert result["m"] == 8 and result["P"] == 20 and result["K"] == 100
    assert abs(result["ratio_pooled"]["na"] - 1) < 0.1
    assert result["predicted_population_exact"] is not None


def test_thm3_check_fails_outside_band(capsys):
    code = main(["thm3-check", "--n-prompts", "5", "--K", "20", "--tol", "1e-6"])
    out = capsys.readouterr().out
    assert code == 1 and "FAIL" in out and "outside 1 +- 1e-06" in out


def test_thm3_check_several_m_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code = main(["thm3-check", "--n-prompts", "8", "--K", "60", "--m", "4,8", "--plot", str(tmp_path),
                 "--marginals", "bernoulli-beta", "--condition", "0:1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert {p.name for p in tmp_path.iterdir()} >= {"money_scatter_m4.png", "money_scatter_m8.png", "mse_vs_m.png",
                                                    "law_ratios.png"}
    assert "conditioning: 0->1 (zero_fill)" in out


def test_analyze_file_jsonl_and_parquet(tmp_path, capsys):
    C = np.array([[1.0, 0.3], [0.3, 1.0]])
    corpus = run_corpus(MockBackend(C=C), [f"q{i}" for i in range(6)], m_grid=[4, 8], K_seeds=30, progress=False)
    for name in ("c.jsonl", "c.parquet"):
        if name.endswith("parquet"):
            pytest.importorskip("pyarrow")
        path = save_corpus(corpus, tmp_path / name)
        code, payload = _json(capsys, ["analyze", str(path), "--json", "--weights", "1,2", "--n-resamples", "50"])
        assert code == 0
        assert [r["m"] for r in payload["results"]] == [4, 8]
        assert payload["results"][0]["w"] == [1.0, 2.0]
    code = main(["analyze", str(tmp_path / "c.jsonl"), "--m", "8", "--tol", "1e-9"])
    assert code == 1 and "FAIL" in capsys.readouterr().out


def test_analyze_errors_are_one_line(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    corpus = run_corpus(MockBackend(), ["a", "b"], m_grid=[4], K_seeds=3, progress=False)
    path = save_corpus(corpus, tmp_path / "c.jsonl")
    assert main(["analyze", str(path), "--m", "16"]) == 2
    assert "pick --m from those" in capsys.readouterr().err
    assert main(["analyze", str(path), "--weights", "1,1"]) == 2
    assert "3 channels but w has shape (2,)" in capsys.readouterr().err


def test_bad_flag_values_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["thm3-check", "--condition", "0-1"])
    assert exc.value.code == 2
    assert "GATE:TARGET" in capsys.readouterr().err


def test_prop1_prop2_prop4(capsys):
    code, payload = _json(capsys, ["prop1", "--json", "--n-groups", "1500"])
    assert code == 0 and payload["pass"]
    an = payload["modes"]["an"]
    # AN influence is proportional to w_l sigma_l with C = I (Prop 1)
    np.testing.assert_allclose(an["oracle_shares"], np.array([1, 3, 0.5]) / 4.5, rtol=1e-12)
    code, payload = _json(capsys, ["prop2", "--json", "--levels", "3", "--weights", "1,1", "--sigmas", "1,1"])
    assert payload["resolution"] == {"an": 5, "na": 5} and payload["na_full"]["full"] is False
    code, payload = _json(capsys, ["prop4", "--json", "--n", "50000"])
    assert code == 0 and payload["gamma_star"] == pytest.approx(1.2)
    code = main(["prop4", "--n", "2000", "--max-z", "0"])
    assert code == 1


def test_ci_method_flag_reaches_the_harness(capsys):
    """--ci-method prompts below --ci-min-prompts gives no interval and says why; two_level gives one."""
    argv = ["thm3-check", "--json", "--n-prompts", "3", "--K", "40", "--n-resamples", "200"]
    with pytest.warns(RuntimeWarning, match="prompts"):
        code, payload = _json(capsys, argv + ["--ci-method", "prompts"])
    (result,) = payload["results"]
    assert result["ci_method"] == "prompts" and result["notes"]
    assert all(low is None or np.isnan(low) for low, _ in result["ratio_ci"].values())
    code, payload = _json(capsys, argv)
    (result,) = payload["results"]
    assert result["ci_method"] == "two_level"
    assert all(low < high for low, high in result["ratio_ci"].values())
    code, payload = _json(capsys, argv + ["--ci-method", "prompts", "--ci-min-prompts", "2"])
    (result,) = payload["results"]
    assert all(low < high for low, high in result["ratio_ci"].values())
