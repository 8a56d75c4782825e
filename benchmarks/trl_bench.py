#!/usr/bin/env python
"""What MultiRewardGRPOTrainer adds to a TRL step: our estimator plus the channel diagnostics.

Two measurements, both on CPU with the tests' tiny random Llama (no downloads):

1. **The added code path** (``MultiRewardGRPOTrainer._use_our_advantages``
   plus the copy ``_calculate_rewards`` keeps): the advantages of the
   gathered batch, the diagnostics into TRL's metrics and the completions
   table. Timed directly on a 2,048-rollout batch (256 groups of 8, 3 reward
   functions), and at the step size of measurement 2. TRL computes its own
   advantages inline inside ``_generate_and_score_completions`` (there is no
   function to call), so its computation is not timed here.
2. **Whole steps**: plain ``trl.GRPOTrainer`` and ``MultiRewardGRPOTrainer``
   on the same config, seed and reward functions, in interleaved rounds; the
   best and median step time of each (first step of a run left out) and
   their ratios. A step's noise on a shared machine far exceeds 1%, so the
   overhead target is judged on measurement 1 against the best plain step
   (the smallest step: the largest share the added path can take).

Targets (printed MET / MISSED, never the exit status): the added path under
2 ms at 2,048 rollouts, and under 1% of a plain TRL step on the tiny model.
Run ``python benchmarks/trl_bench.py --help`` for the flags.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the tests' tiny tokenizer and model builders

TARGET_BATCH_MS = 2.0
TARGET_STEP_OVERHEAD = 0.01
N_CHANNELS = 3


def e_count(completions, **kwargs):
    return [float(_text(c).count("e")) for c in completions]


def has_space(completions, **kwargs):
    return [float(" " in _text(c)) for c in completions]


def length_band(completions, **kwargs):
    return [float(len(_text(c)) // 4) for c in completions]


def _text(completion) -> str:
    return completion if isinstance(completion, str) else completion[0]["content"]


FUNCS = [e_count, has_space, length_band]


def _config(out_dir: str, *, group: int, batch: int, steps: int, seed: int = 0):
    import trl

    return trl.GRPOConfig(output_dir=out_dir, use_cpu=True, num_generations=group, per_device_train_batch_size=batch,
                          max_completion_length=8, max_steps=steps, beta=0.0, learning_rate=1e-3, report_to=[],
                          logging_steps=1, save_strategy="no", seed=seed, disable_tqdm=True,
                          reward_weights=[1.0, 0.5, 2.0])


def _dataset(n_prompts: int):
    import datasets

    return datasets.Dataset.from_dict(
        {"prompt": [[{"role": "user", "content": f"say something {i}"}] for i in range(n_prompts)]})


def _trainer(cls, tokenizer, config, n_prompts: int, **ours):
    from tiny_lm import make_model
    from transformers.trainer_callback import PrinterCallback

    trainer = cls(model=make_model(tokenizer), reward_funcs=list(FUNCS), args=config,
                  train_dataset=_dataset(n_prompts), processing_class=tokenizer, **ours)
    trainer.remove_callback(PrinterCallback)  # TRL's per-step log lines would bury the report
    return trainer


# --------------------------------------------------------------------------- 1. the added code path


def _rewards(n_rows: int, seed: int = 0):
    """TRL-like gathered rewards: (N, 3) float32, integer levels plus noise (ties and constant groups occur)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    levels = rng.integers(0, 3, (n_rows, N_CHANNELS)) + rng.normal(0, 0.1, (n_rows, N_CHANNELS)) * (rng.random((n_rows, 1)) < 0.7)
    return torch.tensor(levels, dtype=torch.float32)


def _added_path(trainer, rewards):
    """One call of what the subclass adds per generation (the copy in _calculate_rewards included)."""
    import torch

    def call():
        kept = rewards.detach().clone()
        trainer._use_our_advantages({"advantages": torch.zeros(rewards.shape[0])}, kept, "train")

    return call


def _best_and_median(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def time_added_path(tokenizer, n_rows: int, group: int, repeats: int, estimator: str) -> dict:
    """Best and median seconds of the added path and of its two parts on ``n_rows`` gathered rewards."""
    import numpy as np

    from multireward_grpo.analysis.diagnostics import channel_diagnostics
    from multireward_grpo.integrations.trl import MultiRewardGRPOTrainer

    with tempfile.TemporaryDirectory() as out:
        config = _config(out, group=group, batch=n_rows, steps=1)
        trainer = _trainer(MultiRewardGRPOTrainer, tokenizer, config, n_rows // group, estimator=estimator,
                           conditioning=[(1, 2)])
        rewards = _rewards(n_rows)
        grouped = rewards.double().numpy().reshape(-1, group, N_CHANNELS)
        advantages = trainer.multireward_advantages(grouped)
        weights = np.array([1.0, 0.5, 2.0])
        parts = {
            "added path": _added_path(trainer, rewards),
            "estimator": lambda: trainer.multireward_advantages(grouped),
            "diagnostics": lambda: channel_diagnostics(grouped, advantages, weights, conditioning=[(1, 2)]),
        }
        return {name: dict(zip(("best_s", "median_s"), _best_and_median(fn, repeats))) for name, fn in parts.items()}


# --------------------------------------------------------------------------- 2. whole steps


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds, self._started = [], None

        def on_step_begin(self, args, state, control, **kwargs):
            self._started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self._started)

    return StepTimer()


def time_steps(tokenizer, *, rounds: int, steps: int, group: int, batch: int, estimator: str) -> dict:
    """Per-step seconds (first step of each run dropped) of plain TRL and ours, interleaved by round."""
    import trl

    from multireward_grpo.integrations.trl import MultiRewardGRPOTrainer

    seconds = {"trl": [], "ours": []}
    for round_index in range(rounds):
        order = ("trl", "ours") if round_index % 2 == 0 else ("ours", "trl")
        for impl in order:
            with tempfile.TemporaryDirectory() as out:
                config = _config(out, group=group, batch=batch, steps=steps, seed=round_index)
                ours = {"estimator": estimator, "conditioning": [(1, 2)]} if impl == "ours" else {}
                cls = MultiRewardGRPOTrainer if impl == "ours" else trl.GRPOTrainer
                trainer = _trainer(cls, tokenizer, config, batch // group, **ours)
                timer = _step_timer()
                trainer.add_callback(timer)
                trainer.train()
                seconds[impl].extend(timer.seconds[1:])
    return seconds


# --------------------------------------------------------------------------- report


def _verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


def report(path_2048: dict, path_step: dict, steps: dict, batch: int) -> dict:
    best = {impl: min(seconds) for impl, seconds in steps.items()}
    median = {impl: statistics.median(seconds) for impl, seconds in steps.items()}
    print(f"{'what':<44}{'best ms':>10}{'median ms':>11}")
    for label, timing in (("2,048 rollouts", path_2048), (f"{batch} rollouts (the step's batch)", path_step)):
        for part, t in timing.items():
            print(f"{label + ': ' + part:<44}{t['best_s'] * 1e3:>10.3f}{t['median_s'] * 1e3:>11.3f}")
    for impl, label in (("trl", "step, plain trl.GRPOTrainer"), ("ours", "step, MultiRewardGRPOTrainer")):
        print(f"{label + f' ({len(steps[impl])} steps)':<44}{best[impl] * 1e3:>10.1f}{median[impl] * 1e3:>11.1f}")
    print()
    spread = statistics.pstdev(steps["trl"]) / median["trl"]
    print(f"step ratio ours / trl: best {best['ours'] / best['trl']:.3f}, median {median['ours'] / median['trl']:.3f} "
          f"(a plain step's own spread is {spread:.0%} of its median: the ratio cannot resolve 1%)")
    overhead = path_step["added path"]["best_s"] / best["trl"]
    print(f"added path / best plain step: {overhead:.4%}")
    print()
    batch_ms = path_2048["added path"]["best_s"] * 1e3
    print(f"target: added path < {TARGET_BATCH_MS} ms at 2,048 rollouts: {batch_ms:.3f} ms  "
          f"{_verdict(batch_ms < TARGET_BATCH_MS)}")
    print(f"target: added path < {TARGET_STEP_OVERHEAD:.0%} of a TRL step: {overhead:.4%}  "
          f"{_verdict(overhead < TARGET_STEP_OVERHEAD)}")
    return {"path_2048": path_2048, "path_step": path_step, "steps_s": steps,
            "step_ratio_best": best["ours"] / best["trl"], "step_ratio_median": median["ours"] / median["trl"],
            "added_over_best_step": overhead}


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of whole-step timing (default 3)")
    parser.add_argument("--steps", type=int, default=5, help="TRL steps per run; the first is dropped (default 5)")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls of the added path (default 200)")
    parser.add_argument("--estimator", default="na", help="estimator of ours (default na; conditioning 1 gates 2)")
    parser.add_argument("--quick", action="store_true", help="1 round of 3 steps, 50 repeats")
    parser.add_argument("--json", default=str(HERE / "results" / "trl_latest.json"),
                        help="where to write the raw numbers (default benchmarks/results/trl_latest.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.repeats = 1, 3, 50
    return args


def main(argv=None) -> int:
    args = _parse(argv)
    warnings.filterwarnings("ignore")
    try:
        import trl  # noqa: F401
        from tiny_lm import make_tokenizer
    except ImportError as err:
        print(f"trl_bench needs the trl extra: pip install -e \".[trl,llm]\" ({err})", file=sys.stderr)
        return 2
    import torch

    # One thread: on a shared machine torch's thread pool turns other processes' load into step-time spikes.
    torch.set_num_threads(1)
    tokenizer = make_tokenizer()
    group, batch = 4, 8
    path_2048 = time_added_path(tokenizer, 2048, 8, args.repeats, args.estimator)
    path_step = time_added_path(tokenizer, batch, group, args.repeats, args.estimator)
    steps = time_steps(tokenizer, rounds=args.rounds, steps=args.steps, group=group, batch=batch,
                       estimator=args.estimator)
    results = report(path_2048, path_step, steps, batch)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nraw numbers: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
