"""The ``multireward-grpo`` command line.

- this module: the parser and the dispatcher (``main``);
- :mod:`~multireward_grpo.cli.common`: argument types, JSON output, progress bars;
- :mod:`~multireward_grpo.cli.theory`: ``thm3-check``, ``analyze``, ``prop1/2/4``;
- :mod:`~multireward_grpo.cli.train`: ``train`` and ``eval`` (imports torch only when run);
- :mod:`~multireward_grpo.cli.hub`: ``push`` and ``pull`` (the Hugging Face Hub).
- :mod:`~multireward_grpo.cli.runpod`: ``runpod run`` and ``runpod cleanup``.

Each subcommand is a ``(name, help, add_arguments, run)`` entry in
``_COMMANDS``; ``run(args) -> int`` is the exit status. Heavy modules are
imported inside ``run`` so ``--help`` stays instant.

Exit status: 0 success, 1 a check failed, 2 bad input (one line on stderr,
``multireward-grpo CMD: error: ...``, never a traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, NamedTuple, Sequence

from multireward_grpo.cli import theory as _theory
from multireward_grpo.cli.common import ArgumentParser, join_negative_values, unrecognized_message
from multireward_grpo.cli.common import add_json_flag as _add_json_flag


class _Command(NamedTuple):
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _run_version(args: argparse.Namespace) -> int:
    import multireward_grpo

    print(f"multireward-grpo {multireward_grpo.__version__}")
    return 0


def _run_estimators(args: argparse.Namespace) -> int:
    from multireward_grpo import list_estimators

    estimators = list_estimators()
    if args.json:
        print(json.dumps(estimators, indent=2))
        return 0
    width = max(len(name) for name in estimators)
    for name, description in estimators.items():
        print(f"{name:<{width}}  {description}")
    return 0


_COMMANDS: list[_Command] = [
    _Command("version", "print the installed version", _no_arguments, _run_version),
    _Command("estimators", "list the registered advantage estimators (modes)", _add_json_flag, _run_estimators),
    _Command("thm3-check", "simulate mock rollouts and check Theorem 3 (realized vs predicted gradient MSE); "
             "exits 1 when a ratio is outside its band", _theory.add_thm3_check_arguments, _theory.run_thm3_check),
    _Command("analyze", "check Theorem 3 on a saved corpus or a long-format rollout table (.jsonl/.parquet)",
             _theory.add_analyze_arguments, _theory.run_analyze),
    _Command("train", "train a LoRA adapter with multi-reward GRPO on a built-in task (needs the llm extra)",
             lambda p: _train().add_train_arguments(p), lambda a: _train().run_train(a)),
    _Command("eval", "compare the base model and trained adapters on a held-out set (needs the llm extra)",
             lambda p: _train().add_eval_arguments(p), lambda a: _train().run_eval(a)),
    _Command("push", "push a trained adapter or a rollout corpus to the Hugging Face Hub, with a generated card "
             "(--dry-run writes the upload folder only; needs the data extra)",
             lambda p: _hub().add_push_arguments(p), lambda a: _hub().run_push(a)),
    _Command("pull", "download an adapter or a dataset repo from the Hugging Face Hub into a folder",
             lambda p: _hub().add_pull_arguments(p), lambda a: _hub().run_pull(a)),
    _Command("runpod", "run a command on a RunPod cloud GPU (the pod is always deleted), or clean up pods left "
             "behind (runpod extra)", lambda p: _runpod().add_runpod_arguments(p), lambda a: _runpod().run_runpod(a)),
    _Command("prop1", "Prop 1: influence of each channel on AN/NA advantages, realized vs oracle",
             _theory.add_prop1_arguments, _theory.run_prop1),
    _Command("prop2", "Prop 2: number of distinct advantage values (resolution) of AN and NA on a level grid",
             _theory.add_prop2_arguments, _theory.run_prop2),
    _Command("prop4", "Prop 4: the bias conditioning removes, simulated vs closed form, over a gamma sweep",
             _theory.add_prop4_arguments, _theory.run_prop4),
]


def _train():
    from multireward_grpo.cli import train as _cli_train

    return _cli_train


def _hub():
    from multireward_grpo.cli import hub as _cli_hub

    return _cli_hub


def _runpod():
    from multireward_grpo.cli import runpod as _cli_runpod

    return _cli_runpod


def build_parser() -> ArgumentParser:
    """The argument parser with every subcommand."""
    parser = ArgumentParser(
        prog="multireward-grpo",
        description=(
            "Multi-reward GRPO: advantage estimators (AN, NA, conditioned), the "
            "theory harness for the gradient-MSE law, and a LoRA trainer."
        ),
    )
    parser.add_argument("-V", "--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.subcommands = {}
    for command in _COMMANDS:
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(child)
        child.set_defaults(_run=command.run)
        parser.subcommands[command.name] = child
    return parser


def _parse(parser: ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    args, extras = parser.parse_known_args(join_negative_values(parser, argv))
    if extras:
        command = parser.subcommands.get(getattr(args, "command", None) or "", parser)
        command.error(unrecognized_message(command, extras))
    return args


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror and err.filename:
        return f"{err.strerror}: {err.filename}"
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``multireward-grpo`` console script.

    Bad input (ValueError, TypeError, ImportError, OSError such as a missing,
    unreadable or directory path, a JSON syntax error) exits 2 with one line
    on stderr; other exceptions are bugs and keep their traceback.
    """
    parser = build_parser()
    args = _parse(parser, argv)
    if args.version:
        return _run_version(args)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:  # what was saved has been said already (train: the checkpoint to resume from)
        print(f"multireward-grpo {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError) as err:  # json.JSONDecodeError is a ValueError
        print(f"multireward-grpo {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
