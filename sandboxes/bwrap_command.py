"""The bwrap command line of a sandbox: its namespaces, its read-only view of `/`, and the drop to its user."""

from __future__ import annotations

import os
from pathlib import Path

from agentgym.sandboxes.base import SandboxError
from agentgym.sandboxes.host_mounts import shared_sysfs
from agentgym.sandboxes.rootfs import RootView
from agentgym.sandboxes.spec import SandboxSpec

# Top-level entries of a rootfs that bwrap mounts itself (or that must not come from the rootfs).
ROOTFS_SKIP = {"proc", "dev", "sys", "tmp"}


def root_args(view: RootView) -> list[str]:
    """bwrap arguments that build a read-only `/` from a root view (its chosen top-level entries, or all)."""
    base = view.base
    names = view.names if view.names is not None else sorted(p.name for p in base.iterdir() if p.name not in ROOTFS_SKIP)
    args: list[str] = []
    for name in names:
        path = base / name
        if path.is_symlink():
            # Debian's /bin, /lib... are links into /usr: recreate the link, the target is bound anyway.
            args += ["--symlink", os.readlink(path), f"/{name}"]
        elif path.is_dir() or path.is_file():
            args += ["--ro-bind", str(path), f"/{name}"]
    return args


def setpriv_path(base: Path) -> str:
    """Where setpriv is inside a sandbox whose root is `base` (util-linux; essential in Debian, so in its roots too)."""
    for candidate in ("usr/bin/setpriv", "bin/setpriv"):
        if (base / candidate).exists():
            return f"/{candidate}"
    raise SandboxError(f"setpriv not found in {base}; install util-linux there (apt-get install util-linux)")


def sandbox_args(spec: SandboxSpec, fs: Path, privileged: bool, view: RootView) -> list[str]:
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
    args += root_args(view)
    sysfs = shared_sysfs(spec.network)
    if sysfs is not None:
        args += ["--ro-bind", str(sysfs), "/sys"]
    args += ["--proc", "/proc", "--dev", "/dev",
             "--bind", str(fs / "tmp"), "/tmp",
             "--bind", str(fs / "shm"), "/dev/shm",
             "--bind", str(fs / "work"), spec.workdir]
    if spec.repo is not None and spec.repo.path != spec.workdir:
        args += ["--bind", str(fs / "repo"), spec.repo.path]
    return args


def drop_privileges(spec: SandboxSpec, privileged: bool, view: RootView) -> list[str]:
    """The command prefix that turns bwrap's root child into the sandbox user with no capabilities."""
    if not privileged:
        return []  # an unprivileged bwrap already runs the command as the caller, without capabilities
    return [setpriv_path(view.base), "--reuid", str(spec.uid), "--regid", str(spec.gid), "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
