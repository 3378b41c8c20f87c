"""The critic-free policy-gradient algorithms: their advantage is the registered estimator's, unchanged.

    grpo       G_t against the group's per-task baseline, divided by the group std (Shao et al. 2024)
    rloo       G_t against the leave-one-out mean of the other rollouts of the task (Ahmadian et al. 2024)
    reinforce  G_t against the batch mean, divided by the batch std: every rollout of the step is
               one group (REINFORCE with a whitened batch baseline; no value function, so not PPO,
               although the loss is PPO-clipped like every algorithm's here)

The formulas are in trainers/advantages.py and trainers/objectives.py.
"""

from __future__ import annotations

from typing import ClassVar

from agentgym.trainers.algorithms.base import Algorithm

__all__ = ["GRPO", "RLOO", "Reinforce"]


class GRPO(Algorithm):
    """Group-relative baselines per task, std-normalised."""

    name: ClassVar[str] = "grpo"
    summary: ClassVar[str] = "group-relative baseline per task (no critic)"
    estimator: ClassVar[str] = "grpo"


class RLOO(Algorithm):
    """Leave-one-out baselines per task; never divided by a std."""

    name: ClassVar[str] = "rloo"
    summary: ClassVar[str] = "leave-one-out baseline per task (no critic)"
    estimator: ClassVar[str] = "rloo"
    uses_std: ClassVar[bool] = False


class Reinforce(Algorithm):
    """One baseline for the whole batch (its mean, divided by its std)."""

    name: ClassVar[str] = "reinforce"
    summary: ClassVar[str] = "batch-whitened returns, one baseline for all rollouts (no critic)"
    estimator: ClassVar[str] = "grpo"
    one_group: ClassVar[bool] = True
    grouped: ClassVar[bool] = False
