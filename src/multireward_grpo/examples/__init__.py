"""Worked examples: the fintech customer-communication domain and GSM8K math.

Names load on first use, so ``import multireward_grpo.examples`` stays light.
"""

from multireward_grpo._lazy import lazy_attributes

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


__getattr__, __dir__ = lazy_attributes("multireward_grpo.examples", _LAZY, globals())
