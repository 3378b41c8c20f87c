"""How an episode's history becomes the chat messages a policy sees."""

from __future__ import annotations

from agentgym.types import Message


class ChatHistory:
    """The conversation of one episode, appended to a message list that the trajectory keeps.

    The list holds the system instructions, the first observation, then reply/observation
    pairs. `window_indices(k)` picks the instructions and the first observation (it states
    the goal) plus the last `k` exchanges; `k=None` picks everything. Turns record these
    indices rather than copies, so a trajectory stores each message once.
    """

    def __init__(self, messages: list[Message], instructions: str, first_observation: str) -> None:
        if messages:
            raise ValueError("ChatHistory starts from an empty message list")
        self.messages = messages
        if instructions:
            messages.append(Message(role="system", content=instructions))
        messages.append(Message(role="user", content=first_observation))
        self._head = len(messages)

    def add(self, action_text: str, observation: str) -> None:
        """Record the policy's reply and the env's answer to it."""
        self.messages.append(Message(role="assistant", content=action_text))
        self.messages.append(Message(role="user", content=observation))

    @property
    def exchanges(self) -> int:
        """How many reply/observation pairs the history holds."""
        return (len(self.messages) - self._head) // 2

    def window_indices(self, k: int | None = None) -> list[int]:
        """Indices into `messages` of the head plus the last `k` exchanges."""
        start = self._head if k is None else max(self._head, len(self.messages) - 2 * k)
        return [*range(self._head), *range(start, len(self.messages))]

    def window(self, k: int | None = None) -> list[Message]:
        """The messages to send: head plus the last `k` exchanges."""
        return [self.messages[i] for i in self.window_indices(k)]
