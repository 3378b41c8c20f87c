"""The reward-model seam: a group of trajectories in, one reward per turn of each out.

A reward model sees a whole group (the rollouts of one task and seed) at once, because some
need the group (IGPO normalises information gain across it) and batching scorer calls over a
group is what keeps them cheap. It may ask a `Scorer` for teacher-forced log-probabilities of
an answer under the policy. The trainer checks the lengths it returns and records any exception
on the trajectory; a reward model never has to guard itself against that.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from agentgym.types import Message, Trajectory


class Scorer(Protocol):
    """Teacher-forced log p(answer | context) under the policy, for a batch of pairs."""

    async def answer_logprobs(self, pairs: Sequence[tuple[Sequence[Message], str]]) -> list[list[float]]:
        """For each (context messages, answer text): the log-probability of each answer token."""
        ...


@dataclass
class RewardScores:
    """What a reward model returns for one group: per-turn rewards and named diagnostics."""

    rewards: list[list[float]]  # rewards[i][t]: trajectory i of the group, turn t
    diagnostics: dict[str, float] = field(default_factory=dict)


class RewardModel(ABC):
    """Turns the trajectories of one group into one reward per turn each."""

    name: ClassVar[str] = "reward"
    needs_scorer: ClassVar[bool] = False  # True: `score` must be given a Scorer

    @abstractmethod
    async def score(self, group: Sequence[Trajectory], scorer: Scorer | None = None) -> RewardScores:
        """Per-turn rewards for every trajectory of `group`, in its order."""
