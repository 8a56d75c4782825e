"""Per-step records, the JSONL history, optional TensorBoard / W&B, a progress bar.

Record keys (all floats unless noted):

``step`` (int), ``lr`` (after the step's updates);

the update, each a mean over the step's ``num_iterations`` updates, with the
last update's value under the same name plus ``_last`` (the first update is
on-policy, so its ratio is 1 and it never clips; later ones do, and only the
mean and the last show that): ``loss`` / ``loss_last``, ``pg_loss`` /
``pg_loss_last``, ``kl`` / ``kl_last`` (mean k3 per token), ``grad_norm`` /
``grad_norm_last`` (before clipping; NaN or inf when an update was skipped),
``clip_frac`` / ``clip_frac_last`` (tokens whose ratio left the clip band on
the side that bites), split into ``clip_frac_low`` (below ``1 - ppo_clip``,
negative advantage) and ``clip_frac_high`` (above ``1 + epsilon_high``,
positive advantage; TRL's ``clip_ratio/low_mean`` and ``high_mean``), each
with its ``_last``; ``update_skipped`` (int, 1 when any update of this
step was skipped for a non-finite gradient norm, its weights left as they
were), ``skipped_updates`` (int, such skipped updates since the run began);

the rollouts:
``mean_reward`` = mean of ``w.r / sum(w)`` (a weighted average in channel
units), ``mean_aggregate_reward`` = mean of ``w.r``,
``mean_channel_{c}`` / ``std_channel_{c}`` per channel index ``c``;

the channel diagnostics (:mod:`multireward_grpo.analysis.diagnostics`, the
same numbers the TRL integration logs), per channel index ``c``:
``zero_var_frac_{c}`` (fraction of groups where channel ``c`` as scored is
constant, i.e. gives no signal; with ``nan_policy="omit"`` constant among
its observed values), ``influence_{c}`` (Prop 1's ``Cov(A, z_c)`` of the
step's advantages, pooled over groups), and ``noise_factor`` (``w' Chat w``,
Theorem 3's predicted ratio of NA's gradient noise to AN's, from the pooled
within-group correlation of the channels the estimator sees);

``adv_mean``, ``adv_std``, ``adv_abs_max``;
``completion_len_mean``, ``completion_len_max``, ``truncated_frac``
(completions cut at max_new_tokens); ``gen_tokens_per_s``,
``train_tokens_per_s``, ``gen_seconds``, ``step_seconds``.

TensorBoard and W&B get every numeric key of a record, plus ``eval/...``
scalars (see :func:`eval_scalars`) at each evaluation.

Files in ``out_dir``: ``history.jsonl`` is rewritten atomically when a run
starts (from the records it resumes with) and appended to after each step;
``samples.jsonl`` and ``eval.jsonl`` are appended to. None is ever written
through a symbolic link: the rewrite replaces a link at ``history.jsonl``
with a plain file, and a link at a file that is appended to is refused
before the first step (see :mod:`multireward_grpo._fileio`).

Under several processes every rank computes the same record (over the whole
batch: rewards and advantages gathered, loss sums and token counts summed,
times the slowest rank's), and only the main process writes it; the others
log through a :class:`NullLogger`.
"""

from __future__ import annotations

import collections
import json
import os
import sys
from pathlib import Path

import numpy as np

from multireward_grpo._fileio import atomic_write, open_append, refuse_symlink

__all__ = ["NullLogger", "StepLogger", "diagnostic_scalars", "eval_scalars", "step_record", "update_scalars"]

RECENT_STEPS = 10  # steps in the trailing mean reward shown next to each step's own


def update_scalars(iterations, skipped_before: int = 0) -> dict:
    """The update keys of a step record from the stats of each of its updates.

    Parameters
    ----------
    iterations : list of dict
        One per update (``num_iterations``), with the sums ``loss``, ``pg``,
        ``kl``, ``clipped_tokens`` (and its ``clipped_low_tokens`` /
        ``clipped_high_tokens`` parts), ``tokens`` and ``grad_norm``, ``skipped``.
    skipped_before : int
        Updates skipped in earlier steps of the run.
    """
    per_key = {
        "loss": [it["loss"] for it in iterations],
        "pg_loss": [it["pg"] for it in iterations],
        "kl": [it["kl"] for it in iterations],
        "grad_norm": [it["grad_norm"] for it in iterations],
        "clip_frac": [it["clipped_tokens"] / max(it["tokens"], 1.0) for it in iterations],
        "clip_frac_low": [it["clipped_low_tokens"] / max(it["tokens"], 1.0) for it in iterations],
        "clip_frac_high": [it["clipped_high_tokens"] / max(it["tokens"], 1.0) for it in iterations],
    }
    scalars = {}
    for key, values in per_key.items():
        scalars[key] = float(np.mean(values))
        scalars[f"{key}_last"] = float(values[-1])
    skipped = sum(bool(it["skipped"]) for it in iterations)
    scalars["update_skipped"] = int(skipped > 0)
    scalars["skipped_updates"] = int(skipped_before + skipped)
    return scalars


def step_record(trainer, rewards, advantages, rollouts, update, gen_seconds, step_seconds, *,
                lengths=None, truncated=None) -> dict:
    """The log record of one step (see the module docstring for the keys).

    ``update`` is the trainer's ``{"iterations": [stats of each update], "train_seconds": float}``.
    ``lengths`` and ``truncated`` ((N,) arrays: completion tokens, cut at
    ``max_new_tokens``) stand for the whole batch's when ``rollouts`` holds
    only one process's share; by default they are read from ``rollouts``.
    """
    cfg = trainer.config
    w = np.asarray(cfg.weights)
    aggregate = rewards @ w  # (N,)
    grouped = rewards.reshape(cfg.batch_prompts, cfg.m, -1)
    lengths = np.asarray(rollouts.completion_mask.sum(dim=1).cpu() if lengths is None else lengths, dtype=float)
    truncated = np.asarray(rollouts.truncated.cpu() if truncated is None else truncated, dtype=float)
    adv = advantages.float()
    # The history is the run's record (restored on resume), so the running count continues from it.
    skipped_before = trainer.history[-1].get("skipped_updates", 0) if trainer.history else 0
    record = {"step": trainer.step, **update_scalars(update["iterations"], skipped_before)}
    record.update({
        "lr": trainer.scheduler.get_last_lr()[0],
        "mean_reward": float(np.nanmean(aggregate) / w.sum()),
        "mean_aggregate_reward": float(np.nanmean(aggregate)),
    })
    for c in range(rewards.shape[1]):
        record[f"mean_channel_{c}"] = float(np.nanmean(rewards[:, c]))
        record[f"std_channel_{c}"] = float(np.nanstd(rewards[:, c]))
    record.update(diagnostic_scalars(trainer, grouped, adv))
    tokens = float(lengths.sum())
    record.update({
        "adv_mean": float(adv.mean()),
        "adv_std": float(adv.std(unbiased=False)),
        "adv_abs_max": float(adv.abs().max()),
        "completion_len_mean": float(lengths.mean()),
        "completion_len_max": float(lengths.max()),
        "truncated_frac": float(truncated.mean()),
        "gen_tokens_per_s": tokens / max(gen_seconds, 1e-9),
        "train_tokens_per_s": tokens * cfg.num_iterations / max(update["train_seconds"], 1e-9),
        "gen_seconds": gen_seconds,
        "step_seconds": step_seconds,
    })
    return record


def diagnostic_scalars(trainer, grouped, advantages) -> dict:
    """``zero_var_frac_{c}``, ``influence_{c}`` and ``noise_factor`` of one step.

    Parameters
    ----------
    trainer : GRPOTrainer
        Gives the weights, conditioning rules and ``nan_policy`` its estimator ran with.
    grouped : (P, m, R) array
        The step's rewards as scored.
    advantages : (P * m,) tensor
        The advantages the update used (NaN groups already set to 0).
    """
    from multireward_grpo.analysis.diagnostics import channel_diagnostics

    cfg = trainer.config
    # The trainer's estimator runs with the default ddof and eps, which channel_diagnostics shares.
    diagnostics = channel_diagnostics(grouped, advantages.detach().cpu().reshape(grouped.shape[:2]).numpy(),
                                      cfg.weights, conditioning=trainer.rules, nan_policy=cfg.nan_policy)
    scalars = {}
    for c in range(grouped.shape[-1]):
        scalars[f"zero_var_frac_{c}"] = float(diagnostics.zero_var_frac[c])
        scalars[f"influence_{c}"] = float(diagnostics.influence[c])
    scalars["noise_factor"] = float(diagnostics.noise_factor)
    return scalars


def eval_scalars(result) -> dict:
    """``eval/<channel>`` and ``eval/aggregate`` means (and ``_se``) of an EvalResult, for TensorBoard and W&B."""
    scalars = {"eval/aggregate": float(result.aggregate_mean), "eval/aggregate_se": float(result.aggregate_stderr)}
    for name, mean, se in zip(result.channel_names, result.means, result.stderrs):
        scalars[f"eval/{name}"] = float(mean)
        scalars[f"eval/{name}_se"] = float(se)
    return scalars


class NullLogger:
    """What a process other than the main one logs with: nothing (only the main process writes files)."""

    def log(self, record: dict, trainer) -> None:
        """Drop the record."""

    def log_eval(self, step: int, result) -> None:
        """Drop the evaluation."""

    def close(self) -> None:
        """Nothing to close."""


class StepLogger:
    """Writes each record to ``history.jsonl`` (always) and to the requested loggers."""

    def __init__(self, config, out_dir: Path, *, start: int = 0, records: list | tuple = ()):
        self.config = config
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.samples_path = self.out_dir / "samples.jsonl"
        self.eval_path = self.out_dir / "eval.jsonl"
        # Refused now rather than at the first sample or evaluation, minutes of compute later.
        if config.sample_every:
            refuse_symlink(self.samples_path, "samples log")
        if config.eval_every:
            refuse_symlink(self.eval_path, "evaluation log")
        # The file restarts from the records the run resumes with (a checkpoint's history, or none): lines
        # written after that checkpoint, or lost to a crash before it, are neither duplicated nor missing.
        history_path = self.out_dir / "history.jsonl"
        atomic_write(history_path, "".join(json.dumps(r) + "\n" for r in records))
        self.history = open_append(history_path)
        self.recent_rewards = collections.deque((r["mean_reward"] for r in records), maxlen=RECENT_STEPS)
        self.bar = self._progress(start)
        self.tb = self._tensorboard() if "tensorboard" in config.report_to else None
        self.wandb = self._wandb() if "wandb" in config.report_to else None

    def _progress(self, start: int):
        if not self.config.verbose:
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        return tqdm(total=self.config.n_steps, initial=start, desc="GRPO", unit="step", file=sys.stderr)

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("report_to has tensorboard but it is not installed (pip install tensorboard); skipping it", file=sys.stderr)
            return None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    def _wandb(self):
        try:
            import wandb
        except ImportError:
            print("report_to has wandb but it is not installed (pip install wandb); skipping it", file=sys.stderr)
            return None
        # WANDB_PROJECT / WANDB_MODE (e.g. offline) from the environment are honoured.
        project = os.environ.get("WANDB_PROJECT") or "multireward-grpo"
        return wandb.init(project=project, config=self.config.to_dict(), dir=str(self.out_dir))

    def log(self, record: dict, trainer) -> None:
        samples = record.get("samples", [])
        clean = {k: v for k, v in record.items() if k != "samples"}
        self.history.write(json.dumps(clean) + "\n")
        self.history.flush()
        every = self.config.sample_every
        if every and clean["step"] % every == 0 and samples:
            with open_append(self.samples_path) as fh:
                for prompt, completion in samples:
                    fh.write(json.dumps({"step": clean["step"], "prompt": prompt, "completion": completion}) + "\n")
        self._emit(clean)

    def _emit(self, record: dict) -> None:
        self._send({k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}, record["step"])
        # One step's reward is a handful of rollouts, too noisy to read a trend from; show a trailing mean too.
        self.recent_rewards.append(record["mean_reward"])
        recent = sum(self.recent_rewards) / len(self.recent_rewards)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(reward=f"{record['mean_reward']:.3f}", **{f"last{len(self.recent_rewards)}": f"{recent:.3f}"},
                                 kl=f"{record['kl']:.4f}", loss=f"{record['loss']:.4f}")
        elif self.config.verbose:
            print(f"step {record['step']}/{self.config.n_steps} reward {record['mean_reward']:.4f} "
                  f"(mean of last {len(self.recent_rewards)}: {recent:.4f}) kl {record['kl']:.5f} "
                  f"loss {record['loss']:.4f} {record['step_seconds']:.2f}s", file=sys.stderr)

    def log_eval(self, step: int, result) -> None:
        record = {"step": step, "eval": result.to_dict()}
        with open_append(self.eval_path) as fh:
            fh.write(json.dumps(record) + "\n")
        self._send(eval_scalars(result), step)

    def _send(self, scalars: dict, step: int) -> None:
        """Scalars of one step to TensorBoard and W&B (those that are on)."""
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        self.history.close()
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
