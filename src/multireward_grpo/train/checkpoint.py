"""Resumable checkpoints: written atomically, loaded without unpickling code, resumed only when compatible.

Layout
------
A checkpoint folder ``out_dir/checkpoint-{step}`` holds

- ``model/``: the adapter (or full model) as safetensors, and the tokenizer;
- ``optimizer.pt``: ``{"optimizer": ..., "scheduler": ...}`` state dicts;
- ``rng.pt``: the Python, numpy and torch (and CUDA) RNG states, as tensors,
  lists and numbers;
- ``trainer_state.json``: step, prompt-sampler position, history, config,
  the resume fingerprint (number of prompts, SHA-256 of the prompts, number
  of reward channels) and the run lineage (``run_id``, ``parent``);
- ``COMPLETE``: written last; folders without it are never loaded.

Safe loading
------------
``optimizer.pt`` and ``rng.pt`` are read with ``torch.load(weights_only=True)``
and the weights with safetensors, so a checkpoint folder from someone else
cannot run code on resume; a file holding anything else is refused with a
``ValueError``. Checkpoints written before this format (numpy arrays pickled
in ``rng.pt``) are refused the same way.

Atomic writes and replacement
-----------------------------
A checkpoint is written into a temporary sibling ``.checkpoint-{step}.XXXXXXXX.tmp``
and renamed into place once every file is on disk. Re-saving a step that
exists first renames the old folder aside (``....old``), renames the new one
into place, then deletes the old one: at every instant the old or the new
complete checkpoint exists. Pruned checkpoints are renamed to ``....del``
before they are deleted, so no half-deleted folder keeps a ``checkpoint-N``
name. At start (:func:`clean_stale_temp_folders`, called by the trainer)
these temporary folders left by a killed process are removed from
``out_dir`` (only names of exactly these patterns, only in ``out_dir``
itself); an ``.old`` folder whose replacement never arrived is renamed back.

Run lineage and ``latest``
--------------------------
Every trainer gets a fresh ``run_id``; its checkpoints record it and their
``parent`` (the run id, step and folder resumed from). ``latest`` is the
complete ``checkpoint-N`` with the highest integer N (folders such as
``checkpoint-best`` are ignored; they can still be resumed from as an
explicit path). A run resumed from an older step branches off: at its first
save, the checkpoints of other runs with a higher step than the one it
resumed from (the abandoned branch) are moved to
``out_dir/abandoned/{their run_id}/`` (with a message; delete them when not
needed). So after that first save ``latest`` is the newest checkpoint of the
current lineage, and pruning never deletes the current lineage's checkpoints
in favour of abandoned ones. Until the resumed run has saved, ``latest`` is
still the abandoned branch's newest.

Resume compatibility
--------------------
Before any model is loaded, :func:`find_resume_point` compares the saved
config and fingerprint with the new ones.

Refused (one ``ValueError`` lists every difference as ``old -> new``; restore
them or start a new ``out_dir``), because they change what is optimized, the
sampled data or the shape of the weights: model, mode, weights (and the
number of reward channels), conditioning, scale_by_std, nan_policy,
batch_prompts, m, max_new_tokens, temperature, top_p, system_prompt (and the
prompts themselves), kl_coef, ppo_clip, epsilon_high, importance_sampling_level,
mask_truncated_completions, num_iterations, loss_type,
max_grad_norm, weight_decay, warmup_steps, lr_scheduler, seed, use_lora,
lora_r, lora_alpha, lora_dropout, lora_target_modules, disable_dropout. A config field added
later and not classified here is refused too.

Applied (one line on stderr names each change), because they are
bookkeeping, hardware or memory settings, or the length and step size of the
run: n_steps, lr (the optimizer's param groups and the scheduler's base
learning rates are set to it, and the current rate follows the schedule of
the new settings), verbose, report_to, sample_every, eval_every, eval_m,
checkpoint_every, keep_checkpoints, device, dtype,
generation_batch_size, micro_batch_size, gradient_checkpointing,
share_prompt_cache. A resume stays bit-identical to an uninterrupted run only
when none of the numeric ones (lr, n_steps under a decaying schedule, device,
dtype, micro_batch_size) changes. With loss_type bnpo, micro_batch_size sets
the objective's normalization and is refused instead.

Ignored: resume_from and out_dir (a copied or moved out_dir resumes).

Several processes
-----------------
A checkpoint holds global state only (the weights and optimizer state, the
same on every rank, the step, the sampler position and the history; the RNG
states are the main process's, and every step reseeds anyway), and only the
main process writes it. So a run resumes on any number of processes that
divides ``batch_prompts``, and ends where the uninterrupted run ends. Under
FSDP the shards are gathered first (every process takes part) and written in
the same single-process format, so a sharded run resumes unsharded and the
reverse; on resuming, the main process loads the weights before the model is
shared out, and each process cuts its shards of the optimizer state from the
file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from multireward_grpo._fileio import fsync_dir

__all__ = [
    "RESUME_APPLIED",
    "RESUME_IGNORED",
    "RESUME_REFUSED",
    "ResumePoint",
    "Snapshot",
    "clean_stale_temp_folders",
    "find_resume_point",
    "latest_checkpoint",
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
    "save_model",
]

_PREFIX = "checkpoint-"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
# tempfile.mkdtemp's 8 random characters; the suffix says what the folder was for (none: older releases)
_TEMP_NAME = re.compile(r"^\.(checkpoint-\d+)\.[a-z0-9_]{8}(?:\.(tmp|old|del))?$")
ABANDONED_DIR = "abandoned"

RESUME_REFUSED = (
    "model", "mode", "weights", "conditioning", "scale_by_std", "nan_policy", "batch_prompts", "m",
    "max_new_tokens", "temperature", "top_p", "system_prompt", "kl_coef", "ppo_clip", "epsilon_high",
    "importance_sampling_level", "mask_truncated_completions", "num_iterations", "loss_type", "max_grad_norm",
    "weight_decay", "warmup_steps", "lr_scheduler", "seed", "use_lora", "lora_r",
    "lora_alpha", "lora_dropout", "lora_target_modules", "disable_dropout",
)
RESUME_APPLIED = (
    "n_steps", "lr", "verbose", "report_to", "sample_every", "eval_every", "eval_m", "checkpoint_every",
    "keep_checkpoints", "device", "dtype", "generation_batch_size", "micro_batch_size",
    "gradient_checkpointing", "share_prompt_cache",
)
RESUME_IGNORED = ("resume_from", "out_dir")  # where the run is, not what it does: a copied out_dir resumes


# --------------------------------------------------------------------------- names and folders


def _step_of(path: Path) -> int | None:
    """N for a folder named ``checkpoint-N`` (N an integer), else None."""
    match = _CHECKPOINT_NAME.match(path.name)
    return int(match.group(1)) if match else None


def _complete_checkpoints(out: Path) -> list[Path]:
    """Complete ``checkpoint-N`` folders of ``out``, oldest first (other names are ignored)."""
    if not out.is_dir():
        return []
    found = [p for p in out.iterdir() if _step_of(p) is not None and p.is_dir() and (p / "COMPLETE").exists()]
    return sorted(found, key=_step_of)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The complete ``checkpoint-N`` of ``out_dir`` with the highest integer N (None when there is none).

    Folders whose suffix is not an integer (``checkpoint-best``) are ignored.
    """
    found = _complete_checkpoints(Path(out_dir))
    return found[-1] if found else None


def _remove_tree(path: Path) -> None:
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path)


def _discard(path: Path) -> None:
    """Delete a folder: renamed to a ``.del`` temp name first, so a crash never leaves half of it under its name."""
    doomed = path.with_name(f".{path.name}.{secrets.token_hex(4)}.del")
    os.replace(path, doomed)
    _remove_tree(doomed)


def clean_stale_temp_folders(out_dir: str | Path) -> None:
    """Remove the temporary folders a killed checkpoint write left in ``out_dir``.

    Only entries of ``out_dir`` itself whose names match the package's own
    temp-name pattern (``.checkpoint-N.XXXXXXXX``, optionally ending in
    ``.tmp``, ``.old`` or ``.del``) are touched. An ``.old`` folder (a
    checkpoint set aside for its replacement) is renamed back when the
    replacement never arrived, and deleted otherwise.
    """
    out = Path(out_dir)
    if not out.is_dir():
        return
    for entry in sorted(out.iterdir()):
        match = _TEMP_NAME.match(entry.name)
        if not match or not entry.is_dir() or entry.is_symlink():
            continue
        target = out / match.group(1)
        try:
            if match.group(2) == "old" and not target.exists() and not target.is_symlink():
                os.replace(entry, target)
            else:
                shutil.rmtree(entry)
        except OSError as err:  # a leftover that cannot be removed is no reason not to train
            _warn_leftover(entry, err)
    fsync_dir(out)


# --------------------------------------------------------------------------- saving


def _fsync_tree(path: Path) -> None:
    for item in path.rglob("*"):
        if item.is_file():
            with open(item, "rb") as fh:
                os.fsync(fh.fileno())
    for folder in [p for p in path.rglob("*") if p.is_dir()] + [path]:
        fsync_dir(folder)


def _rng_state() -> dict:
    """Every RNG state as tensors, lists and numbers (loadable with ``weights_only=True``)."""
    import torch

    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state = {
        "python": [int(version), [int(x) for x in internal], gauss_next],
        "numpy": [str(name), [int(x) for x in keys], int(pos), int(has_gauss), float(cached_gaussian)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def prompts_fingerprint(prompts: Sequence[Any]) -> str:
    """SHA-256 of the prompts in order (their chat messages and the items as given, metadata included)."""
    payload = [[list(p.messages), p.original] for p in prompts]
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_stable_json)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _stable_json(value: Any) -> Any:
    """JSON stand-in for a non-JSON value; never a memory address, which would change every run."""
    if hasattr(value, "tolist"):
        return value.tolist()
    text = repr(value)
    return type(value).__qualname__ if " at 0x" in text else text


def _trainer_state(trainer) -> dict:
    return {
        "step": trainer.step,
        "sampler_drawn": trainer.sampler.drawn,
        "history": trainer.history,
        "config": trainer.config.to_dict(),
        "n_channels": len(trainer.config.weights),
        "n_prompts": len(trainer.prompts),
        "prompts_sha256": prompts_fingerprint(trainer.prompts),
        "run_id": getattr(trainer, "run_id", None),
        "parent": getattr(trainer, "parent", None),
    }


class Snapshot(NamedTuple):
    """The full weights and optimizer state of a sharded model, gathered for saving (None: read the objects)."""

    weights: dict | None = None
    optimizer: dict | None = None


def save_model(model, folder: Path, weights: dict | None = None) -> None:
    """``model.save_pretrained(folder)`` (safetensors), from the gathered ``weights`` of a sharded model when given."""
    model.save_pretrained(folder, **({} if weights is None else {"state_dict": weights}))


def _write_contents(trainer, folder: Path, snapshot: Snapshot) -> None:
    import torch

    save_model(trainer.model, folder / "model", snapshot.weights)
    trainer.tokenizer.save_pretrained(folder / "model")
    optimizer = trainer.optimizer.state_dict() if snapshot.optimizer is None else snapshot.optimizer
    torch.save({"optimizer": optimizer, "scheduler": trainer.scheduler.state_dict()}, folder / "optimizer.pt")
    torch.save(_rng_state(), folder / "rng.pt")
    (folder / "trainer_state.json").write_text(json.dumps(_trainer_state(trainer), default=str), encoding="utf-8")
    (folder / "COMPLETE").write_text("ok\n")
    _fsync_tree(folder)


def _install(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` onto ``final``; an existing ``final`` is set aside first, deleted last."""
    aside = tmp.with_name(tmp.name[: -len(".tmp")] + ".old")
    moved_aside = False
    try:
        if final.exists() or final.is_symlink():
            os.replace(final, aside)
            moved_aside = True
        os.replace(tmp, final)
    except BaseException:
        if moved_aside and not final.exists():
            os.replace(aside, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(final.parent)
    if moved_aside:
        try:
            _remove_tree(aside)
        except OSError as err:  # the new checkpoint is in place; the next start removes the leftover
            _warn_leftover(aside, err)


def save_checkpoint(trainer, snapshot: Snapshot | None = None) -> Path:
    """Write ``out_dir/checkpoint-{step}`` atomically; keep the newest ``keep_checkpoints``.

    Parameters
    ----------
    trainer : GRPOTrainer
    snapshot : Snapshot, optional
        The gathered weights and optimizer state of a sharded model (the
        trainer's ``_snapshot()``, which every process calls); by default
        read from the trainer's model and optimizer.

    Returns
    -------
    Path
        The checkpoint folder.
    """
    out = Path(trainer.config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _set_aside_abandoned(trainer, out)
    final = out / f"{_PREFIX}{trainer.step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{_PREFIX}{trainer.step}.", suffix=".tmp", dir=out))
    try:
        _write_contents(trainer, tmp, snapshot or Snapshot())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _install(tmp, final)
    trainer.checkpointed_step = trainer.step
    _prune(out, trainer.config.keep_checkpoints)
    return final


def _prune(out: Path, keep: int) -> None:
    from multireward_grpo._validate import check_int

    for old in _complete_checkpoints(out)[:-check_int("keep_checkpoints", keep, 1)]:
        try:
            _discard(old)
        except OSError as err:  # a checkpoint that cannot be deleted is no reason to stop training
            _warn_leftover(old, err)


def _warn_leftover(path: Path, err: OSError) -> None:
    print(f"could not remove the old checkpoint folder {path} ({err.strerror or err}); training goes on, "
          "delete it by hand", file=sys.stderr)


def _set_aside_abandoned(trainer, out: Path) -> None:
    """Move other runs' checkpoints above the step this run started from to ``out/abandoned/{run_id}/``."""
    base_step, run_id = getattr(trainer, "base_step", 0), getattr(trainer, "run_id", None)
    moved = []
    for folder in _complete_checkpoints(out):
        if _step_of(folder) <= base_step:
            continue
        owner = _owner(folder)
        if run_id is not None and owner == run_id:
            continue
        target = out / ABANDONED_DIR / (owner or "unknown-run") / folder.name
        if target.exists():
            target = target.with_name(f"{folder.name}.{secrets.token_hex(4)}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder, target)
        moved.append(target)
    if moved:
        start = f"this run resumed from step {base_step}" if base_step else "this is a new run"
        print(f"{start}, so the later checkpoints of another run ({', '.join(p.name for p in moved)}) are an "
              f"abandoned branch: moved them to {moved[0].parent}; delete them when not needed", file=sys.stderr)


def _owner(folder: Path) -> str | None:
    """The run id recorded in a checkpoint (None when unrecorded or unreadable)."""
    try:
        owner = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8")).get("run_id")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    # a run id becomes a folder name: only the hex ids the trainer writes are used as they are
    return owner if isinstance(owner, str) and re.fullmatch(r"[0-9a-f]{1,64}", owner) else None


def _read_state(folder: Path) -> dict:
    path = folder / "trainer_state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: {folder} is not a complete checkpoint") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the checkpoint is damaged, pick another") from None
    if not isinstance(state, dict) or not {"step", "sampler_drawn", "history"} <= set(state):
        raise ValueError(f"{path} lacks step / sampler_drawn / history: not a trainer checkpoint")
    return state


# --------------------------------------------------------------------------- resume: find and check


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """A checkpoint chosen for resuming, checked against the new run's settings.

    Attributes
    ----------
    path : Path
        The checkpoint folder.
    state : dict
        Its ``trainer_state.json``.
    applied : dict
        ``{field: (old, new)}`` of the changed settings the resumed run applies.
    """

    path: Path
    state: dict
    applied: dict


def _resolve(where: str | Path, out_dir: str | Path) -> Path:
    if str(where) == "latest":
        path = latest_checkpoint(out_dir)
        if path is None:
            raise FileNotFoundError(f"resume_from='latest' but {out_dir} holds no complete checkpoint; "
                                    "start without resume_from, or give a checkpoint folder")
        return path
    path = Path(where)
    if not path.is_dir():
        raise FileNotFoundError(f"resume_from={str(where)!r}: no such checkpoint folder; give a checkpoint-N "
                                "folder or 'latest'")
    if not (path / "COMPLETE").exists():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no COMPLETE marker); pick another or 'latest'")
    return path


def _plain(value: Any) -> Any:
    """A config value as JSON gives it back (tuples become lists), for comparing old and new."""
    return json.loads(json.dumps(value, default=str))


def _config_changes(saved: dict, config) -> tuple[list[str], dict]:
    """Refused differences as ``"field: old -> new"`` lines, and the applied ones as ``{field: (old, new)}``."""
    refused, applied = [], {}
    new = _plain(config.to_dict())
    for field in dataclasses.fields(config):
        name = field.name
        if name in RESUME_IGNORED or name not in saved or saved[name] == new[name]:
            continue
        # bnpo normalizes each micro-batch by its own tokens: there micro_batch_size is part of the objective
        if name in RESUME_APPLIED and not (name == "micro_batch_size" and new.get("loss_type") == "bnpo"):
            applied[name] = (saved[name], new[name])
        else:
            refused.append(f"{name}: {saved[name]!r} -> {new[name]!r}")
    return refused, applied


def _fingerprint_changes(state: dict, config, prompts) -> list[str]:
    lines = []
    if "n_channels" in state and state["n_channels"] != len(config.weights):
        lines.append(f"reward channels: {state['n_channels']} -> {len(config.weights)}")
    if "prompts_sha256" in state:
        digest = prompts_fingerprint(prompts)
        if state["prompts_sha256"] != digest:
            lines.append(f"prompts: {state.get('n_prompts', '?')} prompts (sha256 {state['prompts_sha256'][:12]}) "
                         f"-> {len(prompts)} prompts (sha256 {digest[:12]})")
    return lines


def find_resume_point(config, prompts: Sequence[Any], where: str | Path | None = None) -> ResumePoint:
    """Resolve a checkpoint to resume from and refuse settings it cannot continue with.

    Reads only ``trainer_state.json``: call it before loading any model, so a
    missing checkpoint or an incompatible change fails fast.

    Parameters
    ----------
    config : GRPOConfig
        The new run's settings.
    prompts : sequence of PromptItem
        The new run's prompts, normalized.
    where : str or path, optional
        A checkpoint folder or ``"latest"`` (default: ``config.resume_from``).

    Raises
    ------
    FileNotFoundError
        No such (complete) checkpoint.
    ValueError
        A refused setting differs; the message lists every difference.
    """
    path = _resolve(config.resume_from if where is None else where, config.out_dir)
    state = _read_state(path)
    refused, applied = _config_changes(state.get("config", {}), config)
    refused += _fingerprint_changes(state, config, prompts)
    if refused:
        raise ValueError(
            f"cannot resume from {path}: these settings differ from the checkpoint's and a resumed run cannot "
            "change them:\n  " + "\n  ".join(refused) + "\nrestore them, or start a new run in a fresh out_dir "
            "(without resume_from)")
    return ResumePoint(path, state, applied)


# --------------------------------------------------------------------------- resume: load


def _resume_point(trainer, where: str | Path | ResumePoint) -> ResumePoint:
    return where if isinstance(where, ResumePoint) else find_resume_point(trainer.config, trainer.prompts, where)


def load_weights(trainer, where: str | Path | ResumePoint) -> Path:
    """Load a checkpoint's weights (adapter or full model) into ``trainer.model``; returns the checkpoint folder."""
    point = _resume_point(trainer, where)
    _load_weights(trainer, point.path / "model")
    return point.path


def load_checkpoint(trainer, where: str | Path | ResumePoint, *, weights: bool = True) -> Path:
    """Restore weights, optimizer, scheduler, RNG, step, sampler and history; apply the changed settings.

    Parameters
    ----------
    trainer : GRPOTrainer
    where : str, path or ResumePoint
        A checkpoint folder, ``"latest"``, or what :func:`find_resume_point` returned.
    weights : bool
        Load the weights too. The trainer loads them itself (:func:`load_weights`, on the main process,
        before the model is shared out) and passes False.

    Returns
    -------
    Path
        The checkpoint folder loaded.
    """
    point = _resume_point(trainer, where)
    if weights:
        load_weights(trainer, point)
    states = _load_plain(point.path / "optimizer.pt")
    processes = getattr(trainer, "processes", None)
    try:
        optimizer_state = states["optimizer"] if processes is None else processes.local_optimizer_state(
            trainer.optimizer, states["optimizer"])
        trainer.optimizer.load_state_dict(optimizer_state)
        trainer.scheduler.load_state_dict(states["scheduler"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{point.path / 'optimizer.pt'} does not fit this trainer's optimizer ({err}); "
                         "the checkpoint is damaged or from another setup") from None
    _restore_rng(_load_plain(point.path / "rng.pt"), point.path / "rng.pt")
    state = point.state
    trainer.step = int(state["step"])
    trainer.sampler.drawn = int(state["sampler_drawn"])
    trainer.history = list(state["history"])
    trainer.base_step = trainer.checkpointed_step = trainer.step
    trainer.parent = {"run_id": state.get("run_id"), "step": trainer.step, "checkpoint": point.path.name}
    if "lr" in point.applied or "n_steps" in point.applied:
        _apply_lr(trainer)
    if point.applied and (processes is None or processes.is_main):  # one message, not one per process
        print(f"resuming from {point.path} (step {trainer.step}); applied changed settings: "
              + ", ".join(f"{name} {old!r} -> {new!r}" for name, (old, new) in point.applied.items()),
              file=sys.stderr)
    return point.path


def _load_plain(path: Path):
    """``torch.load`` restricted to tensors and plain containers: never runs code from the file."""
    import pickle

    import torch

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: the checkpoint is incomplete; pick another") from None
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path} holds objects other than tensors and plain containers, so it is not loaded (unpickling "
            f"them could run code): {first[:300]}. It was tampered with or written by an older release that "
            "pickled RNG states; resume from a checkpoint written by this version, or start a new run"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path} is not a readable torch file ({err}); the checkpoint is damaged") from None


def _restore_rng(rng: Any, path: Path) -> None:
    """Set the Python, numpy and torch RNGs from :func:`_rng_state`'s format."""
    import torch

    try:
        version, internal, gauss_next = rng["python"]
        random.setstate((int(version), tuple(int(x) for x in internal), gauss_next))
        name, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((str(name), np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
        torch.set_rng_state(rng["torch"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path} does not hold valid RNG states ({type(err).__name__}: {err}); "
                         "the checkpoint is damaged") from None
    if "cuda" in rng and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):  # another number of GPUs: sampling differs anyway
            torch.cuda.set_rng_state_all(rng["cuda"])


def _apply_lr(trainer) -> None:
    """Set the new lr as the scheduler's base and recompute the current rate under the new settings."""
    scheduler, groups = trainer.scheduler, trainer.optimizer.param_groups
    scheduler.base_lrs = [trainer.config.lr for _ in groups]
    for group, factor in zip(groups, scheduler.lr_lambdas):
        group["initial_lr"] = trainer.config.lr
        group["lr"] = trainer.config.lr * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in groups]


def _load_weights(trainer, folder: Path) -> None:
    import torch

    if trainer.config.use_lora:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = folder / "adapter_model.safetensors"
        if not weights.exists():
            raise FileNotFoundError(f"{weights} is missing (pickled .bin weights are not loaded); "
                                    "the checkpoint is incomplete, pick another")
        set_peft_model_state_dict(trainer.model, load_file(str(weights), device=str(trainer.device)))
        return
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=trainer.dtype, use_safetensors=True)
    with torch.no_grad():
        trainer.model.load_state_dict(loaded.state_dict())
