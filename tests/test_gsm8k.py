"""GSM8K loaders: local files, the environment variable, the offline error, sampling, gold parsing, the sample."""

import ast
import json
import re
import subprocess
import sys
import types
from fractions import Fraction

import pytest

from multireward_grpo.examples import gsm8k
from multireward_grpo.examples.gsm8k import (
    ENV_VAR,
    SAMPLE_PATH,
    gold_from_answer,
    gsm8k_prompts_with_gold,
    load_gsm8k_prompts,
)
from multireward_grpo.generation.datasets import DataUnavailableError

ROWS = [{"question": f"What is {i} plus {i + 1}?", "answer": f"{i}+{i + 1}=<<{i}+{i + 1}={2 * i + 1}>>{2 * i + 1}\n"
         f"#### {2 * i + 1:,}"} for i in range(0, 1200, 50)]  # 24 rows, some golds with a thousands comma


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _write_jsonl(path, rows=ROWS):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _write_parquet(path, rows=ROWS):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"question": [r["question"] for r in rows], "answer": [r["answer"] for r in rows]}), path)
    return path


# ----------------------------------------------------------------------------- gold_from_answer


@pytest.mark.parametrize("answer, gold", [
    ("So 12 in all.\n#### 12", "12"),
    ("#### 1,234", "1234"),
    ("#### -5", "-5"),
    ("#### 3.50", "3.5"),
    ("#### 7.0", "7"),
    ("####  $1,000,000 ", "1000000"),
    ("#### 12.", "12"),
    ("#### +4", "4"),
    ("#### -0", "0"),
    ("#### .25", "0.25"),
    ("a #### 3 then\n#### 9", "9"),  # the last marker wins
])
def test_gold_from_answer(answer, gold):
    assert gold_from_answer(answer) == gold


def test_gold_from_answer_errors_name_the_row():
    with pytest.raises(ValueError, match=r"test.jsonl row 4: the answer has no '#### <number>'"):
        gold_from_answer("The answer is 5.", where="test.jsonl row 4")
    with pytest.raises(ValueError, match="not a number: 'five'"):
        gold_from_answer("#### five")
    with pytest.raises(TypeError, match="not text"):
        gold_from_answer(None)


# ----------------------------------------------------------------------------- sources


def test_load_from_jsonl_path_items(tmp_path):
    path = _write_jsonl(tmp_path / "mine.jsonl")
    items = load_gsm8k_prompts(5, path=path, seed=3)
    assert len(items) == 5 and len({it["idx"] for it in items}) == 5
    for it in items:
        row = ROWS[it["idx"]]
        assert it["prompt"] == row["question"] and it["answer"] == row["answer"]
        assert it["gold"] == str(2 * ROWS.index(row) * 50 + 1)  # thousands comma stripped
        assert it["messages"] == [{"role": "system", "content": gsm8k.SYSTEM_PROMPT},
                                  {"role": "user", "content": row["question"]}]
    bare = load_gsm8k_prompts(5, path=str(path), seed=3, system_prompt=None)
    assert [it["messages"] for it in bare] == [[{"role": "user", "content": it["prompt"]}] for it in items]


def test_parquet_and_jsonl_agree(tmp_path):
    a = load_gsm8k_prompts(7, path=_write_jsonl(tmp_path / "x.jsonl"), seed=1)
    b = load_gsm8k_prompts(7, path=_write_parquet(tmp_path / "x.parquet"), seed=1)
    assert a == b


def test_folder_holding_split_files(tmp_path):
    _write_jsonl(tmp_path / "test.jsonl")
    _write_jsonl(tmp_path / "train.jsonl", ROWS[:3])
    assert len(load_gsm8k_prompts(None, split="train", path=tmp_path)) == 3
    assert len(load_gsm8k_prompts(None, split="test", path=tmp_path)) == len(ROWS)
    with pytest.raises(FileNotFoundError, match="holds no validation.jsonl"):
        load_gsm8k_prompts(split="validation", path=tmp_path)


def test_hub_style_shards_are_joined(tmp_path):
    (tmp_path / "main").mkdir()
    _write_parquet(tmp_path / "main" / "test-00000-of-00002.parquet", ROWS[:10])
    _write_parquet(tmp_path / "main" / "test-00001-of-00002.parquet", ROWS[10:])
    items = load_gsm8k_prompts(None, path=tmp_path)
    assert sorted(it["prompt"] for it in items) == sorted(r["question"] for r in ROWS)


def test_env_var_file_and_folder(tmp_path, monkeypatch):
    file = _write_jsonl(tmp_path / "some.jsonl", ROWS[:4])
    monkeypatch.setenv(ENV_VAR, str(file))
    assert len(load_gsm8k_prompts(None)) == 4
    folder = tmp_path / "gsm"
    folder.mkdir()
    _write_parquet(folder / "test.parquet", ROWS[:6])
    monkeypatch.setenv(ENV_VAR, str(folder))
    assert len(load_gsm8k_prompts(None)) == 6
    assert len(load_gsm8k_prompts(None, path=file)) == 4  # path= wins over the variable
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=f"\\${ENV_VAR} points to .*nope"):
        load_gsm8k_prompts()


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_gsm8k_prompts(path=tmp_path / "missing.jsonl")
    bad = _write_jsonl(tmp_path / "bad.jsonl", ROWS[:2] + [{"question": "q", "answer": "no marker"}])
    with pytest.raises(ValueError, match=r"bad.jsonl row 2: the answer has no '####"):
        load_gsm8k_prompts(path=bad)
    keys = _write_jsonl(tmp_path / "keys.jsonl", [{"problem": "q", "solution": "#### 1"}])
    with pytest.raises(ValueError, match="line 1 needs 'question' and 'answer'"):
        load_gsm8k_prompts(path=keys)
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"question": ["q"]}), tmp_path / "cols.parquet")
    with pytest.raises(ValueError, match=r"lacks the GSM8K column\(s\) \['answer'\]"):
        load_gsm8k_prompts(path=tmp_path / "cols.parquet")
    (tmp_path / "x.csv").write_text("question,answer\n")
    with pytest.raises(ValueError, match="unsupported GSM8K file"):
        load_gsm8k_prompts(path=tmp_path / "x.csv")


# ----------------------------------------------------------------------------- the Hub and the offline error


def _stub_datasets(monkeypatch, load):
    module = types.ModuleType("datasets")
    module.load_dataset = load
    monkeypatch.setitem(sys.modules, "datasets", module)


def _assert_says_what_to_do(message):
    assert ENV_VAR in message and "path=" in message
    assert 'pip install "multireward-grpo[data]"' in message
    assert "multireward_grpo.examples.gsm8k.SAMPLE_PATH" in message


def test_offline_error_without_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(DataUnavailableError, match="`datasets` package is not installed") as info:
        load_gsm8k_prompts(5)
    _assert_says_what_to_do(str(info.value))


def test_offline_error_when_the_hub_load_fails(monkeypatch):
    def load(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)")

    _stub_datasets(monkeypatch, load)
    with pytest.raises(DataUnavailableError, match="offline mode is on") as info:
        gsm8k_prompts_with_gold(5)
    _assert_says_what_to_do(str(info.value))
    assert isinstance(info.value.__cause__, ConnectionError)


def test_hub_path_uses_openai_gsm8k_main(monkeypatch):
    calls = []

    def load(name, config, *, split, revision=None):
        calls.append((name, config, split))
        return {"question": [r["question"] for r in ROWS], "answer": [r["answer"] for r in ROWS]}

    _stub_datasets(monkeypatch, load)
    items = load_gsm8k_prompts(3, split="train", seed=2)
    assert calls == [("openai/gsm8k", "main", "train")] and len(items) == 3
    assert items[0]["prompt"] == ROWS[items[0]["idx"]]["question"]


# ----------------------------------------------------------------------------- sampling


def test_sampling_is_seeded_nested_and_without_replacement(tmp_path):
    path = _write_jsonl(tmp_path / "t.jsonl")
    a = load_gsm8k_prompts(10, path=path, seed=7)
    assert a == load_gsm8k_prompts(10, path=path, seed=7)
    assert [it["idx"] for it in a] != [it["idx"] for it in load_gsm8k_prompts(10, path=path, seed=8)]
    assert len({it["idx"] for it in a}) == 10
    assert load_gsm8k_prompts(4, path=path, seed=7) == a[:4]  # a smaller n is a prefix
    everything = load_gsm8k_prompts(None, path=path, seed=7)
    assert sorted(it["idx"] for it in everything) == list(range(len(ROWS)))
    assert everything[:10] == a
    assert gsm8k_prompts_with_gold(10, path=path, seed=7) == [(it["prompt"], it["gold"]) for it in a]


def test_n_larger_than_the_file_warns_and_returns_all(tmp_path):
    path = _write_jsonl(tmp_path / "t.jsonl")
    with pytest.warns(UserWarning, match=f"n=100 problems but .* has {len(ROWS)}"):
        items = load_gsm8k_prompts(100, path=path)
    assert len(items) == len(ROWS)


@pytest.mark.parametrize("n, err", [(0, ValueError), (-1, ValueError), (True, TypeError), (2.0, TypeError)])
def test_bad_n(tmp_path, n, err):
    with pytest.raises(err, match="n must be"):
        load_gsm8k_prompts(n, path=_write_jsonl(tmp_path / "t.jsonl"))


def test_bad_seed_and_split(tmp_path):
    path = _write_jsonl(tmp_path / "t.jsonl")
    with pytest.raises(TypeError, match="seed must be an int"):
        load_gsm8k_prompts(3, path=path, seed="0")
    with pytest.raises(TypeError, match="split must be"):
        load_gsm8k_prompts(3, split=None, path=path)


def test_import_is_light():
    code = ("import sys, multireward_grpo.examples.gsm8k; "
            "print([m for m in ('datasets', 'pandas', 'torch', 'pyarrow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- the bundled sample

# Final answers re-derived by hand from each question's numbers, in file order.
EXPECTED = [
    7 * 9 - 41, 14 * 5 + 25 * 2, 18 * 2 + 11 * 3, 78 // 6, 5 * 8 * 6,
    2 * 12 + 3 * 7, 150 - 150 // 5 + 23, 64 * 3 + 50 * 2, -(-300 // 24), Fraction("2.5") + Fraction("3.5") + 4,
    4 * 8 - 6 * 4, 20 * 3 - (20 // 5) * 12, -4 + 3 - 9, 6 * 28 // 42, 36 + 36 * 2 - 15,
    25 + 340 * Fraction("0.10"), 2 * (25 + 12) * 4, 100 - (3 * 18 + 35), 1200 * Fraction(3, 4) - 250, 2 * 7 + 4 + 5,
    1250 * 8 * Fraction(97, 100), 9 * Fraction(2, 3), 5 * 25 + 8 * 10 + 12 * 5, 420 // 28 * 4,
    2400 - 2400 * Fraction(15, 100) + 130,
    45 % 6, 6 + (10 - 1) * 2, 84 * Fraction(120, 100) / 3, 12 * 16 - 37, 45 * 6 * 4 / Fraction(60),
    40 * 22 - 3 * 22 - 40 * 15, (48 // 4) ** 2, 14 * (6 + 5) / Fraction(2), (30 - 30 * Fraction(40, 100)) * Fraction(2, 3),
    24 // (1 + 3) * 3,
    100 - 8 * 7, 5 + 4 - 11, 40 * Fraction("1.5") + 24 * Fraction("2.25"), 15 * 30 // 18, 12 + 3 * 12 + (3 * 12 + 26),
    4 * 6 // 3, 14 * 22 - 237,
]


def _exact(expr: str) -> Fraction:
    """Evaluate + - * / and parentheses on decimal literals exactly."""
    ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
           ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}

    def go(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -go(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](go(node.left), go(node.right))
        raise ValueError(f"unexpected syntax in {expr!r}")

    return go(ast.parse(expr, mode="eval").body)


def _sample_rows():
    return [json.loads(line) for line in SAMPLE_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_sample_is_bundled_and_loads():
    assert SAMPLE_PATH.is_file() and SAMPLE_PATH.parent.name == "data"
    rows = _sample_rows()
    assert 30 <= len(rows) <= 50 and len(rows) == len(EXPECTED)
    assert len({r["question"] for r in rows}) == len(rows)
    items = load_gsm8k_prompts(None, path=SAMPLE_PATH)
    assert sorted(it["idx"] for it in items) == list(range(len(rows)))


def test_sample_final_answers_match_independent_derivation():
    for i, row in enumerate(_sample_rows()):
        assert Fraction(gold_from_answer(row["answer"])) == Fraction(EXPECTED[i]), (i, row["question"])


def test_sample_worked_steps_are_correct():
    marker = re.compile(r"<<([^=<>]+)=([^<>]+)>>(-?\d+(?:\.\d+)?)")
    for i, row in enumerate(_sample_rows()):
        lines = row["answer"].splitlines()
        assert lines[-1].startswith("#### ") and all("####" not in line for line in lines[:-1])
        steps = marker.findall(row["answer"])
        assert steps and len(steps) == row["answer"].count("<<"), f"row {i}: missing or malformed calculations"
        for expr, claimed, shown in steps:
            assert _exact(expr) == Fraction(claimed) and shown == claimed, (i, expr, claimed, shown)


def test_items_feed_the_math_reward_function():
    rewards = pytest.importorskip("multireward_grpo.rewards")
    fn = rewards.MathRewardFunction()
    for item in load_gsm8k_prompts(5, path=SAMPLE_PATH):
        correctness, _, fmt = fn(item["answer"], item)  # a worked answer scores as correct and well formatted
        assert correctness == 1.0 and fmt == 1.0, item["idx"]
        assert fn("#### 123456789", item)[0] == 0.0
