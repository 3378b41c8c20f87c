"""Per-sandbox cgroup v1 groups (memory, pids, cpu) that bound and find every process of a sandbox."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu")
PARENT = "agentgym"
CFS_PERIOD_US = 100_000


def unavailable_reason() -> str | None:
    """None when this process can create cgroup v1 groups for sandboxes, else one line saying why not."""
    for controller in CONTROLLERS:
        mount = CGROUP_ROOT / controller
        if not (mount / "cgroup.procs").is_file():
            return f"cgroup v1 controller {controller!r} is not mounted at {mount}"
        try:
            (mount / PARENT).mkdir(exist_ok=True)
        except OSError as exc:
            return f"cannot create {mount / PARENT}: {exc.strerror}"
        if not os.access(mount / PARENT, os.W_OK):
            return f"{mount / PARENT} is not writable"
    return None


def _write(path: Path, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


class CgroupSet:
    """The memory, pids and cpu cgroups of one sandbox, named /sys/fs/cgroup/<controller>/agentgym/<name>."""

    def __init__(self, name: str) -> None:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad cgroup name {name!r}")
        self.name = name
        self.paths = {c: CGROUP_ROOT / c / PARENT / name for c in CONTROLLERS}
        # Precomputed as strings: add() runs once per exec and should cost only three writes.
        self._procs_files = [str(p / "cgroup.procs") for p in self.paths.values()]

    @classmethod
    def create(cls, name: str, memory_bytes: int, pids: int, cpus: float) -> CgroupSet:
        """Make the groups and set their limits; removes what it made if a limit cannot be set."""
        group = cls(name)
        try:
            for path in group.paths.values():
                path.mkdir(parents=True, exist_ok=True)
            memory = group.paths["memory"]
            _write(memory / "memory.limit_in_bytes", str(memory_bytes))
            # Without the memsw limit a process could keep going in swap past the memory limit.
            if (memory / "memory.memsw.limit_in_bytes").exists():
                _write(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
            _write(group.paths["pids"] / "pids.max", str(pids))
            cpu = group.paths["cpu"]
            _write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(max(1000, int(cpus * CFS_PERIOD_US))))
        except OSError:
            group.remove()
            raise
        return group

    def exists(self) -> bool:
        """Any of the groups is still there."""
        return any(p.is_dir() for p in self.paths.values())

    def add(self, pid: int) -> None:
        """Move process `pid` into every group (its later children follow it)."""
        for procs in self._procs_files:
            with open(procs, "w") as fh:
                fh.write(str(pid))

    def procs(self) -> set[int]:
        """Pids of the processes in the groups (add() puts each in all three, so the first readable one tells)."""
        for path in self.paths.values():
            with contextlib.suppress(OSError):
                return {int(line) for line in (path / "cgroup.procs").read_text().split()}
        return set()

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer has killed in the memory group so far."""
        try:
            text = (self.paths["memory"] / "memory.oom_control").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def kill_all(self, timeout: float = 5.0, match: Callable[[int], bool] | None = None) -> bool:
        """SIGKILL the groups' processes (those `match` picks) until none is left; False if some outlived `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            pids = {pid for pid in self.procs() if match is None or match(pid)}
            if not pids:
                return True
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                return False
            # A killed process leaves the group only once the kernel has torn it down.
            time.sleep(0.001)

    def remove(self, timeout: float = 5.0) -> None:
        """Kill every process in the groups and delete them; quiet when they are already gone."""
        self.kill_all(timeout)
        deadline = time.monotonic() + timeout
        for path in self.paths.values():
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    # EBUSY while the last killed processes are still leaving the group.
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    self.kill_all(0.1)
                    time.sleep(0.01)
