"""The theory harness (math layer): Theorem 3 and Props 1, 2 and 4.

Submodules load numpy (and scipy) only; plots live in :mod:`multireward_grpo.viz`
and text reports in :mod:`multireward_grpo.report`.
"""

from multireward_grpo.analysis.thm3 import (
    Thm3Result,
    analyze,
    fisher_expected_correlation,
    predicted_mse_population,
)

__all__ = ["Thm3Result", "analyze", "fisher_expected_correlation", "predicted_mse_population"]
