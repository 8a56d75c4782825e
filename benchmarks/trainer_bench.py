#!/usr/bin/env python
"""Benchmark this checkout's GRPOTrainer against TRL's GRPOTrainer and multireward-grpo==0.1.1's.

Each trainer runs in its own subprocess on the same local random-weight model
(built once offline under ``benchmarks/.models``), with the same prompts,
rewards, sampling and LoRA settings; the script reports the median step time
and the peak RSS of each, their ratios, and whether the targets are met. Run
``python benchmarks/trainer_bench.py --help`` for the flags and see the
trainer section of benchmarks/README.md for what is measured.

``--gpu`` runs the GPU section instead (``_trainer_gpu.py``): ours vs TRL on
random-weight Qwen2.5-0.5B and 1.5B architectures in bfloat16 on CUDA, with
step time, generation and training tokens/s, the update's model FLOPs
utilization and the peak GPU memory; ``--tiny`` runs its code path on CPU.

Exit status: 0 when every run of ours succeeded (a peer that cannot be
installed or fails is reported and skipped), 1 when a run of ours failed,
2 when this checkout's package cannot be imported.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _trainer_models
import _trainer_peers

HERE = Path(__file__).resolve().parent
IMPLS = ("ours", "trl", "peer")
LABEL = {"ours": "ours", "trl": "TRL", "peer": "0.1.1"}
PROMPTS = [
    "Write a short polite reply to a customer asking about a refund.",
    "Explain why the sky looks blue, in two sentences.",
    "What is seven plus five? Answer with a number.",
    "List three things to check before paying a card bill.",
]
COMMON = {
    "mode": "an",  # aggregate-then-normalize: what TRL does with several reward functions
    "weights": [1.0, 1.0],
    "temperature": 0.8,
    "lr": 5e-6,
    "kl_coef": 0.05,
    "ppo_clip": 0.2,
    "seed": 0,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj"],
}
# ours' GRPOConfig.micro_batch_size default: sequences per forward/backward pass of the loss. TRL gets the same
# (per_device_train_batch_size, with gradient accumulation up to P x m); 0.1.1 has no such option.
OURS_MICRO_BATCH = 8
WORKLOADS = {
    # name: model, prompts per step P, group size m, new tokens, default steps
    "21m": {"model": "qwen2-21m", "P": 4, "m": 8, "max_new_tokens": 32, "n_steps": 6, "timeout": 1800},
    "0.5b": {"model": "qwen2-0.5b", "P": 2, "m": 4, "max_new_tokens": 16, "n_steps": 2, "timeout": 2400},
    # 21m with long prompts (a support chat: system rules + three turns, ~300 tokens each), where running
    # each prompt once per group (ours' share_prompt_cache) pays off. Opt-in: --sizes 21m-chat.
    "21m-chat": {"model": "qwen2-21m", "P": 4, "m": 8, "max_new_tokens": 32, "n_steps": 6, "timeout": 2400,
                 "chat_prompts": True},
}
DEFAULT_SIZES = ["21m", "0.5b"]


def chat_prompts(n: int) -> list[str]:
    """``n`` fintech support chats flattened into one user message each (same text for every trainer)."""
    from multireward_grpo.examples.fintech import make_fintech_prompts

    return ["\n\n".join(f"{msg['role'].upper()}: {msg['content']}" for msg in item["messages"])
            + "\n\nWrite the assistant's next reply." for item in make_fintech_prompts(n, seed=0)]


def _steps_and_rounds_apply(workload: str) -> bool:
    """--steps and --rounds govern the 21M-parameter workloads; 0.5b always runs 2 steps once."""
    return workload.startswith("21m")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags (see ``--help``)."""
    p = argparse.ArgumentParser(
        description="Time GRPO training steps and peak RSS of this checkout's GRPOTrainer vs TRL 1.16's GRPOTrainer "
        "(benchmarks/.trl-venv) and multireward-grpo==0.1.1's (benchmarks/.bench-venv, black box), each in its own "
        "subprocess on the same random-weight Qwen2 model in float32 on CPU: workload 21m (21M parameters, 4 prompts "
        "x 8 completions x 32 new tokens, LoRA r=16 on q/k/v/o, KL 0.05) and workload 0.5b (497M parameters, 2 x 4 "
        "x 16, two steps; peak memory where the weights dominate)."
    )
    p.add_argument("--quick", action="store_true", help="smoke run: workload 21m only, 3 steps, 1 round (about 2 min)")
    p.add_argument("--sizes", type=parse_sizes, default=None,
                   help="comma-separated workloads to run, from: 21m, 0.5b, 21m-chat (the 21m run on ~300-token "
                        "chat prompts) (default 21m,0.5b; --quick 21m)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps of workloads 21m and 21m-chat (default 6; --quick 3); the median of the "
                        "steps after the first is reported. Workload 0.5b always runs 2")
    p.add_argument("--rounds", type=int, default=None,
                   help="runs of each trainer on workloads 21m and 21m-chat, interleaved (ours, TRL, 0.1.1, ours, "
                        "...); the step intervals of all rounds are pooled (default 3; --quick 1). Workload 0.5b "
                        "runs once")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="where to write all raw numbers (default benchmarks/results/trainer_latest.json; with --gpu "
                        "or --tiny benchmarks/results/trainer_gpu_latest.json)")
    p.add_argument("--skip-trl", action="store_true", help="do not create/use the TRL venv; no TRL columns")
    p.add_argument("--skip-peer", action="store_true", help="do not use the 0.1.1 venv; no 0.1.1 columns")
    p.add_argument("--trl-one-pass", action="store_true",
                   help="run TRL's loss on all P x m completions in one forward/backward pass "
                        "(per_device_train_batch_size = P x m) instead of micro-batches of 8 like ours")
    p.add_argument("--skip-trl-large", action="store_true", help="run TRL on workload 21m only (not on 0.5b)")
    p.add_argument("--profile", action="store_true",
                   help="after the timed runs, run ours once more on workload 21m under cProfile and print the top "
                        "entries (not used for the timings)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads in every worker (default 0: torch's default, one per core)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                   help="before each run, wait up to SECONDS until other processes use under 15%% of the CPUs "
                        "(on a shared machine; default 0: do not wait)")
    p.add_argument("--ours-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra GRPOConfig option for ours only, e.g. micro_batch_size=4 or gradient_checkpointing=True "
                        "(repeatable; to try a change; the default runs use none)")
    p.add_argument("--rebuild-models", action="store_true", help="rebuild the random models under benchmarks/.models")
    p.add_argument("--markdown", action="store_true", help="also print the result table as markdown")
    add_gpu_arguments(p)
    args = p.parse_args(argv)
    if args.json is None:
        gpu = args.gpu or args.tiny
        args.json = HERE / "results" / ("trainer_gpu_latest.json" if gpu else "trainer_latest.json")
    if args.gpu_steps < 2:
        p.error("--gpu-steps must be at least 2 (the first step is not timed)")
    try:
        args.ours_options = dict(_option(o) for o in args.ours_option)
    except ValueError as err:
        p.error(str(err))
    args.sizes = args.sizes or (["21m"] if args.quick else DEFAULT_SIZES)
    args.steps = args.steps or (3 if args.quick else 6)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.steps < 2:
        p.error("--steps must be at least 2 (the first step is not timed)")
    return args


def add_gpu_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of the GPU section (see _trainer_gpu.py and the GPU section of benchmarks/README.md)."""
    g = p.add_argument_group(
        "GPU section", "ours vs TRL 1.16 (installed in this interpreter) on CUDA: random-weight Qwen2.5-0.5B and "
        "Qwen2.5-1.5B architectures in bfloat16, LoRA r=16 on q/k/v/o, 8 prompts of ~200 tokens x 8 completions x "
        "256 new tokens, HF generation for both; step time, generation and training tokens/s, update MFU, peak GPU "
        "memory")
    g.add_argument("--gpu", action="store_true", help="run the GPU section instead of the CPU workloads (needs CUDA)")
    g.add_argument("--tiny", action="store_true",
                   help="run the GPU section's code path on a 2-layer Qwen2 (2 prompts x 4 x 8 tokens), on CPU in "
                        "float32 unless --device cuda: a smoke test whose times mean nothing")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="device of the GPU section (default auto: cuda when available)")
    g.add_argument("--gpu-sizes", type=_gpu_sizes, default=["0.5b", "1.5b"],
                   help="comma-separated GPU workloads, from 0.5b, 1.5b (default both)")
    g.add_argument("--gpu-steps", type=int, default=3,
                   help="training steps per GPU run; the median of the steps after the first is reported (default 3)")
    g.add_argument("--gpu-micro", type=int, default=0,
                   help="sequences per forward/backward pass of the loss, for both trainers (default 8; --tiny 4)")
    g.add_argument("--gpu-timeout", type=float, default=600, metavar="SECONDS",
                   help="limit of one GPU run (default 600)")
    g.add_argument("--profile-dir", type=Path, default=None, metavar="DIR",
                   help="profile ours' last step (which no timed interval covers) on the last workload: "
                        "DIR/<workload>/profile_ops.txt (top operators of its update, torch.profiler) and "
                        "profile_phases.json (seconds per phase of the step)")


def _gpu_sizes(text: str) -> list[str]:
    sizes = [tok.strip().lower() for tok in text.split(",") if tok.strip()]
    if not sizes or any(s not in ("0.5b", "1.5b") for s in sizes):
        raise argparse.ArgumentTypeError(f"choose GPU workloads from 0.5b, 1.5b; got {text!r}")
    return sizes


def _option(text: str) -> tuple[str, object]:
    """'micro_batch_size=4' -> ('micro_batch_size', 4); values are Python literals, else strings."""
    import ast

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--ours-option needs KEY=VALUE, got {text!r}")
    try:
        return key.strip(), ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return key.strip(), value.strip()


def parse_sizes(text: str) -> list[str]:
    """Parse '21m,0.5b' into a list of workload names."""
    sizes = [tok.strip().lower() for tok in text.split(",") if tok.strip()]
    bad = [s for s in sizes if s not in WORKLOADS]
    if not sizes or bad:
        raise argparse.ArgumentTypeError(f"choose workloads from {', '.join(WORKLOADS)}; got {text!r}")
    return sizes


def check_ours() -> str:
    """Import this checkout's trainer (and its torch stack) or exit 2 with a clear message."""
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401

        import multireward_grpo
        from multireward_grpo import GRPOConfig, GRPOTrainer  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        print(f"cannot import multireward_grpo's trainer stack ({type(exc).__name__}: {exc}); "
              "run `pip install -e .[llm]` (torch==2.13.0 first) ", file=sys.stderr)
        sys.exit(2)
    return getattr(multireward_grpo, "__version__", "?")


def machine_info() -> dict:
    """CPU, memory and the versions of this interpreter's stack."""
    import platform

    import torch
    import transformers

    def field(path, key):
        try:
            with open(path) as fh:
                return next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith(key)), None)
        except OSError:
            return None

    return {"cpu_count": os.cpu_count(), "cpu_model": field("/proc/cpuinfo", "model name") or platform.machine(),
            "mem": field("/proc/meminfo", "MemTotal"), "python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def setup_peers(args) -> dict:
    """Interpreter per implementation (None when unavailable) and a note on each."""
    pythons = {"ours": (Path(sys.executable), "this interpreter")}
    if args.skip_trl:
        pythons["trl"] = (None, "--skip-trl")
    else:
        pythons["trl"] = _trainer_peers.ensure_trl_venv()
    if args.skip_peer:
        pythons["peer"] = (None, "--skip-peer")
    else:
        pythons["peer"] = _trainer_peers.ensure_peer_trainer_venv()
    for impl, (py, note) in pythons.items():
        state = "ok" if py else "UNAVAILABLE"
        print(f"[setup] {LABEL[impl]:>5}: {state} ({note})", flush=True)
    return pythons


def job(workload: str, impl: str, model: dict, steps: int, out_dir: Path, profile: bool = False,
        trl_micro: int = OURS_MICRO_BATCH, threads: int = 0) -> dict:
    """The job description a worker runs (same settings for every implementation)."""
    w = WORKLOADS[workload]
    prompts = chat_prompts(w["P"]) if w.get("chat_prompts") else PROMPTS[:w["P"]]
    return COMMON | {
        "workload": workload, "impl": impl, "model": model["path"], "prompts": prompts,
        "P": w["P"], "m": w["m"], "max_new_tokens": w["max_new_tokens"],
        "n_steps": steps if _steps_and_rounds_apply(workload) else w["n_steps"], "out_dir": str(out_dir / f"{workload}-{impl}"),
        "profile": profile, "trl_micro_batch": trl_micro, "threads": threads,
    }


def cpu_busy_s() -> float | None:
    """Busy CPU seconds of the whole machine so far (all cores, from /proc/stat), or None off Linux."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """User + system CPU seconds of the finished child processes of this script."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def wait_quiet(limit_s: float, threshold: float = 0.15) -> float | None:
    """Wait up to ``limit_s`` until other processes use under ``threshold`` of the CPUs; returns that fraction."""
    deadline = time.monotonic() + limit_s
    while True:
        b0, t0 = cpu_busy_s(), time.monotonic()
        if b0 is None:
            return None
        time.sleep(3)
        frac = (cpu_busy_s() - b0) / ((time.monotonic() - t0) * os.cpu_count())
        if frac < threshold or time.monotonic() > deadline:
            return frac
        print(f"[wait] other processes use {100 * frac:.0f}% of the CPUs; waiting ...", flush=True)
        time.sleep(20)


def run_all(args, pythons: dict, models: dict, workdir: Path) -> list[dict]:
    """Every (workload, implementation) run, one after the other (never two at once).

    Each run also records ``others_cpu_frac``: the share of the machine's CPU
    time during the run that went to processes other than the worker (total
    busy time from /proc/stat minus the worker's own user + system time), so
    a run disturbed by a competing process shows it.
    """
    runs = []
    for workload in args.sizes:
        rounds = args.rounds if _steps_and_rounds_apply(workload) else 1
        for rnd, impl in ((r, i) for r in range(rounds) for i in IMPLS):
            py, _ = pythons[impl]
            if py is None or (impl == "trl" and workload == "0.5b" and args.skip_trl_large):
                continue
            spec = job(workload, impl, models[workload], args.steps, workdir / f"round{rnd}",
                       trl_micro=0 if args.trl_one_pass else OURS_MICRO_BATCH, threads=args.threads)
            spec["round"] = rnd
            if impl == "ours" and args.ours_options:
                spec["ours_options"] = args.ours_options
            if args.wait_quiet:
                wait_quiet(args.wait_quiet)
            load = os.getloadavg()[0]
            busy0, cpu0 = cpu_busy_s(), children_cpu_s()
            tag = f"[run] {workload:>4} {LABEL[impl]:>5} round {rnd + 1}/{rounds}:"
            print(f"{tag} {spec['n_steps']} steps of P={spec['P']} x m={spec['m']} x {spec['max_new_tokens']} tokens "
                  f"(load average {load:.2f}) ...", flush=True)
            started = time.perf_counter()
            res = _trainer_peers.run_job(py, spec, workdir, WORKLOADS[workload]["timeout"])
            wall = time.perf_counter() - started
            res |= {"workload": workload, "wall_s": wall, "loadavg_before": load, "loadavg_after": os.getloadavg()[0],
                    "n_steps": spec["n_steps"], "worker_cpu_s": children_cpu_s() - cpu0}
            if busy0 is not None:
                others = cpu_busy_s() - busy0 - res["worker_cpu_s"]
                res["others_cpu_frac"] = max(others, 0.0) / (wall * os.cpu_count())
            if "error" in res:
                print(f"{tag} FAILED {res['error']}", flush=True)
            else:
                print(f"{tag} median step {res.get('step_median_s', float('nan')):.2f} s, peak RSS "
                      f"{res['peak_rss_mb']:.0f} MB ({res['wall_s']:.0f} s, other processes "
                      f"{100 * res.get('others_cpu_frac', 0):.0f}% of the CPUs)", flush=True)
            runs.append(res | {"round": rnd})
    return runs


def merge_rounds(runs: list[dict]) -> list[dict]:
    """One record per (workload, implementation): the rounds' step intervals pooled, the largest peak RSS.

    ``step_median_s`` / ``step_cpu_median_s`` become medians over every
    timed step of every round; ``round_medians_s`` keeps each round's own
    median; ``others_cpu_frac`` is the worst round's. A failed round makes the
    merged record failed.
    """
    merged = []
    for workload in dict.fromkeys(r["workload"] for r in runs):
        for impl in IMPLS:
            group = [r for r in runs if r["workload"] == workload and r["impl"] == impl]
            if not group:
                continue
            bad = next((r for r in group if "error" in r), None)
            if bad:
                merged.append({"workload": workload, "impl": impl, "error": bad["error"]})
                continue
            rec = dict(group[-1])
            for key in ("step_intervals_s", "step_cpu_intervals_s", "retokenized_len_per_step"):
                rec[key] = [v for r in group for v in r.get(key, [])]
            native = {}
            for key in dict.fromkeys(k for r in group for k in r.get("native", {})):
                values = [r["native"][key] for r in group if key in r["native"]]
                native[key] = [v for vs in values for v in vs] if isinstance(values[0], list) else values[0]
            rec["native"] = native
            if impl == "ours":  # ours' own per-step fields, without each round's first step
                rec["native"]["gen_seconds_after_first"] = [v for r in group for v in r["native"]["gen_seconds"][1:]]
                rec["native"]["step_seconds_after_first"] = [v for r in group for v in r["native"]["step_seconds"][1:]]
            rec["rounds"] = len(group)
            rec["round_medians_s"] = [r.get("step_median_s") for r in group]
            rec["peak_rss_mb"] = max(r["peak_rss_mb"] for r in group)
            rec["rss_after_imports_mb"] = statistics.median(r["rss_after_imports_mb"] for r in group)
            rec["others_cpu_frac"] = max(r.get("others_cpu_frac") or 0.0 for r in group)
            if rec["step_intervals_s"]:
                rec["step_median_s"] = statistics.median(rec["step_intervals_s"])
                rec["step_cpu_median_s"] = statistics.median(rec["step_cpu_intervals_s"])
            merged.append(rec)
    return merged


def profile_ours(args, models: dict, workdir: Path) -> dict | None:
    """An extra cProfile'd run of ours on workload 21m (its times are not used)."""
    if not args.profile or "21m" not in models:
        return None
    print("[profile] ours on workload 21m under cProfile ...", flush=True)
    spec = job("21m", "ours", models["21m"], args.steps, workdir / "profile", profile=True, threads=args.threads)
    spec["workload"] = "21m-profile"
    res = _trainer_peers.run_job(sys.executable, spec, workdir, WORKLOADS["21m"]["timeout"])
    return res


# --------------------------------------------------------------------------- report


def _get(runs, workload, impl):
    return next((r for r in runs if r["workload"] == workload and r["impl"] == impl and "error" not in r), None)


def _len(run) -> tuple[float | None, float | None]:
    native = (run.get("native") or {}).get("completion_len_per_step")
    retok = run.get("retokenized_len_per_step")
    return (statistics.fmean(native) if native else None), (statistics.fmean(retok) if retok else None)


def table_rows(runs: list[dict]) -> list[list[str]]:
    rows = []
    for r in runs:
        if "error" in r:
            rows.append([r["workload"], LABEL[r["impl"]], "FAILED"] + ["-"] * (len(HEADER) - 3))
            continue
        iv = [v for v in r.get("round_medians_s") or [] if v is not None]
        native, retok = _len(r)
        ours = _get(runs, r["workload"], "ours")
        ratio_t = ratio_m = ratio_c = "-"
        if ours and r["impl"] != "ours" and r.get("step_cpu_median_s") and ours.get("step_cpu_median_s"):
            ratio_c = f"{r['step_cpu_median_s'] / ours['step_cpu_median_s']:.2f}"
        if ours and r["impl"] != "ours" and r.get("step_median_s") and ours.get("step_median_s"):
            ratio_t = f"{r['step_median_s'] / ours['step_median_s']:.2f}"
            ratio_m = f"{ours['peak_rss_mb'] / r['peak_rss_mb']:.2f}"
        rows.append([
            r["workload"], LABEL[r["impl"]],
            f"{r['step_median_s']:.2f}" if r.get("step_median_s") else "-",
            f"{min(iv):.2f}-{max(iv):.2f}" if iv else "-",
            f"{r['step_cpu_median_s']:.2f}" if r.get("step_cpu_median_s") else "-", ratio_c,
            f"{r['peak_rss_mb']:,.0f}", f"{r['rss_after_imports_mb']:,.0f}",
            (f"{native:.1f}" if native is not None else "-") + " / " + (f"{retok:.1f}" if retok is not None else "-"),
            ratio_t, ratio_m,
            f"{100 * r['others_cpu_frac']:.0f}" if r.get("others_cpu_frac") is not None else "-",
        ])
    return rows


HEADER = ["workload", "trainer", "step s", "rounds s", "cpu s", "x ours cpu", "peak RSS MB", "base MB",
          "len native / retok", "x ours", "RSS ours/x", "others %"]


def print_table(rows: list[list[str]], markdown: bool) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(HEADER)]
    print("  ".join(h.rjust(w) for h, w in zip(HEADER, widths)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    if markdown:
        print("\n| " + " | ".join(HEADER) + " |\n|" + "---:|" * len(HEADER))
        for r in rows:
            print("| " + " | ".join(r) + " |")


def _cpu_ratio(peer: dict, ours: dict) -> str:
    if peer.get("step_cpu_median_s") and ours.get("step_cpu_median_s"):
        return f"; CPU: {peer['step_cpu_median_s'] / ours['step_cpu_median_s']:.2f}"
    return ""


NOISY = 0.10  # other processes' share of the CPUs above which wall times are not trusted


def _speed(a: dict, b: dict) -> tuple[str, float, float, str]:
    """(key, a value, b value, unit note): wall time, or CPU time when another process competed in either run."""
    noisy = max(a.get("others_cpu_frac") or 0.0, b.get("others_cpu_frac") or 0.0) > NOISY
    if noisy and a.get("step_cpu_median_s") and b.get("step_cpu_median_s"):
        return "step_cpu_median_s", a["step_cpu_median_s"], b["step_cpu_median_s"], \
            " CPU s (judged on CPU time: other processes used the CPUs during a run)"
    return "step_median_s", a["step_median_s"], b["step_median_s"], " s (wall)"


def targets(runs: list[dict]) -> list[dict]:
    """The stated targets (MET / MISSED / N/A); informative, they do not change the exit status.

    Speed is judged on the median wall time per step, or on the median CPU
    time per step when other processes took more than 10% of the machine
    during either run (wall times are then inflated by an amount that
    differs from run to run).
    """
    out = []

    def add(name, ok, detail):
        out.append({"name": name, "status": "N/A" if ok is None else ("MET" if ok else "MISSED"), "detail": detail})

    def speed(name, peer, ours_run=None):
        ours = ours_run or ours_21m
        _, o, p, unit = _speed(ours, peer)
        add(name, o <= p, f"ours {o:.2f} vs {LABEL[peer['impl']]} {p:.2f}{unit}; {LABEL[peer['impl']]}/ours = "
            f"{p / o:.2f} (wall: {peer['step_median_s'] / ours['step_median_s']:.2f}{_cpu_ratio(peer, ours)})")

    ours_21m, trl, peer = (_get(runs, "21m", i) for i in IMPLS)
    ours = ours_21m
    if ours and trl:
        speed("21m: ours step time <= TRL's", trl)
        add("21m: ours peak RSS <= TRL's", ours["peak_rss_mb"] <= trl["peak_rss_mb"],
            f"ours {ours['peak_rss_mb']:.0f} MB vs TRL {trl['peak_rss_mb']:.0f} MB "
            f"(ours/TRL = {ours['peak_rss_mb'] / trl['peak_rss_mb']:.2f})")
    else:
        add("21m: ours vs TRL (step time, peak RSS)", None, "TRL or ours did not run")
    if ours and peer:
        speed("21m: ours step time <= 0.1.1's", peer)
    else:
        add("21m: ours step time <= 0.1.1's", None, "0.1.1 or ours did not run")
    chat = {i: _get(runs, "21m-chat", i) for i in IMPLS}
    for impl in ("trl", "peer"):
        if chat["ours"] and chat[impl]:
            speed(f"21m-chat: ours step time <= {LABEL[impl]}'s", chat[impl], chat["ours"])
    big_ours, big_peer = _get(runs, "0.5b", "ours"), _get(runs, "0.5b", "peer")
    if big_ours and big_peer:
        ratio = big_ours["peak_rss_mb"] / big_peer["peak_rss_mb"]
        add("0.5b: ours peak RSS <= 0.6x 0.1.1's", ratio <= 0.6,
            f"ours {big_ours['peak_rss_mb']:.0f} MB vs 0.1.1 {big_peer['peak_rss_mb']:.0f} MB (ratio {ratio:.2f})")
    elif any(r["workload"] == "0.5b" for r in runs):
        add("0.5b: ours peak RSS <= 0.6x 0.1.1's", None, "0.1.1 or ours did not run")
    return out


def ours_breakdown(runs: list[dict]) -> list[str]:
    """Generation vs the rest of ours' step, from its own history (steps after the first)."""
    lines = []
    for r in runs:
        if r["impl"] != "ours" or "error" in r:
            continue
        nat = r.get("native") or {}
        gen, step = nat.get("gen_seconds_after_first", []), nat.get("step_seconds_after_first", [])
        if gen and step:
            g, s = statistics.median(gen), statistics.median(step)
            lines.append(f"  {r['workload']}: ours' own step_seconds median {s:.2f} s = generation {g:.2f} s "
                         f"({100 * g / s:.0f}%) + scoring/KL reference/update/logging {s - g:.2f} s")
    return lines


def print_report(results: dict, markdown: bool) -> None:
    meta = results["meta"]
    print(f"\nGRPO trainer benchmark, {meta['cpu_count']} cores ({meta['cpu_model']}), {meta['mem']}, "
          f"Python {meta['python']}, torch {meta['torch']}, transformers {meta['transformers']}")
    for name, info in results["models"].items():
        print(f"  model {name}: {info['architecture']} {info['parameters'] / 1e6:.1f}M parameters, vocab "
              f"{info['vocab_size']}, hidden {info['hidden_size']}, {info['num_hidden_layers']} layers, MLP "
              f"{info['intermediate_size']}, float32, random weights")
    print()
    print_table(table_rows(results["runs"]), markdown)
    print("\nstep s = median over the steps after the first (all rounds pooled) of the interval between the "
          "first reward calls of consecutive steps; rounds s = range of the rounds' own medians; cpu s = the same "
          "in CPU time of the process (all threads; less sensitive to other processes than wall time); x ours "
          "(cpu) = peer step s / ours step s (>1: ours faster); RSS ours/x = ours peak / peer peak (<1: ours "
          "smaller); base MB = RSS after the imports, before any model; len = mean completion tokens as the "
          "trainer counts them / re-tokenized from the text the reward sees; others % = share of the machine's "
          "CPU time used by other processes during the run")
    lines = ours_breakdown(results["runs"])
    if lines:
        print("\n" + "\n".join(lines))
    others = [r.get("others_cpu_frac") or 0.0 for r in results["runs"]]
    if others and max(others) > 0.10:
        print(f"\nWARNING: other processes used up to {100 * max(others):.0f}% of this {meta['cpu_count']}-core "
              "machine's CPU time during a run (column others %): the times of that run are inflated; rerun on a "
              "quiet machine (--wait-quiet 1800 waits for one)")
    print("\nTargets:")
    for t in results["targets"]:
        print(f"  {t['status']:<6} {t['name']}: {t['detail']}")
    prof = results.get("profile")
    if prof:
        print("\nProfile of ours (workload 21m, cProfile, cumulative):")
        print(prof.get("profile") or prof.get("error", "no profile"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ours_version = check_ours()
    if args.gpu or args.tiny:
        import _trainer_gpu

        return _trainer_gpu.main(args, COMMON)
    meta = machine_info() | {"ours_version": ours_version, "quick": args.quick, "sizes": args.sizes,
                             "threads": args.threads or "torch default", "ours_options": args.ours_options,
                             "trl_one_pass": args.trl_one_pass,
                             "steps_21m": args.steps, "rounds_21m": args.rounds, "prompts": PROMPTS,
                             "settings": COMMON, "workloads": WORKLOADS}
    models = {w: _trainer_models.build_model(WORKLOADS[w]["model"], force=args.rebuild_models) for w in args.sizes}
    pythons = setup_peers(args)
    with tempfile.TemporaryDirectory(prefix="mrgrpo-trainer-bench-") as tmp:
        raw = run_all(args, pythons, models, Path(tmp))
        prof = profile_ours(args, models, Path(tmp))
    runs = merge_rounds(raw)
    results = {"meta": meta, "models": models,
               "peers": {LABEL[k]: {"python": str(py) if py else None, "note": note}
                         for k, (py, note) in pythons.items()},
               "runs": runs, "targets": targets(runs), "profile": prof, "raw_runs": raw}
    print_report(results, args.markdown)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nraw numbers: {args.json}")
    return 1 if any(r["impl"] == "ours" and "error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
