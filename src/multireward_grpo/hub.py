"""Publishing on the Hugging Face Hub: adapters with a model card, rollout corpora as datasets, adapters back.

- :func:`model_card` (pure text) and :func:`write_model_card` (into an adapter
  folder, with a training record; the trainer calls it through
  :func:`write_trainer_card` when it saves ``final/``, replacing peft's
  boilerplate ``README.md``);
- :func:`prepare_adapter_upload` / :func:`push_adapter`: the folder that goes
  to a model repo (the adapter, its tokenizer, the card, ``curves.png``);
- :func:`prepare_corpus_upload` / :func:`push_corpus`: a rollout corpus as a
  dataset repo (``data/train.parquet`` in the documented long format and a
  card with the Theorem 3 summary table);
- :func:`load_adapter`: an adapter from a Hub id or a folder on its base
  model; :func:`pull`: a repo downloaded into a folder.

Tokens
------
A token comes from the ``token`` argument, else the ``HF_TOKEN`` environment
variable, else the Hub's own login (``hf auth login``, read with
``huggingface_hub.get_token``). It is never printed, logged, stored in a
result or put in an exception message: errors raised by the Hub client are
re-raised as :class:`HubError` with any occurrence of the token replaced by
``***``. A dry run needs no token and touches no network.

Upload folders
--------------
``prepare_*`` write the exact folder that would be uploaded (a new folder, or
an empty one given as ``out_dir``); ``push_*(..., dry_run=True)`` stop there
and return its path. A real push uploads that folder and deletes it when it
was a temporary one.

huggingface_hub, PyYAML, torch, transformers and peft are imported inside
the functions that need them (``pip install "multireward-grpo[data]"``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from multireward_grpo._fileio import atomic_write, fsync_dir

__all__ = [
    "CARD_FILE",
    "DEFAULT_DATASET_LICENSE",
    "DEFAULT_LICENSE",
    "TRAINING_RECORD",
    "HubError",
    "PushResult",
    "dataset_card",
    "eval_table_rows",
    "load_adapter",
    "model_card",
    "prepare_adapter_upload",
    "prepare_corpus_upload",
    "pull",
    "push_adapter",
    "push_corpus",
    "read_training_record",
    "theorem3_results",
    "write_corpus_parquet",
    "write_model_card",
    "write_trainer_card",
]

CARD_FILE = "README.md"
TRAINING_RECORD = "multireward_grpo_training.json"
"""Written next to an adapter by :func:`write_model_card`: config, channel names and reward curves of the run."""
DEFAULT_LICENSE = "apache-2.0"
"""License of a pushed adapter unless told otherwise: the license of Qwen2.5 and SmolLM2; set your base model's."""
DEFAULT_DATASET_LICENSE = "cc-by-4.0"
"""License of a pushed rollout dataset unless told otherwise."""
ADAPTER_TAGS = ("grpo", "multi-reward", "multireward-grpo", "lora", "peft")
DATASET_TAGS = ("grpo", "multi-reward", "multireward-grpo", "rollouts", "reinforcement-learning")
PEFT_BOILERPLATE = "More Information Needed"
"""The phrase peft's generated ``README.md`` is full of; such a card is always replaced."""
CORPUS_DATA_FILE = "data/train.parquet"
TREND_FRACTION = 0.25
"""Share of the run's first and last steps compared in the card's reward trend."""
_DATA_EXTRA = 'pip install "multireward-grpo[data]"'
_NO_TOKEN = ("no Hugging Face token: pass token=..., set the HF_TOKEN environment variable, or log in once with "
             "`hf auth login` (a dry run needs none)")
_LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")
_HISTORY_KEYS = ("step", "mean_reward", "kl", "noise_factor")


class HubError(OSError):
    """A Hub call failed (network, permissions, a missing repo); the message never holds the token."""


@dataclass(frozen=True)
class PushResult:
    """What a push did.

    Attributes
    ----------
    repo_id : str
    repo_type : {"model", "dataset"}
    files : tuple of str
        The files of the upload folder, relative to it, sorted.
    dry_run : bool
        True when nothing was uploaded.
    folder : Path or None
        The upload folder; None after a real push from a temporary folder (it is deleted).
    url : str or None
        The repo's URL after a real push.
    """

    repo_id: str
    repo_type: str
    files: tuple
    dry_run: bool
    folder: Path | None = None
    url: str | None = None


# --------------------------------------------------------------------------- tokens, ids, errors


def _huggingface_hub():
    """The huggingface_hub module, or an ImportError naming the extra to install."""
    try:
        import huggingface_hub
        import huggingface_hub.utils  # noqa: F401  (validate_repo_id, HFValidationError)
    except ImportError:
        raise ImportError(f"the Hugging Face Hub helpers need huggingface_hub: {_DATA_EXTRA}") from None
    return huggingface_hub


def _resolve_token(token: str | None) -> str | None:
    """The token argument, else ``HF_TOKEN``, else the Hub login; None when there is none."""
    if token is not None:
        if not isinstance(token, str) or not token.strip():
            raise TypeError("token must be a non-empty string (or None to use HF_TOKEN or the Hub login)")
        return token.strip()
    env = os.environ.get("HF_TOKEN", "").strip()
    if env:
        return env
    return _huggingface_hub().get_token() or None


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def _hub_error(action: str, err: BaseException, token: str | None) -> HubError:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return HubError(f"{action} failed: {_scrub(first, token)}")


def _check_repo_id(repo_id: Any) -> str:
    if not isinstance(repo_id, str) or not repo_id.strip():
        raise TypeError(f"repo_id must be a Hub repo id such as 'your-name/my-adapter'; got {repo_id!r}")
    utils = _huggingface_hub().utils
    try:
        utils.validate_repo_id(repo_id)
    except utils.HFValidationError as err:
        raise ValueError(f"repo_id {repo_id!r} is not a Hub repo id ({_first_line(err)}); use 'your-name/repo-name' "
                         "(letters, digits, '-', '_', '.')") from None
    if repo_id.count("/") != 1:
        raise ValueError(f"repo_id {repo_id!r} has no namespace; use 'your-name/{repo_id}' (or an organization's)")
    return repo_id


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _check_license(license: Any) -> str:
    if not isinstance(license, str) or not _LICENSE_ID.match(license):
        raise ValueError(f"license {license!r} is not a Hub license id; use one such as 'apache-2.0', 'mit', "
                         "'cc-by-4.0' or 'other'")
    return license


def _check_tags(tags: Any, defaults: Sequence[str]) -> list[str]:
    if isinstance(tags, str) or not isinstance(tags, (list, tuple)):
        raise TypeError(f"tags must be a list of strings; got {tags!r}")
    for tag in tags:
        if not isinstance(tag, str) or not _TAG.match(tag):
            raise ValueError(f"tag {tag!r} is not a Hub tag; use letters, digits, '-', '_', '.' or ':'")
    return list(dict.fromkeys([*defaults, *tags]))


def _yaml_front_matter(meta: Mapping[str, Any]) -> str:
    try:
        import yaml
    except ImportError:
        raise ImportError(f"model and dataset cards need PyYAML: {_DATA_EXTRA}") from None
    return "---\n" + yaml.safe_dump(dict(meta), sort_keys=False, allow_unicode=True) + "---\n"


# --------------------------------------------------------------------------- model card


def _as_dict(config: Any) -> dict:
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    if isinstance(config, Mapping):
        return dict(config)
    if is_dataclass(config):
        from dataclasses import asdict

        return asdict(config)
    raise TypeError(f"config must be a GRPOConfig or a dict of its fields; got {type(config).__name__}")


def _cell(value: Any) -> str:
    text = json.dumps(list(value) if isinstance(value, tuple) else value, default=str)
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def _channel_names(channel_names: Sequence[str] | None, n: int) -> list[str]:
    from multireward_grpo._validate import channel_labels

    return channel_labels(channel_names, n, default="channel {}", counted_as="weights in the config")


def _training_section(cfg: dict, names: list[str], history: Sequence[Mapping] | None) -> list[str]:
    from multireward_grpo.advantage import list_estimators

    mode = str(cfg.get("mode"))
    weights = ", ".join(f"{n} {w:g}" for n, w in zip(names, cfg.get("weights", ())))
    rules = cfg.get("conditioning") or []
    lines = ["## Training", "", "| | |", "|---|---|",
             f"| advantage estimator | `{mode}`: {list_estimators().get(mode, 'custom estimator')} |",
             f"| reward channels and weights | {weights} |",
             f"| conditioning | {', '.join(f'`{r}`' for r in rules) if rules else 'none'} |",
             f"| steps | {len(history) if history else cfg.get('n_steps')} |", ""]
    if rules:
        lines += ["A conditioning rule `GATE:TARGET[:METHOD[:GAMMA]]` counts channel TARGET only where the gate "
                  "channel GATE passes (channel indices as listed above, from 0).", ""]
    return lines


def _hyperparameter_section(cfg: dict) -> list[str]:
    lines = ["### Hyperparameters", "", "Every option of the run's `GRPOConfig`:", "", "| option | value |",
             "|---|---|"]
    lines += [f"| `{name}` | {_cell(value)} |" for name, value in cfg.items() if name not in ("out_dir", "resume_from")]
    return lines + [""]


def _trend_lines(history: Sequence[Mapping], names: list[str], fraction: float = TREND_FRACTION) -> list[str]:
    k = max(1, int(len(history) * fraction))
    head, tail = history[:k], history[-k:]
    keys = [("mean reward", "mean_reward")] + [(n, f"mean_channel_{c}") for c, n in enumerate(names)]
    lines = [f"| reward | mean of the first {k} steps | mean of the last {k} steps |", "|---|---|---|"]
    for label, key in keys:
        if all(key in r for r in history):
            before, after = np.mean([r[key] for r in head]), np.mean([r[key] for r in tail])
            lines.append(f"| {label} | {before:.4f} | {after:.4f} ({after - before:+.4f}) |")
    return lines


def _curves_section(history: Sequence[Mapping] | None, names: list[str], curves_image: str | None) -> list[str]:
    lines = ["### Training curves", ""]
    if curves_image:
        lines += [f"![Rewards per step and KL to the base model]({curves_image})", ""]
    if history:
        lines += _trend_lines(history, names) + [""]
    if not curves_image and not history:
        lines += ["No training history was recorded with this adapter.", ""]
    return lines


def _eval_section(eval_results: Sequence[tuple[str, Mapping]] | None) -> list[str]:
    lines = ["## Held-out evaluation", ""]
    if not eval_results:
        return lines + ["No held-out evaluation was recorded (train with `eval_every` and eval prompts, or run "
                        "`multireward-grpo eval` and pass its `--json` output to the push).", ""]
    names = list(eval_results[0][1]["channel_names"])
    lines += ["| model | " + " | ".join(names) + " | aggregate (w·r) |", "|---" * (len(names) + 2) + "|"]
    for label, result in eval_results:
        cells = [f"{m:.4f} ± {s:.4f}" for m, s in zip(result["means"], result["stderrs"])]
        cells.append(f"{result['aggregate_mean']:.4f} ± {result['aggregate_stderr']:.4f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    first = eval_results[0][1]
    lines += ["", f"Mean reward per channel on {first['n_prompts']} held-out prompts x {first['m']} sampled "
                  "completions; ± is one standard error across prompts (the prompt is the unit).", ""]
    return lines


def _load_section(repo_id: str | None, base_model: str | None) -> list[str]:
    adapter = repo_id or "path/to/this/adapter"
    base = base_model or "the-base-model"
    return [
        "## How to load", "",
        "With multireward-grpo (`pip install \"multireward-grpo[llm,data]\"`), which reads the base model from "
        "`adapter_config.json`:", "",
        "```python", "from multireward_grpo.hub import load_adapter", "",
        f'model, tokenizer = load_adapter(None, "{adapter}")', "```", "",
        "With transformers and peft alone:", "",
        "```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
        f'base = AutoModelForCausalLM.from_pretrained("{base}")',
        f'model = PeftModel.from_pretrained(base, "{adapter}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{adapter}")', "```", "",
    ]


def model_card(config: Any, *, base_model: str | None, channel_names: Sequence[str] | None = None,
               history: Sequence[Mapping] | None = None, eval_results: Any = None, repo_id: str | None = None,
               curves_image: str | None = None, license: str = DEFAULT_LICENSE, tags: Sequence[str] = ()) -> str:
    """The model card (``README.md``) of a trained adapter: YAML front matter, then Markdown.

    Parameters
    ----------
    config : GRPOConfig or dict
        The run's settings; every field is listed (except ``out_dir`` and ``resume_from``).
    base_model : str or None
        Hub id of the base model (front matter ``base_model``); None leaves it out.
    channel_names : sequence of R str, optional
        Names of the reward channels (``channel c`` when None).
    history : sequence of dict, optional
        Per-step records (``step``, ``mean_reward``, ``mean_channel_{c}``):
        the first and last quarter of the run are compared in a table.
    eval_results : optional
        Held-out evaluation: anything :func:`eval_table_rows` reads (an
        ``EvalResult``, its ``to_dict()``, ``eval --json`` output ...).
    repo_id : str, optional
        The repo the card is for (title and loading snippet).
    curves_image : str, optional
        Relative path of the training curves image in the repo.
    license : str
        Hub license id (default ``apache-2.0``, that of Qwen2.5 and SmolLM2; use your base model's).
    tags : sequence of str
        Added to ``grpo``, ``multi-reward``, ``multireward-grpo``, ``lora``, ``peft`` and ``advantage-{mode}``.

    Returns
    -------
    str
    """
    cfg = _as_dict(config)
    names = _channel_names(channel_names, len(cfg.get("weights", ())))
    mode = str(cfg.get("mode", "na"))
    meta = {}
    if base_model:
        meta["base_model"] = base_model
    meta.update({"library_name": "peft", "license": _check_license(license), "pipeline_tag": "text-generation",
                 "tags": _check_tags(tags, (*ADAPTER_TAGS, f"advantage-{mode}"))})
    title = repo_id.split("/")[-1] if repo_id else "LoRA adapter"
    on = f" on [{base_model}](https://huggingface.co/{base_model})" if base_model else ""
    lines = [f"# {title}", "",
             f"A LoRA adapter trained{on} with multi-reward GRPO (group relative policy optimization on "
             f"{len(names)} reward channels, advantage estimator `{mode}`) by "
             f"[multireward-grpo](https://github.com/yiqiao-yin/multireward-grpo) {_version()}.", ""]
    lines += _training_section(cfg, names, history) + _hyperparameter_section(cfg)
    lines += _curves_section(history, names, curves_image)
    lines += _eval_section(eval_table_rows(eval_results) if eval_results is not None else None)
    lines += _load_section(repo_id, base_model)
    return _yaml_front_matter(meta) + "\n" + "\n".join(lines)


def _version() -> str:
    from multireward_grpo import __version__

    return __version__


# --------------------------------------------------------------------------- evaluation results


def _one_eval(value: Any, where: str) -> dict:
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    needed = ("channel_names", "means", "stderrs", "aggregate_mean", "aggregate_stderr", "n_prompts", "m")
    if not isinstance(value, Mapping) or any(k not in value for k in needed):
        raise ValueError(f"{where} is not an evaluation result: expected the keys {', '.join(needed)} "
                         "(EvalResult.to_dict())")
    if not len(value["means"]) == len(value["stderrs"]) == len(value["channel_names"]):
        raise ValueError(f"{where}: means, stderrs and channel_names differ in length")
    return dict(value)


def _eval_label(name: str, adapter_dir: Path | None) -> str:
    if name == "base":
        return "base model"
    if adapter_dir is not None:
        try:
            if Path(name).expanduser().resolve() == adapter_dir.resolve():
                return "this adapter"
        except OSError:
            pass
    return f"adapter `{'/'.join(Path(name).parts[-2:])}`"  # never a full local path


def _read_eval_file(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"evaluation file {path} does not exist; pass the eval.jsonl of a run or the "
                                "output of `multireward-grpo eval --json`")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            lines = [line for line in text.splitlines() if line.strip()]
            if not lines:
                raise ValueError(f"{path} is empty: the run recorded no evaluation")
            return json.loads(lines[-1])
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg}, line {err.lineno})") from None


def eval_table_rows(eval_results: Any, *, adapter_dir: str | os.PathLike | None = None) -> list[tuple[str, dict]]:
    """Held-out evaluation results as ``[(row label, EvalResult.to_dict())]``.

    Parameters
    ----------
    eval_results
        An ``EvalResult`` or its ``to_dict()`` (one row, "this adapter"); a
        record of a run's ``eval.jsonl`` (``{"step": ..., "eval": {...}}``);
        the output of ``multireward-grpo eval --json`` (``{"results": {name:
        {...}}}``, one row per model); or a path to a ``.jsonl`` file (its
        last record) or ``.json`` file holding one of these; or rows as
        this function returns them.
    adapter_dir : path, optional
        The adapter the card is for: its row in ``eval --json`` output is
        labelled "this adapter"; other adapters are named by their last two
        path parts, never a full local path.
    """
    here = Path(adapter_dir) if adapter_dir is not None else None
    if isinstance(eval_results, list) and eval_results and all(isinstance(r, tuple) for r in eval_results):
        return [(str(label), _one_eval(result, f"eval result {label!r}")) for label, result in eval_results]
    if isinstance(eval_results, (str, os.PathLike)):
        eval_results = _read_eval_file(Path(eval_results))
    if isinstance(eval_results, Mapping) and "results" in eval_results:
        results = eval_results["results"]
        if not isinstance(results, Mapping) or not results:
            raise ValueError("eval results: 'results' must map model names to evaluation results")
        rows = [(_eval_label(str(k), here), _one_eval(v, f"eval result {k!r}")) for k, v in results.items()]
    elif isinstance(eval_results, Mapping) and "eval" in eval_results:
        step = eval_results.get("step")
        label = f"this adapter (step {step})" if step is not None else "this adapter"
        rows = [(label, _one_eval(eval_results["eval"], "eval record"))]
    else:
        rows = [("this adapter", _one_eval(eval_results, "eval_results"))]
    channels = [list(r["channel_names"]) for _, r in rows]
    if any(c != channels[0] for c in channels):
        raise ValueError("the evaluation results name different reward channels; pass results of one task")
    return rows


# --------------------------------------------------------------------------- adapter folders


def _base_model_id(recorded: str | None, *, explicit: str | None = None, strict: bool = True) -> str | None:
    """The Hub id of an adapter's base model, for ``base_model`` in its card and ``adapter_config.json``.

    A base recorded as a local folder has no Hub id, except the cpu-demo
    model's cached conversion (it is SmolLM2-135M-Instruct). ``strict``
    raises where no Hub id is known; otherwise None is returned.
    """
    from multireward_grpo.models import DEMO_CACHE_NAME, DEMO_MODEL_ID

    advice = "pass base_model='org/name' (CLI: --base-model) naming the Hub model it was trained on"
    if explicit is not None:
        if not isinstance(explicit, str) or not _is_repo_id(explicit):
            raise ValueError(f"base_model {explicit!r} is not a Hub model id; {advice}")
        return explicit
    if not recorded:
        if strict:
            raise ValueError(f"the adapter records no base model (base_model_name_or_path); {advice}")
        return None
    folder = Path(recorded).expanduser()
    if folder.is_dir():
        if folder.name == DEMO_CACHE_NAME and (folder / "SOURCE.json").is_file():
            return DEMO_MODEL_ID
        if strict:
            raise ValueError(f"the adapter was trained on the local folder {recorded!r}, which is not a Hub id; {advice}")
        return None
    # a bare name ("base", "gpt2") is more often a folder relative to where training ran than a Hub id
    if _is_repo_id(recorded) and "/" in recorded:
        return recorded
    if strict:
        raise ValueError(f"the adapter's base model {recorded!r} is neither a local folder here nor a Hub id of "
                         f"the form 'org/name'; {advice}")
    return None


def _is_repo_id(name: str) -> bool:
    utils = _huggingface_hub().utils
    try:
        utils.validate_repo_id(name)
    except utils.HFValidationError:
        return False
    return not os.path.isabs(name) and not name.startswith((".", "~"))


def _adapter_config(adapter: Path) -> dict:
    path = adapter / "adapter_config.json"
    if not adapter.is_dir():
        raise FileNotFoundError(f"adapter folder {adapter} does not exist; pass the folder a training run wrote "
                                "(e.g. grpo_out/final)")
    if not path.is_file():
        raise FileNotFoundError(f"{adapter} has no adapter_config.json: not a LoRA adapter folder (pass e.g. "
                                "grpo_out/final or grpo_out/checkpoint-N/model)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the adapter is damaged") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a JSON object; the adapter is damaged")
    return config


def _compact_history(history: Sequence[Mapping] | None, n_channels: int) -> list[dict]:
    """The keys of each step record that the card and the curves (rewards, KL, channel diagnostics) use."""
    per_channel = ("mean_channel_{}", "zero_var_frac_{}", "influence_{}")  # viz.plot_training_curves' panels
    keys = (*_HISTORY_KEYS, *(key.format(c) for key in per_channel for c in range(n_channels)))
    return [{k: record[k] for k in keys if k in record} for record in (history or ())]


def read_training_record(adapter_dir: str | os.PathLike) -> dict | None:
    """The training record :func:`write_model_card` left in an adapter folder (None when there is none).

    Returns
    -------
    dict or None
        ``{"config": {...}, "channel_names": [...], "history": [...], "version": str}``.
    """
    path = Path(adapter_dir) / TRAINING_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it or pass config=... to the push") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise ValueError(f"{path} holds no config; delete it or pass config=... to the push")
    return record


def _record(cfg: dict, names: list[str], history: Sequence[Mapping] | None) -> dict:
    return {"format": "multireward-grpo-training", "version": _version(), "config": cfg, "channel_names": names,
            "history": _compact_history(history, len(names))}


def write_model_card(adapter_dir: str | os.PathLike, config: Any, *, channel_names: Sequence[str] | None = None,
                     history: Sequence[Mapping] | None = None, eval_results: Any = None,
                     base_model: str | None = None, license: str = DEFAULT_LICENSE,
                     tags: Sequence[str] = ()) -> Path:
    """Write the model card and the training record into a saved adapter folder.

    Replaces the ``README.md`` that peft's ``save_pretrained`` writes (a
    template full of "More Information Needed") with :func:`model_card`, and
    writes :data:`TRAINING_RECORD` (config, channel names, the per-step reward
    curves) so a later :func:`push_adapter` can rebuild the card from the
    folder alone. Both files are written atomically.

    Parameters
    ----------
    adapter_dir : path
        A folder holding ``adapter_config.json``.
    config : GRPOConfig or dict
    channel_names : sequence of R str, optional
    history : sequence of dict, optional
        The trainer's history.
    eval_results : optional
        See :func:`eval_table_rows`.
    base_model : str, optional
        Hub id of the base; default: the adapter's record when it is a Hub id.
    license, tags
        See :func:`model_card`.

    Returns
    -------
    Path
        The card (``adapter_dir/README.md``).
    """
    adapter = Path(adapter_dir)
    recorded = _adapter_config(adapter).get("base_model_name_or_path")
    base = _base_model_id(recorded, explicit=base_model, strict=base_model is not None)
    cfg = _as_dict(config)
    names = _channel_names(channel_names, len(cfg.get("weights", ())))
    atomic_write(adapter / TRAINING_RECORD, json.dumps(_record(cfg, names, history), default=str, indent=1) + "\n")
    card = model_card(cfg, base_model=base, channel_names=names, history=history, eval_results=eval_results,
                      curves_image="curves.png" if (adapter / "curves.png").is_file() else None,
                      license=license, tags=tags)
    return atomic_write(adapter / CARD_FILE, card)


def write_trainer_card(adapter_dir: str | os.PathLike, trainer) -> Path | None:
    """:func:`write_model_card` for a trainer's saved adapter; a failure is reported on stderr, not raised.

    The card's held-out table is the newest record of the run's ``eval.jsonl``
    when the run evaluates (``eval_every`` > 0).

    The adapter is on disk when this runs, so a card that cannot be written
    (no PyYAML, a full disk) costs the run nothing: the message says so.

    Returns
    -------
    Path or None
        The card, or None when it was not written.
    """
    evaluations = Path(trainer.config.out_dir) / "eval.jsonl"  # eval_every's records, the newest last
    try:
        return write_model_card(adapter_dir, trainer.config, channel_names=trainer.reward.channel_names,
                                history=trainer.history,
                                eval_results=evaluations if trainer.config.eval_every and evaluations.is_file() else None)
    except (OSError, ValueError, TypeError, ImportError) as err:
        print(f"the adapter is saved in {adapter_dir}, but its model card was not written ({_first_line(err)}); "
              "push_adapter writes one for the upload", file=sys.stderr)
        return None


def _new_upload_folder(out_dir: str | os.PathLike | None, prefix: str) -> Path:
    if out_dir is None:
        return Path(tempfile.mkdtemp(prefix=prefix))
    out = Path(out_dir)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ValueError(f"out_dir {out} exists and is not a folder; give a new or empty folder for the upload")
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"out_dir {out} is not empty; give a new or empty folder, so the upload holds exactly "
                         "what is prepared")
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextlib.contextmanager
def _upload_folder(out_dir: str | os.PathLike | None, prefix: str) -> Iterator[Path]:
    """A new or empty upload folder; synced when the block ends, deleted on failure when it was a temporary one."""
    out = _new_upload_folder(out_dir, prefix)
    try:
        yield out
    except BaseException:
        if out_dir is None:
            shutil.rmtree(out, ignore_errors=True)
        raise
    for folder in [p for p in out.rglob("*") if p.is_dir()] + [out]:
        fsync_dir(folder)


def _copy_adapter_files(adapter: Path, out: Path, adapter_config: dict, base: str) -> None:
    """Regular files of the adapter folder (not hidden ones, links or folders; not the old card) into ``out``."""
    for item in sorted(adapter.iterdir()):
        rewritten = item.name in (CARD_FILE, "adapter_config.json", TRAINING_RECORD)
        if rewritten or item.name.startswith(".") or item.is_symlink() or not item.is_file():
            continue
        shutil.copy2(item, out / item.name)
    # others load the adapter by its Hub id: the base must be a Hub id too, not this machine's folder
    config = {**adapter_config, "base_model_name_or_path": base}
    atomic_write(out / "adapter_config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")


def _read_jsonl_records(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"{path} line {number} is not valid JSON; pass history=... instead") from None
    return records


def _checkpoint_state(adapter: Path) -> dict:
    """Config and history of a checkpoint's ``model/`` folder, from the checkpoint's ``trainer_state.json``."""
    state_path = adapter.parent / "trainer_state.json"
    if adapter.name != "model" or not state_path.is_file():
        return {}
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        return {}
    return {"config": state["config"], "history": state.get("history")}


def _training_inputs(adapter: Path, run_dir: Path, config: Any, channel_names, history) -> tuple:
    """(config dict, channel names, history) from the arguments, the training record or the run folder."""
    record = read_training_record(adapter) or _checkpoint_state(adapter)
    if config is None:
        config = record.get("config")
    if config is None:
        raise ValueError(f"{adapter} has no {TRAINING_RECORD} (the trainer writes it when it saves final/); "
                         "pass config=... (a GRPOConfig or dict) to describe the run")
    cfg = _as_dict(config)
    names = _channel_names(channel_names if channel_names is not None else record.get("channel_names"),
                           len(cfg.get("weights", ())))
    if history is None:
        history = record.get("history")
    if not history and (run_dir / "history.jsonl").is_file():
        history = _read_jsonl_records(run_dir / "history.jsonl")
    return cfg, names, list(history or [])


def _curves_into(out: Path, adapter: Path, run_dir: Path, history: list, names: list, cfg: dict) -> str | None:
    """``curves.png`` in the upload: the run's own, else drawn from the history (needs matplotlib)."""
    for source in (adapter / "curves.png", run_dir / "curves.png"):
        if source.is_file() and not source.is_symlink():
            shutil.copy2(source, out / "curves.png")
            return "curves.png"
    if not history:
        return None
    try:
        from multireward_grpo import viz

        viz.plot_training_curves(history, out / "curves.png", channel_names=names, mode=str(cfg.get("mode")))
    except ImportError:
        print('model card: no training curves image (pip install "multireward-grpo[viz]" to draw curves.png)',
              file=sys.stderr)
        return None
    return "curves.png"


def prepare_adapter_upload(adapter_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                           repo_id: str | None = None, base_model: str | None = None, config: Any = None,
                           channel_names: Sequence[str] | None = None, history: Sequence[Mapping] | None = None,
                           eval_results: Any = None, run_dir: str | os.PathLike | None = None,
                           license: str = DEFAULT_LICENSE, tags: Sequence[str] = ()) -> Path:
    """Write the folder that :func:`push_adapter` uploads to a model repo.

    It holds the adapter's files (weights, tokenizer; not links nor
    sub-folders), ``adapter_config.json`` with ``base_model_name_or_path``
    set to the base's Hub id, the training record (its config's ``model``
    also the Hub id, without ``out_dir`` and ``resume_from``: no local path
    is uploaded), ``curves.png`` and the model card ``README.md``.

    Parameters
    ----------
    adapter_dir : path
        A saved adapter (``adapter_config.json`` and ``adapter_model.safetensors``).
    out_dir : path, optional
        A new or empty folder (default: a new temporary folder).
    repo_id : str, optional
        The target repo, named in the card.
    base_model : str, optional
        Hub id of the base model; required when the adapter records a local folder.
    config, channel_names, history : optional
        Default: the training record the trainer left in ``adapter_dir``
        (for a checkpoint's ``model/`` folder, the checkpoint's
        ``trainer_state.json``); the history then falls back to
        ``run_dir/history.jsonl``.
    eval_results : optional
        See :func:`eval_table_rows`; default ``run_dir/eval.jsonl`` when it exists.
    run_dir : path, optional
        The run's output folder (default: the adapter folder's parent, e.g.
        ``grpo_out`` for ``grpo_out/final``), where ``history.jsonl``,
        ``eval.jsonl`` and ``curves.png`` are looked for.
    license, tags
        See :func:`model_card`.

    Returns
    -------
    Path
        The upload folder.
    """
    adapter = Path(adapter_dir)
    adapter_config = _adapter_config(adapter)
    if not (adapter / "adapter_model.safetensors").is_file():
        raise FileNotFoundError(f"{adapter} has no adapter_model.safetensors; only safetensors weights are uploaded "
                                "(re-save the adapter with save_pretrained)")
    base = _base_model_id(adapter_config.get("base_model_name_or_path"), explicit=base_model)
    run = Path(run_dir) if run_dir is not None else adapter.parent
    cfg, names, steps = _training_inputs(adapter, run, config, channel_names, history)
    # the run's local paths stay on this machine: the base is named by its Hub id
    cfg = {**{k: v for k, v in cfg.items() if k not in ("out_dir", "resume_from")}, "model": base}
    if eval_results is None and (run / "eval.jsonl").is_file():
        eval_results = run / "eval.jsonl"
    rows = eval_table_rows(eval_results, adapter_dir=adapter) if eval_results is not None else None
    repo_id = _check_repo_id(repo_id) if repo_id is not None else None
    _check_license(license)
    _check_tags(tags, ())
    with _upload_folder(out_dir, "multireward-grpo-adapter-") as out:
        _copy_adapter_files(adapter, out, adapter_config, base)
        atomic_write(out / TRAINING_RECORD, json.dumps(_record(cfg, names, steps), default=str, indent=1) + "\n")
        curves = _curves_into(out, adapter, run, steps, names, cfg)
        card = model_card(cfg, base_model=base, channel_names=names, history=steps, eval_results=rows,
                          repo_id=repo_id, curves_image=curves, license=license, tags=tags)
        atomic_write(out / CARD_FILE, card)
    return out


# --------------------------------------------------------------------------- uploading


def _default_api(token: str | None):
    return _huggingface_hub().HfApi(token=token, library_name="multireward-grpo", library_version=_version())


def _folder_files(folder: Path) -> tuple:
    return tuple(sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()))


def _hub_call(action: str, secret: str | None, method, /, *args, **kwargs):
    """``method(*args, **kwargs)``; a failure becomes a :class:`HubError` with the token ``secret`` masked.

    Any exception of the client counts (its HTTP, connection and validation
    errors share no base class). The HubError is raised outside the handler,
    so it carries no ``__context__`` through which the original text, which
    may quote the request, could be printed.
    """
    try:
        return method(*args, **kwargs)
    except Exception as err:
        failure = _hub_error(action, err, secret)
    raise failure


def _upload(folder: Path, repo_id: str, repo_type: str, *, token: str | None, private: bool, dry_run: bool,
            api: Any, temporary: bool, commit_message: str) -> PushResult:
    """Create the repo (when missing) and upload ``folder`` as one commit; a dry run stops before."""
    files = _folder_files(folder)
    if dry_run:
        return PushResult(repo_id, repo_type, files, True, folder)
    try:
        api = api if api is not None else _default_api(token)
        url = _hub_call(f"creating the {repo_type} repo {repo_id}", token, api.create_repo, repo_id, token=token,
                        private=private, repo_type=repo_type, exist_ok=True)
        _hub_call(f"uploading {folder} to the {repo_type} repo {repo_id}", token, api.upload_folder, repo_id=repo_id,
                  folder_path=str(folder), repo_type=repo_type, commit_message=commit_message, token=token)
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
    return PushResult(repo_id, repo_type, files, False, None if temporary else folder, str(url) if url else None)


def _push_checks(repo_id: Any, token: str | None, dry_run: bool, private: Any) -> tuple[str, str | None]:
    """The checked repo id and, unless a dry run, the token (refused when there is none)."""
    repo_id = _check_repo_id(repo_id)
    if not isinstance(private, bool):
        raise TypeError(f"private must be True or False; got {private!r}")
    if not isinstance(dry_run, bool):
        raise TypeError(f"dry_run must be True or False; got {dry_run!r}")
    if dry_run:
        return repo_id, None
    resolved = _resolve_token(token)
    if resolved is None:
        raise ValueError(_NO_TOKEN)
    return repo_id, resolved


def push_adapter(adapter_dir: str | os.PathLike, repo_id: str, *, token: str | None = None, private: bool = False,
                 dry_run: bool = False, api: Any = None, out_dir: str | os.PathLike | None = None,
                 commit_message: str = "Upload LoRA adapter trained with multireward-grpo", **card_options) -> PushResult:
    """Push a trained adapter, with its model card, to a model repo on the Hub.

    Parameters
    ----------
    adapter_dir : path
        A saved adapter, e.g. ``grpo_out/final``.
    repo_id : str
        ``"your-name/repo-name"``; created when missing (an existing repo keeps its visibility).
    token : str, optional
        Default: ``HF_TOKEN``, else the Hub login. Never printed, logged or stored.
    private : bool
        Create the repo private (default public, as the Hub does).
    dry_run : bool
        Only write the upload folder and return its path: no token, no network.
    api : HfApi-like, optional
        Anything with ``create_repo`` and ``upload_folder`` as ``huggingface_hub.HfApi``
        has them (default: ``HfApi(token=token)``); tests pass a fake.
    out_dir : path, optional
        Where to write the upload folder (new or empty); default a temporary
        folder, deleted after a real push.
    commit_message : str
    **card_options
        ``base_model``, ``config``, ``channel_names``, ``history``,
        ``eval_results``, ``run_dir``, ``license``, ``tags``: see
        :func:`prepare_adapter_upload`.

    Returns
    -------
    PushResult

    Raises
    ------
    ValueError
        A bad repo id, no token (real push), a base model with no Hub id.
    FileNotFoundError
        No adapter folder or no weights.
    HubError
        The Hub refused or could not be reached (message without the token).
    """
    repo_id, token = _push_checks(repo_id, token, dry_run, private)
    folder = prepare_adapter_upload(adapter_dir, out_dir, repo_id=repo_id, **card_options)
    return _upload(folder, repo_id, "model", token=token, private=private, dry_run=dry_run, api=api,
                   temporary=out_dir is None and not dry_run, commit_message=commit_message)


# --------------------------------------------------------------------------- corpora as datasets


def _size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M")]
    return next((label for bound, label in bounds if n < bound), "n>10M")


def _text_or_none(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def write_corpus_parquet(corpus, path: str | os.PathLike) -> Path:
    """The corpus as a Parquet long table with ``prompt`` and ``gold`` text columns for the Hub viewer.

    Columns: ``prompt_idx``, ``seed_idx``, ``rollout_idx``, ``m``, ``prompt``
    (chat messages as JSON text), ``gold`` (JSON text unless a string), one
    float column per channel, and ``completion`` when the corpus has texts.
    The corpus header is stored in the schema metadata as
    :func:`~multireward_grpo.generation.save_corpus` stores it, so
    :func:`~multireward_grpo.generation.load_corpus` reads the file back to an
    equal corpus. Written atomically.
    """
    from multireward_grpo._fileio import atomic_writer
    from multireward_grpo.generation.corpus import (
        PARQUET_KEY,
        _long_columns,
        _require_pyarrow,
    )

    pa, pq = _require_pyarrow()
    cols = _long_columns(corpus)
    prompt_idx = cols["prompt_idx"]
    texts = {"prompt": [corpus.prompt_ids[p] for p in prompt_idx.tolist()],
             "gold": [_text_or_none(corpus.golds[p]) for p in prompt_idx.tolist()]}
    ordered = {k: cols[k] for k in ("prompt_idx", "seed_idx", "rollout_idx", "m")}
    ordered.update(texts)
    ordered.update({k: v for k, v in cols.items() if k not in ordered})
    table = pa.table({k: pa.array(v, type=pa.string()) if k in texts else v for k, v in ordered.items()})
    meta = {PARQUET_KEY: json.dumps(corpus.header(), ensure_ascii=False).encode("utf-8")}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path, "wb") as fh:
        pq.write_table(table.replace_schema_metadata(meta), fh)
    return path


def _fmt(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}g}"


def _thm3_rows(result, m: int) -> list[str]:
    rows = []
    for mode in result.modes:
        low, high = result.ratio_ci.get(mode, (float("nan"), float("nan")))
        ci = f"[{_fmt(low)}, {_fmt(high)}]" if np.isfinite(low) and np.isfinite(high) else "n/a"
        rows.append(f"| {m} | {result.P} | {result.K} | {mode} | {_fmt(float(np.mean(result.realized[mode])))} | "
                    f"{_fmt(float(np.mean(result.predicted[mode])))} | {_fmt(result.ratio_pooled[mode])} | {ci} |")
    return rows


def theorem3_results(corpus, weights: Any = None, *, n_resamples: int = 1000, score_seed: int = 0) -> dict:
    """Theorem 3 checked at each group size of a corpus: ``{m: Thm3Result or the reason it was not computed}``.

    Only prompts that have every seed at size ``m`` enter (as ``analyze
    --drop-incomplete`` does); ``weights`` default to 1 per channel.
    """
    import warnings

    from multireward_grpo.analysis.thm3 import analyze
    from multireward_grpo.generation import pack_for_analysis

    w = np.ones(corpus.R) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (corpus.R,):
        raise ValueError(f"weights has {w.size} values but the corpus has {corpus.R} channels "
                         f"({', '.join(corpus.channel_names)})")
    results: dict = {}
    for m in sorted(corpus.m_grid):
        complete = corpus.complete_prompts(m)
        if not complete:
            results[m] = f"no prompt has all {corpus.K} seeds at m={m}"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # its notes go into the card instead
                results[m] = analyze(pack_for_analysis(corpus, m=m, prompts=complete), w, score_seed,
                                     n_resamples=n_resamples)
        except ValueError as err:  # too few seeds or groups for the statistics
            results[m] = _first_line(err)
    return results


def _thm3_section(corpus, results: dict, weights: np.ndarray) -> list[str]:
    names = list(corpus.channel_names)
    lines = ["## Theorem 3 summary", "",
             "The gradient-MSE law checked on these rollouts (`multireward-grpo analyze data/train.parquet "
             f"--weights {','.join(f'{x:g}' for x in weights)}`): "
             "simulated score projections g ~ N(0, τ²) with τ² = 1, the surrogate gradient (1/m) Σ A_j g_j per "
             "(prompt, seed), its realized MSE across seeds against the prediction; NA's law is "
             "(τ²/m)·wᵀĈw, AN's τ²/m. A ratio near 1 means the law holds.", "",
             f"Weights w = {', '.join(f'{n} {x:g}' for n, x in zip(names, weights))}.", "",
             "| m | prompts | seeds | estimator | realized MSE | predicted MSE | realized / predicted | 95% CI |",
             "|---|---|---|---|---|---|---|---|"]
    notes = []
    for m, result in results.items():
        if isinstance(result, str):
            notes.append(f"m={m}: not computed ({result})")
            continue
        lines += _thm3_rows(result, m)
        degenerate = np.asarray(result.degenerate_groups)
        if degenerate.any():
            parts = ", ".join(f"{n} {int(d)}" for n, d in zip(names, degenerate) if d)
            notes.append(f"m={m}: groups where a channel is constant (z = 0 there) out of {result.n_groups}: {parts}")
        notes += [f"m={m}: {note}" for note in result.notes]
    lines.append("")
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    largest = next((r for r in reversed(list(results.values())) if not isinstance(r, str)), None)
    if largest is not None:
        lines += [f"Pooled within-group correlation Ĉ of the channels (m={largest.m}):", "",
                  "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {n} | " + " | ".join(f"{v:+.3f}" for v in row) + " |" for n, row in zip(names, largest.pooled_C)]
        lines.append("")
    return lines


def dataset_card(corpus, *, repo_id: str | None = None, weights: Any = None, theorem3: dict | None = None,
                 license: str = DEFAULT_DATASET_LICENSE, tags: Sequence[str] = (), n_rows: int | None = None) -> str:
    """The dataset card of a rollout corpus: YAML front matter (with ``configs`` for the Hub viewer), then Markdown.

    Parameters
    ----------
    corpus : Corpus
    repo_id : str, optional
        The dataset repo, named in the title and the loading snippet.
    weights : (R,) array, optional
        Weights of the Theorem 3 check (default 1 per channel).
    theorem3 : dict, optional
        :func:`theorem3_results` output (computed here when None).
    license : str
        Hub license id (default ``cc-by-4.0``).
    tags : sequence of str
        Added to ``grpo``, ``multi-reward``, ``multireward-grpo``, ``rollouts``, ``reinforcement-learning``.
    n_rows : int, optional
        Rows of the Parquet file (for ``size_categories``; default: counted).
    """
    w = np.ones(corpus.R) if weights is None else np.asarray(weights, dtype=float)
    results = theorem3 if theorem3 is not None else theorem3_results(corpus, w)
    rows = n_rows if n_rows is not None else sum(len(g) for g in corpus.groups.values())
    meta = {"license": _check_license(license), "tags": _check_tags(tags, DATASET_TAGS),
            "size_categories": [_size_category(rows)],
            "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": CORPUS_DATA_FILE}]}]}
    title = repo_id.split("/")[-1] if repo_id else "Rollout corpus"
    backend = corpus.metadata.get("backend")
    lines = [f"# {title}", "",
             f"Multi-reward GRPO rollouts: {corpus.P} prompts x {corpus.K} seeds x group sizes "
             f"{', '.join(map(str, corpus.m_grid))}, scored on {corpus.R} reward channels "
             f"({', '.join(f'`{n}`' for n in corpus.channel_names)}); {rows} rows. Written by "
             f"[multireward-grpo](https://github.com/yiqiao-yin/multireward-grpo) {_version()}.", ""]
    if backend:
        lines += [f"Generated by: `{json.dumps(backend, default=str)[:500]}`", ""]
    lines += _columns_section(corpus) + _thm3_section(corpus, results, w) + _dataset_load_section(repo_id)
    return _yaml_front_matter(meta) + "\n" + "\n".join(lines)


def _columns_section(corpus) -> list[str]:
    nested = ("a group of size m is the first m rollouts of the largest group with the same prompt and seed"
              if corpus.subsample_from_max else "every group size was generated on its own")
    return ["## Format", "",
            "One row per rollout (the long format of multireward-grpo), in `data/train.parquet`:", "",
            "| column | meaning |", "|---|---|",
            "| `prompt_idx` | prompt number (0..P-1) |", "| `seed_idx` | seed number of the group |",
            "| `rollout_idx` | rollout number inside its group (0..m-1) |", "| `m` | group size |",
            "| `prompt` | the prompt text (chat messages as JSON) |", "| `gold` | its reference answer, if any |",
            *(f"| `{n}` | reward channel {c} |" for c, n in enumerate(corpus.channel_names)),
            *(["| `completion` | the sampled completion |"] if corpus.completions else []), "",
            f"Groups: {nested}. The corpus header (prompts, golds, channels, seeds, group sizes, generator) is "
            "stored in the Parquet schema metadata under `multireward_grpo.corpus`.", ""]


def _dataset_load_section(repo_id: str | None) -> list[str]:
    repo = repo_id or "your-name/this-dataset"
    return ["## How to load", "",
            "As a rollout corpus (the `(P, K, m, R)` tensor for the theory harness):", "",
            "```python", "from huggingface_hub import hf_hub_download",
            "from multireward_grpo.generation import load_corpus, pack_for_analysis", "",
            f'path = hf_hub_download("{repo}", "{CORPUS_DATA_FILE}", repo_type="dataset")',
            "corpus = load_corpus(path)", "rewards = pack_for_analysis(corpus, m=corpus.m_grid[-1])", "```", "",
            "As a table:", "", "```python", "from datasets import load_dataset", "",
            f'rollouts = load_dataset("{repo}", split="train")', "```", ""]


def prepare_corpus_upload(corpus_path: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                          repo_id: str | None = None, weights: Any = None, nan_policy: str = "raise",
                          n_resamples: int = 1000, score_seed: int = 0, license: str = DEFAULT_DATASET_LICENSE,
                          tags: Sequence[str] = ()) -> Path:
    """Write the folder that :func:`push_corpus` uploads to a dataset repo.

    It holds ``data/train.parquet`` (:func:`write_corpus_parquet`) and the
    dataset card ``README.md`` (:func:`dataset_card`, with the Theorem 3
    summary at every group size of the corpus).

    Parameters
    ----------
    corpus_path : path
        A corpus or long table (``.jsonl`` / ``.parquet``) that
        :func:`~multireward_grpo.generation.load_corpus` reads.
    out_dir : path, optional
        A new or empty folder (default: a new temporary folder).
    repo_id : str, optional
        The target repo, named in the card.
    weights : (R,) array, optional
        Weights of the Theorem 3 check (default 1 per channel).
    nan_policy : {"raise", "propagate", "omit"}
        How missing rewards are read (see ``load_corpus``).
    n_resamples : int
        Bootstrap resamples of the Theorem 3 intervals (0: no intervals).
    score_seed : int
        Seed of the simulated scores and the bootstrap.
    license, tags
        See :func:`dataset_card`.

    Returns
    -------
    Path
        The upload folder.
    """
    from multireward_grpo._validate import check_int
    from multireward_grpo.generation import load_corpus

    check_int("n_resamples", n_resamples, 0)
    check_int("score_seed", score_seed, 0)
    repo_id = _check_repo_id(repo_id) if repo_id is not None else None
    _check_license(license)
    _check_tags(tags, ())
    corpus = load_corpus(corpus_path, nan_policy=nan_policy)
    w = np.ones(corpus.R) if weights is None else np.asarray(weights, dtype=float)
    results = theorem3_results(corpus, w, n_resamples=n_resamples, score_seed=score_seed)
    with _upload_folder(out_dir, "multireward-grpo-dataset-") as out:
        write_corpus_parquet(corpus, out / CORPUS_DATA_FILE)
        atomic_write(out / CARD_FILE, dataset_card(corpus, repo_id=repo_id, weights=w, theorem3=results,
                                                   license=license, tags=tags))
    return out


def push_corpus(corpus_path: str | os.PathLike, repo_id: str, *, token: str | None = None, private: bool = False,
                dry_run: bool = False, api: Any = None, out_dir: str | os.PathLike | None = None,
                commit_message: str = "Upload rollout corpus written by multireward-grpo", **card_options) -> PushResult:
    """Push a rollout corpus to a dataset repo: Parquet in the long format and a card with Theorem 3's summary.

    Parameters
    ----------
    corpus_path : path
        ``.jsonl`` or ``.parquet`` corpus / long table.
    repo_id, token, private, dry_run, api, out_dir, commit_message
        As in :func:`push_adapter` (the repo type is ``"dataset"``).
    **card_options
        ``weights``, ``nan_policy``, ``n_resamples``, ``score_seed``,
        ``license``, ``tags``: see :func:`prepare_corpus_upload`.

    Returns
    -------
    PushResult
    """
    repo_id, token = _push_checks(repo_id, token, dry_run, private)
    folder = prepare_corpus_upload(corpus_path, out_dir, repo_id=repo_id, **card_options)
    return _upload(folder, repo_id, "dataset", token=token, private=private, dry_run=dry_run, api=api,
                   temporary=out_dir is None and not dry_run, commit_message=commit_message)


# --------------------------------------------------------------------------- loading and pulling


def load_adapter(base_model: str | os.PathLike | None, adapter: str | os.PathLike, *, dtype: Any = None,
                 device: str | None = None, probe_timeout_s: float | None = None):
    """An adapter from a Hub id or a folder, on its base model, with its tokenizer.

    Offline first (see :mod:`multireward_grpo.models`): folders and models in
    the Hugging Face cache load without the network; anything else goes to
    the Hub only when it answers.

    Parameters
    ----------
    base_model : str, path or None
        The base model (folder or Hub id); None: the base the adapter records
        in ``adapter_config.json``. One that differs from the record is used
        with a warning on stderr.
    adapter : str or path
        An adapter folder or Hub id.
    dtype : torch.dtype or str, optional
        Weight dtype of the base model.
    device : str, optional
        Where to move the model (default: where transformers loads it, the CPU).
    probe_timeout_s : float, optional
        Seconds to wait for the Hub before calling it unreachable (default
        :data:`multireward_grpo.models.HUB_PROBE_TIMEOUT_S`).

    Returns
    -------
    model : peft.PeftModel
        In eval mode.
    tokenizer
        The adapter's own tokenizer when it ships one, else the base model's.

    Raises
    ------
    ModelLoadError
        Not found, Hub unreachable, or weights that do not fit the base.
    ValueError
        No base model given nor recorded.
    """
    from multireward_grpo import models

    probe = models.HUB_PROBE_TIMEOUT_S if probe_timeout_s is None else probe_timeout_s
    name = models._as_name(adapter, "adapter")
    explicit = None if base_model is None else models._as_name(base_model, "base model")
    base, overridden = models.base_model_for_adapters([name], explicit)
    for _, recorded in overridden:
        print(f"warning: base model {base!r} differs from {recorded!r}, which adapter {name!r} was trained on; its "
              "LoRA weights are applied anyway", file=sys.stderr)
    model = models.load_causal_lm(base, dtype=dtype, probe_timeout_s=probe)
    tokenizer = _adapter_tokenizer(name, base, probe)
    model = models.load_adapter(model, name, probe_timeout_s=probe)
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


def _adapter_tokenizer(adapter: str, base: str, probe_timeout_s: float):
    from multireward_grpo import models

    folder = Path(adapter).expanduser()
    if folder.is_dir() and not (folder / "tokenizer_config.json").is_file():
        return models.load_tokenizer(base, probe_timeout_s=probe_timeout_s)
    try:
        return models.load_tokenizer(adapter, probe_timeout_s=probe_timeout_s)
    except models.ModelLoadError:
        if folder.is_dir():
            raise
        return models.load_tokenizer(base, probe_timeout_s=probe_timeout_s)  # a Hub adapter without a tokenizer


def pull(repo_id: str, out_dir: str | os.PathLike, *, repo_type: str = "model", revision: str | None = None,
         token: str | None = None, api: Any = None) -> Path:
    """Download a Hub repo (an adapter or a rollout dataset) into ``out_dir``.

    Parameters
    ----------
    repo_id : str
    out_dir : path
        The folder to write (created; files already there are updated).
    repo_type : {"model", "dataset"}
    revision : str, optional
        A branch, tag or commit (default: the main branch).
    token : str, optional
        For private repos; default ``HF_TOKEN`` or the Hub login (none is fine for public repos).
    api : HfApi-like, optional
        Anything with ``snapshot_download`` as ``HfApi`` has it; tests pass a fake.

    Returns
    -------
    Path
        ``out_dir``.
    """
    from multireward_grpo._validate import check_choice

    repo_id = _check_repo_id(repo_id)
    repo_type = check_choice("repo_type", repo_type, ("model", "dataset"))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} is a file; give a folder to download into")
    token = _resolve_token(token)
    api = api if api is not None else _default_api(token)
    path = _hub_call(f"downloading the {repo_type} repo {repo_id}", token, api.snapshot_download, repo_id,
                     repo_type=repo_type, revision=revision, local_dir=str(out), token=token)
    return Path(path)
