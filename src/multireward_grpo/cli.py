"""The ``multireward-grpo`` command line.

Each subcommand is a ``(name, help, add_arguments, run)`` entry in
``_COMMANDS``; ``run(args) -> int`` is the exit status. Heavy modules are
imported inside ``run`` so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, NamedTuple, Sequence


class _Command(NamedTuple):
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")


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
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="multireward-grpo",
        description=(
            "Multi-reward GRPO: advantage estimators (AN, NA, conditioned), the "
            "theory harness for the gradient-MSE law, and a LoRA trainer."
        ),
    )
    parser.add_argument("-V", "--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in _COMMANDS:
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(child)
        child.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``multireward-grpo`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        return _run_version(args)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        # Input problems get one readable line, not a traceback.
        print(f"multireward-grpo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
