"""Released rollout datasets: long tables of scored rollouts as ``(P, K, m, R)`` rewards.

:func:`load_rollouts` reads a *long* table (one row per rollout) from a local
Parquet / JSONL file or folder, an in-memory table, or a Hugging Face Hub
dataset id, and returns a :class:`RolloutData`: the reward tensor the theory
harness takes, with the per-prompt texts and where it came from.
:meth:`RolloutData.to_corpus` gives a :class:`~multireward_grpo.generation.Corpus`
(save it with ``save_corpus`` for ``multireward-grpo analyze``).

Schemas
-------
The schema is detected from the column names (or forced with ``schema=``):

``"gsm8k"`` (the paper's GSM8K rollouts)
    ``model, prompt_idx, seed_idx, rollout_idx, group_size_m_max,
    correctness, length, format, raw_length, question, gold_answer,
    gold_reasoning``. Default channels ``(correctness, length, format)``;
    ``raw_length`` is available through ``channels=``. Detected by
    ``prompt_idx`` together with ``correctness``, ``length`` and ``format``.
``"fintech"`` (the fintech customer-communication rollouts)
    ``model, scenario_id, scenario_type, persona, name, amount, due_date,
    seed_idx, rollout_idx, group_size_m, conversation_so_far, bot_reply,
    compliance, politeness_gated, action, raw_length, raw_politeness``.
    Prompts are keyed by ``scenario_id``; default channels
    ``(compliance, politeness_gated, action)``; ``bot_reply`` is kept as the
    rollout text. Detected by a ``scenario_id`` column.
``"generic"``
    ``prompt_idx, seed_idx, rollout_idx`` and one numeric column per channel
    (default: every numeric column that is not an index, group-size or text
    column, in table order); optional ``model``, ``m`` / ``group_size_m`` /
    ``group_size_m_max``, ``prompt``, ``gold``, ``completion``.

Rules
-----
* **Prompt order.** Integer prompt keys are sorted ascending; any other keys
  (e.g. string scenario ids) keep the order of their first row in the table.
  Seeds are the sorted distinct ``seed_idx`` values.
* **Group size.** ``m=None`` uses the table's group size: the group-size
  column when there is one (it must be the same for every group; otherwise
  pass ``m=``), else ``max(rollout_idx) + 1``. A group with more than ``m``
  rollouts keeps its first ``m`` (``rollout_idx < m``): rollouts in a group
  are exchangeable, so that prefix is a valid group of size ``m``.
* **Completeness.** Every prompt needs every seed, and every group rollouts
  ``0 .. m-1``, each exactly once. Otherwise :func:`load_rollouts` raises a
  ``ValueError`` naming the prompts and what they miss, unless
  ``drop_incomplete=True``, which leaves those prompts out and lists them in
  :attr:`RolloutData.dropped`. Nothing is ever zero-filled. A seed missing
  for *every* prompt cannot be detected.
* **Missing rewards.** A reward cell that is null, NaN or absent keeps its
  column a channel; ``nan_policy="raise"`` (the default) refuses the table,
  naming the row, ``"propagate"`` and ``"omit"`` keep it as NaN in
  :attr:`RolloutData.rewards` for the estimators' ``nan_policy`` (see
  :mod:`multireward_grpo.generation.corpus`). Infinite rewards always raise.
* **Several models.** A table with several values in ``model`` needs
  ``model=`` to pick one.
* **Per-prompt fields** (question, gold answer, scenario fields) are taken
  from the prompt's first row.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from multireward_grpo.generation.corpus import (
    Corpus,
    RolloutFileError,
    _check_nan_policy,
    _check_rewards,
    _column_array,
    _columns_of,
    _float_column,
    _is_numeric_column,
)

__all__ = ["SCHEMAS", "DataUnavailableError", "RolloutData", "Schema", "load_rollouts"]

_DATA_EXTRA = 'pip install "multireward-grpo[data]"'
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SUFFIXES = (".parquet", ".jsonl")
_INDEX = ("seed_idx", "rollout_idx")
_SHOW = 5  # incomplete prompts / missing items named in an error message


class DataUnavailableError(OSError):
    """A dataset could not be found locally nor loaded from the Hugging Face Hub.

    Raised when the Hub is needed but ``datasets`` is not installed, the
    machine is offline (``HF_HUB_OFFLINE=1``) with no cached copy, or the
    download fails. The message says how to provide a local file instead.
    """


@dataclass(frozen=True)
class Schema:
    """Column layout of a known long-format rollout table.

    Attributes
    ----------
    name : str
    prompt_key : str
        Column identifying the prompt.
    channels : tuple of str
        Default reward channels (empty: infer the numeric columns).
    size_columns : tuple of str
        Columns that may declare the group size; the first present is used.
    prompt_fields : tuple of str
        Per-prompt columns kept in :attr:`RolloutData.prompts`.
    completion : str or None
        Per-rollout text column kept in :attr:`RolloutData.completions`.
    prompt_text, gold : str or None
        Fields used as the corpus prompt and gold by :meth:`RolloutData.to_corpus`
        (None: the prompt key / no gold).
    """

    name: str
    prompt_key: str
    channels: tuple[str, ...]
    size_columns: tuple[str, ...]
    prompt_fields: tuple[str, ...]
    completion: str | None
    prompt_text: str | None
    gold: str | None


SCHEMAS: dict[str, Schema] = {
    "gsm8k": Schema("gsm8k", "prompt_idx", ("correctness", "length", "format"), ("group_size_m_max",),
                    ("question", "gold_answer", "gold_reasoning"), "completion", "question", "gold_answer"),
    "fintech": Schema("fintech", "scenario_id", ("compliance", "politeness_gated", "action"), ("group_size_m",),
                      ("scenario_type", "persona", "name", "amount", "due_date", "conversation_so_far"),
                      "bot_reply", None, None),
    "generic": Schema("generic", "prompt_idx", (), ("m", "group_size_m", "group_size_m_max"),
                      ("prompt", "prompt_id", "gold"), "completion", "prompt", "gold"),
}


@dataclass(frozen=True, eq=False)
class RolloutData:
    """Rewards of a rollout dataset, packed per prompt, seed and rollout.

    Attributes
    ----------
    rewards : ndarray, shape (P, K, m, R), float64
        ``rewards[p, k, j, l]``: prompt ``p``, seed ``k``, rollout ``j``, channel ``l``.
    channel_names : tuple of str, length R
    prompt_ids : tuple, length P
        The prompt keys from the table (``prompt_idx`` ints or ``scenario_id`` values).
    seed_ids : tuple of int, length K
        The ``seed_idx`` values, ascending.
    prompts : tuple of dict, length P
        Per-prompt fields, e.g. ``{"question", "gold_answer", "gold_reasoning"}``
        (GSM8K) or the scenario fields (fintech); JSON-plain values.
    completions : ndarray of object, shape (P, K, m), or None
        Rollout texts where the table has them (``bot_reply``, ``completion``).
    model : str or None
        The model the rollouts came from (None: no ``model`` column).
    source : str
        The path or Hub id read.
    schema : str
        ``"gsm8k"``, ``"fintech"`` or ``"generic"``.
    dropped : tuple of (prompt id, str)
        Prompts left out by ``drop_incomplete=True`` and what they missed.
    metadata : dict
        Anything else: ``prompt_key``, the Hub ``config`` / ``split``, the
        table's ``models``, ``m_available`` (group size before truncation).
    """

    rewards: np.ndarray
    channel_names: tuple[str, ...]
    prompt_ids: tuple
    seed_ids: tuple[int, ...]
    prompts: tuple[dict, ...]
    completions: np.ndarray | None
    model: str | None
    source: str
    schema: str
    dropped: tuple = ()
    metadata: dict = field(default_factory=dict)

    @property
    def P(self) -> int:
        """Number of prompts."""
        return self.rewards.shape[0]

    @property
    def K(self) -> int:
        """Number of seeds per prompt."""
        return self.rewards.shape[1]

    @property
    def m(self) -> int:
        """Rollouts per group."""
        return self.rewards.shape[2]

    @property
    def R(self) -> int:
        """Number of reward channels."""
        return self.rewards.shape[3]

    def to_corpus(self) -> Corpus:
        """These rollouts as a :class:`~multireward_grpo.generation.Corpus`.

        One group of size ``m`` per (prompt, seed), with ``subsample_from_max``
        so smaller ``m`` are its prefixes. The corpus prompt is the question
        (GSM8K), the ``prompt`` column (generic) or the prompt id; the gold is
        ``gold_answer`` / ``gold`` where present. The per-prompt fields, ids,
        source, model and dropped prompts go to ``corpus.metadata``.
        """
        spec = SCHEMAS[self.schema]
        texts = [_corpus_prompt(pid, info, spec) for pid, info in zip(self.prompt_ids, self.prompts)]
        golds = [info.get(spec.gold) if spec.gold else None for info in self.prompts]
        groups, comps = {}, {}
        for p in range(self.P):
            for k, seed in enumerate(self.seed_ids):
                groups[(p, seed, self.m)] = self.rewards[p, k].copy()
                if self.completions is not None and all(isinstance(t, str) for t in self.completions[p, k]):
                    comps[(p, seed, self.m)] = tuple(self.completions[p, k])
        meta = {"source": self.source, "schema": self.schema, "model": self.model,
                "prompt_ids": list(self.prompt_ids), "prompt_info": list(self.prompts),
                "dropped": [[pid, why] for pid, why in self.dropped], **self.metadata}
        return Corpus(prompts=texts, golds=golds, channel_names=self.channel_names, seed_indices=self.seed_ids,
                      m_grid=[self.m], groups=groups, completions=comps, subsample_from_max=True, metadata=meta)

    def __repr__(self) -> str:
        return (f"RolloutData(schema={self.schema!r}, P={self.P}, K={self.K}, m={self.m}, "
                f"channels={self.channel_names}, model={self.model!r}, source={self.source!r}, "
                f"dropped={len(self.dropped)})")


def _corpus_prompt(pid: Any, info: dict, spec: Schema) -> Any:
    text = info.get(spec.prompt_text) if spec.prompt_text else None
    return text if isinstance(text, str) else str(pid)


# --------------------------------------------------------------------------- public entry


def load_rollouts(source: Any, *, channels: Sequence[str] | None = None, model: str | None = None,
                  m: int | None = None, drop_incomplete: bool = False, schema: str | None = None,
                  config: str | None = None, split: str = "train", revision: str | None = None,
                  nan_policy: str = "raise") -> RolloutData:
    """Load a long-format rollout table as ``(P, K, m, R)`` rewards.

    Parameters
    ----------
    source : str, path, or table
        A ``.parquet`` / ``.jsonl`` file; a folder of them (files whose name
        starts with ``split`` are preferred, e.g. a Hub snapshot's
        ``data/train-*.parquet``); a Hub dataset id such as
        ``"eagle0504/multireward-grpo-gsm8k-rewards"`` (needs ``datasets``,
        imported only then); or an in-memory table (dict of columns, pyarrow
        Table, pandas DataFrame, ``datasets.Dataset``).
    channels : sequence of str, optional
        Reward columns, in channel order. Default: the schema's channels (see
        the module docstring).
    model : str, optional
        Which model's rollouts to keep; required when the table holds several.
    m : int, optional
        Rollouts per group; groups with more keep their first ``m``.
        Default: the table's group size.
    drop_incomplete : bool, default False
        Leave out prompts with a missing seed or rollout (listed in
        ``RolloutData.dropped``) instead of raising.
    schema : {"gsm8k", "fintech", "generic"}, optional
        Force a schema instead of detecting it from the columns.
    config, split, revision : str, optional
        Hub dataset configuration, split (default ``"train"``) and revision.
    nan_policy : {"raise", "propagate", "omit"}, default "raise"
        What a missing reward (null, NaN or absent) in a used rollout does:
        ``"raise"`` refuses the table, naming the row (counted from 0 in table
        order) with its prompt, seed and rollout; ``"propagate"`` and
        ``"omit"`` keep it as NaN for the estimators' ``nan_policy``.

    Returns
    -------
    RolloutData

    Raises
    ------
    ValueError
        Unknown schema or channels, non-integer indices, duplicate rows,
        several models without ``model=``, incomplete groups, a missing
        reward under ``nan_policy="raise"`` (``MissingRewardError``), or a
        file that is no rollout table (``RolloutFileError``: empty, lines that
        are not JSON objects, not Parquet, none of the schemas' columns).
    FileNotFoundError
        ``source`` looks like a path that does not exist.
    DataUnavailableError
        A Hub id could not be loaded (offline, ``datasets`` missing, ...).
    """
    nan_policy = _check_nan_policy(nan_policy)
    cols, origin, meta = _read_source(source, config=config, split=split, revision=revision)
    spec = _detect_schema(cols, schema, origin)
    chosen, keep, models = _pick_model(cols, model)
    row_numbers = np.arange(len(cols[spec.prompt_key])) if keep is None else np.flatnonzero(keep)
    if keep is not None:
        cols = {name: _column_array(values)[keep] for name, values in cols.items()}
    names = _channels(cols, spec, channels)
    packed = _pack(cols, spec, names, m=_check_m(m), nan_policy=nan_policy, row_numbers=row_numbers,
                   origin=origin)
    meta = {**meta, "prompt_key": spec.prompt_key, "m_available": packed["m_available"], "models": models}
    return _finish(packed, spec, names, drop_incomplete=drop_incomplete, model=chosen, origin=origin, meta=meta)


def _finish(packed: dict, spec: Schema, names: list, *, drop_incomplete: bool, model: str | None,
            origin: str, meta: dict) -> RolloutData:
    """Apply the completeness rule and build the result."""
    present, ids = packed["present"], packed["prompt_ids"]
    bad = np.flatnonzero(~present.all(axis=(1, 2)))
    reasons = [(ids[p], _what_is_missing(present[p], packed["seed_ids"])) for p in bad.tolist()]
    if len(bad) and not drop_incomplete:
        raise ValueError(_incomplete_message(reasons, spec.prompt_key, len(ids), present.shape[2]))
    good = np.setdiff1d(np.arange(len(ids)), bad)
    if good.size == 0:
        raise ValueError(f"no prompt has complete groups at m={present.shape[2]} (all {len(ids)} were incomplete, "
                         f"e.g. {spec.prompt_key} {reasons[0][0]!r}: {reasons[0][1]}); try a smaller m=")
    completions = packed["completions"]
    return RolloutData(
        rewards=packed["rewards"][good], channel_names=tuple(names),
        prompt_ids=tuple(ids[p] for p in good.tolist()), seed_ids=tuple(packed["seed_ids"]),
        prompts=tuple(packed["prompts"][p] for p in good.tolist()),
        completions=None if completions is None else completions[good],
        model=model, source=origin, schema=spec.name, dropped=tuple(reasons), metadata=meta)


# --------------------------------------------------------------------------- reading


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE") for v in _OFFLINE_VARS)


def _load_hub_dataset(repo_id: str, *, config: str | None, split: str, revision: str | None = None) -> Any:
    """``datasets.load_dataset(repo_id, config, split=...)``, or :class:`DataUnavailableError`.

    Offline mode still tries, because ``datasets`` serves a cached copy then;
    the error message carries the reason only, callers add what to do.
    """
    try:
        import datasets
    except ImportError:
        raise DataUnavailableError(f"the `datasets` package is not installed ({_DATA_EXTRA})") from None
    try:
        return datasets.load_dataset(repo_id, config, split=split, revision=revision)
    except Exception as err:  # datasets raises many types (ConnectionError, FileNotFoundError, its own)
        why = f"{type(err).__name__}: {err}"
        if _offline():
            why = f"offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and no cached copy was found ({why})"
        raise DataUnavailableError(why) from err


def _read_source(source: Any, *, config: str | None, split: str,
                 revision: str | None) -> tuple[dict, str, dict]:
    """Columns of ``source`` as ``(columns, description, metadata)``."""
    if not isinstance(source, (str, os.PathLike)):
        return _columns_of(source), f"<{type(source).__name__}>", {}
    path = Path(source)
    if path.is_dir():
        files = _table_files(path, split)
        return _concat([_columns_of(f) for f in files]), str(path), {"files": [str(f) for f in files]}
    if path.exists():
        if path.suffix.lower() not in _SUFFIXES:
            raise ValueError(f"unsupported rollout file {path.name!r}: use .parquet or .jsonl")
        return _columns_of(path), str(path), {}
    if isinstance(source, str) and _HUB_ID.match(source) and path.suffix.lower() not in _SUFFIXES:
        return _from_hub(source, config=config, split=split, revision=revision)
    raise FileNotFoundError(f"no such file or folder: {source!r} (a Hub dataset id looks like 'owner/name')")


def _from_hub(repo_id: str, *, config: str | None, split: str, revision: str | None) -> tuple[dict, str, dict]:
    if not isinstance(split, str):
        raise TypeError(f"split must be a str such as 'train', got {split!r}")
    try:
        ds = _load_hub_dataset(repo_id, config=config, split=split, revision=revision)
    except DataUnavailableError as err:
        raise DataUnavailableError(
            f"could not load the Hub dataset {repo_id!r} (config={config!r}, split={split!r}): {err}. "
            f"Install the data extra ({_DATA_EXTRA}) and allow Hub access, or download it where the Hub is "
            f"reachable (huggingface-cli download --repo-type dataset {repo_id} --local-dir DIR) and pass "
            "the local folder or .parquet/.jsonl file to load_rollouts"
        ) from err.__cause__
    meta = {"config": config, "split": split, "revision": revision}
    return _columns_of(ds), repo_id, meta


def _table_files(folder: Path, split: str) -> list[Path]:
    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in _SUFFIXES and f.is_file()
                   and not any(part.startswith(".") for part in f.relative_to(folder).parts))
    if not files:
        raise FileNotFoundError(f"{folder} holds no .parquet or .jsonl file")
    of_split = [f for f in files if f.name.startswith(split)]
    return of_split or files


def _concat(parts: list[dict]) -> dict:
    names = list(parts[0])
    for nxt in parts[1:]:
        if list(nxt) != names:
            raise ValueError(f"the files have different columns: {names} vs {list(nxt)}")
    return {n: [v for part in parts for v in part[n]] for n in names}


# --------------------------------------------------------------------------- columns


def _detect_schema(cols: dict, schema: str | None, origin: str) -> Schema:
    if schema is not None:
        if schema not in SCHEMAS:
            raise ValueError(f"unknown schema {schema!r}; choose from {sorted(SCHEMAS)}")
        spec = SCHEMAS[schema]
    elif "scenario_id" in cols:
        spec = SCHEMAS["fintech"]
    elif {"prompt_idx", "correctness", "length", "format"} <= set(cols):
        spec = SCHEMAS["gsm8k"]
    else:
        spec = SCHEMAS["generic"]
    absent = [c for c in (spec.prompt_key, *_INDEX) if c not in cols]
    if absent:
        raise RolloutFileError(f"{origin} is not a rollout table: it lacks columns {absent} of the {spec.name!r} "
                               f"rollout schema; it has {list(cols)} (see the long format in README)")
    return spec


def _pick_model(cols: dict, model: str | None) -> tuple[str | None, np.ndarray | None, list]:
    """``(model kept, row mask or None for every row, models in the table)``."""
    if "model" not in cols:
        if model is not None:
            raise ValueError(f"model={model!r} was given but the table has no 'model' column")
        return None, None, []
    names = _column_array(cols["model"])
    found = list(dict.fromkeys(names.tolist()))
    if model is None:
        if len(found) > 1:
            raise ValueError(f"the table holds rollouts of {len(found)} models {found}; pick one with model=...")
        return (found[0] if found else None), None, found
    if model not in found:
        raise ValueError(f"model {model!r} is not in the table; it holds {found}")
    return model, names == model, found


def _reserved(spec: Schema) -> set:
    every = {s.prompt_key for s in SCHEMAS.values()} | {c for s in SCHEMAS.values() for c in s.size_columns}
    return every | set(_INDEX) | {"model"} | set(spec.prompt_fields)


def _channels(cols: dict, spec: Schema, channels: Sequence[str] | None) -> list[str]:
    if channels is not None:
        names = [channels] if isinstance(channels, str) else list(channels)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"channels must be distinct column names, got {channels!r}")
    elif spec.channels:
        names = list(spec.channels)
    else:
        names = [c for c in cols if c not in _reserved(spec) and _is_numeric_column(cols[c])]
        if not names:
            raise ValueError(f"no numeric reward columns among {list(cols)}; pass channels=[...]")
    unknown = [c for c in names if c not in cols]
    if unknown:
        raise ValueError(f"channels {unknown} are not columns of this {spec.name} table ({list(cols)}); "
                         "pass channels=[...]")
    return names


def _ints(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)  # JSON and pandas may give 3.0 for 3
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError(f"column {name!r} must hold integers, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"column {name!r} holds negative values (e.g. {int(arr.min())})")
    return arr.astype(np.int64)


def _check_m(m: Any) -> int | None:
    if m is None:
        return None
    if isinstance(m, (bool, np.bool_)) or not isinstance(m, (int, np.integer)):
        raise TypeError(f"m must be an int or None, got {m!r}")
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    return int(m)


def _codes(values: Any, name: str) -> tuple[list, np.ndarray]:
    """Prompt keys and per-row positions: ints ascending, other keys by first appearance."""
    arr = _column_array(values)
    if arr.dtype.kind in "iuf":
        uniq, codes = np.unique(_ints(arr, name), return_inverse=True)
        return [int(u) for u in uniq], codes
    keys = arr.tolist()
    if any(k is None for k in keys):
        raise ValueError(f"column {name!r} has empty (null) prompt keys")
    seen: dict = {}
    codes = np.fromiter((seen.setdefault(k, len(seen)) for k in keys), dtype=np.int64, count=len(keys))
    return list(seen), codes


# --------------------------------------------------------------------------- packing


def _group_size(cols: dict, spec: Schema, group: np.ndarray, rollout: np.ndarray, n_groups: int,
                m: int | None) -> tuple[int, int]:
    """``(m used, group size available)`` from the size column or the rollout indices."""
    size_col = next((c for c in spec.size_columns if c in cols), None)
    if size_col is None:
        available = int(rollout.max()) + 1
        return (available if m is None else m), available
    size = _ints(cols[size_col], size_col)
    low = np.full(n_groups, np.iinfo(np.int64).max)
    high = np.full(n_groups, -1)
    np.minimum.at(low, group, size)
    np.maximum.at(high, group, size)
    if np.any((high >= 0) & (low != high)):
        raise ValueError(f"column {size_col!r} varies inside a (prompt, seed) group; a table that stores several "
                         "group sizes per group is a saved corpus: read it with generation.load_corpus")
    over = np.flatnonzero(rollout >= size)
    if over.size:
        raise ValueError(f"row {int(over[0])} has rollout_idx {int(rollout[over[0]])} but {size_col} "
                         f"{int(size[over[0]])}; the file is inconsistent")
    sizes = sorted(set(high[high >= 0].tolist()))
    if m is None and len(sizes) > 1:
        raise ValueError(f"groups have different sizes {sizes} ({size_col}); pass m= (at most {sizes[0]} "
                         "keeps every prompt)")
    if m is not None and m > sizes[-1]:
        raise ValueError(f"m={m} exceeds the largest group size in the table ({sizes[-1]}, column {size_col!r})")
    return (sizes[0] if m is None else m), sizes[-1]


def _pack(cols: dict, spec: Schema, names: list[str], *, m: int | None, nan_policy: str,
          row_numbers: np.ndarray, origin: str) -> dict:
    """Scatter rows into ``(P, K, m, R)`` with a presence mask; never fills a gap.

    ``row_numbers`` maps each row of ``cols`` to its row in the source table
    (they differ once one model's rows are selected), for error messages.
    """
    ids, prompt = _codes(cols[spec.prompt_key], spec.prompt_key)
    seed_values, seed = np.unique(_ints(cols["seed_idx"], "seed_idx"), return_inverse=True)
    rollout = _ints(cols["rollout_idx"], "rollout_idx")
    if rollout.size == 0:
        raise ValueError("the table has no rows (after selecting the model)")
    P, K = len(ids), len(seed_values)
    used, available = _group_size(cols, spec, prompt * K + seed, rollout, P * K, m)
    rows = np.flatnonzero(rollout < used)  # a longer group keeps its first `used` rollouts
    cell = (prompt[rows] * K + seed[rows]) * used + rollout[rows]
    counts = np.bincount(cell, minlength=P * K * used)
    if np.any(counts > 1):
        raise ValueError(_duplicate_message(int(np.argmax(counts > 1)), ids, seed_values, K, used, spec))
    values = np.column_stack([_float_column(cols[c], c)[rows] for c in names])
    keys = np.fromiter(ids, dtype=object, count=len(ids))
    _check_rewards(values, names, rows=row_numbers[rows], prompt=keys[prompt[rows]], seed=seed_values[seed[rows]],
                   rollout=rollout[rows], nan_policy=nan_policy, source=origin)
    rewards = np.full((P * K * used, len(names)), np.nan)
    rewards[cell] = values
    first = np.unique(prompt, return_index=True)[1]
    return {"rewards": rewards.reshape(P, K, used, len(names)), "present": (counts == 1).reshape(P, K, used),
            "prompt_ids": ids, "seed_ids": [int(s) for s in seed_values], "m_available": available,
            "prompts": [_prompt_fields(cols, spec, int(r)) for r in first],
            "completions": _completions(cols, spec, rows, cell, P, K, used)}


def _completions(cols: dict, spec: Schema, rows: np.ndarray, cell: np.ndarray, P: int, K: int,
                 used: int) -> np.ndarray | None:
    if spec.completion is None or spec.completion not in cols:
        return None
    out = np.full(P * K * used, None, dtype=object)
    out[cell] = _column_array(cols[spec.completion]).astype(object)[rows]
    return out.reshape(P, K, used)


def _prompt_fields(cols: dict, spec: Schema, row: int) -> dict:
    return {f: _plain(cols[f][row]) for f in spec.prompt_fields if f in cols}


def _plain(value: Any) -> Any:
    """A JSON-plain copy of a table cell (numpy scalars unwrapped, dates as ISO text)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


# --------------------------------------------------------------------------- messages


def _duplicate_message(cell: int, ids: list, seeds: np.ndarray, K: int, used: int, spec: Schema) -> str:
    group, j = divmod(cell, used)
    p, k = divmod(group, K)
    return (f"{spec.prompt_key} {ids[p]!r}, seed_idx {int(seeds[k])}, rollout_idx {j} appears more than once; "
            "the table mixes runs (e.g. several models or repeated generations without a column telling them "
            "apart)")


def _what_is_missing(present: np.ndarray, seeds: list) -> str:
    """Describe the gaps of one prompt; ``present`` is its ``(K, m)`` mask."""
    whole = [seeds[k] for k in np.flatnonzero(~present.any(axis=1)).tolist()]
    parts = [f"seeds {_list(whole)} missing"] if whole else []
    for k in np.flatnonzero(present.any(axis=1) & ~present.all(axis=1)).tolist()[:_SHOW]:
        parts.append(f"seed {seeds[k]} lacks rollouts {_list(np.flatnonzero(~present[k]).tolist())}")
    return "; ".join(parts)


def _list(values: list) -> str:
    shown = ", ".join(map(str, values[:_SHOW * 2]))
    return f"[{shown}{f', ... ({len(values)} in all)' if len(values) > _SHOW * 2 else ''}]"


def _incomplete_message(reasons: list, key: str, P: int, m: int) -> str:
    lines = "\n".join(f"  {key} {pid!r}: {why}" for pid, why in reasons[:_SHOW])
    more = f"\n  ... and {len(reasons) - _SHOW} more" if len(reasons) > _SHOW else ""
    return (f"{len(reasons)} of {P} prompts have incomplete groups at m={m}:\n{lines}{more}\n"
            "Pass drop_incomplete=True to leave them out (they are listed in RolloutData.dropped), "
            "or a smaller m= if only the last rollouts are missing.")
