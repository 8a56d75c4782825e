"""One GRPO trainer run, in whatever interpreter starts this file.

Usage: ``python _trainer_worker.py JOB.json RESULT.json``

JOB.json names the implementation (``impl``: ``ours``, ``trl`` or ``peer``),
the model folder and the settings (see ``trainer_bench.job``). The same file
runs under three interpreters:

* ``ours`` — this checkout's ``multireward_grpo.GRPOConfig/GRPOTrainer``, in
  the interpreter that runs ``trainer_bench.py``;
* ``trl`` — TRL's ``GRPOTrainer`` in ``benchmarks/.trl-venv``;
* ``peer`` — the published ``multireward-grpo==0.1.1`` in
  ``benchmarks/.bench-venv``, driven as a black box through its public
  ``GRPOConfig(...)`` and ``GRPOTrainer(config, reward_fn, prompts).train()``
  only. Errors are reported as ``Type: message``, never with a traceback, so
  none of the release's source is ever printed; warnings are silenced.

Every implementation gets the same reward function (two cheap text
heuristics, see ``channels``), and the worker measures all of them the same
way from the outside:

* **step time** — each reward-function call is time-stamped; the calls are cut
  into ``n_steps`` equal groups (one group per step, whatever the call
  pattern: once per completion or once per batch), and the interval between
  the first calls of consecutive groups is one full training step (the
  update of step k plus the generation of step k+1). The benchmark reports
  the median of these ``n_steps - 1`` intervals: the first step, with its
  warm-up, only ever contributes its update half to the first interval.
* **CPU time per step** — the same intervals measured with
  ``time.process_time()`` (user + system time of all the process's threads):
  less sensitive than wall time to other processes competing for the cores.
* **peak RSS** — ``getrusage(RUSAGE_SELF).ru_maxrss`` of this process at the
  end (plus ``RUSAGE_CHILDREN``, which stays 0 unless a trainer forks), with
  the RSS after the imports (before any model is loaded) and the peak right
  after the trainer was built, for context.
* **completion length** — every completion the reward function sees is
  re-tokenized with the benchmark tokenizer (special-token text removed);
  the trainers' own counts are added where they log one (ours:
  ``completion_len_mean``; TRL: ``completions/mean_length``).
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

SPECIAL_TEXT = ("<|im_end|>", "<|endoftext|>", "<|im_start|>")


def rss_mb() -> float:
    """Current resident set size of this process, MB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb(who=resource.RUSAGE_SELF) -> float:
    """ru_maxrss in MB (Linux reports kB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def channels(text: str) -> tuple[float, float]:
    """The two reward channels: share of ASCII letters, and word count capped at 16 (scaled to [0, 1])."""
    letters = sum(c.isascii() and c.isalpha() for c in text)
    return letters / max(len(text), 1), min(len(text.split()), 16) / 16


class RewardRecorder:
    """Scores completions, time-stamps each call and re-tokenizes each completion to count its tokens."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.lengths: list[int] = []
        self.special_seen = 0

    def _text(self, completion) -> str:
        if isinstance(completion, list):  # TRL, conversational: [{"role": "assistant", "content": ...}]
            completion = completion[-1]["content"] if completion else ""
        return str(completion)

    def record(self, completions) -> list[str]:
        self.times.append(time.perf_counter())
        self.cpu_times.append(time.process_time())
        texts = [self._text(c) for c in completions]
        for text in texts:
            clean = text
            for s in SPECIAL_TEXT:
                if s in clean:
                    self.special_seen += 1
                    clean = clean.replace(s, "")
            self.lengths.append(len(self.tokenizer(clean, add_special_tokens=False)["input_ids"]))
        return texts

    # ours and 0.1.1: reward_fn(completion, prompt) -> R scores, one call per completion
    def per_completion(self, completion, prompt=None):
        (text,) = self.record([completion])
        return list(channels(text))

    # TRL: one function per channel, called once per generation batch; only channel 0 records.
    def trl_channel0(self, completions, **kwargs):
        return [channels(t)[0] for t in self.record(completions)]

    @staticmethod
    def trl_channel1(completions, **kwargs):
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        return [channels(t)[1] for t in texts]

    def summary(self, n_steps: int) -> dict:
        calls = len(self.times)
        out = {"reward_calls": calls, "completions_scored": len(self.lengths),
               "special_token_text_seen": self.special_seen}
        if n_steps < 1 or calls % n_steps:
            return out | {"error": f"{calls} reward calls do not split into {n_steps} steps"}
        per = calls // n_steps
        starts = self.times[::per]
        out["step_intervals_s"] = [b - a for a, b in itertools.pairwise(starts)]
        cpu = self.cpu_times[::per]
        out["step_cpu_intervals_s"] = [b - a for a, b in itertools.pairwise(cpu)]
        n = len(self.lengths) // n_steps
        out["retokenized_len_per_step"] = [statistics.fmean(self.lengths[i * n:(i + 1) * n]) for i in range(n_steps)]
        return out


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


# --------------------------------------------------------------------------- the three trainers


def _lora(job: dict) -> dict:
    return {"use_lora": True, "lora_r": job["lora_r"], "lora_alpha": job["lora_alpha"],
            "lora_dropout": job["lora_dropout"], "lora_target_modules": tuple(job["lora_targets"])}


def _common(job: dict) -> dict:
    return dict(model=job["model"], mode=job["mode"], weights=tuple(job["weights"]), n_steps=job["n_steps"],
                batch_prompts=job["P"], m=job["m"], max_new_tokens=job["max_new_tokens"],
                temperature=job["temperature"], lr=job["lr"], kl_coef=job["kl_coef"], ppo_clip=job["ppo_clip"],
                seed=job["seed"], device="cpu", dtype="float32", out_dir=job["out_dir"], verbose=False, **_lora(job))


def build_ours(job: dict, rec: RewardRecorder):
    from multireward_grpo import GRPOConfig, GRPOTrainer

    cfg = GRPOConfig(**(_common(job) | {"checkpoint_every": 0, "sample_every": 0} | job.get("ours_options", {})))
    return GRPOTrainer(cfg, rec.per_completion, job["prompts"])


def build_peer(job: dict, rec: RewardRecorder):
    from multireward_grpo import GRPOConfig, GRPOTrainer

    # 0.1.1 has no "no checkpoints" value: a period past the last step leaves only its end-of-run save.
    cfg = GRPOConfig(**_common(job), checkpoint_every=job["n_steps"] + 1000)
    return GRPOTrainer(cfg, rec.per_completion, job["prompts"])


def build_trl(job: dict, rec: RewardRecorder):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times, self._t0 = [], None

        def on_step_begin(self, args, state, control, **kw):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._t0)

    # One optimizer step = P x m completions, generated in one batch (generation_batch_size = per-device batch x
    # steps_per_generation, which defaults to the accumulation steps); the loss runs in micro-batches of
    # ``trl_micro_batch`` sequences whose gradients accumulate, like ours' micro_batch_size.
    n = job["P"] * job["m"]
    micro = min(job.get("trl_micro_batch") or n, n)
    if n % micro:
        raise ValueError(f"trl_micro_batch={micro} must divide P x m = {n}")
    args = GRPOConfig(
        output_dir=job["out_dir"], max_steps=job["n_steps"], per_device_train_batch_size=micro,
        gradient_accumulation_steps=n // micro, num_generations=job["m"], max_completion_length=job["max_new_tokens"],
        temperature=job["temperature"], top_p=1.0, top_k=0, beta=job["kl_coef"], epsilon=job["ppo_clip"],
        learning_rate=job["lr"], lr_scheduler_type="constant", loss_type="grpo", scale_rewards="group",
        reward_weights=list(job["weights"]), gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=True,
        use_vllm=False, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, seed=job["seed"],
        model_init_kwargs={"dtype": torch.float32}, dataloader_num_workers=0,
    )
    peft_config = LoraConfig(r=job["lora_r"], lora_alpha=job["lora_alpha"], lora_dropout=job["lora_dropout"],
                             target_modules=list(job["lora_targets"]), task_type="CAUSAL_LM")
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in job["prompts"]])
    steps = StepTimes()
    trainer = GRPOTrainer(model=job["model"], reward_funcs=[rec.trl_channel0, rec.trl_channel1], args=args,
                          train_dataset=data, processing_class=AutoTokenizer.from_pretrained(job["model"]),
                          peft_config=peft_config, callbacks=[steps])
    trainer._bench_steps = steps
    trainer._bench_batches = {"per_device_train_batch_size": args.per_device_train_batch_size,
                              "gradient_accumulation_steps": args.gradient_accumulation_steps,
                              "generation_batch_size": args.generation_batch_size,
                              "steps_per_generation": args.steps_per_generation}
    return trainer


# --------------------------------------------------------------------------- running


def _native(impl: str, trainer, history) -> dict:
    """What each trainer reports about itself (lengths, internal step times)."""
    if impl == "ours":
        return {"completion_len_per_step": [h["completion_len_mean"] for h in history],
                "truncated_frac_per_step": [h["truncated_frac"] for h in history],
                "step_seconds": [h["step_seconds"] for h in history],
                "gen_seconds": [h["gen_seconds"] for h in history],
                "non_gen_seconds": [h["step_seconds"] - h["gen_seconds"] for h in history]}
    if impl == "trl":
        logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
        return {"completion_len_per_step": [h["completions/mean_length"] for h in logs],
                "step_seconds": trainer._bench_steps.times, "batches": trainer._bench_batches}
    return {"history_keys": sorted(history[0]) if history else []}


def run(job: dict) -> dict:
    import torch

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])
    out = {"impl": job["impl"], "torch": torch.__version__, "threads": torch.get_num_threads(),
           "rss_after_imports_mb": None}
    import transformers

    out["transformers"] = transformers.__version__
    if job["impl"] == "trl":
        import trl

        out["trl"] = trl.__version__
    else:
        from importlib import metadata

        out["multireward_grpo"] = metadata.version("multireward-grpo")
        if job["impl"] == "ours":  # which copy ran: the checkout on PYTHONPATH, or an installed one
            import multireward_grpo

            out["multireward_grpo_path"] = str(Path(multireward_grpo.__file__).parent)
    out["rss_after_imports_mb"] = rss_mb()
    rec = RewardRecorder(_load_tokenizer(job["model"]))
    build = {"ours": build_ours, "trl": build_trl, "peer": build_peer}[job["impl"]]
    t0 = time.perf_counter()
    trainer = build(job, rec)
    out["setup_s"] = time.perf_counter() - t0
    out["peak_rss_after_setup_mb"] = peak_rss_mb()
    t0 = time.perf_counter()
    if job.get("profile") and job["impl"] == "ours":  # never profile 0.1.1 (it would print its internals)
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        history = prof.runcall(trainer.train)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(35)
        out["profile"] = buf.getvalue()
    else:
        history = trainer.train()
    out["train_s"] = time.perf_counter() - t0
    out["peak_rss_mb"] = peak_rss_mb()
    out["peak_rss_children_mb"] = peak_rss_mb(resource.RUSAGE_CHILDREN)
    out |= rec.summary(job["n_steps"])
    out["native"] = _native(job["impl"], trainer, history)
    if out.get("step_intervals_s"):
        out["step_median_s"] = statistics.median(out["step_intervals_s"])
        out["step_cpu_median_s"] = statistics.median(out["step_cpu_intervals_s"])
    return out


def main(job_path: str, result_path: str, run=run) -> int:
    """Run the job in ``job_path`` with ``run`` and write its result (or a one-line error) to ``result_path``."""
    warnings.simplefilter("ignore")
    with open(job_path) as fh:
        job = json.load(fh)
    try:
        result = run(job)
    except Exception as exc:  # noqa: BLE001 - report, never print a traceback (keeps 0.1.1's source out)
        result = {"impl": job.get("impl"), "error": f"{type(exc).__name__}: {exc}"[:2000]}
    with open(result_path, "w") as fh:
        json.dump(result, fh)
    return 0 if "error" not in result else 3


if __name__ == "__main__":
    for key, value in {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1",
                       "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}.items():
        os.environ.setdefault(key, value)
    try:
        sys.exit(main(sys.argv[1], sys.argv[2]))
    except Exception as exc:  # noqa: BLE001
        print(f"trainer worker failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(3)
