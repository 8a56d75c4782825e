"""The GPU section of trainer_bench.py: ours vs TRL on random-weight Qwen2.5 architectures on CUDA.

Workloads (``GPU_WORKLOADS``): the Qwen2.5-0.5B and Qwen2.5-1.5B shapes (from
their public ``config.json``; random weights, nothing downloaded), bfloat16,
LoRA r=16 on q/k/v/o, P=8 prompts x m=8 completions, 256 new tokens,
prompts of about 200 tokens, KL 0.05, HF ``generate`` for both trainers.
``--tiny`` runs the same code path with a 2-layer Qwen2 on CPU in float32
(a smoke test: its times mean nothing).

Measured per trainer (see ``_trainer_gpu_worker``): step time, generation
tokens/s, training tokens/s and the model FLOPs utilization (MFU) of the
update, and the peak GPU memory.

FLOPs of the update (``update_flops``). Per token, a forward pass costs
``2 N + 2 n_layer n_ctx d_model`` (Kaplan et al. 2020, "Scaling Laws for
Neural Language Models", Table 1: ``N`` the non-embedding parameters, the
second term the attention scores), plus ``2 d_model V`` for the output
layer where logits are computed (both trainers compute them for completion
tokens only). A full fine-tuning backward pass costs twice the forward (input
and weight gradients); with LoRA the frozen weights need no weight gradients,
so the backward costs about one forward (LoRA's own matmuls are <1% at r=16).
The update of one step is then: the reference pass (one forward, KL > 0), the
policy's forward and its backward: 3 forwards with LoRA (~6N per token), 4
with full fine-tuning. Every sequence's whole prompt is counted, for both
trainers (the work of the plain computation): ours' shared prompt cache runs
each prompt once per group, so its MFU can count work it did not redo.
The update time is the step interval minus the step's generation time (it
also holds reward scoring and logging, which are cheap here). MFU = update
FLOPs / (update time x the device's peak dense bfloat16 FLOP/s, ``PEAK_BF16``).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_trainer_gpu_worker.py"
TOKENIZER_DIR = HERE / ".models" / "bench-tokenizer"

# Public config.json of Qwen/Qwen2.5-0.5B and Qwen/Qwen2.5-1.5B (both tie the embeddings).
QWEN25 = {
    "0.5b": {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
             "intermediate_size": 4864, "vocab_size": 151936, "max_position_embeddings": 32768,
             "rope_theta": 1000000.0, "rms_norm_eps": 1e-6},
    "1.5b": {"hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
             "intermediate_size": 8960, "vocab_size": 151936, "max_position_embeddings": 32768,
             "rope_theta": 1000000.0, "rms_norm_eps": 1e-6},
}
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128, "max_position_embeddings": 1024}
GPU_WORKLOADS = {
    "0.5b": {"arch": QWEN25["0.5b"], "P": 8, "m": 8, "max_new_tokens": 256, "prompt_tokens": 200},
    "1.5b": {"arch": QWEN25["1.5b"], "P": 8, "m": 8, "max_new_tokens": 256, "prompt_tokens": 200},
    "tiny": {"arch": TINY, "P": 2, "m": 4, "max_new_tokens": 8, "prompt_tokens": 40},
}
# Peak dense (no sparsity) bfloat16 tensor-core FLOP/s, from NVIDIA's datasheets (SXM parts unless named).
PEAK_BF16 = {"H200": 989.4e12, "H100 PCIe": 756e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362.05e12,
             "L4": 121e12, "A10G": 70e12}
IMPLS = ("ours", "trl")
GPU_SETTINGS = {"micro_batch": 8, "dtype": "bfloat16"}


def peak_flops(device_name: str) -> float | None:
    """Peak dense bf16 FLOP/s of ``device_name`` (longest matching key of ``PEAK_BF16``), or None."""
    keys = [k for k in PEAK_BF16 if all(part in device_name for part in k.split())]
    return PEAK_BF16[max(keys, key=len)] if keys else None


def forward_flops(shape: dict, *, sequences: int, prompt_tokens: int, new_tokens: int) -> float:
    """FLOPs of one forward pass over ``sequences`` rows (Kaplan et al. 2020, Table 1, plus the output layer).

    ``prompt_tokens`` and ``new_tokens`` are totals over the rows; logits are
    computed for the completion tokens only.
    """
    tokens = prompt_tokens + new_tokens
    n_ctx = tokens / max(sequences, 1)  # mean sequence length
    per_token = 2 * shape["non_embedding_parameters"] + 2 * shape["n_layers"] * n_ctx * shape["hidden_size"]
    return tokens * per_token + new_tokens * 2 * shape["hidden_size"] * shape["vocab_size"]


def update_flops(shape: dict, *, sequences: int, prompt_tokens: int, new_tokens: int, lora: bool = True,
                 reference: bool = True) -> float:
    """FLOPs of one update: reference forward (when ``reference``) + policy forward + backward (1x fwd with LoRA)."""
    forwards = (1 if reference else 0) + 1 + (1 if lora else 2)
    return forwards * forward_flops(shape, sequences=sequences, prompt_tokens=prompt_tokens, new_tokens=new_tokens)


def gpu_prompts(tokenizer, n: int, target_tokens: int, *, seed: int = 0) -> list[str]:
    """``n`` user messages of ``target_tokens`` +- 10% tokens each (the message text alone), English words.

    Deterministic for a given ``seed``; lengths differ between prompts, so batches are left-padded.
    """
    import _trainer_models

    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        goal = round(target_tokens * rng.uniform(0.9, 1.1))
        words: list[str] = []
        while len(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]) < goal:
            words.append(rng.choice(_trainer_models.ENGLISH))
        prompts.append(" ".join(words))
    return prompts


def ensure_tokenizer(log=print) -> Path:
    """The benchmark tokenizer saved once under ``.models/bench-tokenizer`` (it takes a few seconds to train)."""
    if not (TOKENIZER_DIR / "tokenizer.json").exists():
        import _trainer_models

        log(f"[gpu] training the benchmark tokenizer into {TOKENIZER_DIR} ...")
        TOKENIZER_DIR.mkdir(parents=True, exist_ok=True)
        _trainer_models.make_tokenizer().save_pretrained(TOKENIZER_DIR)
    return TOKENIZER_DIR


def run_job(job: dict, workdir: Path, timeout: float) -> dict:
    """One worker process (this interpreter, environment kept: ours and TRL are both installed here)."""
    tag = f"{job['workload']}-{job['impl']}"
    job_path, result_path = workdir / f"{tag}.job.json", workdir / f"{tag}.result.json"
    job_path.write_text(json.dumps(job))
    env = dict(os.environ, PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error", TQDM_DISABLE="1")
    from _trainer_peers import call_worker

    return call_worker([sys.executable, str(WORKER), str(job_path), str(result_path)], job, result_path,
                       env=env, timeout=timeout)


def trl_available() -> str | None:
    """None when TRL imports in this interpreter, else why not."""
    proc = subprocess.run([sys.executable, "-c", "import trl, datasets"], capture_output=True, text=True, check=False)
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["import failed"])[-1]


def device_info(device: str) -> dict:
    """Device name, capability, CUDA version and the versions of the stack (for the JSON and the README)."""
    from importlib import metadata

    import torch

    info = {"device": device, "python": sys.version.split()[0]}
    for name in ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "multireward-grpo"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = None
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info |= {"device_name": props.name, "capability": f"{props.major}.{props.minor}",
                 "memory_gb": round(props.total_memory / 1e9, 1), "cuda": torch.version.cuda,
                 "peak_bf16_flops": peak_flops(props.name)}
    else:
        info |= {"device_name": "cpu", "peak_bf16_flops": None}
    return info


def make_job(workload: str, impl: str, *, device: str, dtype: str, prompts: list[str], steps: int, out_dir: Path,
             settings: dict, micro_batch: int, ours_options: dict | None = None, profile_dir: Path | None = None):
    w = GPU_WORKLOADS[workload]
    job = settings | {"workload": workload, "impl": impl, "arch": w["arch"], "tokenizer": str(TOKENIZER_DIR),
                      "device": device, "dtype": dtype, "prompts": prompts, "P": w["P"], "m": w["m"],
                      "max_new_tokens": w["max_new_tokens"], "n_steps": steps, "micro_batch": micro_batch,
                      "out_dir": str(out_dir / f"{workload}-{impl}"), "model": workload}
    if ours_options:
        job["ours_options"] = ours_options
    if profile_dir is not None:
        job["profile_dir"] = str(profile_dir)
    return job


def _timed_run(workload: str, impl: str, args, common: dict, workdir: Path, profile_dir: Path | None) -> dict:
    w = GPU_WORKLOADS[workload]
    job = make_job(workload, impl, steps=args.gpu_steps, ours_options=args.ours_options if impl == "ours" else None,
                   profile_dir=profile_dir, **common)
    print(f"[gpu] {workload} {impl}: {args.gpu_steps} steps of P={w['P']} x m={w['m']} x {w['max_new_tokens']} "
          "tokens ...", flush=True)
    started = time.perf_counter()
    res = run_job(job, workdir, args.gpu_timeout)
    res |= {"workload": workload, "impl": impl, "wall_s": time.perf_counter() - started}
    if "error" in res:
        print(f"[gpu] {workload} {impl}: FAILED {res['error']}", flush=True)
    return res


def summarize(run: dict, *, peak: float | None, kl: bool) -> dict:
    """Medians over the timed intervals: step s, generation tokens/s, training tokens/s, update MFU."""
    gens = run["generation_per_step"][1:]  # the generation of the steps that end a timed interval
    updates = run["update_s_per_interval"]
    gen_tok_s = [g["new_tokens"] / g["gen_s"] for g in gens if g["gen_s"] > 0]
    # The update of interval k trained on step k's rollouts: use that step's token counts.
    trained = run["generation_per_step"][:-1]
    train_tok_s = [(g["prompt_tokens"] + g["new_tokens"]) / u for g, u in zip(trained, updates) if u > 0]
    out = {"step_s": run["step_median_s"], "gen_s": statistics.median(run["gen_s_per_interval"]),
           "update_s": statistics.median(updates), "gen_tokens_per_s": statistics.median(gen_tok_s),
           "train_tokens_per_s": statistics.median(train_tok_s), "peak_memory_mb": run.get("peak_memory_mb"),
           "gen_calls_per_step": trained[0]["calls"] if trained else None}
    if peak:
        mfu = [update_flops(run["model"], sequences=g["rows"], prompt_tokens=g["prompt_tokens"],
                            new_tokens=g["new_tokens"], reference=kl) / (u * peak) for g, u in zip(trained, updates)]
        out["update_mfu"] = statistics.median(mfu)
    return out


def gpu_targets(summaries: dict) -> list[dict]:
    """The issue's targets: ours' step time <= TRL's and peak memory no higher on both configs; MFU >= 35% on 1.5b."""
    out = []

    def add(name, ok, detail):
        out.append({"name": name, "status": "N/A" if ok is None else ("MET" if ok else "MISSED"), "detail": detail})

    for workload in ("0.5b", "1.5b"):
        ours, trl = summaries.get((workload, "ours")), summaries.get((workload, "trl"))
        if ours and trl:
            add(f"{workload}: ours step time <= TRL's", ours["step_s"] <= trl["step_s"],
                f"ours {ours['step_s']:.2f} s vs TRL {trl['step_s']:.2f} s")
            if ours["peak_memory_mb"] and trl["peak_memory_mb"]:
                add(f"{workload}: ours peak memory <= TRL's", ours["peak_memory_mb"] <= trl["peak_memory_mb"],
                    f"ours {ours['peak_memory_mb']:,.0f} MB vs TRL {trl['peak_memory_mb']:,.0f} MB")
        elif ours or trl:
            add(f"{workload}: ours vs TRL", None, "ours or TRL did not run")
    ours = summaries.get(("1.5b", "ours"))
    if ours and ours.get("update_mfu") is not None:
        add("1.5b: ours update MFU >= 35%", ours["update_mfu"] >= 0.35, f"{100 * ours['update_mfu']:.1f}%")
    return out


HEADER = ["workload", "trainer", "step s", "gen s", "update s", "gen tok/s", "train tok/s", "update MFU %",
          "peak GPU MB", "gen calls"]


def table(runs: list[dict], summaries: dict) -> list[list[str]]:
    rows = []
    for r in runs:
        s = summaries.get((r["workload"], r["impl"]))
        if s is None:
            rows.append([r["workload"], r["impl"], "FAILED"] + ["-"] * (len(HEADER) - 3))
            continue
        rows.append([r["workload"], r["impl"], f"{s['step_s']:.2f}", f"{s['gen_s']:.2f}", f"{s['update_s']:.2f}",
                     f"{s['gen_tokens_per_s']:,.0f}", f"{s['train_tokens_per_s']:,.0f}",
                     f"{100 * s['update_mfu']:.1f}" if s.get("update_mfu") is not None else "-",
                     f"{s['peak_memory_mb']:,.0f}" if s.get("peak_memory_mb") else "-",
                     str(s["gen_calls_per_step"])])
    return rows


def print_rows(rows: list[list[str]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(HEADER)]
    print("  ".join(h.rjust(w) for h, w in zip(HEADER, widths)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    print("\n| " + " | ".join(HEADER) + " |\n|" + "---:|" * len(HEADER))
    for r in rows:
        print("| " + " | ".join(r) + " |")


def _device(args) -> str | None:
    """The device of the run, or None (after saying why) when it cannot run here."""
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("--device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return None
    if device == "cpu" and not args.tiny:
        print("the GPU section needs CUDA (torch.cuda.is_available() is False); --tiny runs its code path on CPU "
              "with a 2-layer model", file=sys.stderr)
        return None
    return device


def _run_all(args, settings: dict, meta: dict, impls: list[str], save) -> tuple[list, dict, dict]:
    """Every (workload, trainer) run in order; ``save(runs, summaries, profiles)`` after each."""
    import tempfile

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ensure_tokenizer())
    workloads = list(meta["workloads"])
    runs, summaries, profiles = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="mrgrpo-gpu-bench-") as tmp:
        for workload in workloads:
            prompts = gpu_prompts(tok, GPU_WORKLOADS[workload]["P"], GPU_WORKLOADS[workload]["prompt_tokens"])
            common = {"device": meta["device"], "dtype": meta["dtype"], "prompts": prompts, "out_dir": Path(tmp),
                      "settings": settings, "micro_batch": meta["micro_batch"]}
            for impl in impls:
                profile = args.profile_dir is not None and impl == "ours" and workload == workloads[-1]
                res = _timed_run(workload, impl, args, common, Path(tmp),
                                 profile_dir=Path(args.profile_dir) / workload if profile else None)
                runs.append(res)
                if "error" not in res:
                    summaries[workload, impl] = summarize(res, peak=meta.get("peak_bf16_flops"),
                                                          kl=settings["kl_coef"] > 0)
                    print(f"[gpu] {workload} {impl}: step {summaries[workload, impl]['step_s']:.2f} s "
                          f"({res['wall_s']:.0f} s wall)", flush=True)
                    if res.get("profile"):
                        profiles[workload] = res["profile"]
                save(runs, summaries, profiles)
    return runs, summaries, profiles


def _print_report(results: dict, summaries: dict) -> None:
    meta = results["meta"]
    print(f"\nGPU section: {meta['device_name']}, {meta['dtype']}, torch {meta['torch']}, transformers "
          f"{meta['transformers']}, peft {meta['peft']}, trl {meta['trl']}, ours {meta['multireward-grpo']}\n")
    print_rows(table(results["runs"], summaries))
    print("\nTargets:")
    for t in results["targets"]:
        print(f"  {t['status']:<6} {t['name']}: {t['detail']}")
    for workload, prof in results["profiles"].items():
        phases = prof.get("phases_s") or {}
        print(f"\nours' last step ({workload}), seconds per phase: "
              + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))


def main(args, settings: dict) -> int:
    """Run the GPU section (or its ``--tiny`` smoke test); writes ``args.json``. 0 ok, 1 a run of ours failed,
    2 no CUDA (without ``--tiny``)."""
    device = _device(args)
    if device is None:
        return 2
    info = device_info(device)
    print(f"[gpu] device {info['device_name']}, torch {info['torch']}, transformers {info['transformers']}, "
          f"peft {info['peft']}, trl {info['trl']}, ours {info['multireward-grpo']}", flush=True)
    trl_missing = None if args.skip_trl else trl_available()
    if trl_missing:
        print(f"[gpu] TRL unavailable ({trl_missing}): ours only", flush=True)
    impls = ["ours"] + ([] if args.skip_trl or trl_missing else ["trl"])
    workloads = ["tiny"] if args.tiny else args.gpu_sizes
    meta = info | {"settings": settings, "dtype": "float32" if device == "cpu" else GPU_SETTINGS["dtype"],
                   "micro_batch": args.gpu_micro or (4 if args.tiny else GPU_SETTINGS["micro_batch"]),
                   "steps": args.gpu_steps, "workloads": {w: GPU_WORKLOADS[w] for w in workloads},
                   "ours_options": args.ours_options, "trl_missing": trl_missing,
                   "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}

    def save(runs, summaries, profiles) -> dict:  # after every run: a run stopped by a time limit keeps the rest
        results = {"meta": meta, "runs": runs,
                   "summaries": [{"workload": w, "impl": i, **s} for (w, i), s in summaries.items()],
                   "targets": gpu_targets(summaries), "profiles": profiles}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        return results

    runs, summaries, profiles = _run_all(args, settings, meta, impls, save)
    _print_report(save(runs, summaries, profiles), summaries)
    print(f"\nraw numbers: {args.json}")
    return 1 if any(r["impl"] == "ours" and "error" in r for r in runs) else 0
