"""One GRPO trainer run of the GPU section of trainer_bench.py (ours or TRL), in its own process.

Usage: ``python _trainer_gpu_worker.py JOB.json RESULT.json``

The model is a random-weight Qwen2 built in this process from the job's
architecture dict (the same seed in every process, so ours and TRL start from
the same weights) directly on the job's device and dtype; nothing is read
from disk but the benchmark tokenizer. Both trainers get the same prompts,
reward function (``_trainer_worker.channels``), sampling, LoRA and loss
settings, and are measured from the outside the same way:

* **step time**: the interval between the first reward calls of consecutive
  steps (see ``_trainer_worker``);
* **generation**: ``GenerationMixin.generate`` is wrapped (CUDA synchronized
  before and after) to time every call and count its rows, prompt tokens
  (attention mask) and new tokens; a step's generation time is the time
  spent in generate between its two reward calls;
* **peak memory**: ``torch.cuda.max_memory_allocated`` over the whole run,
  and the allocation after the model was built.

With ``profile_dir`` set (ours only), the last step, which no timed interval
covers, is profiled (``LastStepProfile``): the top operators of its update
under ``torch.profiler`` go to ``profile_ops.txt`` and the wall time of each
phase of the step (generation, scoring, reference pass, loss forward/backward,
optimizer) to ``profile_phases.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import _trainer_worker as base


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


class GenerateTimer:
    """Wraps ``GenerationMixin.generate`` for this process: (start, end, rows, prompt tokens, new tokens) per call."""

    def __init__(self, device: str):
        from transformers.generation.utils import GenerationMixin

        self.device, self.calls = device, []
        original = GenerationMixin.generate

        def timed(model, *args, **kwargs):
            _sync(self.device)
            start = time.perf_counter()
            out = original(model, *args, **kwargs)
            _sync(self.device)
            ids = kwargs.get("input_ids", args[0] if args else None)
            mask = kwargs.get("attention_mask")
            sequences = getattr(out, "sequences", out)
            width = ids.shape[1] if ids is not None else 0
            prompt_tokens = int(mask.sum()) if mask is not None else int(sequences.shape[0] * width)
            self.calls.append((start, time.perf_counter(), int(sequences.shape[0]), prompt_tokens,
                               int(sequences.shape[0] * (sequences.shape[1] - width))))
            return out

        self._restore = lambda: setattr(GenerationMixin, "generate", original)
        GenerationMixin.generate = timed

    def restore(self) -> None:
        """Put the original ``generate`` back."""
        self._restore()


def split_by_step(calls: list[tuple], reward_starts: list[float]) -> list[dict]:
    """Totals of the generate ``calls`` made before each reward call (and after the previous one).

    ``calls`` are ``(start, end, rows, prompt_tokens, new_tokens)``; entry k
    of the result is step k's generation.
    """
    out, prev = [], float("-inf")
    for t in reward_starts:
        step = [c for c in calls if prev <= c[0] < t]
        out.append({"gen_s": sum(c[1] - c[0] for c in step), "rows": sum(c[2] for c in step),
                    "prompt_tokens": sum(c[3] for c in step), "new_tokens": sum(c[4] for c in step),
                    "calls": len(step)})
        prev = t
    return out


def build_model(job: dict, tokenizer):
    """The random Qwen2 of ``job["arch"]`` on the job's device and dtype (seeded: the same in every process)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    arch = dict(job["arch"])
    vocab = arch.pop("vocab_size", None) or len(tokenizer)
    config = Qwen2Config(vocab_size=vocab, tie_word_embeddings=True, initializer_range=0.02,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
                         **arch)
    dtype = getattr(torch, job["dtype"])
    torch.manual_seed(job["seed"])
    with torch.device(job["device"]):
        model = Qwen2ForCausalLM._from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def model_shape(model) -> dict:
    """What the FLOPs count needs: layers, hidden size, vocabulary, non-embedding parameters."""
    cfg = model.config
    embedding = model.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    lm_head = 0 if cfg.tie_word_embeddings else model.get_output_embeddings().weight.numel()
    return {"n_layers": cfg.num_hidden_layers, "hidden_size": cfg.hidden_size, "vocab_size": cfg.vocab_size,
            "parameters": total, "non_embedding_parameters": total - embedding - lm_head}


def build_ours(job: dict, rec, model, tokenizer):
    from multireward_grpo import GRPOConfig, GRPOTrainer

    options = base._common(job) | {"device": job["device"], "dtype": job["dtype"],
                                   "micro_batch_size": job["micro_batch"], "checkpoint_every": 0,
                                   "sample_every": 0, "model": job["workload"]}
    cfg = GRPOConfig(**(options | job.get("ours_options", {})))
    return GRPOTrainer(cfg, rec.per_completion, job["prompts"], model=model, tokenizer=tokenizer)


def build_trl(job: dict, rec, model, tokenizer):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    n = job["P"] * job["m"]
    micro = min(job["micro_batch"], n)
    if n % micro:
        raise ValueError(f"micro_batch={micro} must divide P x m = {n}")
    on_gpu = job["device"].startswith("cuda")
    args = GRPOConfig(
        output_dir=job["out_dir"], max_steps=job["n_steps"], per_device_train_batch_size=micro,
        gradient_accumulation_steps=n // micro, num_generations=job["m"], max_completion_length=job["max_new_tokens"],
        temperature=job["temperature"], top_p=1.0, top_k=0, beta=job["kl_coef"], epsilon=job["ppo_clip"],
        learning_rate=job["lr"], lr_scheduler_type="constant", loss_type="grpo", scale_rewards="group",
        reward_weights=list(job["weights"]), gradient_checkpointing=False, bf16=on_gpu and job["dtype"] == "bfloat16",
        fp16=False, use_cpu=not on_gpu, use_vllm=False, report_to="none", save_strategy="no", logging_steps=1,
        disable_tqdm=True, seed=job["seed"], dataloader_num_workers=0,
    )
    peft_config = LoraConfig(r=job["lora_r"], lora_alpha=job["lora_alpha"], lora_dropout=job["lora_dropout"],
                             target_modules=list(job["lora_targets"]), task_type="CAUSAL_LM")
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in job["prompts"]])
    trainer = GRPOTrainer(model=model, reward_funcs=[rec.trl_channel0, rec.trl_channel1], args=args,
                          train_dataset=data, processing_class=tokenizer, peft_config=peft_config)
    trainer._bench_batches = {"per_device_train_batch_size": args.per_device_train_batch_size,
                              "gradient_accumulation_steps": args.gradient_accumulation_steps,
                              "generation_batch_size": args.generation_batch_size}
    return trainer


def _versions(impl: str) -> dict:
    from importlib import metadata

    names = ["torch", "transformers", "peft", "accelerate"] + (["trl", "datasets"] if impl == "trl"
                                                               else ["multireward-grpo"])
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


class LastStepProfile:
    """Times the phases of ours' last step and runs its update under ``torch.profiler``.

    The last step's update comes after the last timed interval (which ends
    at that step's first reward call), so profiling it costs the timed steps
    nothing. Phases: generation, scoring, reference pass, loss forward and
    backward, optimizer (wall seconds, CUDA synchronized at each boundary).
    """

    PHASES = (("generation", "_sample"), ("scoring", "_score"), ("reference_pass", "_reference_logprobs"),
              ("loss_forward_backward", "_accumulate_gradients"))

    def __init__(self, trainer, job: dict):
        self.trainer, self.job, self.phases, self.table = trainer, job, {}, None
        for name, attr in self.PHASES:
            setattr(trainer, attr, self._timed(name, getattr(trainer, attr)))
        trainer.optimizer.step = self._timed("optimizer", trainer.optimizer.step)
        trainer._update = self._profiled(trainer._update)

    def _last(self) -> bool:
        return self.trainer.step == self.job["n_steps"]

    def _timed(self, name, fn):
        def wrapper(*args, **kwargs):
            if not self._last():
                return fn(*args, **kwargs)
            _sync(self.job["device"])
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            _sync(self.job["device"])
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start
            return out
        return wrapper

    def _profiled(self, fn):
        def wrapper(*args, **kwargs):
            if not self._last():
                return fn(*args, **kwargs)
            from torch.profiler import ProfilerActivity, profile

            on_gpu = self.job["device"].startswith("cuda")
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
            with profile(activities=activities) as prof:
                out = fn(*args, **kwargs)
                _sync(self.job["device"])
            sort = "self_cuda_time_total" if on_gpu else "self_cpu_time_total"
            self.table = (f"torch.profiler: the update of step {self.trainer.step} (reference pass, loss forward "
                          f"and backward, optimizer), sorted by {sort}\n"
                          + prof.key_averages().table(sort_by=sort, row_limit=40))
            return out
        return wrapper

    def write(self) -> dict:
        """``profile_ops.txt`` and ``profile_phases.json`` in ``job["profile_dir"]``; returns the phases."""
        folder = Path(self.job["profile_dir"])
        folder.mkdir(parents=True, exist_ok=True)
        if self.table:
            (folder / "profile_ops.txt").write_text(self.table)
        result = {"step": self.job["n_steps"], "phases_s": self.phases}
        (folder / "profile_phases.json").write_text(json.dumps(result, indent=2))
        return result


def run(job: dict) -> dict:
    """Build the model and the trainer of ``job``, train (or profile), and return what was measured."""
    import torch

    torch.manual_seed(job["seed"])
    out = {"impl": job["impl"], "versions": _versions(job["impl"])}
    tokenizer = base._load_tokenizer(job["tokenizer"])
    rec = base.RewardRecorder(tokenizer)
    timer = GenerateTimer(job["device"])
    try:
        return _run(job, out, tokenizer, rec, timer)
    finally:
        timer.restore()


def _run(job: dict, out: dict, tokenizer, rec, timer) -> dict:
    import statistics

    import torch

    device = job["device"]
    t0 = time.perf_counter()
    model = build_model(job, tokenizer)
    out["model"] = model_shape(model)
    out["model_build_s"] = time.perf_counter() - t0
    if device.startswith("cuda"):
        out["memory_after_model_mb"] = torch.cuda.memory_allocated() / 2**20
    build = {"ours": build_ours, "trl": build_trl}[job["impl"]]
    trainer = build(job, rec, model, tokenizer)
    profiler = LastStepProfile(trainer, job) if job.get("profile_dir") and job["impl"] == "ours" else None
    t0 = time.perf_counter()
    trainer.train()
    out["train_s"] = time.perf_counter() - t0
    if profiler is not None:
        out["profile"] = profiler.write()
    out |= rec.summary(job["n_steps"])
    if "error" in out:
        return out
    per = len(rec.times) // job["n_steps"]
    steps = split_by_step(timer.calls, rec.times[::per])
    out["reward_calls_per_step"] = per
    out["generation_per_step"] = steps  # step k's generation ran before its first reward call
    # Interval k (reward call k -> k+1) = update of step k + generation of step k + 1.
    out["gen_s_per_interval"] = [s["gen_s"] for s in steps[1:]]
    out["update_s_per_interval"] = [iv - g for iv, g in zip(out["step_intervals_s"], out["gen_s_per_interval"])]
    out["step_median_s"] = statistics.median(out["step_intervals_s"])
    if device.startswith("cuda"):
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["device_name"] = torch.cuda.get_device_name()
    if job["impl"] == "trl":
        out["batches"] = trainer._bench_batches
    return out


if __name__ == "__main__":
    for key, value in {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1",
                       "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(key, value)
    sys.exit(base.main(sys.argv[1], sys.argv[2], run=run))
