"""Rollout generation: backends and rollout corpora.

``import multireward_grpo.generation`` loads numpy and scipy only; pyarrow is
imported when a parquet file is read or written.
"""

from multireward_grpo.generation.corpus import (
    Corpus,
    load_corpus,
    load_long_table,
    pack_for_analysis,
    pack_scores,
    run_corpus,
    save_corpus,
)
from multireward_grpo.generation.datasets import DataUnavailableError, RolloutData, load_rollouts
from multireward_grpo.generation.hf import HFBackend, QwenBackend
from multireward_grpo.generation.mock import Bernoulli, Beta, Gaussian, MockBackend, Uniform

__all__ = [
    "Bernoulli",
    "Beta",
    "Corpus",
    "DataUnavailableError",
    "Gaussian",
    "HFBackend",
    "MockBackend",
    "QwenBackend",
    "RolloutData",
    "Uniform",
    "load_corpus",
    "load_long_table",
    "load_rollouts",
    "pack_for_analysis",
    "pack_scores",
    "run_corpus",
    "save_corpus",
]
