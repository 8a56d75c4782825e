"""The processes of a data-parallel run: one, or several started by ``accelerate launch`` or ``torchrun``.

How the trainer splits a step over ``N`` processes (ranks):

* Every rank draws the same ``batch_prompts`` prompts (the prompt sampler is
  global state) and takes a contiguous share of them, ``batch_prompts / N``
  prompts with all ``m`` completions each: **a group is never split across
  ranks**, so a rank samples and scores whole groups. ``batch_prompts`` must
  be a multiple of ``N``; other values are refused with the values that work.
* Each row's sampling is seeded from ``(seed, step, position of its prompt in
  the step's batch, row in the group)``, so what is sampled does not depend on
  the number of ranks.
* The rewards of all ranks are gathered and every rank computes the
  advantages of the whole batch (exact for batch-level estimators such as
  ``gdpo``) and the step's metrics from them, so the history is the same on
  every rank and equals a single-process run's.
* The loss of each rank is divided by the denominators of the global batch
  (completions, completion tokens, summed over ranks), so the sum of the
  ranks' gradients is the single-process gradient; gradients are summed across
  ranks once per optimizer update, after all micro-batches (no traffic on the
  inner micro-batches), and every rank takes the same AdamW step, so the
  weights stay identical.
* Only the main process writes files (history, samples, evaluations, plots,
  checkpoints, the final model); the others wait at a barrier where it
  matters. Checkpoints hold global state, so a run resumes on any number of
  ranks that divides ``batch_prompts`` (the output folder must be on a file
  system every rank sees).

Under an Accelerate FSDP config (``examples/accelerate/fsdp.yaml``) the
same step runs on a model sharded over the ranks (parameters, gradients and
optimizer state): see :mod:`multireward_grpo.train.sharding`. A DeepSpeed
config is refused: DeepSpeed's engine takes over the backward pass and the
optimizer step; run the TRL integration
(:mod:`multireward_grpo.integrations.trl`) under it instead.

In one process (no launcher) nothing here imports torch.distributed or
Accelerate, and every collective is the identity.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Sequence

__all__ = ["Processes", "current_processes", "share_of"]
GRAD_BUCKET_ELEMENTS = 1 << 24
"""Gradient elements summed across ranks per collective call (16 Mi: 64 MiB of float32 buffer at most)."""

_TRUE = ("1", "true", "yes", "on")


def share_of(n_items: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous share of ``n_items`` (the first ``n_items % world_size`` ranks get one more)."""
    base, extra = divmod(n_items, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


class Processes:
    """One process: rank 0 of 1; every collective is the identity.

    The multi-process subclass (:func:`current_processes` makes it) runs the
    same methods as collectives over ``torch.distributed``.
    """

    rank = 0
    world_size = 1
    device = None
    """The launcher's device for this process (None in one process: the config decides)."""

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process gets here."""

    def sum_floats(self, values: Sequence[float]) -> list[float]:
        """Each value summed over the processes (float64)."""
        return [float(v) for v in values]

    def max_floats(self, values: Sequence[float]) -> list[float]:
        """Each value's maximum over the processes."""
        return [float(v) for v in values]

    def gather(self, obj: Any) -> list:
        """``[obj of rank 0, obj of rank 1, ...]`` on every process (small picklable objects)."""
        return [obj]

    def sum_gradients(self, params) -> None:
        """Replace each parameter's gradient by its sum over the processes (a missing gradient counts as 0)."""

    sharded = False
    """True when the model is sharded over the processes (FSDP)."""

    def load_device(self, device):
        """Where to load the model before :meth:`prepare_model` (the run's device; CPU when sharding moves it)."""
        return device

    def prepare_model(self, model):
        """The model every process trains: rank 0's weights on every process (sharded under FSDP)."""
        return model

    def inference(self, model):
        """Context for no-grad passes (sampling, log-probs) on ``model``; under FSDP its weights are gathered."""
        return contextlib.nullcontext(model)

    def before_backward(self, model, last: bool) -> None:
        """Called before each micro-batch's backward; ``last`` marks an update's final micro-batch."""

    def full_weights(self, model) -> dict | None:
        """``model``'s full state dict for saving (collective under FSDP); None: read the model itself."""
        return None

    def full_optimizer_state(self, optimizer) -> dict | None:
        """The optimizer state in the single-process format (collective under FSDP); None: read the optimizer."""
        return None

    def local_optimizer_state(self, optimizer, state: dict) -> dict:
        """A saved single-process optimizer ``state`` as this process's optimizer loads it (its shards under FSDP)."""
        return state

    def batch_share(self, batch_prompts: int) -> slice:
        """This process's prompts of a step: a contiguous, whole-group share of the ``batch_prompts``."""
        return slice(0, batch_prompts)

    def items_share(self, n_items: int) -> slice:
        """This process's contiguous share of ``n_items`` (uneven shares allowed, e.g. eval prompts)."""
        return slice(0, n_items)


class _ManyProcesses(Processes):
    """Collectives over ``torch.distributed`` (gloo on CPU, nccl on GPUs), set up by Accelerate."""

    def __init__(self, state):
        self.state = state
        self.rank, self.world_size = state.process_index, state.num_processes
        self.device = state.device

    def barrier(self) -> None:
        self.state.wait_for_everyone()

    def _reduce(self, values, op) -> list[float]:
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=op)
        return tensor.tolist()

    def sum_floats(self, values):
        import torch.distributed as dist

        return self._reduce(values, dist.ReduceOp.SUM)

    def max_floats(self, values):
        import torch.distributed as dist

        return self._reduce(values, dist.ReduceOp.MAX)

    def gather(self, obj):
        import torch.distributed as dist

        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def sum_gradients(self, params) -> None:
        import torch
        import torch.distributed as dist

        params = list(params)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        for bucket in _buckets(params, GRAD_BUCKET_ELEMENTS):
            grads = [p.grad for p in bucket]
            flat = torch._utils._flatten_dense_tensors(grads)
            dist.all_reduce(flat)
            for grad, summed in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
                grad.copy_(summed)

    def prepare_model(self, model):
        import torch
        import torch.distributed as dist

        with torch.no_grad():  # every process holds the whole model: give it rank 0's
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor.data, src=0)
        return model

    def batch_share(self, batch_prompts: int) -> slice:
        check_batch_split(batch_prompts, self.world_size)
        return share_of(batch_prompts, self.rank, self.world_size)

    def items_share(self, n_items: int) -> slice:
        return share_of(n_items, self.rank, self.world_size)


class _ShardedProcesses(_ManyProcesses):
    """The processes of an FSDP run: the model is sharded (see :mod:`multireward_grpo.train.sharding`)."""

    sharded = True

    def __init__(self, state, settings):
        super().__init__(state)
        self.settings = settings

    def load_device(self, device):
        import torch

        return torch.device("cpu")  # fully_shard moves each shard to this process's device

    def prepare_model(self, model):
        from multireward_grpo.train.sharding import shard_model

        return shard_model(model, self.settings, self.device, rank=self.rank)

    def inference(self, model):
        from multireward_grpo.train.sharding import gathered

        return gathered(model, self.settings)

    def before_backward(self, model, last: bool) -> None:
        model.set_requires_gradient_sync(last)  # reduce-scatter once per update, on its final micro-batch

    def sum_gradients(self, params) -> None:
        """Nothing left to do: FSDP summed the gradients into the shards in the update's final backward."""

    def full_weights(self, model):
        from multireward_grpo.train.sharding import full_state_dict

        return full_state_dict(model)

    def full_optimizer_state(self, optimizer):
        from multireward_grpo.train.sharding import full_optimizer_state

        return full_optimizer_state(optimizer)

    def local_optimizer_state(self, optimizer, state):
        from multireward_grpo.train.sharding import sharded_optimizer_state

        return sharded_optimizer_state(optimizer, state)


def _buckets(params, limit: int):
    """Consecutive groups of parameters of at most ``limit`` elements each (one oversized parameter alone)."""
    bucket, size = [], 0
    for p in params:
        if bucket and size + p.numel() > limit:
            yield bucket
            bucket, size = [], 0
        bucket.append(p)
        size += p.numel()
    if bucket:
        yield bucket


def check_batch_split(batch_prompts: int, world_size: int) -> None:
    """Refuse a ``batch_prompts`` that ``world_size`` processes cannot share in whole, equal groups."""
    if batch_prompts % world_size == 0:
        return
    lower = batch_prompts - batch_prompts % world_size
    options = [v for v in (lower, lower + world_size) if v > 0]
    divisors = [d for d in range(1, batch_prompts + 1) if batch_prompts % d == 0]
    raise ValueError(
        f"batch_prompts={batch_prompts} cannot be split over {world_size} processes: each process takes whole "
        f"prompt groups, an equal share each. Set batch_prompts to a multiple of {world_size} "
        f"(e.g. {' or '.join(map(str, options))}), or launch {' or '.join(map(str, divisors))} processes")


def _launched_processes() -> int:
    """The world size a launcher (``accelerate launch``, ``torchrun``) announced in the environment (1 without)."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"WORLD_SIZE={text!r} in the environment is not an integer; unset it or fix the "
                         "launcher") from None


def _refuse_deepspeed() -> None:
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in _TRUE:
        raise ValueError(
            "the Accelerate config asks for DeepSpeed, which GRPOTrainer does not run (DeepSpeed's engine takes over "
            "the backward pass and the optimizer step): shard the model with an FSDP config "
            "(examples/accelerate/fsdp.yaml), train data-parallel with examples/accelerate/ddp.yaml, or run the TRL "
            "integration (multireward_grpo.integrations.trl) under the DeepSpeed config")


def current_processes(device: str = "auto") -> Processes:
    """The processes of this run: one, unless a launcher started several.

    Parameters
    ----------
    device : str
        The config's device: ``cpu`` (or no CUDA) runs the processes on CPU
        with the gloo backend; otherwise each takes the GPU of its local rank
        (nccl).

    Returns
    -------
    Processes
        Rank, world size, this process's device and the collectives.

    Raises
    ------
    ValueError
        A DeepSpeed config, an FSDP option this trainer does not support, or a malformed ``WORLD_SIZE``.
    """
    if _launched_processes() <= 1:
        return Processes()
    _refuse_deepspeed()
    from multireward_grpo.train.sharding import fsdp_settings

    settings = fsdp_settings()
    import torch
    from accelerate import PartialState

    cpu = device == "cpu" or device == "mps" or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    if state.num_processes <= 1:
        return Processes()
    return _ManyProcesses(state) if settings is None else _ShardedProcesses(state, settings)
