"""What an RL algorithm is to the trainer: how a scored batch becomes turn advantages, and its own state.

The training step reads the same for every algorithm (trainers/loop.py):

    collect → score (reward model, registered estimator) → algorithm.advantages → actor update
            → sync → evaluate → checkpoint (algorithm.save beside the model)

The actor's loss terms (PPO-clip against the rollout logprobs, KL, EPO) are shared
(`trainers.update.policy_gradient_step`); an algorithm decides the advantages they weigh, whether
the actor updates at a step, and anything it trains besides the policy (a critic, its optimiser,
a replay buffer), which it saves into each checkpoint and reads back on `--resume`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch

from agentgym.types import Trajectory

if TYPE_CHECKING:
    from agentgym.trainers.config import TrainConfig
    from agentgym.trainers.policy_model import TrainableModel
    from agentgym.trainers.turn_encoder import TurnEncoder

__all__ = ["Algorithm", "AlgorithmAdvantages", "FrozenFeatureCritic", "critic_advantage_stats", "whiten"]


@dataclass
class AlgorithmAdvantages:
    """The advantages an algorithm gives a batch's turns, with what it measured on the way."""

    advantages: list[list[float]]
    metrics: dict[str, float] = field(default_factory=dict)


class Algorithm:
    """An RL algorithm as the trainer sees it; subclasses register under `name` in trainers.algorithms."""

    name: ClassVar[str]
    summary: ClassVar[str]
    # The advantage estimator (trainers/advantages.py) the scoring step uses when the reward block
    # names none, and how: divided by the std (normalize_std honoured), over the whole batch as one group.
    estimator: ClassVar[str] = "grpo"
    uses_std: ClassVar[bool] = True
    one_group: ClassVar[bool] = False
    # Compares rollouts of the same task: needs samples_per_task >= 2; dynamic sampling applies.
    grouped: ClassVar[bool] = True
    # Trains a critic whose advantages replace the estimator's (written to scores/step-N.<name>.jsonl).
    has_critic: ClassVar[bool] = False

    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)

    def setup(self, trainable: TrainableModel, step: int, checkpoint: Path | None) -> None:
        """Build what the algorithm trains besides the policy; read it back from `checkpoint` on a resume."""

    def advantages(
        self, step: int, trajectories: Sequence[Trajectory], rewards: Sequence[Sequence[float]],
        estimated: Sequence[Sequence[float]],
    ) -> AlgorithmAdvantages:
        """Per-turn advantages of the step's trajectories; `estimated` are the registered estimator's."""
        return AlgorithmAdvantages([list(a) for a in estimated])

    def updates_actor(self, step: int) -> bool:
        """Whether the policy is updated at `step` (0-based); a critic may need steps of its own first."""
        return True

    def save(self, checkpoint_dir: Path) -> None:
        """Write the algorithm's own state into a checkpoint directory being assembled."""

    @classmethod
    def config_errors(cls, cfg: TrainConfig) -> list[str]:
        """What is wrong with a run's config for this algorithm (an empty list: nothing)."""
        errors = []
        if cls.grouped and cfg.samples_per_task < 2:
            errors.append(f"{cls.name} compares rollouts of the same task: samples_per_task must be at least 2")
        if cfg.max_draws > 1 and not cls.grouped:
            errors.append(f"max_draws > 1 keeps the groups whose rollouts disagree; {cls.name} has no groups (use grpo or rloo)")
        return errors


class FrozenFeatureCritic(Algorithm):
    """An algorithm whose turn advantages come from heads over a frozen backbone's turn features (PPO, ArCHer)."""

    estimator: ClassVar[str] = "grpo"  # only for the scoring step's diagnostics: the critic's advantage replaces it
    one_group: ClassVar[bool] = True
    grouped: ClassVar[bool] = False
    has_critic: ClassVar[bool] = True

    def frozen_encoder(self, trainable: TrainableModel, encoder_model: str | None) -> TurnEncoder:
        """The turn encoder on the trainer's device: `encoder_model`, else the run's starting model."""
        from agentgym.trainers.turn_encoder import TurnEncoder

        return TurnEncoder(encoder_model or self.cfg.model, device=str(trainable.device), max_context_tokens=self.cfg.max_length)


def critic_advantage_stats(trajectories: Sequence[Trajectory], values: Sequence[Sequence[float]]) -> dict[str, float]:
    """Mean and std of a critic's turn advantages, with the collapse and mean |A| every algorithm logs."""
    from agentgym.trainers.rewarding import advantage_stats

    flat = [a for row in values for a in row]
    if not flat:
        return {}
    mean = math.fsum(flat) / len(flat)
    return {
        "critic/advantage_mean": mean,
        "critic/advantage_std": math.sqrt(math.fsum((a - mean) ** 2 for a in flat) / len(flat)),
        **advantage_stats(trajectories, values, one_group=False),
    }


def whiten(a: torch.Tensor) -> torch.Tensor:
    """(a − mean a) / (std a + 1e-6) with the population std, over one step's turn advantages; as it is for fewer than 2."""
    if len(a) < 2:
        return a
    return (a - a.mean()) / (a.std(unbiased=False) + 1e-6)
