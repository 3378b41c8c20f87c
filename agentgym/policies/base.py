"""The Policy contract: messages in, a Completion out (with token ids and logprobs where the backend has them)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentgym.types import Completion, Message, PolicyInfo, SamplingParams


@dataclass
class EpisodeContext:
    """Which episode a call belongs to; scripted policies read the reset info (e.g. a walkthrough)."""

    episode_id: str
    task_id: str
    turn: int
    reset_info: dict[str, Any] = field(default_factory=dict)
    admissible_actions: list[str] | None = None  # the env's valid actions at this turn, where it knows them
    # Which rollout of its group this is: with the task, what a seeded scripted policy draws from.
    group_id: str = ""
    sample_index: int = 0


class Policy(ABC):
    """An agent's brain. `act` may be called concurrently from many episodes."""

    # A trainer sets this after each weight sync, so every trajectory says which weights played it.
    weights_step: int | None = None

    @abstractmethod
    async def act(
        self,
        messages: Sequence[Message],
        tools: list[dict[str, Any]] | None = None,
        sampling: SamplingParams | None = None,
        context: EpisodeContext | None = None,
    ) -> Completion:
        """Answer the conversation `messages` with one completion."""

    @abstractmethod
    def describe(self) -> PolicyInfo:
        """What to record on trajectories about this policy."""

    def info(self) -> PolicyInfo:
        """describe(), with the training step of the weights when a trainer has set one."""
        described = self.describe()
        return described if self.weights_step is None else described.model_copy(update={"weights_step": self.weights_step})

    async def check(self) -> None:
        """Raise a clear PolicyError if the backend is unusable (no server, unknown model); default: nothing to check."""

    async def aclose(self) -> None:
        """Release clients, threads and models; default: nothing to release."""
