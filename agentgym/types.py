"""Typed records that cross the seams: chat messages, sampling settings, completions, turns, trajectories.

These are the wire format of the trajectory store (docs/trajectory-schema.md describes
every field); unknown fields are refused so that a typo never passes silently.
"""

from __future__ import annotations

import traceback as tb
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class Record(BaseModel):
    """Base of agentgym's records: strict about unknown fields."""

    model_config = ConfigDict(extra="forbid")


class FunctionCall(Record):
    """The function a tool call names and its arguments, a JSON string as OpenAI's API sends them."""

    name: str
    arguments: str = "{}"


class ToolCallRecord(Record):
    """One structured tool call of an assistant message, in OpenAI's wire form."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(Record):
    """One chat message; an assistant message may carry structured tool calls, a tool message answers one."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCallRecord] | None = None


class SamplingParams(Record):
    """How a policy samples a completion."""

    temperature: float = Field(1.0, ge=0.0, description="0 means greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(64, ge=1, description="Upper bound on completion tokens per turn.")
    stop: list[str] = Field(default_factory=list, description="Strings that end a completion.")
    seed: int | None = Field(None, description="Sampling seed, where the backend honours one.")


class Completion(Record):
    """What a policy returned for one prompt; token ids and logprobs where the backend gives them."""

    text: str
    prompt_token_ids: list[int] | None = None
    token_ids: list[int] | None = Field(None, description="Completion token ids, EOS included when sampled.")
    logprobs: list[float] | None = Field(None, description="Sampling-time log p of each completion token.")
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: list[ToolCallRecord] | None = Field(
        None, description="Calls the server returned as structured fields; `text` then ends with them rendered as <tool_call> text."
    )
    content: str | None = Field(None, description="The reply's own text without the rendered calls, when `tool_calls` is set.")


class ErrorRecord(Record):
    """An exception that ended an episode (or, `where="reward"`, that its reward model raised), with its traceback."""

    type: str
    message: str
    traceback: str
    where: Literal["env", "policy", "timeout", "engine", "reward"]

    @classmethod
    def from_exception(cls, exc: BaseException, where: Literal["env", "policy", "timeout", "engine", "reward"]) -> ErrorRecord:
        """Capture an exception's type, message and traceback."""
        return cls(
            type=type(exc).__name__,
            message=str(exc),
            traceback="".join(tb.format_exception(type(exc), exc, exc.__traceback__)),
            where=where,
        )


class Turn(Record):
    """One agent step: the prompt the policy saw, what it answered, and what the env did with it."""

    index: int
    prompt_messages: list[int] = Field(
        repr=False, description="Indices into Trajectory.messages of the prompt the policy saw (see Trajectory.prompt)."
    )
    completion: str
    action: str
    prompt_token_ids: list[int] | None = Field(None, repr=False)
    completion_token_ids: list[int] | None = Field(None, repr=False)
    completion_logprobs: list[float] | None = Field(None, repr=False)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    observation: str = Field(description="The env's observation after the action.")
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    signals: dict[str, Any] = Field(default_factory=dict)
    policy_seconds: float = 0.0
    env_seconds: float = 0.0


class PolicyInfo(Record):
    """Which policy played an episode."""

    kind: str
    model: str | None = None
    base_url: str | None = None
    # Set during training: the weights are those after this many training steps (0: the starting model).
    weights_step: int | None = None


class Trajectory(Record):
    """One episode from reset to its end, with everything needed to train on it or audit it."""

    schema_version: int = SCHEMA_VERSION
    trajectory_id: str
    env_id: str
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    task_id: str
    seed: int | None
    group_id: str = Field(description="Episodes of the same task and seed share it (GRPO-style groups).")
    sample_index: int = 0
    policy: PolicyInfo
    sampling: SamplingParams
    instructions: str = ""
    initial_observation: str = ""
    # The conversation is stored once; turns point into it. Copying each turn's prompt made
    # files grow with the square of the episode length (2.7 MB for 100 TextWorld turns).
    messages: list[Message] = Field(default_factory=list, repr=False, description="The whole conversation, in order.")
    turns: list[Turn] = Field(default_factory=list, repr=False)
    total_reward: float = 0.0
    success: bool | None = None
    terminated: bool = False
    truncated: bool = False
    truncation_reason: str | None = Field(
        None, description="Why an outside limit cut the episode: max_turns, context_overflow, timeout or env (the env's own limit)."
    )
    error: ErrorRecord | None = None
    started_at: float
    duration_seconds: float = 0.0
    reset_info: dict[str, Any] = Field(
        default_factory=dict, description="The env's reset info (its task data, e.g. the ground-truth `answer`), less the keys stored apart."
    )
    final_info: dict[str, Any] = Field(default_factory=dict, description="The last step's info, less the keys stored apart.")

    @property
    def num_turns(self) -> int:
        """Number of agent steps taken."""
        return len(self.turns)

    def prompt(self, turn: int | Turn) -> list[Message]:
        """The chat messages the policy was given at `turn`."""
        record = self.turns[turn] if isinstance(turn, int) else turn
        return [self.messages[i] for i in record.prompt_messages]
