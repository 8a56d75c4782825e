"""Our estimators, conditioning and channel diagnostics inside TRL's ``GRPOTrainer``.

::

    from trl import GRPOConfig
    from multireward_grpo.integrations.trl import MultiRewardGRPOTrainer

    trainer = MultiRewardGRPOTrainer(
        model="Qwen/Qwen2.5-0.5B-Instruct",
        reward_funcs=[correct, formatted, concise],        # channels 0, 1, 2
        args=GRPOConfig(output_dir="out", reward_weights=[1.0, 0.5, 0.2]),
        train_dataset=dataset,
        estimator="na",                                    # any registered estimator
        conditioning=[(0, 2)],                             # concise counts only where correct passes
    )
    trainer.train()

Everything TRL takes is passed on unchanged; the keyword-only arguments
``estimator``, ``conditioning``, ``nan_policy``, ``ddof``, ``eps``,
``scale_by_std``, ``rollout_log`` and ``allow_untested_trl`` are ours. The
reward functions are the channels, in order (an environment's ``get_reward``
that TRL appends is the last channel, with weight 1; conditioning rules refer
to ``reward_funcs`` only); ``GRPOConfig.reward_weights`` are the weights.

How it plugs in (TRL 1.16). TRL computes the advantages inline in
``_generate_and_score_completions``, right after ``_calculate_rewards``
returns the rewards of the whole gathered batch, ``(N_global,
n_reward_funcs)`` with NaN where a function returned None. This class
overrides ``_calculate_rewards`` only to keep that tensor, lets TRL's method
run, and then replaces ``output["advantages"]`` with ours: the estimator runs
over the whole gathered batch (groups of ``num_generations`` consecutive
rows, ``num_generations_eval`` in evaluation; ``"gdpo"`` whitens that whole
batch, as TRL's ``normalize_then_sum`` does), and each process keeps its
rows ``process_index * n_local : (process_index + 1) * n_local``, TRL's own
slice. The ``advantage`` column of TRL's completions table shows ours too.
TRL's own ``reward``/``reward_std``/``frac_reward_zero_std`` metrics still
describe TRL's aggregate.

Per step (train and eval) these metrics join TRL's ``self._metrics`` and
so its logs (``trainer.state.log_history``, TensorBoard, W&B), from
:func:`~multireward_grpo.analysis.diagnostics.channel_diagnostics` (the same
numbers our own trainer records): ``multireward/{name}/zero_var_frac`` and
``multireward/{name}/influence`` per reward function ``name``,
``multireward/noise_factor`` (``w' Chat w``) and
``multireward/corr/{a}/{b}`` per pair of reward functions. A value that is
not defined in a step (a correlation of a reward that never varied) is left
out of that step rather than logged as NaN.

``rollout_log=path`` (a ``.jsonl`` file) appends, on the main process, after
each training generation, one row per rollout in our long format:
``prompt_idx`` (a stable 63-bit hash of the prompt), ``seed_idx`` (how many
groups of that prompt the log held before: 0 for its first group, 1 for the
next ...; so each prompt's groups are its seeds, as ``analyze`` needs),
``rollout_idx``, ``m``, one column per reward function (named as TRL names
it; null for None) and ``prompt`` (its text, chat prompts as JSON). Then
``multireward-grpo analyze path`` checks Theorem 3 on the rollouts of the run
(``--drop-incomplete`` when a run stopped mid-epoch, so some prompts have one
group fewer). An existing log of the same reward functions is continued.

Deliberate deviations from TRL's own advantage computation
-----------------------------------------------------------
* ``eps`` defaults to ``1e-8`` (TRL adds ``1e-4`` to the standard deviation).
* ``ddof`` defaults to 0, the population standard deviation (TRL's
  ``nanstd`` is the unbiased one, ``ddof=1``). ``**TRL_CONVENTIONS`` gives
  TRL's ``eps`` and ``ddof``: with them ``estimator="gdpo"`` equals TRL's
  ``normalize_then_sum`` and ``"an"`` its ``sum_then_normalize``, up to the
  next point.
* A reward that is constant in its group contributes exactly 0 (TRL divides
  the rounding error of the group mean by ``1e-4``, a spurious advantage of
  up to ~1e-3 for rewards such as 0.1).
* Missing rewards (None, NaN) follow ``nan_policy``. ``"omit"`` (the default,
  TRL's convention of ignoring them): NA-type estimators (``"na"``,
  ``"gdpo"``) leave a missing reward out of its channel's group statistics
  and the rollout keeps its other channels, as TRL's ``normalize_then_sum``
  does; ``"an"`` leaves a rollout that misses a weighted reward out of its
  group, with advantage 0, where TRL's ``sum_then_normalize`` counts the
  missing reward as 0 in the weighted sum. ``"propagate"`` gives every group
  that holds a missing reward advantage 0 (no update); ``"raise"`` stops with
  the reward function named. A rollout for which every reward function
  returned None gets advantage 0 under every policy, as in TRL.
* ``GRPOConfig.scale_rewards``: ``"group"`` is ``scale_by_std=True``,
  ``"none"`` is ``scale_by_std=False`` (Dr. GRPO: centring only); ``"batch"``
  is refused (our estimators scale per group; ``"gdpo"`` whitens the batch).
* ``GRPOConfig.multi_objective_aggregation`` is not used: ``estimator=``
  decides (``"an"`` is ``sum_then_normalize``, ``"gdpo"`` is
  ``normalize_then_sum``).
* ``reward_weights`` must be >= 0 and not all 0 (TRL takes negative ones):
  negate the reward function instead of its weight, so a gate threshold and
  the influence keep their meaning.

Versions: TRL changes these internals between minor releases, so the trainer
checks that TRL is a tested release (1.16.x) and raises ``RuntimeError``
otherwise; pass ``allow_untested_trl=True`` or set the environment variable
``MULTIREWARD_GRPO_ALLOW_UNTESTED_TRL=1`` to try another one (with a warning).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

try:
    import torch
    import trl
    from trl import GRPOTrainer as _TRLGRPOTrainer
except ImportError as _err:  # pragma: no cover - exercised with trl hidden in a subprocess
    raise ImportError(
        f'the TRL integration needs trl ({_err}); install it with: pip install "multireward-grpo[trl]"'
    ) from _err

from multireward_grpo._fileio import open_append, refuse_symlink
from multireward_grpo._seeding import stable_hash64
from multireward_grpo._validate import check_float, check_int
from multireward_grpo.advantage import (
    EstimatorOptions,
    _check_nan_policy,
    _weights_as_numpy,
    compute_advantage_batch,
    get_estimator,
    parse_conditioning,
)
from multireward_grpo.analysis.diagnostics import channel_diagnostics

__all__ = ["ALLOW_UNTESTED_ENV", "TESTED_TRL", "TRL_CONVENTIONS", "MultiRewardGRPOTrainer", "check_trl_version"]

TESTED_TRL = (1, 16)
"""The TRL release series (major, minor) this integration was tested with."""
ALLOW_UNTESTED_ENV = "MULTIREWARD_GRPO_ALLOW_UNTESTED_TRL"
"""Set to 1 to run with an untested TRL release (a warning instead of an error)."""
TRL_CONVENTIONS = MappingProxyType({"ddof": 1, "eps": 1e-4})
"""TRL's own statistical conventions: ``MultiRewardGRPOTrainer(..., **TRL_CONVENTIONS)``."""

_ROLLOUT_COLUMNS = ("prompt_idx", "seed_idx", "rollout_idx", "m", "prompt")
# Columns the long-table readers give a meaning; a reward function may not be named like one.
_RESERVED_NAMES = frozenset(_ROLLOUT_COLUMNS + ("group_size_m", "group_size_m_max", "prompt_id", "gold",
                                                "completion", "rewards", "model"))


# --------------------------------------------------------------------------- version guard


def _release(version: str) -> tuple[int, ...]:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version).release
    except InvalidVersion:
        return ()


def _allowed_by_env() -> bool:
    return os.environ.get(ALLOW_UNTESTED_ENV, "").strip().lower() in ("1", "true", "yes")


def check_trl_version(version: str | None = None, *, allow_untested: bool = False) -> str:
    """Refuse a TRL release this integration was not tested with.

    Parameters
    ----------
    version : str, optional
        The version to check; default the installed ``trl.__version__``.
    allow_untested : bool
        Warn instead of raising (as does ``MULTIREWARD_GRPO_ALLOW_UNTESTED_TRL=1``).

    Returns
    -------
    version : str

    Raises
    ------
    RuntimeError
        When ``version`` is outside :data:`TESTED_TRL` and neither override is set.
    """
    version = trl.__version__ if version is None else str(version)
    if _release(version)[:2] == TESTED_TRL:
        return version
    tested = ".".join(map(str, TESTED_TRL))
    message = (f"multireward_grpo.integrations.trl was tested with trl {tested}.x; found {version}. It overrides "
               f"internals of trl's GRPOTrainer that change between releases")
    if allow_untested or _allowed_by_env():
        warnings.warn(f"{message}; running anyway as asked: check that the logged advantages look right",
                      UserWarning, stacklevel=3)
        return version
    raise RuntimeError(f"{message}. Install a tested one (pip install \"trl>={tested},<{TESTED_TRL[0]}."
                       f"{TESTED_TRL[1] + 1}\"), or pass allow_untested_trl=True (or set "
                       f"{ALLOW_UNTESTED_ENV}=1) to try this one")


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class _Settings:
    """The checked keyword arguments of :class:`MultiRewardGRPOTrainer`."""

    mode: str
    rules: tuple
    nan_policy: str
    options: EstimatorOptions
    rollout_log: Path | None


def _trl_call(args: tuple, kwargs: dict) -> tuple[Any, Any]:
    """``(reward_funcs, GRPOConfig or None)`` of a call to TRL's ``__init__`` (TypeError as TRL would give)."""
    bound = inspect.signature(_TRLGRPOTrainer.__init__).bind(None, *args, **kwargs)
    return bound.arguments.get("reward_funcs"), bound.arguments.get("args")


def _count_reward_funcs(reward_funcs) -> int:
    if reward_funcs is None:
        return 0
    return len(reward_funcs) if isinstance(reward_funcs, list) else 1


def _check_conditioning(conditioning, n_funcs: int) -> tuple:
    rules = parse_conditioning(conditioning)
    for rule in rules:
        for field in ("gate", "target"):
            index = getattr(rule, field)
            if index >= n_funcs:
                raise ValueError(
                    f"conditioning {field} {index} is not a reward function: channels are the reward_funcs in order "
                    f"and {n_funcs} were passed (indices 0..{n_funcs - 1})"
                )
    return rules


def _scale_by_std(scale_by_std, trl_args) -> bool:
    """Our ``scale_by_std`` from the argument and ``GRPOConfig.scale_rewards`` (which must agree)."""
    scale_rewards = "group" if trl_args is None else getattr(trl_args, "scale_rewards", "group")
    if scale_rewards == "batch":
        raise ValueError("GRPOConfig(scale_rewards='batch') divides by the batch std, which our estimators do not: "
                         "use scale_rewards='group' (or 'none' for centring only), or estimator='gdpo' to whiten "
                         "the batch")
    from_config = scale_rewards != "none"
    if scale_by_std is None:
        return from_config
    if not isinstance(scale_by_std, (bool, np.bool_)):
        raise TypeError(f"scale_by_std must be True, False or None (follow GRPOConfig.scale_rewards), got {scale_by_std!r}")
    if bool(scale_by_std) != from_config:
        raise ValueError(f"scale_by_std={bool(scale_by_std)} contradicts GRPOConfig(scale_rewards={scale_rewards!r}); "
                         "set one of them only (scale_by_std=None follows scale_rewards)")
    return bool(scale_by_std)


def _check_weights(weights, n_funcs: int | None = None) -> np.ndarray:
    """TRL's ``reward_weights`` as float64, ``>= 0`` and not all 0 (a length mismatch is TRL's to report)."""
    if weights is None:
        return np.ones(n_funcs or 0)
    w = np.atleast_1d(_weights_as_numpy(weights))
    if not np.all(np.isfinite(w)):
        raise ValueError(f"reward_weights must be finite, got {w.tolist()}")
    if np.any(w < 0):
        raise ValueError(f"reward_weights must be >= 0 for our estimators, got {w.tolist()}; negate the reward "
                         "function instead of its weight (a conditioning gate and the influence keep their meaning)")
    if w.size and not np.any(w > 0):
        raise ValueError("reward_weights are all 0: at least one reward function needs a positive weight")
    return w


def _check_group_size(trl_args, ddof: int) -> None:
    sizes = {"num_generations": getattr(trl_args, "num_generations", None) if trl_args is not None else 8,
             "num_generations_eval": getattr(trl_args, "num_generations_eval", None) if trl_args is not None else None}
    for name, size in sizes.items():
        if isinstance(size, int) and size - ddof <= 0:
            raise ValueError(f"ddof={ddof} leaves no degrees of freedom in groups of {name}={size}: every advantage "
                             f"would be 0; use ddof < {size}")


def _check_rollout_log(rollout_log) -> Path | None:
    if rollout_log is None:
        return None
    if not isinstance(rollout_log, (str, os.PathLike)):
        raise TypeError(f"rollout_log must be a path to a .jsonl file (or None), got {type(rollout_log).__name__}")
    path = Path(rollout_log)
    if path.suffix != ".jsonl":
        raise ValueError(f"rollout_log must be a .jsonl file (it is appended to), got {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"rollout_log {str(path)!r} is a directory; give a .jsonl file path")
    try:  # e.g. inside TRL's output_dir, which TRL itself creates only when it first saves
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FileNotFoundError(f"cannot create the folder of rollout_log {str(path)!r}: {err.strerror}") from None
    refuse_symlink(path, "rollout log")
    return path


def _settings(trl_call: tuple[Any, Any], *, estimator, conditioning, nan_policy, ddof, eps, scale_by_std,
              rollout_log) -> _Settings:
    """Every keyword argument of ours checked, before TRL loads anything."""
    reward_funcs, trl_args = trl_call
    get_estimator(estimator)  # unknown names list the registered ones
    _check_nan_policy(nan_policy)
    ddof = check_int("ddof", ddof, 0)
    options = EstimatorOptions(ddof=ddof, eps=check_float("eps", eps, minimum=0.0),
                               scale_by_std=_scale_by_std(scale_by_std, trl_args))
    _check_group_size(trl_args, ddof)
    _check_weights(getattr(trl_args, "reward_weights", None))
    rules = _check_conditioning(conditioning, _count_reward_funcs(reward_funcs))
    return _Settings(estimator.strip().lower(), rules, nan_policy, options, _check_rollout_log(rollout_log))


# --------------------------------------------------------------------------- labels and the rollout log


def _channel_labels(names) -> tuple[str, ...]:
    """TRL's reward function names, made unique (``name``, ``name_1``, ...) for metric keys and columns."""
    labels, seen = [], {}
    for name in map(str, names):
        count = seen.get(name, 0)
        seen[name] = count + 1
        labels.append(name if count == 0 else f"{name}_{count}")
    return tuple(labels)


def _prompt_text(prompt) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False, sort_keys=True, default=str)


def _prompt_id(prompt) -> int:
    """A stable id of a prompt (the same in every process and run), below 2**63 so it fits an int64 column."""
    return stable_hash64(_prompt_text(prompt)) >> 1


def _existing_seeds(path: Path, labels: tuple[str, ...]) -> dict[int, int]:
    """Groups per prompt already in a rollout log (0 when there is none), checking it holds these channels."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        raise ValueError(f"rollout_log {str(path)!r} ends with a partial line (an interrupted write); remove that "
                         "line or choose another path")
    seeds: dict[int, int] = {}
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if line.strip():
            row = _log_row(line, path, number, labels)
            seeds[row["prompt_idx"]] = max(seeds.get(row["prompt_idx"], 0), row["seed_idx"] + 1)
    return seeds


def _log_row(line: str, path: Path, number: int, labels: tuple[str, ...]) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        row = None
    if not isinstance(row, dict) or not all(isinstance(row.get(k), int) for k in ("prompt_idx", "seed_idx")):
        raise ValueError(f"rollout_log {str(path)!r} line {number} is not a rollout row of this integration; "
                         "choose another path")
    channels = tuple(k for k in row if k not in _ROLLOUT_COLUMNS)
    if channels != labels:
        raise ValueError(f"rollout_log {str(path)!r} holds the reward columns {list(channels)} but this trainer's "
                         f"reward functions are {list(labels)}; choose another path")
    return row


def _reward_cell(value: np.floating):
    # The shortest text that reads back as the same value in the rewards' dtype: 0.7, not float32's 0.699999988.
    return None if np.isnan(value) else float(str(value))


def _rollout_rows(grouped: np.ndarray, prompts: list, labels: tuple[str, ...], seeds: dict[int, int]) -> list[dict]:
    """One long-format row per rollout of ``grouped`` (B, m, R), in TRL's dtype; ``seeds`` is advanced per prompt."""
    n_groups, size, _ = grouped.shape
    rows = []
    for b in range(n_groups):
        prompt = prompts[b * size]
        pid = _prompt_id(prompt)
        seed = seeds.get(pid, 0)
        seeds[pid] = seed + 1
        text = _prompt_text(prompt)
        for j in range(size):
            rewards = {label: _reward_cell(v) for label, v in zip(labels, grouped[b, j])}
            rows.append({"prompt_idx": pid, "seed_idx": seed, "rollout_idx": j, "m": size, **rewards, "prompt": text})
    return rows


# --------------------------------------------------------------------------- the trainer


class MultiRewardGRPOTrainer(_TRLGRPOTrainer):
    """``trl.GRPOTrainer`` with our advantage estimators, conditioning and channel diagnostics.

    Parameters
    ----------
    *args, **kwargs
        Everything ``trl.GRPOTrainer`` takes (``model``, ``reward_funcs``,
        ``args``, ``train_dataset``, ``peft_config`` ...), unchanged.
    estimator : str
        A registered estimator (:func:`~multireward_grpo.advantage.list_estimators`):
        ``"na"`` (default), ``"an"``, ``"single"`` (the first reward function
        alone), ``"gdpo"`` or one added with ``register_estimator``.
    conditioning : optional
        Our conditioning rules (:class:`~multireward_grpo.advantage.Conditioning`,
        ``(gate, target[, method])`` tuples or dicts); channel ``i`` is
        ``reward_funcs[i]``.
    nan_policy : {"omit", "propagate", "raise"}
        What a reward function's None does (see the module docstring); default
        ``"omit"``, TRL's convention.
    ddof : int
        Delta degrees of freedom of the group std (0; TRL uses 1).
    eps : float
        Added to the group std (1e-8; TRL uses 1e-4).
    scale_by_std : bool or None
        Divide by the group std; None (default) follows
        ``GRPOConfig.scale_rewards`` (``"group"``: True, ``"none"``: False).
    rollout_log : path, optional
        A ``.jsonl`` file the main process appends each training group's
        rewards to, in the long format ``multireward-grpo analyze`` reads.
    allow_untested_trl : bool
        Run with a TRL release outside :data:`TESTED_TRL` (with a warning).

    Raises
    ------
    TypeError, ValueError, FileNotFoundError
        For a bad argument of ours, before TRL loads the model.
    RuntimeError
        For an untested TRL release (see :func:`check_trl_version`).
    """

    def __init__(self, *args, estimator: str = "na", conditioning=None, nan_policy: str = "omit", ddof: int = 0,
                 eps: float = 1e-8, scale_by_std: bool | None = None, rollout_log=None,
                 allow_untested_trl: bool = False, **kwargs):
        check_trl_version(allow_untested=allow_untested_trl)
        settings = _settings(_trl_call(args, kwargs), estimator=estimator, conditioning=conditioning,
                             nan_policy=nan_policy, ddof=ddof, eps=eps, scale_by_std=scale_by_std,
                             rollout_log=rollout_log)
        super().__init__(*args, **kwargs)
        self._multireward = settings
        # An environment's get_reward may have added a channel (weight 1) after the check above.
        self._multireward_weights = _check_weights(self.reward_weights.tolist())
        self._multireward_labels = _channel_labels(self.reward_func_names)
        self._multireward_seeds = self._rollout_seeds(settings.rollout_log)
        self._multireward_rewards = None

    def _rollout_seeds(self, path: Path | None) -> dict[int, int]:
        if path is None:
            return {}
        reserved = [label for label in self._multireward_labels if label in _RESERVED_NAMES]
        if reserved:
            raise ValueError(f"reward function name {reserved[0]!r} is a column of the rollout log's long format; "
                             "rename the function (its __name__) to log rollouts")
        return _existing_seeds(path, self._multireward_labels)

    # ------------------------------------------------------------------ TRL hooks

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._multireward_rewards = rewards.detach().clone()  # (N_global, R), gathered over processes
        return rewards

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        rewards, self._multireward_rewards = self._multireward_rewards, None
        if rewards is None:
            raise RuntimeError("trl's _generate_and_score_completions did not call _calculate_rewards: this trl "
                               "release computes rewards in a way the integration does not know")
        self._use_our_advantages(output, rewards, "train" if self.model.training else "eval")
        return output

    def _use_our_advantages(self, output: dict, rewards, mode: str) -> None:
        """All this class adds to a generation: our advantages into ``output``, the logs, the rollout log.

        ``rewards`` is TRL's gathered ``(N_global, R)`` tensor, ``output`` the
        dict TRL's ``_generate_and_score_completions`` returned (its
        ``"advantages"`` are replaced).
        """
        grouped = self._grouped_rewards(rewards, mode)
        advantages = self.multireward_advantages(grouped)  # (B, m)
        flat = np.nan_to_num(advantages, nan=0.0).reshape(-1)  # nan_policy="propagate": a NaN group gets no update
        output["advantages"] = self._local_slice(flat, output["advantages"])
        self._show_in_completions_table(flat)
        self._log_diagnostics(mode, grouped, advantages)
        if mode == "train" and self._multireward.rollout_log is not None and self.accelerator.is_main_process:
            self._append_rollouts(rewards.detach().cpu().numpy().reshape(grouped.shape))

    # ------------------------------------------------------------------ our part of a step

    def _grouped_rewards(self, rewards, mode: str) -> np.ndarray:
        """The gathered ``(N, R)`` rewards as float64 ``(N / m, m, R)`` groups of consecutive rows."""
        size = self.num_generations if mode == "train" else self.num_generations_eval
        n_rows, n_channels = rewards.shape
        if n_rows % size:
            raise RuntimeError(f"trl gathered {n_rows} rewards, not a multiple of the group size {size}")
        return rewards.detach().to("cpu", torch.float64).numpy().reshape(n_rows // size, size, n_channels)

    def multireward_advantages(self, grouped: np.ndarray) -> np.ndarray:
        """Our advantages of a batch of groups, as the trainer computes them.

        Parameters
        ----------
        grouped : (B, m, R) array
            Rewards of ``B`` groups of ``m`` rollouts from the ``R`` reward
            functions (NaN for None).

        Returns
        -------
        advantages : (B, m) float64 array; NaN only for groups holding a
        missing reward under ``nan_policy="propagate"``.
        """
        settings = self._multireward
        if settings.nan_policy == "raise":
            self._refuse_missing(grouped)
        options = settings.options
        return compute_advantage_batch(grouped, self._multireward_weights, settings.mode, conditioning=settings.rules,
                                       scale_by_std=options.scale_by_std, ddof=options.ddof, eps=options.eps,
                                       nan_policy=settings.nan_policy)

    def _refuse_missing(self, grouped: np.ndarray) -> None:
        missing = np.isnan(grouped)
        if missing.any():
            group, rollout, channel = (int(i) for i in np.argwhere(missing)[0])
            raise ValueError(
                f"reward function {self._multireward_labels[channel]!r} returned None for completion {rollout} of "
                f"group {group} ({int(missing.sum())} missing rewards in this batch) and nan_policy='raise'; pass "
                "nan_policy='omit' to leave missing rewards out of the group statistics (TRL's convention)"
            )

    def _local_slice(self, flat: np.ndarray, trl_advantages):
        """This process's rows of the global advantages, as TRL slices them, in TRL's dtype and device."""
        n_local = int(trl_advantages.shape[0])
        start = self.accelerator.process_index * n_local
        return torch.as_tensor(flat[start:start + n_local], dtype=trl_advantages.dtype, device=trl_advantages.device)

    def _show_in_completions_table(self, flat: np.ndarray) -> None:
        """Replace the advantages TRL just appended to its completions table with ours."""
        logged = self._logs["advantages"]
        n_replaced = min(len(flat), len(logged))
        for _ in range(n_replaced):
            logged.pop()
        logged.extend(flat[len(flat) - n_replaced:].tolist())

    def _log_diagnostics(self, mode: str, grouped: np.ndarray, advantages: np.ndarray) -> None:
        options = self._multireward.options
        diagnostics = channel_diagnostics(grouped, advantages, self._multireward_weights,
                                          conditioning=self._multireward.rules, ddof=options.ddof, eps=options.eps,
                                          nan_policy=self._multireward.nan_policy)
        metrics, labels = self._metrics[mode], self._multireward_labels
        values = {"multireward/noise_factor": diagnostics.noise_factor}
        for c, label in enumerate(labels):
            values[f"multireward/{label}/zero_var_frac"] = diagnostics.zero_var_frac[c]
            values[f"multireward/{label}/influence"] = diagnostics.influence[c]
            for d in range(c + 1, len(labels)):
                values[f"multireward/corr/{label}/{labels[d]}"] = diagnostics.correlation[c, d]
        for key, value in values.items():
            if math.isfinite(value):  # an undefined value is left out of this step, not averaged in as NaN
                metrics[key].append(float(value))

    def _append_rollouts(self, grouped: np.ndarray) -> None:
        prompts = list(self._logs["prompt"])[-grouped.shape[0] * grouped.shape[1]:]  # TRL's gathered prompts
        if len(prompts) != grouped.shape[0] * grouped.shape[1]:
            raise RuntimeError(f"trl logged {len(prompts)} prompts for {grouped.shape[0] * grouped.shape[1]} "
                               "rewards; cannot write the rollout log")
        rows = _rollout_rows(grouped, prompts, self._multireward_labels, self._multireward_seeds)
        with open_append(self._multireward.rollout_log) as fh:
            fh.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
