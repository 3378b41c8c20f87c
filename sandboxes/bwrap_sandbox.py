"""One bubblewrap sandbox: each exec a fresh bwrap as the sandbox user, its files kept in a host directory.

The directory layout, limits and isolation are described in bwrap_backend.py, which makes these sandboxes.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import IO

from agentgym.sandboxes.base import Sandbox, SandboxClosedError, SandboxError
from agentgym.sandboxes.bwrap_command import drop_privileges, sandbox_args
from agentgym.sandboxes.bwrap_process import (
    KILL_GRACE_S,
    BwrapRun,
    ByteSink,
    Sink,
    kill_bwraps_using,
    pid_ns,
    pump,
    reap,
    spawn,
    wait_exit,
)
from agentgym.sandboxes.cgroups import CgroupSet
from agentgym.sandboxes.host_files import HostFiles
from agentgym.sandboxes.host_mounts import mount_tmpfs, unmount_all
from agentgym.sandboxes.messages import log
from agentgym.sandboxes.output import CappedOutput
from agentgym.sandboxes.repo_source import PristineTar
from agentgym.sandboxes.rootfs import RootView
from agentgym.sandboxes.seccomp import seccomp_program
from agentgym.sandboxes.spec import SandboxSpec

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
SUBDIRS = {"work": 0o755, "tmp": 0o1777, "shm": 0o1777}
_SNAPSHOT_RE = re.compile(r"^snap-[0-9a-f]+$")
# The longest a snapshot's or restore's copy of the writable trees (at most disk_mb) may take.
COPY_TIMEOUT_S = 300.0

_SECCOMP = seccomp_program()
if _SECCOMP is None:
    log.warning("bwrap sandboxes: no seccomp filter for this CPU architecture; user namespaces stay available inside")


def teardown(directory: Path, sandbox_id: str) -> None:
    """Kill every process of a sandbox and remove its cgroups, mount and directory; idempotent."""
    group = CgroupSet(sandbox_id)
    if group.exists():
        group.remove()
    else:
        kill_bwraps_using(directory)
    fs = directory / "fs"
    unmount_all(fs)
    shutil.rmtree(directory, ignore_errors=True)
    if directory.exists():
        raise SandboxError(f"could not remove {directory}; is something still mounted there? (see /proc/mounts)")


def make_subdirs(fs: Path, spec: SandboxSpec, privileged: bool) -> None:
    """Make the writable trees (workdir, /tmp, /dev/shm, the repository) under `fs`, owned by the sandbox user when root."""
    subdirs = dict(SUBDIRS)
    if spec.repo is not None and spec.repo.path != spec.workdir:
        subdirs["repo"] = 0o755
    for sub, mode in subdirs.items():
        path = fs / sub
        path.mkdir(exist_ok=True)
        os.chmod(path, mode)
        if privileged:
            os.chown(path, spec.uid, spec.gid)


def _copy_tree(source: Path, dest: Path) -> None:
    """Copy a sandbox's writable trees on the host (snapshot, restore)."""
    # cp -a keeps owners, modes, links and hard links, never follows the agent's symlinks, and makes fifos
    # rather than reading them; the deadline still bounds a copy the host is too slow for.
    try:
        done = subprocess.run(["cp", "-a", "--", f"{source}/.", f"{dest}/"], capture_output=True, text=True,
                              timeout=COPY_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"copying {source} to {dest} took over {COPY_TIMEOUT_S:g}s") from exc
    if done.returncode != 0:
        raise SandboxError(f"copying {source} to {dest} failed: {done.stderr.strip()}")


class BwrapSandbox(Sandbox):
    """A sandbox whose commands run under bubblewrap as the spec's unprivileged user."""

    backend = "bwrap"

    def __init__(
        self,
        spec: SandboxSpec,
        sandbox_id: str,
        directory: Path,
        tmpfs: bool,
        group: CgroupSet | None,
        view: RootView,
        repo: PristineTar | None = None,
    ) -> None:
        super().__init__(spec, sandbox_id)
        self.view = view
        self._repo = repo
        self.dir = directory
        self.fs = directory / "fs"
        self._tmpfs = tmpfs
        self._cgroups = group
        self._privileged = os.geteuid() == 0
        self._bwrap = shutil.which("bwrap") or "bwrap"
        self._runs: set[BwrapRun] = set()
        self._lock = threading.Lock()
        self._restore_point: str | None = None
        self._files = HostFiles(self.fs, spec, self._privileged)

    # --- commands ---
    def _exec(
        self,
        argv: list[str],
        deadline: float,
        workdir: str | None,
        env: Mapping[str, str] | None,
        stdout: CappedOutput,
        stderr: CappedOutput,
    ) -> tuple[int, bool, bool]:
        """Run argv in a fresh bwrap as the sandbox user; the whole process tree is killed at the deadline."""
        return self._run(argv, workdir or self.spec.workdir, env, deadline, None, stdout, stderr)

    def _run(
        self,
        argv: list[str],
        cwd: str,
        env: Mapping[str, str] | None,
        deadline: float,
        stdin: bytes | IO[bytes] | None,
        out: Sink,
        err: Sink,
    ) -> tuple[int, bool, bool]:
        """Run argv to its end or the deadline; returns (exit code, timed out, OOM-killed).

        `stdin` as bytes is fed through a pipe; as a file, the command reads it directly.
        """
        self._check_open()
        start = time.monotonic()
        limit = deadline - start
        stdin_file = None if stdin is None or isinstance(stdin, (bytes, bytearray)) else stdin
        stdin_bytes = None if stdin_file is not None else stdin
        try:
            run, oom_before = self._spawn(argv, cwd, self._environment(env), stdin_bytes is not None, stdin_file)
        except OSError as exc:
            if self.closed:
                raise SandboxClosedError(f"sandbox {self.id} was closed") from exc
            raise SandboxError(f"cannot start a command in sandbox {self.id}: {exc}") from exc
        with self._lock:
            self._runs.add(run)
        try:
            timed_out = pump(run, stdin_bytes, out, err, start + limit)
            # Popen.wait(timeout) polls with growing sleeps; a pidfd says at once when bwrap has exited.
            if not wait_exit(run.proc.pid, max(0.05, start + limit - time.monotonic())):
                timed_out = True  # killed already, or it closed its output but kept running
                run.kill()
                if not wait_exit(run.proc.pid, KILL_GRACE_S):
                    run.kill(force=True)
            code = reap(run.proc)
        except BaseException:
            run.kill(force=True)  # e.g. KeyboardInterrupt: the command must not outlive the call
            reap(run.proc)
            raise
        finally:
            with self._lock:
                self._runs.discard(run)
            if run.pidfd is not None:
                os.close(run.pidfd)
            for pipe in (run.proc.stdin, run.proc.stdout, run.proc.stderr):
                if pipe is not None:
                    pipe.close()
        if code is None:
            timed_out, code = True, -9  # bwrap outlived its SIGKILL: report the command as killed
        if self._cgroups is not None and run.pid_ns is not None:
            # The kernel kills what is left in a pid namespace when its init dies, but asynchronously.
            # After a timeout, wait until none of the run's processes is left; otherwise one pass, no wait.
            self._cgroups.kill_all(KILL_GRACE_S if timed_out else 0, match=lambda pid: pid_ns(pid) == run.pid_ns)
        oom = self._cgroups is not None and self._cgroups.oom_kills() > oom_before
        code = 137 if timed_out else (128 - code if code < 0 else code)
        return code, timed_out, oom

    def _environment(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        # Never the host's environment: only these, the spec's and the call's.
        env = {"PATH": BASE_PATH, "HOME": self.spec.workdir, "LANG": "C.UTF-8"}
        env.update(self.spec.env)
        env.update({str(k): str(v) for k, v in (extra or {}).items()})
        return env

    def _spawn(
        self, argv: list[str], cwd: str, env: dict[str, str], with_stdin: bool, stdin_file: IO[bytes] | None = None
    ) -> tuple[BwrapRun, int]:
        """Start bwrap for argv in `cwd`, confined to this sandbox's limits before the command runs."""
        bwrap_args = [self._bwrap, *self._static_args, "--chdir", cwd]
        command = [*self._drop_privileges, *argv]
        return spawn(bwrap_args, command, env, with_stdin, _SECCOMP, self._confine, self._cgroups, stdin_file=stdin_file)

    def _confine(self, pid: int) -> None:
        """Put the sandboxed child into the cgroups (or give it rlimits) while it waits on the block fd."""
        import resource

        resource.prlimit(pid, resource.RLIMIT_CORE, (0, 0))
        if self._cgroups is not None:
            self._cgroups.add(pid)
        else:
            mem = self.spec.memory_mb << 20
            resource.prlimit(pid, resource.RLIMIT_AS, (mem, mem))
            if self._privileged:  # RLIMIT_NPROC counts per uid: only meaningful for the dedicated sandbox uid
                resource.prlimit(pid, resource.RLIMIT_NPROC, (self.spec.pids, self.spec.pids))
        if not self._tmpfs:
            disk = self.spec.disk_mb << 20
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (disk, disk))

    @cached_property
    def _static_args(self) -> list[str]:
        """The bwrap options every exec of this sandbox shares."""
        return sandbox_args(self.spec, self.fs, self._privileged, self.view)

    @cached_property
    def _drop_privileges(self) -> list[str]:
        """The command prefix that turns bwrap's root child into the sandbox user with no capabilities."""
        return drop_privileges(self.spec, self._privileged, self.view)

    # --- files ---
    def write_file(self, path: str, data: bytes | str) -> None:
        """Create or replace a file (parents created), owned by the sandbox user."""
        self._check_open()
        payload = data.encode() if isinstance(data, str) else bytes(data)
        self._files.write(path, self.resolve(path), payload)

    def read_file(self, path: str) -> bytes:
        """A file's bytes; SandboxError if it is missing, not a regular file, or outside the sandbox."""
        self._check_open()
        return self._files.read(path, self.resolve(path))

    def put_archive(self, path: str, tar_bytes: bytes) -> None:
        """Unpack a tar into directory `path` (tar runs inside: links resolve there, files are the user's)."""
        target = self.resolve(path)
        self._files.tree_of(target)
        script = 'mkdir -p -- "$1" && exec tar -x -p --no-same-owner -f - -C "$1"'
        self._internal(["/bin/sh", "-c", script, "sh", target], tar_bytes, f"cannot unpack an archive into {path!r}")

    def get_archive(self, path: str) -> bytes:
        """A tar of `path` (a file or directory) with its basename as the top entry, made inside the sandbox."""
        target = self.resolve(path)
        self._files.tree_of(target)
        parent, base = os.path.split(target)
        return self._internal(["tar", "-c", "-f", "-", "-C", parent or "/", "--", base], None, f"cannot archive {path!r}")

    def _internal(self, argv: list[str], stdin: bytes | IO[bytes] | None, what: str, timeout: float | None = None) -> bytes:
        out, err = ByteSink(), CappedOutput(1 << 16)
        code, timed_out, _ = self._run(argv, "/", None, self.exec_deadline(timeout), stdin, out, err)
        if code != 0 or timed_out:
            detail = "; ".join(err.text().strip().splitlines())[:500]
            reason = "timed out" if timed_out else (detail or f"exit status {code}")
            raise SandboxError(f"{what}: {reason}")
        return out.value()

    # --- lifecycle ---
    def _kill_everything(self) -> None:
        with self._lock:
            runs = list(self._runs)
        for run in runs:
            run.kill()
        if self._cgroups is not None:
            self._cgroups.kill_all()
        for run in runs:
            try:
                run.proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                run.kill(force=True)  # the exec's own thread reaps it, within its own deadline

    def _clear(self) -> None:
        """Kill everything and give the sandbox empty writable trees."""
        self._kill_everything()
        if self._tmpfs:
            # A fresh tmpfs is faster than deleting many files, and drops every open handle on the old one.
            unmount_all(self.fs)
            mount_tmpfs(self.fs, self.spec.disk_mb, f"agentgym-{self.id}")
        else:
            for sub in SUBDIRS:
                shutil.rmtree(self.fs / sub, ignore_errors=True)
        make_subdirs(self.fs, self.spec, self._privileged)

    def seed_repo(self) -> None:
        """Unpack the repository's pristine tar into its (empty) tree, as the sandbox user; nothing without a repo."""
        if self._repo is None or self.spec.repo is None:
            return
        path = self.spec.repo.path
        argv = ["tar", "-x", "-p", "-f", "-", "-C", path]
        if self._repo.strip:
            argv.append(f"--strip-components={self._repo.strip}")
        with self._repo.open() as source:
            try:
                # Unpacked inside the sandbox: its files are the user's, and no link in it can reach the host.
                self._internal(argv, source, f"cannot unpack the repository into {path}",
                               timeout=max(self.spec.exec_timeout_s, COPY_TIMEOUT_S))
            except SandboxError as exc:
                hint = f" (the disk limit is {self.spec.disk_mb} MB)" if "No space left" in str(exc) else ""
                raise SandboxError(f"{exc}{hint}") from exc

    def reset(self) -> None:
        """Back to the state the sandbox was created in (the repository pristine again), or its last restored snapshot."""
        self._check_open()
        if self._restore_point is not None:
            self.restore(self._restore_point)
        else:
            self._clear()
            self.seed_repo()

    def snapshot(self) -> str:
        """Copy the writable trees (workdir, /tmp, /dev/shm, the repository) to the sandbox's directory; returns its id."""
        self._check_open()
        snap_id = f"snap-{secrets.token_hex(6)}"
        dest = self.dir / "snapshots" / snap_id
        dest.mkdir(parents=True)
        _copy_tree(self.fs, dest)
        return snap_id

    def restore(self, snapshot_id: str) -> None:
        """Put back the writable trees recorded by snapshot(); processes still running are killed."""
        self._check_open()
        source = self.dir / "snapshots" / snapshot_id
        if not _SNAPSHOT_RE.match(snapshot_id) or not source.is_dir():
            raise SandboxError(f"sandbox {self.id} has no snapshot {snapshot_id!r}")
        self._clear()
        _copy_tree(source, self.fs)
        self._restore_point = snapshot_id

    def _close(self) -> None:
        try:
            self._kill_everything()
            teardown(self.dir, self.id)
        finally:
            if self._repo is not None:
                self._repo.close()
