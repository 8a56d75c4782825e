"""CLI subcommands of the theory harness: thm3-check, analyze, prop1, prop2, prop4.

Checks exit 0 when the simulation agrees with the theory and 1 when it does
not, so they can gate a CI job; bad input exits 2 (see ``cli.main``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from multireward_grpo.cli.common import (
    Progress,
    add_json_flag,
    conditioning_rule,
    integer,
    integers,
    mode_names,
    names,
    number,
    numbers,
    print_json,
    weight_list,
)

# Estimators with a closed-form oracle influence (Prop 1)
_ORACLE_MODES = ("an", "na", "single", "gdpo")

# --------------------------------------------------------------------------- shared options


def _add_analysis_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by thm3-check and analyze."""
    parser.add_argument("--tau2", type=number(0.0, low_open=True), default=None,
                        help="variance of the score projections g, > 0 (default: 1 for simulated scores; estimated "
                             "per prompt from real score projections stored in a corpus)")
    parser.add_argument("--modes", type=mode_names(), default=["na", "an"],
                        help="estimators to analyse, comma-separated; na and an are always included (see `estimators`)")
    parser.add_argument("--condition", type=conditioning_rule, action="append", default=None,
                        metavar="GATE:TARGET[:METHOD[:GAMMA]]",
                        help="gate channel TARGET by channel GATE before the analysis (repeatable); "
                             "METHOD is zero_fill (default) or subgroup")
    parser.add_argument("--score-seed", type=integer(0), default=0,
                        help="seed of the simulated scores and the bootstrap (default 0)")
    parser.add_argument("--n-resamples", type=integer(0), default=2000,
                        help="bootstrap resamples for the ratio intervals; 0 skips them (default 2000)")
    parser.add_argument("--ci-method", choices=("two_level", "prompts"), default="two_level",
                        help="ratio intervals: two_level resamples prompts, then seeds within each prompt (valid "
                             "from one prompt up); prompts resamples prompts only and gives NaN below "
                             "--ci-min-prompts prompts (default two_level)")
    parser.add_argument("--ci-min-prompts", type=integer(1), default=10,
                        help="fewest prompts for --ci-method prompts (default 10)")
    parser.add_argument("--population-offdiag", choices=("resample", "gaussian", "fisher"), default="resample",
                        help="population law: off-diagonal E_m[Chat] by resampling each prompt's rollouts into groups "
                             "of m (any marginals), or from the prompt's correlation C_p with the exact Gaussian "
                             "(Hotelling) or Fisher correction (default resample); the diagonal is always exact")
    parser.add_argument("--n-partitions", type=integer(1), default=4,
                        help="random partitions per prompt for --population-offdiag resample (default 4)")
    parser.add_argument("--constant-share-warn", type=number(0.0, 1.0), default=0.5,
                        help="warn when a channel is constant in more than this share of the groups (default 0.5)")
    parser.add_argument("--plot", metavar="DIR", default=None, help="also write PNG plots into DIR (needs the viz extra)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_json_flag(parser)


def _load_input(path: str, channels, **kwargs):
    """``_load`` with a KeyError from a loader (a missing field) turned into a ValueError naming the file.

    The loaders themselves refuse a directory, an empty file or rows that are
    not JSON objects with one clear message (``RolloutFileError``).
    """
    try:
        return _load(path, channels, **kwargs)
    except KeyError as err:
        raise ValueError(f"could not read {path}: it has no field {err}") from None


def _ratio_failures(result, tol: float) -> list[str]:
    failures = []
    for mode in result.modes:
        ratio = result.ratio_pooled[mode]
        if not abs(ratio - 1.0) <= tol:
            failures.append(f"m={result.m} {mode}: realized/predicted = {ratio:.4f} is outside 1 +- {tol}")
    return failures


def _population_failures(result, tol: float) -> list[str]:
    """NA's realized MSE against the population law (exact E[Chat] for Gaussian channels)."""
    ratio = result.realized_na.mean() / result.predicted_population_exact
    if abs(ratio - 1.0) <= tol:
        return []
    return [f"m={result.m} na: realized / (tau2/m) w'E[Chat]w (population, exact) = {ratio:.4f} is outside 1 +- {tol}"]


def _check_payload(results, failures, tol) -> dict:
    # "pass" is null when no check ran (no --tol): nothing was tested, so nothing passed
    return {"pass": None if tol is None else not failures, "tol": tol, "failures": failures,
            "results": [r.to_dict() for r in results]}


def _population_law_failures(result, tol: float) -> list[str]:
    """The population-law ratios (the ones that test Theorem 3) outside ``1 +- tol``."""
    failures = []
    for mode in ("na", "an"):
        ratio = result.population_ratio_pooled[mode]
        if not abs(ratio - 1.0) <= tol:
            failures.append(f"m={result.m} {mode}: realized / population law = {ratio:.4f} is outside 1 +- {tol}")
    return failures


def _write_thm3_plots(results, out_dir: str, channel_names, source: str | None) -> list[str]:
    from multireward_grpo import viz

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for result in results:
        path = out / f"money_scatter_m{result.m}.png"
        viz.plot_money_scatter(result, str(path), source=source)
        written.append(str(path))
        path = out / f"influence_m{result.m}.png"
        viz.plot_influence(result, str(path), channel_names=channel_names, source=source)
        written.append(str(path))
    path = out / "law_ratios.png"
    viz.plot_law_ratios(results, str(path), source=source)
    written.append(str(path))
    if len(results) > 1:
        path = out / "mse_vs_m.png"
        viz.plot_mse_vs_m({r.m: r for r in results}, str(path), source=source)
        written.append(str(path))
    return written


def _analyze_all(tensors_by_m, w, args, *, C=None, scores_by_m=None):
    from multireward_grpo.analysis.thm3 import analyze

    results = []
    total = sum(t.shape[0] for t in tensors_by_m.values())
    bar, offset = Progress(total, "analyze", enabled=not args.no_progress), 0
    for m, rewards in tensors_by_m.items():
        results.append(analyze(
            rewards, w, args.score_seed, tau2=args.tau2, modes=args.modes, conditioning=args.condition, C=C,
            scores=(scores_by_m or {}).get(m), n_resamples=args.n_resamples, ci_method=args.ci_method,
            ci_min_prompts=args.ci_min_prompts, population_offdiag=args.population_offdiag,
            n_partitions=args.n_partitions, constant_share_warn=args.constant_share_warn,
            progress=lambda done, _t, o=offset: bar(o + done, total),
        ))
        offset += rewards.shape[0]
    bar.close()
    return results


def _report(results, failures, args, channel_names, tol, source: str | None = None) -> int:
    from multireward_grpo.report import format_summary

    plots = _write_thm3_plots(results, args.plot, channel_names, source) if args.plot else []
    if args.json:
        payload = _check_payload(results, failures, tol)
        payload["plots"] = plots
        print_json(payload)
    else:
        for result in results:
            print(format_summary(result, channel_names=channel_names))
            print()
        for path in plots:
            print(f"wrote {path}")
        if tol is not None:
            print("PASS: every checked ratio is within 1 +- {}".format(tol) if not failures
                  else "FAIL:\n  " + "\n  ".join(failures))
    return 1 if failures else 0


# --------------------------------------------------------------------------- thm3-check


def add_thm3_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rho", type=number(-1.0, 1.0), default=0.5,
                        help="latent correlation between channels 0 and 1 of the mock rewards (default 0.5)")
    parser.add_argument("--n-prompts", type=integer(1), default=40, help="number of prompts P (default 40)")
    parser.add_argument("--K", type=integer(2), default=200, help="seeds (independent groups) per prompt (default 200)")
    parser.add_argument("--m", type=integers(2), default=[8],
                        help="group size, or comma-separated sizes to check each (default 8)")
    parser.add_argument("--weights", type=weight_list, default=[1.0, 1.0, 0.5],
                        help="objective weights w, one per channel; their count sets R (default 1,1,0.5)")
    parser.add_argument("--marginals", choices=["gaussian", "bernoulli-beta"], default="gaussian",
                        help="mock reward marginals: gaussian = N(0,1) channels (default), for which the population "
                             "law (tau2/m) w'E[Chat]w with the exact E[Chat] is checked too; bernoulli-beta = a "
                             "Bernoulli(0.5) gate and Beta(2,2) channels (the MockBackend default)")
    parser.add_argument("--seed", type=integer(0), default=0, help="seed of the mock rewards (default 0)")
    parser.add_argument("--tol", type=number(0.0, low_open=True), default=0.1,
                        help="pass band: exit 1 unless every pooled realized/predicted ratio is within 1 +- tol (default 0.1)")
    _add_analysis_options(parser)


def _mock_correlation(R: int, rho: float):
    import numpy as np

    C = np.eye(R)
    if R >= 2:
        C[0, 1] = C[1, 0] = rho
    return C


def run_thm3_check(args: argparse.Namespace) -> int:
    import numpy as np

    from multireward_grpo.generation import Gaussian, MockBackend, pack_for_analysis, run_corpus

    w = np.asarray(args.weights, dtype=float)
    if args.n_prompts < 1 or args.K < 2 or min(args.m) < 2:
        raise ValueError("need --n-prompts >= 1, --K >= 2 and every --m >= 2")
    if not args.tol > 0:
        raise ValueError(f"--tol must be positive, got {args.tol}")
    C = _mock_correlation(len(w), args.rho)
    gaussian = args.marginals == "gaussian"
    marginals = [Gaussian()] * len(w) if gaussian else None
    backend = MockBackend(C=C, marginals=marginals, seed=args.seed)
    prompts = [(f"p{i}", "0") for i in range(args.n_prompts)]
    corpus = run_corpus(backend, prompts, m_grid=sorted(set(args.m)), K_seeds=args.K, progress=not args.no_progress and None)
    tensors = {m: pack_for_analysis(corpus, m=m) for m in sorted(set(args.m))}
    results = _analyze_all(tensors, w, args, C=C if gaussian else None)
    failures = [f for r in results for f in _ratio_failures(r, args.tol)]
    if gaussian and not args.condition:
        failures += [f for r in results for f in _population_failures(r, args.tol)]
    source = f"MockBackend, {args.marginals} marginals, rho={args.rho:g}, seed {args.seed}"
    return _report(results, failures, args, list(corpus.channel_names), args.tol, source)


# --------------------------------------------------------------------------- analyze FILE


def add_analyze_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a corpus (.jsonl/.parquet from run_corpus/save_corpus) or a long-format table "
                                     "with columns prompt_idx, seed_idx, rollout_idx and one column per channel")
    parser.add_argument("--m", type=integers(2), default=None,
                        help="group size(s) to analyse (default: every size in the file)")
    parser.add_argument("--weights", type=weight_list, default=None,
                        help="objective weights, one per channel (default all 1)")
    parser.add_argument("--channels", type=names, default=None,
                        help="channels to analyse, comma-separated, in this order: channels of a corpus file or "
                             "columns of a long table (default: all channels / all numeric columns)")
    parser.add_argument("--simulated-scores", action="store_true",
                        help="simulate N(0, tau2) score projections even when the corpus stores real ones")
    parser.add_argument("--drop-incomplete", action="store_true",
                        help="leave out prompts that miss a seed or hold a NaN reward, instead of stopping with an error")
    parser.add_argument("--tol", type=number(0.0, low_open=True), default=None,
                        help="if given, exit 1 unless every pooled ratio, conditional and population-law (NA and "
                             "AN), is within 1 +- tol; without it no check runs and --json gives \"pass\": null")
    _add_analysis_options(parser)


_FIX_MISSING = "fix the file: every rollout needs a value for every channel"


def _load(path: str, channels, *, nan_policy: str = "raise", missing_advice: str = _FIX_MISSING):
    """Our corpus files, or any rollout table load_rollouts knows (the released GSM8K/fintech schemas).

    Problems of the file itself (a folder, not JSON lines, not Parquet, a
    missing reward under ``nan_policy="raise"``) raise at once with the
    loader's message; ``missing_advice`` says what a command line user can do
    about a missing reward.
    """
    from multireward_grpo.generation.corpus import MissingRewardError

    source = Path(path)
    if source.is_dir():
        raise ValueError(f"{path} is a directory; give a .jsonl or .parquet rollout file")
    if not source.exists():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return _read_rollouts(path, channels, nan_policy)
    except MissingRewardError as err:
        raise ValueError(f"{err.what}; {missing_advice}") from None


def _read_rollouts(path: str, channels, nan_policy: str):
    from multireward_grpo.generation import load_corpus, load_rollouts
    from multireward_grpo.generation.corpus import MissingRewardError, RolloutFileError

    if channels and _has_corpus_header(Path(path)):
        return load_corpus(path, nan_policy=nan_policy).with_channels(channels)
    if channels:
        return load_rollouts(path, channels=channels, nan_policy=nan_policy).to_corpus()
    try:
        return load_corpus(path, nan_policy=nan_policy)
    except (RolloutFileError, MissingRewardError):
        raise
    except (ValueError, KeyError) as corpus_error:
        try:
            return load_rollouts(path, nan_policy=nan_policy).to_corpus()
        except (RolloutFileError, MissingRewardError):
            raise
        except (ValueError, KeyError) as rollouts_error:
            raise ValueError(f"could not read {path} as a corpus ({corpus_error}) nor as a rollout table "
                             f"({rollouts_error})") from None


def _has_corpus_header(path: Path) -> bool:
    """Whether ``path`` is one of our corpus files (a header line, or the header in Parquet metadata)."""
    import json

    from multireward_grpo.generation.corpus import FORMAT, PARQUET_KEY

    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq

            return PARQUET_KEY in (pq.read_schema(path).metadata or {})
        except Exception:  # not Parquet, no pyarrow: the loader then says what is wrong
            return False
    with open(path, "rb") as f:
        first = f.readline()
    try:
        header = json.loads(first)
    except ValueError:
        return False
    return isinstance(header, dict) and header.get("format") == FORMAT


def _kept_prompts(corpus, m: int, drop_incomplete: bool):
    """Prompt positions to analyse at size ``m``: all, or (``drop_incomplete``) those with every seed and finite rewards."""
    import numpy as np

    from multireward_grpo.generation import pack_for_analysis

    if not drop_incomplete:
        return None
    complete = corpus.complete_prompts(m)
    rewards = pack_for_analysis(corpus, m=m, prompts=complete) if complete else np.zeros((0, 1, m, corpus.R))
    keep = [p for p, ok in zip(complete, np.all(np.isfinite(rewards), axis=(1, 2, 3))) if ok]
    if not keep:
        raise ValueError(f"no prompt has every seed and finite rewards at m={m}")
    return keep


def _tensor(corpus, m: int, drop_incomplete: bool):
    from multireward_grpo.generation import pack_for_analysis

    return pack_for_analysis(corpus, m=m, prompts=_kept_prompts(corpus, m, drop_incomplete))


def _scores(corpus, sizes, drop_incomplete: bool):
    """m -> (P, K, m) real score projections of the corpus (of the prompts analysed), or None when it stores none."""
    from multireward_grpo.generation import pack_scores

    if not corpus.scores:
        return None
    return {m: pack_scores(corpus, m, prompts=_kept_prompts(corpus, m, drop_incomplete)) for m in sizes}


def run_analyze(args: argparse.Namespace) -> int:
    import numpy as np

    from multireward_grpo.viz import describe_corpus

    # --drop-incomplete leaves prompts with a missing reward out (in _tensor), so the loader keeps them as NaN
    corpus = _load_input(args.file, args.channels, nan_policy="propagate" if args.drop_incomplete else "raise",
                         missing_advice=_FIX_MISSING + ", or pass --drop-incomplete to leave such prompts out")
    sizes = args.m or list(corpus.m_grid)
    missing = [m for m in sizes if m not in corpus.m_grid]
    if missing:
        raise ValueError(f"{args.file} has group sizes {list(corpus.m_grid)}, not {missing}; pick --m from those")
    w = np.ones(corpus.R) if args.weights is None else np.asarray(args.weights, dtype=float)
    tensors = {m: _tensor(corpus, m, args.drop_incomplete) for m in sizes}
    scores = None if args.simulated_scores else _scores(corpus, sizes, args.drop_incomplete)
    results = _analyze_all(tensors, w, args, scores_by_m=scores)
    failures = []
    if args.tol is not None:
        failures = [f for r in results for f in _ratio_failures(r, args.tol) + _population_law_failures(r, args.tol)]
    return _report(results, failures, args, list(corpus.channel_names), args.tol, describe_corpus(corpus, args.file))


# --------------------------------------------------------------------------- prop1


def add_prop1_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sigmas", type=numbers(0.0, low_open=True), default=[1.0, 3.0, 0.5],
                        help="per-channel reward standard deviations; their count sets R (default 1,3,0.5)")
    parser.add_argument("--weights", type=weight_list, default=None, help="objective weights (default all 1)")
    parser.add_argument("--rho", type=number(-1.0, 1.0), default=0.0,
                        help="correlation between channels 0 and 1 (default 0)")
    parser.add_argument("--m", type=integer(2), default=64,
                        help="group size (default 64: the oracle is the m -> inf limit)")
    parser.add_argument("--n-groups", type=integer(2), default=4000, help="simulated groups (default 4000)")
    parser.add_argument("--modes", type=mode_names(_ORACLE_MODES), default=["an", "na"],
                        help=f"estimators, comma-separated, from {', '.join(_ORACLE_MODES)} (default an,na)")
    parser.add_argument("--seed", type=integer(0), default=0, help="seed of the simulated rewards (default 0)")
    parser.add_argument("--file", default=None,
                        help="measure on a corpus / long table instead (oracle from its within-group covariance); "
                             "uses the largest group size in the file")
    parser.add_argument("--plot", metavar="DIR", default=None, help="also write the influence bar chart into DIR")
    add_json_flag(parser)


def _prop1_rewards(args):
    import numpy as np

    if args.file:
        from multireward_grpo.analysis.influence import within_group_covariance

        corpus = _load_input(args.file, None)
        rewards = _tensor(corpus, max(corpus.m_grid), drop_incomplete=True)
        return rewards, within_group_covariance(rewards), list(corpus.channel_names)
    sigmas = np.asarray(args.sigmas, dtype=float)
    if np.any(sigmas <= 0) or args.m < 2 or args.n_groups < 2:
        raise ValueError("need positive --sigmas, --m >= 2 and --n-groups >= 2")
    Sigma = _mock_correlation(sigmas.size, args.rho) * np.outer(sigmas, sigmas)
    rng = np.random.default_rng(args.seed)
    rewards = rng.multivariate_normal(np.zeros(sigmas.size), Sigma, size=(args.n_groups, args.m))
    return rewards, Sigma, [f"r{i}" for i in range(sigmas.size)]


def run_prop1(args: argparse.Namespace) -> int:
    import numpy as np

    from multireward_grpo.analysis.influence import oracle_influence, realized_influence

    rewards, Sigma, channel_names = _prop1_rewards(args)
    R = rewards.shape[-1]
    w = np.ones(R) if args.weights is None else np.asarray(args.weights, dtype=float)
    rows, failures = {}, []
    for mode in args.modes:
        realized = realized_influence(rewards, w, mode=mode)
        oracle = oracle_influence(Sigma, w, mode=mode)
        # 4 standard errors plus the O(1/m) bias of within-group correlations
        band = 4 * realized.stderr + 0.5 / rewards.shape[-2]
        bad = np.abs(realized.influence - oracle) > band
        failures += [f"{mode} {channel_names[i]}: realized {realized.influence[i]:.4f} vs oracle {oracle[i]:.4f}"
                     for i in np.flatnonzero(bad)]
        rows[mode] = {"realized": realized.influence, "stderr": realized.stderr, "oracle": oracle,
                      "realized_shares": realized.shares, "oracle_shares": oracle / np.abs(oracle).sum()}
    plots = []
    if args.plot:
        from multireward_grpo import viz

        Path(args.plot).mkdir(parents=True, exist_ok=True)
        path = str(Path(args.plot) / "prop1_influence.png")
        source = (Path(args.file).name if args.file else f"simulated Gaussian rewards, sigmas {args.sigmas}, "
                  f"rho={args.rho:g}, m={args.m}, {args.n_groups} groups")
        viz.plot_influence({mode: r["realized"] for mode, r in rows.items()}, path, channel_names=channel_names,
                           oracle={mode: r["oracle"] for mode, r in rows.items()}, source=source)
        plots.append(path)
    if args.json:
        print_json({"pass": not failures, "failures": failures, "channels": channel_names, "w": w.tolist(),
                    "sigmas": np.sqrt(np.diag(Sigma)).tolist(), "plots": plots,
                    "modes": {m: {k: np.asarray(v).tolist() for k, v in r.items()} for m, r in rows.items()}})
        return 1 if failures else 0
    print("Prop 1: influence Cov(A, z_l) of each channel, realized vs oracle")
    print(f"{'mode':<7}{'channel':<9}{'sigma':>8}{'w':>7}{'oracle':>10}{'realized':>10}{'+-SE':>8}{'share':>8}")
    for mode, r in rows.items():
        for i, name in enumerate(channel_names):
            print(f"{mode:<7}{name:<9}{np.sqrt(Sigma[i, i]):>8.3g}{w[i]:>7.3g}{r['oracle'][i]:>10.4f}"
                  f"{r['realized'][i]:>10.4f}{r['stderr'][i]:>8.4f}{r['realized_shares'][i]:>8.3f}")
    for path in plots:
        print(f"wrote {path}")
    print("PASS: realized influence matches the oracle" if not failures else "FAIL:\n  " + "\n  ".join(failures))
    return 1 if failures else 0


# --------------------------------------------------------------------------- prop2


def add_prop2_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--levels", type=integers(1), default=[3],
                        help="integer levels per channel (one number for all, or one per channel; default 3)")
    parser.add_argument("--weights", type=weight_list, default=[1.0, 1.0, 0.5],
                        help="objective weights (default 1,1,0.5)")
    parser.add_argument("--sigmas", type=numbers(0.0, low_open=True),
                        default=[1.0, 1.7320508075688772, 0.4472135954999579],
                        help="per-channel population standard deviations NA divides by "
                             "(default 1,sqrt(3),1/sqrt(5): unequal, incommensurable scales)")
    add_json_flag(parser)


def run_prop2(args: argparse.Namespace) -> int:
    from multireward_grpo.analysis.resolution import na_reaches_full_resolution, resolution

    sigmas = args.sigmas
    levels = args.levels[0] if len(args.levels) == 1 else args.levels
    counts = {mode: resolution(levels, args.weights, sigmas, mode) for mode in ("an", "na")}
    full = na_reaches_full_resolution(levels, args.weights, sigmas)
    if args.json:
        print_json({"levels": levels, "weights": args.weights, "sigmas": sigmas, "resolution": counts,
                    "grid_points": full.n_points, "na_full": full.to_dict()})
        return 0
    print(f"Prop 2: distinct advantage values over the grid of {full.n_points} level combinations")
    print(f"  levels {levels}, weights {args.weights}, sigmas {sigmas}")
    print(f"  AN: {counts['an']}    NA: {counts['na']}    (max {full.n_points})")
    if full.full:
        print("  NA reaches full resolution: no integer relation among w_l/sigma_l within the level range")
    else:
        print(f"  NA is below full resolution: integer relation {list(full.witness)} (sum_l (w_l/sigma_l) n_l = 0)")
    return 0


# --------------------------------------------------------------------------- prop4


def add_prop4_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--p-a", type=number(0.0, 1.0), default=0.6, help="gate pass rate p_a in [0, 1] (default 0.6)")
    parser.add_argument("--p-b", type=number(0.0, 1.0, high_open=True), default=0.5,
                        help="conditioned channel rate p_b in [0, 1) (default 0.5)")
    parser.add_argument("--alpha-c", type=number(), default=1.0,
                        help="gradient weight of the gate, alpha_c (default 1)")
    parser.add_argument("--alpha-f", type=number(), default=0.5,
                        help="weight of b where the gate passes, alpha_f (default 0.5)")
    parser.add_argument("--gammas", type=numbers(), default=[round(0.1 * i, 1) for i in range(16)],
                        help="model gammas to sweep, comma-separated (default 0,0.1,...,1.5)")
    parser.add_argument("--w-b", type=number(0.0), default=1.0, help="weight of the conditioned channel (default 1)")
    parser.add_argument("--n", type=integer(2), default=200_000, help="Monte Carlo samples (default 200000)")
    parser.add_argument("--seed", type=integer(0), default=0, help="Monte Carlo seed (default 0)")
    parser.add_argument("--max-z", type=number(0.0), default=4.0,
                        help="exit 1 when any |beta_hat - beta| exceeds this many standard errors (default 4)")
    parser.add_argument("--plot", metavar="DIR", default=None, help="also write the bias-vs-gamma curve into DIR")
    add_json_flag(parser)


def run_prop4(args: argparse.Namespace) -> int:
    import numpy as np

    from multireward_grpo.analysis.bias import gamma_star, simulate_bias

    gammas = np.asarray(args.gammas, dtype=float)
    est = simulate_bias(args.p_a, args.p_b, args.alpha_c, args.alpha_f, gammas, w_b=args.w_b, n=args.n, rng=args.seed)
    star = gamma_star(args.p_a, args.p_b, args.alpha_c)
    z = np.atleast_1d(est.z)
    failures = [f"gamma={g:g}: z = {zz:.2f}" for g, zz in zip(gammas, z) if abs(zz) > args.max_z]
    plots = []
    if args.plot:
        from multireward_grpo import viz

        Path(args.plot).mkdir(parents=True, exist_ok=True)
        path = str(Path(args.plot) / "prop4_bias_vs_gamma.png")
        source = (f"simulation: p_a={args.p_a:g}, p_b={args.p_b:g}, alpha_c={args.alpha_c:g}, "
                  f"alpha_f={args.alpha_f:g}, w_b={args.w_b:g}, n={args.n}")
        viz.plot_bias_vs_gamma(gammas, est.beta_hat, est.stderr, est.predicted, path, gamma_star=star, source=source)
        plots.append(path)
    if args.json:
        print_json({"pass": not failures, "failures": failures, "gamma_star": star, "plots": plots, **est.to_dict()})
        return 1 if failures else 0
    print(f"Prop 4: bias removed by conditioning, p_a={args.p_a}, p_b={args.p_b}, alpha_c={args.alpha_c}, "
          f"alpha_f={args.alpha_f}, w_b={args.w_b}, n={args.n}")
    print(f"  gamma* = alpha_c p_a / (1 - p_b) = {star:.4g}  (beta < 0 below: conditioning removes a bias)")
    print(f"{'gamma':>8}{'predicted':>12}{'simulated':>12}{'+-SE':>10}{'z':>7}")
    for g, p, b, se, zz in zip(gammas, np.atleast_1d(est.predicted), np.atleast_1d(est.beta_hat),
                               np.atleast_1d(est.stderr), z):
        print(f"{g:>8.3g}{p:>12.5f}{b:>12.5f}{se:>10.5f}{zz:>7.2f}")
    for path in plots:
        print(f"wrote {path}")
    print(f"PASS: every |z| <= {args.max_z}" if not failures else "FAIL:\n  " + "\n  ".join(failures))
    return 1 if failures else 0
