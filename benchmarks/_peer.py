"""Client side of the peer (``multireward-grpo==0.1.1``) comparison.

The release has the same import name as this checkout, so it lives in its own
virtualenv and is only ever called through ``_peer_worker.py`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

PEER_SPEC = "multireward-grpo==0.1.1"
PEER_VERSION = "0.1.1"
HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE / ".bench-venv"
WORKER = HERE / "_peer_worker.py"


def venv_python(venv: Path) -> Path:
    """Path of the interpreter inside ``venv`` (POSIX or Windows layout)."""
    posix = venv / "bin" / "python"
    return posix if posix.exists() or os.name != "nt" else venv / "Scripts" / "python.exe"


def _run(cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command with captured text output; never raises on failure."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(cmd, 1, "", f"{type(exc).__name__}: {exc}")


def installed_peer_version(py: Path) -> str | None:
    """Version of ``multireward-grpo`` installed for ``py``, or None."""
    code = "import importlib.metadata as m; print(m.version('multireward-grpo'))"
    proc = _run([str(py), "-c", code], timeout=60)
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_peer_venv(venv: Path = DEFAULT_VENV) -> tuple[Path | None, str]:
    """Create ``venv`` and install the release into it if needed (idempotent).

    Returns ``(python, note)``; ``python`` is None when the peer is unavailable,
    and ``note`` says why. Prints each step it takes.
    """
    py = venv_python(venv)
    if not py.exists():
        print(f"[peer] creating virtualenv {venv}")
        proc = _run([sys.executable, "-m", "venv", str(venv)])
        if proc.returncode != 0:
            return None, f"python -m venv failed: {proc.stderr.strip()[-500:]}"
    if installed_peer_version(py) == PEER_VERSION:
        print(f"[peer] {PEER_SPEC} already installed in {venv}")
        return py, "already installed"
    print(f"[peer] pip install {PEER_SPEC} numpy scipy  (into {venv})")
    proc = _run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", PEER_SPEC, "numpy", "scipy"])
    if proc.returncode != 0 or installed_peer_version(py) != PEER_VERSION:
        return None, f"pip install failed (rc={proc.returncode}): {proc.stderr.strip()[-500:]}"
    return py, "installed"


def run_peer(py: Path, tasks: list[dict], workdir: Path) -> dict:
    """Run ``tasks`` in one worker subprocess and return its result JSON.

    On failure returns ``{"error": ...}`` with the worker's stderr tail (the
    worker never prints tracebacks).
    """
    job, result = workdir / "peer_job.json", workdir / "peer_result.json"
    job.write_text(json.dumps({"tasks": tasks}))
    # Drop PYTHONPATH so this checkout (or a dev path) can never shadow the release in the venv.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    try:
        proc = subprocess.run(
            [str(py), str(WORKER), str(job), str(result)],
            capture_output=True,
            text=True,
            env=env,
            cwd=str(HERE),
            timeout=1800,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    if proc.returncode != 0 or not result.exists():
        return {"error": f"worker rc={proc.returncode}: {proc.stderr.strip()[-500:]}"}
    return json.loads(result.read_text())


def batch_task(tid: str, rewards: np.ndarray, w: np.ndarray, mode: str, repeats: int, workdir: Path) -> dict:
    """Save ``rewards`` under ``workdir`` and describe one timed batch call."""
    src = workdir / f"{tid}.in.npy"
    if not src.exists():
        np.save(src, rewards)
    return {
        "id": f"{tid}/{mode}",
        "kind": "batch",
        "input": str(src),
        "w": list(map(float, w)),
        "mode": mode,
        "repeats": repeats,
        "output": str(workdir / f"{tid}.{mode}.out.npy"),
    }


def groups_task(tid: str, groups: list[tuple[np.ndarray, np.ndarray, str]], workdir: Path) -> dict:
    """Save single groups under ``workdir`` and describe the ``compute_advantage`` calls."""
    arrays = {f"r{i}": g[0] for i, g in enumerate(groups)} | {f"w{i}": g[1] for i, g in enumerate(groups)}
    src = workdir / f"{tid}.in.npz"
    np.savez(src, modes=np.array([g[2] for g in groups]), **arrays)
    return {"id": tid, "kind": "groups", "input": str(src), "output": str(workdir / f"{tid}.out.npz")}


def analyze_task(tid: str, rewards: np.ndarray, w: np.ndarray, score_seed: int, repeats: int, workdir: Path) -> dict:
    """Save a (P, K, m, R) tensor and describe timed calls of the release's top-level ``analyze``.

    No warm-up: the release takes seconds per call, so ``repeats`` is kept small.
    """
    src = workdir / f"{tid}.in.npy"
    np.save(src, rewards)
    return {
        "id": tid,
        "kind": "analyze",
        "input": str(src),
        "w": list(map(float, w)),
        "score_seed": score_seed,
        "repeats": repeats,
        "output": str(workdir / f"{tid}.out.npz"),
    }


def cli_task(tid: str, argv: list[str], repeats: int) -> dict:
    """Describe timed runs of the release's console script ``multireward-grpo ARGV`` (one warm-up)."""
    return {"id": tid, "kind": "cli", "argv": argv, "repeats": repeats}


def load_output(task: dict) -> np.ndarray | list[np.ndarray] | dict[str, np.ndarray]:
    """Read back what the worker saved for ``task``."""
    if task["kind"] == "batch":
        return np.load(task["output"])
    if task["kind"] == "analyze":
        with np.load(task["output"]) as data:
            return {k: data[k] for k in data.files}
    with np.load(task["output"]) as data:
        return [data[f"a{i}"] for i in range(len(data.files))]
