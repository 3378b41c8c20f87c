"""Progress off a terminal: eval's rollout progress and the trainer print plain lines, not a silent bar."""

from __future__ import annotations

import io

from rich.console import Console

from agentgym.progress import Heartbeat, RolloutProgress
from agentgym.types import PolicyInfo, SamplingParams, Trajectory, Turn


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _episode(success: bool, tokens: int) -> Trajectory:
    turn = Turn(index=0, prompt_messages=[], completion="x", action="x", observation="o", completion_tokens=tokens)
    return Trajectory(trajectory_id="t", env_id="e", task_id="a", seed=0, group_id="g", policy=PolicyInfo(kind="k"),
                      sampling=SamplingParams(), started_at=0.0, turns=[turn], success=success)


def test_rollout_progress_prints_heartbeat_lines_when_the_output_is_not_a_terminal() -> None:
    clock, lines = _Clock(), []
    console = Console(file=io.StringIO())  # a log file: not a terminal
    beat = Heartbeat(30, emit=lines.append, clock=clock)
    with RolloutProgress(4, "eval textworld", console=console, heartbeat=beat) as progress:
        progress.update(_episode(True, 5))
        clock.now += 10
        progress.update(_episode(False, 7))  # 10 s later: quiet
        clock.now += 25
        progress.update(_episode(True, 3))
    assert len(lines) == 2
    assert lines[0].startswith("eval textworld: 1/4 episodes · success 1.00 · 5 tokens generated")
    assert "3/4 episodes" in lines[1] and "success 0.67" in lines[1] and "15 tokens generated" in lines[1]
    assert "left" in lines[1]


def test_rollout_progress_on_a_terminal_or_when_disabled_prints_no_heartbeat() -> None:
    terminal = Console(file=io.StringIO(), force_terminal=True)
    assert RolloutProgress(3, console=terminal)._heartbeat is None
    assert RolloutProgress(3, console=Console(file=io.StringIO()), enabled=False)._heartbeat is None
    assert RolloutProgress(3, console=Console(file=io.StringIO()))._heartbeat is not None
