"""How an episode's history becomes the chat messages a policy sees."""

from __future__ import annotations

from agentgym.types import Message


class ChatHistory:
    """The conversation of one episode: system instructions, the first observation, then action/observation pairs.

    `window(k)` keeps the instructions and the first observation (it states the goal) plus
    the last `k` exchanges; `k=None` keeps everything.
    """

    def __init__(self, instructions: str, first_observation: str) -> None:
        self._head: list[Message] = []
        if instructions:
            self._head.append(Message(role="system", content=instructions))
        self._head.append(Message(role="user", content=first_observation))
        self._pairs: list[tuple[Message, Message]] = []

    def add(self, action_text: str, observation: str) -> None:
        """Record the policy's reply and the env's answer to it."""
        self._pairs.append((Message(role="assistant", content=action_text), Message(role="user", content=observation)))

    def window(self, k: int | None = None) -> list[Message]:
        """The messages to send: head plus the last `k` exchanges."""
        pairs = self._pairs if k is None else (self._pairs[-k:] if k > 0 else [])
        out = list(self._head)
        for reply, answer in pairs:
            out.append(reply)
            out.append(answer)
        return out
