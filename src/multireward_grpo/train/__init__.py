"""The trainer (engine layer). ``GRPOConfig`` needs only the standard library;
``GRPOTrainer`` loads torch, transformers and peft when constructed."""

from multireward_grpo.train.config import GRPOConfig
from multireward_grpo.train.trainer import GRPOTrainer, train_grpo

__all__ = ["GRPOConfig", "GRPOTrainer", "train_grpo"]
