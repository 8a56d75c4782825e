"""run_corpus, pack_for_analysis, checkpoint resume and corpus file I/O."""

import json

import numpy as np
import pytest

from multireward_grpo.generation import (
    Corpus,
    MockBackend,
    load_corpus,
    load_long_table,
    pack_for_analysis,
    run_corpus,
    save_corpus,
)
from multireward_grpo.generation import corpus as corpus_mod

C3 = np.array([[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]])
PROMPTS = [(f"p{i}", str(i)) for i in range(5)]


class Counting:
    """Wraps a backend, records calls, optionally fails after ``fail_after`` calls."""

    def __init__(self, inner, fail_after=None, texts=False):
        self.inner, self.fail_after, self.texts = inner, fail_after, texts
        self.calls = []
        self.channel_names = inner.channel_names

    def describe(self):
        return self.inner.describe()

    def generate(self, prompt, gold, m, seed_idx):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls.append((prompt, m, seed_idx))
        rewards = self.inner.generate(prompt, gold, m, seed_idx)
        if self.texts:
            return {"rewards": rewards, "completions": [f"{prompt}/{seed_idx}/{j}" for j in range(m)]}
        return rewards


class Broken:
    channel_names = ("a", "b")

    def __init__(self, result):
        self.result = result

    def generate(self, prompt, gold, m, seed_idx):
        return self.result(m)


def _lines(path):
    return path.read_text().splitlines()


# ----------------------------------------------------------------------------- run and pack


def test_seed_readme_call_shape_and_dtype():
    corpus = run_corpus(MockBackend(C=C3), [(f"p{i}", "0") for i in range(40)], m_grid=[8], K_seeds=200)
    rewards = pack_for_analysis(corpus, m=8)
    assert rewards.shape == (40, 200, 8, 3) and rewards.dtype == np.float64
    assert corpus.channel_names == ("r0", "r1", "r2") and corpus.P == 40 and corpus.K == 200
    np.testing.assert_array_equal(rewards[7, 13], MockBackend(C=C3).generate("p7", "0", 8, 13))


def test_subsample_from_max_generates_only_the_largest_group():
    backend = Counting(MockBackend(C=C3))
    corpus = run_corpus(backend, PROMPTS, m_grid=[8, 4], K_seeds=3)
    assert {m for _, m, _ in backend.calls} == {8} and len(backend.calls) == 5 * 3
    assert corpus.m_grid == (4, 8)
    np.testing.assert_array_equal(pack_for_analysis(corpus, 4), pack_for_analysis(corpus, 8)[:, :, :4])
    with pytest.raises(ValueError, match="no group of size m=16"):
        pack_for_analysis(corpus, 16)


def test_separate_generation_calls_each_m():
    backend = Counting(MockBackend(C=C3))
    corpus = run_corpus(backend, PROMPTS, m_grid=[4, 8], K_seeds=3, subsample_from_max=False)
    assert sorted({m for _, m, _ in backend.calls}) == [4, 8] and len(backend.calls) == 5 * 3 * 2
    assert len(corpus.groups) == 30
    # The mock's stream does not depend on m, so both routes agree for it.
    np.testing.assert_array_equal(pack_for_analysis(corpus, 4), pack_for_analysis(corpus, 8)[:, :, :4])
    with pytest.raises(ValueError, match="m=6"):
        pack_for_analysis(corpus, 6)  # no subsampling in this corpus


def test_missing_seed_raises_naming_prompt_and_seeds():
    corpus = run_corpus(MockBackend(), PROMPTS, m_grid=[4], K_seeds=10)
    del corpus.groups[(1, 3, 4)], corpus.groups[(1, 7, 4)]
    corpus = Corpus(**corpus_mod._corpus_kwargs(corpus))
    with pytest.raises(ValueError, match=r"prompt 1 \('p1'\).*seed indices \[3, 7\]"):
        pack_for_analysis(corpus, 4)
    assert corpus.missing_seeds(1, 4) == [3, 7]
    assert corpus.complete_prompts(4) == [0, 2, 3, 4]
    assert pack_for_analysis(corpus, 4, prompts=corpus.complete_prompts(4)).shape == (4, 10, 4, 3)


def test_progress_line_without_tqdm(monkeypatch, capsys):
    # Hide tqdm even when an earlier import (e.g. transformers) already loaded tqdm.auto.
    monkeypatch.setitem(__import__("sys").modules, "tqdm", None)
    monkeypatch.setitem(__import__("sys").modules, "tqdm.auto", None)
    run_corpus(MockBackend(), PROMPTS[:2], m_grid=[2], K_seeds=2, progress=True)
    assert "run_corpus: 4/4 groups (100%)" in capsys.readouterr().err
    run_corpus(MockBackend(), PROMPTS[:2], m_grid=[2], K_seeds=2)  # not a TTY under pytest: silent
    assert capsys.readouterr().err == ""


def test_prompt_forms_and_completions():
    chat = [{"role": "user", "content": "hi"}]
    corpus = run_corpus(Counting(MockBackend(), texts=True), ["plain", {"prompt": "d", "gold": 4}, chat],
                        m_grid=2, K_seeds=1)
    assert corpus.golds == (None, 4, None)
    assert corpus.prompts[2] == chat and corpus.completions[(0, 0, 2)] == ("plain/0/0", "plain/0/1")


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"prompts_with_gold": []}, ValueError, "empty"),
        ({"m_grid": [1, 8]}, ValueError, ">= 2"),
        ({"m_grid": []}, ValueError, "m_grid is empty"),
        ({"m_grid": [8.0]}, TypeError, "must be an int"),
        ({"K_seeds": 0}, ValueError, "K_seeds must be >= 1"),
        ({"prompts_with_gold": [("a", "b", "c")]}, TypeError, r"\(prompt, gold\) pairs"),
        ({"prompts_with_gold": "abc"}, TypeError, "single string"),
        ({"backend": object()}, TypeError, "not a rollout backend"),
    ],
)
def test_argument_validation(kwargs, exc, match):
    args = {"backend": MockBackend(), "prompts_with_gold": PROMPTS, "m_grid": [4], "K_seeds": 2} | kwargs
    with pytest.raises(exc, match=match):
        run_corpus(args.pop("backend"), args.pop("prompts_with_gold"), args.pop("m_grid"), args.pop("K_seeds"))


@pytest.mark.parametrize(
    "result, match",
    [
        (lambda m: np.zeros((m, 3)), r"shape \(4, 3\).*expected \(m, R\) = \(4, 2\)"),
        (lambda m: np.zeros(m), "shape"),
        (lambda m: np.where(np.arange(m)[:, None] == 2, np.nan, np.zeros((m, 2))), r"NaN/inf.*rollouts \[2\]"),
        (lambda m: {"rewards": np.zeros((m, 2)), "completions": ["x"]}, "completions"),
    ],
)
def test_bad_backend_output(result, match):
    with pytest.raises(ValueError, match=match):
        run_corpus(Broken(result), PROMPTS, m_grid=[4], K_seeds=1)


def test_channel_names_clashing_with_columns():
    with pytest.raises(ValueError, match="clash"):
        run_corpus(MockBackend(channel_names=["prompt_idx", "b", "c"]), PROMPTS, [2], 1)


def test_pack_validation():
    corpus = run_corpus(MockBackend(), PROMPTS, m_grid=[4], K_seeds=2)
    with pytest.raises(ValueError, match="m must be >= 2"):
        pack_for_analysis(corpus, 1)
    with pytest.raises(ValueError, match="out of range"):
        pack_for_analysis(corpus, 4, prompts=[9])


# ----------------------------------------------------------------------------- save / load


def _corpus_with_texts():
    return run_corpus(Counting(MockBackend(C=C3, difficulty=0.3), texts=True), PROMPTS, m_grid=[3, 6], K_seeds=4,
                      metadata={"note": "unit test"})


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("subsample", [True, False])
def test_save_load_round_trip(tmp_path, suffix, subsample):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    corpus = run_corpus(MockBackend(C=C3, difficulty=0.3), PROMPTS, m_grid=[3, 6], K_seeds=4,
                        subsample_from_max=subsample, metadata={"note": "unit test"})
    path = save_corpus(corpus, tmp_path / f"c{suffix}")
    loaded = load_corpus(path)
    assert loaded == corpus
    assert loaded.metadata["backend"]["backend"] == "MockBackend"
    np.testing.assert_array_equal(pack_for_analysis(loaded, 3), pack_for_analysis(corpus, 3))


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_round_trip_keeps_completions(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    corpus = _corpus_with_texts()
    assert load_corpus(save_corpus(corpus, tmp_path / f"c{suffix}")) == corpus


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)
    with pytest.raises(ImportError, match=r'pip install "multireward-grpo\[data\]"'):
        save_corpus(_corpus_with_texts(), tmp_path / "c.parquet")


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_empty_corpus_round_trip(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    corpus = run_corpus(MockBackend(), PROMPTS, m_grid=[4], K_seeds=2)
    empty = Corpus(**{**corpus_mod._corpus_kwargs(corpus), "groups": {}})
    loaded = load_corpus(save_corpus(empty, tmp_path / f"e{suffix}"))
    assert loaded == empty and loaded.missing_seeds(0, 4) == [0, 1]


def test_unsupported_suffix(tmp_path):
    with pytest.raises(ValueError, match=".jsonl or .parquet"):
        save_corpus(_corpus_with_texts(), tmp_path / "c.csv")


def _long_table(rng, with_m="m"):
    """4 prompts x 3 seeds x m=5 rollouts, two channels, rows shuffled."""
    rows = [(p, s, r) for p in range(4) for s in range(3) for r in range(5)]
    values = rng.normal(size=(len(rows), 2))
    order = rng.permutation(len(rows))
    cols = {
        "prompt_idx": [rows[i][0] for i in order],
        "seed_idx": [rows[i][1] for i in order],
        "rollout_idx": [rows[i][2] for i in order],
        "correct": values[order, 0].tolist(),
        "length": values[order, 1].tolist(),
        "prompt": [f"q{rows[i][0]}" for i in order],
        "completion": [f"c{rows[i]}" for i in order],
    }
    if with_m:
        cols[with_m] = [5] * len(rows)
    expected = values.reshape(4, 3, 5, 2)
    return cols, expected


@pytest.mark.parametrize("m_column", ["m", "group_size_m", None])
def test_long_table_from_columns(m_column):
    cols, expected = _long_table(np.random.default_rng(0), m_column)
    corpus = load_long_table(cols)
    assert corpus.channel_names == ("correct", "length")
    assert corpus.prompts == ("q0", "q1", "q2", "q3") and corpus.seed_indices == (0, 1, 2)
    np.testing.assert_array_equal(pack_for_analysis(corpus, 5), expected)
    assert corpus.completions[(2, 1, 5)][3] == "c(2, 1, 3)"


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_long_table_files_load(tmp_path, suffix):
    cols, expected = _long_table(np.random.default_rng(1), "group_size_m")
    path = tmp_path / f"long{suffix}"
    if suffix == ".parquet":
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        pq.write_table(pa.table(cols), path)
    else:
        rows = [dict(zip(cols, vals)) for vals in zip(*cols.values())]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for corpus in (load_corpus(path), load_long_table(path, channels=["length", "correct"])):
        got = pack_for_analysis(corpus, 5)
        if corpus.channel_names[0] == "length":
            got = got[..., ::-1]
        np.testing.assert_array_equal(got, expected)


def test_long_table_errors():
    cols, _ = _long_table(np.random.default_rng(2))
    with pytest.raises(ValueError, match="lacks columns \\['rollout_idx'\\]"):
        load_long_table({k: v for k, v in cols.items() if k != "rollout_idx"})
    with pytest.raises(ValueError, match="not columns"):
        load_long_table(cols, channels=["nope"])
    gap = dict(cols, rollout_idx=[r if r != 4 else 7 for r in cols["rollout_idx"]])
    with pytest.raises(ValueError, match="expected 0..4 each once"):
        load_long_table(gap)
    wrong_m = dict(cols, m=[6] * len(cols["m"]))
    with pytest.raises(ValueError, match="m column says 6"):
        load_long_table(wrong_m)


def test_long_table_missing_seed_is_reported():
    cols, _ = _long_table(np.random.default_rng(3))
    keep = [not (p == 2 and s == 1) for p, s in zip(cols["prompt_idx"], cols["seed_idx"])]
    cols = {k: [v for v, ok in zip(vals, keep) if ok] for k, vals in cols.items()}
    with pytest.raises(ValueError, match=r"prompt 2 \('q2'\).*seed indices \[1\]"):
        pack_for_analysis(load_long_table(cols), 5)


# ----------------------------------------------------------------------------- resume


def _run(backend, out=None, **kw):
    return run_corpus(backend, PROMPTS, m_grid=[4, 8], K_seeds=6, out=out, **kw)


@pytest.mark.parametrize("subsample", [True, False])
def test_resume_after_interruption_equals_uninterrupted(tmp_path, subsample):
    out = tmp_path / "ckpt.jsonl"
    reference = _run(MockBackend(C=C3, seed=9), subsample_from_max=subsample)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(Counting(MockBackend(C=C3, seed=9), fail_after=13), out, subsample_from_max=subsample)
    assert len(_lines(out)) == 1 + 13
    resumed_backend = Counting(MockBackend(C=C3, seed=9))
    resumed = _run(resumed_backend, out, subsample_from_max=subsample)
    n_groups = len(reference.groups)
    assert len(resumed_backend.calls) == n_groups - 13  # nothing regenerated twice
    assert resumed == reference
    assert len(_lines(out)) == 1 + n_groups  # no duplicated or lost lines
    assert load_corpus(out) == reference
    again = Counting(MockBackend(C=C3, seed=9))
    assert _run(again, out, subsample_from_max=subsample) == reference and again.calls == []


def test_truncated_last_line_is_repaired_on_resume(tmp_path):
    out = tmp_path / "ckpt.jsonl"
    reference = _run(MockBackend(seed=2))
    with pytest.raises(RuntimeError):
        _run(Counting(MockBackend(seed=2), fail_after=7), out)
    with open(out, "ab") as f:
        f.write(b'{"prompt_idx": 1, "seed_idx": 2, "m": 8, "rewards": [[0.1, 0.')  # crash mid-write
    before = out.read_bytes()
    with pytest.warns(UserWarning, match="truncated last line"):
        partial = load_corpus(out)
    assert out.read_bytes() == before  # loading never modifies the file
    assert len(partial.groups) == 7
    assert all(np.array_equal(a, reference.groups[k]) for k, a in partial.groups.items())
    with pytest.warns(UserWarning, match="truncated last line"):
        assert _run(MockBackend(seed=2), out) == reference
    assert all(json.loads(line) for line in _lines(out)) and len(_lines(out)) == 1 + len(reference.groups)


def test_truncated_header_restarts_file(tmp_path):
    out = tmp_path / "ckpt.jsonl"
    out.write_bytes(b'{"format": "multireward-grpo-corp')
    with pytest.warns(UserWarning):
        assert _run(MockBackend(), out) == _run(MockBackend())


def test_resume_refuses_a_different_run(tmp_path):
    out = tmp_path / "ckpt.jsonl"
    _run(MockBackend(seed=1), out)
    with pytest.raises(ValueError, match="differs in: seed_indices"):
        run_corpus(MockBackend(seed=1), PROMPTS, m_grid=[4, 8], K_seeds=7, out=out)
    with pytest.raises(ValueError, match="backend settings"):
        _run(MockBackend(seed=2), out)


def test_corrupt_middle_line_raises(tmp_path):
    out = tmp_path / "ckpt.jsonl"
    _run(MockBackend(), out)
    lines = _lines(out)
    lines[3] = "{not json"
    out.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 4 is not valid JSON"):
        _run(MockBackend(), out)
    with pytest.raises(ValueError, match="line 4"):
        load_corpus(out)
