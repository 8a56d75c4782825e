"""GRPOConfig: every trainer option, documented once.

Each field's ``help`` metadata is the single source of its documentation: the
CLI turns the fields into ``--flags`` with that text, and ``GRPOConfig.describe()``
prints it. Importing this module needs only the standard library.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Optional

__all__ = ["GRPOConfig", "LOSS_TYPES", "SCHEDULERS", "REPORTERS"]

LOSS_TYPES = ("grpo", "dr_grpo", "token_mean")
SCHEDULERS = ("constant", "linear", "cosine")
REPORTERS = ("jsonl", "tensorboard", "wandb")
_DTYPES = ("auto", "float32", "bfloat16", "float16")


def _opt(default, help: str, **kw):
    """A dataclass field with its help text (and optional CLI hints)."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class GRPOConfig:
    """Options of :class:`~multireward_grpo.train.GRPOTrainer`.

    Defaults follow the 0.1 release where it had the option; ``device`` and
    ``dtype`` default to ``"auto"``.
    """

    # ---- model and estimator
    model: str = _opt("Qwen/Qwen2.5-1.5B-Instruct",
                      "Hugging Face model id or local folder of a causal LM (chat template used when it has one)")
    mode: str = _opt("na", "advantage estimator: na (normalize then aggregate), an (GRPO), single, gdpo, or any registered one")
    weights: tuple = _opt((1.0, 1.0, 0.5), "objective weights w, one per reward channel (channel 0 is the gate)")
    conditioning: tuple = _opt((), "gates applied to the rewards before the estimator, as GATE:TARGET[:METHOD[:GAMMA]] "
                                   "strings or (gate, target, method) tuples, e.g. ('0:1',)")
    scale_by_std: bool = _opt(True, "divide by the group std (False: Dr. GRPO centring only; Liu et al. 2025)")
    nan_policy: str = _opt("raise", "a NaN reward: raise (stop with the prompt and completion named), omit (leave it "
                                    "out of the group statistics) or propagate (the group gets no update)")
    # ---- sampling
    n_steps: int = _opt(200, "optimizer steps (each on batch_prompts x m fresh rollouts)")
    batch_prompts: int = _opt(4, "prompts per step; prompts are drawn without replacement within an epoch")
    m: int = _opt(8, "rollouts per prompt (the GRPO group size)")
    max_new_tokens: int = _opt(96, "longest completion; longer ones are cut (and count as truncated)")
    temperature: float = _opt(0.8, "sampling temperature of the rollouts")
    top_p: float = _opt(1.0, "nucleus sampling threshold of the rollouts (1 disables it)")
    generation_batch_size: int = _opt(32, "sequences per generate() call")
    system_prompt: Optional[str] = _opt(None, "system message prepended to prompts that have none")
    # ---- objective
    lr: float = _opt(5e-6, "learning rate (AdamW)")
    kl_coef: float = _opt(0.05, "weight of the per-token k3 KL to the reference (Schulman 2020); 0 skips the reference pass")
    ppo_clip: float = _opt(0.2, "PPO clip epsilon on the token ratio pi/pi_old (Schulman et al. 2017)")
    num_iterations: int = _opt(1, "policy updates per batch of rollouts (GRPO's mu); > 1 makes the clip bite")
    loss_type: str = _opt("grpo", "token aggregation: grpo (mean per sequence, then over sequences; Shao et al. 2024), "
                                  "dr_grpo (sum / (sequences x max_new_tokens); Liu et al. 2025), token_mean (DAPO)")
    micro_batch_size: int = _opt(4, "sequences per forward/backward pass; gradients accumulate over the step "
                                    "(larger is faster on a GPU, smaller keeps less activation memory)")
    max_grad_norm: float = _opt(1.0, "gradient clipping norm (0 disables clipping)")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    warmup_steps: int = _opt(0, "linear learning-rate warm-up steps")
    lr_scheduler: str = _opt("constant", "learning-rate schedule after warm-up: constant, linear or cosine (to 0)")
    gradient_checkpointing: bool = _opt(False, "recompute activations in backward to save memory")
    share_prompt_cache: bool = _opt(True, "run each prompt once per group and let its m rollouts share the prompt's "
                                          "KV cache, in generation and in the log-prob passes (same values and "
                                          "gradients; False runs every sequence in full, for models whose cache "
                                          "cannot be indexed by row)")
    # ---- model set-up
    seed: int = _opt(0, "seed of prompt order, sampling and LoRA init; a run is reproducible on CPU")
    use_lora: bool = _opt(True, "train a LoRA adapter (the reference is the base model with the adapter disabled)")
    lora_r: int = _opt(16, "LoRA rank")
    lora_alpha: int = _opt(32, "LoRA alpha (scale alpha / r)")
    lora_dropout: float = _opt(0.05, "LoRA dropout")
    lora_target_modules: tuple = _opt(("q_proj", "k_proj", "v_proj", "o_proj"), "module names LoRA adapts")
    device: str = _opt("auto", "auto (cuda when available, else cpu), cpu, cuda, cuda:1, mps")
    dtype: str = _opt("auto", "model dtype: auto (bfloat16 on GPUs that support it, else float32), float32, bfloat16, float16")
    # ---- bookkeeping
    out_dir: str = _opt("grpo_out", "where the history, samples, checkpoints and final adapter go")
    checkpoint_every: int = _opt(50, "save a resumable checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = _opt(2, "checkpoints kept on disk (older ones are deleted)")
    resume_from: Optional[str] = _opt(None, "a checkpoint folder, or 'latest' for the newest one in out_dir")
    eval_every: int = _opt(0, "evaluate on the eval prompts every N steps (0: never)")
    eval_m: int = _opt(4, "completions per eval prompt")
    sample_every: int = _opt(10, "write sample completions to samples.jsonl every N steps (0: never)")
    report_to: tuple = _opt(("jsonl",), "loggers: jsonl (always on), tensorboard, wandb (when installed)")
    verbose: bool = _opt(True, "progress bar and a log line per step")

    def __post_init__(self):
        self._coerce()
        self._validate()

    # ------------------------------------------------------------------ validation

    def _coerce(self) -> None:
        for name in ("weights", "lora_target_modules", "report_to", "conditioning"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()] if name != "conditioning" else [value]
            setattr(self, name, tuple(value))
        self.weights = tuple(float(w) for w in self.weights)
        if "jsonl" not in self.report_to:
            self.report_to = ("jsonl",) + self.report_to

    def _validate(self) -> None:
        _positive_ints(self, "n_steps", "batch_prompts", "m", "max_new_tokens", "generation_batch_size",
                       "num_iterations", "micro_batch_size", "lora_r", "eval_m")
        _nonnegative_ints(self, "warmup_steps", "checkpoint_every", "keep_checkpoints", "eval_every", "sample_every", "seed")
        if self.keep_checkpoints == 0:
            raise ValueError("keep_checkpoints=0: give the number of checkpoints to keep, a count >= 1 "
                             "(0 does not mean 'keep all'; set a large count for that)")
        if self.m < 2:
            raise ValueError(f"m={self.m}: a group needs at least 2 rollouts for a relative advantage; set m >= 2")
        if not self.weights or any(not math.isfinite(w) or w < 0 for w in self.weights) or not any(self.weights):
            raise ValueError(f"weights={self.weights}: give one finite weight >= 0 per reward channel, not all 0")
        _choice(self, "loss_type", LOSS_TYPES)
        _choice(self, "lr_scheduler", SCHEDULERS)
        _choice(self, "dtype", _DTYPES)
        _choice(self, "nan_policy", ("raise", "omit", "propagate"))
        for name in self.report_to:
            if name not in REPORTERS:
                raise ValueError(f"report_to has {name!r}; choose from {', '.join(REPORTERS)}")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 (use a small value such as 1e-3 for near-greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr={self.lr} must be a positive number")
        if not self.kl_coef >= 0:
            raise ValueError(f"kl_coef={self.kl_coef} must be >= 0 (0 turns the KL term and the reference pass off)")
        if not 0 < self.ppo_clip < 1:
            raise ValueError(f"ppo_clip={self.ppo_clip} must be in (0, 1); 0.2 is the usual value")
        if self.max_grad_norm < 0 or self.weight_decay < 0 or not 0 <= self.lora_dropout < 1:
            raise ValueError("max_grad_norm and weight_decay must be >= 0 and lora_dropout in [0, 1)")
        if self.device != "auto" and not self.device.split(":")[0] in ("cpu", "cuda", "mps"):
            raise ValueError(f"device={self.device!r}; use auto, cpu, cuda, cuda:N or mps")
        if self.use_lora and not self.lora_target_modules:
            raise ValueError("use_lora=True needs lora_target_modules (e.g. q_proj,k_proj,v_proj,o_proj)")
        self.parsed_conditioning()  # raises on a malformed rule

    def parsed_conditioning(self) -> tuple:
        """``conditioning`` as :class:`~multireward_grpo.advantage.Conditioning` rules."""
        from multireward_grpo.cli.common import conditioning_rule
        from multireward_grpo.advantage import parse_conditioning

        rules = [conditioning_rule(c) if isinstance(c, str) else c for c in self.conditioning]
        parsed = parse_conditioning(rules)
        for rule in parsed:
            rule.check_channels(len(self.weights))
        return parsed

    # ------------------------------------------------------------------ I/O

    def to_dict(self) -> dict:
        """Plain dict (JSON/TOML-ready)."""
        out = asdict(self)
        out["conditioning"] = [c if isinstance(c, str) else list(c) if isinstance(c, tuple) else asdict(c)
                               for c in self.conditioning]
        return out

    def replace(self, **changes) -> "GRPOConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict) -> "GRPOConfig":
        """Build from a dict; unknown keys are an error that lists the valid ones."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ValueError(f"unknown GRPOConfig option(s) {unknown}; valid options: {', '.join(sorted(valid))}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "GRPOConfig":
        """Read a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file (a ``[grpo]`` table is accepted in TOML)."""
        values = _read_config_file(Path(path))
        values.update(overrides)
        return cls.from_dict(values)

    @classmethod
    def describe(cls) -> str:
        """Every option with its default and meaning, one per line."""
        lines = []
        for f in fields(cls):
            default = f.default if f.default is not MISSING else f.default_factory()
            lines.append(f"{f.name} = {default!r}\n    {f.metadata['help']}")
        return "\n".join(lines)


def _positive_ints(cfg, *names):
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")


def _nonnegative_ints(cfg, *names):
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}={value!r} must be an integer >= 0")


def _choice(cfg, name, choices):
    if getattr(cfg, name) not in choices:
        raise ValueError(f"{name}={getattr(cfg, name)!r}; choose one of {', '.join(choices)}")


def _read_config_file(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib
            except ImportError:
                raise ImportError("reading TOML on Python 3.10 needs tomli: pip install tomli") from None

        data = tomllib.loads(path.read_text())
        data = data.get("grpo", data)
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ImportError("reading YAML configs needs PyYAML: pip install pyyaml (or use a .toml file)") from None
        data = yaml.safe_load(path.read_text()) or {}
    elif suffix == ".json":
        data = json.loads(path.read_text())
    else:
        raise ValueError(f"config file {path} must end in .toml, .yaml, .yml or .json")
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a table of options")
    return data
