"""The base class of every agentgym env: a gymnasium.Env with text in, text out and agreed `info` keys."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym

from agentgym.errors import TaskNotFoundError
from agentgym.spaces import FreeText

# The info keys every agentgym env fills (docs/architecture.md, "Env").
INFO_KEYS = ("instructions", "tools", "admissible_actions", "task_id", "success", "signals")


@dataclass
class StepOutcome:
    """What an env's `act` returns; the base class turns it into gymnasium's 5-tuple.

    `terminated` means the episode ended in the task's own terms (won or lost);
    truncation at `max_turns` is decided by the base class, never by `act`.
    """

    observation: str
    reward: float = 0.0
    terminated: bool = False
    success: bool | None = None
    signals: dict[str, Any] = field(default_factory=dict)
    admissible_actions: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class EpisodeStart:
    """What an env's `start` returns: the first observation and the episode's fixed context."""

    observation: str
    instructions: str
    admissible_actions: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    info: dict[str, Any] = field(default_factory=dict)


class TextEnv(gym.Env[str, str], ABC):
    """A text env: `reset(seed, options={"task": id})` and `step(action: str)`.

    Subclasses implement three methods: `task_ids` (the tasks it can play), `start`
    (begin one task) and `act` (apply one action). The base class owns seeding, task
    choice, turn counting, truncation at `max_turns` and the `info` conventions, so every
    env reports the same keys:

    - `instructions`: the system prompt for the agent;
    - `tools`: OpenAI tool schemas, or None for plain-text envs;
    - `admissible_actions`: the valid actions now, where the env knows them, else None;
    - `task_id`; `success`: True/False once the episode ends, None before;
    - `signals`: named step-level measurements (`valid_action`, `progress`, ...).

    An action the env cannot use is not an exception: `act` answers with an observation
    that says what was wrong and `signals["valid_action"] = False`.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(self, max_turns: int = 50, render_mode: str | None = None) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.max_turns = int(max_turns)
        self.render_mode = render_mode
        self.observation_space = FreeText()
        self.action_space = FreeText()
        self._turn = 0
        self._task_id: str | None = None
        self._instructions = ""
        self._tools: list[dict[str, Any]] | None = None
        self._last_observation = ""
        self._done = False

    # -- what a subclass implements -------------------------------------------------

    @abstractmethod
    def task_ids(self) -> Sequence[str]:
        """The ids of the tasks this env can play, in a stable order."""

    @abstractmethod
    def start(self, task_id: str) -> EpisodeStart:
        """Begin `task_id` from scratch, discarding any previous episode."""

    @abstractmethod
    def act(self, action: str) -> StepOutcome:
        """Apply one action of the agent to the current episode."""

    # -- gymnasium API ---------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode on `options["task"]`, or on a task drawn with the env's own generator."""
        super().reset(seed=seed)
        options = dict(options or {})
        task_id = options.pop("task", None)
        ids = list(self.task_ids())
        if task_id is None:
            if not ids:
                raise TaskNotFoundError(f"{type(self).__name__} has no tasks to play")
            task_id = ids[int(self.np_random.integers(len(ids)))]
        elif task_id not in ids:
            raise TaskNotFoundError(f"unknown task {task_id!r} for {type(self).__name__} ({len(ids)} tasks)")
        self._turn = 0
        self._done = False
        self._task_id = task_id
        begun = self.start(task_id)
        self._instructions = begun.instructions
        self._tools = begun.tools
        self._last_observation = begun.observation
        info = {
            **begun.info,
            "instructions": begun.instructions,
            "tools": begun.tools,
            "admissible_actions": begun.admissible_actions,
            "task_id": task_id,
            "success": None,
            "signals": {},
            "turn": 0,
        }
        return begun.observation, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Apply `action`; truncate once `max_turns` steps have been taken without an end."""
        if self._task_id is None:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("the episode has ended; call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"action must be a str, got {type(action).__name__}")
        self._turn += 1
        out = self.act(action)
        terminated = bool(out.terminated)
        truncated = not terminated and self._turn >= self.max_turns
        self._done = terminated or truncated
        success = out.success if out.success is not None else (False if self._done else None)
        self._last_observation = out.observation
        info = {
            **out.info,
            "instructions": self._instructions,
            "tools": self._tools,
            "admissible_actions": out.admissible_actions,
            "task_id": self._task_id,
            "success": success,
            "signals": dict(out.signals),
            "turn": self._turn,
        }
        return out.observation, float(out.reward), terminated, truncated, info

    def render(self) -> str | None:
        """The last observation, for render_mode 'ansi'."""
        return self._last_observation if self.render_mode == "ansi" else None
