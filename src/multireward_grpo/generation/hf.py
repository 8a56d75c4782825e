"""A real-model rollout backend for ``run_corpus``: any Hugging Face causal LM.

``HFBackend.generate(prompt, gold, m, seed_idx)`` samples ``m`` completions
of one prompt in one batched call and scores them with a reward function,
so Theorem 3 can be checked on real generations. The random stream of a
group depends only on ``(seed, prompt, seed_idx)`` (a stable hash, the same
in every process), so a corpus run is reproducible and resumable on CPU.

Sampling settings are the backend's own (``temperature``, ``top_p``,
``max_new_tokens``: the ones :meth:`HFBackend.describe` records in a corpus
header) and nothing else: the model's ``generation_config`` (``top_k``,
``min_p``, repetition penalties, ``min_new_tokens``, suppressed tokens, ...)
is deliberately ignored, apart from its EOS ids, so a corpus is reproducible
from its header and its rewards are those of plain ``softmax(logits / T)``
sampling with top-p, the distribution the theory harness and the trainer
assume.
``QwenBackend`` keeps the 0.1 name and defaults.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HFBackend", "QwenBackend"]


class HFBackend:
    """Rollouts from a causal LM, scored on ``R`` reward channels.

    Parameters
    ----------
    model_name : str
        Hub id or local folder (ignored when ``model`` is given).
    device, dtype : str
        ``"auto"`` picks cuda/bfloat16 when available, else cpu/float32.
    max_new_tokens, temperature, top_p : sampling settings.
        The only ones: the model's own ``generation_config`` does not shape
        the samples (see the module docstring).
    reward_fn : callable or RewardFunction, optional
        ``(completion, prompt_item) -> R scores``; defaults to
        :class:`~multireward_grpo.rewards.MathRewardFunction` (correctness,
        length, format), with the prompt item ``{"prompt": prompt, "gold": gold}``.
    reward_config : RewardConfig, optional
        Options of the default math reward.
    system_prompt : str, optional
    seed : int
        Backend seed.
    share_prompt_cache : bool
        Run the prompt once per group and share its KV cache across the ``m``
        samples (False for models whose cache cannot be indexed by row).
    model, tokenizer : optional
        Already-loaded objects.
    score_projection : ScoreProjection, optional
        Also compute each rollout's real score projection
        ``g_j = <grad log pi(y_j | x), v>`` (two extra forward passes per
        group, see :mod:`multireward_grpo.generation.scores`); ``generate``
        then returns them under ``"scores"`` and ``run_corpus`` stores them.
    """

    def __init__(self, model_name: str = "Qwen/Qwen2.5-1.5B-Instruct", *, device: str = "auto", dtype: str = "auto",
                 max_new_tokens: int = 256, temperature: float = 0.7, top_p: float = 0.95, reward_fn=None,
                 reward_config=None, system_prompt: str | None = None, seed: int = 0, share_prompt_cache: bool = True,
                 model=None, tokenizer=None, score_projection=None):
        from multireward_grpo.models import load_model_and_tokenizer, require_llm, resolve_device_and_dtype
        from multireward_grpo.rewards import MathRewardFunction, RewardConfig, as_reward_function
        from multireward_grpo.train.config import GRPOConfig

        require_llm()
        if reward_fn is None:
            reward_fn = MathRewardFunction(reward_config or RewardConfig())
        self.reward = as_reward_function(reward_fn)
        probe = GRPOConfig(model=model_name, device=device, dtype=dtype, max_new_tokens=max_new_tokens,
                           temperature=temperature, top_p=top_p, system_prompt=system_prompt, seed=seed,
                           share_prompt_cache=share_prompt_cache)
        self.config = probe
        self.device, self.dtype = resolve_device_and_dtype(probe.device, probe.dtype)
        self.model, self.tokenizer = load_model_and_tokenizer(probe.model, model, tokenizer, device=self.device,
                                                              dtype=self.dtype)
        self.model.eval()
        self.projector = None
        if score_projection is not None:
            from multireward_grpo.generation.scores import ScoreProjector

            self.projector = ScoreProjector(self.model, score_projection, share_prompt=share_prompt_cache)

    @property
    def channel_names(self) -> tuple:
        """Reward channel names (known after the first group when the reward does not declare them)."""
        return self.reward.channel_names or ("correctness", "length", "format")

    def describe(self) -> dict:
        """Settings recorded in a corpus header (a resumed run must match them).

        They include the reward function and its settings (``"reward"``) and
        the score-projection settings (``"score_projection"``, None without),
        so resuming a corpus with a different scoring is refused.
        """
        cfg = self.config
        # With a model object passed in, its own name is the truth, not the model_name default.
        name = getattr(self.model, "name_or_path", None) or cfg.model
        projection = None if self.projector is None else self.projector.settings.describe()
        return {"backend": "hf", "model": str(name), "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
                "top_p": cfg.top_p, "seed": cfg.seed, "system_prompt": cfg.system_prompt,
                "reward": _describe_reward(self.reward), "score_projection": projection}

    def generate(self, prompt: Any, gold: Any = None, m: int = 8, seed_idx: int = 0) -> dict:
        """One group: ``{"rewards": (m, R) array, "completions": m strings}``, plus ``"scores"`` ((m,) array)
        with ``score_projection``."""
        from multireward_grpo._seeding import stable_hash64
        from multireward_grpo.train.rollout import normalize_prompt, render_prompts, sample_completions

        if m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        item = prompt if isinstance(prompt, dict) else {"prompt": prompt, "gold": gold}
        if isinstance(item, dict) and gold is not None and "gold" not in item:
            item = {**item, "gold": gold}
        normalized = normalize_prompt(item, 0, self.config.system_prompt)
        seed = stable_hash64(self.config.seed, "hf-rollouts", str(prompt), int(seed_idx)) % (2**63)
        rollouts = sample_completions(
            self.model, self.tokenizer, render_prompts(self.tokenizer, [normalized]), m=m,
            max_new_tokens=self.config.max_new_tokens, temperature=self.config.temperature, top_p=self.config.top_p,
            batch_size=max(m, 1), generator_seed=seed, share_prompt=self.config.share_prompt_cache,
        )
        rewards = self.reward.score_batch(rollouts.texts, [item] * m)
        out = {"rewards": rewards, "completions": list(rollouts.texts)}
        if self.projector is not None:
            out["scores"] = self.projector.project(rollouts, temperature=self.config.temperature)
        return out


def _describe_reward(reward) -> dict:
    """JSON description of a reward function: its qualified name, channels and settings.

    A function's own ``describe()`` is used when it has one; a dataclass
    (e.g. ``MathRewardFunction``) contributes its fields, a
    ``functools.partial`` its bound arguments. Values that are not JSON (a
    tokenizer) are described by their name.
    """
    import dataclasses
    import functools

    fn = getattr(reward, "fn", reward)
    info = {"function": _qualified_name(fn), "channels": list(getattr(reward, "channel_names", None) or ())}
    describe = getattr(fn, "describe", None)
    if callable(describe):
        info["settings"] = _json_value(describe())
    elif dataclasses.is_dataclass(fn) and not isinstance(fn, type):
        info["settings"] = {f.name: _json_value(getattr(fn, f.name)) for f in dataclasses.fields(fn)}
    elif isinstance(fn, functools.partial):
        info["settings"] = {"args": _json_value(list(fn.args)), "keywords": _json_value(dict(fn.keywords))}
    return info


def _qualified_name(obj) -> str:
    import functools

    if isinstance(obj, functools.partial):
        obj = obj.func
    target = obj if callable(obj) and hasattr(obj, "__qualname__") else type(obj)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(obj).__name__)}"


def _json_value(value):
    import dataclasses

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    name = getattr(value, "name_or_path", None)  # a Hugging Face tokenizer
    return f"{_qualified_name(value)}({name})" if name else _qualified_name(value)


class QwenBackend(HFBackend):
    """The 0.1 name: :class:`HFBackend` with its ``model_name`` first and the same defaults."""

    def __init__(self, model_name: str = "Qwen/Qwen2.5-1.5B-Instruct", device: str = "auto", dtype: str = "auto",
                 max_new_tokens: int = 256, temperature: float = 0.7, top_p: float = 0.95, reward_config=None, **kwargs):
        super().__init__(model_name, device=device, dtype=dtype, max_new_tokens=max_new_tokens,
                         temperature=temperature, top_p=top_p, reward_config=reward_config, **kwargs)
