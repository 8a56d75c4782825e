"""GRPOConfig: every trainer option, documented once.

Each field's ``help`` metadata is the single source of its documentation: the
CLI turns the fields into ``--flags`` with that text, and ``GRPOConfig.describe()``
prints it. Every option is checked when the config is built (types, finite
numbers, bounds, choices, conditioning rules), so a bad setting fails before
any model loads. Importing this module needs only the standard library and
numpy.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional

from multireward_grpo._validate import check_float, did_you_mean

__all__ = ["GRPOConfig", "IMPORTANCE_SAMPLING_LEVELS", "LOSS_TYPES", "LOSS_TYPE_ALIASES", "SCHEDULERS", "REPORTERS",
           "NAN_POLICIES", "parse_conditioning_rule"]

LOSS_TYPES = ("grpo", "dr_grpo", "token_mean", "bnpo", "dapo")
# Other names of the same objective; the config stores the canonical one, so a resume compares like with like.
LOSS_TYPE_ALIASES = {"dapo": "token_mean"}
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
SCHEDULERS = ("constant", "linear", "cosine")
REPORTERS = ("jsonl", "tensorboard", "wandb")
NAN_POLICIES = ("raise", "omit", "propagate")
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
    ppo_clip: float = _opt(0.2, "PPO clip epsilon on the ratio pi/pi_old (Schulman et al. 2017): the ratio is kept "
                                "within [1 - ppo_clip, 1 + epsilon_high]; TRL calls it epsilon")
    epsilon_high: Optional[float] = _opt(None, "upper clip epsilon: the ratio's upper bound is 1 + epsilon_high "
                                               "(None: ppo_clip, symmetric). A larger value than ppo_clip is DAPO's "
                                               "clip-higher (Yu et al. 2025, who use 0.28 with ppo_clip 0.2), which "
                                               "lets unlikely tokens with a positive advantage grow and keeps "
                                               "entropy up; the same name as in TRL")
    importance_sampling_level: str = _opt("token", "token: one ratio pi/pi_old per token (PPO, GRPO); sequence: one "
                                                   "per completion, exp of the mean over its tokens of log pi - log "
                                                   "pi_old, shared by its tokens and clipped as a whole (GSPO, Zheng "
                                                   "et al. 2025, who pair it with loss_type grpo and clip epsilons "
                                                   "near 3e-4 / 4e-4). Both give the same gradient while the ratio "
                                                   "is 1 (num_iterations 1); the same name as in TRL")
    mask_truncated_completions: bool = _opt(False, "leave completions cut at max_new_tokens without an EOS out of the "
                                                   "loss, policy and KL terms alike (DAPO's overlong filtering, Yu et "
                                                   "al. 2025); they still count in their group's advantages. "
                                                   "token_mean and bnpo then divide by the remaining tokens; grpo "
                                                   "and dr_grpo still divide by all completions (a masked one adds "
                                                   "0), as TRL does; a batch of only truncated completions gives a "
                                                   "zero loss. The same name as in TRL")
    num_iterations: int = _opt(1, "policy updates per batch of rollouts (GRPO's mu); > 1 makes the clip bite")
    loss_type: str = _opt("grpo", "token aggregation: grpo (mean per sequence, then over sequences; Shao et al. 2024), "
                                  "dr_grpo (sum / (sequences x max_new_tokens); Liu et al. 2025), token_mean (sum / "
                                  "tokens of the whole batch; DAPO, Yu et al. 2025; dapo is accepted as its alias and "
                                  "stored as token_mean), bnpo (each micro-batch's sum / its own tokens, averaged over "
                                  "micro-batches, so it depends on micro_batch_size). TRL's names: its grpo, dr_grpo "
                                  "= ours when micro_batch_size divides the batch; its dapo = our token_mean (global "
                                  "token count, also across processes); its bnpo (local batch) = our bnpo with TRL's "
                                  "per_device_train_batch_size as micro_batch_size")
    micro_batch_size: int = _opt(4, "sequences per forward/backward pass; gradients accumulate over the step "
                                    "(larger is faster on a GPU, smaller keeps less activation memory; with "
                                    "loss_type bnpo it also sets the objective's normalization)")
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
    # ---- policy during RL
    disable_dropout: bool = _opt(True, "set every dropout rate of the policy to 0 (torch.nn.Dropout modules, LoRA's "
                                       "dropout included, and attention dropout rates), as TRL's GRPOConfig."
                                       "disable_dropout does: the loss pass then computes the same distribution that "
                                       "gave the old log-probs, so the first of num_iterations ratios is exactly 1 "
                                       "and the clip sees only policy change; lora_dropout has no effect while this "
                                       "is on")

    def __post_init__(self):
        self._coerce()
        self._validate()

    # ------------------------------------------------------------------ validation

    def _coerce(self) -> None:
        """Check each option's type; convert equivalent forms ("1e-3", 8.0, a Path) to the field's own type."""
        for f in fields(self):
            coerce = _FIELD_COERCIONS.get(f.name)
            value = getattr(self, f.name)
            setattr(self, f.name, coerce(value) if coerce else _coerce_by_type(f.name, f.type, value))

    def _validate(self) -> None:
        _positive_ints(self, "n_steps", "batch_prompts", "m", "max_new_tokens", "generation_batch_size",
                       "num_iterations", "micro_batch_size", "lora_r", "lora_alpha", "eval_m")
        _nonnegative_ints(self, "warmup_steps", "checkpoint_every", "keep_checkpoints", "eval_every", "sample_every", "seed")
        if self.keep_checkpoints == 0:
            raise ValueError("keep_checkpoints=0: give the number of checkpoints to keep, a count >= 1 "
                             "(0 does not mean 'keep all'; set a large count for that)")
        if self.m < 2:
            raise ValueError(f"m={self.m}: a group needs at least 2 rollouts for a relative advantage; set m >= 2")
        if not any(self.weights):
            raise ValueError(f"weights={self.weights}: give one finite weight >= 0 per reward channel, not all 0")
        for name, allowed in _FLOAT_RANGES.items():
            allowed.check(name, getattr(self, name))
        _choice("mode", self.mode.strip().lower(), _estimator_names(), shown=self.mode,
                note=" (register_estimator adds more)")
        _choice("loss_type", self.loss_type, LOSS_TYPES)
        self.loss_type = LOSS_TYPE_ALIASES.get(self.loss_type, self.loss_type)
        _choice("importance_sampling_level", self.importance_sampling_level, IMPORTANCE_SAMPLING_LEVELS)
        if self.epsilon_high is not None and self.epsilon_high <= 0:
            raise ValueError(f"epsilon_high must be > 0, got {self.epsilon_high!r} (the ratio's upper bound is "
                             "1 + epsilon_high; DAPO uses 0.28; leave it None for a symmetric clip at ppo_clip)")
        _choice("lr_scheduler", self.lr_scheduler, SCHEDULERS)
        _choice("dtype", self.dtype, _DTYPES)
        _choice("nan_policy", self.nan_policy, NAN_POLICIES)
        if self.use_lora and not self.lora_target_modules:
            raise ValueError("use_lora=True needs lora_target_modules (e.g. q_proj,k_proj,v_proj,o_proj)")
        self.parsed_conditioning()  # raises on a malformed rule

    def parsed_conditioning(self) -> tuple:
        """``conditioning`` as :class:`~multireward_grpo.advantage.Conditioning` rules.

        Raises
        ------
        ValueError, TypeError
            A rule that is malformed, uses a negative or out-of-range channel,
            or gates a channel by itself; the message quotes the rule.
        """
        return tuple(parse_conditioning_rule(rule, n_channels=len(self.weights)) for rule in self.conditioning)

    # ------------------------------------------------------------------ I/O

    def to_dict(self) -> dict:
        """Plain dict (JSON/TOML-ready)."""
        out = asdict(self)
        out["conditioning"] = [_rule_as_plain(c) for c in self.conditioning]
        return out

    def replace(self, **changes) -> "GRPOConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, values: Mapping) -> "GRPOConfig":
        """Build from a dict of options (not modified).

        Raises
        ------
        TypeError
            ``values`` is not a mapping.
        ValueError
            An unknown key (each one named, with the closest valid option) or
            an invalid value.
        """
        if not isinstance(values, Mapping):
            raise TypeError(f"GRPOConfig.from_dict needs a dict of options, got {type(values).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(str(key) for key in set(values) - set(valid))
        if unknown:
            hints = ", ".join(f"{key!r}{did_you_mean(key, valid)}" for key in unknown if did_you_mean(key, valid))
            raise ValueError(f"unknown GRPOConfig option(s) {unknown}{': ' + hints if hints else ''}; "
                             f"valid options: {', '.join(sorted(valid))}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides) -> "GRPOConfig":
        """Read a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file (a ``[grpo]`` table is accepted in TOML).

        ``overrides`` replace the file's values. A syntax error names the
        file and the line; an invalid option names the file.
        """
        path = Path(path)
        values = _read_config_file(path)
        values.update(overrides)
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as err:
            raise type(err)(f"config file {path}: {err}") from None

    @classmethod
    def describe(cls) -> str:
        """Every option with its default and meaning, one per line."""
        lines = []
        for f in fields(cls):
            default = f.default if f.default is not MISSING else f.default_factory()
            lines.append(f"{f.name} = {default!r}\n    {f.metadata['help']}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- value checks


@dataclass(frozen=True)
class _Range:
    """The values a float option may take: bounds are inclusive unless marked open."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    hint: str = ""

    def check(self, name: str, value: float) -> None:
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if not (below or above):
            return
        if below:
            bound = f"{'>' if self.low_open else '>='} {self.low:g}"
        else:
            bound = f"{'<' if self.high_open else '<='} {self.high:g}"
        hint = f" ({self.hint})" if self.hint else ""
        raise ValueError(f"{name} must be {bound}, got {value!r}{hint}")


# Every float option is also checked to be finite (NaN or inf would poison the weights and the checkpoint).
_FLOAT_RANGES = {
    "temperature": _Range(low=0.0, low_open=True, hint="use a small value such as 1e-3 for near-greedy sampling"),
    "top_p": _Range(low=0.0, low_open=True, high=1.0, hint="1 disables nucleus sampling"),
    "lr": _Range(low=0.0, low_open=True),
    "kl_coef": _Range(low=0.0, hint="0 turns the KL term and the reference pass off"),
    "ppo_clip": _Range(low=0.0, low_open=True, high=1.0, high_open=True, hint="0.2 is the usual value"),
    "max_grad_norm": _Range(low=0.0, hint="0 disables clipping"),
    "weight_decay": _Range(low=0.0),
    "lora_dropout": _Range(low=0.0, high=1.0, high_open=True, hint="a probability; 0 disables dropout"),
}


def _positive_ints(cfg, *names):
    for name in names:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)!r} must be a positive integer")


def _nonnegative_ints(cfg, *names):
    for name in names:
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name}={getattr(cfg, name)!r} must be an integer >= 0")


def _choice(name: str, value: str, choices, *, shown: Optional[str] = None, note: str = "") -> None:
    if value not in choices:
        shown = value if shown is None else shown
        raise ValueError(f"{name}={shown!r}{did_you_mean(shown, choices)}; choose one of {', '.join(choices)}{note}")


def _estimator_names() -> tuple:
    from multireward_grpo.advantage import list_estimators  # numpy only: no torch

    return tuple(list_estimators())


# --------------------------------------------------------------------------- type coercion


def _as_int(name: str, value: Any) -> int:
    """An exact integer: ``8``, ``8.0`` and ``"8"`` are 8; ``8.5``, ``"8.5"`` and bools are refused."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise TypeError(f"{name} must be an integer, got the string {value!r}") from None
    if isinstance(value, bool) or type(value).__name__ == "bool_" or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if not isinstance(value, numbers.Integral) and not (math.isfinite(value) and float(value).is_integer()):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def _as_bool(name: str, value: Any) -> bool:
    # Strings such as "no" are truthy and 0/1 hide a mistyped option: accept real booleans only.
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")


def _as_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__} {value!r}")
    return value


def _as_optional(convert):
    return lambda name, value: None if value is None else convert(name, value)


def _optional_str(name: str, value: Any) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{name} must be a string or None, got {type(value).__name__} {value!r}")


_BY_TYPE = {
    "float": check_float, "int": _as_int, "bool": _as_bool, "str": _as_str,
    "Optional[float]": _as_optional(check_float), "Optional[int]": _as_optional(_as_int),
    "Optional[str]": _optional_str,
}


def _coerce_by_type(name: str, annotation: str, value: Any) -> Any:
    convert = _BY_TYPE.get(annotation)
    return convert(name, value) if convert else value


def _path_text(name: str, value: Any, *, optional: bool = False) -> Optional[str]:
    if value is None and optional:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string or a path, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _sequence(name: str, value: Any, example: str) -> list:
    """A list of the entries of a tuple/list/array-like option (mappings, sets and scalars refused)."""
    if isinstance(value, (Mapping, set, frozenset, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a sequence, one entry per item, e.g. {example}; "
                        f"got {type(value).__name__} {value!r}")
    return list(value)


def _as_weights(value: Any) -> tuple:
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",") if part.strip()]
        try:
            value = [float(part) for part in parts]
        except ValueError:
            raise ValueError(f"weights must be comma-separated numbers like 1,1,0.5; got {value!r}") from None
    elif isinstance(value, (Mapping, set, frozenset, bytes)) or not isinstance(value, Iterable):
        raise TypeError("weights must be a sequence of numbers, one per reward channel, e.g. (1.0, 1.0, 0.5); "
                        f"got {type(value).__name__} {value!r}")
    weights = tuple(check_float(f"weights[{i}]", w, minimum=0.0) for i, w in enumerate(value))
    if not weights:
        raise ValueError("weights is empty: give one finite weight >= 0 per reward channel, not all 0")
    return weights


def _as_module_names(value: Any) -> tuple:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    names = _sequence("lora_target_modules", value, "('q_proj', 'v_proj')")
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            error = TypeError if not isinstance(name, str) else ValueError
            raise error(f"lora_target_modules[{i}] must be a non-empty module name such as 'q_proj', got {name!r}")
    return tuple(name.strip() for name in names)


def _as_reporters(value: Any) -> tuple:
    names = [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else \
        _sequence("report_to", value, "('jsonl', 'tensorboard')")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"report_to entries must be logger names ({', '.join(REPORTERS)}), got {name!r}")
        if name not in REPORTERS:
            raise ValueError(f"report_to has {name!r}{did_you_mean(name, REPORTERS)}; "
                             f"choose from {', '.join(REPORTERS)}")
    # jsonl always runs (history.jsonl is what resume and the plots read)
    return tuple(dict.fromkeys(["jsonl", *names]))


_DEVICE_PATTERN = re.compile(r"auto|(cpu|cuda|mps)(:\d+)?")


def _as_device(value: Any) -> str:
    if type(value).__name__ == "device":  # a torch.device: its text form is what torch parses back
        value = str(value)
    if not isinstance(value, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {value!r}")
    if not _DEVICE_PATTERN.fullmatch(value.strip()):
        raise ValueError(f"device={value!r}; use auto, cpu, cuda, cuda:N or mps")
    return value.strip()


def _as_rule_entries(value: Any) -> tuple:
    """``conditioning`` as a tuple of rules (a single rule given alone is wrapped)."""
    from multireward_grpo.advantage import Conditioning

    if value is None:
        return ()
    single = isinstance(value, (str, Mapping, Conditioning)) or (
        isinstance(value, (tuple, list)) and len(value) > 0 and isinstance(value[0], numbers.Number))
    entries = [value] if single else _sequence("conditioning", value, "('0:1', '0:2:subgroup')")
    # copies, so a caller's later edit of its list or dict cannot change a validated config
    return tuple(tuple(e) if isinstance(e, list) else dict(e) if isinstance(e, Mapping) else e for e in entries)


def _rule_as_plain(rule: Any) -> Any:
    """A conditioning entry in JSON/TOML-ready form (text stays text)."""
    if isinstance(rule, str):
        return rule
    if isinstance(rule, tuple):
        return list(rule)
    return dict(rule) if isinstance(rule, Mapping) else asdict(rule)


_FIELD_COERCIONS = {
    "weights": _as_weights,
    "conditioning": _as_rule_entries,
    "lora_target_modules": _as_module_names,
    "report_to": _as_reporters,
    "device": _as_device,
    "model": lambda value: _path_text("model", value),
    "out_dir": lambda value: _path_text("out_dir", value),
    "resume_from": lambda value: _path_text("resume_from", value, optional=True),
}


# --------------------------------------------------------------------------- conditioning rules

_RULE_FORMAT = "use GATE:TARGET[:METHOD[:GAMMA]] with channel indices, e.g. 0:1, 0:2:subgroup or 0:1:zero_fill:0.3"
_METHODS = ("zero_fill", "subgroup")


def parse_conditioning_rule(rule: Any, n_channels: Optional[int] = None):
    """One conditioning rule as a :class:`~multireward_grpo.advantage.Conditioning`, checked.

    The package's one rule parser, :func:`~multireward_grpo.advantage.parse_conditioning`,
    on a single rule: ``"GATE:TARGET[:METHOD[:GAMMA]]"`` (e.g. ``"0:1"``,
    ``"0:2:subgroup"``, ``"0:1:zero_fill:0.3"``), a ``(gate, target[,
    method])`` tuple, a dict of Conditioning fields, or a Conditioning; with
    ``n_channels``, both indices must be below it. Negative indices, a gate
    equal to the target and a bad method or gamma are refused with the rule
    quoted.
    """
    from multireward_grpo.advantage import parse_conditioning

    return parse_conditioning([rule], n_channels=n_channels)[0]


# --------------------------------------------------------------------------- files


def _read_config_file(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    if path.is_dir():
        raise ValueError(f"config file {path} is a directory; give a .toml, .yaml/.yml or .json file")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ValueError(f"config file {path} must end in .toml, .yaml, .yml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"config file {path} is not UTF-8 text") from None
    data = _parse_config_text(path, suffix, text)
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a table of options, not {type(data).__name__}")
    return data


def _parse_config_text(path: Path, suffix: str, text: str):
    """The parsed file; a syntax error becomes one ValueError line naming the file and the line."""
    if suffix == ".toml":
        tomllib = _toml_module()
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"could not parse config file {path}: {_one_line(err)}") from None
        return data.get("grpo", data)
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"could not parse config file {path}: line {err.lineno}, column {err.colno}: "
                             f"{err.msg}") from None
    try:
        import yaml
    except ImportError:
        raise ImportError("reading YAML configs needs PyYAML: pip install pyyaml (or use a .toml file)") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or _one_line(err)
        raise ValueError(f"could not parse config file {path}: {where}{problem}") from None


def _toml_module():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ImportError("reading TOML on Python 3.10 needs tomli: pip install tomli") from None
    return tomllib


def _one_line(err: BaseException) -> str:
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())
