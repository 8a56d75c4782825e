"""What the trainer tests share: prompts, a learnable toy reward, a tiny config, a Ctrl-C injector."""

from __future__ import annotations

from multireward_grpo.train import GRPOConfig

PROMPTS = ["say yes", "one two", "the cat", "hello", "please help", "thank you", "a dog", "good answer"]


def e_reward(completion, prompt):
    """Channel 0: share of 'e' among letters; channel 1: 1 when short. Learnable by token choice."""
    letters = [c for c in completion if c.isalpha()]
    share = sum(c == "e" for c in letters) / len(letters) if letters else 0.0
    return (share, 1.0 if len(completion) < 12 else 0.0)


def tiny_config(out_dir, **kw) -> GRPOConfig:
    """A two-step run of the tiny model in ``out_dir``; keywords override any field."""
    base = dict(model="tiny", weights=(1.0, 0.0), n_steps=2, batch_prompts=2, m=4, max_new_tokens=6,
                temperature=1.0, lr=1e-2, kl_coef=0.0, seed=0, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                device="cpu", out_dir=str(out_dir), checkpoint_every=0, sample_every=1, verbose=False,
                micro_batch_size=3)
    base.update(kw)
    return GRPOConfig(**base)


class InterruptAt:
    """A reward that raises KeyboardInterrupt (Ctrl-C while scoring) at its ``call``-th call."""

    def __init__(self, call):
        self.call, self.calls = call, 0

    def __call__(self, completion, prompt):
        self.calls += 1
        if self.calls == self.call:
            raise KeyboardInterrupt
        return e_reward(completion, prompt)
