"""Black-box worker for the published ``multireward-grpo==0.1.1``.

Runs inside the scratch venv (``benchmarks/.bench-venv``), where the import
name ``multireward_grpo`` is the published release, never this checkout.
It only calls the release's public ``compute_advantage``,
``compute_advantage_batch`` and ``analyze``, and its ``multireward-grpo``
console script.

Usage: ``python _peer_worker.py JOB.json RESULT.json``

JOB.json holds ``{"tasks": [...]}``; each task is one of

* ``{"id", "kind": "batch", "input": X.npy, "w": [...], "mode", "repeats", "output": Y.npy}``:
  loads the (P, m, R) rewards, calls ``compute_advantage_batch`` once as a
  warm-up and ``repeats`` more times, saves the advantages to Y.npy;
* ``{"id", "kind": "groups", "input": X.npz, "output": Y.npz}``: X.npz holds
  ``r{i}``, ``w{i}`` and ``modes``; calls ``compute_advantage`` on each group
  and saves ``a{i}``;
* ``{"id", "kind": "analyze", "input": X.npy, "w", "score_seed", "repeats", "output": Y.npz}``:
  loads the (P, K, m, R) rewards, calls the top-level ``analyze(rewards, w,
  score_seed=...)`` ``repeats`` times with no warm-up, saves the result's
  public arrays to Y.npz;
* ``{"id", "kind": "cli", "argv": [...], "repeats"}``: runs the venv's
  ``multireward-grpo ARGV`` once as a warm-up and ``repeats`` more times
  (warnings off), keeping the times, the exit status and the last stdout line.

Errors are reported as ``"Type: message"`` (or a console script's last
stderr line) only: no tracebacks, so none of the release's source is ever
printed; warnings are recorded by message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from functools import partial
from importlib import metadata
from pathlib import Path

import numpy as np
from _timing import time_call


def _run_batch(peer, task: dict) -> dict:
    """Time ``compute_advantage_batch`` on one saved array and save its output."""
    rewards = np.load(task["input"])
    w = np.asarray(task["w"], dtype=np.float64)
    out, times = time_call(lambda: peer.compute_advantage_batch(rewards, w, task["mode"]), task["repeats"])
    np.save(task["output"], np.asarray(out))
    return {"times": times, "best": min(times)}


def _run_groups(peer, task: dict) -> dict:
    """Call ``compute_advantage`` on every saved single group and save the outputs."""
    data = np.load(task["input"])
    modes = [str(x) for x in data["modes"]]
    outs = {
        f"a{i}": np.asarray(peer.compute_advantage(data[f"r{i}"], data[f"w{i}"], mode)) for i, mode in enumerate(modes)
    }
    np.savez(task["output"], **outs)
    return {"n": len(modes)}


ANALYZE_FIELDS = (
    "predicted_per_prompt",
    "pooled_C",
    "influence_an",
    "influence_na",
    "realized_an",
    "realized_na",
    "predicted_pooled",
)


def _run_analyze(peer, task: dict) -> dict:
    """Time the release's ``analyze`` (no warm-up) and save the result's public arrays."""
    rewards = np.load(task["input"])
    w = np.asarray(task["w"], dtype=np.float64)
    res, times = time_call(lambda: peer.analyze(rewards, w, score_seed=task["score_seed"]), task["repeats"], False)
    np.savez(task["output"], **{k: np.asarray(getattr(res, k), dtype=np.float64) for k in ANALYZE_FIELDS})
    return {"times": times, "best": min(times)}


def _console_script() -> Path:
    """The release's ``multireward-grpo`` entry point in this venv."""
    bindir = Path(sys.executable).parent
    exe = bindir / ("multireward-grpo.exe" if os.name == "nt" else "multireward-grpo")
    if not exe.exists():
        raise FileNotFoundError(f"no console script {exe.name} in {bindir}")
    return exe


def _run_cli(peer, task: dict) -> dict:
    """Time ``multireward-grpo ARGV`` end to end in a fresh process (warnings off)."""
    cmd = [str(_console_script()), *task["argv"]]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    run = partial(subprocess.run, cmd, capture_output=True, text=True, env=env, check=False)
    proc, times = time_call(run, task["repeats"])
    out = {"times": times, "best": min(times), "rc": proc.returncode}
    out["last_line"] = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode != 0:
        out["error"] = f"rc={proc.returncode}: " + (proc.stderr.strip().splitlines() or [""])[-1]
    return out


def _run_task(peer, task: dict) -> dict:
    """Run one task, turning any exception or warning into plain strings."""
    runners = {"batch": _run_batch, "groups": _run_groups, "analyze": _run_analyze, "cli": _run_cli}
    runner = runners[task["kind"]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = runner(peer, task)
        except Exception as exc:  # noqa: BLE001 - report, never print a traceback
            res = {"error": f"{type(exc).__name__}: {exc}"}
    res["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    return {"id": task["id"], **res}


def main(job_path: str, result_path: str) -> int:
    """Import the release, run every task in the job, write the result JSON."""
    with open(job_path) as fh:
        job = json.load(fh)
    t0 = time.perf_counter()
    import multireward_grpo as peer

    result = {
        "import_after_numpy_s": time.perf_counter() - t0,
        "dist_version": metadata.version("multireward-grpo"),
        "module_version": getattr(peer, "__version__", None),
        "numpy": np.__version__,
        "tasks": [_run_task(peer, task) for task in job["tasks"]],
    }
    with open(result_path, "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1], sys.argv[2]))
    except Exception as exc:  # noqa: BLE001 - keep the release's source out of the output
        print(f"peer worker failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(3)
