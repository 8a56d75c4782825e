"""Worked examples: the fintech customer-communication domain and GSM8K math.

Names load on first use, so ``import multireward_grpo.examples`` stays light.
"""

_LAZY = {
    "FintechRewardConfig": "multireward_grpo.examples.fintech",
    "FintechRewardFunction": "multireward_grpo.examples.fintech",
    "Scenario": "multireward_grpo.examples.fintech",
    "make_scenarios": "multireward_grpo.examples.fintech",
    "make_fintech_prompts": "multireward_grpo.examples.fintech",
    "make_eval_set": "multireward_grpo.examples.fintech",
    "score_response": "multireward_grpo.examples.fintech",
    "load_gsm8k_prompts": "multireward_grpo.examples.gsm8k",
    "gsm8k_prompts_with_gold": "multireward_grpo.examples.gsm8k",
    "gold_from_answer": "multireward_grpo.examples.gsm8k",
    "SAMPLE_PATH": "multireward_grpo.examples.gsm8k",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'multireward_grpo.examples' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
