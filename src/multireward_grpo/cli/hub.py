"""CLI subcommands for the Hugging Face Hub: push (an adapter or a rollout corpus) and pull.

The token comes from ``HF_TOKEN`` or the Hub login (``hf auth login``); there
is no ``--token`` flag, so it never lands in the shell history or the process
list. It is never printed.
"""

from __future__ import annotations

import argparse
import sys

from multireward_grpo.cli.common import integer, weight_list

_TOKEN_HELP = "the token comes from HF_TOKEN or `hf auth login`; a --dry-run needs none"


def _add_common_push_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--repo-id", required=True, metavar="NAMESPACE/NAME",
                        help=f"the {what} repo on the Hub, e.g. your-name/my-{'adapter' if what == 'model' else 'rollouts'}; "
                             "created when missing")
    parser.add_argument("--private", action="store_true",
                        help="create the repo private (default public; an existing repo keeps its visibility)")
    parser.add_argument("--dry-run", action="store_true",
                        help="write the exact folder that would be uploaded, print its path and upload nothing")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="where to write that folder (new or empty; default a temporary folder, deleted after "
                             "a real upload)")
    parser.add_argument("--license", default=None, metavar="ID",
                        help="Hub license id of the card (default apache-2.0 for adapters, the license of Qwen2.5 "
                             "and SmolLM2, and cc-by-4.0 for datasets; use your base model's)")
    parser.add_argument("--tag", dest="tags", action="append", default=[], metavar="TAG",
                        help="extra card tag; repeatable")


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = f"Push a trained adapter or a rollout corpus to the Hugging Face Hub ({_TOKEN_HELP})."
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    adapter = kinds.add_parser("adapter", help="a LoRA adapter folder (e.g. grpo_out/final) with a generated model card",
                               description="Push a LoRA adapter with a generated model card (YAML front matter, "
                                           "mode, weights, conditioning, every hyperparameter, training curves, the "
                                           f"held-out evaluation, how to load it); {_TOKEN_HELP}.")
    adapter.add_argument("adapter_dir", metavar="DIR", help="the adapter folder a training run wrote, e.g. grpo_out/final")
    _add_common_push_flags(adapter, "model")
    adapter.add_argument("--base-model", default=None, metavar="ID",
                         help="Hub id of the base model (needed when the adapter records a local folder; "
                              "adapter_config.json in the upload is set to it)")
    adapter.add_argument("--eval", dest="eval_results", default=None, metavar="FILE",
                         help="held-out evaluation for the card: `multireward-grpo eval --json` output or a run's "
                              "eval.jsonl (default: eval.jsonl next to the adapter folder, when there)")
    adapter.add_argument("--run-dir", default=None, metavar="DIR",
                         help="the run's output folder with history.jsonl, eval.jsonl, curves.png (default: the "
                              "adapter folder's parent)")
    corpus = kinds.add_parser("corpus", help="a rollout corpus (.jsonl/.parquet) as a dataset with a Theorem 3 card",
                              description="Push a rollout corpus as a dataset: data/train.parquet in the long format "
                                          f"and a card with the Theorem 3 summary table; {_TOKEN_HELP}.")
    corpus.add_argument("corpus_file", metavar="FILE", help="a corpus or long table (.jsonl or .parquet)")
    _add_common_push_flags(corpus, "dataset")
    corpus.add_argument("--weights", type=weight_list, default=None,
                        help="weights of the card's Theorem 3 check, one per channel (default 1 each)")
    corpus.add_argument("--nan-policy", choices=("raise", "propagate", "omit"), default="raise",
                        help="a missing reward in the corpus: raise (refuse the file, naming the row) or keep it as "
                             "NaN (propagate/omit) (default raise)")
    corpus.add_argument("--n-resamples", type=integer(0), default=1000,
                        help="bootstrap resamples of the Theorem 3 intervals; 0 leaves them out (default 1000)")


def add_pull_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo_id", metavar="NAMESPACE/NAME", help="the Hub repo to download")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to download into (created)")
    parser.add_argument("--dataset", action="store_true", help="the repo is a dataset (default: a model / adapter)")
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")


def run_push(args: argparse.Namespace) -> int:
    from multireward_grpo import hub

    common = {"dry_run": args.dry_run, "private": args.private, "out_dir": args.out, "tags": list(args.tags)}
    if args.license is not None:
        common["license"] = args.license
    if args.kind == "adapter":
        result = hub.push_adapter(args.adapter_dir, args.repo_id, base_model=args.base_model,
                                  eval_results=args.eval_results, run_dir=args.run_dir, **common)
    else:
        result = hub.push_corpus(args.corpus_file, args.repo_id, weights=args.weights, n_resamples=args.n_resamples,
                                 nan_policy=args.nan_policy, **common)
    if result.dry_run:
        print(f"dry run: {len(result.files)} files would be uploaded to the {result.repo_type} repo {result.repo_id}: "
              + ", ".join(result.files), file=sys.stderr)
        print(result.folder)
        return 0
    print(f"pushed {len(result.files)} files to {result.url or result.repo_id}")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    from multireward_grpo import hub

    path = hub.pull(args.repo_id, args.out, repo_type="dataset" if args.dataset else "model", revision=args.revision)
    print(path)
    return 0
