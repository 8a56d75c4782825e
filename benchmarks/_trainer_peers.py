"""Scratch virtualenvs for the two trainer peers, and running one worker job.

* TRL: ``benchmarks/.trl-venv`` gets ``torch==2.13.0`` first (the CPU build;
  pinning it keeps pip from pulling a multi-GB CUDA build), then
  ``trl==1.16.0 peft`` with torch still pinned (pip picks the transformers,
  accelerate and datasets that TRL asks for).
* 0.1.1: ``benchmarks/.bench-venv`` (shared with ``run.py``, which installs
  ``multireward-grpo==0.1.1 numpy scipy`` there) gets the trainer's
  dependencies next to it: ``torch==2.13.0 transformers peft accelerate``.
  The release's ``llm`` extra asks for ``torch<2.10``; it is not installed
  through that extra, and the release trains with torch 2.13 all the same
  (the benchmark says which versions ran). Its top-level import does not load
  torch, so ``run.py``'s import-time figure for 0.1.1 is not affected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import _peer

HERE = Path(__file__).resolve().parent
TRL_VENV = HERE / ".trl-venv"
TRL_SPEC = "trl==1.16.0"
TORCH_SPEC = "torch==2.13.0"
WORKER = HERE / "_trainer_worker.py"
PIP = ["-m", "pip", "install", "--disable-pip-version-check", "-q"]

PROBE = (
    "import importlib.metadata as m, json; out = {{}}\n"
    "for name in {names!r}:\n"
    "    try: out[name] = m.version(name)\n"
    "    except m.PackageNotFoundError: out[name] = None\n"
    "print(json.dumps(out))"
)


def versions(py: Path, names: tuple[str, ...]) -> dict:
    """Installed versions of ``names`` for interpreter ``py`` (None when missing)."""
    proc = _peer._run([str(py), "-c", PROBE.format(names=names)], timeout=120)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {n: None for n in names}


def _pip(py: Path, *specs: str) -> subprocess.CompletedProcess:
    print(f"[peers] pip install {' '.join(specs)}  (into {py.parent.parent.name})", flush=True)
    return _peer._run([str(py), *PIP, *specs], timeout=1800)


def _torch_ok(v: dict) -> bool:
    return bool(v.get("torch")) and v["torch"].split("+")[0] == TORCH_SPEC.split("==")[1]


def ensure_trl_venv(venv: Path = TRL_VENV) -> tuple[Path | None, str]:
    """Create the TRL venv and install TRL into it if needed; (python, note) with python None on failure."""
    names = ("trl", "torch", "transformers", "peft", "accelerate", "datasets")
    py = _peer.venv_python(venv)
    if not py.exists():
        print(f"[peers] creating virtualenv {venv}", flush=True)
        proc = _peer._run([sys.executable, "-m", "venv", str(venv)])
        if proc.returncode != 0:
            return None, f"python -m venv failed: {proc.stderr.strip()[-400:]}"
    v = versions(py, names)
    if v.get("trl") == TRL_SPEC.split("==")[1] and _torch_ok(v) and v.get("peft"):
        return py, f"already installed: {_fmt(v)}"
    if not _torch_ok(v):
        proc = _pip(py, TORCH_SPEC)
        if proc.returncode != 0:
            return None, f"pip install {TORCH_SPEC} failed: {proc.stderr.strip()[-400:]}"
    proc = _pip(py, TRL_SPEC, "peft", TORCH_SPEC)
    v = versions(py, names)
    if proc.returncode != 0 or not v.get("trl"):
        return None, f"pip install {TRL_SPEC} failed (rc={proc.returncode}): {proc.stderr.strip()[-400:]}"
    return py, f"installed: {_fmt(v)}"


def ensure_peer_trainer_venv(venv: Path = _peer.DEFAULT_VENV) -> tuple[Path | None, str]:
    """The 0.1.1 venv with torch / transformers / peft / accelerate added; (python, note)."""
    names = ("multireward-grpo", "torch", "transformers", "peft", "accelerate", "numpy")
    py, note = _peer.ensure_peer_venv(venv)
    if py is None:
        return None, note
    v = versions(py, names)
    if not (_torch_ok(v) and v.get("transformers") and v.get("peft") and v.get("accelerate")):
        proc = _pip(py, TORCH_SPEC, "transformers", "peft", "accelerate")
        v = versions(py, names)
        if proc.returncode != 0 or not (_torch_ok(v) and v.get("transformers") and v.get("peft")):
            tail = proc.stderr.strip()[-400:]
            return None, f"installing the trainer dependencies failed (rc={proc.returncode}): {tail}"
    return py, _fmt(v)


def _fmt(v: dict) -> str:
    return ", ".join(f"{k} {val}" for k, val in v.items())


def run_job(py: Path | str, job: dict, workdir: Path, timeout: float) -> dict:
    """Run one trainer job in a fresh ``py`` process; returns the worker's result (or ``{"error": ...}``).

    PYTHONPATH is dropped for the peers' venvs so this checkout can never
    shadow their packages, and kept for ours (``py`` is this interpreter), so
    a checkout put first on PYTHONPATH is the one measured even where another
    copy is installed; the worker prints no tracebacks, and only the last line
    of its stderr is kept when it fails.
    """
    tag = f"{job['workload']}-{job['impl']}"
    job_path, result_path = workdir / f"{tag}.job.json", workdir / f"{tag}.result.json"
    job_path.write_text(json.dumps(job))
    dropped = ("PYTHONHOME",) if str(py) == sys.executable else ("PYTHONPATH", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TQDM_DISABLE="1",
               TOKENIZERS_PARALLELISM="false")
    if job.get("threads"):
        env.update(OMP_NUM_THREADS=str(job["threads"]), MKL_NUM_THREADS=str(job["threads"]))
    return call_worker([str(py), str(WORKER), str(job_path), str(result_path)], job, result_path,
                       env=env, timeout=timeout)


def call_worker(argv: list[str], job: dict, result_path: Path, *, env: dict, timeout: float) -> dict:
    """Run a worker command; its JSON result, or ``{"impl", "error"}`` with the last line of its stderr."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=str(HERE), timeout=timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"impl": job["impl"], "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    if result_path.exists():
        return json.loads(result_path.read_text())
    last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"impl": job["impl"], "error": f"worker rc={proc.returncode}: {last[:400]}"}
