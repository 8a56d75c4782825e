"""Multi-reward GRPO: advantage estimators, the theory harness and a trainer.

``import multireward_grpo`` loads numpy and scipy only. Heavy features (the
trainer, plots, real-model generation) import their dependencies when used.
"""

from importlib import metadata as _metadata

from multireward_grpo.advantage import (
    Conditioning,
    EstimatorOptions,
    apply_conditioning,
    compute_advantage,
    compute_advantage_batch,
    compute_advantage_flat,
    get_estimator,
    group_standardize,
    list_estimators,
    register_estimator,
    unregister_estimator,
)

try:
    __version__ = _metadata.version("multireward-grpo")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Conditioning",
    "EstimatorOptions",
    "__version__",
    "apply_conditioning",
    "compute_advantage",
    "compute_advantage_batch",
    "compute_advantage_flat",
    "get_estimator",
    "group_standardize",
    "list_estimators",
    "register_estimator",
    "unregister_estimator",
]
