"""The trajectory store: append-only JSONL (one trajectory a line, flushed as it lands), a reader, Parquet export."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from pydantic import ValidationError

from agentgym.errors import StoreError
from agentgym.types import Trajectory

log = logging.getLogger(__name__)


class TrajectoryWriter:
    """Appends trajectories to a JSONL file; each is on disk (flushed, fsynced) before `write` returns."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._lock = threading.Lock()
        # Append mode: an existing file is continued, never truncated.
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.count = 0

    def write(self, trajectory: Trajectory) -> None:
        """Append one trajectory as one line."""
        line = trajectory.model_dump_json() + "\n"
        with self._lock:
            # One write call per line, so an interrupt never leaves half a trajectory behind a whole one.
            self._fh.write(line)
            self._fh.flush()
            if self._fsync:
                os.fsync(self._fh.fileno())
            self.count += 1

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if not self._fh.closed:
                self._fh.close()

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def iter_trajectories(path: str | os.PathLike[str], *, strict: bool = False) -> Iterator[Trajectory]:
    """Yield the trajectories of a JSONL file.

    A last line without its newline is what a killed writer can leave: it is skipped
    with a warning (strict=True raises instead). A bad line elsewhere always raises.
    """
    path = Path(path)
    if not path.exists():
        raise StoreError(f"no trajectory file at {str(path)!r}")
    with open(path, encoding="utf-8") as fh:
        lines = fh.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield Trajectory.model_validate_json(line)
        except (ValidationError, json.JSONDecodeError) as exc:
            is_torn_tail = number == len(lines) and not line.endswith("\n")
            if is_torn_tail and not strict:
                log.warning("%s: skipping an incomplete last line (%d bytes)", path, len(line))
                continue
            raise StoreError(f"{path}:{number}: not a valid trajectory: {exc}") from exc


def read_trajectories(path: str | os.PathLike[str], *, strict: bool = False) -> list[Trajectory]:
    """All trajectories of a JSONL file."""
    return list(iter_trajectories(path, strict=strict))
