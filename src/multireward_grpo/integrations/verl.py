"""Our estimators and conditioning inside verl's advantage-estimator registry.

verl (tested: 0.9.1) picks the advantage estimator by name
(``algorithm.adv_estimator``) from a registry. :func:`register` adds ours:

==============  ======================================================
verl name       our estimator (:mod:`multireward_grpo.advantage`)
==============  ======================================================
``mr_na``       ``"na"``: normalize each reward, then the weighted sum
``mr_an``       ``"an"``: weighted sum, then normalize (classic GRPO)
``mr_single``   ``"single"``: the first reward key alone
``mr_gdpo``     ``"gdpo"``: ``"na"``, then the batch whitened once more
==============  ======================================================

``register(modes=[...])`` also registers any estimator added with
:func:`multireward_grpo.register_estimator`, as ``mr_<name>``.

Each reads the per-reward components the way verl's own ``gdpo`` does: one
``non_tensor_batch[key]`` entry (one value per rollout) for each key of
``algorithm.gdpo_reward_keys``, in that order (the channels), with weights
from ``algorithm.gdpo_reward_weights`` (default all ones). Groups are verl's
``uid`` (strings, ints or UUIDs; any order, any sizes). The per-rollout
advantage from :func:`~multireward_grpo.advantage.compute_advantage_flat` is
written on every response token (``response_mask``), 0 elsewhere, and
returned as verl expects, ``(advantages, returns)``, both ``(bs, T)``.

Our options live under ``algorithm.multireward`` (all optional):

``weights``        weights in key order; the same as ``gdpo_reward_weights``
                   (give one or the other, or equal ones).
``conditioning``   a list of rules, each ``{gate, target, method, gamma,
                   threshold}`` as :class:`~multireward_grpo.Conditioning`;
                   ``gate`` and ``target`` are key names or channel indices.
``nan_policy``     ``"raise"`` (default), ``"omit"`` or ``"propagate"``: what
                   a missing component (None or NaN) does.
``ddof``           0 (default, population std); 1 is verl's ``torch.std``.
``eps``            1e-8 (default); verl's GRPO/GDPO use 1e-6.
``scale_by_std``   default ``algorithm.norm_adv_by_std_in_grpo`` (True).
``whiten``         ``mr_gdpo`` only: ``"rollouts"`` (default, our GDPO: each
                   rollout counts once, with ``ddof``/``eps``) or
                   ``"tokens"`` (verl's ``masked_whiten`` convention: each
                   response token counts once, the variance Bessel-corrected
                   over tokens, ``(a - mean) / sqrt(var + 1e-8)``).

With ``ddof=1, eps=1e-6, whiten="tokens"``, ``mr_gdpo`` gives verl's own
``gdpo`` on groups of two or more rollouts. (verl gives a one-rollout group
its raw score; ours gives it 0, as it has no contrast.)

The hook
--------
verl 0.9.1's ``ray_trainer.compute_advantage`` passes ``non_tensor_batch``
(where the components are) only to the estimator named ``gdpo``.
:func:`patch_compute_advantage` wraps that function, in ``ray_trainer`` and
in every loaded module that imported it by name (the v1 trainer's
``verl.trainer.ppo.v1.utils``, the experimental trainers), so that during the
call our estimators can read the batch it was given; verl's own code still
does everything else, and other estimators see no difference. It returns a
handle: ``handle.undo()`` or ``with patch_compute_advantage(): ...``
restores verl's function (calls nest: the last undo restores). :func:`install`
is ``register()`` plus the patch, for the import hook below.

Recipe (Hydra / CLI)
--------------------
verl runs its trainer in a Ray actor, so the hook must be loaded in every
verl process: verl imports the modules named in ``VERL_USE_EXTERNAL_MODULES``
whenever it is imported, and ``multireward_grpo.integrations.verl_plugin``
calls :func:`install`. The reward function returns a dict with ``"score"``
and one entry per component; verl's ``gdpo`` reward manager keeps them. In
verl 0.9.1 only the legacy trainer (``trainer.use_v1=False``) hands the
components to the advantage step; the v1 trainer does not (for verl's own
``gdpo`` either). Keys that verl's YAML does not list (its ``gdpo_*`` keys
too) take Hydra's ``+``::

    pip install multireward-grpo            # next to a working verl 0.9.1
    export VERL_USE_EXTERNAL_MODULES=multireward_grpo.integrations.verl_plugin
    python -m verl.trainer.main_ppo \\
        trainer.use_v1=False \\
        reward.reward_manager.name=gdpo \\
        algorithm.adv_estimator=mr_na \\
        '+algorithm.gdpo_reward_keys=[format,accuracy]' \\
        '+algorithm.gdpo_reward_weights=[0.5,1.0]' \\
        '+algorithm.multireward.conditioning=[{gate:format,target:accuracy}]' \\
        +algorithm.multireward.nan_policy=omit \\
        ...                                   # the rest of your usual overrides

On a multi-node Ray cluster, set the variable where ``ray start`` runs, or
pass it with ``+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=...``.
In a custom entry point that runs verl's ``compute_advantage`` in its own
process, call it directly::

    from multireward_grpo.integrations import verl as mr_verl
    mr_verl.install()   # or: mr_verl.register(); with mr_verl.patch_compute_advantage(): ...

Importing this module does not import verl; :func:`register` and
:func:`patch_compute_advantage` do, and a missing verl raises ImportError
naming the install.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import sys
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from multireward_grpo._validate import (
    check_choice,
    check_float,
    check_int,
    did_you_mean,
)
from multireward_grpo.advantage import (
    NAN_POLICIES,
    compute_advantage_flat,
    get_estimator,
    parse_conditioning,
)

__all__ = [
    "DEFAULT_MODES", "PREFIX", "TESTED_VERL", "PatchHandle", "install", "outcome_advantage",
    "patch_compute_advantage", "register",
]

PREFIX = "mr_"
"""verl names are this prefix plus our estimator name (``mr_na``)."""

DEFAULT_MODES = ("na", "an", "single", "gdpo")
"""The estimators :func:`register` adds when called without ``modes``."""

TESTED_VERL = "0.9"
"""The verl minor series this adapter is tested against (0.9.1)."""

INSTALL_HINT = (
    'pip install verl==0.9.1 (with its GPU stack), or on CPU: pip install "multireward-grpo[verl]" '
    "&& pip install --no-deps verl==0.9.1 transferqueue==0.1.11"
)
WHITEN_CHOICES = ("rollouts", "tokens")
_OPTION_KEYS = ("weights", "conditioning", "nan_policy", "ddof", "eps", "scale_by_std", "whiten")
_SECTION = "algorithm.multireward"


# --------------------------------------------------------------------------- importing verl


def _import_verl(module: str):
    """``importlib.import_module(module)`` with an ImportError naming the install when verl is missing."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or "a dependency"
        raise ImportError(
            f"the verl integration needs {module}, which could not be imported ({missing!r} is missing): {INSTALL_HINT}"
        ) from exc


def _check_verl_version() -> str:
    verl = _import_verl("verl")
    version = str(getattr(verl, "__version__", "unknown"))
    if version.split(".")[:2] != TESTED_VERL.split("."):
        raise ImportError(
            f"multireward_grpo.integrations.verl is tested with verl {TESTED_VERL}.x (0.9.1); found verl {version}. "
            "It wraps verl internals (the estimator registry and compute_advantage), so install verl==0.9.1"
        )
    return version


# --------------------------------------------------------------------------- registration

_ESTIMATORS: dict[str, Callable] = {}  # our mode -> the one function given to verl, so re-registering is a no-op
_LOCK = threading.Lock()


def register(modes: Sequence[str] = DEFAULT_MODES) -> dict[str, str]:
    """Add our estimators to verl's advantage-estimator registry (idempotent).

    Parameters
    ----------
    modes : sequence of str
        Estimators of :func:`multireward_grpo.list_estimators` to add; each
        is registered as ``PREFIX + mode`` (``"na"`` -> ``"mr_na"``).

    Returns
    -------
    names : dict
        verl name -> our estimator name, for every mode given.
    """
    if isinstance(modes, str) or not isinstance(modes, Sequence):
        raise TypeError(f"modes must be a list of estimator names such as ['na', 'an']; got {modes!r}")
    keys = []
    for mode in modes:
        get_estimator(mode)  # unknown names fail here, listing the valid ones
        keys.append(mode.strip().lower())
    _check_verl_version()
    core_algos = _import_verl("verl.trainer.ppo.core_algos")
    names = {}
    with _LOCK:
        for key in keys:
            fn = _ESTIMATORS.setdefault(key, _make_estimator(key))
            name = PREFIX + key
            try:
                core_algos.register_adv_est(name)(fn)
            except ValueError:
                raise ValueError(
                    f"verl already has an advantage estimator named {name!r} that is not ours; "
                    "unregister it or register ours under other names"
                ) from None
            names[name] = key
    return names


def install() -> None:
    """:func:`register` the default estimators and apply :func:`patch_compute_advantage` for good."""
    register()
    patch_compute_advantage()


def _make_estimator(mode: str) -> Callable:
    def estimator(token_level_rewards, response_mask, index=None, config=None, non_tensor_batch=None, batch=None, **_):
        return outcome_advantage(
            mode, token_level_rewards, response_mask, index=index, config=config, non_tensor_batch=non_tensor_batch
        )

    estimator.__name__ = estimator.__qualname__ = f"multireward_{mode}_advantage"
    estimator.__doc__ = (
        f"verl advantage estimator {PREFIX}{mode}: our {mode!r} estimator on the gdpo_reward_keys components "
        "(see multireward_grpo.integrations.verl)."
    )
    return estimator


# --------------------------------------------------------------------------- the estimator


def outcome_advantage(mode, token_level_rewards, response_mask, *, index, config, non_tensor_batch=None):
    """Our estimator ``mode`` on verl's data layout.

    Parameters
    ----------
    mode : str
        A registered estimator of ours (``"na"``, ``"an"``, ...).
    token_level_rewards : (bs, T) torch tensor
        Only its shape, dtype and device are used: the rewards are the
        components.
    response_mask : (bs, T) torch tensor
        Nonzero on response tokens.
    index : (bs,) array of group ids
        verl's ``non_tensor_batch["uid"]``.
    config : mapping
        verl's ``algorithm`` config (``gdpo_reward_keys``, ...).
    non_tensor_batch : mapping, optional
        Holds one ``(bs,)`` entry per reward key. Default: the batch that the
        patched ``compute_advantage`` is computing.

    Returns
    -------
    advantages, returns : (bs, T) tensors (the same tensor), 0 off the response.
    """
    n_rollouts = _check_layout(token_level_rewards, response_mask)
    settings = _read_settings(config)
    if non_tensor_batch is None:
        non_tensor_batch = _batch_in_progress(n_rollouts, mode)
    rewards = _components(non_tensor_batch, settings, n_rollouts)
    group_ids = _group_codes(index, n_rollouts)
    if mode == "gdpo" and settings.whiten == "tokens":
        per_rollout = compute_advantage_flat(rewards, group_ids, settings.weights, "na", **settings.estimator_kwargs)
        per_rollout = _token_whitened(per_rollout, response_mask)
    else:
        per_rollout = compute_advantage_flat(rewards, group_ids, settings.weights, mode, **settings.estimator_kwargs)
    advantages = _on_tokens(per_rollout, response_mask, token_level_rewards)
    return advantages, advantages


def _check_layout(token_level_rewards, response_mask) -> int:
    shape = tuple(getattr(token_level_rewards, "shape", ()))
    if len(shape) != 2 or not hasattr(token_level_rewards, "device"):
        raise TypeError(f"token_level_rewards must be a (bs, response_length) torch tensor, got {type(token_level_rewards).__name__} of shape {shape}")
    mask_shape = tuple(getattr(response_mask, "shape", ()))
    if mask_shape != shape:
        raise ValueError(f"response_mask has shape {mask_shape} but token_level_rewards has {shape}; they must match")
    return shape[0]


def _on_tokens(per_rollout: np.ndarray, response_mask, like):
    """(bs, T) tensor of ``like``'s dtype and device: each rollout's advantage on its response tokens, 0 elsewhere."""
    import torch

    values = torch.as_tensor(per_rollout, dtype=like.dtype, device=like.device)[:, None]
    if np.isfinite(per_rollout).all():
        return values * response_mask  # one pass, as verl's own estimators broadcast
    # NaN (nan_policy="propagate") times a 0 mask entry is NaN: keep padding at 0.
    return torch.where(response_mask.bool(), values, torch.zeros((), dtype=like.dtype, device=like.device))


VERL_WHITEN_VAR_EPS = 1e-8
"""Added to the variance before the square root in verl's ``masked_whiten`` (fixed in verl)."""


def _token_whitened(per_rollout: np.ndarray, response_mask) -> np.ndarray:
    """verl's ``masked_whiten`` convention on per-rollout values: each response token counts once.

    A rollout with ``n_i`` response tokens weighs ``n_i``; the variance is
    Bessel-corrected over the ``N = sum n_i`` tokens and the result is
    ``(a - mean) / sqrt(var + 1e-8)``. Computed per rollout (not per token),
    so it costs ``bs`` values, not ``bs * T``. NaN rollouts stay NaN and out
    of the statistics.
    """
    n_tokens = np.asarray(response_mask.sum(dim=-1).cpu(), dtype=np.float64)
    finite = np.isfinite(per_rollout)
    weights = np.where(finite, n_tokens, 0.0)
    total = weights.sum()
    if total < 2:
        raise ValueError(
            f"whiten='tokens' needs at least 2 response tokens with finite advantages in the batch, got {int(total)}; "
            "use whiten='rollouts' or a larger batch"
        )
    values = np.where(finite, per_rollout, 0.0)
    mean = weights @ values / total
    variance = weights @ (values - mean) ** 2 / (total - 1)
    return np.where(finite, (per_rollout - mean) / np.sqrt(variance + VERL_WHITEN_VAR_EPS), np.nan)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class _Settings:
    keys: tuple[str, ...]
    weights: list[float] | None
    whiten: str
    estimator_kwargs: dict


def _plain(value):
    """Hydra's DictConfig / ListConfig (or any mapping / sequence) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(item) for item in value]
    return value


def _config_get(config, key: str):
    getter = getattr(config, "get", None)
    if not callable(getter):
        raise TypeError(f"config must be verl's algorithm config (a DictConfig, AlgoConfig or dict), got {type(config).__name__}")
    return getter(key, None)


def _read_settings(config) -> _Settings:
    if config is None:
        raise ValueError(
            "our verl estimators need verl's algorithm config (compute_advantage passes config=algorithm) with "
            "algorithm.gdpo_reward_keys listing the reward components"
        )
    keys = _reward_keys(_config_get(config, "gdpo_reward_keys"))
    section = _plain(_config_get(config, "multireward")) or {}
    if not isinstance(section, dict):
        raise TypeError(f"{_SECTION} must be a mapping of our options ({', '.join(_OPTION_KEYS)}), got {section!r}")
    for key in section:
        if key not in _OPTION_KEYS:
            raise ValueError(f"unknown option {_SECTION}.{key}{did_you_mean(key, _OPTION_KEYS)}; the options are {', '.join(_OPTION_KEYS)}")
    scale_by_std = section.get("scale_by_std", _config_get(config, "norm_adv_by_std_in_grpo"))
    estimator_kwargs = {
        "conditioning": _conditioning(section.get("conditioning"), keys),
        "nan_policy": check_choice(f"{_SECTION}.nan_policy", section.get("nan_policy", "raise"), NAN_POLICIES),
        "ddof": check_int(f"{_SECTION}.ddof", section.get("ddof", 0), 0),
        "eps": check_float(f"{_SECTION}.eps", section.get("eps", 1e-8), minimum=0.0),
        "scale_by_std": _check_bool(f"{_SECTION}.scale_by_std", True if scale_by_std is None else scale_by_std),
    }
    whiten = check_choice(f"{_SECTION}.whiten", section.get("whiten", "rollouts"), WHITEN_CHOICES)
    weights = _weights(section.get("weights"), _plain(_config_get(config, "gdpo_reward_weights")), keys)
    return _Settings(keys, weights, whiten, estimator_kwargs)


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def _reward_keys(raw) -> tuple[str, ...]:
    keys = _plain(raw)
    if keys is None or keys == []:
        raise ValueError(
            "set algorithm.gdpo_reward_keys to the reward components in non_tensor_batch, "
            "e.g. algorithm.gdpo_reward_keys=[format,accuracy] (compute_score returns them in its dict)"
        )
    if isinstance(keys, str) or not isinstance(keys, list):
        raise TypeError(f"algorithm.gdpo_reward_keys must be a list of names, got {keys!r}; write algorithm.gdpo_reward_keys=[{keys}]")
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"algorithm.gdpo_reward_keys must hold strings, got {key!r} in {keys!r}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"algorithm.gdpo_reward_keys lists a key twice: {keys!r}")
    return tuple(keys)


def _weights(ours, verls, keys: tuple[str, ...]) -> list[float] | None:
    if ours is not None and verls is not None and _plain(ours) != verls:
        raise ValueError(
            f"{_SECTION}.weights={ours!r} and algorithm.gdpo_reward_weights={verls!r} disagree; give one of them"
        )
    raw = ours if ours is not None else verls
    if raw is None:
        return None
    name = f"{_SECTION}.weights" if ours is not None else "algorithm.gdpo_reward_weights"
    if isinstance(raw, str) or not isinstance(raw, list):
        raise TypeError(f"{name} must be a list of numbers in key order, got {raw!r}")
    if len(raw) != len(keys):
        raise ValueError(f"algorithm.gdpo_reward_keys has {len(keys)} components {list(keys)} but {name} has {len(raw)} values")
    return [check_float(f"{name}[{i}]", value, minimum=0.0) for i, value in enumerate(raw)]


def _conditioning(raw, keys: tuple[str, ...]):
    """Our rules, with gate and target given as reward key names turned into channel indices."""
    raw = _plain(raw)
    if raw is None:
        return None
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise TypeError(f"{_SECTION}.conditioning must be a list of rules such as [{{gate: format, target: accuracy}}], got {raw!r}")
    rules = []
    for rule in raw:
        if isinstance(rule, dict):
            rule = {field: _channel(value, keys) if field in ("gate", "target") else value for field, value in rule.items()}
        elif isinstance(rule, list):
            rule = [_channel(value, keys) if i < 2 else value for i, value in enumerate(rule)]
        rules.append(rule)
    return parse_conditioning(rules)


def _channel(value, keys: tuple[str, ...]):
    if not isinstance(value, str):
        return value
    if value not in keys:
        raise ValueError(
            f"{_SECTION}.conditioning names {value!r}, which is not in algorithm.gdpo_reward_keys{did_you_mean(value, keys)}; "
            f"the keys are {list(keys)}"
        )
    return keys.index(value)


# --------------------------------------------------------------------------- data


def _components(non_tensor_batch, settings: _Settings, n_rollouts: int) -> np.ndarray:
    """(bs, R) float64 rewards: one column per reward key, None as NaN."""
    if not isinstance(non_tensor_batch, Mapping):
        raise TypeError(f"non_tensor_batch must be a mapping of per-rollout arrays, got {type(non_tensor_batch).__name__}")
    missing = [key for key in settings.keys if key not in non_tensor_batch]
    if missing:
        raise ValueError(
            f"algorithm.gdpo_reward_keys names {missing} but non_tensor_batch has no such entries "
            f"(it has {sorted(map(str, non_tensor_batch))}); return them from compute_score in its dict and keep them "
            "with a reward manager that does (reward.reward_manager.name=gdpo)"
        )
    rewards = np.empty((n_rollouts, len(settings.keys)), dtype=np.float64)
    for channel, key in enumerate(settings.keys):
        rewards[:, channel] = _column(key, non_tensor_batch[key], n_rollouts)
    if settings.estimator_kwargs["nan_policy"] == "raise":
        _refuse_missing(rewards, settings.keys)
    return rewards


def _column(key: str, values, n_rollouts: int) -> np.ndarray:
    try:
        column = np.asarray(values, dtype=np.float64)  # None reads as NaN: a missing reward
    except (TypeError, ValueError):
        bad = next((v for v in np.asarray(values, dtype=object).ravel() if not _is_number(v)), None)
        raise TypeError(f"non_tensor_batch[{key!r}] must hold numbers (None for a missing reward), got {bad!r}") from None
    if column.shape != (n_rollouts,):
        raise ValueError(f"non_tensor_batch[{key!r}] has shape {column.shape}; it needs one value per rollout, ({n_rollouts},)")
    return column


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return value is None
    return True


def _refuse_missing(rewards: np.ndarray, keys: tuple[str, ...]) -> None:
    missing = np.isnan(rewards)
    if missing.any():
        row, channel = map(int, np.argwhere(missing)[0])
        raise ValueError(
            f"non_tensor_batch[{keys[channel]!r}] is missing (None or NaN) for rollout {row} ({int(missing.sum())} in all); "
            f"set +{_SECTION}.nan_policy=omit to leave missing rewards out of their group's statistics"
        )


_ID_TYPES = (str, bytes, int, np.integer, uuid.UUID)


def _group_codes(index, n_rollouts: int) -> np.ndarray:
    """(bs,) int64 group codes in order of first appearance, so contiguous groups keep a sorted layout."""
    if index is None:
        raise ValueError("verl passed no index: the group ids come from non_tensor_batch['uid'], which this batch lacks")
    ids = np.asarray(index)
    if ids.ndim != 1 or ids.shape[0] != n_rollouts:
        raise ValueError(f"index (non_tensor_batch['uid']) has shape {ids.shape}; it needs one group id per rollout, ({n_rollouts},)")
    if ids.dtype.kind in "iu":
        return ids
    if ids.dtype.kind not in "USO":
        raise TypeError(f"index (non_tensor_batch['uid']) has dtype {ids.dtype}; group ids must be strings, ints or UUIDs")
    values = ids.tolist()
    if ids.dtype.kind == "O":
        _check_id_types(values)
    first_seen = dict.fromkeys(values)  # unique ids in order of first appearance
    code_of = {value: code for code, value in enumerate(first_seen)}
    return np.fromiter(map(code_of.__getitem__, values), dtype=np.int64, count=n_rollouts)


def _check_id_types(values: list) -> None:
    kinds = set()
    for kind in set(map(type, values)):
        if issubclass(kind, (bool, np.bool_)) or not issubclass(kind, _ID_TYPES):
            position = next(i for i, value in enumerate(values) if type(value) is kind)
            raise TypeError(
                f"index (non_tensor_batch['uid'])[{position}] is {kind.__name__} {values[position]!r}; group ids must be "
                "strings, ints or UUIDs"
            )
        kinds.add("int" if issubclass(kind, (int, np.integer)) else kind.__name__)
    if len(kinds) > 1:
        raise TypeError(
            f"index (non_tensor_batch['uid']) mixes id types {sorted(kinds)}; use one type, since 1 and '1' would "
            "otherwise read as different groups"
        )


# --------------------------------------------------------------------------- the hook

_DATA = contextvars.ContextVar("multireward_verl_batch", default=None)
_PATCH = {"count": 0, "original": None, "wrapper": None}


def _batch_in_progress(n_rollouts: int, mode: str):
    data = _DATA.get()
    if data is None:
        raise ValueError(
            f"{PREFIX}{mode} needs the reward components, which verl 0.9.1 passes only to 'gdpo': apply "
            "multireward_grpo.integrations.verl.patch_compute_advantage() in the process that runs the trainer "
            "(see the module docstring), or pass non_tensor_batch="
        )
    if len(data) != n_rollouts:
        raise ValueError(f"the batch being computed has {len(data)} rollouts but token_level_rewards has {n_rollouts}")
    return data.non_tensor_batch


def _make_wrapper(original: Callable) -> Callable:
    @functools.wraps(original)
    def compute_advantage(*args, **kwargs):
        data = args[0] if args else kwargs.get("data")
        token = _DATA.set(data)
        try:
            return original(*args, **kwargs)
        finally:
            _DATA.reset(token)

    return compute_advantage


def _rebind(old: Callable, new: Callable) -> None:
    """Point every loaded module's ``compute_advantage`` that is ``old`` at ``new``."""
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        # Read the namespace, not getattr: a lazy module's __getattr__ could import things.
        if isinstance(namespace, dict) and namespace.get("compute_advantage") is old:
            namespace["compute_advantage"] = new


class PatchHandle:
    """Undoes one :func:`patch_compute_advantage`; also a context manager."""

    def __init__(self):
        self.active = True

    def undo(self) -> None:
        """Drop this patch; verl's function comes back when the last one is dropped (idempotent)."""
        with _LOCK:
            if not self.active:
                return
            self.active = False
            _PATCH["count"] -= 1
            if _PATCH["count"] == 0:
                _rebind(_PATCH["wrapper"], _PATCH["original"])
                _PATCH["original"] = _PATCH["wrapper"] = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.undo()


def patch_compute_advantage() -> PatchHandle:
    """Let verl's ``compute_advantage`` hand its batch to our estimators (see the module docstring).

    Returns
    -------
    handle : PatchHandle
        ``handle.undo()`` (or leaving ``with``) removes this patch.
    """
    _check_verl_version()
    ray_trainer = _import_verl("verl.trainer.ppo.ray_trainer")
    with _LOCK:
        if _PATCH["count"] == 0:
            original = ray_trainer.compute_advantage
            _PATCH["original"], _PATCH["wrapper"] = original, _make_wrapper(original)
            _rebind(original, _PATCH["wrapper"])
        _PATCH["count"] += 1
    return PatchHandle()
