"""``multireward-grpo runpod run`` and ``multireward-grpo runpod cleanup`` (the runpod extra).

``run`` rents a GPU pod, runs one shell command there over SSH, copies a
results folder back and deletes the pod, whatever happens. Its exit status is
the command's own when it ran, 124 when the wall-clock cap stopped it (as
``timeout`` does), 1 when it could not run (no GPU rented, the pod never
became reachable), 2 on bad input and 130 on Ctrl-C (after the pod is deleted).
``cleanup`` deletes the pods recorded by runs whose process died.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from multireward_grpo.cli.common import number

CAP_EXIT = 124  # the exit status timeout(1) uses for a command it stopped


def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    from multireward_grpo.runpod import DEFAULT_GPU_TYPES, DEFAULT_IMAGE

    parser.add_argument("cmd", metavar="CMD", help="the shell command line to run on the pod (quote it)")
    parser.add_argument("--cap", type=number(0, low_open=True), default=1800.0, metavar="S",
                        help="wall-clock cap in seconds on the whole billed time: creation, start-up, the command "
                             "and the copy; a command still running then is stopped (default: 1800)")
    parser.add_argument("--gpu-type", action="append", dest="gpu_types", metavar="T",
                        help="a RunPod GPU type id; repeat in order of preference, the next is tried when one "
                             f"cannot be rented (default: {', '.join(DEFAULT_GPU_TYPES)})")
    parser.add_argument("--image", default=DEFAULT_IMAGE, metavar="I",
                        help=f"container image with an SSH server that trusts PUBLIC_KEY (default: {DEFAULT_IMAGE})")
    parser.add_argument("--env", action="append", type=_env_pair, default=[], metavar="K=V",
                        help="export K=V in the command's session; repeatable. Sent over SSH, never on a command "
                             "line; HF_TOKEN, HUGGING_FACE_HUB_TOKEN and WANDB_API_KEY are forwarded when set")
    parser.add_argument("--results-dir", metavar="D",
                        help="folder on the pod (relative to --workdir) copied back after the command, even a failed one")
    parser.add_argument("--local-results-dir", metavar="P",
                        help="where the results land; must not exist (default: runpod_results/POD_ID)")
    parser.add_argument("--workdir", metavar="W", help="folder on the pod the command starts in (default: its home)")
    parser.add_argument("--cloud", choices=("SECURE", "COMMUNITY"), default="SECURE",
                        help="RunPod cloud to rent from (default: SECURE)")
    parser.add_argument("--gpu-count", type=_positive_int, default=1, metavar="N", help="GPUs per pod (default: 1)")
    parser.add_argument("--disk-gb", type=_positive_int, default=50, metavar="N",
                        help="container disk in GB (default: 50)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")


def _add_cleanup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all", action="store_true",
                        help="also delete pods recorded by runs that are still going (they will fail)")


def add_runpod_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``run`` and ``cleanup`` subcommands of ``runpod``."""
    sub = parser.add_subparsers(dest="runpod_command", metavar="ACTION")
    run = sub.add_parser("run", help="run a command on a new GPU pod, copy results back, delete the pod",
                         description=__doc__.split("\n\n")[1].replace("``", ""))
    _add_run_arguments(run)
    cleanup = sub.add_parser("cleanup", help="delete the pods left behind by runs whose process died",
                             description="Delete the pods recorded (in ~/.cache/multireward-grpo/runpod_pods.json, "
                                         "or under $XDG_CACHE_HOME) by runs whose process is gone.")
    _add_cleanup_arguments(cleanup)
    parser.set_defaults(_runpod_parser=parser)


def _print_result(result, as_json: bool) -> None:
    fields = dataclasses.asdict(result)
    fields["results_path"] = None if result.results_path is None else str(result.results_path)
    if as_json:
        json.dump(fields, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for name, value in fields.items():
        if isinstance(value, float):
            value = f"{value:.4f}" if name == "estimated_cost_usd" else f"{value:.2f}"
        print(f"{name:<20} {value}")


def _exit_status(result) -> int:
    if result.return_code is not None:
        return result.return_code
    return CAP_EXIT if result.cap_hit else 1


def run_runpod(args: argparse.Namespace) -> int:
    from multireward_grpo.runpod import DEFAULT_GPU_TYPES, RunPodClient

    if args.runpod_command is None:
        args._runpod_parser.print_help(sys.stderr)
        return 2
    client = RunPodClient()
    if args.runpod_command == "cleanup":
        settled = client.cleanup(include_live=args.all)
        print(f"deleted {len(settled)} recorded pod(s)" + (f": {', '.join(settled)}" if settled else ""))
        return 0
    result = client.run_command(
        args.cmd, wall_clock_cap=args.cap, gpu_types=args.gpu_types or DEFAULT_GPU_TYPES, image=args.image,
        env=dict(args.env), results_dir=args.results_dir, local_results_dir=args.local_results_dir,
        workdir=args.workdir, cloud_type=args.cloud, gpu_count=args.gpu_count, disk_gb=args.disk_gb,
    )
    _print_result(result, args.json)
    return _exit_status(result)
