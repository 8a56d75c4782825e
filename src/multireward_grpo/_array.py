"""A minimal array namespace so one implementation serves numpy and torch.

The estimators are written once against the handful of operations below.
numpy arrays get numpy; torch tensors get torch, on their own device and dtype,
with no host copy. torch is never imported here: a tensor is recognised by the
module its type comes from, so ``import multireward_grpo`` stays light.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import Any, NamedTuple

import numpy as np

__all__ = ["FloatLimits", "as_float_array", "is_torch", "namespace"]


class FloatLimits(NamedTuple):
    """The range of a float dtype, as the rescaling of group statistics needs it."""

    minexp: int
    """Exponent of the smallest normal number: ``tiny == 2.0**minexp``."""
    maxexp: int
    """``2.0**maxexp`` is the first power of two that overflows."""
    max: float
    smallest_subnormal: float
    eps: float
    """Machine epsilon (spacing of the numbers just above 1)."""


def is_torch(x: Any) -> bool:
    """True when ``x`` is a torch tensor (checked without importing torch)."""
    return type(x).__module__.startswith("torch") and "torch" in sys.modules


@functools.cache
def _numpy_limits(dtype) -> FloatLimits:
    info = np.finfo(dtype)
    return FloatLimits(int(info.minexp), int(info.maxexp), float(info.max), float(info.smallest_subnormal), float(info.eps))


class _NumpyOps:
    """Array operations for numpy inputs."""

    name = "numpy"
    nan = np.nan

    @staticmethod
    def einsum(spec, *operands):
        return np.einsum(spec, *operands)

    @staticmethod
    def sum(x, axis=None, keepdims=False):
        return np.sum(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def sqrt(x):
        return np.sqrt(x)

    @staticmethod
    def where(cond, a, b):
        return np.where(cond, a, b)

    @staticmethod
    def isnan(x):
        return np.isnan(x)

    @staticmethod
    def isfinite(x):
        return np.isfinite(x)

    @staticmethod
    def first_true(mask, axis):
        """Index of the first True along ``axis`` (0 where none), keepdims."""
        return np.argmax(mask, axis=axis, keepdims=True)

    @staticmethod
    def take_along(x, idx, axis):
        return np.take_along_axis(x, idx, axis=axis)

    @staticmethod
    def like(x, values):
        """``values`` as an array with the dtype (and device) of ``x``."""
        return np.asarray(values, dtype=x.dtype)

    @staticmethod
    def cast(x, like):
        """``x`` (e.g. a bool mask) converted to the dtype of ``like``."""
        return x.astype(like.dtype)

    @staticmethod
    def zeros(shape, like):
        return np.zeros(shape, dtype=like.dtype)

    @staticmethod
    def full(shape, value, like):
        return np.full(shape, value, dtype=like.dtype)

    @staticmethod
    def to_numpy(x):
        return np.asarray(x)

    @staticmethod
    def index(values, like):
        return np.asarray(values, dtype=np.intp)

    @staticmethod
    def group_index(ids):
        """(inverse, counts) of the unique values of a 1-D id array."""
        uniq, inverse, counts = np.unique(np.asarray(ids), return_inverse=True, return_counts=True)
        return inverse.reshape(-1), counts

    @staticmethod
    def positions_in_group(inverse, counts):
        """Rank of each element inside its group, in input order."""
        order = np.argsort(inverse, kind="stable")
        starts = np.cumsum(counts) - counts
        pos = np.empty_like(inverse)
        pos[order] = np.arange(inverse.shape[0]) - starts[inverse[order]]
        return pos

    @staticmethod
    def is_nondecreasing(x):
        return bool(np.all(x[1:] >= x[:-1]))

    # -- precision: statistics run in float64, overflow is checked, not warned about

    @staticmethod
    def to_work(x):
        """``x`` in the dtype statistics are computed in: float64 (or wider)."""
        return x if x.dtype.itemsize >= 8 else x.astype(np.float64)

    @staticmethod
    def to_dtype(x, dtype):
        return x.astype(dtype, copy=False)

    @staticmethod
    def limits(x) -> FloatLimits:
        return _numpy_limits(x.dtype)

    @staticmethod
    def dtype_max(dtype) -> float:
        return float(np.finfo(dtype).max)

    @staticmethod
    def quiet():
        """Silence overflow/invalid warnings: callers check results for finiteness instead."""
        return np.errstate(over="ignore", invalid="ignore", under="ignore")

    @staticmethod
    def all_finite(x) -> bool:
        """True when no element is NaN or infinite."""
        if x.size > 65536:
            # A finite sum proves every term finite, in one reduction without a
            # temporary; only a sum that overflows needs the elementwise check.
            with np.errstate(over="ignore", invalid="ignore"):
                if np.isfinite(np.add.reduce(x, axis=None)):
                    return True
        return bool(np.isfinite(x).all())

    @staticmethod
    def any(x) -> bool:
        return bool(np.asarray(x).any())

    @staticmethod
    def isinf(x):
        return np.isinf(x)

    @staticmethod
    def abs(x):
        return np.abs(x)

    @staticmethod
    def max_abs(x, axis):
        """max |x| along ``axis`` (keepdims); NaN where a NaN is present."""
        moved = np.moveaxis(x, axis, 0)
        if moved.shape[0] > 64 or moved.shape[0] == 0:
            return np.expand_dims(np.max(np.abs(moved), axis=0, initial=0.0), axis)
        # A running maximum over the short axis is ~3x faster than np.max(axis=...).
        peak = np.abs(moved[0])
        for slab in moved[1:]:
            np.maximum(peak, np.abs(slab), out=peak)
        return np.expand_dims(peak, axis)

    @staticmethod
    def binary_exponent(x, lowest, highest):
        """``e`` with ``x / 2**e`` in [1, 2), clipped to [lowest, highest]; 0 for 0 and NaN."""
        return np.clip(np.frexp(x)[1] - 1, lowest, highest)

    @staticmethod
    def ldexp(x, exponent):
        """``x * 2**exponent``, exact while the result is a normal number."""
        return np.ldexp(x, exponent)


class _TorchOps:
    """Array operations for torch tensors (device and dtype preserved)."""

    name = "torch"
    nan = float("nan")

    def __init__(self):
        import torch

        self.torch = torch

    def einsum(self, spec, *operands):
        return self.torch.einsum(spec, *operands)

    def sum(self, x, axis=None, keepdims=False):
        if axis is None:
            return self.torch.sum(x)
        return self.torch.sum(x, dim=axis, keepdim=keepdims)

    def sqrt(self, x):
        return self.torch.sqrt(x)

    def where(self, cond, a, b):
        return self.torch.where(cond, a, b)

    def isnan(self, x):
        return self.torch.isnan(x)

    def isfinite(self, x):
        return self.torch.isfinite(x)

    def first_true(self, mask, axis):
        # torch.argmax is undefined on bool; int8 keeps it cheap.
        return self.torch.argmax(mask.to(self.torch.int8), dim=axis, keepdim=True)

    def take_along(self, x, idx, axis):
        return self.torch.take_along_dim(x, idx, dim=axis)

    def like(self, x, values):
        return self.torch.as_tensor(values, dtype=x.dtype, device=x.device)

    def cast(self, x, like):
        return x.to(like.dtype)

    def zeros(self, shape, like):
        return self.torch.zeros(shape, dtype=like.dtype, device=like.device)

    def full(self, shape, value, like):
        return self.torch.full(shape, value, dtype=like.dtype, device=like.device)

    def to_numpy(self, x):
        return x.detach().cpu().numpy()

    def index(self, values, like):
        return self.torch.as_tensor(values, dtype=self.torch.long, device=like.device)

    def group_index(self, ids):
        _, inverse, counts = self.torch.unique(ids, return_inverse=True, return_counts=True)
        return inverse.reshape(-1), counts

    def positions_in_group(self, inverse, counts):
        torch = self.torch
        order = torch.argsort(inverse, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.empty_like(inverse)
        pos[order] = torch.arange(inverse.shape[0], device=inverse.device) - starts[inverse[order]]
        return pos

    def is_nondecreasing(self, x):
        return bool((x[1:] >= x[:-1]).all())

    # -- precision: half types run in float32; torch never warns about overflow

    def to_work(self, x):
        """``x`` in the dtype statistics are computed in: at least float32."""
        return x if x.element_size() >= 4 else x.to(self.torch.float32)

    def to_dtype(self, x, dtype):
        return x.to(dtype)

    def limits(self, x) -> FloatLimits:
        return _torch_limits(x.dtype)

    def dtype_max(self, dtype) -> float:
        return float(self.torch.finfo(dtype).max)

    def quiet(self):
        return contextlib.nullcontext()

    def all_finite(self, x) -> bool:
        if bool(self.torch.isfinite(self.torch.sum(x))):
            return True
        return bool(self.torch.isfinite(x).all())

    def any(self, x) -> bool:
        return bool(x.any())

    def isinf(self, x):
        return self.torch.isinf(x)

    def abs(self, x):
        return self.torch.abs(x)

    def max_abs(self, x, axis):
        return self.torch.abs(x).amax(dim=axis, keepdim=True)

    def binary_exponent(self, x, lowest, highest):
        return self.torch.clamp(self.torch.frexp(x).exponent - 1, lowest, highest)

    def ldexp(self, x, exponent):
        return self.torch.ldexp(x, exponent)


@functools.cache
def _torch_limits(dtype) -> FloatLimits:
    import torch

    info = torch.finfo(dtype)
    return FloatLimits(
        round(math.log2(info.tiny)), math.floor(math.log2(info.max)) + 1, info.max, info.tiny * info.eps, info.eps
    )


_NUMPY = _NumpyOps()
_TORCH: _TorchOps | None = None


def namespace(x: Any):
    """The operations object for ``x`` (numpy or torch)."""
    global _TORCH
    if is_torch(x):
        if _TORCH is None:
            _TORCH = _TorchOps()
        return _TORCH
    return _NUMPY


def as_float_array(x: Any, name: str):
    """``x`` as a floating array of its own kind, never a view that we write to.

    numpy and array-likes become numpy (integers and bools become float64);
    torch tensors stay torch (integers and bools become the default float
    dtype) and keep their device. Anything that is not an array of real
    numbers (None, strings, dicts, sets, ragged lists, complex values) raises
    TypeError naming ``name``.
    """
    if is_torch(x):
        import torch

        if x.is_complex():
            raise TypeError(f"{name} must be real-valued, got a complex tensor")
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        return x.detach()
    if x is None or isinstance(x, (str, bytes, Mapping, AbstractSet)):
        raise TypeError(
            f"{name} must be a real numeric array (an array or nested lists of numbers), got {type(x).__name__}"
        )
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError):  # ragged nested lists
        raise TypeError(
            f"{name} could not be read as a numeric array: its rows do not all have the same length; "
            "pass a rectangular array of numbers (NaN for a missing reward)"
        ) from None
    if arr.dtype.kind in "biu":
        return arr.astype(np.float64)
    if arr.dtype.kind == "f":
        return arr
    if arr.dtype.kind == "O":
        return _object_to_float(arr, name)
    if arr.dtype.kind in "US":
        raise TypeError(f"{name} must be a real numeric array, got strings (dtype {arr.dtype}); convert them to numbers first")
    raise TypeError(
        f"{name} must be a real numeric array, got dtype {arr.dtype}; "
        "convert it with np.asarray(..., dtype=float) first"
    )


def _object_to_float(arr: np.ndarray, name: str) -> np.ndarray:
    """An object array whose entries are all real numbers, as float64."""
    for position, value in np.ndenumerate(arr):
        if not isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
            where = f" at index {position}" if position else ""
            shown = "None" if value is None else f"a {type(value).__name__} ({value!r})"
            raise TypeError(
                f"{name} holds {shown}{where}; every entry must be a number (use float('nan') for a missing reward)"
            )
    return arr.astype(np.float64)
