"""Checkpoints: safe loading, crash-safe replacement, stale temp folders, run lineage, resume compatibility."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from tiny_lm import make_model, make_tokenizer
from trainer_helpers import PROMPTS, InterruptAt, e_reward, tiny_config

from multireward_grpo import GRPOConfig, GRPOTrainer
from multireward_grpo.train import checkpoint as ckpt
from multireward_grpo.train import trainer as trainer_module

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def three_channels(completion, prompt):
    return (*e_reward(completion, prompt), 0.5)


def _trainer(out_dir, tokenizer, reward=e_reward, prompts=PROMPTS, **kw):
    eval_prompts = PROMPTS[:2] if kw.get("eval_every") else None
    return GRPOTrainer(tiny_config(out_dir, **kw), reward, prompts, model=make_model(tokenizer), tokenizer=tokenizer,
                       eval_prompts=eval_prompts)


def _lora_state(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_" in k}


def _state(folder: Path) -> dict:
    return json.loads((folder / "trainer_state.json").read_text())


def _no_model_load(monkeypatch):
    """Make loading a model fail loudly, to prove an error comes before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(trainer_module, "_load", refuse)


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory, tokenizer):
    """out_dir of a finished 2-step run with checkpoints 1 and 2 (read-only for the tests that use it)."""
    out = tmp_path_factory.mktemp("two_step") / "run"
    _trainer(out, tokenizer, n_steps=2, checkpoint_every=1).train()
    return out


# --------------------------------------------------------------------------- A1: nothing is unpickled freely


class _Payload:
    """Unpickling this creates a file: a stand-in for code run by a hostile checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("name", ["optimizer.pt", "rng.pt"])
def test_a_pickled_payload_in_a_checkpoint_is_refused_without_running(two_step_run, tmp_path, tokenizer, name):
    out = tmp_path / "run"
    shutil.copytree(two_step_run, out)
    marker = tmp_path / "payload-ran"
    torch.save({"optimizer": _Payload(marker), "python": _Payload(marker)}, out / "checkpoint-2" / name)
    with pytest.raises(ValueError, match=rf"{name}.*(could run code|not loaded)") as info:
        _trainer(out, tokenizer, n_steps=2, checkpoint_every=1, resume_from="latest")
    assert not marker.exists()
    assert "Traceback" not in str(info.value)


def test_checkpoint_files_load_with_weights_only(two_step_run):
    folder = two_step_run / "checkpoint-2"
    optimizer = torch.load(folder / "optimizer.pt", weights_only=True)
    rng = torch.load(folder / "rng.pt", weights_only=True)
    assert set(optimizer) == {"optimizer", "scheduler"}
    assert {"python", "numpy", "torch"} <= set(rng)
    assert (folder / "model" / "adapter_model.safetensors").exists()
    assert not list(folder.rglob("*.bin"))


def test_no_unrestricted_unpickling_anywhere_in_the_package():
    pattern = re.compile(r"weights_only\s*=\s*False|allow_pickle\s*=\s*True|pickle\.(loads?|Unpickler)\b|"
                         r"cloudpickle|dill\.|torch\.load\((?!.*weights_only\s*=\s*True)")
    offenders = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_rng_states_round_trip_through_the_safe_format(tmp_path):
    import random

    import numpy as np

    random.seed(5), np.random.seed(6), torch.manual_seed(7)
    random.gauss(0, 1), np.random.standard_normal()  # cached Gaussians in both states
    torch.save(ckpt._rng_state(), tmp_path / "rng.pt")
    expected = (random.gauss(0, 1), np.random.standard_normal(), torch.rand(3))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    ckpt._restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True), tmp_path / "rng.pt")
    got = (random.gauss(0, 1), np.random.standard_normal(), torch.rand(3))
    assert got[:2] == expected[:2]
    torch.testing.assert_close(got[2], expected[2], atol=0, rtol=0)


# --------------------------------------------------------------------------- A4: replacement, temp folders, lineage


class _Crash(BaseException):
    """The process dying at this point (no later file operation happens)."""


def _resave_setup(tmp_path, tokenizer):
    trainer = _trainer(tmp_path / "run", tokenizer, n_steps=3)
    trainer.train_step()
    ckpt.save_checkpoint(trainer)
    pristine = tmp_path / "pristine"
    shutil.copytree(tmp_path / "run", pristine)
    trainer.history[-1]["marker"] = "new"  # the re-save of step 1 differs from the first save
    return trainer, pristine


def _dying_from(monkeypatch, k, error=_Crash, once=False):
    """From the k-th os.replace / shutil.rmtree call on, every one raises (once=True: only the k-th)."""
    calls = {"n": 0}
    real_replace, real_rmtree = ckpt.os.replace, shutil.rmtree

    def guard(real):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == k or (calls["n"] > k and not once):
                raise error(f"file operation {calls['n']} failed")
            return real(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(ckpt.os, "replace", guard(real_replace))
    monkeypatch.setattr(ckpt.shutil, "rmtree", guard(real_rmtree))
    return calls


def _assert_clean_and_complete(out: Path, steps: list[int]):
    assert sorted(p.name for p in out.iterdir() if p.name.startswith((".checkpoint", "checkpoint"))) == [
        f"checkpoint-{s}" for s in steps]
    for s in steps:
        assert (out / f"checkpoint-{s}" / "COMPLETE").exists()
        assert (out / f"checkpoint-{s}" / "model" / "adapter_model.safetensors").exists()


def test_a_crash_at_any_point_of_a_resave_leaves_a_complete_checkpoint(tmp_path, tokenizer, monkeypatch):
    trainer, pristine = _resave_setup(tmp_path, tokenizer)
    out = tmp_path / "run"
    outcomes = set()
    for k in range(1, 50):
        shutil.rmtree(out)
        shutil.copytree(pristine, out)
        with monkeypatch.context() as patch:
            calls = _dying_from(patch, k)
            try:
                ckpt.save_checkpoint(trainer)
                finished = True
            except _Crash:
                finished = False
        ckpt.clean_stale_temp_folders(out)  # what the next start does
        _assert_clean_and_complete(out, [1])
        outcomes.add(_state(out / "checkpoint-1")["history"][-1].get("marker", "old"))
        if finished:
            assert calls["n"] < k
            break
    else:
        pytest.fail("save_checkpoint never finished")
    assert outcomes == {"old", "new"}
    resumed = _trainer(out, tokenizer, n_steps=3, resume_from="latest")
    assert resumed.step == 1


def test_a_failed_rename_restores_the_previous_checkpoint_at_once(tmp_path, tokenizer, monkeypatch):
    trainer, pristine = _resave_setup(tmp_path, tokenizer)
    out = tmp_path / "run"
    for k in (1, 2):  # moving the old folder aside; moving the new one into place
        shutil.rmtree(out)
        shutil.copytree(pristine, out)
        with monkeypatch.context() as patch:
            _dying_from(patch, k, error=OSError, once=True)
            with pytest.raises(OSError, match=f"file operation {k} failed"):
                ckpt.save_checkpoint(trainer)
        _assert_clean_and_complete(out, [1])  # no start-up clean-up needed
        assert "marker" not in _state(out / "checkpoint-1")["history"][-1]


def test_a_crash_while_pruning_leaves_no_half_deleted_checkpoint(tmp_path, tokenizer, monkeypatch):
    trainer = _trainer(tmp_path / "run", tokenizer, n_steps=3, keep_checkpoints=1)
    trainer.train_step()
    ckpt.save_checkpoint(trainer)
    trainer.train_step()
    real_rmtree = shutil.rmtree

    def partial_rmtree(path, *args, **kwargs):
        real_rmtree(Path(path) / "model")  # part of the folder is gone when the process dies
        raise _Crash("killed while deleting")

    monkeypatch.setattr(ckpt.shutil, "rmtree", partial_rmtree)
    with pytest.raises(_Crash):
        ckpt.save_checkpoint(trainer)
    monkeypatch.undo()
    out = tmp_path / "run"
    for folder in out.glob("checkpoint-*"):  # whatever is still named checkpoint-N is whole
        assert (folder / "model" / "adapter_model.safetensors").exists(), folder
    ckpt.clean_stale_temp_folders(out)
    _assert_clean_and_complete(out, [2])


def test_a_checkpoint_that_cannot_be_deleted_does_not_stop_training(tmp_path, tokenizer, monkeypatch, capsys):
    trainer = _trainer(tmp_path / "run", tokenizer, n_steps=3, keep_checkpoints=1)
    trainer.train_step()
    ckpt.save_checkpoint(trainer)
    trainer.train_step()
    real_replace = ckpt.os.replace

    def no_delete(src, dst, *args, **kwargs):
        if str(dst).endswith(".del"):
            raise PermissionError(13, "Permission denied")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(ckpt.os, "replace", no_delete)
    assert ckpt.save_checkpoint(trainer).name == "checkpoint-2"
    assert "could not remove the old checkpoint folder" in capsys.readouterr().err
    _assert_clean_and_complete(tmp_path / "run", [1, 2])


def test_stale_temp_folders_are_removed_at_start(two_step_run, tmp_path, tokenizer):
    out = tmp_path / "run"
    shutil.copytree(two_step_run, out)
    stale = [".checkpoint-3.abcd1234.tmp", ".checkpoint-3.k2j4h5g6", ".checkpoint-2.zz_z9999.old",
             ".checkpoint-7.q1w2e3r4.del"]
    kept = [".checkpoint-notes", ".checkpoint-3.tmp", "checkpoint-9.abcd1234.tmp", ".my-stuff.abcd1234.tmp"]
    for name in stale + kept:
        (out / name / "model").mkdir(parents=True)
        (out / name / "COMPLETE").write_text("ok\n")
    shutil.copytree(out / "checkpoint-1", out / ".checkpoint-5.aaaa1111.old")  # set aside, never put back
    (out / "elsewhere").mkdir()
    (out / "elsewhere" / ".checkpoint-3.abcd1234.tmp").mkdir()  # not in out_dir itself: left alone
    _trainer(out, tokenizer, n_steps=2)
    names = {p.name for p in out.iterdir()}
    assert not names & set(stale)
    assert set(kept) <= names
    assert (out / "elsewhere" / ".checkpoint-3.abcd1234.tmp").exists()
    assert (out / "checkpoint-5" / "COMPLETE").exists()  # restored: its replacement never arrived
    assert ".checkpoint-5.aaaa1111.old" not in names


def test_latest_is_the_newest_checkpoint_of_the_resumed_lineage(tmp_path, tokenizer, capsys):
    out = tmp_path / "run"
    first = _trainer(out, tokenizer, n_steps=3, checkpoint_every=1, keep_checkpoints=10)
    first.train()
    assert ckpt.latest_checkpoint(out).name == "checkpoint-3"
    resumed = _trainer(out, tokenizer, n_steps=2, checkpoint_every=0, keep_checkpoints=10,
                       resume_from=str(out / "checkpoint-1"))
    resumed.train()
    latest = ckpt.latest_checkpoint(out)
    assert latest.name == "checkpoint-2"
    state = _state(latest)
    assert state["run_id"] == resumed.run_id != first.run_id
    assert state["parent"] == {"run_id": first.run_id, "step": 1, "checkpoint": "checkpoint-1"}
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    abandoned = sorted(p.relative_to(out).as_posix() for p in out.glob("abandoned/*/checkpoint-*"))
    assert abandoned == [f"abandoned/{first.run_id}/checkpoint-2", f"abandoned/{first.run_id}/checkpoint-3"]
    assert (out / abandoned[-1] / "COMPLETE").exists()
    assert "abandoned" in capsys.readouterr().err
    again = _trainer(out, tokenizer, n_steps=2, resume_from="latest")
    assert again.step == 2 and again.parent["run_id"] == resumed.run_id


def test_ctrl_c_after_resuming_an_older_step_saves_the_new_lineage(tmp_path, tokenizer, capsys):
    out = tmp_path / "run"
    _trainer(out, tokenizer, n_steps=2, checkpoint_every=1).train()
    per_step = 2 * 4  # batch_prompts x m reward calls
    cut = _trainer(out, tokenizer, reward=InterruptAt(per_step + 3), n_steps=3,  # inside the 2nd step after resuming
                   resume_from=str(out / "checkpoint-1"))
    with pytest.raises(KeyboardInterrupt):
        cut.train()
    assert cut.step == 2
    assert "interrupted after step 2" in capsys.readouterr().err
    assert _state(out / "checkpoint-2")["run_id"] == cut.run_id  # not the abandoned run's step 2
    resumed = _trainer(out, tokenizer, n_steps=3, resume_from="latest")
    for k, v in _lora_state(cut).items():
        torch.testing.assert_close(_lora_state(resumed)[k], v, atol=0, rtol=0)


# --------------------------------------------------------------------------- A5: what a resume may change


def test_every_config_field_is_either_refused_or_applied_on_resume():
    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    refused, applied, ignored = set(ckpt.RESUME_REFUSED), set(ckpt.RESUME_APPLIED), set(ckpt.RESUME_IGNORED)
    assert refused | applied | ignored == names
    assert not (refused & applied) and not (refused & ignored) and not (applied & ignored)
    assert {"mode", "m", "seed", "weights", "lora_r", "lora_target_modules", "use_lora"} <= refused
    assert {"n_steps", "lr", "verbose", "report_to", "sample_every", "eval_every", "checkpoint_every",
            "keep_checkpoints"} <= applied
    for name in refused | applied:
        assert name in ckpt.__doc__


def test_resume_refuses_every_incompatible_change_at_once_before_loading(two_step_run, tokenizer, monkeypatch):
    _no_model_load(monkeypatch)
    with pytest.raises(ValueError) as info:
        GRPOTrainer(tiny_config(two_step_run, mode="an", m=3, seed=9, lora_r=8, weights=(1.0, 0.0, 1.0),
                            resume_from="latest"),
                    three_channels, PROMPTS[:-1], model=make_model(tokenizer), tokenizer=tokenizer)
    message = str(info.value)
    for line in ("mode: 'na' -> 'an'", "m: 4 -> 3", "seed: 0 -> 9", "lora_r: 4 -> 8",
                 "weights: [1.0, 0.0] -> [1.0, 0.0, 1.0]", "reward channels: 2 -> 3", "prompts: 8 prompts"):
        assert line in message, line
    assert "-> 7 prompts" in message
    assert "out_dir" in message and "restore" in message
    assert not re.search(r"^\s*(n_steps|lr):", message, flags=re.MULTILINE)  # those may change


@pytest.mark.parametrize(("change", "expected"), [
    ({"mode": "an"}, "mode: 'na' -> 'an'"),
    ({"m": 3}, "m: 4 -> 3"),
    ({"seed": 1}, "seed: 0 -> 1"),
    ({"lora_r": 8}, "lora_r: 4 -> 8"),
    ({"lora_target_modules": ("q_proj",)}, "lora_target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'] -> ['q_proj']"),
    ({"prompts": PROMPTS[::-1]}, "prompts: 8 prompts (sha256 "),
    ({"system_prompt": "be brief"}, "system_prompt: None -> 'be brief'"),
    ({"weights": (1.0, 0.0, 1.0), "reward": three_channels}, "reward channels: 2 -> 3"),
])
def test_each_incompatible_change_is_refused(two_step_run, tokenizer, change, expected):
    change = dict(change)
    prompts, reward = change.pop("prompts", PROMPTS), change.pop("reward", e_reward)
    with pytest.raises(ValueError, match="cannot change") as info:
        _trainer(two_step_run, tokenizer, reward=reward, prompts=prompts, resume_from="latest", **change)
    assert expected in str(info.value)


def test_a_changed_lora_shape_is_listed_not_a_torch_size_mismatch(two_step_run, tokenizer):
    with pytest.raises(ValueError, match=r"lora_r: 4 -> 16\n.*lora_alpha: 8 -> 32"):
        _trainer(two_step_run, tokenizer, lora_r=16, lora_alpha=32, resume_from="latest")


def test_resume_applies_a_new_lr_and_bookkeeping(two_step_run, tmp_path, tokenizer, capsys):
    out = tmp_path / "run"
    shutil.copytree(two_step_run, out)
    resumed = _trainer(out, tokenizer, n_steps=3, lr=2e-2, checkpoint_every=1, keep_checkpoints=3, sample_every=0,
                       eval_every=5, report_to=("jsonl",), verbose=False, resume_from="latest")
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "applied" in x]
    assert len(lines) == 1
    for part in ("lr 0.01 -> 0.02", "n_steps 2 -> 3", "keep_checkpoints 2 -> 3", "sample_every 1 -> 0",
                 "eval_every 0 -> 5"):
        assert part in lines[0], part
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [2e-2]
    assert [g["initial_lr"] for g in resumed.optimizer.param_groups] == [2e-2]
    assert resumed.scheduler.base_lrs == [2e-2]
    before = _lora_state(resumed)
    grads = {}
    resumed.optimizer.register_step_pre_hook(lambda opt, a, k: grads.update(lr=opt.param_groups[0]["lr"]))
    resumed.train()
    assert grads["lr"] == 2e-2  # the update of step 3 really used the new lr
    assert resumed.step == 3 and (out / "checkpoint-3" / "COMPLETE").exists()
    assert any(not torch.equal(v, _lora_state(resumed)[k]) for k, v in before.items())


def test_a_new_lr_follows_the_schedule_of_the_new_settings(tmp_path, tokenizer):
    out = tmp_path / "run"
    _trainer(out, tokenizer, n_steps=2, lr=1e-2, lr_scheduler="linear").train()
    resumed = _trainer(out, tokenizer, n_steps=8, lr=2e-2, lr_scheduler="linear", resume_from="latest")
    # update 2 of 8 under the linear schedule: factor 1 - 2/8
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(2e-2 * (1 - 2 / 8), rel=1e-12)
    assert resumed.scheduler.get_last_lr() == [resumed.optimizer.param_groups[0]["lr"]]


def test_an_unchanged_resume_prints_no_applied_line(two_step_run, tmp_path, tokenizer, capsys):
    out = tmp_path / "run"
    shutil.copytree(two_step_run, out)
    _trainer(out, tokenizer, n_steps=2, checkpoint_every=1, resume_from="latest")
    assert "applied" not in capsys.readouterr().err


# --------------------------------------------------------------------------- C16: edges of 'latest'


def test_resume_latest_without_a_checkpoint_fails_before_the_model_loads(tmp_path, tokenizer, monkeypatch):
    _no_model_load(monkeypatch)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        GRPOTrainer(tiny_config(tmp_path / "run", resume_from="latest"), e_reward, PROMPTS, tokenizer=tokenizer)


def test_a_missing_resume_path_fails_before_the_model_loads(tmp_path, tokenizer, monkeypatch):
    _no_model_load(monkeypatch)
    with pytest.raises(FileNotFoundError, match="checkpoint-9"):
        GRPOTrainer(tiny_config(tmp_path / "run", resume_from=str(tmp_path / "run" / "checkpoint-9")), e_reward,
                    PROMPTS, tokenizer=tokenizer)


def test_non_numeric_checkpoint_folders_are_ignored_by_latest(two_step_run, tmp_path, tokenizer):
    out = tmp_path / "run"
    shutil.copytree(two_step_run, out)
    shutil.copytree(out / "checkpoint-2", out / "checkpoint-best")
    (out / "checkpoint-x9").mkdir()
    (out / "checkpoint-x9" / "COMPLETE").write_text("ok\n")
    assert ckpt.latest_checkpoint(out).name == "checkpoint-2"
    trainer = _trainer(out, tokenizer, n_steps=3, checkpoint_every=1, keep_checkpoints=1, resume_from="latest")
    trainer.train()  # saving and pruning skip them too
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-best", "checkpoint-x9"]
    explicit = _trainer(out, tokenizer, n_steps=3, checkpoint_every=1, resume_from=str(out / "checkpoint-best"))
    assert explicit.step == 2


def test_keep_checkpoints_zero_is_an_error():
    with pytest.raises(ValueError, match="keep_checkpoints.*>= 1"):
        GRPOConfig(keep_checkpoints=0)
    assert GRPOConfig(keep_checkpoints=1).keep_checkpoints == 1
