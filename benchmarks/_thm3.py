"""Theory-harness entries: Theorem 3 ``analyze`` and the ``thm3-check`` CLI, ours vs 0.1.1.

Ours runs in-process (``multireward_grpo.analysis.thm3.analyze``) and as a
subprocess (``multireward-grpo thm3-check``); the release runs only through
``_peer_worker.py`` (its top-level ``analyze`` and its console script).
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import _data
import _peer
import numpy as np
from _timing import time_call

REL_TOL = 1e-6
SCORE_SEED = 0
FIELDS = ("predicted_per_prompt", "pooled_C", "influence_an", "influence_na")
PEER_REPEATS = 2
CLI_REPEATS = 3
ANALYZE_TARGET_X = 100.0
CLI_TARGET_S = 1.0
CLI_ARGV = ["thm3-check"]
CLI_SHAPE = "40x200x8x3"
CLI_NOTE = (
    "defaults: both run m=8, P=40, K=200, rho=0.5, w=(1,1,0.5) (each prints these), but the mock rewards "
    "differ: ours draws Gaussian channels (--marginals gaussian) and adds 2,000 bootstrap resamples and the "
    "population-law check; 0.1.1's mock has constant-channel groups (its pooled C has a diagonal < 1)"
)


def shape(quick: bool) -> tuple[int, int, int, int]:
    """(P, K, m, R) of the analyze workload."""
    return (50, 50, 16, 3) if quick else (200, 200, 16, 3)


def shape_label(shp) -> str:
    """'200x200x16x3' for the table's P column."""
    return "x".join(map(str, shp))


def rewards(quick: bool) -> np.ndarray:
    """The seeded (P, K, m, R) reward tensor (see ``_data.thm3_rewards``)."""
    P, K, m, _ = shape(quick)
    return _data.thm3_rewards(P, K, m)


def peer_tasks(quick: bool, workdir: Path) -> list[dict]:
    """Worker tasks for the release: ``analyze`` on the same tensor, and ``thm3-check`` with defaults."""
    return [
        _peer.analyze_task("thm3-analyze", rewards(quick), _data.THM3_WEIGHTS, SCORE_SEED, PEER_REPEATS, workdir),
        _peer.cli_task("thm3-cli", CLI_ARGV, CLI_REPEATS),
    ]


def run(quick: bool, repeats: int, peer: dict) -> tuple[dict, list[dict]]:
    """Time ours, compare with the peer's tasks; returns (JSON entry, check lines)."""
    from multireward_grpo.analysis.thm3 import analyze

    arr = rewards(quick)
    res, times = time_call(partial(analyze, arr, _data.THM3_WEIGHTS, score_seed=SCORE_SEED), repeats)
    task = peer.get("thm3-analyze")
    entry = {"shape": list(arr.shape), "score_seed": SCORE_SEED, "weights": _data.THM3_WEIGHTS.tolist()}
    entry |= _timing_cell(times, task)
    cli = cli_entry(peer.get("thm3-cli"))
    checks = analyze_checks(res, task) + [ratio_info(res, task), cli_info(cli)]
    return {"analyze": entry, "cli": cli}, checks


def _timing_cell(times: list[float], task: dict | None) -> dict:
    """Our times, and the peer's with the speed-up when it ran."""
    cell = {"ours_times_s": times, "ours_best_s": min(times)}
    if task and "best" in task:
        cell |= {
            "peer_times_s": task["times"],
            "peer_best_s": task["best"],
            "speedup_vs_peer": task["best"] / min(times),
        }
    elif task and "error" in task:
        cell["peer_error"] = task["error"]
    return cell


def rel_diff(ours, theirs) -> float:
    """``max|a - b| / max(max|b|, tiny)``; inf on a shape mismatch or a NaN in one side only."""
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    d = np.abs(a - b)
    d[np.isnan(a) & np.isnan(b)] = 0.0
    scale = max(float(np.nanmax(np.abs(b), initial=0.0)), np.finfo(np.float64).tiny)
    return float("inf") if np.isnan(d).any() else float(d.max(initial=0.0)) / scale


def analyze_checks(res, task: dict | None) -> list[dict]:
    """PASS/FAIL/SKIP: each field in ``FIELDS`` equal to 0.1.1's within ``REL_TOL`` relative."""
    names = {f: f"analyze {f} {np.shape(getattr(res, f))}, rel tol" for f in FIELDS}
    if not task or "error" in task:
        status, note = ("FAIL", f"0.1.1 raised {task['error']}") if task else ("SKIP", "peer unavailable")
        return [
            {"name": n, "status": status, "max_rel_diff": None, "tol": REL_TOL, "detail": note} for n in names.values()
        ]
    theirs = _peer.load_output(task)
    return [_rel_item(names[f], rel_diff(getattr(res, f), theirs[f])) for f in FIELDS]


def _rel_item(name: str, diff: float) -> dict:
    """One PASS/FAIL line for a relative-difference check."""
    return {
        "name": name,
        "status": "PASS" if diff <= REL_TOL else "FAIL",
        "max_rel_diff": diff,
        "tol": REL_TOL,
        "detail": f"max|ours-0.1.1| / max|0.1.1| = {diff:.2e} (tol {REL_TOL:.0e})",
    }


def ratio_info(res, task: dict | None) -> dict:
    """INFO (not gated): pooled NA realized/predicted of each side; their random scores differ."""
    ours = float(res.ratio_pooled["na"])
    name = "analyze pooled NA realized/predicted (different random scores, not compared)"
    out = {"name": name, "status": "INFO", "ours": ours, "peer": None}
    if not task or "error" in task:
        return out | {"detail": f"ours {ours:.4f}; 0.1.1 unavailable"}
    theirs = _peer.load_output(task)
    peer = float(np.mean(theirs["realized_na"]) / theirs["predicted_pooled"])
    detail = (
        f"ours {ours:.4f} (unbiased mean of ghat^2), 0.1.1 {peer:.4f} (ddof-0 variance of ghat across seeds); "
        "both should be near 1"
    )
    return out | {"peer": peer, "detail": detail}


def _our_cli() -> list[str]:
    """This interpreter's ``multireward-grpo`` console script, or ``python -c`` calling ``cli.main``."""
    exe = Path(sys.executable).parent / ("multireward-grpo.exe" if os.name == "nt" else "multireward-grpo")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from multireward_grpo.cli import main; sys.exit(main())"]


def cli_entry(task: dict | None) -> dict:
    """Best-of-``CLI_REPEATS`` wall time of our ``thm3-check`` (fresh process each), with the peer's."""
    cmd = _our_cli() + CLI_ARGV
    proc, times = time_call(partial(subprocess.run, cmd, capture_output=True, text=True, check=False), CLI_REPEATS)
    entry = {"argv": CLI_ARGV, "command": cmd, "rc": proc.returncode, "shape_label": CLI_SHAPE, "note": CLI_NOTE}
    entry["last_line"] = (proc.stdout.strip().splitlines() or [""])[-1]
    entry |= _timing_cell(times, task)
    if task and "rc" in task:
        entry |= {"peer_rc": task["rc"], "peer_last_line": task.get("last_line", "")}
    return entry


def cli_info(cli: dict) -> dict:
    """INFO: each side's thm3-check verdict line and exit status."""
    peer = f"0.1.1 rc={cli['peer_rc']} {cli['peer_last_line']!r}" if "peer_rc" in cli else "0.1.1 unavailable"
    if "peer_error" in cli:
        peer = f"0.1.1 failed: {cli['peer_error']}"
    detail = f"ours rc={cli['rc']} {cli['last_line']!r}; {peer}"
    return {"name": "thm3-check with defaults, verdicts", "status": "INFO", "detail": detail}


def targets(entry: dict) -> list[dict]:
    """MET/MISSED/N/A: analyze >= 100x faster than 0.1.1, and thm3-check under 1 s."""
    s = entry["analyze"].get("speedup_vs_peer")
    where = shape_label(entry["analyze"]["shape"])
    t = entry["cli"]["ours_best_s"]
    return [
        {
            "name": f"analyze >= {ANALYZE_TARGET_X:.0f}x faster than 0.1.1",
            "status": "N/A" if s is None else ("MET" if s >= ANALYZE_TARGET_X else "MISSED"),
            "value": s,
            "detail": f"{s:.1f}x at {where}" if s is not None else "peer unavailable",
        },
        {
            "name": f"multireward-grpo thm3-check < {CLI_TARGET_S:g} s (defaults)",
            "status": "MET" if t < CLI_TARGET_S and entry["cli"]["rc"] == 0 else "MISSED",
            "value": t,
            "detail": f"{t:.3f} s best of {CLI_REPEATS}, rc={entry['cli']['rc']}",
        },
    ]
