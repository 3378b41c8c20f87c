"""Scripted policies: a fixed list of actions, a callable, or the env's own walkthrough."""

from __future__ import annotations

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
