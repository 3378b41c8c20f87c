"""How an episode's history becomes the chat messages a policy sees."""

from __future__ import annotations

from agentgym.types import Message, ToolCallRecord

# What a tool call beyond the first gets: envs run one action per turn, and an API server wants
# every call id of an assistant message answered by a tool message.
NOT_RUN = "Not run: one tool call is carried out per turn, and this turn's first call was."


class ChatHistory:
    """The conversation of one episode, appended to a message list that the trajectory keeps.

    The list holds the system instructions, the first observation, then one exchange per
    turn: the reply, and the env's answer as a `user` message, or as a `tool` message with
    its `tool_call_id` when the reply was a structured tool call. `window_indices(k)` picks
    the instructions and the first observation (it states the goal) plus the last `k`
    exchanges; `k=None` picks everything. Turns record these indices rather than copies, so
    a trajectory stores each message once.
    """

    def __init__(self, messages: list[Message], instructions: str, first_observation: str) -> None:
        if messages:
            raise ValueError("ChatHistory starts from an empty message list")
        self.messages = messages
        if instructions:
            messages.append(Message(role="system", content=instructions))
        messages.append(Message(role="user", content=first_observation))
        self._head = len(messages)
        self._starts: list[int] = []  # where each exchange begins in `messages`

    def add(self, reply: str, observation: str, tool_calls: list[ToolCallRecord] | None = None) -> None:
        """Record the policy's reply and the env's answer to it (to the first call, when the reply made calls)."""
        self._starts.append(len(self.messages))
        self.messages.append(Message(role="assistant", content=reply, tool_calls=tool_calls or None))
        if not tool_calls:
            self.messages.append(Message(role="user", content=observation))
            return
        first, *rest = tool_calls
        self.messages.append(Message(role="tool", content=observation, tool_call_id=first.id))
        self.messages.extend(Message(role="tool", content=NOT_RUN, tool_call_id=c.id) for c in rest)

    @property
    def exchanges(self) -> int:
        """How many reply/observation exchanges the history holds."""
        return len(self._starts)

    def window_indices(self, k: int | None = None) -> list[int]:
        """Indices into `messages` of the head plus the last `k` exchanges."""
        if k is None or k >= len(self._starts):
            start = self._head
        else:
            start = self._starts[-k] if k > 0 else len(self.messages)
        return [*range(self._head), *range(start, len(self.messages))]

    def window(self, k: int | None = None) -> list[Message]:
        """The messages to send: head plus the last `k` exchanges."""
        return [self.messages[i] for i in self.window_indices(k)]
