"""Runs tiny GRPO trainings for tests/test_distributed.py, in one process or under torchrun.

``python tests/dist_worker.py SPEC.json`` (or ``torchrun --nproc_per_node N
tests/dist_worker.py SPEC.json``) reads a list of runs, each
``{"name", "out_dir", "config": {...}, "crash_after": int | null, "resume_from": str | null}``,
trains each with the tiny model of ``tiny_lm`` and, per rank, writes into the
spec's ``report_dir`` (outside every ``out_dir``):

* ``{name}.rank{r}.pt``: the trainable parameters (flattened) after every step;
* ``{name}.rank{r}.json``: the history, the prompts this rank's reward scored,
  the number of reward calls, and every file-system write this rank made
  inside ``out_dir`` (seen by an audit hook).

``crash_after`` raises after that step's checkpoint, as a crash would
(the run's folder keeps the checkpoints); ``resume_from`` resumes a run.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

WRITE_EVENTS = ("os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate", "os.symlink")


class Crash(RuntimeError):
    """The planned interruption of a run."""


class Audit:
    """Records every write-like file-system event under ``root`` (opening for writing, rename, remove, mkdir)."""

    def __init__(self):
        self.root, self.events = None, []

    def __call__(self, event, args):
        if self.root is None:
            return
        if event == "open":
            path, mode = args[0], args[1]
            writing = isinstance(mode, str) and any(c in mode for c in "wax+")
            if isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                writing = True
            paths = [path] if writing else []
        elif event in WRITE_EVENTS:
            paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        else:
            return
        for path in paths:
            text = os.fsdecode(path) if not isinstance(path, int) else ""
            if text and os.path.abspath(text).startswith(self.root):
                self.events.append(f"{event} {text}")


def _flat_params(trainer):
    """The trainable parameters, flattened; under FSDP gathered from the shards (every rank calls this)."""
    import torch

    model = trainer.model
    full = trainer.processes.full_weights(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    values = [p.detach() for _, p in named] if full is None else [full[n] for n, _ in named]
    return torch.cat([v.reshape(-1).double().cpu() for v in values])


def _units_with_trainable_params(model) -> int:
    """How many FSDP units own a trainable parameter (each reduce-scatters once per synced backward)."""
    from torch.distributed.fsdp import FSDPModule

    claimed, count = set(), 0
    for module in reversed([m for m in model.modules() if isinstance(m, FSDPModule)]):  # descendants first
        own = [p for p in module.parameters() if id(p) not in claimed]
        claimed.update(id(p) for p in own)
        count += any(p.requires_grad for p in own)
    return count


def _count_gradient_syncs(trainer, syncs: list):
    """Count the gradient collectives: the trainer's bucketed all-reduce, or FSDP's reduce-scatters (per unit).

    Returns a function that undoes the counting."""
    import torch.distributed as dist

    if trainer.processes.sharded:
        scatter = dist.reduce_scatter_single

        def counted(*args, **kwargs):
            syncs[0] += 1
            return scatter(*args, **kwargs)

        dist.reduce_scatter_single = counted
        return lambda: setattr(dist, "reduce_scatter_single", scatter)
    summed = trainer.processes.sum_gradients

    def count_syncs(params, summed=summed):
        syncs[0] += 1
        return summed(params)

    trainer.processes.sum_gradients = count_syncs
    return lambda: None


def _note_meta_weights(seen: list):
    """Record, per sharded model, whether this rank held meta (unloaded) weights before sharding; returns the undo."""
    from multireward_grpo.train import sharding

    shard = sharding.shard_model

    def noted(model, *args, **kwargs):
        seen.append(any(p.is_meta for p in model.parameters()))
        return shard(model, *args, **kwargs)

    sharding.shard_model = noted
    return lambda: setattr(sharding, "shard_model", shard)


def run(spec: dict, audit: Audit) -> None:
    import torch
    from tiny_lm import make_model, make_tokenizer
    from trainer_helpers import PROMPTS, e_reward

    from multireward_grpo.train import GRPOConfig, GRPOTrainer

    tokenizer = make_tokenizer()
    report = Path(spec["report_dir"])
    for run_spec in spec["runs"]:
        scored, calls, meta = [], [0], []
        unnote = _note_meta_weights(meta)

        def reward(completion, prompt, scored=scored, calls=calls):
            calls[0] += 1
            scored.append(prompt)
            return e_reward(completion, prompt)

        config = GRPOConfig(**{**run_spec["config"], "out_dir": run_spec["out_dir"],
                               "resume_from": run_spec.get("resume_from")})
        prompts = run_spec.get("prompts") or PROMPTS
        if run_spec.get("model_dir"):  # loaded by the trainer from a folder, as the CLI does
            trainer = GRPOTrainer(config.replace(model=run_spec["model_dir"]), reward, prompts,
                                  eval_prompts=prompts[:3])
        else:
            # meta_on_other_ranks: ranks > 0 get an empty model, as FSDP's rank-0-only loading leaves them
            empty = run_spec.get("meta_on_other_ranks") and int(os.environ.get("RANK", "0")) > 0
            with torch.device("meta") if empty else contextlib.nullcontext():
                model = make_model(tokenizer)
            trainer = GRPOTrainer(config, reward, prompts, eval_prompts=prompts[:3], model=model, tokenizer=tokenizer)
        unnote()
        rank = trainer.processes.rank
        snapshots = []
        checkpoint = trainer._maybe_checkpoint

        def after_step(final, checkpoint=checkpoint, trainer=trainer, snapshots=snapshots, run_spec=run_spec):
            checkpoint(final)
            snapshots.append(_flat_params(trainer))
            if run_spec.get("crash_after") == trainer.step:
                raise Crash(f"planned interruption after step {trainer.step}")

        trainer._maybe_checkpoint = after_step
        syncs = [0]
        uncount = _count_gradient_syncs(trainer, syncs)
        audit.root, audit.events = os.path.abspath(run_spec["out_dir"]), []
        crashed = False
        try:
            trainer.train()
        except Crash:
            crashed = True
        finally:
            uncount()
        audit.root = None
        torch.save(torch.stack(snapshots), report / f"{run_spec['name']}.rank{rank}.pt")
        (report / f"{run_spec['name']}.rank{rank}.json").write_text(json.dumps({
            "history": trainer.history, "scored_prompts": scored, "reward_calls": calls[0], "crashed": crashed,
            "writes": audit.events, "world_size": trainer.processes.world_size, "final_step": trainer.step,
            "gradient_syncs": syncs[0], "sharded": trainer.processes.sharded, "meta_before_sharding": meta,
            "sync_units": _units_with_trainable_params(trainer.model) if trainer.processes.sharded else 1,
        }))
        trainer.processes.barrier()


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    spec = json.loads(Path(sys.argv[1]).read_text())
    audit = Audit()
    sys.addaudithook(audit)
    run(spec, audit)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
