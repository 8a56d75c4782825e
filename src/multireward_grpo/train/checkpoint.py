"""Resumable checkpoints, written atomically.

A checkpoint folder ``checkpoint-{step}`` holds the adapter (or model)
weights, the tokenizer, the optimizer and scheduler states, the RNG states,
``trainer_state.json`` (step, prompt-sampler position, history, config) and
``COMPLETE``. It is written into a temporary sibling folder and renamed into
place only when every file is on disk, so a crash mid-write leaves the
previous checkpoint untouched; folders without ``COMPLETE`` are never loaded.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["latest_checkpoint", "load_checkpoint", "save_checkpoint"]

_PREFIX = "checkpoint-"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for item in path.rglob("*"):
        if item.is_file():
            with open(item, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(path)


def _rng_state() -> dict:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(trainer) -> Path:
    """Write ``out_dir/checkpoint-{step}`` atomically; keep the newest ``keep_checkpoints``."""
    import torch

    out = Path(trainer.config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = out / f"{_PREFIX}{trainer.step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{_PREFIX}{trainer.step}.", dir=out))
    try:
        trainer.model.save_pretrained(tmp / "model")
        trainer.tokenizer.save_pretrained(tmp / "model")
        torch.save({"optimizer": trainer.optimizer.state_dict(), "scheduler": trainer.scheduler.state_dict()},
                   tmp / "optimizer.pt")
        torch.save(_rng_state(), tmp / "rng.pt")
        state = {"step": trainer.step, "sampler_drawn": trainer.sampler.drawn, "history": trainer.history,
                 "config": trainer.config.to_dict()}
        (tmp / "trainer_state.json").write_text(json.dumps(state, default=str))
        (tmp / "COMPLETE").write_text("ok\n")
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(out, trainer.config.keep_checkpoints)
    return final


def _complete_checkpoints(out: Path) -> list[Path]:
    found = [p for p in out.glob(f"{_PREFIX}*") if p.is_dir() and (p / "COMPLETE").exists()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def _prune(out: Path, keep: int) -> None:
    if keep <= 0:
        return
    for old in _complete_checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in ``out_dir`` (None when there is none)."""
    found = _complete_checkpoints(Path(out_dir)) if Path(out_dir).exists() else []
    return found[-1] if found else None


def load_checkpoint(trainer, where: str | Path) -> Path:
    """Restore weights, optimizer, scheduler, RNG, step, sampler and history."""
    import torch

    path = latest_checkpoint(trainer.config.out_dir) if str(where) == "latest" else Path(where)
    if path is None:
        raise FileNotFoundError(f"resume_from='latest' but {trainer.config.out_dir} holds no complete checkpoint")
    if not (path / "COMPLETE").exists():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no COMPLETE marker); pick another or 'latest'")
    _load_weights(trainer, path / "model")
    states = torch.load(path / "optimizer.pt", weights_only=False)
    trainer.optimizer.load_state_dict(states["optimizer"])
    trainer.scheduler.load_state_dict(states["scheduler"])
    rng = torch.load(path / "rng.pt", weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    state = json.loads((path / "trainer_state.json").read_text())
    trainer.step = int(state["step"])
    trainer.sampler.drawn = int(state["sampler_drawn"])
    trainer.history = list(state["history"])
    return path


def _load_weights(trainer, folder: Path) -> None:
    import torch

    if trainer.config.use_lora:
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        set_peft_model_state_dict(trainer.model, load_peft_weights(str(folder), device=str(trainer.device)))
        return
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=trainer.dtype)
    with torch.no_grad():
        trainer.model.load_state_dict(loaded.state_dict())
