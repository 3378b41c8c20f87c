"""Which process owns a sandbox, and whether that process is still alive (for `agentgym sandbox gc`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class Owner:
    """A process, named by pid and start time so that a recycled pid is not mistaken for the owner."""

    pid: int
    start_ticks: int

    def labels(self) -> dict[str, str]:
        """The owner as string labels (Docker labels, a bubblewrap sandbox's owner file)."""
        return {"agentgym.owner.pid": str(self.pid), "agentgym.owner.start": str(self.start_ticks)}

    @classmethod
    def from_labels(cls, labels: dict[str, str]) -> Owner:
        """The owner recorded by labels(); pid 0 when the labels are missing or damaged."""
        try:
            return cls(int(labels["agentgym.owner.pid"]), int(labels["agentgym.owner.start"]))
        except (KeyError, ValueError):
            return cls(0, 0)

    def alive(self) -> bool:
        """The process still runs (same pid and the same start time)."""
        return self.pid > 0 and process_start_ticks(self.pid) == self.start_ticks


def process_start_ticks(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (/proc/PID/stat field 22), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19])


@lru_cache(maxsize=None)
def _owner_of(pid: int) -> Owner:
    return Owner(pid, process_start_ticks(pid) or 0)


def current_owner() -> Owner:
    """This process as an owner (recomputed after a fork)."""
    return _owner_of(os.getpid())
