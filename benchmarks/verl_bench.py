#!/usr/bin/env python
"""Our estimators inside verl vs verl's own ``grpo`` and ``gdpo`` advantage step.

Every row is one call of verl 0.9.1's ``ray_trainer.compute_advantage`` on the
same ``DataProto`` (verl's own code path: it looks the estimator up by name),
with our estimators registered and the hook applied
(:mod:`multireward_grpo.integrations.verl`). Workload: 2,048 rollouts (256
prompts x m=8), R=3 reward components in ``non_tensor_batch`` (uuid string
uids, as verl makes them), 256 response tokens with random response lengths.
Reports the best of ``--repeats`` rounds (each round times every row once,
so load on a shared machine hits all rows alike) after one warm-up, the ratio to verl's
``grpo`` (a single reward), and checks that ``mr_gdpo`` with verl's
conventions equals verl's ``gdpo``. The target (under 2 ms for ours, where
verl's GRPO takes ~1.7 ms) prints MET / MISSED and never changes the exit
status; a failed equality check exits 1.

Needs verl on CPU: ``pip install "multireward-grpo[verl]" && pip install
--no-deps verl==0.9.1 transferqueue==0.1.11``. Runs on CUDA when available
(``--device cpu`` forces the CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
import warnings

import numpy as np
from _timing import time_call

TARGET_MS = 2.0
KEYS = ("format", "accuracy", "style")
WEIGHTS = [1.0, 0.5, 2.0]


def build_batch(DataProto, torch, n_prompts: int, m: int, n_tokens: int, device: str, seed: int = 0):
    """verl's layout before the advantage step: token rewards, response mask, uids, components."""
    rng = np.random.default_rng(seed)
    n = n_prompts * m
    lengths = torch.as_tensor(rng.integers(1, n_tokens + 1, n), device=device)
    response_mask = (torch.arange(n_tokens, device=device)[None, :] < lengths[:, None]).long()
    components = {
        "format": rng.integers(0, 2, n).astype(float),
        "accuracy": rng.normal(size=n),
        "style": rng.integers(0, 4, n).astype(float),
    }
    score = sum(w * components[key] for w, key in zip(WEIGHTS, KEYS))
    token_level_rewards = torch.zeros(n, n_tokens, device=device)
    token_level_rewards[torch.arange(n, device=device), lengths - 1] = torch.as_tensor(score, dtype=torch.float32, device=device)
    prompt_len = 8
    tensors = {
        "token_level_rewards": token_level_rewards,
        "response_mask": response_mask,
        "prompts": torch.ones(n, prompt_len, dtype=torch.long, device=device),
        "attention_mask": torch.cat([torch.ones(n, prompt_len, dtype=torch.long, device=device), response_mask], dim=1),
    }
    uids = np.repeat(np.array([str(uuid.UUID(int=int(rng.integers(2**62)))) for _ in range(n_prompts)], dtype=object), m)
    non_tensors = {"uid": uids, **{key: np.array(list(values), dtype=object) for key, values in components.items()}}
    return DataProto.from_dict(tensors=tensors, non_tensors=non_tensors)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=256, help="groups per batch (default 256: 2,048 rollouts)")
    parser.add_argument("--m", type=int, default=8, help="rollouts per group (default 8)")
    parser.add_argument("--tokens", type=int, default=256, help="response tokens (default 256)")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls after one warm-up; best reported (default 50)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: verl runs this step in a one-CPU Ray actor, and on a "
                             "loaded machine extra threads mostly wait on each other)")
    args = parser.parse_args(argv)

    warnings.simplefilter("ignore")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        import torch
        from omegaconf import OmegaConf
        from verl import DataProto
        from verl.trainer.ppo import ray_trainer

        from multireward_grpo.integrations import verl as mr_verl
    except ImportError as exc:
        print(f"cannot import verl or this checkout: {exc}", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(max(1, args.threads))
    mr_verl.register()
    handle = mr_verl.patch_compute_advantage()

    data = build_batch(DataProto, torch, args.prompts, args.m, args.tokens, device)
    base = {"gdpo_reward_keys": list(KEYS), "gdpo_reward_weights": WEIGHTS, "norm_adv_by_std_in_grpo": True}
    verl_conventions = {"ddof": 1, "eps": 1e-6, "whiten": "tokens"}
    rows = [
        ("verl grpo (one reward)", "grpo", {}),
        ("verl grpo_vectorized (one reward)", "grpo_vectorized", {}),
        ("verl gdpo", "gdpo", {}),
        ("ours mr_na", "mr_na", {}),
        ("ours mr_an", "mr_an", {}),
        ("ours mr_na + zero_fill", "mr_na", {"conditioning": [{"gate": "format", "target": "accuracy"}]}),
        ("ours mr_gdpo", "mr_gdpo", {}),
        ("ours mr_gdpo, verl's conventions", "mr_gdpo", verl_conventions),
    ]

    def make_call(name, options):
        config = OmegaConf.create({**base, **({"multireward": options} if options else {})})

        def call():
            out = ray_trainer.compute_advantage(data, adv_estimator=name, config=config)
            if device != "cpu":
                torch.cuda.synchronize()
            return out.batch["advantages"].clone()

        return call

    n = args.prompts * args.m
    print(f"verl compute_advantage, {n} rollouts ({args.prompts} x m={args.m}), R={len(KEYS)}, {args.tokens} tokens, {device}, best of {args.repeats}")
    calls = {label: make_call(name, options) for label, name, options in rows}
    outputs = {label: call() for label, call in calls.items()}  # warm-up, and the outputs for the check
    # Rounds interleave the rows, so load on a shared machine hits them alike and the ratios hold.
    best = {label: float("inf") for label in calls}
    for _ in range(max(1, args.repeats)):
        for label, call in calls.items():
            _, (seconds,) = time_call(call, 1, warmup=False)
            best[label] = min(best[label], seconds)
    handle.undo()
    results = {label: (outputs[label], [best[label]]) for label in calls}
    grpo_ms = min(results["verl grpo (one reward)"][1]) * 1e3
    print(f"{'estimator':36s} {'ms':>8s} {'x verl grpo':>12s}")
    for label, (_, times) in results.items():
        ms = min(times) * 1e3
        print(f"{label:36s} {ms:8.3f} {ms / grpo_ms:12.2f}")

    worst_ours = max(min(times) * 1e3 for label, (_, times) in results.items() if label.startswith("ours"))
    print(f"target: ours under {TARGET_MS} ms per batch: {'MET' if worst_ours < TARGET_MS else 'MISSED'} (slowest of ours {worst_ours:.3f} ms)")
    reference = outputs["verl gdpo"]
    ours = outputs["ours mr_gdpo, verl's conventions"]
    gap = float((ours - reference).abs().max())
    ok = gap <= 1e-4
    print(f"check: mr_gdpo (ddof=1, eps=1e-6, whiten=tokens) vs verl gdpo, max |diff| = {gap:.2e}: {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
