"""Small envs built for tests: they exercise the base class and the engine without any game engine."""

from __future__ import annotations

import time
from collections.abc import Sequence

from agentgym.env import EpisodeStart, StepOutcome, TextEnv


class CountdownEnv(TextEnv):
    """Say 'down' `start` times to win; anything else is an invalid action. Tasks are 'count-<start>'."""

    def __init__(self, starts: Sequence[int] = (2, 3, 4), max_turns: int = 10, fail_on: str | None = None,
                 step_delay_s: float = 0.0) -> None:
        super().__init__(max_turns=max_turns)
        self.starts = list(starts)
        self.fail_on = fail_on
        self.step_delay_s = step_delay_s
        self.remaining = 0
        self.history: list[str] = []

    def task_ids(self) -> Sequence[str]:
        return [f"count-{s}" for s in self.starts]

    def start(self, task_id: str) -> EpisodeStart:
        self.remaining = int(task_id.split("-")[1])
        self.history = []
        return EpisodeStart(
            observation=f"{self.remaining} to go", instructions="Say 'down' until zero.",
            admissible_actions=["down"], info={"walkthrough": ["down"] * self.remaining},
        )

    def act(self, action: str) -> StepOutcome:
        if self.step_delay_s:
            time.sleep(self.step_delay_s)
        if self.fail_on is not None and action == self.fail_on:
            raise RuntimeError(f"env exploded on {action!r}")
        self.history.append(action)
        if action.strip() != "down":
            return StepOutcome(observation=f"'{action}' is not a command; say 'down'.", signals={"valid_action": False})
        self.remaining -= 1
        won = self.remaining == 0
        return StepOutcome(
            observation="done" if won else f"{self.remaining} to go", reward=1.0 if won else 0.0,
            terminated=won, success=True if won else None, signals={"valid_action": True},
            admissible_actions=["down"],
        )


class LetterEnv(TextEnv):
    """Two turns; each reply containing the letter `letter` earns 1. A random tiny model scores 0, 1 or 2 by chance.

    Rewards vary between rollouts of the same task, so group baselines give non-zero
    advantages: what trainer smoke tests need from an untrained model.
    """

    def __init__(
        self, letter: str = "e", turns: int = 2, num_tasks: int = 3, max_turns: int = 10, crash_task: str | None = None
    ) -> None:
        super().__init__(max_turns=max_turns)
        self.crash_task = crash_task  # episodes of this task crash at their first step (an env bug)
        self.task = ""
        self.letter = letter
        self.turns = turns
        self.num_tasks = num_tasks
        self.taken = 0
        self.score = 0.0

    def task_ids(self) -> Sequence[str]:
        return [f"letter-{i}" for i in range(self.num_tasks)]

    def start(self, task_id: str) -> EpisodeStart:
        self.taken, self.score, self.task = 0, 0.0, task_id
        return EpisodeStart(observation=f"task {task_id}: say something", instructions=f"Use the letter {self.letter}.")

    def act(self, action: str) -> StepOutcome:
        if self.task == self.crash_task:
            raise RuntimeError(f"env bug on {self.task}")
        self.taken += 1
        reward = 1.0 if self.letter in action else 0.0
        self.score += reward
        done = self.taken >= self.turns
        return StepOutcome(
            observation="again" if not done else "over", reward=reward, terminated=done,
            success=(self.score == self.turns) if done else None, signals={"valid_action": True},
        )
