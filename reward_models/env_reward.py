"""The env's own rewards, turn by turn: the default scorer of `agentgym train`."""

from __future__ import annotations

from agentgym.types import Trajectory


class EnvReward:
    """Per-turn rewards as the env gave them, plus an optional bonus on the last turn of a success."""

    def __init__(self, success_bonus: float = 0.0) -> None:
        self.success_bonus = float(success_bonus)

    def __call__(self, trajectory: Trajectory) -> list[float]:
        """One reward per turn of `trajectory`."""
        rewards = [t.reward for t in trajectory.turns]
        if rewards and trajectory.success and self.success_bonus:
            rewards[-1] += self.success_bonus
        return rewards
