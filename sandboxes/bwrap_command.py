"""The bwrap command line of a sandbox: its namespaces, its read-only view of `/`, and the drop to its user."""

from __future__ import annotations

import os
from pathlib import Path

from agentgym.sandboxes.base import SandboxError
from agentgym.sandboxes.host_mounts import shared_sysfs
from agentgym.sandboxes.spec import SandboxSpec

# Host directories a sandbox sees (read-only) when its spec names no rootfs; /root, /home, /run, /var,
# /tmp, /work and the host's /proc and /sys stay out of sight.
HOST_VIEW = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")
# Top-level entries of a rootfs that bwrap mounts itself (or that must not come from the rootfs).
ROOTFS_SKIP = {"proc", "dev", "sys", "tmp"}


def root_view(rootfs: Path | None) -> list[str]:
    """bwrap arguments that build a read-only `/` from a rootfs or from a few host directories."""
    base = Path(rootfs) if rootfs else Path("/")
    names = HOST_VIEW if rootfs is None else sorted(p.name for p in base.iterdir() if p.name not in ROOTFS_SKIP)
    args: list[str] = []
    for name in names:
        path = base / name
        if path.is_symlink():
            # Debian's /bin, /lib... are links into /usr: recreate the link, the target is bound anyway.
            args += ["--symlink", os.readlink(path), f"/{name}"]
        elif path.is_dir() or path.is_file():
            args += ["--ro-bind", str(path), f"/{name}"]
    return args


def setpriv_path(rootfs: Path | None) -> str:
    """Where setpriv is inside the sandbox (util-linux; essential in Debian, so also in Debian rootfses)."""
    base = Path(rootfs) if rootfs else Path("/")
    for candidate in ("usr/bin/setpriv", "bin/setpriv"):
        if (base / candidate).exists():
            return f"/{candidate}"
    raise SandboxError(f"setpriv not found in {base}; install util-linux there (apt-get install util-linux)")


def sandbox_args(spec: SandboxSpec, fs: Path, privileged: bool) -> list[str]:
    """The bwrap options every exec of a sandbox shares; `fs` holds its writable trees on the host."""
    args = ["--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--hostname", "agentgym"]
    if not spec.network:
        args.append("--unshare-net")
    if privileged:
        # Root keeps only what setpriv needs to become the sandbox user; setpriv then drops all.
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    else:
        args += ["--unshare-user", "--uid", str(spec.uid), "--gid", str(spec.gid)]
    args += root_view(spec.rootfs)
    sysfs = shared_sysfs(spec.network)
    if sysfs is not None:
        args += ["--ro-bind", str(sysfs), "/sys"]
    args += ["--proc", "/proc", "--dev", "/dev",
             "--bind", str(fs / "tmp"), "/tmp",
             "--bind", str(fs / "shm"), "/dev/shm",
             "--bind", str(fs / "work"), spec.workdir]
    return args


def drop_privileges(spec: SandboxSpec, privileged: bool) -> list[str]:
    """The command prefix that turns bwrap's root child into the sandbox user with no capabilities."""
    if not privileged:
        return []  # an unprivileged bwrap already runs the command as the caller, without capabilities
    return [setpriv_path(spec.rootfs), "--reuid", str(spec.uid), "--regid", str(spec.gid), "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
