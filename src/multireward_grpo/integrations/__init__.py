"""Our estimators, conditioning and channel diagnostics inside other RL engines.

Users who already train with TRL or verl keep their engine (its multi-GPU,
vLLM and Ray machinery) and plug in the multi-reward layer. Each integration
is a thin adapter over :mod:`multireward_grpo.advantage` and
:mod:`multireward_grpo.analysis.diagnostics`, in its own submodule, which
imports its engine when it is itself imported; importing this package loads
neither engine.

:mod:`multireward_grpo.integrations.trl` (``pip install "multireward-grpo[trl]"``)
    ``MultiRewardGRPOTrainer``, a subclass of ``trl.GRPOTrainer`` that takes
    TRL's arguments unchanged plus ``estimator=``, ``conditioning=``,
    ``nan_policy=``, ``ddof=``, ``eps=``, ``scale_by_std=`` and
    ``rollout_log=``: the reward functions are the channels, TRL's
    ``reward_weights`` the weights. It recomputes the advantages with our
    registry over TRL's gathered batch, logs per-channel diagnostics into
    TRL's metrics, and can append every group's rewards to a rollout table
    for ``multireward-grpo analyze``.
:mod:`multireward_grpo.integrations.verl`
    (``pip install "multireward-grpo[verl]"``, then verl itself) our
    estimators in verl's advantage-estimator registry as ``mr_na``,
    ``mr_an``, ``mr_single``, ``mr_gdpo`` (and ``mr_<name>`` for any
    estimator registered with us), reading the per-reward components the way
    verl's own GDPO does, plus the small hook that makes verl pass them; the
    module docstring holds the Hydra recipe.
"""

__all__: list[str] = []
