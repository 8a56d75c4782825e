"""Hugging Face Hub publishing, offline: cards, upload folders file by file, a fake HfApi, tokens that never leak."""

from __future__ import annotations

import json
import re
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

yaml = pytest.importorskip("yaml")
pytest.importorskip("huggingface_hub")
pytest.importorskip("pyarrow")

from multireward_grpo import GRPOConfig, hub  # noqa: E402
from multireward_grpo.cli import main  # noqa: E402
from multireward_grpo.generation import MockBackend, load_corpus, pack_for_analysis, run_corpus, save_corpus  # noqa: E402

TOKEN = "hf_TESTtokenNeverToBeShown0123456789"


def front_matter(text: str) -> tuple[dict, str]:
    """The YAML front matter of a card (parsed) and the Markdown body."""
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


class FakeHfApi:
    """Records create_repo / upload_folder / snapshot_download calls; uploads snapshot the folder's files."""

    def __init__(self, *, fail: str | None = None, message: str = "boom", source: Path | None = None):
        self.calls, self.uploaded, self.fail, self.message, self.source = [], {}, fail, message, source

    def create_repo(self, repo_id, *, token=None, private=None, repo_type=None, exist_ok=False):
        self.calls.append(("create_repo", {"repo_id": repo_id, "token": token, "private": private,
                                           "repo_type": repo_type, "exist_ok": exist_ok}))
        if self.fail == "create_repo":
            raise RuntimeError(self.message)
        return f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, commit_message=None, token=None):
        self.calls.append(("upload_folder", {"repo_id": repo_id, "folder_path": folder_path, "repo_type": repo_type,
                                             "commit_message": commit_message, "token": token}))
        if self.fail == "upload_folder":
            raise RuntimeError(self.message)
        root = Path(folder_path)
        self.uploaded = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        return "commit"

    def snapshot_download(self, repo_id, *, repo_type=None, revision=None, local_dir=None, token=None):
        self.calls.append(("snapshot_download", {"repo_id": repo_id, "repo_type": repo_type, "revision": revision,
                                                 "local_dir": local_dir, "token": token}))
        if self.fail == "snapshot_download":
            raise RuntimeError(self.message)
        shutil.copytree(self.source, local_dir, dirs_exist_ok=True)
        return local_dir


@pytest.fixture
def no_token(monkeypatch):
    """No HF_TOKEN and no Hub login."""
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)


# --------------------------------------------------------------------------- model card (pure)


def _history(n=8, R=2):
    rng = np.random.default_rng(0)
    return [{"step": s + 1, "mean_reward": float(rng.random()), "kl": 0.01 * s,
             **{f"mean_channel_{c}": float(rng.random()) for c in range(R)}} for s in range(n)]


EVAL = {"channel_names": ["e share", "short"], "means": [0.25, 0.75], "stderrs": [0.0125, 0.03],
        "aggregate_mean": 0.4, "aggregate_stderr": 0.02, "n_prompts": 5, "m": 2}


def test_model_card_front_matter_hub_users_expect():
    config = GRPOConfig(model="Qwen/Qwen2.5-1.5B-Instruct", weights=(1.0, 0.5), conditioning=["0:1"])
    card = hub.model_card(config, base_model="Qwen/Qwen2.5-1.5B-Instruct", channel_names=["e share", "short"],
                          repo_id="me/grpo-na", license="mit", tags=["fintech"])
    meta, body = front_matter(card)
    assert meta["base_model"] == "Qwen/Qwen2.5-1.5B-Instruct"
    assert meta["library_name"] == "peft"
    assert meta["license"] == "mit"
    assert meta["pipeline_tag"] == "text-generation"
    assert {"grpo", "multi-reward", "lora", "advantage-na", "fintech"} <= set(meta["tags"])
    assert body.lstrip().startswith("# grpo-na")
    assert "| reward channels and weights | e share 1, short 0.5 |" in body
    assert "| conditioning | `0:1` |" in body
    assert 'load_adapter(None, "me/grpo-na")' in body


def test_model_card_lists_every_hyperparameter():
    config = GRPOConfig(weights=(1.0, 1.0, 0.5), lr=3e-6, kl_coef=0.07, lora_target_modules=("q_proj", "v_proj"))
    _, body = front_matter(hub.model_card(config, base_model=None))
    for name, value in config.to_dict().items():
        if name in ("out_dir", "resume_from"):
            assert f"| `{name}` |" not in body  # where the run was is no property of the adapter
            continue
        expected = json.dumps(list(value) if isinstance(value, tuple) else value)
        assert f"| `{name}` | `{expected}` |" in body, name


def test_model_card_trend_and_eval_tables_hold_the_numbers():
    history = _history(8)
    card = hub.model_card(GRPOConfig(weights=(1.0, 0.5)), base_model="org/base", channel_names=["e share", "short"],
                          history=history, eval_results=EVAL, curves_image="curves.png")
    _, body = front_matter(card)
    k = 2  # a quarter of 8 steps
    for key, label in [("mean_reward", "mean reward"), ("mean_channel_1", "short")]:
        before = np.mean([h[key] for h in history[:k]])
        after = np.mean([h[key] for h in history[-k:]])
        assert f"| {label} | {before:.4f} | {after:.4f} ({after - before:+.4f}) |" in body
    assert "![Rewards per step and KL to the base model](curves.png)" in body
    assert "| this adapter | 0.2500 ± 0.0125 | 0.7500 ± 0.0300 | 0.4000 ± 0.0200 |" in body
    assert "5 held-out prompts x 2 sampled completions" in body


def test_eval_table_rows_read_every_documented_shape(tmp_path):
    rows = hub.eval_table_rows({"results": {"base": EVAL, str(tmp_path / "run" / "final"): EVAL}},
                               adapter_dir=tmp_path / "run" / "final")
    assert [label for label, _ in rows] == ["base model", "this adapter"]
    other = hub.eval_table_rows({"results": {"/home/someone/runs/x/final": EVAL}})
    assert other[0][0] == "adapter `x/final`"  # never the full local path
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"step": 1, "eval": {**EVAL, "means": [0.0, 0.0]}}) + "\n"
                    + json.dumps({"step": 4, "eval": EVAL}) + "\n")
    assert hub.eval_table_rows(path) == [("this adapter (step 4)", EVAL)]
    with pytest.raises(ValueError, match="not an evaluation result"):
        hub.eval_table_rows({"means": [1.0]})
    with pytest.raises(FileNotFoundError, match="eval --json"):
        hub.eval_table_rows(tmp_path / "missing.json")


@pytest.mark.parametrize("kw, match", [({"license": "MIT License"}, "license"), ({"tags": ["two words"]}, "tag"),
                                       ({"channel_names": ["only one"]}, "channel_names has 1")])
def test_model_card_refuses_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        hub.model_card(GRPOConfig(weights=(1.0, 1.0)), base_model=None, **kw)


# --------------------------------------------------------------------------- a trained adapter


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A two-step run of the tiny model loaded from a folder, evaluated at the end: (trainer, out_dir, base_dir)."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from tiny_lm import make_model, make_tokenizer
    from trainer_helpers import PROMPTS, e_reward, tiny_config

    from multireward_grpo import GRPOTrainer

    root = tmp_path_factory.mktemp("hub_run")
    tokenizer = make_tokenizer()
    base = root / "base"
    make_model(tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    config = tiny_config(root / "run", model=str(base), eval_every=2, eval_m=2)
    trainer = GRPOTrainer(config, e_reward, PROMPTS, eval_prompts=PROMPTS[:3])
    trainer.train()
    return trainer, root / "run", base


def test_trainer_replaces_peft_boilerplate_with_our_card(trained_run, tmp_path):
    trainer, out, _ = trained_run
    card = (out / "final" / "README.md").read_text()
    assert hub.PEFT_BOILERPLATE not in card
    meta, body = front_matter(card)
    assert meta["library_name"] == "peft" and "grpo" in meta["tags"] and "multi-reward" in meta["tags"]
    assert "base_model" not in meta  # a local folder is no Hub id
    last = json.loads((out / "eval.jsonl").read_text().splitlines()[-1])
    cells = " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in zip(last["eval"]["means"], last["eval"]["stderrs"]))
    assert f"| this adapter (step {last['step']}) | {cells} |" in body
    record = hub.read_training_record(out / "final")
    assert record["config"] == json.loads(json.dumps(trainer.config.to_dict()))
    assert record["channel_names"] == list(trainer.reward.channel_names)
    assert [r["mean_reward"] for r in record["history"]] == [h["mean_reward"] for h in trainer.history]
    kept = {"step", "mean_reward", "kl", "noise_factor", "mean_channel_0", "mean_channel_1", "zero_var_frac_0",
            "zero_var_frac_1", "influence_0", "influence_1"}
    assert record["history"] == [{k: h[k] for k in kept} for h in trainer.history]  # what the curves draw
    from multireward_grpo import viz

    drawn = viz.plot_training_curves(record["history"], tmp_path / "curves.png")
    assert drawn["diagnostics"] is not None  # the diagnostics panels too, not only the rewards


def test_adapter_upload_folder_file_by_file(trained_run, tmp_path):
    trainer, out, _ = trained_run
    final = out / "final"
    folder = hub.prepare_adapter_upload(final, tmp_path / "upload", repo_id="me/tiny-grpo", base_model="org/tiny-base")
    rewritten = ("README.md", "adapter_config.json", hub.TRAINING_RECORD)
    copied = {p.name for p in final.iterdir() if p.is_file() and p.name not in rewritten}
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert files == copied | set(rewritten) | {"curves.png"}
    assert {"adapter_model.safetensors", "tokenizer_config.json", hub.TRAINING_RECORD} <= files
    for name in copied:
        assert (folder / name).read_bytes() == (final / name).read_bytes(), name
    source_config = json.loads((final / "adapter_config.json").read_text())
    uploaded_config = json.loads((folder / "adapter_config.json").read_text())
    assert uploaded_config == {**source_config, "base_model_name_or_path": "org/tiny-base"}
    assert (folder / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # drawn from the recorded history
    meta, body = front_matter((folder / "README.md").read_text())
    assert meta["base_model"] == "org/tiny-base"
    last_eval = json.loads((out / "eval.jsonl").read_text().splitlines()[-1])
    means = "".join(f" {m:.4f} ± {s:.4f} |" for m, s in zip(last_eval["eval"]["means"], last_eval["eval"]["stderrs"]))
    assert f"| this adapter (step {trainer.step}) |{means}" in body
    record = json.loads((folder / hub.TRAINING_RECORD).read_text())
    source_record = hub.read_training_record(final)
    assert record["config"] == {**{k: v for k, v in source_record["config"].items() if k not in ("out_dir", "resume_from")},
                                "model": "org/tiny-base"}
    assert record["history"] == source_record["history"]
    assert "| `model` | `\"org/tiny-base\"` |" in body
    for name in ("README.md", hub.TRAINING_RECORD, "adapter_config.json"):  # no local path is uploaded
        assert str(out.parent) not in (folder / name).read_text(), name


def test_adapter_with_a_local_base_needs_a_hub_id(trained_run, tmp_path):
    _, out, base = trained_run
    with pytest.raises(ValueError, match="local folder .*base_model='org/name'"):
        hub.prepare_adapter_upload(out / "final", tmp_path / "upload")
    assert not (tmp_path / "upload").exists()  # refused before anything is written


def test_upload_folder_must_be_new_or_empty(trained_run, tmp_path):
    _, out, _ = trained_run
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        hub.prepare_adapter_upload(out / "final", tmp_path / "busy", base_model="org/b")


def test_missing_or_incomplete_adapter_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hub.prepare_adapter_upload(tmp_path / "nope", base_model="org/b")
    (tmp_path / "a").mkdir()
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        hub.prepare_adapter_upload(tmp_path / "a", base_model="org/b")
    (tmp_path / "a" / "adapter_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        hub.prepare_adapter_upload(tmp_path / "a", base_model="org/b")


def test_push_adapter_calls_the_hub_with_the_prepared_folder(trained_run, tmp_path, no_token):
    _, out, _ = trained_run
    dry = hub.push_adapter(out / "final", "me/tiny-grpo", base_model="org/tiny-base", dry_run=True,
                           out_dir=tmp_path / "dry")
    api = FakeHfApi()
    result = hub.push_adapter(out / "final", "me/tiny-grpo", base_model="org/tiny-base", token=TOKEN, private=True,
                              api=api)
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0][1] == {"repo_id": "me/tiny-grpo", "token": TOKEN, "private": True, "repo_type": "model",
                               "exist_ok": True}
    upload = api.calls[1][1]
    assert upload["repo_id"] == "me/tiny-grpo" and upload["repo_type"] == "model" and upload["token"] == TOKEN
    assert sorted(api.uploaded) == list(dry.files) == list(result.files)
    for name, data in api.uploaded.items():  # the dry run wrote exactly what was uploaded
        assert data == (tmp_path / "dry" / name).read_bytes(), name
    assert not Path(upload["folder_path"]).exists() and result.folder is None  # the temporary folder is gone
    assert result.url == "https://huggingface.co/me/tiny-grpo" and not result.dry_run


def test_dry_run_needs_no_token_and_calls_nothing(trained_run, tmp_path, no_token):
    _, out, _ = trained_run
    api = FakeHfApi()
    result = hub.push_adapter(out / "final", "me/x", base_model="org/b", dry_run=True, api=api)
    assert api.calls == [] and result.dry_run and result.folder.is_dir()
    assert set(result.files) == {p.name for p in result.folder.iterdir()}
    shutil.rmtree(result.folder)


def test_a_real_push_without_a_token_is_refused_before_any_work(trained_run, tmp_path, no_token):
    _, out, _ = trained_run
    api = FakeHfApi()
    with pytest.raises(ValueError, match="HF_TOKEN.*hf auth login"):
        hub.push_adapter(out / "final", "me/x", base_model="org/b", api=api, out_dir=tmp_path / "up")
    assert api.calls == [] and not (tmp_path / "up").exists()


@pytest.mark.parametrize("repo_id, match", [("not a repo!", "not a Hub repo id"), ("no-namespace", "no namespace"),
                                            ("a/b/c", "not a Hub repo id")])
def test_bad_repo_ids(trained_run, repo_id, match):
    _, out, _ = trained_run
    with pytest.raises(ValueError, match=match):
        hub.push_adapter(out / "final", repo_id, base_model="org/b", dry_run=True)
    with pytest.raises(TypeError, match="repo_id"):
        hub.push_adapter(out / "final", None, dry_run=True)


def test_token_sources_in_order(trained_run, tmp_path, monkeypatch):
    import huggingface_hub

    _, out, _ = trained_run
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_fromLogin")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    seen = []
    for env, arg in [(None, None), ("hf_fromEnv", None), ("hf_fromEnv", "hf_fromArg")]:
        if env:
            monkeypatch.setenv("HF_TOKEN", env)
        api = FakeHfApi()
        hub.push_adapter(out / "final", "me/x", base_model="org/b", token=arg, api=api)
        seen.append(api.calls[1][1]["token"])
    assert seen == ["hf_fromLogin", "hf_fromEnv", "hf_fromArg"]


# --------------------------------------------------------------------------- tokens never leak


@pytest.mark.parametrize("fail", ["create_repo", "upload_folder"])
def test_a_hub_failure_never_shows_the_token(trained_run, tmp_path, fail, capsys, caplog):
    _, out, _ = trained_run
    api = FakeHfApi(fail=fail, message=f"401 Unauthorized for Authorization: Bearer {TOKEN}")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(hub.HubError) as caught:
        hub.push_adapter(out / "final", "me/x", base_model="org/b", token=TOKEN, api=api)
    text = str(caught.value) + repr(caught.value) + "".join(capsys.readouterr()) + caplog.text
    assert "401 Unauthorized" in text and "***" in text
    assert TOKEN not in text
    assert caught.value.__cause__ is None and caught.value.__context__ is None  # the original text is not kept


def test_the_token_appears_in_no_output_on_any_path(trained_run, tmp_path, monkeypatch, capsys, caplog):
    _, out, _ = trained_run
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    api = FakeHfApi(source=out / "final")
    monkeypatch.setattr(hub, "_default_api", lambda token: api)
    results = [hub.push_adapter(out / "final", "me/x", base_model="org/b", api=api),
               hub.push_adapter(out / "final", "me/x", base_model="org/b", dry_run=True)]
    hub.pull("me/x", tmp_path / "pulled", api=api)
    codes = [main(["push", "adapter", str(out / "final"), "--repo-id", "me/x", "--base-model", "org/b"]),
             main(["push", "adapter", str(out / "final"), "--repo-id", "me/x", "--base-model", "org/b", "--dry-run",
                   "--out", str(tmp_path / "dry")]),
             main(["pull", "me/x", "--out", str(tmp_path / "pulled2")])]
    api.fail, api.message = "upload_folder", f"echo {TOKEN}"
    codes.append(main(["push", "adapter", str(out / "final"), "--repo-id", "me/x", "--base-model", "org/b"]))
    assert codes == [0, 0, 0, 2]
    assert [c[1]["token"] for c in api.calls if c[0] == "upload_folder"] == [TOKEN] * 3  # it was used...
    captured = capsys.readouterr()
    text = captured.out + captured.err + caplog.text + "".join(repr(r) for r in results)
    assert "pushed" in captured.out and "***" in captured.err
    assert TOKEN not in text  # ...and never shown
    for folder in [tmp_path / "pulled", tmp_path / "pulled2", tmp_path / "dry", results[1].folder]:
        for path in folder.rglob("*"):
            assert not path.is_file() or TOKEN.encode() not in path.read_bytes()
    shutil.rmtree(results[1].folder)


# --------------------------------------------------------------------------- loading an adapter


def _log_probs(model, ids):
    import torch

    with torch.no_grad():
        return torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)


def test_load_adapter_from_a_folder_gives_the_trained_log_probs(trained_run, capsys):
    import torch

    trainer, out, base = trained_run
    model, tokenizer = hub.load_adapter(None, out / "final")
    assert type(tokenizer).__name__ == type(trainer.tokenizer).__name__
    ids = torch.tensor([tokenizer("the cat says yes please").input_ids])
    trainer.model.eval()
    expected, got = _log_probs(trainer.model, ids), _log_probs(model, ids)
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    with model.disable_adapter():  # and the adapter matters: the bare base gives other log-probs
        bare = _log_probs(model, ids)
    assert (bare - expected).abs().max() > 1e-4
    assert "warning" not in capsys.readouterr().err  # the recorded base was used, no override


def test_load_adapter_errors_say_what_to_do(tmp_path, trained_run):
    from multireward_grpo.models import ModelLoadError

    with pytest.raises(ModelLoadError, match="no such folder"):
        hub.load_adapter(None, tmp_path / "missing" / "final")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no adapter_config.json"):
        hub.load_adapter(None, tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="someone/not-cached-adapter"):  # offline and not cached: fails at once
        hub.load_adapter(None, "someone/not-cached-adapter")


def test_pull_passes_its_arguments_to_the_hub(tmp_path, trained_run, no_token):
    _, out, _ = trained_run
    api = FakeHfApi(source=out / "final")
    path = hub.pull("me/x", tmp_path / "got", repo_type="dataset", revision="v1", api=api)
    assert api.calls == [("snapshot_download", {"repo_id": "me/x", "repo_type": "dataset", "revision": "v1",
                                                "local_dir": str(tmp_path / "got"), "token": None})]
    assert (path / "adapter_config.json").read_bytes() == (out / "final" / "adapter_config.json").read_bytes()
    with pytest.raises(ValueError, match="repo_type"):
        hub.pull("me/x", tmp_path / "got", repo_type="space", api=api)


# --------------------------------------------------------------------------- corpora as datasets


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    C = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    corpus = run_corpus(MockBackend(C=C), [(f"p{i}", str(i)) for i in range(6)], m_grid=[4, 8], K_seeds=12,
                        progress=False)
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    save_corpus(corpus, path)
    return path


def test_corpus_upload_folder_and_parquet_round_trip(corpus_file, tmp_path):
    import pyarrow.parquet as pq

    from multireward_grpo.generation import load_long_table

    folder = hub.prepare_corpus_upload(corpus_file, tmp_path / "up", repo_id="me/rollouts", n_resamples=0)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == \
        ["README.md", "data/train.parquet"]
    source, uploaded = load_corpus(corpus_file), load_corpus(folder / "data" / "train.parquet")
    assert uploaded == source  # header, groups and rewards, bit for bit
    for m in source.m_grid:
        np.testing.assert_array_equal(pack_for_analysis(uploaded, m=m), pack_for_analysis(source, m=m))
    table = pq.read_table(folder / "data" / "train.parquet")
    assert table.column_names[:6] == ["prompt_idx", "seed_idx", "rollout_idx", "m", "prompt", "gold"]
    assert table.num_rows == sum(len(g) for g in source.groups.values())
    plain = load_long_table(table.replace_schema_metadata(None))  # what a reader without our header sees
    assert list(plain.prompts) == list(source.prompts) and plain.channel_names == source.channel_names
    assert all(np.array_equal(plain.group(p, s, m), source.group(p, s, m)) for p, s, m in source.groups)


def test_dataset_card_front_matter_and_theorem3_table(corpus_file, tmp_path):
    from multireward_grpo.analysis.thm3 import analyze

    w = [1.0, 1.0, 0.5]
    folder = hub.prepare_corpus_upload(corpus_file, tmp_path / "up", repo_id="me/rollouts", weights=w,
                                       n_resamples=200, score_seed=3, tags=["mock"])
    meta, body = front_matter((folder / "README.md").read_text())
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train",
                                                                           "path": "data/train.parquet"}]}]
    assert meta["license"] == "cc-by-4.0" and meta["size_categories"] == ["n<1K"]
    assert {"grpo", "multi-reward", "rollouts", "mock"} <= set(meta["tags"])
    corpus = load_corpus(corpus_file)
    for m in (4, 8):  # the table holds what analyze gives on the same tensor with the same seed
        result = analyze(pack_for_analysis(corpus, m=m), np.array(w), 3, n_resamples=200)
        for mode in ("na", "an"):
            low, high = result.ratio_ci[mode]
            row = (f"| {m} | 6 | 12 | {mode} | {float(np.mean(result.realized[mode])):.4g} | "
                   f"{float(np.mean(result.predicted[mode])):.4g} | {result.ratio_pooled[mode]:.4g} | "
                   f"[{low:.4g}, {high:.4g}] |")
            assert row in body, row
    assert 'hf_hub_download("me/rollouts", "data/train.parquet", repo_type="dataset")' in body


def test_dataset_card_says_why_a_size_was_not_checked(tmp_path):
    corpus = run_corpus(MockBackend(C=np.eye(2)), [("p0", "0"), ("p1", "1")], m_grid=[4], K_seeds=1, progress=False)
    path = save_corpus(corpus, tmp_path / "one_seed.parquet")
    folder = hub.prepare_corpus_upload(path, tmp_path / "up", n_resamples=0)
    _, body = front_matter((folder / "README.md").read_text())
    assert "- m=4: not computed (" in body


def test_push_corpus_uploads_a_dataset_repo(corpus_file, no_token):
    api = FakeHfApi()
    result = hub.push_corpus(corpus_file, "me/rollouts", token=TOKEN, api=api, n_resamples=0)
    assert api.calls[0][1]["repo_type"] == "dataset" and api.calls[1][1]["repo_type"] == "dataset"
    assert sorted(api.uploaded) == ["README.md", "data/train.parquet"] == list(result.files)
    assert result.url == "https://huggingface.co/datasets/me/rollouts"


def test_corpus_weights_must_match_the_channels(corpus_file):
    with pytest.raises(ValueError, match="weights has 2 values but the corpus has 3 channels"):
        hub.prepare_corpus_upload(corpus_file, weights=[1.0, 1.0])


# --------------------------------------------------------------------------- CLI


def test_cli_dry_run_prints_the_folder_that_would_be_uploaded(trained_run, corpus_file, tmp_path, capsys, no_token):
    _, out, _ = trained_run
    assert main(["push", "adapter", str(out / "final"), "--repo-id", "me/x", "--base-model", "org/b", "--dry-run",
                 "--out", str(tmp_path / "a"), "--tag", "demo", "--license", "mit"]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip() == str(tmp_path / "a") and "would be uploaded" in printed.err
    meta, _ = front_matter((tmp_path / "a" / "README.md").read_text())
    assert meta["license"] == "mit" and "demo" in meta["tags"]
    assert main(["push", "corpus", str(corpus_file), "--repo-id", "me/r", "--dry-run", "--n-resamples", "0",
                 "--weights", "1,1,0.5"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert (folder / "data" / "train.parquet").is_file()
    shutil.rmtree(folder)


@pytest.mark.parametrize("argv, match", [
    (["push", "adapter", "/no/such/adapter", "--repo-id", "me/x", "--dry-run"], "does not exist"),
    (["push", "adapter", "FINAL", "--repo-id", "bad id!", "--dry-run"], "not a Hub repo id"),
    (["push", "adapter", "FINAL", "--repo-id", "me/x", "--base-model", "org/b"], "no Hugging Face token"),
    (["push", "corpus", "/no/such.jsonl", "--repo-id", "me/x", "--dry-run"], "(?i)no such file"),
    (["pull", "bad id!", "--out", "x"], "not a Hub repo id"),
])
def test_cli_errors_are_one_line(trained_run, argv, match, capsys, no_token):
    _, out, _ = trained_run
    argv = [str(out / "final") if a == "FINAL" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(match, err), err


def test_cli_help_documents_every_flag(capsys):
    import argparse

    from multireward_grpo.cli import build_parser

    parser = build_parser()
    push = parser.subcommands["push"]
    kinds = next(a for a in push._actions if isinstance(a, argparse._SubParsersAction)).choices
    for sub in (kinds["adapter"], kinds["corpus"], parser.subcommands["pull"]):
        for action in sub._actions:
            if action.dest != "help":
                assert action.help and action.help != argparse.SUPPRESS, (sub.prog, action.dest)
    for argv in (["push", "adapter", "--help"], ["push", "corpus", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        assert "HF_TOKEN" in text and "--dry-run" in text and "--repo-id" in text


# --------------------------------------------------------------------------- the README's Hub blocks


def _readme_hub_blocks() -> list[str]:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    return [b for b in blocks if "multireward_grpo.hub import" in b]


def test_readme_hub_blocks_run_against_fakes(trained_run, tmp_path, monkeypatch, capsys):
    """Every README block that uses the hub runs as written: the run's folder copied to grpo_out, a fake Hub."""
    _, out, _ = trained_run
    blocks = _readme_hub_blocks()
    assert len(blocks) == 3 and any("load_adapter" in b for b in blocks)
    api = FakeHfApi()
    monkeypatch.setattr(hub, "_default_api", lambda token: api)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    for i, code in enumerate(blocks):
        work = tmp_path / f"block{i}"
        shutil.copytree(out, work / "grpo_out")
        if "load_adapter" in code:  # the Hub id stands for the adapter folder it was pushed from
            code = re.sub(r'"your-name/[^"]+"', '"grpo_out/final"', code)
        else:  # as trained on a Hub model, whose id the adapter records
            config_path = work / "grpo_out" / "final" / "adapter_config.json"
            config = json.loads(config_path.read_text())
            config_path.write_text(json.dumps({**config, "base_model_name_or_path": "your-name/tiny-base"}))
        monkeypatch.chdir(work)
        namespace: dict = {}
        exec(compile(code, f"README hub block {i}", "exec"), namespace)
        if "load_adapter" in code:
            from peft import PeftModel

            assert isinstance(namespace["model"], PeftModel)
        if "preview" in namespace:  # a dry run's temporary folder is the reader's to inspect, the test's to remove
            shutil.rmtree(namespace["preview"].folder)
    uploads = [c[1] for c in api.calls if c[0] == "upload_folder"]
    assert [u["repo_id"] for u in uploads] == ["your-name/fintech-na-qwen2.5-1.5b"]
    printed = capsys.readouterr().out
    assert "https://huggingface.co/your-name/fintech-na-qwen2.5-1.5b" in printed
    assert "['README.md', 'data/train.parquet']" in printed and TOKEN not in printed


def test_a_checkpoint_adapter_is_described_by_its_trainer_state(trained_run, tmp_path):
    trainer, out, _ = trained_run
    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(out / "final", checkpoint / "model", ignore=shutil.ignore_patterns(hub.TRAINING_RECORD))
    state = {"step": 2, "config": trainer.config.to_dict(), "history": trainer.history}
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    folder = hub.prepare_adapter_upload(checkpoint / "model", tmp_path / "up", base_model="org/b")
    _, body = front_matter((folder / "README.md").read_text())
    assert f"| `lora_r` | `{trainer.config.lora_r}` |" in body and "| steps | 2 |" in body
    shutil.copytree(out / "final", tmp_path / "bare", ignore=shutil.ignore_patterns(hub.TRAINING_RECORD))
    with pytest.raises(ValueError, match="pass config="):
        hub.prepare_adapter_upload(tmp_path / "bare", base_model="org/b", run_dir=tmp_path / "none")


def test_a_card_that_cannot_be_written_costs_the_run_nothing(trained_run, tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    trainer, out, _ = trained_run
    shutil.copytree(out / "final", tmp_path / "final")
    before = (tmp_path / "final" / "README.md").read_text()

    def no_yaml(*args, **kwargs):
        raise ImportError("model and dataset cards need PyYAML")

    monkeypatch.setattr(hub, "_yaml_front_matter", no_yaml)
    fake = SimpleNamespace(config=trainer.config, reward=trainer.reward, history=trainer.history)
    assert hub.write_trainer_card(tmp_path / "final", fake) is None
    assert "the adapter is saved in" in capsys.readouterr().err
    assert (tmp_path / "final" / "README.md").read_text() == before


def test_cli_corpus_with_a_missing_reward(tmp_path, capsys):
    corpus = run_corpus(MockBackend(C=np.eye(2)), [(f"p{i}", "0") for i in range(4)], m_grid=[4], K_seeds=6,
                        progress=False)
    key = sorted(corpus.groups)[0]
    corpus.groups[key] = corpus.groups[key].copy()
    corpus.groups[key][1, 0] = np.nan
    path = save_corpus(corpus, tmp_path / "nan.jsonl")
    base = ["push", "corpus", str(path), "--repo-id", "me/x", "--dry-run", "--n-resamples", "0"]
    assert main(base) == 2
    assert "no value for channel 'r0'" in capsys.readouterr().err
    assert main([*base, "--nan-policy", "propagate", "--out", str(tmp_path / "up")]) == 0
    uploaded = load_corpus(tmp_path / "up" / "data" / "train.parquet", nan_policy="propagate")
    assert uploaded == load_corpus(path, nan_policy="propagate")  # the NaN travels as a missing reward
    _, body = front_matter((tmp_path / "up" / "README.md").read_text())
    assert "- m=4: not computed (rewards must be finite" in body


def test_links_and_folders_in_an_adapter_folder_are_not_uploaded(trained_run, tmp_path):
    _, out, _ = trained_run
    adapter = tmp_path / "final"
    shutil.copytree(out / "final", adapter)
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    (adapter / "notes.txt").symlink_to(secret)
    (adapter / "sub").mkdir()
    (adapter / "sub" / "x.txt").write_text("x")
    folder = hub.prepare_adapter_upload(adapter, tmp_path / "up", base_model="org/b")
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*")}
    assert "notes.txt" not in names and "sub" not in names and "adapter_model.safetensors" in names
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="not a folder"):
        hub.prepare_adapter_upload(adapter, tmp_path / "link", base_model="org/b")


def test_pull_failures_and_bad_arguments(tmp_path, no_token):
    api = FakeHfApi(fail="snapshot_download", message="404 Repository Not Found for url: https://huggingface.co/api/models/me/x")
    with pytest.raises(hub.HubError, match="downloading the model repo me/x failed: 404 Repository Not Found"):
        hub.pull("me/x", tmp_path / "got", api=api)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        hub.pull("me/x", tmp_path / "file", api=api)
    with pytest.raises(TypeError, match="token must be a non-empty string"):
        hub.pull("me/x", tmp_path / "got", token=123, api=api)


def test_the_real_client_offline_fails_cleanly_without_the_token(corpus_file, tmp_path, monkeypatch, capsys, caplog):
    """No fake: huggingface_hub's own HfApi, refused by HF_HUB_OFFLINE before any request leaves."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(hub.HubError, match="creating the dataset repo me/rollouts failed: .*offline") as pushed:
        hub.push_corpus(corpus_file, "me/rollouts", token=TOKEN, n_resamples=0)
    with pytest.raises(hub.HubError, match="downloading the model repo me/x failed") as pulled:
        hub.pull("me/x", tmp_path / "got", token=TOKEN)
    captured = capsys.readouterr()
    text = str(pushed.value) + str(pulled.value) + captured.out + captured.err + caplog.text
    assert TOKEN not in text


def test_the_cpu_demo_base_is_named_by_its_hub_id(tmp_path):
    from multireward_grpo.models import DEMO_CACHE_NAME, DEMO_MODEL_ID

    demo = tmp_path / "cache" / DEMO_CACHE_NAME
    demo.mkdir(parents=True)
    adapter = tmp_path / "final"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(demo)}))
    (adapter / "README.md").write_text("## Model Details\n\n" + hub.PEFT_BOILERPLATE + "\n")
    hub.write_model_card(adapter, GRPOConfig(weights=(1.0,)))
    assert "base_model" not in front_matter((adapter / "README.md").read_text())[0]  # not the converted cache yet
    (demo / "SOURCE.json").write_text("{}")  # the marker of the demo's converted folder
    hub.write_model_card(adapter, GRPOConfig(weights=(1.0,)))
    card = (adapter / "README.md").read_text()
    assert front_matter(card)[0]["base_model"] == DEMO_MODEL_ID and hub.PEFT_BOILERPLATE not in card


# --------------------------------------------------------------------------- slow tier: the real model


def _no_real_model() -> str | None:
    import importlib.util

    from multireward_grpo.models import DEMO_INSTALL, DEMO_PACKAGE

    if importlib.util.find_spec(DEMO_PACKAGE) is None or importlib.util.find_spec("gguf") is None:
        return f"needs the real model (SmolLM2-135M-Instruct as GGUF): {DEMO_INSTALL}"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_no_real_model() is not None, reason=str(_no_real_model()))
def test_real_model_adapter_card_upload_folder_and_reload(tmp_path, no_token):
    """SmolLM2-135M (the cpu-demo's model): one GRPO step, the upload folder, and the adapter loaded back."""
    import torch

    from multireward_grpo import GRPOTrainer
    from multireward_grpo.examples import FintechRewardFunction, make_fintech_prompts
    from multireward_grpo.models import DEMO_MODEL_ID, demo_model_path

    config = GRPOConfig(model=str(demo_model_path()), device="cpu", dtype="float32", n_steps=1, batch_prompts=2,
                        m=2, max_new_tokens=12, lr=1e-3, lora_r=4, lora_alpha=8, out_dir=str(tmp_path / "run"),
                        checkpoint_every=0, sample_every=0, verbose=False)
    trainer = GRPOTrainer(config, FintechRewardFunction(), make_fintech_prompts(4, seed=0))
    trainer.train()
    final = tmp_path / "run" / "final"
    assert front_matter((final / "README.md").read_text())[0]["base_model"] == DEMO_MODEL_ID
    api = FakeHfApi()
    result = hub.push_adapter(final, "me/smollm2-fintech-na", token=TOKEN, api=api)
    assert json.loads(api.uploaded["adapter_config.json"])["base_model_name_or_path"] == DEMO_MODEL_ID
    meta, body = front_matter(api.uploaded["README.md"].decode())
    weights = ", ".join(f"{n} {w:g}" for n, w in zip(trainer.reward.channel_names, config.weights))
    assert meta["base_model"] == DEMO_MODEL_ID and f"| reward channels and weights | {weights} |" in body
    assert "curves.png" in result.files
    model, tokenizer = hub.load_adapter(None, final)
    ids = torch.tensor([tokenizer("Please refund my card fee.").input_ids])
    trainer.model.eval()
    assert torch.allclose(_log_probs(model, ids), _log_probs(trainer.model, ids), atol=1e-5, rtol=0)


def _put_in_hub_cache(cache: Path, repo_id: str, files: dict, commit: str) -> None:
    """Files laid out as huggingface_hub caches a downloaded model repo (``refs/main`` -> a snapshot)."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    for name, data in files.items():
        (root / "snapshots" / commit / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "snapshots" / commit / name).write_bytes(data)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)


def test_pushed_adapter_loads_back_by_its_hub_id(trained_run, tmp_path, monkeypatch):
    """Push to a fake Hub, lay the uploaded files out as the Hub cache holds a download, load by id offline."""
    import huggingface_hub.constants
    import torch

    trainer, out, base = trained_run
    api = FakeHfApi()
    hub.push_adapter(out / "final", "me/tiny-grpo", base_model="org/tiny-base", token=TOKEN, api=api)
    cache = tmp_path / "hub-cache"
    _put_in_hub_cache(cache, "me/tiny-grpo", api.uploaded, "a" * 40)
    _put_in_hub_cache(cache, "org/tiny-base", {p.name: p.read_bytes() for p in base.iterdir()}, "b" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    model, tokenizer = hub.load_adapter(None, "me/tiny-grpo")  # the base comes from the uploaded adapter_config
    ids = torch.tensor([tokenizer("the cat says yes please").input_ids])
    trainer.model.eval()
    assert torch.allclose(_log_probs(model, ids), _log_probs(trainer.model, ids), atol=1e-6, rtol=0)


@pytest.mark.parametrize("recorded, expected", [("org/base-model", "org/base-model"), ("base", None), ("gpt2", None),
                                                ("", None), ("not a path or id!", None)])
def test_which_recorded_bases_count_as_hub_ids(tmp_path, recorded, expected, monkeypatch):
    monkeypatch.chdir(tmp_path)
    adapter = tmp_path / "final"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": recorded}))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    hub.write_model_card(adapter, GRPOConfig(weights=(1.0,)))
    assert front_matter((adapter / "README.md").read_text())[0].get("base_model") == expected
    if expected is None:
        with pytest.raises(ValueError, match="base_model='org/name'"):
            hub.prepare_adapter_upload(adapter)
    else:
        folder = hub.prepare_adapter_upload(adapter, tmp_path / "up")
        assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == expected


def test_without_huggingface_hub_the_error_names_the_extra(monkeypatch, trained_run, capsys):
    import sys

    _, out, _ = trained_run
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed
    with pytest.raises(ImportError, match=r'pip install "multireward-grpo\[data\]"'):
        hub.push_adapter(out / "final", "me/x", dry_run=True)
    assert main(["pull", "me/x", "--out", "x"]) == 2
    assert 'multireward-grpo[data]' in capsys.readouterr().err


def test_a_failed_preparation_leaves_no_temporary_folder(trained_run, monkeypatch):
    import tempfile

    _, out, _ = trained_run
    before = set(Path(tempfile.gettempdir()).glob("multireward-grpo-adapter-*"))

    def broken_card(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hub, "model_card", broken_card)
    with pytest.raises(OSError, match="No space left"):
        hub.prepare_adapter_upload(out / "final", base_model="org/b")
    assert set(Path(tempfile.gettempdir()).glob("multireward-grpo-adapter-*")) == before
    with pytest.raises(TypeError, match="tags must be a list"):
        hub.prepare_adapter_upload(out / "final", base_model="org/b", tags="one-tag")
    assert set(Path(tempfile.gettempdir()).glob("multireward-grpo-adapter-*")) == before
