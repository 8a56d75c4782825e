"""Multi-reward GRPO: advantage estimators, the theory harness and a trainer.

``import multireward_grpo`` loads numpy and scipy only. Heavy features (the
trainer, plots, real-model generation) import their dependencies when used.
"""

from importlib import metadata as _metadata

from multireward_grpo._lazy import lazy_attributes
from multireward_grpo.advantage import (
    Conditioning,
    EstimatorOptions,
    apply_conditioning,
    compute_advantage,
    compute_advantage_batch,
    compute_advantage_flat,
    get_estimator,
    group_standardize,
    is_batch_level,
    list_estimators,
    register_estimator,
    unregister_estimator,
)

# Names resolved on first use, so the import stays light and optional
# dependencies load only with the feature that needs them.
_LAZY = {
    "Thm3Result": "multireward_grpo.analysis.thm3",
    "analyze": "multireward_grpo.analysis.thm3",
    "summary_print": "multireward_grpo.report",
    "format_summary": "multireward_grpo.report",
    "MockBackend": "multireward_grpo.generation",
    "run_corpus": "multireward_grpo.generation",
    "pack_for_analysis": "multireward_grpo.generation",
    "save_corpus": "multireward_grpo.generation",
    "load_corpus": "multireward_grpo.generation",
    "plot_money_scatter": "multireward_grpo.viz",
    "load_rollouts": "multireward_grpo.generation",
    "HFBackend": "multireward_grpo.generation",
    "QwenBackend": "multireward_grpo.generation",
    "RewardFunction": "multireward_grpo.rewards",
    "RewardConfig": "multireward_grpo.rewards",
    "MathRewardFunction": "multireward_grpo.rewards",
    "score_generation": "multireward_grpo.rewards",
    "as_reward_function": "multireward_grpo.rewards",
    "from_trl_reward_funcs": "multireward_grpo.rewards",
    "channel_diagnostics": "multireward_grpo.analysis.diagnostics",
    "GRPOConfig": "multireward_grpo.train",
    "GRPOTrainer": "multireward_grpo.train",
    "train_grpo": "multireward_grpo.train",
}


__getattr__, __dir__ = lazy_attributes("multireward_grpo", _LAZY, globals())


try:
    __version__ = _metadata.version("multireward-grpo")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    *_LAZY,
    "Conditioning",
    "EstimatorOptions",
    "__version__",
    "apply_conditioning",
    "compute_advantage",
    "compute_advantage_batch",
    "compute_advantage_flat",
    "get_estimator",
    "group_standardize",
    "is_batch_level",
    "list_estimators",
    "register_estimator",
    "unregister_estimator",
]
