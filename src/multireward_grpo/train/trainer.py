"""GRPOTrainer: multi-reward GRPO on any causal LM, from a laptop CPU up.

One step: draw ``batch_prompts`` prompts, sample ``m`` completions each,
score them on ``R`` reward channels, turn the rewards into advantages with
the estimator registry (any mode, with conditioning), then take
``num_iterations`` AdamW updates of the clipped token-ratio loss plus the
per-token k3 KL (see :mod:`multireward_grpo.train.losses`).

Deliberate choices, named here so they are not mistaken for accidents:

* The KL reference of a LoRA run is the base model with the adapter
  disabled: no second copy in memory. Full fine-tuning keeps one frozen copy;
  ``kl_coef = 0`` keeps none and skips the reference pass.
* With ``num_iterations = 1`` the sampling log-probs are the policy's own,
  detached: the ratio is 1 and no extra forward pass is spent on them.
* Dropout is off in the policy by default (``disable_dropout``, as in TRL):
  the old and reference log-probs are taken in eval mode and the loss pass
  in train mode, and with dropout left on those are different functions, so
  the first, on-policy ratio would leave 1 and the clip would fire on noise.
* Every step reseeds torch from ``(seed, step)``, and row ``j`` of the
  prompt in slot ``p`` of the step's batch samples from its own stream seeded
  by ``(seed, step, p, j)`` (:class:`~multireward_grpo.train.rollout.RowSeededSampler`),
  so a run interrupted and resumed from a checkpoint samples exactly what the
  uninterrupted run did, on any number of processes.
* Under ``accelerate launch`` or ``torchrun`` the step is data-parallel:
  each process samples and scores whole groups of its share of the prompts,
  the advantages and metrics are over the whole batch, the loss denominators
  are global and the gradients are summed once per update, so N processes
  take the steps of one process with the same global batch; only the main
  process writes files (see :mod:`multireward_grpo.train.distributed`).
  Under an Accelerate FSDP config the model is sharded over the processes
  and the no-grad passes run on weights gathered once per pass (see
  :mod:`multireward_grpo.train.sharding`); the prompt cache is then not
  shared in the training pass.
* Prompts are drawn without replacement, in a fresh seeded order each epoch.
* Rollouts use plain temperature / top-p sampling and the log-probs are those
  of the tempered distribution (as TRL does); the model's own
  ``generation_config`` does not shape them, see
  :mod:`multireward_grpo.train.rollout`.
* An update whose gradient norm is NaN or inf is skipped with a warning: the
  weights and the optimizer state stay as they were, the gradients are
  zeroed, the learning-rate schedule advances, and the history counts it
  (``update_skipped``, ``skipped_updates``).
* The log records every one of the ``num_iterations`` updates: their mean
  and the last (see :mod:`multireward_grpo.train.logging`).
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from multireward_grpo.models import quiet_peft
from multireward_grpo.models import require_llm as _require_llm
from multireward_grpo.train.config import GRPOConfig
from multireward_grpo.train.distributed import current_processes

__all__ = ["GRPOTrainer", "train_grpo"]


def _stable_seed(*parts: int) -> int:
    from multireward_grpo._seeding import stable_hash64

    return stable_hash64(*parts) % (2**63)


# --------------------------------------------------------------------------- prompt order


@dataclass
class PromptSampler:
    """Prompts without replacement within an epoch, a seeded order per epoch.

    The state is one integer (prompts drawn so far), so resuming is exact.
    """

    n_prompts: int
    seed: int
    drawn: int = 0
    _cached: tuple = (-1, None)

    def order(self, epoch: int):
        import numpy as np

        if self._cached[0] != epoch:
            self._cached = (epoch, np.random.default_rng(_stable_seed(self.seed, "epoch", epoch)).permutation(self.n_prompts))
        return self._cached[1]

    def next(self, k: int) -> list[int]:
        picked = []
        while len(picked) < k:
            epoch, pos = divmod(self.drawn, self.n_prompts)
            picked.append(int(self.order(epoch)[pos]))
            self.drawn += 1
        return picked


class _DeferredInterrupt:
    """Holds Ctrl-C while a step updates the weights, so no checkpoint sees a half-applied step.

    ``hold()`` installs the handler (main thread only; elsewhere signals never
    reach us anyway); a first Ctrl-C is noted, a second raises at once and
    marks the run ``forced``; ``release()`` restores the previous handler and
    raises the noted Ctrl-C.
    """

    def __init__(self):
        self.holding = False
        self._previous = None
        self.new_step()

    def new_step(self) -> None:
        # updated: set by hold(), the current step has begun changing the weights
        self.pending = self.forced = self.updated = False

    def hold(self) -> None:
        if self.holding:
            return
        self.holding = self.updated = True
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum, frame) -> None:
        if self.pending:
            self.forced = True
            raise KeyboardInterrupt
        self.pending = True
        print("\nCtrl-C: finishing this step's update, then saving a checkpoint (Ctrl-C again stops at once)",
              file=sys.stderr)

    def release(self, *, deliver: bool = True) -> None:
        if not self.holding:
            return
        self.holding = False
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if self.pending and deliver:
            self.pending = False
            raise KeyboardInterrupt


# --------------------------------------------------------------------------- set-up


def _device_and_dtype(cfg: GRPOConfig, process_device=None):
    """``cfg.device`` and ``cfg.dtype`` resolved (see :func:`multireward_grpo.models.resolve_device_and_dtype`)."""
    from multireward_grpo.models import resolve_device_and_dtype

    return resolve_device_and_dtype(cfg.device, cfg.dtype, process_device=process_device)


def _load(cfg: GRPOConfig, model, tokenizer, device, dtype):
    """The model and tokenizer of ``cfg.model`` (unless given), left-padded, on ``device``.

    See :func:`multireward_grpo.models.load_model_and_tokenizer`.
    """
    from multireward_grpo.models import load_model_and_tokenizer

    return load_model_and_tokenizer(cfg.model, model, tokenizer, device=device, dtype=dtype)


def enable_checkpointing(model) -> None:
    """Activation checkpointing, non-reentrant so gradients reach a LoRA adapter on frozen embeddings.

    transformers 5 renamed ``gradient_checkpointing_enable`` to ``activation_checkpointing_enable``; the
    newer name is used where it exists.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _add_lora(model, cfg: GRPOConfig):
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(_stable_seed(cfg.seed, "lora-init"))
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM")
    try:
        with quiet_peft():
            return get_peft_model(model, lora)
    except ValueError as err:
        names = sorted({n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n})
        raise ValueError(f"{err}. LoRA target modules of this model could be among: {', '.join(names[:40])}; "
                         "set lora_target_modules") from None


_DROPOUT_MODULES = ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout")


def disable_dropout(model) -> int:
    """Set every dropout rate of ``model`` to 0, in place; returns how many rates were changed.

    Covers ``torch.nn`` dropout modules (LoRA's ``lora_dropout`` among them)
    and the float ``attention_dropout`` rate that transformers attention
    layers (Llama, Qwen2, Mistral, ...) hand to their attention kernel in
    train mode, which no module-level switch reaches.
    """
    import torch

    kinds = tuple(getattr(torch.nn, name) for name in _DROPOUT_MODULES if hasattr(torch.nn, name))
    changed = 0
    for module in model.modules():
        if isinstance(module, kinds) and module.p != 0:
            module.p = 0.0
            changed += 1
        rate = getattr(module, "attention_dropout", None)
        if isinstance(rate, float) and rate != 0:
            module.attention_dropout = 0.0
            changed += 1
    return changed


def _frozen_reference(model):
    import copy

    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def _optimizer_and_schedule(model, cfg: GRPOConfig):
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.n_steps * cfg.num_iterations

    def factor(update: int) -> float:
        if update < cfg.warmup_steps:
            return (update + 1) / (cfg.warmup_steps + 1)
        progress = (update - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        if cfg.lr_scheduler == "linear":
            return max(0.0, 1.0 - progress)
        if cfg.lr_scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------- the trainer


class GRPOTrainer:
    """Multi-reward GRPO with a LoRA adapter (or full fine-tuning).

    Parameters
    ----------
    config : GRPOConfig
    reward_fn : callable or RewardFunction, optional
        ``reward_fn(completion, prompt) -> R scores`` (``R = len(config.weights)``),
        or an object with ``score_batch(completions, prompts) -> (N, R)``.
        ``prompt`` is the item as you passed it (string, messages or dict with
        metadata). Give this or ``reward_funcs``.
    prompts : sequence or datasets.Dataset
        Strings, chat-message lists, or dicts with ``messages`` / ``prompt`` /
        ``text`` plus metadata; or a ``datasets.Dataset`` whose rows are such
        dicts (e.g. a ``prompt`` column and more).
    reward_funcs : list of callable, optional
        TRL-style reward functions instead of ``reward_fn``: each
        ``f(prompts, completions, **kwargs) -> list[float | None]`` is one
        channel, in order, named after the function; ``config.weights`` has one
        entry per function. The other columns of a prompt row arrive as keyword
        arguments, None is a missing reward for ``config.nan_policy``; see
        :mod:`multireward_grpo.rewards.trl_style`.
    eval_prompts : sequence or datasets.Dataset, optional
        Held-out prompts for ``evaluate`` and ``config.eval_every``.
    model, tokenizer : optional
        Already-loaded objects instead of loading ``config.model``.
    """

    def __init__(self, config: GRPOConfig, reward_fn: Callable | Any = None, prompts: Sequence[Any] | None = None, *,
                 reward_funcs: Sequence[Callable] | None = None, eval_prompts: Sequence[Any] | None = None,
                 model=None, tokenizer=None):
        _require_llm()
        if not isinstance(config, GRPOConfig):
            raise TypeError(f"config must be a GRPOConfig, got {type(config).__name__}")
        if prompts is None:
            raise TypeError("GRPOTrainer needs prompts: a list of prompts or a datasets.Dataset with a 'prompt' column")
        self.config = config
        self.rules = config.parsed_conditioning()
        self.reward = _reward_function(config, reward_fn, reward_funcs)
        self.prompts = prompt_items(prompts, config.system_prompt)
        self.eval_prompts = prompt_items([] if eval_prompts is None else eval_prompts, config.system_prompt,
                                         name="eval_prompts", allow_empty=True)
        _check_prompts_for_reward(self.reward, self.prompts, self.eval_prompts)
        if config.eval_every and not self.eval_prompts:
            raise ValueError(f"eval_every={config.eval_every} but no eval prompts: pass eval_prompts=... "
                             "to GRPOTrainer, or set eval_every=0")
        self.processes = current_processes(config.device)
        self.batch_share = self.processes.batch_share(config.batch_prompts)  # refuses an uneven split before loading
        resume_point = self._prepare_out_dir()  # a missing or incompatible checkpoint fails before the model loads
        self.device, self.dtype = _device_and_dtype(config, self.processes.device)
        self.model, self.tokenizer = _load(config, model, tokenizer, self.processes.load_device(self.device),
                                           self.dtype)
        if config.gradient_checkpointing:
            enable_checkpointing(self.model)
        if config.use_lora:
            self.model = _add_lora(self.model, config)
        if config.disable_dropout:
            disable_dropout(self.model)
        self.reference = _frozen_reference(self.model) if (not config.use_lora and config.kl_coef > 0) else None
        if resume_point is not None and self.processes.is_main:
            from multireward_grpo.train.checkpoint import load_weights

            load_weights(self, resume_point)
        # every rank trains rank 0's weights (sharded under FSDP), whatever a passed-in model or the seeding gave it
        self.model = self.processes.prepare_model(self.model)
        if self.reference is not None:
            self.reference = self.processes.prepare_model(self.reference)
        self.optimizer, self.scheduler = _optimizer_and_schedule(self.model, config)
        self.sampler = PromptSampler(len(self.prompts), config.seed)
        self._interrupts = _DeferredInterrupt()
        self.step = 0
        self.history: list[dict] = []
        if resume_point is not None:
            from multireward_grpo.train.checkpoint import load_checkpoint

            load_checkpoint(self, resume_point, weights=False)

    def _prepare_out_dir(self):
        """Clear stale checkpoint temp folders; check ``resume_from`` (see :mod:`~multireward_grpo.train.checkpoint`).

        Sets the run lineage: a fresh ``run_id``, and no parent until a checkpoint is loaded.
        """
        import uuid

        from multireward_grpo.train.checkpoint import (
            clean_stale_temp_folders,
            find_resume_point,
        )

        self.out_dir = Path(self.config.out_dir)
        self.run_id, self.parent = uuid.uuid4().hex, None
        self.base_step, self.checkpointed_step = 0, None  # the step resumed from; the step last saved or loaded
        if self.processes.is_main:
            clean_stale_temp_folders(self.out_dir)
        self.processes.barrier()  # no rank reads the folder while the main one tidies it
        return find_resume_point(self.config, self.prompts) if self.config.resume_from else None

    # ------------------------------------------------------------------ public

    def train(self) -> list[dict]:
        """Run until ``config.n_steps``; returns the history (one dict per step)."""
        from multireward_grpo.train.logging import NullLogger, StepLogger

        logger = (StepLogger(self.config, self.out_dir, start=self.step, records=self.history)
                  if self.processes.is_main else NullLogger())
        try:
            while self.step < self.config.n_steps:
                record = self._step_or_roll_back()
                logger.log(record, self)
                self._maybe_checkpoint(final=self.step == self.config.n_steps)
                if self.config.eval_every and self.eval_prompts and self.step % self.config.eval_every == 0:
                    logger.log_eval(self.step, self.evaluate(m=self.config.eval_m))
        except KeyboardInterrupt:
            self._save_on_interrupt()
            raise
        finally:
            logger.close()
        self.save(self.out_dir / "final")
        self.processes.barrier()  # the final model is on disk before any rank returns
        return self.history

    def train_step(self) -> dict:
        """One GRPO step: sample, score, estimate advantages, update. Returns its log record.

        From the first weight update to the end of the step, Ctrl-C is held
        and raised once the step is complete (a second Ctrl-C stops at once);
        the previous SIGINT handler is back when this returns or raises.
        """
        self._interrupts.new_step()
        try:
            record = self._run_step()
        except BaseException:
            self._interrupts.release(deliver=False)
            raise
        self._interrupts.release()  # a Ctrl-C held during the update is raised now, with the step complete
        return record

    def _run_step(self) -> dict:
        """One step; under several processes this rank's share of the batch, with global advantages and metrics."""
        import torch

        started = time.perf_counter()
        self.step += 1
        torch.manual_seed(_stable_seed(self.config.seed, "step", self.step))
        share, m = self.batch_share, self.config.m
        positions = range(self.config.batch_prompts)[share]  # this rank's slots in the step's batch
        drawn = self.sampler.next(self.config.batch_prompts)
        batch = [self.prompts[drawn[i]] for i in positions]
        rollouts, gen_seconds = self._sample(batch, positions)
        local_rewards, reward_metrics = self._score(rollouts, batch)  # (P_rank*m, R) numpy; log_metric means
        rewards = self._gathered_rows(local_rewards)  # (P*m, R), the whole batch in prompt order
        all_advantages = self._advantages(rewards)  # (P*m,) torch
        advantages = all_advantages[share.start * m:share.stop * m]
        update = self._update(rollouts, advantages)
        record = self._record(rewards, all_advantages, rollouts, update, gen_seconds, time.perf_counter() - started)
        _add_reward_metrics(record, self._mean_over_processes(reward_metrics))
        samples = [(batch[i // m].messages[-1]["content"], rollouts.texts[i]) for i in range(0, len(rollouts), m)][:2]
        record["samples"] = [pair for part in self.processes.gather(samples) for pair in part][:2]
        self.history.append({k: v for k, v in record.items() if k != "samples"})
        return record

    def _gathered_rows(self, local):
        """The rows of every process, in rank order (= prompt order): ``(P*m, ...)`` numpy."""
        import numpy as np

        if self.processes.world_size == 1:
            return local
        return np.concatenate(self.processes.gather(local))

    def _mean_over_processes(self, metrics: dict) -> dict:
        """``log_metric`` means averaged over the processes that logged each name (equal shares of the batch)."""
        if self.processes.world_size == 1:
            return metrics
        parts = self.processes.gather(metrics)
        names = sorted({name for part in parts for name in part})
        return {name: sum(p[name] for p in parts if name in p) / sum(name in p for p in parts) for name in names}

    def _step_or_roll_back(self) -> dict:
        """``train_step``, undone if Ctrl-C lands before its first weight update (the weights are then
        untouched, so the run can be checkpointed at the previous step)."""
        step, drawn, n_history = self.step, self.sampler.drawn, len(self.history)
        try:
            return self.train_step()
        except KeyboardInterrupt:
            if not self._interrupts.updated:
                self.step, self.sampler.drawn = step, drawn
                del self.history[n_history:]
            raise

    def _save_on_interrupt(self) -> None:
        """Ctrl-C: checkpoint the last finished step, so ``resume_from='latest'`` continues the run exactly."""
        from multireward_grpo.train.checkpoint import latest_checkpoint, save_checkpoint

        if self._interrupts.forced:
            if self.processes.is_main:
                print(f"\nstopped in the middle of step {self.step}'s update; the newest checkpoint is "
                      f"{latest_checkpoint(self.out_dir)}", file=sys.stderr)
            return
        if self.step == 0:
            return
        # A checkpoint-N of the same step from an abandoned branch does not hold this run's step: compare
        # with what this trainer itself saved or loaded.
        saved = self.checkpointed_step == self.step and (self.out_dir / f"checkpoint-{self.step}" / "COMPLETE").exists()
        snapshot = None if saved else self._snapshot()  # under FSDP every process takes part in the gathering
        if not self.processes.is_main:
            return
        path = self.out_dir / f"checkpoint-{self.step}" if saved else save_checkpoint(self, snapshot)
        print(f"\ninterrupted after step {self.step}: {path} holds it; resume with resume_from='latest' "
              "(CLI: --resume-from latest)", file=sys.stderr)

    def save(self, path: str | Path) -> Path:
        """Save the adapter (or full model) and the tokenizer to ``path`` (only the main process writes).

        An adapter gets our model card as ``README.md`` (in place of peft's
        template) and the training record :func:`multireward_grpo.hub.push_adapter` reads.
        """
        from multireward_grpo.train.checkpoint import save_model

        path = Path(path)
        weights = self.processes.full_weights(self.model)  # under FSDP every process takes part in the gathering
        if not self.processes.is_main:
            return path
        path.mkdir(parents=True, exist_ok=True)
        save_model(self.model, path, weights)
        self.tokenizer.save_pretrained(path)
        if self.config.use_lora:
            from multireward_grpo.hub import write_trainer_card

            write_trainer_card(path, self)
        return path

    def evaluate(self, prompts: Sequence[Any] | None = None, m: int = 4, *, seed: int = 1234):
        """Mean reward per channel (and aggregate) with standard errors across prompts.

        Parameters
        ----------
        prompts : sequence, optional
            Defaults to the eval prompts given at construction.
        m : int
            Completions sampled per prompt (at ``config.temperature``).
        seed : int
            Row ``j`` of prompt ``i`` samples from a stream seeded by ``(seed, i, j)``: two models (or two
            checkpoints) are compared on the same draws, and the numbers do not depend on the number of processes,
            which evaluate contiguous shares of the prompts.

        Under several processes every process must call it (the rewards are gathered); each gets the result.
        """
        import numpy as np

        from multireward_grpo.train.evaluation import eval_rewards, summarize

        items = self.eval_prompts if prompts is None else prompt_items(prompts, self.config.system_prompt,
                                                                        allow_empty=True)
        if not items:
            raise ValueError("no eval prompts: pass prompts=... or eval_prompts= to the trainer")
        _check_prompts_for_reward(self.reward, items)
        cfg = self.config
        share = self.processes.items_share(len(items))
        rewards, names = None, None
        with self.processes.inference(self.model):  # entered by every process, with a share of prompts or not
            if share.stop > share.start:
                row_seeds = [_stable_seed(seed, "eval", i, j) for i in range(share.start, share.stop) for j in range(m)]
                rewards = eval_rewards(
                    self.model, self.tokenizer, self.reward, items[share], m=m, max_new_tokens=cfg.max_new_tokens,
                    temperature=cfg.temperature, top_p=cfg.top_p, batch_size=cfg.generation_batch_size,
                    nan_policy=cfg.nan_policy, share_prompt=cfg.share_prompt_cache, row_seeds=row_seeds,
                    reward_context={"trainer_state": self._trainer_state(self.step, self.sampler.drawn)})
                names = self.reward.channel_names
        parts = [part for part in self.processes.gather((rewards, names)) if part[0] is not None]
        return summarize(np.concatenate([r for r, _ in parts]), cfg.weights, parts[0][1], m)

    # ------------------------------------------------------------------ pieces of a step

    def _sample(self, batch, positions=None):
        """Completions of ``batch``, row ``j`` of slot ``p`` seeded from ``(seed, step, p, j)`` (rank-independent).

        ``positions`` are the slots of ``batch`` in the step's whole batch (default ``0 .. len(batch) - 1``).
        """
        from multireward_grpo.train.rollout import render_prompts, sample_completions

        cfg = self.config
        positions = range(len(batch)) if positions is None else positions
        self.model.eval()
        started = time.perf_counter()
        row_seeds = [_stable_seed(cfg.seed, "rollout", self.step, p, j) for p in positions for j in range(cfg.m)]
        with self.processes.inference(self.model):
            rollouts = sample_completions(
                self.model, self.tokenizer, render_prompts(self.tokenizer, batch), m=cfg.m,
                max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                batch_size=cfg.generation_batch_size, share_prompt=cfg.share_prompt_cache, row_seeds=row_seeds,
            )
        return rollouts, time.perf_counter() - started

    def _score(self, rollouts, batch):
        """The ``(N, R)`` rewards, and ``{name: mean}`` of what TRL-style functions sent to ``log_metric``."""
        from multireward_grpo.rewards.trl_style import RewardMetricLog

        originals = [batch[i // self.config.m].original for i in range(len(rollouts))]
        log = RewardMetricLog()
        context = {"completion_ids": rollouts.completion_id_lists(), "log_extra": log.log_extra,
                   "log_metric": log.log_metric,
                   "trainer_state": self._trainer_state(self.step - 1, self.sampler.drawn - self.config.batch_prompts)}
        rewards = self.reward.score_batch(rollouts.texts, originals, nan_policy=self.config.nan_policy, context=context)
        return rewards, log.means()

    def _trainer_state(self, steps_done: int, prompts_drawn: int):
        """What TRL-style reward functions get as ``trainer_state``: like TRL, ``global_step`` and ``max_steps``
        count optimizer updates (``num_iterations`` per step); ``epoch`` is the fraction of passes over the prompts."""
        from transformers import TrainerState

        cfg = self.config
        return TrainerState(global_step=steps_done * cfg.num_iterations, max_steps=cfg.n_steps * cfg.num_iterations,
                            epoch=prompts_drawn / len(self.prompts), train_batch_size=cfg.batch_prompts * cfg.m)

    def _advantages(self, rewards):
        import torch

        from multireward_grpo.advantage import compute_advantage_batch

        grouped = rewards.reshape(self.config.batch_prompts, self.config.m, -1)  # (P, m, R)
        adv = compute_advantage_batch(grouped, self.config.weights, self.config.mode, conditioning=self.rules,
                                      scale_by_std=self.config.scale_by_std, nan_policy=self.config.nan_policy)
        adv = torch.as_tensor(adv.reshape(-1), dtype=torch.float32, device=self.device)
        return torch.nan_to_num(adv, nan=0.0)  # nan_policy='propagate': a NaN group gets no update

    def _reference_logprobs(self, rollouts):
        import torch

        from multireward_grpo.train.rollout import token_logprobs

        if self.config.kl_coef == 0:
            return None
        model = self.model if self.config.use_lora else self.reference
        adapter_off = self.model.disable_adapter() if self.config.use_lora else contextlib.nullcontext()
        with torch.no_grad(), self.processes.inference(model), adapter_off:
            return token_logprobs(model, rollouts, **self._logprob_kw())

    def _old_logprobs(self, rollouts):
        """The sampling policy's log-probs, for ``num_iterations > 1`` (None: the first pass's own, detached)."""
        import torch

        from multireward_grpo.train.rollout import token_logprobs

        if self.config.num_iterations == 1:
            return None
        with torch.no_grad(), self.processes.inference(self.model):
            return token_logprobs(self.model, rollouts, **self._logprob_kw())

    def _logprob_kw(self) -> dict:
        return {"micro_batch_size": self.config.micro_batch_size, "temperature": self.config.temperature,
                "share_prompt": self.config.share_prompt_cache}

    def _update(self, rollouts, advantages) -> dict:
        """``num_iterations`` updates on one batch: ``{"iterations": [stats of each], "train_seconds": ...}``."""
        from multireward_grpo.train.losses import LossDenominators

        self.model.eval()
        ref = self._reference_logprobs(rollouts)
        old = self._old_logprobs(rollouts)
        local = LossDenominators.of_batch(
            rollouts.completion_mask, rollouts.truncated, max_new_tokens=self.config.max_new_tokens,
            micro_batch_size=self.config.micro_batch_size,
            mask_truncated_completions=self.config.mask_truncated_completions)
        denominators = self._global_denominators(local)
        train_started = time.perf_counter()
        iterations = [self._one_update(rollouts, advantages, old, ref, denominators, iteration)
                      for iteration in range(self.config.num_iterations)]
        return {"iterations": iterations, "train_seconds": time.perf_counter() - train_started}

    def _global_denominators(self, local):
        """The whole batch's loss denominators: completions, loss tokens and micro-batches summed over processes,
        so every process's loss is its share of the single-process loss."""
        if self.processes.world_size == 1:
            return local
        from dataclasses import replace

        n_sequences, n_tokens, n_micro_batches = self.processes.sum_floats(
            [local.n_sequences, local.n_tokens, local.n_micro_batches])
        return replace(local, n_sequences=int(n_sequences), n_tokens=int(n_tokens),
                       n_micro_batches=int(n_micro_batches))

    def _one_update(self, rollouts, advantages, old, ref, denominators, iteration: int = 0) -> dict:
        """Accumulate the batch's gradient and take one optimizer step (skipped on a non-finite gradient norm)."""
        import torch

        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        totals = self._accumulate_gradients(rollouts, advantages, old, ref, denominators)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.processes.sum_gradients(params)  # once per update, after every micro-batch
        totals = dict(zip(totals, self.processes.sum_floats(list(totals.values()))))
        norm = torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm or float("inf"))
        if hasattr(norm, "full_tensor"):  # FSDP: the norm over all shards, a replicated DTensor
            norm = norm.full_tensor()
        self._interrupts.hold()  # from the first weight update on, the step must finish
        totals["grad_norm"] = float(norm)
        totals["skipped"] = not math.isfinite(totals["grad_norm"])
        if totals["skipped"]:
            self._skip_update(totals["grad_norm"], iteration)
        else:
            self.optimizer.step()
        with warnings.catch_warnings():
            # The schedule advances on a skipped update too, so the learning rate stays a function of the update
            # count; torch's warning about a scheduler step before any optimizer step would only blur ours.
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            self.scheduler.step()
        return totals

    def _accumulate_gradients(self, rollouts, advantages, old, ref, denominators) -> dict:
        """Backward of the loss over micro-batches; returns the loss sums of this pass."""
        from multireward_grpo.train import losses
        from multireward_grpo.train.rollout import micro_logprobs

        sums = ("pg", "kl", "clipped_tokens", "clipped_low_tokens", "clipped_high_tokens", "tokens")
        totals = {"loss": 0.0, **dict.fromkeys(sums, 0.0)}
        size = self.config.micro_batch_size
        for start in range(0, len(rollouts), size):
            part = slice(start, start + size)
            logp = micro_logprobs(self.model, rollouts.rows(part), self.config.temperature,
                                  share_prompt=self.config.share_prompt_cache)
            old_part = logp.detach() if old is None else old[part]
            loss, stats = losses.policy_loss(
                logp, old_part, advantages[part], rollouts.completion_mask[part], denominators=denominators,
                ref_logp=None if ref is None else ref[part], truncated=rollouts.truncated[part],
                **losses.objective_options(self.config),
            )
            self.processes.before_backward(self.model, last=start + size >= len(rollouts))
            loss.backward()
            totals["loss"] += float(loss.detach())
            for key in sums:
                totals[key] += stats[key]
        return totals

    def _skip_update(self, grad_norm: float, iteration: int) -> None:
        """A NaN/inf gradient would write NaN weights: drop it, keep the weights, and say so."""
        self.optimizer.zero_grad(set_to_none=True)
        if not self.processes.is_main:
            return  # every process skips the same update (the norm is global): one warning is enough
        warnings.warn(
            f"step {self.step}: non-finite gradient norm ({grad_norm}) in update {iteration + 1} of "
            f"{self.config.num_iterations}; skipped that optimizer update and zeroed the gradients (the weights "
            "are unchanged; the history counts it in skipped_updates). Check the reward function for inf values, "
            "lower lr, or use dtype bfloat16/float32 if float16 overflows",
            RuntimeWarning, stacklevel=2,
        )

    def _record(self, rewards, advantages, rollouts, update, gen_seconds, step_seconds) -> dict:
        """The step's log record over the whole batch (times: the slowest process's)."""
        from multireward_grpo.train.logging import step_record

        if self.processes.world_size == 1:
            return step_record(self, rewards, advantages, rollouts, update, gen_seconds, step_seconds)
        lengths = self._gathered_rows(rollouts.completion_mask.sum(dim=1).cpu().numpy())
        truncated = self._gathered_rows(rollouts.truncated.cpu().numpy())
        gen_seconds, train_seconds, step_seconds = self.processes.max_floats(
            [gen_seconds, update["train_seconds"], step_seconds])
        return step_record(self, rewards, advantages, rollouts, {**update, "train_seconds": train_seconds},
                           gen_seconds, step_seconds, lengths=lengths, truncated=truncated)

    def _snapshot(self):
        """The weights and optimizer state a checkpoint writes; under FSDP gathered by every process (collective)."""
        from multireward_grpo.train.checkpoint import Snapshot

        return Snapshot(self.processes.full_weights(self.model), self.processes.full_optimizer_state(self.optimizer))

    def _maybe_checkpoint(self, final: bool) -> None:
        from multireward_grpo.train.checkpoint import save_checkpoint

        every = self.config.checkpoint_every
        if final or (every and self.step % every == 0):
            snapshot = self._snapshot()
            if self.processes.is_main:
                save_checkpoint(self, snapshot)
            self.checkpointed_step = self.step
            self.processes.barrier()  # the checkpoint is complete before any rank goes on


def _reward_function(config: GRPOConfig, reward_fn, reward_funcs):
    """The checked reward function of ``reward_fn`` or ``reward_funcs`` (exactly one of them)."""
    from multireward_grpo.rewards import as_reward_function, from_trl_reward_funcs

    if reward_fn is not None and reward_funcs is not None:
        raise TypeError("got both reward_fn and reward_funcs: pass one, reward_fn=f (f(completion, prompt) -> R scores) "
                        "or reward_funcs=[f1, f2, ...] (TRL-style, one channel per function)")
    if reward_fn is None and reward_funcs is None:
        raise TypeError("GRPOTrainer needs a reward: reward_fn=f (f(completion, prompt) -> R scores) or "
                        "reward_funcs=[f1, f2, ...] (TRL-style f(prompts, completions, **kwargs), one channel each)")
    if reward_funcs is None:
        if isinstance(reward_fn, (list, tuple)) and reward_fn and all(callable(f) for f in reward_fn):
            raise TypeError(f"reward_fn is a list of {len(reward_fn)} functions: pass TRL-style reward functions as "
                            "reward_funcs=[...], or one function returning all channels as reward_fn")
        return as_reward_function(reward_fn, n_channels=len(config.weights))
    funcs = from_trl_reward_funcs(reward_funcs)
    if funcs.n_channels != len(config.weights):
        raise ValueError(f"reward_funcs has {funcs.n_channels} functions {funcs.channel_names} but config.weights has "
                         f"{len(config.weights)} entries {tuple(config.weights)}: give one weight per reward function, "
                         "in the same order")
    return funcs


def _check_prompts_for_reward(reward, *prompt_lists) -> None:
    """TRL-style reward functions need rows with a ``prompt`` key and even columns: check before any model loads."""
    from multireward_grpo.rewards import TRLRewardFunctions

    if isinstance(reward, TRLRewardFunctions):
        for name, items in zip(("prompts", "eval_prompts"), prompt_lists):
            reward.check_prompts([item.original for item in items], name)


def _add_reward_metrics(record: dict, metrics: dict) -> None:
    """Join what reward functions sent to ``log_metric`` to the step record, never over one of its own keys."""
    taken = sorted(set(metrics) & set(record))
    if taken:
        raise ValueError(f"a reward function logged the metric {taken[0]!r} with log_metric, but the trainer's history "
                         "has a key of that name; log it under another name")
    record.update(metrics)


def _dataset_rows(dataset, name: str) -> list:
    """The rows (dicts) of a ``datasets.Dataset``, found by its ``column_names``; a split is required."""
    from collections.abc import Mapping

    columns = dataset.column_names
    if isinstance(columns, Mapping):
        raise TypeError(f"{name} is a DatasetDict with the splits {sorted(columns)}: pass one split, "
                        f"e.g. dataset[{min(columns)!r}]")
    if not hasattr(dataset, "__len__"):
        raise TypeError(f"{name} is a streamed (iterable) dataset, but prompts are drawn at random: load it without "
                        "streaming=True, or pass a list of its rows, e.g. list(dataset.take(1000))")
    if not any(c in (columns or ()) for c in ("messages", "prompt", "text", "question")):
        raise ValueError(f"{name} is a dataset with the columns {list(columns or ())} but no 'prompt' column "
                         "('messages', 'text' or 'question' also work): rename the column that holds the prompts")
    return dataset.to_list() if callable(getattr(dataset, "to_list", None)) else list(dataset)


def prompt_items(prompts, system_prompt: str | None = None, *, name: str = "prompts", allow_empty: bool = False):
    """Read a list of prompts as :class:`~multireward_grpo.train.rollout.PromptItem` s.

    Parameters
    ----------
    prompts : iterable or datasets.Dataset
        Strings, chat-message lists, dicts (see ``normalize_prompt``) or
        PromptItems; or a ``datasets.Dataset`` (anything with
        ``column_names``), read as its rows. A bare string, bytes or dict is
        refused: iterating it would train on one prompt per character (or
        key).
    system_prompt : str, optional
    name : str
        What the argument is called in error messages.
    allow_empty : bool
        Accept an empty list (the default refuses it).

    Returns
    -------
    list of PromptItem
    """
    from collections.abc import Iterable, Mapping

    from multireward_grpo.train.rollout import PromptItem, normalize_prompt

    if hasattr(prompts, "column_names"):
        prompts = _dataset_rows(prompts, name)
    if isinstance(prompts, (str, bytes, Mapping)) or not isinstance(prompts, Iterable):
        kind = type(prompts).__name__
        hint = "; wrap it: [prompt]" if isinstance(prompts, (str, bytes, Mapping)) else ""
        raise TypeError(f"{name} must be a list of prompts, got {'an' if kind[0] in 'aeiou' else 'a'} {kind}{hint}")
    items = list(prompts)
    if not items and not allow_empty:
        raise ValueError(f"{name} is empty: pass at least one prompt")
    return [item if isinstance(item, PromptItem) else normalize_prompt(item, index, system_prompt)
            for index, item in enumerate(items)]


def train_grpo(config: GRPOConfig, reward_fn=None, prompts=None, **kwargs) -> list[dict]:
    """``GRPOTrainer(config, reward_fn, prompts, **kwargs).train()`` (``reward_funcs=[...]`` instead of ``reward_fn``
    works too)."""
    return GRPOTrainer(config, reward_fn, prompts, **kwargs).train()
