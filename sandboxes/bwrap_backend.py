"""The bubblewrap backend: each exec is one `bwrap` run in fresh namespaces, limited by per-sandbox cgroups.

A sandbox is a directory `cache_root()/sandboxes/bwrap/<id>/` holding `owner.json` (who made it, for gc),
`fs/` (a size-limited tmpfs mounted on the host: `work/` is bound at the spec's workdir, `tmp/` at /tmp,
`shm/` at /dev/shm and `repo/` at the spec's repo.path, so disk_mb bounds them all) and `snapshots/`.
The repository is unpacked from its pristine tar (repo_source.py) at creation and at every reset. The
rest of the filesystem is a read-only view (rootfs.py): the spec's rootfs, or /usr, /etc and the /bin,
/lib links of the project's Debian root (or of the host), nothing else, plus a sysfs shared by all
sandboxes (host_mounts.SHARED_DIR) whose only network device is a loopback.

Commands run as the spec's uid/gid with no capabilities (bwrap as root, then setpriv), under a seccomp
filter close to Docker's default (seccomp.py), in the sandbox's memory/pids/cpu cgroups (cgroups.py).
Without root the same code runs bwrap unprivileged and falls back to rlimits and a plain directory,
saying so once. This module makes, lists and removes sandboxes; bwrap_sandbox.py runs their commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from agentgym.cache import cache_root
from agentgym.sandboxes import cgroups
from agentgym.sandboxes.base import SandboxBackend, SandboxError, SandboxInfo
from agentgym.sandboxes.bwrap_command import setpriv_path
from agentgym.sandboxes.bwrap_sandbox import BwrapSandbox, make_subdirs, teardown
from agentgym.sandboxes.cgroups import CgroupSet
from agentgym.sandboxes.host_mounts import mount_tmpfs
from agentgym.sandboxes.messages import last_line, warn_once
from agentgym.sandboxes.owner import Owner, current_owner
from agentgym.sandboxes.repo_source import PristineTar, pristine_tar
from agentgym.sandboxes.rootfs import RootView, root_view
from agentgym.sandboxes.spec import SandboxSpec

ID_PREFIX = "bw-"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def sandboxes_root() -> Path:
    """Where bubblewrap sandboxes of this machine keep their directories."""
    root = cache_root() / "sandboxes" / "bwrap"
    root.mkdir(parents=True, exist_ok=True)
    return root


class BwrapBackend(SandboxBackend):
    """Makes bubblewrap sandboxes on this machine and finds the ones any process left behind."""

    name = "bwrap"

    def unavailable_reason(self) -> str | None:
        """None when a quick `bwrap ... true` works here, else one line saying why not."""
        return _probe()

    def create(self, spec: SandboxSpec) -> BwrapSandbox:
        """A ready sandbox: its directory, tmpfs, cgroups and owner file made; no process runs until exec."""
        reason = _probe()
        if reason:
            raise SandboxError(f"cannot create a bubblewrap sandbox: {reason}")
        privileged = os.geteuid() == 0
        view = root_view(spec.rootfs)
        if privileged:
            setpriv_path(view.base)
        if spec.image is not None:
            warn_once(f"bwrap sandboxes ignore spec.image ({spec.image!r}): they run on spec.rootfs, "
                      "or on the project's Debian root (see sandboxes/rootfs.py)")
        repo = repo_tar(spec, view)
        sandbox_id = f"{ID_PREFIX}{secrets.token_hex(6)}"
        directory = sandboxes_root() / sandbox_id
        directory.mkdir()
        try:
            sandbox = self._prepare(spec, sandbox_id, directory, privileged, view, repo)
        except BaseException:
            if repo is not None:
                repo.close()
            with contextlib.suppress(Exception):
                teardown(directory, sandbox_id)
            raise
        try:
            sandbox.seed_repo()
        except BaseException:
            sandbox.close()
            raise
        return sandbox

    def _prepare(
        self, spec: SandboxSpec, sandbox_id: str, directory: Path, privileged: bool, view: RootView, repo: PristineTar | None
    ) -> BwrapSandbox:
        # The owner file comes first, so that gc finds this sandbox even if this process dies mid-way.
        owner = current_owner()
        record = {"id": sandbox_id, "labels": owner.labels(), "created": time.time(), "spec_key": spec.key()}
        (directory / "owner.json").write_text(json.dumps(record))
        fs = directory / "fs"
        fs.mkdir()
        tmpfs = True
        try:
            mount_tmpfs(fs, spec.disk_mb, f"agentgym-{sandbox_id}")
        except OSError as exc:
            tmpfs = False
            warn_once(f"bwrap sandboxes: cannot mount a tmpfs ({exc.strerror}); "
                      "the disk limit falls back to RLIMIT_FSIZE (per file)")
        make_subdirs(fs, spec, privileged)
        group = None
        reason = cgroups.unavailable_reason()
        if reason is None:
            group = CgroupSet.create(sandbox_id, spec.memory_mb << 20, spec.pids, spec.cpus)
        else:
            warn_once(f"bwrap sandboxes: no cgroups ({reason}); limits fall back to rlimits "
                      "(memory as address space, no CPU limit, no OOM report)")
        return BwrapSandbox(spec, sandbox_id, directory, tmpfs, group, view, repo)

    def list(self) -> list[SandboxInfo]:
        """Every bubblewrap sandbox of this machine, from the owner files under the cache directory."""
        found = []
        for directory in sorted(sandboxes_root().iterdir()):
            if not directory.is_dir() or not _ID_RE.match(directory.name):
                continue
            try:
                record = json.loads((directory / "owner.json").read_text())
                owner, created, key = Owner.from_labels(record["labels"]), float(record["created"]), record["spec_key"]
            except (OSError, ValueError, KeyError, TypeError):
                # No readable owner file: a sandbox being made right now, or one whose maker died early.
                created = directory.stat().st_mtime
                if time.time() - created < 60:
                    continue
                owner, key = Owner(0, 0), ""
            alive = owner.alive()
            found.append(SandboxInfo(id=directory.name, backend=self.name, owner_pid=owner.pid, owner_alive=alive,
                                     created=created, spec_key=key, status="running" if alive else "orphaned"))
        # Cgroups whose directory is gone (deleted by hand): nothing owns them any more, gc removes them.
        known = {info.id for info in found} | {p.name for p in sandboxes_root().iterdir()}
        with contextlib.suppress(OSError):
            for group in (cgroups.CGROUP_ROOT / "pids" / cgroups.PARENT).iterdir():
                if group.is_dir() and group.name.startswith(ID_PREFIX) and group.name not in known:
                    found.append(SandboxInfo(id=group.name, backend=self.name, owner_pid=0, owner_alive=False,
                                             created=group.stat().st_mtime, status="orphaned"))
        return found

    def remove(self, sandbox_id: str) -> None:
        """Kill a sandbox's processes and remove its cgroups, tmpfs and directory, whoever owns it."""
        if not _ID_RE.match(sandbox_id):
            raise SandboxError(f"bad sandbox id {sandbox_id!r}")
        teardown(sandboxes_root() / sandbox_id, sandbox_id)


def repo_tar(spec: SandboxSpec, view: RootView) -> PristineTar | None:
    """The pristine tar of the spec's repository: from repo.source, or what the sandbox's root holds at repo.path."""
    repo = spec.repo
    if repo is None:
        return None
    source = repo.source
    if source is None:
        source = view.base / repo.path.lstrip("/")
        if view.names is not None or not source.is_dir():
            raise SandboxError(f"repo.source is not set and {view.label} has no directory {repo.path}; "
                               "name the pristine repository's host directory or tar archive in repo.source")
    elif view.names is None:
        # A spec rootfs binds its top-level entries read-only; bwrap cannot make a mount point inside one.
        top = view.base / repo.path.lstrip("/").split("/", 1)[0]
        if top.is_dir() and not (view.base / repo.path.lstrip("/")).is_dir():
            raise SandboxError(f"rootfs {view.base} has {top.name}/ but no {repo.path} to mount the repository on; "
                               f"create that directory in the rootfs")
    return pristine_tar(source, spec.disk_mb, repo.path)


_probe_result: list[str | None] = []


def _probe() -> str | None:
    """Why bwrap cannot make sandboxes here (None: it can); computed once per process."""
    if _probe_result:
        return _probe_result[0]
    reason: str | None = None
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        reason = "bwrap not found; apt-get install bubblewrap"
    else:
        args = [bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", "--unshare-ipc",
                "--proc", "/proc", "--dev", "/dev"]
        if os.geteuid() != 0:
            args.append("--unshare-user")
        try:
            done = subprocess.run([*args, "true"], capture_output=True, text=True, timeout=20)
            if done.returncode != 0:
                reason = f"bwrap cannot create namespaces here: {last_line(done.stderr, f'exit {done.returncode}')}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = f"bwrap does not run: {exc}"
    if reason is None and os.geteuid() == 0 and shutil.which("setpriv") is None:
        reason = "setpriv not found (needed to drop root); apt-get install util-linux"
    _probe_result.append(reason)
    return reason
