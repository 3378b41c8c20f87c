"""Scripted policies: a fixed list of actions, a callable, the env's own walkthrough, or a uniform pick among valid actions."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Any

from agentgym.errors import PolicyError
from agentgym.policies.base import EpisodeContext, Policy
from agentgym.types import Completion, Message, PolicyInfo, SamplingParams


class ScriptedPolicy(Policy):
    """Plays `actions[turn]` each turn (the same list in every episode), then `fallback`."""

    def __init__(self, actions: Sequence[str], fallback: str = "look") -> None:
        self.actions = list(actions)
        self.fallback = fallback

    async def act(
        self,
        messages: Sequence[Message],
        tools: list[dict[str, Any]] | None = None,
        sampling: SamplingParams | None = None,
        context: EpisodeContext | None = None,
    ) -> Completion:
        """Return the scripted action for this turn."""
        turn = context.turn if context is not None else sum(m.role == "assistant" for m in messages)
        text = self.actions[turn] if turn < len(self.actions) else self.fallback
        return Completion(text=text, finish_reason="scripted")

    def describe(self) -> PolicyInfo:
        """Scripted, no model."""
        return PolicyInfo(kind="scripted")


class CallablePolicy(Policy):
    """Wraps `fn(messages, context) -> str` as a policy (tests, hand-written agents)."""

    def __init__(self, fn: Callable[[Sequence[Message], EpisodeContext | None], str], name: str = "callable") -> None:
        self.fn = fn
        self.name = name

    async def act(
        self,
        messages: Sequence[Message],
        tools: list[dict[str, Any]] | None = None,
        sampling: SamplingParams | None = None,
        context: EpisodeContext | None = None,
    ) -> Completion:
        """Return whatever the callable says."""
        return Completion(text=self.fn(messages, context), finish_reason="scripted")

    def describe(self) -> PolicyInfo:
        """Scripted, named after the callable."""
        return PolicyInfo(kind="scripted", model=self.name)


class WalkthroughPolicy(Policy):
    """Plays the walkthrough that the env put in its reset info (`info["walkthrough"]`)."""

    def __init__(self, fallback: str = "look") -> None:
        self.fallback = fallback

    async def act(
        self,
        messages: Sequence[Message],
        tools: list[dict[str, Any]] | None = None,
        sampling: SamplingParams | None = None,
        context: EpisodeContext | None = None,
    ) -> Completion:
        """Return step `turn` of the episode's walkthrough."""
        if context is None or "walkthrough" not in context.reset_info:
            raise PolicyError("the walkthrough policy needs an env that gives info['walkthrough'] at reset")
        steps = context.reset_info["walkthrough"] or []
        text = steps[context.turn] if context.turn < len(steps) else self.fallback
        return Completion(text=text, finish_reason="scripted")

    def describe(self) -> PolicyInfo:
        """Scripted from the env's walkthrough."""
        return PolicyInfo(kind="walkthrough")


class RandomAdmissiblePolicy(Policy):
    """Plays an action drawn uniformly from the env's admissible actions each turn: the chance baseline.

    The draw is a function of (seed, group, rollout in the group, turn), so a seeded evaluation replays exactly.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    async def act(
        self,
        messages: Sequence[Message],
        tools: list[dict[str, Any]] | None = None,
        sampling: SamplingParams | None = None,
        context: EpisodeContext | None = None,
    ) -> Completion:
        """Return one of this turn's admissible actions, picked at random."""
        actions = context.admissible_actions if context is not None else None
        if not actions:
            raise PolicyError("the random policy needs an env that lists its admissible actions (e.g. TextWorld, ALFWorld)")
        assert context is not None
        key = f"{self.seed}:{context.group_id}:{context.sample_index}:{context.turn}".encode()
        rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
        return Completion(text=rng.choice(sorted(actions)), finish_reason="scripted")

    def describe(self) -> PolicyInfo:
        """Scripted, uniform over admissible actions."""
        return PolicyInfo(kind="scripted", model="random-admissible")
