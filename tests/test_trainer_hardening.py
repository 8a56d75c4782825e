"""What a trainer step does matches what its log says: dropout, per-iteration stats, sampling, NaN gradients,
log files and prompt inputs (tiny random Llama, CPU, fixed seeds)."""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from multireward_grpo import GRPOTrainer  # noqa: E402
from multireward_grpo.train import losses  # noqa: E402
from multireward_grpo.train.rollout import normalize_prompt, render_prompts, sample_completions  # noqa: E402
from tiny_lm import make_model, make_tokenizer  # noqa: E402
from trainer_helpers import PROMPTS, e_reward, tiny_config  # noqa: E402



@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def _config(tmp_path, **kw):
    return tiny_config(tmp_path / "run", **kw)


def _trainer(tmp_path, tokenizer, reward=e_reward, prompts=PROMPTS, model=None, eval_prompts=None, **kw):
    return GRPOTrainer(_config(tmp_path, **kw), reward, prompts, model=model or make_model(tokenizer),
                       tokenizer=tokenizer, eval_prompts=eval_prompts)


def _lora_state(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_" in k}


class _LossSpy:
    """Wraps ``losses.policy_loss`` and keeps, per call, the ratio, the mask, the loss value and the stats."""

    def __init__(self, monkeypatch):
        self.calls = []
        self._real = losses.policy_loss
        monkeypatch.setattr(losses, "policy_loss", self)

    def __call__(self, logp, old_logp, advantages, mask, **kwargs):
        loss, stats = self._real(logp, old_logp, advantages, mask, **kwargs)
        self.calls.append({"ratio": torch.exp(logp - old_logp).detach(), "mask": mask.bool(),
                           "loss": float(loss.detach()), "stats": dict(stats)})
        return loss, stats


def _with_attention_dropout(model, rate):
    """Give the attention layers a functional dropout rate (Llama reads ``attention_dropout`` at run time)."""
    for module in model.modules():
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = rate
    return model


# --------------------------------------------------------------------------- C12: dropout


def _first_iteration_calls(calls, n_rows, micro_batch_size, num_iterations):
    """The policy_loss calls of each step's first iteration (a step makes num_iterations x micro-batches calls)."""
    per_iteration = math.ceil(n_rows / micro_batch_size)
    per_step = per_iteration * num_iterations
    assert len(calls) % per_step == 0
    return [calls[s:s + per_iteration] for s in range(0, len(calls), per_step)]


@pytest.mark.parametrize("attention_dropout", [0.0, 0.1])
def test_first_iteration_ratio_is_exactly_one_with_lora_dropout_configured(tmp_path, tokenizer, monkeypatch,
                                                                          attention_dropout):
    spy = _LossSpy(monkeypatch)
    model = _with_attention_dropout(make_model(tokenizer), attention_dropout)
    trainer = _trainer(tmp_path, tokenizer, model=model, lora_dropout=0.05, num_iterations=2, n_steps=2)
    trainer.train_step()
    trainer.train_step()  # LoRA's B is 0 at the start: only from step 2 on does its dropout reach the output
    for first in _first_iteration_calls(spy.calls, n_rows=2 * 4, micro_batch_size=3, num_iterations=2):
        for call in first:
            assert float((call["ratio"][call["mask"]] - 1.0).abs().max()) <= 1e-6
        assert sum(call["stats"]["clipped_tokens"] for call in first) == 0.0
    dropouts = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.p == 0.0 for m in dropouts)
    assert all(m.attention_dropout == 0.0 for m in trainer.model.modules()
               if isinstance(getattr(m, "attention_dropout", None), float))


def test_disable_dropout_false_keeps_the_configured_dropout(tmp_path, tokenizer, monkeypatch):
    spy = _LossSpy(monkeypatch)
    trainer = _trainer(tmp_path, tokenizer, lora_dropout=0.3, num_iterations=2, n_steps=2, disable_dropout=False)
    assert any(m.p == 0.3 for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout))
    trainer.train_step()
    trainer.train_step()
    step_2 = _first_iteration_calls(spy.calls, n_rows=2 * 4, micro_batch_size=3, num_iterations=2)[1]
    # train-mode dropout in the loss pass against eval-mode old log-probs: the on-policy ratio leaves 1
    assert max(float((c["ratio"][c["mask"]] - 1.0).abs().max()) for c in step_2) > 1e-3


# --------------------------------------------------------------------------- C13: every iteration is logged


def test_update_stats_are_the_mean_over_iterations_and_the_last(tmp_path, tokenizer, monkeypatch):
    spy = _LossSpy(monkeypatch)
    norms = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip_spy(params, max_norm, *args, **kwargs):
        norm = real_clip(params, max_norm, *args, **kwargs)
        norms.append(float(norm))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_spy)
    trainer = _trainer(tmp_path, tokenizer, num_iterations=3, n_steps=1, lr=5e-2, kl_coef=0.1, ppo_clip=0.05)
    record = trainer.train_step()
    assert len(norms) == 3 and len(spy.calls) % 3 == 0
    size = len(spy.calls) // 3
    per = [spy.calls[i * size:(i + 1) * size] for i in range(3)]
    expected = {
        "loss": [sum(c["loss"] for c in it) for it in per],
        "pg_loss": [sum(c["stats"]["pg"] for c in it) for it in per],
        "kl": [sum(c["stats"]["kl"] for c in it) for it in per],
        "clip_frac": [sum(c["stats"]["clipped_tokens"] for c in it) / sum(c["stats"]["tokens"] for c in it)
                      for it in per],
        "clip_frac_low": [sum(c["stats"]["clipped_low_tokens"] for c in it) / sum(c["stats"]["tokens"] for c in it)
                          for it in per],
        "clip_frac_high": [sum(c["stats"]["clipped_high_tokens"] for c in it) / sum(c["stats"]["tokens"] for c in it)
                           for it in per],
        "grad_norm": norms,
    }
    assert expected["clip_frac"][0] == 0.0 and expected["clip_frac"][-1] > 0.0  # later iterations do clip
    np.testing.assert_allclose(np.add(expected["clip_frac_low"], expected["clip_frac_high"]), expected["clip_frac"],
                               rtol=1e-12)
    for key, values in expected.items():
        assert record[key] == pytest.approx(np.mean(values), rel=1e-9, abs=1e-12), key
        assert record[f"{key}_last"] == pytest.approx(values[-1], rel=1e-9, abs=1e-12), key


def test_logging_docstring_lists_the_per_iteration_keys():
    from multireward_grpo.train import logging as train_logging

    for key in ("clip_frac_last", "clip_frac_low", "clip_frac_high", "loss_last", "pg_loss_last", "kl_last",
                "grad_norm_last", "update_skipped", "skipped_updates"):
        assert f"``{key}``" in train_logging.__doc__, key


# --------------------------------------------------------------------------- C14: sampling from logits / T only


POLLUTING = dict(
    do_sample=True, temperature=0.3, top_p=0.5, top_k=3, min_p=0.3, typical_p=0.5, epsilon_cutoff=0.05,
    eta_cutoff=0.05, min_new_tokens=8, repetition_penalty=3.0, no_repeat_ngram_size=1, bad_words_ids=[[10], [11]],
    suppress_tokens=[12, 13], begin_suppress_tokens=[14], forced_bos_token_id=15, forced_eos_token_id=16,
    sequence_bias=[[[17], 5.0]], exponential_decay_length_penalty=(2, 1.5), renormalize_logits=True, top_h=0.5,
    max_length=7, stop_strings=["cat"],
)


def _polluted_model(tokenizer, folder):
    """The tiny model saved with a generation_config that sets every sampling knob, and loaded back."""
    from transformers import AutoModelForCausalLM

    model = make_model(tokenizer)
    for key, value in POLLUTING.items():
        setattr(model.generation_config, key, value)
    model.save_pretrained(folder)
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    assert loaded.generation_config.min_new_tokens == 8 and loaded.generation_config.bad_words_ids == [[10], [11]]
    return loaded


def _favour_eos(model, eos, bias):
    """Add ``bias`` to the EOS logit in every forward pass, so completions often end early."""

    def hook(module, args, output):
        output.logits[..., eos] += bias

    return model.register_forward_hook(hook)


def _reference_sample(model, prompt_ids, prompt_mask, *, temperature, max_new_tokens, eos, pad, seed):
    """Plain ancestral sampling from softmax(logits / T), one batched multinomial draw per step."""
    torch.manual_seed(seed)
    ids, mask = prompt_ids, prompt_mask
    unfinished = torch.ones(ids.shape[0], dtype=torch.long)
    drawn = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1].float()
            token = torch.multinomial(torch.softmax(logits / temperature, dim=-1), num_samples=1).squeeze(1)
            token = token * unfinished + pad * (1 - unfinished)
            drawn.append(token)
            ids = torch.cat([ids, token[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(token)[:, None]], dim=1)
            unfinished = unfinished * (token != eos).long()
            if not unfinished.any():
                break
    return torch.stack(drawn, dim=1)


def test_samples_come_from_tempered_logits_whatever_the_model_generation_config(tmp_path, tokenizer):
    model = _polluted_model(tokenizer, tmp_path / "polluted").eval()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    handle = _favour_eos(model, eos, 4.0)
    texts = render_prompts(tokenizer, [normalize_prompt(p, i) for i, p in enumerate(PROMPTS[:3])])
    rollouts = sample_completions(model, tokenizer, texts, m=4, max_new_tokens=10, temperature=0.7,
                                  generator_seed=5, share_prompt=False)
    reference = _reference_sample(model, rollouts.prompt_ids, rollouts.prompt_mask, temperature=0.7,
                                  max_new_tokens=10, eos=eos, pad=pad, seed=5)
    handle.remove()
    width = reference.shape[1]
    assert torch.equal(rollouts.completion_ids[:, :width], reference)
    assert bool((rollouts.completion_ids[:, width:] == pad).all())
    lengths = rollouts.completion_mask.sum(1)
    # min_new_tokens=8 in the model's config would forbid EOS before the 8th token
    assert int(lengths.min()) < 8 and not bool(rollouts.truncated.all())


def test_only_temperature_and_top_p_shape_the_logits(tmp_path, tokenizer, monkeypatch):
    """The trainer samples each row from its own seeded stream: the one logits processor is that sampler, with
    the config's temperature and top-p; nothing of the model's generation_config is added."""
    from transformers.generation import utils as generation_utils

    from multireward_grpo.train.rollout import RowSeededSampler

    seen = []
    real = generation_utils.GenerationMixin._get_logits_processor

    def spy(self, *args, **kwargs):
        processors = real(self, *args, **kwargs)
        seen.append(list(processors))
        return processors

    monkeypatch.setattr(generation_utils.GenerationMixin, "_get_logits_processor", spy)
    model = _polluted_model(tokenizer, tmp_path / "polluted")
    trainer = _trainer(tmp_path, tokenizer, model=model, eval_prompts=PROMPTS[:2], temperature=0.7, top_p=0.9,
                       n_steps=1)
    trainer.train_step()
    trainer.evaluate(m=2)
    assert len(seen) >= 2
    assert all([type(p) for p in processors] == [RowSeededSampler] for processors in seen), seen
    assert all((p.temperature, p.top_p) == (0.7, 0.9) for processors in seen for p in processors)


def test_trainer_evaluation_and_backend_ignore_the_model_generation_config(tmp_path, tokenizer):
    from multireward_grpo.generation import HFBackend

    def build(model):
        return _trainer(tmp_path / str(id(model)), tokenizer, model=model, eval_prompts=PROMPTS[:3], n_steps=1)

    clean, polluted = build(make_model(tokenizer)), build(_polluted_model(tokenizer, tmp_path / "polluted"))
    assert clean.train_step()["mean_channel_0"] == polluted.train_step()["mean_channel_0"]
    np.testing.assert_array_equal(clean.evaluate(m=3).per_prompt, polluted.evaluate(m=3).per_prompt)
    backends = [HFBackend(model=model, tokenizer=tokenizer, reward_fn=e_reward, max_new_tokens=8, temperature=1.0,
                          device="cpu", seed=3)
                for model in (make_model(tokenizer), _polluted_model(tokenizer, tmp_path / "polluted2"))]
    groups = [b.generate("the cat", "0", m=4, seed_idx=0)["completions"] for b in backends]
    assert groups[0] == groups[1]


# --------------------------------------------------------------------------- C15: non-finite gradients


def test_non_finite_gradient_skips_the_update_and_counts_it(tmp_path, tokenizer, monkeypatch):
    trainer = _trainer(tmp_path, tokenizer, n_steps=3)
    real = losses.policy_loss

    def nan_on_step_1(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        return (loss * float("nan") if trainer.step == 1 else loss), stats

    monkeypatch.setattr(losses, "policy_loss", nan_on_step_1)
    before = _lora_state(trainer)
    with pytest.warns(RuntimeWarning, match=r"step 1\b.*non-finite gradient norm.*skipped"):
        first = trainer.train_step()
    assert all(torch.equal(v, before[k]) for k, v in _lora_state(trainer).items())
    assert all(p.grad is None or not p.grad.any() for p in trainer.model.parameters())
    assert trainer.optimizer.state == {} or all(not s for s in trainer.optimizer.state.values())
    assert first["update_skipped"] == 1 and first["skipped_updates"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        second = trainer.train_step()
    assert second["update_skipped"] == 0 and second["skipped_updates"] == 1
    after = _lora_state(trainer)
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(v, before[k]) for k, v in after.items())


def test_skipped_update_count_is_in_the_history_file(tmp_path, tokenizer, monkeypatch):
    trainer = _trainer(tmp_path, tokenizer, n_steps=2)
    real = losses.policy_loss
    monkeypatch.setattr(losses, "policy_loss",
                        lambda *a, **k: (lambda out: (out[0] * float("nan"), out[1]))(real(*a, **k)))
    with pytest.warns(RuntimeWarning, match="non-finite gradient norm"):
        trainer.train()
    lines = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [(r["update_skipped"], r["skipped_updates"]) for r in lines] == [(1, 1), (1, 2)]


# --------------------------------------------------------------------------- A3: no writes through links


def _outside(tmp_path, name):
    target = tmp_path / "outside" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"precious\x00bytes\n")
    return target


def test_history_symlink_is_replaced_not_written_through(tmp_path, tokenizer):
    run = tmp_path / "run"
    run.mkdir()
    target = _outside(tmp_path, "history.jsonl")
    os.symlink(target, run / "history.jsonl")
    trainer = _trainer(tmp_path, tokenizer, n_steps=2)
    trainer.train()
    assert target.read_bytes() == b"precious\x00bytes\n"
    assert not (run / "history.jsonl").is_symlink()
    assert [json.loads(x)["step"] for x in (run / "history.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize("name", ["samples.jsonl", "eval.jsonl"])
def test_appended_logs_refuse_a_symlink_before_training(tmp_path, tokenizer, name):
    run = tmp_path / "run"
    run.mkdir()
    target = _outside(tmp_path, name)
    os.symlink(target, run / name)
    trainer = _trainer(tmp_path, tokenizer, n_steps=2, eval_every=1, eval_m=2, eval_prompts=PROMPTS[:2])
    with pytest.raises(ValueError, match=f"{name}.*symbolic link"):
        trainer.train()
    assert trainer.step == 0  # refused before any step was spent
    assert target.read_bytes() == b"precious\x00bytes\n"


# --------------------------------------------------------------------------- B11: prompts


def test_a_bare_string_as_prompts_is_refused(tmp_path, tokenizer):
    with pytest.raises(TypeError, match=r"prompts must be a list of prompts, got a str; wrap it: \[prompt\]"):
        _trainer(tmp_path, tokenizer, prompts="say yes")
    with pytest.raises(TypeError, match=r"eval_prompts must be a list of prompts, got a str"):
        _trainer(tmp_path, tokenizer, eval_prompts="say yes")
    trainer = _trainer(tmp_path, tokenizer)
    with pytest.raises(TypeError, match=r"prompts must be a list of prompts, got a str"):
        trainer.evaluate("say yes")


def test_empty_and_malformed_prompt_lists_are_refused(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="prompts is empty"):
        _trainer(tmp_path, tokenizer, prompts=[])
    with pytest.raises(TypeError, match="prompts must be a list of prompts, got a dict"):
        _trainer(tmp_path, tokenizer, prompts={"prompt": "hi"})
    with pytest.raises(TypeError, match="prompts must be a list of prompts, got a bytes"):
        _trainer(tmp_path, tokenizer, prompts=b"hi")
    for bad, kind in ((None, "NoneType"), (3.5, "float"), (b"hi", "bytes")):
        with pytest.raises(TypeError, match=f"prompt 1 must be a string.*got {kind}"):
            _trainer(tmp_path, tokenizer, prompts=["ok", bad])
    # one conversation passed where a list of prompts belongs
    with pytest.raises(ValueError, match=r"prompt 0 .*looks like a chat message.*\[messages\]"):
        _trainer(tmp_path, tokenizer, prompts=[{"role": "user", "content": "hi"}])


def test_any_iterable_of_prompts_is_read_in_order(tmp_path, tokenizer):
    trainer = _trainer(tmp_path, tokenizer, prompts=(p for p in PROMPTS[:3]))
    assert [p.original for p in trainer.prompts] == PROMPTS[:3]
