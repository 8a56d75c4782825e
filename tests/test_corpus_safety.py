"""Rollout files on disk: what run_corpus may overwrite, how corpora are written, missing rewards, unreadable files."""

import hashlib
import json
import math
import os
import re

import numpy as np
import pytest

from multireward_grpo.cli import main
from multireward_grpo.generation import (
    MockBackend,
    load_corpus,
    load_long_table,
    load_rollouts,
    run_corpus,
    save_corpus,
)
from multireward_grpo.generation import corpus as corpus_mod

PROMPTS = [(f"p{i}", str(i)) for i in range(3)]


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


class Counting:
    """A MockBackend that records its generate calls."""

    def __init__(self, **kw):
        self.inner = MockBackend(**kw)
        self.channel_names = self.inner.channel_names
        self.calls = []

    def describe(self):
        return self.inner.describe()

    def generate(self, prompt, gold, m, seed_idx):
        self.calls.append((prompt, m, seed_idx))
        return self.inner.generate(prompt, gold, m, seed_idx)


def _run(out, backend=None, K=2):
    return run_corpus(backend or MockBackend(seed=1), PROMPTS, m_grid=[4], K_seeds=K, out=out)


def _parquet_bytes(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "scratch.parquet"
    pq.write_table(pa.table({"prompt_idx": [0, 0], "seed_idx": [0, 0], "rollout_idx": [0, 1], "r": [1.0, 2.0]}), path)
    return path.read_bytes()


# ----------------------------------------------------------------------------- A2: run_corpus(out=) refuses other files

NOT_A_CORPUS = {
    "json config without a trailing newline": lambda tmp: b'{"lr": 0.001, "steps": 100, "model": "x"}',
    "binary file": lambda tmp: bytes(range(256)) * 8,
    "empty file": lambda tmp: b"",
    "jsonl of arrays": lambda tmp: b"[1, 2, 3]\n[4, 5, 6]\n[7, 8",
    "long table": lambda tmp: b'{"prompt_idx": 0, "seed_idx": 0, "rollout_idx": 0, "r": 1.0}\n{"prompt_idx": 0, ',
    "parquet bytes": _parquet_bytes,
    "json config with a format key": lambda tmp: b'{"format": "yaml", "x": 1}\n{"y": 2',
}


@pytest.mark.parametrize("kind", list(NOT_A_CORPUS))
def test_run_corpus_refuses_a_file_that_is_not_a_corpus(tmp_path, kind):
    out = tmp_path / "out.jsonl"
    out.write_bytes(NOT_A_CORPUS[kind](tmp_path))
    before = sha(out)
    backend = Counting(seed=1)
    with pytest.raises(ValueError, match=r"out\.jsonl exists and is not a rollout corpus.*choose another out= path "
                                         r"or delete it"):
        _run(out, backend)
    assert sha(out) == before and backend.calls == []


def test_run_corpus_refuses_a_corpus_of_another_run_even_when_truncated(tmp_path):
    out = tmp_path / "other.jsonl"
    _run(out, K=3)
    with open(out, "ab") as f:
        f.write(b'{"prompt_idx": 1, "seed_idx": 2, "m": 4, "rewards": [[0.1, 0.')  # crash mid-write
    before = sha(out)
    backend = Counting(seed=1)
    with pytest.raises(ValueError, match=r"holds a different run \(differs in: seed_indices\)"):
        _run(out, backend, K=2)
    with pytest.raises(ValueError, match="backend settings"):
        _run(out, Counting(seed=2), K=3)
    assert sha(out) == before and backend.calls == []


def test_run_corpus_of_this_run_truncated_mid_line_is_repaired_and_resumed(tmp_path):
    out = tmp_path / "ckpt.jsonl"
    reference = _run(None, K=3)
    _run(out, K=3)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:4]) + lines[4][:25])  # header + 3 groups + a torn 4th
    backend = Counting(seed=1)
    with pytest.warns(UserWarning, match="truncated last line"):
        assert _run(out, backend, K=3) == reference
    assert len(backend.calls) == len(reference.groups) - 3
    assert load_corpus(out) == reference


def test_run_corpus_refuses_a_parquet_out_path(tmp_path):
    with pytest.raises(ValueError, match=r"checkpoints are JSONL.*\.jsonl"):
        _run(tmp_path / "c.parquet")
    assert list(tmp_path.iterdir()) == []


def test_new_checkpoint_starts_with_the_header(tmp_path):
    out = tmp_path / "sub" / "ckpt.jsonl"
    corpus = _run(out)
    assert json.loads(out.read_text().splitlines()[0])["format"] == corpus_mod.FORMAT
    assert load_corpus(out) == corpus and sorted(p.name for p in out.parent.iterdir()) == ["ckpt.jsonl"]


# ----------------------------------------------------------------------------- A3: symlinks and temporary files


@pytest.mark.parametrize("dangling", [False, True])
def test_run_corpus_refuses_a_symlink_out(tmp_path, dangling):
    target = tmp_path / "elsewhere.jsonl"
    if not dangling:
        _run(target)  # even a checkpoint of this very run is not written through a link
        before = sha(target)
    link = tmp_path / "ckpt.jsonl"
    link.symlink_to(target)
    backend = Counting(seed=1)
    with pytest.raises(ValueError, match="symbolic link"):
        _run(link, backend)
    assert link.is_symlink() and backend.calls == []
    if dangling:
        assert not target.exists()
    else:
        assert sha(target) == before


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_save_corpus_replaces_a_symlink_and_leaves_its_target(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    target = tmp_path / "precious.txt"
    target.write_bytes(b"do not touch")
    link = tmp_path / f"corpus{suffix}"
    link.symlink_to(target)
    corpus = _run(None)
    save_corpus(corpus, link)
    assert target.read_bytes() == b"do not touch"
    assert not link.is_symlink() and load_corpus(link) == corpus


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_save_corpus_ignores_a_planted_tmp_name(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    target = tmp_path / "precious.txt"
    target.write_bytes(b"do not touch")
    planted = tmp_path / f"corpus{suffix}.tmp"
    planted.symlink_to(target)
    corpus = _run(None)
    path = save_corpus(corpus, tmp_path / f"corpus{suffix}")
    assert target.read_bytes() == b"do not touch"
    assert planted.is_symlink() and os.readlink(planted) == str(target)
    assert not path.is_symlink() and load_corpus(path) == corpus
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, planted.name, path.name])


def test_save_corpus_leaves_no_temp_file_after_an_error(tmp_path, monkeypatch):
    corpus = _run(None)
    path = save_corpus(corpus, tmp_path / "c.jsonl")
    before = sha(path)
    calls = []

    def failing_dumps(obj):
        calls.append(obj)
        if len(calls) > 3:
            raise RuntimeError("disk full")
        return json.dumps(obj).encode() + b"\n"

    monkeypatch.setattr(corpus_mod, "_dumps", failing_dumps)
    with pytest.raises(RuntimeError, match="disk full"):
        save_corpus(corpus, path)
    assert sha(path) == before and [p.name for p in tmp_path.iterdir()] == ["c.jsonl"]


def test_save_parquet_leaves_no_temp_file_after_an_error(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    def failing_write(table, where, **kw):
        where.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", failing_write)
    with pytest.raises(OSError, match="disk full"):
        save_corpus(_run(None), tmp_path / "c.parquet")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- B8: a missing reward keeps its channel

P, K, M = 3, 4, 3
MISSING_ROW = 17  # prompt 1, seed 1, rollout 2


def _long_rows():
    rng = np.random.default_rng(5)
    rows = []
    for p in range(P):
        for s in range(K):
            for r in range(M):
                correct, length = rng.normal(size=2)
                rows.append({"prompt_idx": p, "seed_idx": s, "rollout_idx": r, "correct": correct, "length": length})
    return rows


def _with_missing(rows, how, row=MISSING_ROW):
    rows = [dict(r) for r in rows]
    if how == "absent":
        del rows[row]["length"]
    else:
        rows[row]["length"] = None if how == "none" else math.nan
    return rows


def _write(rows, path):
    if path.suffix == ".parquet":
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        names = dict.fromkeys(k for r in rows for k in r)  # an absent key is a null cell in Parquet
        pq.write_table(pa.table({k: [r.get(k) for r in rows] for k in names}), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # NaN is written as the token NaN
    return path


LOADERS = {
    "load_corpus": lambda path, **kw: load_corpus(path, **kw),
    "load_long_table": lambda path, **kw: load_long_table(path, **kw),
    "load_rollouts": lambda path, **kw: load_rollouts(path, **kw).to_corpus(),
}


def _expected(rows):
    out = np.empty((P, K, M, 2))
    for row in rows:
        out[row["prompt_idx"], row["seed_idx"], row["rollout_idx"]] = [row["correct"], row.get("length", np.nan)]
    return out


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("how", ["none", "nan", "absent"])
@pytest.mark.parametrize("row", [MISSING_ROW, 0])
def test_missing_reward_raises_by_default_naming_the_row(tmp_path, loader, suffix, how, row):
    path = _write(_with_missing(_long_rows(), how, row), tmp_path / f"t{suffix}")
    p, s, r = divmod(row // M, K) + (row % M,)
    with pytest.raises(ValueError, match=rf"row {row} \(prompt {p}, seed {s}, rollout {r}\) has no value for "
                                         r"channel 'length'.*nan_policy='propagate'"):
        LOADERS[loader](path)


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("how", ["none", "nan", "absent"])
@pytest.mark.parametrize("policy", ["propagate", "omit"])
def test_missing_reward_keeps_the_channel_as_nan(tmp_path, loader, suffix, how, policy):
    rows = _with_missing(_long_rows(), how, row=0)  # row 0: the key is absent from the first line
    corpus = LOADERS[loader](_write(rows, tmp_path / f"t{suffix}"), nan_policy=policy)
    assert corpus.channel_names == ("correct", "length")
    got = corpus_mod.pack_for_analysis(corpus, M)
    np.testing.assert_array_equal(got, _expected(rows))  # equal_nan: the one NaN sits at its rollout
    assert np.isnan(got).sum() == 1 and np.isnan(got[0, 0, 0, 1])


def test_in_memory_table_with_a_missing_value(tmp_path):
    cols = {k: [r.get(k) for r in _long_rows()] for k in ("prompt_idx", "seed_idx", "rollout_idx", "correct",
                                                          "length")}
    cols["length"][MISSING_ROW] = None
    with pytest.raises(ValueError, match=rf"row {MISSING_ROW} .* channel 'length'"):
        load_long_table(cols)
    with pytest.raises(ValueError, match=rf"row {MISSING_ROW} .* channel 'length'"):
        load_rollouts(cols)
    assert load_long_table(cols, nan_policy="propagate").channel_names == ("correct", "length")
    assert load_rollouts(cols, nan_policy="omit").channel_names == ("correct", "length")


def test_infinite_reward_is_always_an_error():
    cols = {k: [r[k] for r in _long_rows()] for k in ("prompt_idx", "seed_idx", "rollout_idx", "correct", "length")}
    cols["correct"][4] = math.inf
    for policy in ("raise", "propagate", "omit"):
        with pytest.raises(ValueError, match=r"row 4 \(prompt 0, seed 1, rollout 1\) has an infinite value for "
                                             "channel 'correct'"):
            load_long_table(cols, nan_policy=policy)
        with pytest.raises(ValueError, match="row 4 .* infinite"):
            load_rollouts(cols, nan_policy=policy)


def test_nan_policy_is_checked():
    cols = {k: [r[k] for r in _long_rows()] for k in ("prompt_idx", "seed_idx", "rollout_idx", "correct")}
    for load in (load_long_table, load_rollouts):
        with pytest.raises(ValueError, match=r"unknown nan_policy 'propagte' \(did you mean 'propagate'\?\)"):
            load(cols, nan_policy="propagte")


def test_column_of_text_is_still_not_a_channel():
    cols = {k: [r[k] for r in _long_rows()] for k in ("prompt_idx", "seed_idx", "rollout_idx", "correct")}
    cols["note"] = ["ok"] * (len(cols["correct"]) - 1) + [None]
    cols["empty"] = [None] * len(cols["correct"])
    assert load_long_table(cols).channel_names == ("correct",)
    assert load_rollouts(cols).channel_names == ("correct",)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_corpus_with_nan_round_trips_under_propagate(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    table = _write(_with_missing(_long_rows(), "none"), tmp_path / "t.jsonl")
    corpus = load_rollouts(table, nan_policy="propagate").to_corpus()
    path = save_corpus(corpus, tmp_path / f"c{suffix}")
    with pytest.raises(ValueError, match=r"\(prompt 1, seed 1, rollout 2\) has no value for channel 'length'"):
        load_corpus(path)
    assert load_corpus(path, nan_policy="propagate") == corpus


# ----------------------------------------------------------------------------- D17: files that are not rollout tables


def _bad_files(tmp_path):
    (tmp_path / "adir").mkdir()
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"prompt_idx": 0, "seed_idx": 0, "rollout_idx": 0, "r": 1}\n\n{"prompt_idx": 1,, }\n')
    return {
        "directory": (tmp_path / "adir", r"adir is a directory; give a \.jsonl or \.parquet rollout file"),
        "arrays": (tmp_path / "arrays.jsonl", (r"line 1 of .*arrays\.jsonl is a JSON array, expected an object with "
                                               r"prompt_idx/seed_idx/rollout_idx/channel fields: see the long format")),
        "number lines": (tmp_path / "numbers.jsonl", r"line 1 of .*numbers\.jsonl is a JSON number, expected an"),
        "empty": (tmp_path / "empty.jsonl", r"empty\.jsonl is empty"),
        "blank lines": (tmp_path / "blank.jsonl", r"blank\.jsonl is empty"),
        "invalid json": (bad_json, r"bad\.jsonl: line 3 is not valid JSON"),
        "config object": (tmp_path / "config.jsonl", (r"config\.jsonl is not a rollout table: it lacks columns "
                                                       r"\['prompt_idx', 'seed_idx', 'rollout_idx'\]")),
        "not parquet": (tmp_path / "junk.parquet", r"junk\.parquet is not a Parquet file"),
        "foreign parquet": (tmp_path / "foreign.parquet", r"foreign\.parquet is not a rollout table: it lacks"),
    }


def _make_bad_files(tmp_path):
    files = _bad_files(tmp_path)
    files["arrays"][0].write_text("[1, 2, 3]\n[4, 5, 6]\n")
    files["number lines"][0].write_text("1\n2\n")
    files["empty"][0].write_bytes(b"")
    files["blank lines"][0].write_text("\n  \n")
    files["config object"][0].write_text('{"lr": 0.001, "steps": 10}')  # no trailing newline
    files["not parquet"][0].write_bytes(b"this is not parquet at all")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), files["foreign parquet"][0])
    return files


BAD = ["directory", "arrays", "number lines", "empty", "blank lines", "invalid json", "config object", "not parquet",
       "foreign parquet"]


@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize("loader", ["load_corpus", "load_long_table"])
def test_corpus_loaders_refuse_unreadable_files(tmp_path, kind, loader):
    path, message = _make_bad_files(tmp_path)[kind]
    with pytest.raises(ValueError, match=message):
        LOADERS[loader](path)


@pytest.mark.parametrize("kind", [k for k in BAD if k != "directory"])  # a folder of tables is a load_rollouts source
def test_load_rollouts_refuses_unreadable_files(tmp_path, kind):
    path, message = _make_bad_files(tmp_path)[kind]
    with pytest.raises(ValueError, match=message):
        load_rollouts(path)


def test_load_rollouts_names_the_unreadable_file_in_a_folder(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train-0.jsonl").write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r"line 1 of .*train-0\.jsonl is a JSON array"):
        load_rollouts(folder)


def test_missing_file_is_file_not_found(tmp_path):
    for load in (load_corpus, load_long_table, load_rollouts):
        with pytest.raises(FileNotFoundError, match="no such file"):
            load(tmp_path / "missing.jsonl")


# ----------------------------------------------------------------------------- CLI: analyze FILE, prop1 --file


def _cli(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error_line(err, command):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"multireward-grpo {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("how", ["none", "nan", "absent"])
def test_cli_refuses_a_missing_reward(tmp_path, capsys, suffix, how):
    path = _write(_with_missing(_long_rows(), how), tmp_path / f"t{suffix}")
    for argv in (["analyze", str(path), "--n-resamples", "0"], ["prop1", "--file", str(path)]):
        code, _, err = _cli(capsys, argv)
        line = _one_error_line(err, argv[0])
        assert code == 2
        assert f"row {MISSING_ROW} (prompt 1, seed 1, rollout 2) has no value for channel 'length'" in line


def test_cli_analyze_drop_incomplete_keeps_the_channel(tmp_path, capsys):
    path = _write(_with_missing(_long_rows(), "none"), tmp_path / "t.jsonl")
    code, out, _ = _cli(capsys, ["analyze", str(path), "--n-resamples", "0", "--drop-incomplete", "--json"])
    assert code == 0
    (result,) = json.loads(out)["results"]
    assert result["P"] == P - 1 and len(result["w"]) == 2  # prompt 1 left out, both channels analysed


@pytest.mark.parametrize("kind", BAD)
def test_cli_analyze_refuses_unreadable_files_in_one_line(tmp_path, capsys, kind):
    path, message = _make_bad_files(tmp_path)[kind]
    code, _, err = _cli(capsys, ["analyze", str(path)])
    line = _one_error_line(err, "analyze")
    assert code == 2
    assert re.search(message, line), line
    assert line.count(str(path.name)) <= 2  # one clear message, not the same error twice
