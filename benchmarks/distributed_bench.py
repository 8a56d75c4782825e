#!/usr/bin/env python
"""Data-parallel GRPOTrainer: the 21M workload on 1 vs 2 CPU processes with the global batch fixed.

The same job (the trainer benchmark's ``21m`` workload: Qwen2 21M random
weights, 4 prompts x 8 completions x 32 new tokens, LoRA r=16 on q/k/v/o,
KL 0.05, float32, micro-batches of 8) runs in one process, then under
``torchrun --nproc_per_node 2``, each process with ``--threads`` torch
threads (default 1: on a shared 2-core machine two threads per process wait
on each other whenever another process competes), and reports per process
the median wall and CPU time per step and the peak RSS, and the largest
difference between the two runs' trained parameters (and between the two
ranks').

With ``--fsdp`` a third run shards the model over the two processes (FSDP2,
under the environment ``accelerate launch`` sets for
``examples/accelerate/fsdp.yaml``), and every run reports its training state
per process: the bytes of the parameters, gradients, optimizer state and
frozen reference it holds (its shards under FSDP). ``--full`` trains all
weights instead of a LoRA adapter, where sharding pays.

Usage::

    python benchmarks/distributed_bench.py [--steps 5] [--chat] [--fsdp] [--full] [--json PATH]

Exit status 0 when both runs finish and the parameters agree within
``--tol`` (default 1e-5), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5, help="training steps per run (default 5; the first is warm-up)")
    p.add_argument("--chat", action="store_true", help="the 21m-chat prompts (~300-token support chats)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process in both runs (default 1)")
    p.add_argument("--fsdp", action="store_true", help="also run the two processes with the model sharded (FSDP)")
    p.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA r=16 (lr 1e-5)")
    p.add_argument("--tol", type=float, default=1e-5, help="largest parameter difference accepted (default 1e-5)")
    p.add_argument("--json", type=Path, default=HERE / "results" / "distributed_latest.json",
                   help="raw numbers (default benchmarks/results/distributed_latest.json)")
    p.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --------------------------------------------------------------------------- worker (one per process)


def worker(job_path: Path) -> None:
    import torch

    job = json.loads(job_path.read_text())
    torch.set_num_threads(job["threads"])
    sys.path.insert(0, str(HERE))
    from _trainer_worker import channels

    from multireward_grpo import GRPOConfig, GRPOTrainer

    config = GRPOConfig(
        model=job["model"], mode="an", weights=(1.0, 1.0), batch_prompts=4, m=8, max_new_tokens=32,
        temperature=0.8, lr=1e-5 if job["full"] else 5e-6, kl_coef=0.05, ppo_clip=0.2, seed=0, use_lora=not job["full"],
        lora_r=16, lora_alpha=32, lora_dropout=0.05,
        lora_target_modules=("q_proj", "k_proj", "v_proj", "o_proj"), device="cpu", dtype="float32",
        micro_batch_size=8, n_steps=job["steps"], checkpoint_every=0, sample_every=0, verbose=False,
        out_dir=job["out_dir"])
    trainer = GRPOTrainer(config, lambda completion, prompt: channels(completion), job["prompts"])
    own_seconds, cpu_seconds = [], []
    for _ in range(job["steps"]):
        started, cpu_started = time.perf_counter(), time.process_time()
        trainer.train_step()
        own_seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.process_time() - cpu_started)
    full = trainer.processes.full_weights(trainer.model)  # gathered from the shards under FSDP
    named = [(n, p) for n, p in trainer.model.named_parameters() if p.requires_grad]
    params = torch.cat([(p.detach() if full is None else full[n]).reshape(-1).double() for n, p in named])
    rank = trainer.processes.rank
    torch.save(params, Path(job["report"]) / f"params.rank{rank}.pt")
    (Path(job["report"]) / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world_size": trainer.processes.world_size, "own_step_seconds": own_seconds, "cpu_step_seconds": cpu_seconds,
        "history_step_seconds": [h["step_seconds"] for h in trainer.history],
        "gen_seconds": [h["gen_seconds"] for h in trainer.history],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "state_mb": _training_state_mb(trainer),
        "mean_reward": [h["mean_reward"] for h in trainer.history],
    }))
    trainer.processes.barrier()


def _training_state_mb(trainer) -> float:
    """MB of parameters, gradients, optimizer state and reference this process holds (its local shards)."""
    import torch

    tensors = [*trainer.model.parameters(), *(p.grad for p in trainer.model.parameters() if p.grad is not None),
               *(v for state in trainer.optimizer.state.values() for v in state.values() if torch.is_tensor(v)),
               *(trainer.reference.parameters() if trainer.reference is not None else ())]
    local = {id(t): (t.to_local() if hasattr(t, "to_local") else t) for t in tensors}
    return sum(t.numel() * t.element_size() for t in local.values()) / 2**20


# --------------------------------------------------------------------------- driver


def _launch(job: dict, processes: int, root: Path, *, fsdp: bool = False) -> dict:
    from multireward_grpo.train.sharding import fsdp_launch_environment

    tag = f"{processes}{'-fsdp' if fsdp else ''}"
    report = root / f"report-{tag}"
    report.mkdir()
    job = {**job, "report": str(report), "out_dir": str(root / f"out-{tag}")}
    job_path = root / f"job-{tag}.json"
    job_path.write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": str(job["threads"]), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           **(fsdp_launch_environment(ROOT / "examples" / "accelerate" / "fsdp.yaml") if fsdp else {})}
    me = str(Path(__file__).resolve())
    command = [sys.executable, me, "--worker", str(job_path)] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", me,
        "--worker", str(job_path)]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"the {tag} run failed (rc {done.returncode})")
    import torch

    ranks = [json.loads((report / f"rank{r}.json").read_text()) for r in range(processes)]
    params = [torch.load(report / f"params.rank{r}.pt") for r in range(processes)]
    return {"ranks": ranks, "params": params, "wall_s": wall}


def _cpu_load() -> float:
    """Share of the machine's CPU time used over one second (all processes), from /proc/stat."""
    def sample():
        fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)
    try:
        idle0, total0 = sample()
        time.sleep(1.0)
        idle1, total1 = sample()
    except OSError:
        return float("nan")
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        worker(args.worker)
        return 0
    sys.path.insert(0, str(HERE))
    import _trainer_models
    from trainer_bench import PROMPTS, chat_prompts

    info = _trainer_models.build_model("qwen2-21m")
    prompts = chat_prompts(4) if args.chat else PROMPTS
    base = {"model": info["path"], "steps": args.steps, "prompts": prompts, "threads": args.threads,
            "full": args.full}
    load_before = _cpu_load()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"1 process": _launch(base, 1, Path(tmp)), "2 processes": _launch(base, 2, Path(tmp))}
        if args.fsdp:
            runs["2 FSDP"] = _launch(base, 2, Path(tmp), fsdp=True)
    load_after = _cpu_load()
    one = runs["1 process"]
    rows = [{"run": label, "rank": rank["rank"], "threads": args.threads,
             "step_s": _median_after_first(rank["own_step_seconds"]),
             "cpu_s": _median_after_first(rank["cpu_step_seconds"]),
             "gen_s": _median_after_first(rank["gen_seconds"]), "peak_rss_mb": rank["peak_rss_mb"],
             "state_mb": rank["state_mb"]} for label, run in runs.items() for rank in run["ranks"]]
    print(f"workload 21m{'-chat' if args.chat else ''} ({'full fine-tuning' if args.full else 'LoRA r=16'}): "
          f"4 prompts x 8 completions x 32 tokens per step (global), {args.steps} steps, median of steps "
          f"2..{args.steps}; machine CPU use before/after: {load_before:.0%} / {load_after:.0%}")
    print(f"{'run':<12} {'rank':>4} {'threads':>7} {'step s':>8} {'cpu s':>7} {'gen s':>7} {'peak RSS MB':>12} "
          f"{'state MB':>9}")
    for r in rows:
        print(f"{r['run']:<12} {r['rank']:>4} {r['threads']:>7} {r['step_s']:>8.2f} {r['cpu_s']:>7.2f} "
              f"{r['gen_s']:>7.2f} {r['peak_rss_mb']:>12,.0f} {r['state_mb']:>9,.1f}")
    summary, ok = {}, True
    largest = float(one["params"][0].abs().max())
    for label, run in list(runs.items())[1:]:
        own = [r for r in rows if r["run"] == label]
        speedup = rows[0]["step_s"] / max(r["step_s"] for r in own)
        diff_vs_one = max(float((p - one["params"][0]).abs().max()) for p in run["params"])
        diff_ranks = float((run["params"][0] - run["params"][1]).abs().max())
        print(f"{label}: step time 1 process / {label} {speedup:.2f}x (wall), CPU time per step and process "
              f"{rows[0]['cpu_s'] / max(r['cpu_s'] for r in own):.2f}x; max |param difference| vs 1 process "
              f"{diff_vs_one:.2e}, rank 0 vs rank 1 {diff_ranks:.2e} (largest |parameter| {largest:.2e}); "
              f"histories' mean_reward equal: {_same_rewards(one, run)}")
        ok = ok and diff_vs_one <= args.tol and diff_ranks == 0.0
        summary[label] = {"speedup": speedup, "diff_vs_one": diff_vs_one, "diff_ranks": diff_ranks}
    print("parameters agree" if ok else f"MISMATCH beyond {args.tol}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "summary": summary, "cpu_load": [load_before, load_after],
                                     "ranks": {label: run["ranks"] for label, run in runs.items()}}, indent=2))
    return 0 if ok else 1


def _median_after_first(values):
    """Median of the steps after the first (its warm-up), or of all when there is one."""
    return statistics.median(values[1:] or values)


def _same_rewards(one: dict, two: dict) -> bool:
    a, b = one["ranks"][0]["mean_reward"], two["ranks"][0]["mean_reward"]
    return len(a) == len(b) and all(abs(x - y) <= 1e-9 for x, y in zip(a, b))


if __name__ == "__main__":
    sys.exit(main())
