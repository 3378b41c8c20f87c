"""The Sandbox contract every backend meets (docs/architecture.md, Sandbox), and the backend interface."""

from __future__ import annotations

import io
import posixpath
import tarfile
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from agentgym.errors import AgentGymError
from agentgym.sandboxes.output import CappedOutput
from agentgym.sandboxes.spec import ExecResult, SandboxSpec


class SandboxError(AgentGymError):
    """A sandbox that cannot be made, reached or used (the message says which and the fix)."""


class SandboxClosedError(SandboxError):
    """An operation on a sandbox that was closed, or whose wall-clock limit ran out."""


class SnapshotUnsupportedError(SandboxError):
    """snapshot()/restore() on a backend that cannot do them."""


Command = str | Sequence[str]

# Every sandbox alive in this process, so that exit and SIGTERM handlers can close them (see cleanup.py).
_LIVE: weakref.WeakSet[Sandbox] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def live_sandboxes() -> list[Sandbox]:
    """The sandboxes of this process that are not closed yet."""
    with _LIVE_LOCK:
        return [s for s in _LIVE if not s.closed]


class Sandbox(ABC):
    """An isolated place to run an agent's commands; made from a SandboxSpec by a backend.

    A string command runs through `sh -c`; a list runs as argv. Paths that are not absolute are
    relative to the spec's workdir. A sandbox is a context manager and closes on exit; every open
    sandbox is also closed at interpreter exit and on SIGTERM (cleanup.install_handlers).
    """

    backend: ClassVar[str]

    def __init__(self, spec: SandboxSpec, sandbox_id: str) -> None:
        self.spec = spec
        self.id = sandbox_id
        self.closed = False
        # When the sandbox's wall-clock lifetime ends, on time.monotonic(); None: it never does.
        self.expires_at = None if spec.wall_clock_s is None else time.monotonic() + spec.wall_clock_s
        with _LIVE_LOCK:
            _LIVE.add(self)
        from agentgym.sandboxes.cleanup import install_handlers  # cleanup imports this module

        install_handlers()

    # --- commands ---
    def exec(
        self,
        cmd: Command,
        timeout: float | None = None,
        workdir: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        """Run `cmd` to completion or to its timeout (default: the spec's exec_timeout_s)."""
        self._check_open()
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else [str(a) for a in cmd]
        if not argv:
            raise SandboxError("empty command")
        stdout, stderr = CappedOutput(self.spec.output_cap_bytes), CappedOutput(self.spec.output_cap_bytes)
        started = time.monotonic()
        exit_code, timed_out, oom_killed = self._exec(
            argv, self.exec_deadline(timeout), self.resolve(workdir) if workdir else None, env, stdout, stderr
        )
        return ExecResult(
            exit_code=exit_code, stdout=stdout.text(), stderr=stderr.text(), timed_out=timed_out,
            duration=time.monotonic() - started, oom_killed=oom_killed,
            stdout_truncated=stdout.dropped, stderr_truncated=stderr.dropped,
        )

    @abstractmethod
    def _exec(
        self,
        argv: list[str],
        deadline: float,
        workdir: str | None,
        env: Mapping[str, str] | None,
        stdout: CappedOutput,
        stderr: CappedOutput,
    ) -> tuple[int, bool, bool]:
        """Backend part of exec: run argv as the sandbox user until it ends or `deadline` (time.monotonic()),
        its output fed to stdout/stderr; returns (exit code, timed out, OOM-killed). workdir None: the spec's."""

    # --- files ---
    @abstractmethod
    def write_file(self, path: str, data: bytes | str) -> None:
        """Create or replace a file in the sandbox (parents created), owned by the sandbox user."""

    @abstractmethod
    def read_file(self, path: str) -> bytes:
        """A file's bytes; SandboxError if it does not exist or is not a regular file."""

    @abstractmethod
    def put_archive(self, path: str, tar_bytes: bytes) -> None:
        """Unpack a tar archive into directory `path` of the sandbox (created if missing)."""

    @abstractmethod
    def get_archive(self, path: str) -> bytes:
        """A tar archive of `path` (a file or directory) in the sandbox, with `path`'s basename as its top entry."""

    def upload(self, local_dir: str | Path, path: str | None = None) -> None:
        """Copy a host directory's contents into the sandbox (default: into the workdir)."""
        local = Path(local_dir)
        if not local.is_dir():
            raise SandboxError(f"upload source {str(local)!r} is not a directory")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for child in sorted(local.iterdir()):
                tar.add(child, arcname=child.name)
        self.put_archive(path or self.spec.workdir, buffer.getvalue())

    def download(self, path: str, local_dir: str | Path) -> Path:
        """Copy a sandbox directory (or file) to the host, under `local_dir`; returns the copy's path."""
        dest = Path(local_dir)
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(self.get_archive(path)), mode="r") as tar:
            # The "data" filter refuses absolute paths, links out of dest and device files.
            tar.extractall(dest, filter="data")
        return dest / posixpath.basename(self.resolve(path).rstrip("/"))

    # --- lifecycle ---
    @abstractmethod
    def reset(self) -> None:
        """Bring the sandbox back to the clean state it was created in (or its last restore point)."""

    def snapshot(self) -> str:
        """Record the current state; returns an id that restore() takes."""
        raise SnapshotUnsupportedError(f"the {self.backend} backend cannot snapshot sandboxes")

    def restore(self, snapshot_id: str) -> None:
        """Go back to a state recorded by snapshot()."""
        raise SnapshotUnsupportedError(f"the {self.backend} backend cannot restore snapshots")

    @abstractmethod
    def _close(self) -> None:
        """Backend teardown: kill every process, remove every resource. Must be idempotent."""

    def close(self) -> None:
        """Kill everything still running in the sandbox and remove it; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        try:
            self._close()
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(self)

    def resolve(self, path: str) -> str:
        """An absolute sandbox path: relative paths are taken from the workdir."""
        if not path:
            raise SandboxError("empty sandbox path")
        return posixpath.normpath(path if path.startswith("/") else posixpath.join(self.spec.workdir, path))

    def lifetime_over(self) -> bool:
        """The spec's wall-clock limit has run out."""
        return self.expires_at is not None and time.monotonic() >= self.expires_at

    def exec_deadline(self, timeout: float | None) -> float:
        """When a command started now must end (time.monotonic()): its timeout, cut at the end of the lifetime."""
        end = time.monotonic() + (self.spec.exec_timeout_s if timeout is None else timeout)
        return end if self.expires_at is None else min(end, self.expires_at)

    def _check_open(self) -> None:
        """Raise SandboxClosedError for a closed sandbox, closing it first when its lifetime has run out."""
        if not self.closed and self.lifetime_over():
            self.close()
        if self.closed:
            if self.lifetime_over():
                limit = self.spec.wall_clock_s
                raise SandboxClosedError(f"sandbox {self.id} reached its wall-clock limit of {limit:g}s and was closed")
            raise SandboxClosedError(f"sandbox {self.id} is closed")

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {'closed' if self.closed else 'open'}>"


class SandboxInfo(BaseModel):
    """One sandbox of this machine as `agentgym sandbox ls` shows it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    backend: str
    owner_pid: int
    owner_alive: bool
    created: float
    spec_key: str = ""
    status: str = ""


class SandboxBackend(ABC):
    """Makes sandboxes of one kind and finds the ones any process of this machine left behind."""

    name: ClassVar[str]

    @abstractmethod
    def unavailable_reason(self) -> str | None:
        """None when this backend can make sandboxes here, else one line saying why not."""

    @abstractmethod
    def create(self, spec: SandboxSpec) -> Sandbox:
        """A new, started sandbox for `spec`."""

    @abstractmethod
    def list(self) -> list[SandboxInfo]:
        """Every sandbox of this backend on the machine, whichever process made it."""

    @abstractmethod
    def remove(self, sandbox_id: str) -> None:
        """Remove one sandbox by id, whoever owns it (for gc)."""

    def gc(self) -> list[str]:
        """Remove every sandbox whose owning process is gone; returns their ids."""
        removed = []
        for info in self.list():
            if not info.owner_alive:
                self.remove(info.id)
                removed.append(info.id)
        return removed
