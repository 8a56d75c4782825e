"""Model sharding for GRPOTrainer: FSDP2 (torch's ``fully_shard``), set up from the Accelerate config that launched the run.

``accelerate launch --config_file examples/accelerate/fsdp.yaml -m multireward_grpo train ...``
shards the parameters, gradients and optimizer state of the policy (and of
the frozen reference of a full fine-tuning run) over the processes, for
models whose training state does not fit on one device. Accelerate's
launcher only announces the config in the environment (``ACCELERATE_USE_FSDP``,
``FSDP_*``); :func:`fsdp_settings` reads it and the trainer shards the model
itself with ``torch.distributed.fsdp.fully_shard``. What happens, and why:

* **Loading.** Every process loads the model on CPU, adds the LoRA adapter,
  then shards each decoder layer (the model's ``_no_split_modules``, or
  ``fsdp_transformer_layer_cls_to_wrap``) and the whole model on a 1-D mesh
  of all processes; ``fully_shard`` moves each shard to its process's
  device. Every process's parameters and buffers are then set to rank 0's,
  so the run starts from identical weights, as on the data-parallel path,
  and a model left empty (meta device) on ranks > 0, as rank-0-only loading
  (``fsdp_cpu_ram_efficient_loading``) does in transformers versions that
  implement it, is filled in.
* **No-grad passes on gathered weights.** Sampling, evaluation and the
  reference and old log-probs run inside :func:`gathered`: every sharded
  module is all-gathered once before the pass and resharded after it, and no
  collective runs inside, so processes may make different numbers of forward
  calls (a batch whose completions all end early, an uneven share of eval
  prompts). Cost: the whole model, in its dtype, on every process during
  these passes; gradients and optimizer state stay sharded.
* **Training.** Each micro-batch's forward and backward gather layer by layer
  (resharding after the forward when ``fsdp_reshard_after_forward`` is true).
  Gradients are reduce-scattered as plain sums (divide factor 1, sum-only
  collectives): the loss is already divided by the global batch's
  denominators, so the sum over processes is the single-process gradient.
  They are reduced on the last micro-batch of each update only; the inner
  micro-batches accumulate locally, as without sharding (so each process
  holds a full, unsharded gradient of the trainable weights until then). The
  prompt cache is not shared in this pass (see
  :func:`multireward_grpo.train.rollout.micro_logprobs`): FSDP gathers a
  layer again for the backward through the layer's outputs only.
* **Clipping and the step.** The gradient norm is the global norm over all
  shards; AdamW updates each process's shard.
* **Saving.** Weights and optimizer state are gathered into full tensors (one
  collective per tensor, the same order on every process) and the main
  process writes them in the single-process format, so a checkpoint written
  under FSDP resumes on one process, data-parallel, or sharded over another
  number of processes.

Not supported (refused with what to set instead): FSDP version 1, parameter
offloading to CPU, FSDP's own activation checkpointing (use the trainer's
``gradient_checkpointing``), and size-based wrapping. Accelerate's
``mixed_precision`` is not read here: the trainer's ``dtype`` decides, as on
the data-parallel path. DeepSpeed ZeRO is not supported by this trainer: its
engine takes over the backward pass and the optimizer step; run the TRL
integration under a DeepSpeed config.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "FSDPSettings",
    "fsdp_launch_environment",
    "fsdp_settings",
    "full_optimizer_state",
    "full_state_dict",
    "gathered",
    "shard_model",
    "sharded_optimizer_state",
]

from multireward_grpo.train.distributed import _TRUE

_WRAP_POLICIES = ("TRANSFORMER_BASED_WRAP", "NO_WRAP")
_REFUSED_FLAGS = {
    "FSDP_OFFLOAD_PARAMS": ("set fsdp_offload_params: false (GRPOTrainer keeps its shards on the devices; a LoRA "
                            "adapter, gradient_checkpointing or more processes cut memory instead)"),
    "FSDP_ACTIVATION_CHECKPOINTING": ("set fsdp_activation_checkpointing: false and turn on the trainer's "
                                      "gradient_checkpointing (CLI: --gradient-checkpointing)"),
}
"""FSDP options the trainer refuses when true, and what to set instead."""


@dataclass(frozen=True)
class FSDPSettings:
    """What an Accelerate FSDP config asks of the trainer."""

    reshard_after_forward: bool = True
    """Free each decoder layer's gathered weights after its forward in training (``fsdp_reshard_after_forward``):
    less memory, one more all-gather per layer in the backward."""
    wrap_layers: bool = True
    """Shard each decoder layer on its own (``TRANSFORMER_BASED_WRAP``); False (``NO_WRAP``) shards the whole model
    as one unit, so a forward gathers all of it at once."""
    layer_classes: tuple[str, ...] = ()
    """Class names of the layers to shard on their own (``fsdp_transformer_layer_cls_to_wrap``); empty: the
    model's ``_no_split_modules``."""
    rank0_loads: bool = False
    """``fsdp_cpu_ram_efficient_loading``: ranks > 0 may hold an empty (meta) model until sharding gives them rank 0's
    weights. The trainer accepts such a model either way; transformers decides whether it skips reading the weights
    on ranks > 0 (5.24 reads them on every rank and only leaves the missing keys empty)."""


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    text = environ.get(name)
    return default if text is None else text.strip().lower() in _TRUE


def fsdp_settings(environ: Mapping[str, str] | None = None) -> FSDPSettings | None:
    """The FSDP settings an ``accelerate launch`` announced in ``environ`` (default ``os.environ``); None without FSDP.

    Raises
    ------
    ValueError
        An FSDP option this trainer does not support, naming what to set instead.
    """
    env = os.environ if environ is None else environ
    if not _flag(env, "ACCELERATE_USE_FSDP", False):
        return None
    version = env.get("FSDP_VERSION", "1").strip()
    if version != "2":
        raise ValueError(f"the Accelerate config asks for FSDP version {version}, but GRPOTrainer shards with FSDP2 "
                         "(torch's fully_shard): set fsdp_version: 2 under fsdp_config")
    for name, fix in _REFUSED_FLAGS.items():
        if _flag(env, name, False):
            raise ValueError(f"the Accelerate config sets {name.lower()} to true, which GRPOTrainer does not support: "
                             f"{fix}")
    policy = env.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP").strip().upper()
    if policy not in _WRAP_POLICIES:
        raise ValueError(f"fsdp_auto_wrap_policy {policy} is not supported by GRPOTrainer: set it to "
                         "TRANSFORMER_BASED_WRAP (one shard unit per decoder layer) or NO_WRAP")
    classes = tuple(c.strip() for c in env.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "").split(",") if c.strip())
    return FSDPSettings(reshard_after_forward=_flag(env, "FSDP_RESHARD_AFTER_FORWARD", True),
                        wrap_layers=policy == "TRANSFORMER_BASED_WRAP", layer_classes=classes,
                        rank0_loads=_flag(env, "FSDP_CPU_RAM_EFFICIENT_LOADING", False))


def fsdp_launch_environment(config_file: str | os.PathLike) -> dict[str, str]:
    """The FSDP variables ``accelerate launch --config_file config_file`` sets, derived by Accelerate's own launcher.

    For starting the processes some other way under an Accelerate FSDP config:
    ``accelerate launch --cpu`` drops FSDP (and starts one process), so
    multi-process CPU runs (tests, benchmarks) use ``torchrun`` with these
    variables added to the environment.

    Returns
    -------
    dict
        ``ACCELERATE_USE_FSDP`` and the ``FSDP_*`` variables.
    """
    from accelerate.commands.launch import (
        _validate_launch_command,
        launch_command_parser,
    )
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", os.fspath(config_file), "script.py"])
    env = prepare_multi_gpu_env(_validate_launch_command(args)[0])
    if env.get("ACCELERATE_USE_FSDP") != "true":
        raise ValueError(f"{config_file} is not an FSDP config (distributed_type: FSDP)")
    return {k: v for k, v in env.items() if k.startswith("FSDP_") or k == "ACCELERATE_USE_FSDP"}


def _layer_classes(model, settings: FSDPSettings) -> tuple[type, ...]:
    """The module classes sharded on their own, found by name in ``model``."""
    if not settings.wrap_layers:
        return ()
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = settings.layer_classes or tuple(getattr(inner, "_no_split_modules", None) or ())
    if not names:
        raise ValueError(f"{type(inner).__name__} names no decoder layer class (_no_split_modules is empty): set "
                         "fsdp_transformer_layer_cls_to_wrap in the Accelerate config (e.g. LlamaDecoderLayer), or "
                         "fsdp_auto_wrap_policy: NO_WRAP")
    found = {type(m).__name__: type(m) for m in model.modules()}
    missing = [n for n in names if n not in found]
    if missing:
        candidates = sorted(n for n in found if "Layer" in n or "Block" in n)
        raise ValueError(f"fsdp_transformer_layer_cls_to_wrap names {', '.join(missing)}, which {type(inner).__name__} "
                         f"does not contain; its layer classes: {', '.join(candidates) or 'none found'}")
    return tuple(found[n] for n in names)


def shard_model(model, settings: FSDPSettings, device, *, rank: int):
    """Shard ``model`` in place over all processes and give every process rank 0's weights and buffers.

    Parameters
    ----------
    model : torch.nn.Module
        On CPU (or empty, on the meta device, on ranks > 0).
    settings : FSDPSettings
    device : torch.device
        This process's device; the shards go there.
    rank : int
        This process's rank (rank 0's weights are broadcast).

    Returns
    -------
    torch.nn.Module
        ``model``, now an FSDP module.
    """
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
    )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    full = dict(model.state_dict()) if rank == 0 else {}  # rank 0's weights, referenced before fully_shard swaps them
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    layers = _layer_classes(model, settings)
    for module in [m for m in model.modules() if layers and isinstance(m, layers)]:
        fully_shard(module, mesh=mesh, reshard_after_forward=settings.reshard_after_forward)
    fully_shard(model, mesh=mesh, reshard_after_forward=False)  # the root is gathered at once in every forward anyway
    for module in _fsdp_modules(model):
        module.set_gradient_divide_factor(1.0)  # the loss is normalized globally: reduce to the plain sum
        module.set_force_sum_reduction_for_comms(True)  # a SUM collective (gloo has no pre-multiplied sum)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        model.to_empty(device=device)  # placeholders for what rank 0 sends
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    del full
    with torch.no_grad():
        for buffer in model.buffers():  # non-persistent buffers (rotary tables) are not in the state dict
            dist.broadcast(buffer, src=0)
    return model


def _fsdp_modules(model) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(model, settings: FSDPSettings):
    """Run no-grad passes on ``model``'s full weights: one all-gather before, none inside, reshard after.

    Every process must enter and leave it together (the gather and the
    reshard are collective); inside, each may call the model any number of times.
    """
    modules = _fsdp_modules(model)
    for module in modules:
        module.set_reshard_after_forward(False, recurse=False)
    for module in modules:
        module.unshard()
    try:
        yield model
    finally:
        for module in modules:
            module.reshard()
            module.set_reshard_after_forward(settings.reshard_after_forward and module is not model, recurse=False)


def _full(value):
    """A DTensor gathered into a full CPU tensor (collective); anything else as it is."""
    if hasattr(value, "full_tensor"):
        return value.full_tensor().cpu()
    return value


def full_state_dict(model) -> dict:
    """``model.state_dict()`` with every sharded tensor gathered (collective; every process gets it).

    A tensor listed under several names (tied embeddings) is gathered once and
    stays one tensor, so ``save_pretrained`` still sees the tie.
    """
    owners = dict(model.named_parameters(remove_duplicate=False))  # a tied weight: one parameter, two names
    gathered_by_owner: dict[int, object] = {}
    out = {}
    for name, value in model.state_dict().items():
        owner = id(owners.get(name, value))
        if owner not in gathered_by_owner:
            gathered_by_owner[owner] = _full(value)
        out[name] = gathered_by_owner[owner]
    return out


def full_optimizer_state(optimizer) -> dict:
    """``optimizer.state_dict()`` in the single-process format, the sharded state gathered (collective)."""
    state = optimizer.state_dict()
    return {"state": {index: {key: _full(value) for key, value in entry.items()}
                      for index, entry in state["state"].items()},
            "param_groups": state["param_groups"]}


def sharded_optimizer_state(optimizer, state: dict) -> dict:
    """A single-process optimizer ``state`` (full tensors) cut to this process's shards of the optimizer's parameters.

    Every process holds the same ``state`` (read from the same file), so each
    takes its own slice without communication.
    """
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    out = {}
    for index, entry in state["state"].items():
        param = params[int(index)] if int(index) < len(params) else None
        out[index] = {key: distribute_tensor(value.to(param.device), param.device_mesh, param.placements,
                                             src_data_rank=None)
                      if isinstance(param, DTensor) and hasattr(value, "shape") and value.shape == param.shape
                      else value
                      for key, value in entry.items()}
    return {"state": out, "param_groups": state["param_groups"]}
