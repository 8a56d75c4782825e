"""load_rollouts: the released GSM8K and fintech rollout schemas, generic long tables, completeness, the Hub."""

import datetime
import json
import subprocess
import sys
import types

import numpy as np
import pytest

from multireward_grpo.generation import load_corpus, pack_for_analysis, save_corpus
from multireward_grpo.generation.datasets import (
    DataUnavailableError,
    RolloutData,
    load_rollouts,
)

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq

QWEN = "Qwen/Qwen2.5-1.5B-Instruct"
GSM_PROMPTS = (11, 3, 7)  # not sorted: the loader sorts integer prompt ids
SCENARIOS = ("late-fee-B", "refund-A", "hardship-C")
K, M = 3, 4


def _code(p, k, j):
    """A reward value unique to its (prompt, seed, rollout), to check placement."""
    return 100.0 * p + 10.0 * k + j


def gsm8k_rows(prompts=GSM_PROMPTS, K=K, M=M, model=QWEN, shift=0.0):
    rows = []
    for p in prompts:
        for k in range(K):
            for j in range(M):
                rows.append({
                    "model": model, "prompt_idx": p, "seed_idx": k, "rollout_idx": j, "group_size_m_max": M,
                    "correctness": float((p + k + j) % 2), "length": _code(p, k, j) + shift,
                    "format": float(j % 3 != 0), "raw_length": 7.0 * _code(p, k, j),
                    "question": f"Question {p}?", "gold_answer": str(2 * p), "gold_reasoning": f"{p}+{p}=<<{p}+{p}={2 * p}>>{2 * p}\n#### {2 * p}",
                })
    return rows


def fintech_rows(scenarios=SCENARIOS, K=K, M=M, date=str):
    rows = []
    for s, sid in enumerate(scenarios):
        for k in range(K):
            for j in range(M):
                rows.append({
                    "model": QWEN, "scenario_id": sid, "scenario_type": sid.split("-")[0] + sid[-1], "persona": "anxious",
                    "name": f"Customer {s}", "amount": 120.5 + s, "due_date": date(datetime.date(2024, 7, 1 + s)),
                    "seed_idx": k, "rollout_idx": j, "group_size_m": M, "conversation_so_far": f"user: about {sid}",
                    "bot_reply": f"{sid}/{k}/{j}", "compliance": float(j % 2), "politeness_gated": _code(s, k, j),
                    "action": float(k == j), "raw_length": 50.0 + j, "raw_politeness": 0.1 * j,
                })
    return rows


def reference(rows, key, channels, order):
    """Plain-loop (P, K, m, R) reference in the given prompt order."""
    out = np.full((len(order), K, M, len(channels)), np.nan)
    for row in rows:
        out[order.index(row[key]), row["seed_idx"], row["rollout_idx"]] = [row[c] for c in channels]
    return out


def shuffled(rows, seed=0):
    return [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]


def write(rows, path):
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def first_appearance(rows, key):
    return list(dict.fromkeys(r[key] for r in rows))


# ----------------------------------------------------------------------------- the two released schemas


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_gsm8k_schema(tmp_path, suffix):
    rows = shuffled(gsm8k_rows())
    path = write(rows, tmp_path / f"gsm{suffix}")
    data = load_rollouts(path)
    assert isinstance(data, RolloutData) and data.schema == "gsm8k"
    assert data.channel_names == ("correctness", "length", "format")
    assert data.prompt_ids == (3, 7, 11) and data.seed_ids == (0, 1, 2)
    assert (data.P, data.K, data.m, data.R) == (3, K, M, 3) and data.rewards.dtype == np.float64
    np.testing.assert_array_equal(data.rewards, reference(rows, "prompt_idx", data.channel_names, [3, 7, 11]))
    assert data.prompts[1] == {"question": "Question 7?", "gold_answer": "14",
                               "gold_reasoning": "7+7=<<7+7=14>>14\n#### 14"}
    assert data.model == QWEN and data.source == str(path) and data.completions is None and data.dropped == ()
    assert data.metadata["prompt_key"] == "prompt_idx" and data.metadata["m_available"] == M
    assert "P=3" in repr(data)


def test_gsm8k_raw_length_is_an_extra_channel(tmp_path):
    rows = gsm8k_rows()
    data = load_rollouts(write(rows, tmp_path / "g.jsonl"), channels=["correctness", "raw_length"])
    assert data.channel_names == ("correctness", "raw_length")
    np.testing.assert_array_equal(data.rewards, reference(rows, "prompt_idx", data.channel_names, [3, 7, 11]))


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_fintech_schema_string_ids_in_first_appearance_order(tmp_path, suffix):
    # parquet stores a real date column (read back as datetime.date), JSONL an ISO string
    rows = shuffled(fintech_rows(date=(lambda d: d) if suffix == ".parquet" else str), seed=3)
    data = load_rollouts(write(rows, tmp_path / f"fin{suffix}"))
    order = first_appearance(rows, "scenario_id")
    assert data.schema == "fintech" and data.prompt_ids == tuple(order)
    assert data.channel_names == ("compliance", "politeness_gated", "action")
    np.testing.assert_array_equal(data.rewards, reference(rows, "scenario_id", data.channel_names, order))
    p = order.index("refund-A")
    assert data.prompts[p] == {"scenario_type": "refundA", "persona": "anxious", "name": "Customer 1",
                               "amount": 121.5, "due_date": "2024-07-02", "conversation_so_far": "user: about refund-A"}
    assert data.completions.shape == (3, K, M) and data.completions[p, 2, 1] == "refund-A/2/1"
    corpus = data.to_corpus()
    assert corpus.prompts == tuple(order) and corpus.completions[(p, 2, M)][3] == "refund-A/2/3"


def test_fintech_extra_channels(tmp_path):
    data = load_rollouts(write(fintech_rows(), tmp_path / "f.jsonl"), channels=("raw_politeness", "raw_length"))
    np.testing.assert_allclose(data.rewards[0, 0, :, 0], 0.1 * np.arange(M))


# ----------------------------------------------------------------------------- completeness


def test_missing_rollout_raises_then_drops(tmp_path):
    rows = [r for r in gsm8k_rows() if (r["prompt_idx"], r["seed_idx"], r["rollout_idx"]) != (7, 1, 2)]
    path = write(shuffled(rows), tmp_path / "g.parquet")
    with pytest.raises(ValueError, match=r"1 of 3 prompts .*\n  prompt_idx 7: seed 1 lacks rollouts \[2\]") as info:
        load_rollouts(path)
    assert "drop_incomplete=True" in str(info.value)
    data = load_rollouts(path, drop_incomplete=True)
    assert data.prompt_ids == (3, 11) and data.dropped == ((7, "seed 1 lacks rollouts [2]"),)
    np.testing.assert_array_equal(data.rewards, reference(gsm8k_rows(), "prompt_idx", data.channel_names, [3, 7, 11])[[0, 2]])
    assert data.to_corpus().metadata["dropped"] == [[7, "seed 1 lacks rollouts [2]"]]


def test_missing_seed_names_the_scenario(tmp_path):
    rows = [r for r in fintech_rows() if not (r["scenario_id"] == "refund-A" and r["seed_idx"] == 2)]
    path = write(rows, tmp_path / "f.jsonl")
    with pytest.raises(ValueError, match=r"scenario_id 'refund-A': seeds \[2\] missing"):
        load_rollouts(path)
    assert load_rollouts(path, drop_incomplete=True).prompt_ids == ("late-fee-B", "hardship-C")


def test_everything_incomplete(tmp_path):
    rows = [r for r in gsm8k_rows() if r["rollout_idx"] != 3]
    path = write(rows, tmp_path / "g.jsonl")
    with pytest.raises(ValueError, match="no prompt has complete groups at m=4"):
        load_rollouts(path, drop_incomplete=True)
    assert load_rollouts(path, m=3).m == 3  # only the last rollouts are missing: a smaller m works


def test_generic_table_without_size_column_detects_a_missing_last_rollout(tmp_path):
    rows = [{"prompt_idx": r["prompt_idx"], "seed_idx": r["seed_idx"], "rollout_idx": r["rollout_idx"],
             "r0": r["length"], "r1": r["correctness"]} for r in gsm8k_rows()]
    rows = [r for r in rows if (r["prompt_idx"], r["seed_idx"], r["rollout_idx"]) != (3, 0, M - 1)]
    with pytest.raises(ValueError, match=r"prompt_idx 3: seed 0 lacks rollouts \[3\]"):
        load_rollouts(write(rows, tmp_path / "t.jsonl"))


def test_duplicate_rows_are_an_error(tmp_path):
    rows = gsm8k_rows()
    with pytest.raises(ValueError, match="prompt_idx 11, seed_idx 0, rollout_idx 1 appears more than once"):
        load_rollouts(write(rows + [rows[1]], tmp_path / "g.jsonl"))


def test_nan_rewards_raise_by_default_and_are_kept_under_propagate(tmp_path):
    rows = gsm8k_rows()
    rows[5]["correctness"] = None  # a failed scoring
    path = write(rows, tmp_path / "g.jsonl")
    with pytest.raises(ValueError, match=r"row 5 \(prompt 11, seed 1, rollout 1\) has no value for channel 'correct"):
        load_rollouts(path)
    data = load_rollouts(path, nan_policy="propagate")
    p, k, j = [3, 7, 11].index(rows[5]["prompt_idx"]), rows[5]["seed_idx"], rows[5]["rollout_idx"]
    assert np.isnan(data.rewards[p, k, j, 0]) and np.isnan(data.rewards).sum() == 1


# ----------------------------------------------------------------------------- models and group sizes


def test_several_models_need_model(tmp_path):
    rows = shuffled(gsm8k_rows() + gsm8k_rows(model="Qwen/Qwen2.5-7B-Instruct", shift=0.5))
    path = write(rows, tmp_path / "g.parquet")
    with pytest.raises(ValueError, match=r"2 models \['Qwen/Qwen2.5-.*'\]; pick one with model="):
        load_rollouts(path)
    big = load_rollouts(path, model="Qwen/Qwen2.5-7B-Instruct")
    small = load_rollouts(path, model=QWEN)
    assert big.model == "Qwen/Qwen2.5-7B-Instruct" and small.model == QWEN
    np.testing.assert_array_equal(big.rewards[..., 1] - small.rewards[..., 1], 0.5)
    assert sorted(big.metadata["models"]) == sorted({QWEN, "Qwen/Qwen2.5-7B-Instruct"})
    with pytest.raises(ValueError, match="model 'gpt' is not in the table"):
        load_rollouts(path, model="gpt")
    generic = [{k: r[k] for k in ("prompt_idx", "seed_idx", "rollout_idx", "length")} for r in gsm8k_rows()]
    with pytest.raises(ValueError, match="no 'model' column"):
        load_rollouts(write(generic, tmp_path / "t.jsonl"), model=QWEN)


def test_m_truncation_keeps_the_first_rollouts(tmp_path):
    rows = shuffled(gsm8k_rows())
    path = write(rows, tmp_path / "g.jsonl")
    full = load_rollouts(path)
    two = load_rollouts(path, m=2)
    assert two.m == 2 and two.metadata["m_available"] == M
    np.testing.assert_array_equal(two.rewards, full.rewards[:, :, :2])
    with pytest.raises(ValueError, match="m=5 exceeds the largest group size in the table"):
        load_rollouts(path, m=5)
    with pytest.raises(TypeError, match="m must be an int"):
        load_rollouts(path, m=2.0)


def test_groups_of_different_sizes_need_m(tmp_path):
    rows = gsm8k_rows(prompts=(3, 7)) + gsm8k_rows(prompts=(11,), M=2)
    path = write(rows, tmp_path / "g.jsonl")
    with pytest.raises(ValueError, match=r"groups have different sizes \[2, 4\].*pass m="):
        load_rollouts(path)
    assert load_rollouts(path, m=2).rewards.shape == (3, K, 2, 3)
    with pytest.raises(ValueError, match=r"prompt_idx 11: seed 0 lacks rollouts \[2, 3\]"):
        load_rollouts(path, m=4)
    assert load_rollouts(path, m=4, drop_incomplete=True).prompt_ids == (3, 7)


def test_inconsistent_size_columns(tmp_path):
    rows = gsm8k_rows()
    rows[0]["group_size_m_max"] = 8
    with pytest.raises(ValueError, match="varies inside a .* group"):
        load_rollouts(write(rows, tmp_path / "a.jsonl"))
    rows = gsm8k_rows(M=2)
    rows[0]["rollout_idx"] = 5
    with pytest.raises(ValueError, match="rollout_idx 5 but group_size_m_max 2"):
        load_rollouts(write(rows, tmp_path / "b.jsonl"))


# ----------------------------------------------------------------------------- generic tables, corpus, CLI


def test_generic_schema_and_in_memory_tables():
    cols = {"prompt_idx": [0, 0, 1, 1], "seed_idx": [0, 0, 0, 0], "rollout_idx": [1, 0, 0, 1],
            "r0": [1.0, 2.0, 3.0, 4.0], "flag": [True, False, True, True], "prompt": ["a", "a", "b", "b"],
            "gold": ["1", "1", "2", "2"], "completion": ["x1", "x0", "y0", "y1"]}
    for table in (cols, pa.table(cols)):
        data = load_rollouts(table)
        assert data.schema == "generic" and data.channel_names == ("r0", "flag")
        np.testing.assert_array_equal(data.rewards[:, 0, :, 0], [[2.0, 1.0], [3.0, 4.0]])
        assert data.completions[0, 0].tolist() == ["x0", "x1"] and data.prompts[1] == {"prompt": "b", "gold": "2"}
        corpus = data.to_corpus()
        assert corpus.prompts == ("a", "b") and corpus.golds == ("1", "2")


def test_to_corpus_packs_the_same_tensor_and_round_trips(tmp_path):
    data = load_rollouts(write(shuffled(gsm8k_rows()), tmp_path / "g.jsonl"))
    corpus = data.to_corpus()
    assert corpus.channel_names == data.channel_names and corpus.seed_indices == data.seed_ids
    assert corpus.prompts == ("Question 3?", "Question 7?", "Question 11?") and corpus.golds == ("6", "14", "22")
    np.testing.assert_array_equal(pack_for_analysis(corpus, m=M), data.rewards)
    np.testing.assert_array_equal(pack_for_analysis(corpus, m=2), data.rewards[:, :, :2])
    assert corpus.metadata["source"] == data.source and corpus.metadata["prompt_ids"] == [3, 7, 11]
    for suffix in (".jsonl", ".parquet"):
        path = save_corpus(corpus, tmp_path / f"corpus{suffix}")
        assert load_corpus(path) == corpus


def test_cli_analyze_runs_on_a_saved_rollout_corpus(tmp_path, capsys):
    from multireward_grpo.cli import main

    rng = np.random.default_rng(0)
    rows = gsm8k_rows(prompts=range(6), K=8, M=4)
    for r in rows:  # continuous rewards so no group is degenerate
        r["correctness"], r["length"], r["format"] = rng.normal(size=3).tolist()
    path = save_corpus(load_rollouts(write(rows, tmp_path / "g.jsonl")).to_corpus(), tmp_path / "c.parquet")
    assert main(["analyze", str(path), "--m", "4"]) == 0
    assert "correctness" in capsys.readouterr().out


# ----------------------------------------------------------------------------- sources and errors


def test_folder_prefers_split_files(tmp_path):
    (tmp_path / "data").mkdir()
    write(gsm8k_rows(prompts=(1, 2)), tmp_path / "data" / "train-00000-of-00001.parquet")
    write(gsm8k_rows(prompts=(5,)), tmp_path / "data" / "test-00000-of-00001.parquet")
    assert load_rollouts(tmp_path).prompt_ids == (1, 2)
    assert load_rollouts(tmp_path, split="test").prompt_ids == (5,)
    one = tmp_path / "single"
    one.mkdir()
    write(gsm8k_rows(prompts=(4,)), one / "rollouts.jsonl")
    assert load_rollouts(one).prompt_ids == (4,)


def _stub_datasets(monkeypatch, load):
    module = types.ModuleType("datasets")
    module.load_dataset = load
    monkeypatch.setitem(sys.modules, "datasets", module)


def test_hub_id_goes_through_datasets(monkeypatch):
    calls = []

    def load(name, config, *, split, revision=None):
        calls.append((name, config, split, revision))
        return pa.Table.from_pylist(fintech_rows())

    _stub_datasets(monkeypatch, load)
    data = load_rollouts("eagle0504/multireward-grpo-fintech-customer-comms", split="train")
    assert calls == [("eagle0504/multireward-grpo-fintech-customer-comms", None, "train", None)]
    assert data.schema == "fintech" and data.source == "eagle0504/multireward-grpo-fintech-customer-comms"
    assert data.metadata["split"] == "train" and data.metadata["config"] is None


def test_hub_offline_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def load(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    _stub_datasets(monkeypatch, load)
    with pytest.raises(DataUnavailableError, match="offline mode is on") as info:
        load_rollouts("eagle0504/multireward-grpo-gsm8k-rewards")
    message = str(info.value)
    assert "huggingface-cli download --repo-type dataset eagle0504/multireward-grpo-gsm8k-rewards" in message
    assert 'pip install "multireward-grpo[data]"' in message
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataUnavailableError, match="`datasets` package is not installed"):
        load_rollouts("eagle0504/multireward-grpo-gsm8k-rewards")


def test_input_errors(tmp_path):
    path = write(gsm8k_rows(), tmp_path / "g.jsonl")
    with pytest.raises(ValueError, match="unknown schema 'nope'"):
        load_rollouts(path, schema="nope")
    with pytest.raises(ValueError, match=r"lacks columns \['scenario_id'\] of the 'fintech'"):
        load_rollouts(path, schema="fintech")
    with pytest.raises(ValueError, match=r"channels \['reward'\] are not columns"):
        load_rollouts(path, channels=["reward"])
    with pytest.raises(ValueError, match="'question' is not numeric"):
        load_rollouts(path, channels=["question"])
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_rollouts(tmp_path / "missing.parquet")
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(ValueError, match="unsupported rollout file"):
        load_rollouts(tmp_path / "x.csv")
    rows = gsm8k_rows()
    rows[0]["seed_idx"] = 0.5
    with pytest.raises(ValueError, match="'seed_idx' must hold integers"):
        load_rollouts(write(rows, tmp_path / "h.jsonl"))
    with pytest.raises(ValueError, match="no numeric reward columns"):
        load_rollouts({"prompt_idx": [0], "seed_idx": [0], "rollout_idx": [0], "note": ["x"]})


def test_import_is_light():
    code = ("import sys, multireward_grpo.generation.datasets; "
            "print([m for m in ('datasets', 'pandas', 'torch', 'pyarrow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_analyze_reads_released_fintech_schema(tmp_path, capsys):
    import json

    from multireward_grpo.cli import main

    path = tmp_path / "fintech_rollouts.jsonl"
    write(shuffled(fintech_rows()), path)
    assert main(["analyze", str(path), "--json", "--n-resamples", "20", "--no-progress"]) == 0
    payload = json.loads(capsys.readouterr().out)
    (result,) = payload["results"]
    assert result["P"] == len(SCENARIOS) and result["K"] == K and result["m"] == M
    assert len(result["w"]) == 3  # compliance, politeness_gated, action
