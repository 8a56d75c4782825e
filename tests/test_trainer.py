"""GRPOTrainer on a tiny random Llama: learning, KL/ratio, padding, checkpoints, failures."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from multireward_grpo import GRPOConfig, GRPOTrainer  # noqa: E402
from multireward_grpo.train.rollout import (  # noqa: E402
    normalize_prompt,
    render_prompts,
    sample_completions,
    token_logprobs,
)
from tiny_lm import make_model, make_tokenizer  # noqa: E402
from trainer_helpers import InterruptAt, PROMPTS, e_reward, tiny_config  # noqa: E402



@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def _config(tmp_path, **kw):
    return tiny_config(tmp_path / "run", **kw)


def _trainer(tmp_path, tokenizer, reward=e_reward, prompts=PROMPTS, **kw):
    return GRPOTrainer(_config(tmp_path, **kw), reward, prompts, model=make_model(tokenizer), tokenizer=tokenizer)


def _lora_state(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_" in k}


def _base_state(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_" not in k}


# --------------------------------------------------------------------------- learning


@pytest.mark.parametrize("mode", ["na", "an"])
def test_training_raises_a_learnable_reward(tmp_path, tokenizer, mode):
    # 45 steps: with 30 some seeds had not yet pulled away (seeds 0-3 of both modes rise by >= 0.3 in 45)
    trainer = _trainer(tmp_path, tokenizer, mode=mode, weights=(1.0, 0.2), n_steps=45, batch_prompts=4, m=8,
                       lr=2e-2, lora_r=8, lora_alpha=16, sample_every=0)
    base_before = _base_state(trainer)
    lora_before = _lora_state(trainer)
    history = trainer.train()
    assert len(history) == 45
    first = np.mean([h["mean_channel_0"] for h in history[:6]])
    last = np.mean([h["mean_channel_0"] for h in history[-6:]])
    assert last > first + 0.15, (first, last)  # seen here: ~0.05 -> ~0.38 (na), ~0.07 -> ~0.50 (an)
    assert any(not torch.equal(v, lora_before[k]) for k, v in _lora_state(trainer).items())
    assert all(torch.equal(v, base_before[k]) for k, v in _base_state(trainer).items())
    assert (tmp_path / "run" / "final" / "adapter_config.json").exists()


def test_history_keys_and_jsonl(tmp_path, tokenizer):
    trainer = _trainer(tmp_path, tokenizer, n_steps=2, kl_coef=0.05)
    history = trainer.train()
    keys = {"step", "loss", "pg_loss", "kl", "grad_norm", "mean_reward", "mean_aggregate_reward",
            "mean_channel_0", "mean_channel_1", "zero_var_frac_0", "clip_frac", "completion_len_mean",
            "gen_tokens_per_s", "train_tokens_per_s", "step_seconds", "adv_std", "truncated_frac"}
    assert keys <= set(history[0])
    lines = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]
    assert (tmp_path / "run" / "samples.jsonl").exists()


# --------------------------------------------------------------------------- objective checks


def test_first_update_has_zero_kl_and_unit_ratio(tmp_path, tokenizer):
    trainer = _trainer(tmp_path, tokenizer, kl_coef=0.1, num_iterations=2, n_steps=1)
    record = trainer.train_step()
    # LoRA starts with B = 0: the policy equals the reference exactly, and the
    # first of the two iterations sees the sampling policy itself. The record
    # holds the mean over both iterations and the last: first = 2 mean - last.
    assert 2 * record["kl"] - record["kl_last"] == pytest.approx(0.0, abs=1e-12)
    assert 2 * record["clip_frac"] - record["clip_frac_last"] == pytest.approx(0.0, abs=1e-12)


def test_reference_is_the_base_model_not_a_copy(tmp_path, tokenizer):
    trainer = _trainer(tmp_path, tokenizer, kl_coef=0.1)
    assert trainer.reference is None
    full = _trainer(tmp_path, tokenizer, kl_coef=0.1, use_lora=False)
    assert full.reference is not None and not any(p.requires_grad for p in full.reference.parameters())
    none = _trainer(tmp_path, tokenizer, kl_coef=0.0, use_lora=False)
    assert none.reference is None


def test_full_finetune_updates_base_weights(tmp_path, tokenizer):
    trainer = _trainer(tmp_path, tokenizer, use_lora=False, kl_coef=0.05, n_steps=2, lr=1e-3)
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.named_parameters())


def test_logprobs_do_not_depend_on_batch_padding(tokenizer):
    model = make_model(tokenizer)
    items = [normalize_prompt(p, i) for i, p in enumerate(["hi", "one two three four five six seven eight nine"])]
    texts = render_prompts(tokenizer, items)
    together = sample_completions(model, tokenizer, texts, m=2, max_new_tokens=5, temperature=1.0, generator_seed=0)
    short_rows = together.rows(slice(0, 2))
    lp_batched = token_logprobs(model, together, micro_batch_size=4)[:2]
    # the same rows alone: strip the extra left padding the long prompt forced on them
    keep = short_rows.prompt_mask.sum(1).max()
    alone = short_rows.rows(slice(0, 2))
    alone.prompt_ids, alone.prompt_mask = alone.prompt_ids[:, -keep:], alone.prompt_mask[:, -keep:]
    lp_alone = token_logprobs(model, alone, micro_batch_size=4)
    mask = short_rows.completion_mask.bool()
    assert together.prompt_mask[0].sum() < together.prompt_mask.shape[1]  # it really was padded
    torch.testing.assert_close(lp_batched[mask], lp_alone[mask], atol=1e-5, rtol=1e-5)


def test_completion_mask_stops_at_first_eos(tokenizer):
    from multireward_grpo.train.rollout import completion_mask_from_eos

    eos = tokenizer.eos_token_id
    ids = torch.tensor([[5, 6, eos, 7, eos], [5, 6, 7, 8, 9], [eos, 1, 1, 1, 1]])
    mask, truncated = completion_mask_from_eos(ids, [eos])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert truncated.tolist() == [False, True, False]


# --------------------------------------------------------------------------- checkpoints


def _assert_same_run(resumed, straight):
    for k, v in _lora_state(straight).items():
        torch.testing.assert_close(_lora_state(resumed)[k], v, atol=0, rtol=0)
    assert [h["mean_reward"] for h in resumed.history] == [h["mean_reward"] for h in straight.history]


def test_ctrl_c_before_the_update_saves_the_last_step_and_resumes_exactly(tmp_path, tokenizer, capsys):
    straight = _trainer(tmp_path / "a", tokenizer, n_steps=4)
    straight.train()
    per_step = 2 * 4  # batch_prompts x m reward calls
    cut = _trainer(tmp_path / "b", tokenizer, reward=InterruptAt(2 * per_step + 3), n_steps=4)  # inside step 3
    with pytest.raises(KeyboardInterrupt):
        cut.train()
    assert cut.step == 2 and len(cut.history) == 2
    run = tmp_path / "b" / "run"
    assert (run / "checkpoint-2" / "COMPLETE").exists()  # checkpoint_every=0: written by the interrupt
    assert len((run / "history.jsonl").read_text().splitlines()) == 2
    assert "interrupted after step 2" in capsys.readouterr().err
    resumed = _trainer(tmp_path / "b", tokenizer, n_steps=4, resume_from="latest")
    resumed.train()
    _assert_same_run(resumed, straight)
    assert [json.loads(x)["step"] for x in (run / "history.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def _ctrl_c_during_update(trainer, at_step, presses):
    """Press Ctrl-C ``presses`` times just as step ``at_step``'s optimizer update starts."""

    def pressed(optimizer, args, kwargs):
        if trainer.step == at_step:
            for _ in range(presses):
                signal.raise_signal(signal.SIGINT)

    trainer.optimizer.register_step_pre_hook(pressed)


def test_ctrl_c_during_the_update_finishes_the_step_first(tmp_path, tokenizer, capsys):
    straight = _trainer(tmp_path / "a", tokenizer, n_steps=4)
    straight.train()
    cut = _trainer(tmp_path / "b", tokenizer, n_steps=4)
    _ctrl_c_during_update(cut, at_step=3, presses=1)
    with pytest.raises(KeyboardInterrupt):
        cut.train()
    assert cut.step == 3 and len(cut.history) == 3
    assert (tmp_path / "b" / "run" / "checkpoint-3" / "COMPLETE").exists()
    err = capsys.readouterr().err
    assert "finishing this step's update" in err and "interrupted after step 3" in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler was put back
    resumed = _trainer(tmp_path / "b", tokenizer, n_steps=4, resume_from="latest")
    resumed.train()
    _assert_same_run(resumed, straight)


def test_second_ctrl_c_stops_at_once_without_a_checkpoint(tmp_path, tokenizer, capsys):
    cut = _trainer(tmp_path, tokenizer, n_steps=4, checkpoint_every=1)
    _ctrl_c_during_update(cut, at_step=3, presses=2)
    with pytest.raises(KeyboardInterrupt):
        cut.train()
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert "stopped in the middle of step 3's update" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_train_step_puts_the_sigint_handler_back_when_it_fails_after_the_update(tmp_path, tokenizer, monkeypatch):
    trainer = _trainer(tmp_path, tokenizer)

    def broken(*args, **kwargs):
        raise RuntimeError("logging failed")

    monkeypatch.setattr(trainer, "_record", broken)  # runs after the optimizer step, while Ctrl-C is held
    with pytest.raises(RuntimeError, match="logging failed"):
        trainer.train_step()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupt_and_resume_equals_uninterrupted(tmp_path, tokenizer):
    straight = _trainer(tmp_path / "a", tokenizer, n_steps=4, lora_dropout=0.1)
    straight.train()
    first = _trainer(tmp_path / "b", tokenizer, n_steps=2, checkpoint_every=1, lora_dropout=0.1)
    first.train()
    resumed = _trainer(tmp_path / "b", tokenizer, n_steps=4, resume_from="latest", lora_dropout=0.1)
    assert resumed.step == 2
    resumed.train()
    for k, v in _lora_state(straight).items():
        torch.testing.assert_close(_lora_state(resumed)[k], v, atol=0, rtol=0)
    assert [h["mean_reward"] for h in resumed.history] == [h["mean_reward"] for h in straight.history]
    lines = (tmp_path / "b" / "run" / "history.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4]


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, tokenizer, monkeypatch):
    from multireward_grpo.train import checkpoint as ckpt

    trainer = _trainer(tmp_path, tokenizer, n_steps=3, checkpoint_every=1)
    trainer.train_step()
    ckpt.save_checkpoint(trainer)
    real_save = torch.save

    def dying_save(obj, path, *a, **k):
        if str(path).endswith("rng.pt"):
            raise KeyboardInterrupt("killed mid-write")
        return real_save(obj, path, *a, **k)

    trainer.train_step()
    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(trainer)
    monkeypatch.setattr(torch, "save", real_save)
    out = tmp_path / "run"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("checkpoint", ".checkpoint"))) == ["checkpoint-1"]
    assert ckpt.latest_checkpoint(out).name == "checkpoint-1"
    resumed = _trainer(tmp_path, tokenizer, n_steps=3, resume_from="latest")
    assert resumed.step == 1


def test_resume_from_an_incomplete_folder_is_refused(tmp_path, tokenizer):
    (tmp_path / "run" / "checkpoint-7").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        _trainer(tmp_path, tokenizer, resume_from=str(tmp_path / "run" / "checkpoint-7"))
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        _trainer(tmp_path, tokenizer, resume_from="latest")


# --------------------------------------------------------------------------- rewards and inputs


def test_reward_function_failure_names_the_completion(tmp_path, tokenizer):
    from multireward_grpo.rewards import RewardFunctionError

    def broken(completion, prompt):
        raise KeyError("gold")

    trainer = _trainer(tmp_path, tokenizer, reward=broken)
    with pytest.raises(RewardFunctionError) as err:
        trainer.train_step()
    assert isinstance(err.value.__cause__, KeyError)
    assert "completion" in str(err.value)


def test_nan_rewards_follow_nan_policy(tmp_path, tokenizer):
    def sometimes_nan(completion, prompt):
        return (float("nan") if prompt == "say yes" else 0.5 + 0.1 * len(completion) % 3, 1.0)

    prompts = ["say yes", "hello"]
    trainer = _trainer(tmp_path, tokenizer, reward=sometimes_nan, prompts=prompts)
    with pytest.raises(ValueError, match="NaN"):
        trainer.train_step()
    trainer = _trainer(tmp_path, tokenizer, reward=sometimes_nan, prompts=prompts, nan_policy="propagate")
    record = trainer.train_step()
    assert np.isfinite(record["loss"])


def test_prompt_items_reach_the_reward_function(tmp_path, tokenizer):
    seen = []

    def reward(completion, prompt):
        seen.append(prompt)
        return (0.0, 1.0)

    prompts = [{"messages": [{"role": "user", "content": "hello"}], "gold": "42"}, [{"role": "user", "content": "a dog"}]]
    _trainer(tmp_path, tokenizer, reward=reward, prompts=prompts).train_step()
    assert {"messages": [{"role": "user", "content": "hello"}], "gold": "42"} in seen


def test_bad_inputs(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="prompts is empty"):
        _trainer(tmp_path, tokenizer, prompts=[])
    with pytest.raises(TypeError, match="prompt 1 must be a string"):
        _trainer(tmp_path, tokenizer, prompts=["ok", 3])
    with pytest.raises(ValueError, match="LoRA target modules of this model could be among"):
        _trainer(tmp_path, tokenizer, lora_target_modules=("c_attn",))


def test_evaluate_reports_means_and_standard_errors(tmp_path, tokenizer):
    trainer = GRPOTrainer(_config(tmp_path), e_reward, PROMPTS, eval_prompts=PROMPTS[:5],
                          model=make_model(tokenizer), tokenizer=tokenizer)
    result = trainer.evaluate(m=3)
    assert result.n_prompts == 5 and result.per_prompt.shape == (5, 2)
    np.testing.assert_allclose(result.means, result.per_prompt.mean(0))
    np.testing.assert_allclose(result.stderrs, result.per_prompt.std(0, ddof=1) / np.sqrt(5))


def test_eval_every_writes_eval_records(tmp_path, tokenizer):
    config = _config(tmp_path, n_steps=2, eval_every=1, eval_m=2)
    trainer = GRPOTrainer(config, e_reward, PROMPTS, eval_prompts=PROMPTS[:3], model=make_model(tokenizer),
                          tokenizer=tokenizer)
    trainer.train()
    records = [json.loads(x) for x in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert records[0]["eval"]["n_prompts"] == 3 and len(records[0]["eval"]["means"]) == 2


def test_config_validation_says_what_to_set():
    with pytest.raises(ValueError, match="m=1: a group needs at least 2 rollouts"):
        GRPOConfig(m=1)
    with pytest.raises(ValueError, match="loss_type='bogus'; choose one of grpo, dr_grpo, token_mean"):
        GRPOConfig(loss_type="bogus")
    with pytest.raises(ValueError, match="target=5"):
        GRPOConfig(conditioning=("0:5",))
    with pytest.raises(ValueError, match="unknown GRPOConfig option"):
        GRPOConfig.from_dict({"learning_rate": 1e-5})
    cfg = GRPOConfig(weights="1,2", report_to="tensorboard", conditioning=["0:1:subgroup"])
    assert cfg.weights == (1.0, 2.0) and cfg.report_to == ("jsonl", "tensorboard")
    assert cfg.parsed_conditioning()[0].method == "subgroup"
    assert "kl_coef" in GRPOConfig.describe()


def test_gradient_checkpointing_still_trains_the_adapter(tmp_path, tokenizer):
    trainer = _trainer(tmp_path, tokenizer, gradient_checkpointing=True, n_steps=1, lr=1e-2)
    before = _lora_state(trainer)
    trainer.train()
    assert any(not torch.equal(v, before[k]) for k, v in _lora_state(trainer).items())


def test_logprobs_use_the_sampling_temperature(tokenizer):
    model = make_model(tokenizer)
    texts = render_prompts(tokenizer, [normalize_prompt("hello", 0)])
    rollouts = sample_completions(model, tokenizer, texts, m=2, max_new_tokens=4, temperature=0.7, generator_seed=1)
    hot = token_logprobs(model, rollouts, micro_batch_size=2, temperature=0.7)
    cold = token_logprobs(model, rollouts, micro_batch_size=2, temperature=1.0)
    assert not torch.allclose(hot, cold)
    # the tempered log-probs are a normalized distribution at every position
    from multireward_grpo.train.rollout import Rollouts

    one = Rollouts(rollouts.prompt_ids[:1], rollouts.prompt_mask[:1], rollouts.completion_ids[:1, :1],
                   torch.ones(1, 1, dtype=torch.long), [""], rollouts.truncated[:1])
    total = 0.0
    for token in range(len(tokenizer)):
        one.completion_ids = torch.tensor([[token]])
        with torch.no_grad():
            total += float(token_logprobs(model, one, micro_batch_size=1, temperature=0.7).exp())
    assert total == pytest.approx(1.0, abs=1e-4)


def test_prompt_sampler_is_without_replacement_per_epoch():
    from multireward_grpo.train.trainer import PromptSampler

    sampler = PromptSampler(7, seed=3)
    drawn = sampler.next(21)
    for epoch in range(3):
        assert sorted(drawn[7 * epoch: 7 * epoch + 7]) == list(range(7))
    assert drawn[:7] != drawn[7:14]  # a fresh order each epoch
    again = PromptSampler(7, seed=3)
    assert again.next(5) + again.next(16) == drawn  # the state is just the count drawn
