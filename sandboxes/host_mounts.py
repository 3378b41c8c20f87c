"""Mounts the bubblewrap backend makes on the host: a sandbox's size-limited tmpfs and the shared sysfs."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
from pathlib import Path

from agentgym.cache import file_lock
from agentgym.sandboxes.messages import warn_once

_libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MNT_DETACH = 1, 2, 4, 8, 2
# Machine-wide mounts every sandbox shares, made once per boot (so outside the cache, which may be wiped).
SHARED_DIR = Path("/run/agentgym")
_sysfs_ready: set[Path] = set()
# unshare and nsenter return at once; the deadline keeps a wedged host from hanging the first sandbox.
_TOOL_TIMEOUT_S = 30


def _mount(source: bytes, target: Path, fstype: bytes, flags: int, data: bytes | None) -> None:
    if _libc.mount(source, str(target).encode(), fstype, flags, data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(target))


def mount_tmpfs(target: Path, size_mb: int, source: str) -> None:
    """Mount a tmpfs of `size_mb` MB, owned by root, at `target`; OSError when the kernel refuses."""
    opts = f"size={size_mb}m,mode=0755,uid=0,gid=0".encode()
    _mount(source.encode(), target, b"tmpfs", MS_NOSUID | MS_NODEV, opts)


def unmount_all(target: Path) -> None:
    """Detach every mount stacked on `target`; quiet when nothing is mounted there."""
    for _ in range(16):
        if not is_mount(target):
            return
        if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):
                return
            raise OSError(err, os.strerror(err), str(target))


def is_mount(path: Path) -> bool:
    """Something is mounted at `path` in this process's mount namespace."""
    # mountinfo writes space, tab, newline and backslash in paths as octal escapes.
    escaped = "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in str(path))
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == escaped for line in fh)


def shared_sysfs(host_network: bool) -> Path | None:
    """A read-only sysfs to bind at /sys: its network devices are an empty namespace's (just `lo`), or the
    host's when the sandbox shares the host network; None where it cannot be mounted (not root)."""
    target = SHARED_DIR / ("sysfs-host" if host_network else "sysfs")
    if target in _sysfs_ready:
        return target
    if os.geteuid() != 0:
        return None
    flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    try:
        SHARED_DIR.mkdir(parents=True, exist_ok=True)
        with file_lock(SHARED_DIR / "sysfs.lock"):
            if not is_mount(target):
                target.mkdir(exist_ok=True)
                if host_network:
                    _mount(b"agentgym-sysfs", target, b"sysfs", flags, None)
                else:
                    # sysfs shows the devices of the network namespace that mounts it, and keeps no hold on
                    # it: an nsfs bind keeps an empty namespace (loopback only) alive for the mount.
                    netns = SHARED_DIR / "netns"
                    if not is_mount(netns):
                        netns.touch()
                        subprocess.run(["unshare", f"--net={netns}", "true"], check=True, capture_output=True,
                                       timeout=_TOOL_TIMEOUT_S)
                    subprocess.run(["nsenter", f"--net={netns}", "mount", "-t", "sysfs", "-o", "ro,nosuid,nodev,noexec",
                                    "agentgym-sysfs", str(target)], check=True, capture_output=True, timeout=_TOOL_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        warn_once(f"bwrap sandboxes: no /sys inside (cannot mount a sysfs at {target}: {exc})")
        return None
    _sysfs_ready.add(target)
    return target
