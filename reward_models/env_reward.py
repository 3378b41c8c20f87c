"""The env's own rewards, turn by turn: the default reward model of `agentgym train`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from agentgym.reward_models.base import RewardModel, RewardScores, Scorer
from agentgym.types import Trajectory


class EnvReward(RewardModel):
    """Per-turn rewards as the env gave them, plus an optional bonus on the last turn of a success."""

    name: ClassVar[str] = "env"

    def __init__(self, success_bonus: float = 0.0) -> None:
        self.success_bonus = float(success_bonus)

    def __call__(self, trajectory: Trajectory) -> list[float]:
        """One reward per turn of `trajectory`."""
        rewards = [t.reward for t in trajectory.turns]
        if rewards and trajectory.success and self.success_bonus:
            rewards[-1] += self.success_bonus
        return rewards

    async def score(self, group: Sequence[Trajectory], scorer: Scorer | None = None) -> RewardScores:
        """The env's rewards of every trajectory of the group."""
        return RewardScores([self(t) for t in group])


class PerTrajectoryReward(RewardModel):
    """A plain `fn(trajectory) -> per-turn rewards` as a reward model (hand-written rewards, tests)."""

    name: ClassVar[str] = "function"

    def __init__(self, fn: Callable[[Trajectory], Sequence[float]]) -> None:
        if not callable(fn):
            raise TypeError(f"PerTrajectoryReward needs a callable, got {type(fn).__name__}")
        self.fn = fn

    async def score(self, group: Sequence[Trajectory], scorer: Scorer | None = None) -> RewardScores:
        """`fn` on every trajectory of the group."""
        return RewardScores([list(self.fn(t)) for t in group])
