"""Progress for long jobs: a rich progress bar for rollouts, and a heartbeat line for logs that are not terminals.

A rich progress bar redraws in place; written to a file or a CI log it shows nothing until it
ends, so a job that runs for minutes looks dead. `Heartbeat` prints a plain line instead, at
most every `interval_s` seconds, for callers to use whenever the output is not a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentgym.types import Trajectory


class RolloutProgress:
    """Context manager whose `update(trajectory)` is a rollout-engine callback: a bar on a terminal, else heartbeat lines."""

    def __init__(
        self, total: int, description: str = "episodes", console: Console | None = None, enabled: bool = True,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.total = total
        self.description = description
        self._console = console or Console(stderr=True)
        # Off a terminal the bar draws nothing until it ends: a line at least every 30 s instead.
        self._heartbeat = heartbeat or (Heartbeat(30.0, console=self._console) if enabled and not self._console.is_terminal else None)
        self._tokens = 0
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
        self._tokens += sum(u.completion_tokens for u in trajectory.turns)
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        if self._heartbeat is not None:
            self._heartbeat.maybe(self.status_line)
        self._progress.update(
            self._task, advance=1, success=f"{self._wins / self._done:.2f}",
            rate=f"{self._turns / elapsed:.1f}", errors=self._errors,
        )

    def status_line(self) -> str:
        """Episodes done of all, success so far, tokens generated, time spent and left."""
        elapsed = time.perf_counter() - self._start
        parts = [f"{self.description}: {self._done}/{self.total} episodes",
                 f"success {self._wins / self._done:.2f}" if self._done else "success -",
                 f"{self._tokens} tokens generated", f"errors {self._errors}", f"{format_duration(elapsed)} elapsed"]
        if self._done:
            parts.append(f"about {format_duration(elapsed / self._done * (self.total - self._done))} left")
        return " · ".join(parts)

    def __enter__(self) -> RolloutProgress:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._progress.stop()


class Heartbeat:
    """A line at most every `interval_s` seconds: call `.maybe(lambda: "...")` as often as you like.

    The first `.maybe` prints (a job's first line shows its speed early); later ones print once
    `interval_s` has passed since the last line. The message is built only when it is printed.
    """

    def __init__(
        self, interval_s: float = 30.0, *, console: Console | None = None,
        emit: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.interval_s = interval_s
        self._clock = clock
        self._console = console or Console(stderr=True, soft_wrap=True)
        self._emit = emit or self._print
        self._last: float | None = None

    def maybe(self, message: Callable[[], str]) -> bool:
        """Print `message()` if it is the first call or `interval_s` has passed since the last line; whether it printed."""
        now = self._clock()
        if self._last is not None and now - self._last < self.interval_s:
            return False
        self.emit(message())
        return True

    def emit(self, line: str) -> None:
        """Print `line` now (e.g. a job's last line) and restart the interval."""
        self._last = self._clock()
        self._emit(line)

    def _print(self, line: str) -> None:
        self._console.print(line, highlight=False)


def format_duration(seconds: float) -> str:
    """A short duration for progress lines: 42s, 3m05s, 1h02m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
