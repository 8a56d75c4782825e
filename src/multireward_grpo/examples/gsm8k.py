"""GSM8K prompts with gold answers, from a local file or the Hugging Face Hub.

Where the data comes from, in order:

1. the ``path=`` argument;
2. the environment variable ``MULTIREWARD_GRPO_GSM8K``;
3. the Hub dataset ``openai/gsm8k`` (config ``"main"``) through ``datasets``
   (``pip install "multireward-grpo[data]"``; offline, a copy already in the
   ``datasets`` cache is still used).

A path may be a file or a folder. A folder is searched for ``{split}.jsonl``,
``{split}.parquet``, then the Hub's own file names ``{split}-*.parquet`` and
``main/{split}-*.parquet``. Files are in the GSM8K format: JSONL (one object
per line) or Parquet with a ``question`` and an ``answer`` column, where the
answer is a worked solution whose last line is ``#### <number>``.

:data:`SAMPLE_PATH` is a small bundled file in that format (original problems
written for this package, not taken from GSM8K) for trying things offline::

    load_gsm8k_prompts(10, path=SAMPLE_PATH)

Sampling
--------
``n`` rows without replacement, from ``numpy.random.default_rng(seed)``:
the first ``n`` of a seeded permutation of the rows, so for one seed a
smaller ``n`` gives a prefix of a larger one. ``n=None`` returns every row
in that seeded order; ``n`` larger than the file returns every row with a
``UserWarning`` (rather than an error, so a default ``n=100`` works on small
local files).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from decimal import Decimal
from pathlib import Path

import numpy as np

__all__ = [
    "ENV_VAR",
    "HUB_CONFIG",
    "HUB_ID",
    "SAMPLE_PATH",
    "SYSTEM_PROMPT",
    "gold_from_answer",
    "gsm8k_prompts_with_gold",
    "load_gsm8k_prompts",
]

ENV_VAR = "MULTIREWARD_GRPO_GSM8K"
HUB_ID = "openai/gsm8k"
HUB_CONFIG = "main"
SAMPLE_PATH = Path(__file__).parent / "data" / "gsm8k_sample.jsonl"
SYSTEM_PROMPT = (
    "You are a careful math tutor. Solve the problem step by step, showing your calculations. "
    "End with the final answer on its own line in the form '#### <number>'."
)
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)")


def gold_from_answer(answer: str, *, where: str | None = None) -> str:
    """The final number of a GSM8K worked answer (the text after the last ``####``).

    Thousands separators, a ``$`` sign, spaces and a trailing period are
    removed and the number is written canonically: ``"#### 1,234"`` gives
    ``"1234"``, ``"#### -3"`` gives ``"-3"``, ``"#### 2.50"`` gives ``"2.5"``,
    ``"#### 7.0"`` gives ``"7"``.

    Parameters
    ----------
    answer : str
        A worked answer ending in ``#### N``.
    where : str, optional
        Names the row in error messages (e.g. ``"test.jsonl row 12"``).

    Raises
    ------
    ValueError
        No ``####`` marker, or no number after it.
    TypeError
        ``answer`` is not a string.
    """
    label = f"{where}: " if where else ""
    if not isinstance(answer, str):
        raise TypeError(f"{label}the answer is {type(answer).__name__}, not text")
    _, marker, tail = answer.rpartition("####")
    if not marker:
        raise ValueError(f"{label}the answer has no '#### <number>' final line: {_clip(answer)!r}")
    text = tail.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"{label}the text after '####' is not a number: {_clip(tail.strip())!r}")
    return _canonical(Decimal(text))


def _canonical(value: Decimal) -> str:
    if value == value.to_integral_value():
        return str(int(value))  # also turns -0 into 0
    return format(value.normalize(), "f")


def _clip(text: str, width: int = 80) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def load_gsm8k_prompts(n: int | None = 100, split: str = "test", seed: int = 0, *,
                       path: str | os.PathLike | None = None,
                       system_prompt: str | None = SYSTEM_PROMPT) -> list[dict]:
    """Sample GSM8K problems as chat prompts with their gold answers.

    Parameters
    ----------
    n : int or None, default 100
        Problems to sample without replacement (None: all, in a seeded order).
    split : str, default "test"
        ``"train"`` or ``"test"`` (any split name a local folder holds).
    seed : int, default 0
        Seed of the sample; the same seed gives the same problems.
    path : str or path, optional
        A GSM8K-format file or folder (see the module docstring); overrides
        ``MULTIREWARD_GRPO_GSM8K`` and the Hub.
    system_prompt : str or None
        The system message; None leaves it out.

    Returns
    -------
    list of dict
        ``n`` items ``{"messages": [system, user], "prompt": question,
        "gold": final number as text, "answer": full worked answer,
        "idx": row index in the split}``, usable as trainer prompts (the
        extra keys reach the reward function).

    Raises
    ------
    DataUnavailableError
        No local file is configured and the Hub cannot be used (offline,
        ``datasets`` missing or the download failed); the message says how to
        provide one.
    FileNotFoundError, ValueError
        A configured path is missing or not in the GSM8K format.
    """
    questions, answers, origin = _read_split(split, path)
    golds = [gold_from_answer(a, where=f"{origin} row {i}") for i, a in enumerate(answers)]
    rows = _sample_rows(len(questions), n, seed, origin)
    items = []
    for i in rows:
        user = {"role": "user", "content": questions[i]}
        messages = [user] if system_prompt is None else [{"role": "system", "content": system_prompt}, user]
        items.append({"messages": messages, "prompt": questions[i], "gold": golds[i],
                      "answer": answers[i], "idx": i})
    return items


def gsm8k_prompts_with_gold(n: int | None = 100, split: str = "test", seed: int = 0, *,
                            path: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """``(question, gold)`` pairs of the sample :func:`load_gsm8k_prompts` draws.

    Same arguments and sample (same rows, same order); the pairs feed
    ``generation.run_corpus`` directly.
    """
    return [(item["prompt"], item["gold"]) for item in load_gsm8k_prompts(n, split, seed, path=path)]


# --------------------------------------------------------------------------- sampling


def _sample_rows(total: int, n: int | None, seed: int, origin: str) -> list[int]:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"n must be an int or None, got {n!r}")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if n > total:
            warnings.warn(f"asked for n={n} problems but {origin} has {total}; returning all {total}",
                          UserWarning, stacklevel=3)
    order = np.random.default_rng(seed).permutation(total)
    return order[:n].tolist()  # a prefix, so samples of one seed are nested


# --------------------------------------------------------------------------- sources


def _read_split(split: str, path: str | os.PathLike | None) -> tuple[list[str], list[str], str]:
    """``(questions, answers, description of the source)`` for ``split``."""
    if not isinstance(split, str) or not split:
        raise TypeError(f"split must be a non-empty str such as 'test', got {split!r}")
    if path is not None:
        return _read_local(_resolve(Path(path), split, "path="), split)
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return _read_local(_resolve(Path(env).expanduser(), split, f"${ENV_VAR}"), split)
    return _read_hub(split)


def _resolve(path: Path, split: str, given_by: str) -> Path:
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"{given_by} points to {str(path)!r}, which does not exist")
    for pattern in (f"{split}.jsonl", f"{split}.parquet", f"{split}-*.parquet", f"main/{split}-*.parquet"):
        found = sorted(path.glob(pattern))
        if found:
            return found[0] if len(found) == 1 else path / pattern
    raise FileNotFoundError(f"{given_by} folder {str(path)!r} holds no {split}.jsonl or {split}.parquet "
                            f"(nor {split}-*.parquet); it has {sorted(p.name for p in path.iterdir())[:10]}")


def _read_local(path: Path, split: str) -> tuple[list[str], list[str], str]:
    """Read a JSONL or Parquet file; a ``*`` in the name joins the matching shards."""
    files = sorted(path.parent.glob(path.name)) if "*" in path.name else [path]
    questions, answers = [], []
    for f in files:
        suffix = f.suffix.lower()
        if suffix == ".jsonl":
            q, a = _read_jsonl(f)
        elif suffix == ".parquet":
            q, a = _read_parquet(f)
        else:
            raise ValueError(f"unsupported GSM8K file {f.name!r}: use .jsonl or .parquet")
        questions += q
        answers += a
    if not questions:
        raise ValueError(f"{path} holds no GSM8K rows")
    return questions, answers, str(path)


def _read_jsonl(path: Path) -> tuple[list[str], list[str]]:
    questions, answers = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {lineno} is not valid JSON ({err.msg})") from None
            if not isinstance(row, dict) or "question" not in row or "answer" not in row:
                raise ValueError(f"{path}: line {lineno} needs 'question' and 'answer' keys (GSM8K format)")
            questions.append(row["question"])
            answers.append(row["answer"])
    return questions, answers


def _read_parquet(path: Path) -> tuple[list[str], list[str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f'reading {path.name} needs pyarrow: pip install "multireward-grpo[data]"') from None
    names = pq.read_schema(path).names
    absent = [c for c in ("question", "answer") if c not in names]
    if absent:
        raise ValueError(f"{path} lacks the GSM8K column(s) {absent}; it has {names}")
    table = pq.read_table(path, columns=["question", "answer"])
    return table.column("question").to_pylist(), table.column("answer").to_pylist()


def _read_hub(split: str) -> tuple[list[str], list[str], str]:
    from multireward_grpo.generation.datasets import (
        DataUnavailableError,
        _load_hub_dataset,
    )

    try:
        ds = _load_hub_dataset(HUB_ID, config=HUB_CONFIG, split=split)
    except DataUnavailableError as err:
        raise DataUnavailableError(_unavailable_message(split, str(err))) from err.__cause__
    return list(ds["question"]), list(ds["answer"]), f"{HUB_ID} ({HUB_CONFIG}, {split})"


def _unavailable_message(split: str, reason: str) -> str:
    return (
        f"GSM8K is not available: no local file was given and the Hub dataset {HUB_ID!r} could not be "
        f"loaded ({reason}). Do one of:\n"
        f"  - pass path='/path/to/{split}.jsonl' (JSONL or Parquet with 'question' and 'answer' columns, "
        "answers ending in '#### <number>');\n"
        f"  - set the environment variable {ENV_VAR} to such a file, or to a folder holding "
        f"{split}.jsonl or {split}.parquet;\n"
        '  - pip install "multireward-grpo[data]" and allow Hub access (unset HF_HUB_OFFLINE), so that '
        f"{HUB_ID} downloads;\n"
        "  - or try the bundled sample of original GSM8K-style problems: "
        "path=multireward_grpo.examples.gsm8k.SAMPLE_PATH."
    )
