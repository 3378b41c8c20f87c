"""A rich progress bar for rollouts: episodes done, success rate, turns per second."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentgym.types import Trajectory


class RolloutProgress:
    """Context manager whose `update(trajectory)` is a rollout-engine callback."""

    def __init__(self, total: int, description: str = "episodes", console: Console | None = None, enabled: bool = True) -> None:
        self.total = total
        self._console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("success {task.fields[success]}"), TextColumn("{task.fields[rate]} turns/s"),
            TextColumn("errors {task.fields[errors]}"), TimeElapsedColumn(),
            console=self._console, disable=not enabled, transient=False,
        )
        self._task = self._progress.add_task(description, total=total, success="-", rate="-", errors=0)
        self._done = self._wins = self._turns = self._errors = 0
        self._start = time.perf_counter()

    def update(self, trajectory: Trajectory) -> None:
        """Count one finished episode."""
        self._done += 1
        self._wins += bool(trajectory.success)
        self._turns += trajectory.num_turns
        self._errors += trajectory.error is not None
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        self._progress.update(
            self._task, advance=1, success=f"{self._wins / self._done:.2f}",
            rate=f"{self._turns / elapsed:.1f}", errors=self._errors,
        )

    def __enter__(self) -> RolloutProgress:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._progress.stop()
