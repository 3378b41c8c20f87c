"""Whether the kernel's OOM killer struck inside a Docker container, read from its host cgroup files."""

from __future__ import annotations

from pathlib import Path


def find_oom_file(container_id: str) -> Path | None:
    """The host cgroup file that counts OOM kills in the container (cgroup v1 or v2), if this host has it."""
    candidates = [
        Path(f"/sys/fs/cgroup/memory/docker/{container_id}/memory.oom_control"),
        Path(f"/sys/fs/cgroup/memory/system.slice/docker-{container_id}.scope/memory.oom_control"),
        Path(f"/sys/fs/cgroup/docker/{container_id}/memory.events"),
        Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.events"),
    ]
    for path in candidates:
        if read_oom_kills(path) is not None:
            return path
    return None


def read_oom_kills(path: Path | None) -> int | None:
    """The `oom_kill` counter of a memory.oom_control / memory.events file; None when unreadable."""
    if path is None:
        return None
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return None
