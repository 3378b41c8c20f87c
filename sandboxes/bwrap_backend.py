"""The bubblewrap backend: each exec is one `bwrap` run in fresh namespaces, limited by per-sandbox cgroups.

A sandbox is a directory `cache_root()/sandboxes/bwrap/<id>/` holding `owner.json` (who made it, for gc),
`fs/` (a size-limited tmpfs mounted on the host: `work/` is bound at the spec's workdir, `tmp/` at /tmp,
`shm/` at /dev/shm, so disk_mb bounds all three) and `snapshots/`. The rest of the filesystem is a
read-only view: the spec's rootfs, or the host's /usr, /etc and the /bin, /lib links, nothing else, plus
a sysfs shared by all sandboxes (SHARED_DIR) whose only network device is a loopback.

Commands run as the spec's uid/gid with no capabilities (bwrap as root, then setpriv), under a seccomp
filter close to Docker's default, in the sandbox's memory/pids/cpu cgroups (cgroups.py). Without root
the same code runs bwrap unprivileged and falls back to rlimits and a plain directory, saying so once.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import re
import secrets
import selectors
import shutil
import signal
import stat
import struct
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from agentgym.cache import cache_root, file_lock
from agentgym.sandboxes import cgroups
from agentgym.sandboxes.base import Command, Sandbox, SandboxBackend, SandboxClosedError, SandboxError, SandboxInfo
from agentgym.sandboxes.cgroups import CgroupSet
from agentgym.sandboxes.output import CappedOutput
from agentgym.sandboxes.owner import Owner, current_owner
from agentgym.sandboxes.spec import ExecResult, SandboxSpec

log = logging.getLogger("agentgym.sandboxes")

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
# Host directories a sandbox sees (read-only) when its spec names no rootfs; /root, /home, /run, /var,
# /tmp, /work and the host's /proc and /sys stay out of sight.
HOST_VIEW = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")
# Top-level entries of a rootfs that bwrap mounts itself (or that must not come from the rootfs).
ROOTFS_SKIP = {"proc", "dev", "sys", "tmp"}
SUBDIRS = {"work": 0o755, "tmp": 0o1777, "shm": 0o1777}
ID_PREFIX = "bw-"
CHUNK = 1 << 16
KILL_GRACE_S = 5.0
MAX_SYMLINK_HOPS = 40
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SNAPSHOT_RE = re.compile(r"^snap-[0-9a-f]+$")

# Syscalls a sandbox never needs and Docker's default seccomp profile also refuses: kernel keyrings (not
# namespaced), bpf, perf, userfaultfd, io_uring, module and kexec loading, and mounting (which an
# unprivileged user could do inside a user namespace of its own).
_BLOCKED = ("keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
            "io_uring_enter", "io_uring_register", "kexec_load", "kexec_file_load", "init_module", "finit_module",
            "delete_module", "mount", "umount2", "pivot_root", "open_tree", "move_mount", "fsopen", "fsconfig",
            "fsmount", "fspick", "mount_setattr", "setns")
_SYSCALLS = {
    "x86_64": (0xC000003E, dict(clone=56, clone3=435, unshare=272, setns=308, mount=165, umount2=166, pivot_root=155,
               open_tree=428, move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433, mount_setattr=442,
               keyctl=250, add_key=248, request_key=249, bpf=321, perf_event_open=298, userfaultfd=323,
               io_uring_setup=425, io_uring_enter=426, io_uring_register=427, kexec_load=246, kexec_file_load=320,
               init_module=175, finit_module=313, delete_module=176)),
    "aarch64": (0xC00000B7, dict(clone=220, clone3=435, unshare=97, setns=268, mount=40, umount2=39, pivot_root=41,
                open_tree=428, move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433, mount_setattr=442,
                keyctl=219, add_key=217, request_key=218, bpf=280, perf_event_open=241, userfaultfd=282,
                io_uring_setup=425, io_uring_enter=426, io_uring_register=427, kexec_load=104, kexec_file_load=294,
                init_module=105, finit_module=273, delete_module=106)),
}
CLONE_NEWUSER = 0x10000000

_libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MNT_DETACH = 1, 2, 4, 8, 2
# Machine-wide mounts every sandbox shares, made once per boot (so outside the cache, which may be wiped).
SHARED_DIR = Path("/run/agentgym")
_sysfs_ready: set[Path] = set()
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def sandboxes_root() -> Path:
    """Where bubblewrap sandboxes of this machine keep their directories."""
    root = cache_root() / "sandboxes" / "bwrap"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _mount_tmpfs(target: Path, size_mb: int, source: str) -> None:
    opts = f"size={size_mb}m,mode=0755,uid=0,gid=0".encode()
    if _libc.mount(source.encode(), str(target).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(target))


def _unmount_all(target: Path) -> None:
    """Detach every mount stacked on `target`; quiet when nothing is mounted there."""
    for _ in range(16):
        if not _is_mount(target):
            return
        if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):
                return
            raise OSError(err, os.strerror(err), str(target))


def _is_mount(path: Path) -> bool:
    # mountinfo writes space, tab, newline and backslash in paths as octal escapes.
    escaped = "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in str(path))
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == escaped for line in fh)


def _kill_bwraps_using(directory: Path) -> None:
    """SIGKILL the bwrap processes whose command line names `directory` (for sandboxes without cgroups)."""
    needle = str(directory).encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = Path(entry.path, "cmdline").read_bytes()
            if cmdline.split(b"\0", 1)[0].endswith(b"bwrap") and needle in cmdline:
                os.kill(int(entry.name), signal.SIGKILL)


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for child `pid` to exit (not reaping it); False if it still runs."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(fd)


def _pid_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def teardown(directory: Path, sandbox_id: str) -> None:
    """Kill every process of a sandbox and remove its cgroups, mount and directory; idempotent."""
    group = CgroupSet(sandbox_id)
    if group.exists():
        group.remove()
    else:
        _kill_bwraps_using(directory)
    fs = directory / "fs"
    _unmount_all(fs)
    shutil.rmtree(directory, ignore_errors=True)
    if directory.exists():
        raise SandboxError(f"could not remove {directory}; is something still mounted there? (see /proc/mounts)")


def seccomp_program(machine: str | None = None) -> bytes | None:
    """A seccomp filter for bwrap --seccomp that refuses _BLOCKED and new user namespaces (None: unknown CPU)."""
    import platform

    arch = _SYSCALLS.get(machine or platform.machine())
    if arch is None:
        return None
    audit_arch, nr = arch
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    prog: list[tuple[int, int | str, int | str, int]] = [
        (ld, 0, 0, 4), (jeq, 1, 0, audit_arch), (ret, 0, 0, 0x00050000 | errno.ENOSYS),  # a foreign ABI: refuse
        (ld, 0, 0, 0),
        (jge, "eperm", 0, 0x40000000),  # x32 numbers would slip past the checks below
        *((jeq, "eperm", 0, nr[name]) for name in _BLOCKED),
        # clone3 keeps its flags in memory a filter cannot read: ENOSYS makes libc fall back to clone().
        (jeq, "enosys", 0, nr["clone3"]),
        (jeq, "flags", 0, nr["clone"]),
        (jeq, "flags", 0, nr["unshare"]),
        (ret, 0, 0, 0x7FFF0000),
    ]
    labels = {"flags": len(prog), "eperm": len(prog) + 3, "enosys": len(prog) + 4}
    prog += [(ld, 0, 0, 16), (jset, "eperm", 0, CLONE_NEWUSER), (ret, 0, 0, 0x7FFF0000),
             (ret, 0, 0, 0x00050000 | errno.EPERM), (ret, 0, 0, 0x00050000 | errno.ENOSYS)]

    def offset(i: int, target: int | str) -> int:
        return labels[target] - i - 1 if isinstance(target, str) else target

    return b"".join(struct.pack("=HBBI", code, offset(i, jt), offset(i, jf), k)
                    for i, (code, jt, jf, k) in enumerate(prog))


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
            if not _is_mount(target):
                target.mkdir(exist_ok=True)
                if host_network:
                    if _libc.mount(b"agentgym-sysfs", str(target).encode(), b"sysfs", flags, None) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, os.strerror(err), str(target))
                else:
                    # sysfs shows the devices of the network namespace that mounts it, and keeps no hold on
                    # it: an nsfs bind keeps an empty namespace (loopback only) alive for the mount.
                    netns = SHARED_DIR / "netns"
                    if not _is_mount(netns):
                        netns.touch()
                        subprocess.run(["unshare", f"--net={netns}", "true"], check=True, capture_output=True)
                    subprocess.run(["nsenter", f"--net={netns}", "mount", "-t", "sysfs", "-o", "ro,nosuid,nodev,noexec",
                                    "agentgym-sysfs", str(target)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        _warn_once(f"bwrap sandboxes: no /sys inside (cannot mount a sysfs at {target}: {exc})")
        return None
    _sysfs_ready.add(target)
    return target


def _root_view(rootfs: Path | None) -> list[str]:
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


@dataclass(eq=False)
class _Run:
    """One bwrap process of an exec: the launcher and the pid namespace's init (as a pidfd)."""

    proc: subprocess.Popen[bytes]
    pidfd: int | None
    pid_ns: str | None  # the namespace's identity ("pid:[inode]"), to find its processes in the cgroups

    def kill(self, force: bool = False) -> None:
        """SIGKILL the namespace's init, so the kernel kills every process in it, setsid'd or not.

        bwrap then exits by itself and we reap it (and it its init); `force` also kills bwrap at once,
        leaving the init for the system to reap.
        """
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        if force or self.pidfd is None:
            with contextlib.suppress(OSError):
                self.proc.kill()


class _Bytes:
    """An unbounded sink for internal commands whose output is bounded by the disk limit (archives)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        self.parts.append(chunk)

    def value(self) -> bytes:
        return b"".join(self.parts)


_Sink = CappedOutput | _Bytes


class BwrapSandbox(Sandbox):
    """A sandbox whose commands run under bubblewrap as the spec's unprivileged user."""

    backend = "bwrap"

    def __init__(self, spec: SandboxSpec, sandbox_id: str, directory: Path, tmpfs: bool, group: CgroupSet | None) -> None:
        super().__init__(spec, sandbox_id)
        self.dir = directory
        self.fs = directory / "fs"
        self._tmpfs = tmpfs
        self._cgroups = group
        self._privileged = os.geteuid() == 0
        self._bwrap = shutil.which("bwrap") or "bwrap"
        self._expires = None if spec.wall_clock_s is None else time.monotonic() + spec.wall_clock_s
        self._runs: set[_Run] = set()
        self._lock = threading.Lock()
        self._restore_point: str | None = None

    # --- commands ---
    def exec(
        self,
        cmd: Command,
        timeout: float | None = None,
        workdir: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        """Run `cmd` in a fresh bwrap as the sandbox user; output capped, the whole tree killed at the timeout."""
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else [str(a) for a in cmd]
        if not argv:
            raise SandboxError("empty command")
        out, err = CappedOutput(self.spec.output_cap_bytes), CappedOutput(self.spec.output_cap_bytes)
        cwd = self.resolve(workdir) if workdir else self.spec.workdir
        code, timed_out, duration, oom = self._run(argv, cwd, env, timeout, None, out, err)
        return ExecResult(
            exit_code=code,
            stdout=out.text(),
            stderr=err.text(),
            timed_out=timed_out,
            duration=duration,
            oom_killed=oom,
            stdout_truncated=out.dropped,
            stderr_truncated=err.dropped,
        )

    def _run(
        self,
        argv: list[str],
        cwd: str,
        env: Mapping[str, str] | None,
        timeout: float | None,
        stdin: bytes | None,
        out: _Sink,
        err: _Sink,
    ) -> tuple[int, bool, float, bool]:
        """Run argv to its end or timeout; returns (exit code, timed out, seconds, OOM-killed)."""
        self._check_open()
        limit = self.spec.exec_timeout_s if timeout is None else timeout
        if self._expires is not None:
            limit = min(limit, self._expires - time.monotonic())
        start = time.monotonic()
        try:
            run, oom_before = self._spawn(argv, cwd, self._environment(env), stdin is not None)
        except OSError as exc:
            if self.closed:
                raise SandboxClosedError(f"sandbox {self.id} was closed") from exc
            raise SandboxError(f"cannot start a command in sandbox {self.id}: {exc}") from exc
        with self._lock:
            self._runs.add(run)
        try:
            timed_out = self._pump(run, stdin, out, err, start + limit)
            # Popen.wait(timeout) polls with growing sleeps; a pidfd says at once when bwrap has exited.
            if not _wait_exit(run.proc.pid, max(0.05, start + limit - time.monotonic())):
                timed_out = True  # killed already, or it closed its output but kept running
                run.kill()
                if not _wait_exit(run.proc.pid, KILL_GRACE_S):
                    run.kill(force=True)
            code = run.proc.wait()
        except BaseException:
            run.kill(force=True)  # e.g. KeyboardInterrupt: the command must not outlive the call
            run.proc.wait()
            raise
        finally:
            with self._lock:
                self._runs.discard(run)
            if run.pidfd is not None:
                os.close(run.pidfd)
            for pipe in (run.proc.stdin, run.proc.stdout, run.proc.stderr):
                if pipe is not None:
                    pipe.close()
        if self._cgroups is not None and run.pid_ns is not None:
            # The kernel kills what is left in a pid namespace when its init dies, but asynchronously.
            # After a timeout, wait until none of the run's processes is left; otherwise one pass, no wait.
            self._cgroups.kill_all(KILL_GRACE_S if timed_out else 0, match=lambda pid: _pid_ns(pid) == run.pid_ns)
        oom = self._cgroups is not None and self._cgroups.oom_kills() > oom_before
        code = 137 if timed_out else (128 - code if code < 0 else code)
        return code, timed_out, time.monotonic() - start, oom

    def _check_open(self) -> None:
        """Raise if the sandbox is closed, closing it first when its wall-clock limit has run out."""
        if not self.closed and self._expires is not None and time.monotonic() >= self._expires:
            self.close()
            limit = self.spec.wall_clock_s
            raise SandboxClosedError(f"sandbox {self.id} reached its wall-clock limit ({limit}s) and was closed")
        super()._check_open()

    def _environment(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        # Never the host's environment: only these, the spec's and the call's.
        env = {"PATH": BASE_PATH, "HOME": self.spec.workdir, "LANG": "C.UTF-8"}
        env.update(self.spec.env)
        env.update({str(k): str(v) for k, v in (extra or {}).items()})
        return env

    def _spawn(self, argv: list[str], cwd: str, env: dict[str, str], with_stdin: bool) -> tuple[_Run, int]:
        """Start bwrap, hold its sandboxed child until it is inside the cgroups, then let it run."""
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        passed = [info_w, block_r]
        args = [self._bwrap, *self._static_args, "--chdir", cwd, "--info-fd", str(info_w), "--block-fd", str(block_r)]
        try:
            if _SECCOMP:
                # bwrap reads the filter to EOF; a pipe holds it (a few hundred bytes) without a file.
                seccomp_r, seccomp_w = os.pipe()
                passed.append(seccomp_r)
                os.write(seccomp_w, _SECCOMP)
                os.close(seccomp_w)
                args += ["--seccomp", str(seccomp_r)]
            proc = subprocess.Popen(
                [*args, "--", *self._drop_privileges, *argv],
                stdin=subprocess.PIPE if with_stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                pass_fds=passed,
                start_new_session=True,
            )
        except BaseException:
            for fd in (info_r, block_w):
                os.close(fd)
            raise
        finally:
            for fd in passed:
                os.close(fd)
        try:
            info = b""
            while chunk := os.read(info_r, 4096):
                info += chunk
        finally:
            os.close(info_r)
        pidfd, pid_ns, child, oom_before = None, None, 0, 0
        try:
            # Empty info: bwrap failed before it made the sandbox; its stderr says why.
            child = int(json.loads(info)["child-pid"]) if info else 0
            if child:
                pidfd = os.pidfd_open(child)
                pid_ns = _pid_ns(child)
                self._confine(child)
                if self._cgroups is not None:
                    oom_before = self._cgroups.oom_kills()
            os.write(block_w, b"x")
        except ProcessLookupError:
            pass  # the child died during setup (so nothing runs unconfined); wait() reports it
        except BaseException:
            # Never let a child run outside its limits: kill it before it leaves the block.
            _Run(proc, pidfd, None).kill()
            if pidfd is None and child:
                with contextlib.suppress(OSError):
                    os.kill(child, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            os.close(block_w)
        return _Run(proc, pidfd, pid_ns), oom_before

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

    def _pump(self, run: _Run, stdin: bytes | None, out: _Sink, err: _Sink, deadline: float) -> bool:
        """Feed stdin and read both output pipes until they close; kill the run at the deadline (returns True)."""
        proc = run.proc
        assert proc.stdout is not None and proc.stderr is not None
        sinks = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
        pending = memoryview(stdin or b"")
        timed_out = False
        with selectors.DefaultSelector() as sel:
            for fd in sinks:
                sel.register(fd, selectors.EVENT_READ)
            if proc.stdin is not None:
                os.set_blocking(proc.stdin.fileno(), False)
                sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
            while sel.get_map():
                wait = deadline - time.monotonic()
                if wait <= 0:
                    if timed_out:
                        break  # killed, and the pipes still did not close within the grace period
                    timed_out = True
                    run.kill()
                    deadline = time.monotonic() + KILL_GRACE_S
                    continue
                for key, _ in sel.select(wait):
                    if key.fd in sinks:
                        chunk = os.read(key.fd, CHUNK)
                        if chunk:
                            sinks[key.fd].feed(chunk)
                        else:
                            sel.unregister(key.fd)
                        continue
                    try:
                        pending = pending[os.write(key.fd, pending[:CHUNK]):]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(key.fd)
                        assert proc.stdin is not None
                        proc.stdin.close()
        return timed_out

    @cached_property
    def _static_args(self) -> list[str]:
        """The bwrap options every exec of this sandbox shares."""
        spec = self.spec
        args = ["--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--hostname", "agentgym"]
        if not spec.network:
            args.append("--unshare-net")
        if self._privileged:
            # Root keeps only what setpriv needs to become the sandbox user; setpriv then drops all.
            args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
        else:
            args += ["--unshare-user", "--uid", str(spec.uid), "--gid", str(spec.gid)]
        args += _root_view(spec.rootfs)
        sysfs = shared_sysfs(spec.network)
        if sysfs is not None:
            args += ["--ro-bind", str(sysfs), "/sys"]
        args += ["--proc", "/proc", "--dev", "/dev",
                 "--bind", str(self.fs / "tmp"), "/tmp",
                 "--bind", str(self.fs / "shm"), "/dev/shm",
                 "--bind", str(self.fs / "work"), spec.workdir]
        return args

    @cached_property
    def _drop_privileges(self) -> list[str]:
        """The command prefix that turns bwrap's root child into the sandbox user with no capabilities."""
        if not self._privileged:
            return []  # an unprivileged bwrap already runs the command as the caller, without capabilities
        spec = self.spec
        return [_setpriv_path(spec.rootfs), "--reuid", str(spec.uid), "--regid", str(spec.gid), "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]

    # --- files ---
    def _host_base(self, path: str) -> tuple[Path, str, str]:
        """The host directory behind the writable tree that holds sandbox path `path`, that tree's path, and the rest."""
        trees = sorted([(self.spec.workdir, self.fs / "work"), ("/tmp", self.fs / "tmp")], key=lambda t: -len(t[0]))
        for root, host in trees:
            if path == root or path.startswith(root + "/"):
                return host, root, path[len(root):].lstrip("/")
        raise SandboxError(f"{path!r} is outside the sandbox's writable directories ({self.spec.workdir}, /tmp)")

    def _lookup(self, path: str, create_parents: bool = False) -> tuple[int, str]:
        """An O_PATH fd of the directory holding `path` and the final name, following the sandbox's own
        symlinks inside its namespace (never the host's) and refusing any that lead out of its trees."""
        pending = self.resolve(path)
        for _ in range(MAX_SYMLINK_HOPS):
            host, root, rest = self._host_base(pending)
            parts = [p for p in rest.split("/") if p]
            if not parts:
                raise SandboxError(f"{path!r} is a directory")
            fd = os.open(host, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            current, redirect = root, None
            try:
                for i, name in enumerate(parts):
                    last = i == len(parts) - 1
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        if last:
                            break
                        if not create_parents:
                            raise SandboxError(f"{path!r}: no such file or directory") from None
                        os.mkdir(name, 0o755, dir_fd=fd)
                        self._own(name, fd)
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode):
                        target = os.readlink(name, dir_fd=fd)
                        redirect = os.path.normpath(os.path.join(current, target, *parts[i + 1:]))
                        break
                    if last:
                        break
                    if not stat.S_ISDIR(st.st_mode):
                        raise SandboxError(f"{path!r}: {current}/{name} is not a directory")
                    # O_NOFOLLOW: if the agent swapped the directory for a link since the stat, fail, never follow.
                    next_fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                    os.close(fd)
                    fd = next_fd
                    current = f"{current}/{name}"
            except BaseException as exc:
                os.close(fd)
                if isinstance(exc, OSError):
                    raise SandboxError(f"{path!r}: {exc.strerror}") from exc
                raise
            if redirect is None:
                return fd, parts[-1]
            os.close(fd)
            pending = redirect
        raise SandboxError(f"{path!r}: too many levels of symbolic links")

    def _own(self, name: str, dir_fd: int) -> None:
        if self._privileged:
            os.chown(name, self.spec.uid, self.spec.gid, dir_fd=dir_fd, follow_symlinks=False)

    def write_file(self, path: str, data: bytes | str) -> None:
        """Create or replace a file (parents created), owned by the sandbox user."""
        self._check_open()
        payload = data.encode() if isinstance(data, str) else bytes(data)
        dir_fd, name = self._lookup(path, create_parents=True)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
        except OSError as exc:
            raise SandboxError(f"cannot write {path!r}: {exc.strerror}") from exc
        finally:
            os.close(dir_fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SandboxError(f"cannot write {path!r}: not a regular file")
            if self._privileged:
                os.fchown(fd, self.spec.uid, self.spec.gid)
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            hint = f" (the sandbox's disk limit is {self.spec.disk_mb} MB)" if exc.errno == errno.ENOSPC else ""
            raise SandboxError(f"cannot write {path!r}: {exc.strerror}{hint}") from exc
        finally:
            os.close(fd)

    def read_file(self, path: str) -> bytes:
        """A file's bytes; SandboxError if it is missing, not a regular file, or outside the sandbox."""
        self._check_open()
        dir_fd, name = self._lookup(path)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            raise SandboxError(f"cannot read {path!r}: {exc.strerror}") from exc
        finally:
            os.close(dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise SandboxError(f"cannot read {path!r}: not a regular file")
        with os.fdopen(fd, "rb") as fh:
            return fh.read()

    def put_archive(self, path: str, tar_bytes: bytes) -> None:
        """Unpack a tar into directory `path` (tar runs inside: links resolve there, files are the user's)."""
        target = self.resolve(path)
        self._host_base(target)
        script = 'mkdir -p -- "$1" && exec tar -x -p --no-same-owner -f - -C "$1"'
        self._internal(["/bin/sh", "-c", script, "sh", target], tar_bytes, f"cannot unpack an archive into {path!r}")

    def get_archive(self, path: str) -> bytes:
        """A tar of `path` (a file or directory) with its basename as the top entry, made inside the sandbox."""
        target = self.resolve(path)
        self._host_base(target)
        parent, base = os.path.split(target)
        return self._internal(["tar", "-c", "-f", "-", "-C", parent or "/", "--", base], None, f"cannot archive {path!r}")

    def _internal(self, argv: list[str], stdin: bytes | None, what: str) -> bytes:
        out, err = _Bytes(), CappedOutput(1 << 16)
        code, timed_out, _, _ = self._run(argv, "/", None, None, stdin, out, err)
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
                run.kill(force=True)

    def _clear(self) -> None:
        """Kill everything and give the sandbox empty writable trees."""
        self._kill_everything()
        if self._tmpfs:
            # A fresh tmpfs is faster than deleting many files, and drops every open handle on the old one.
            _unmount_all(self.fs)
            _mount_tmpfs(self.fs, self.spec.disk_mb, f"agentgym-{self.id}")
        else:
            for sub in SUBDIRS:
                shutil.rmtree(self.fs / sub, ignore_errors=True)
        _make_subdirs(self.fs, self.spec, self._privileged)

    def reset(self) -> None:
        """Back to the state the sandbox was created in, or to its last restored snapshot."""
        self._check_open()
        if self._restore_point is not None:
            self.restore(self._restore_point)
        else:
            self._clear()

    def snapshot(self) -> str:
        """Copy the writable trees (workdir, /tmp, /dev/shm) to the sandbox's directory; returns the snapshot id."""
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
        self._kill_everything()
        teardown(self.dir, self.id)


def _copy_tree(source: Path, dest: Path) -> None:
    # cp -a keeps owners, modes, links and hard links, and never follows the agent's symlinks.
    done = subprocess.run(["cp", "-a", "--", f"{source}/.", f"{dest}/"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SandboxError(f"copying {source} to {dest} failed: {done.stderr.strip()}")


def _make_subdirs(fs: Path, spec: SandboxSpec, privileged: bool) -> None:
    for sub, mode in SUBDIRS.items():
        path = fs / sub
        path.mkdir(exist_ok=True)
        os.chmod(path, mode)
        if privileged:
            os.chown(path, spec.uid, spec.gid)


def _setpriv_path(rootfs: Path | None) -> str:
    """Where setpriv is inside the sandbox (util-linux; essential in Debian, so also in Debian rootfses)."""
    base = Path(rootfs) if rootfs else Path("/")
    for candidate in ("usr/bin/setpriv", "bin/setpriv"):
        if (base / candidate).exists():
            return f"/{candidate}"
    raise SandboxError(f"setpriv not found in {base}; install util-linux there (apt-get install util-linux)")


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
        if spec.rootfs is not None and not Path(spec.rootfs).is_dir():
            raise SandboxError(f"rootfs {str(spec.rootfs)!r} is not a directory")
        if privileged:
            _setpriv_path(spec.rootfs)
        if spec.image is not None:
            _warn_once(f"bwrap sandboxes ignore spec.image ({spec.image!r}): they run on spec.rootfs, "
                       "or on the host's read-only /usr and /etc")
        sandbox_id = f"{ID_PREFIX}{secrets.token_hex(6)}"
        directory = sandboxes_root() / sandbox_id
        directory.mkdir()
        try:
            return self._prepare(spec, sandbox_id, directory, privileged)
        except BaseException:
            with contextlib.suppress(Exception):
                teardown(directory, sandbox_id)
            raise

    def _prepare(self, spec: SandboxSpec, sandbox_id: str, directory: Path, privileged: bool) -> BwrapSandbox:
        # The owner file comes first, so that gc finds this sandbox even if this process dies mid-way.
        owner = current_owner()
        record = {"id": sandbox_id, "pid": owner.pid, "start_ticks": owner.start_ticks, "labels": owner.labels(),
                  "created": time.time(), "spec_key": spec.key()}
        (directory / "owner.json").write_text(json.dumps(record))
        fs = directory / "fs"
        fs.mkdir()
        tmpfs = True
        try:
            _mount_tmpfs(fs, spec.disk_mb, f"agentgym-{sandbox_id}")
        except OSError as exc:
            tmpfs = False
            _warn_once(f"bwrap sandboxes: cannot mount a tmpfs ({exc.strerror}); "
                       "the disk limit falls back to RLIMIT_FSIZE (per file)")
        _make_subdirs(fs, spec, privileged)
        group = None
        reason = cgroups.unavailable_reason()
        if reason is None:
            group = CgroupSet.create(sandbox_id, spec.memory_mb << 20, spec.pids, spec.cpus)
        else:
            _warn_once(f"bwrap sandboxes: no cgroups ({reason}); limits fall back to rlimits "
                       "(memory as address space, no CPU limit, no OOM report)")
        return BwrapSandbox(spec, sandbox_id, directory, tmpfs, group)

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


_SECCOMP = seccomp_program()
if _SECCOMP is None:
    log.warning("bwrap sandboxes: no seccomp filter for this CPU architecture; user namespaces stay available inside")

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
                last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
                reason = f"bwrap cannot create namespaces here: {last}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = f"bwrap does not run: {exc}"
    if reason is None and os.geteuid() == 0 and shutil.which("setpriv") is None:
        reason = "setpriv not found (needed to drop root); apt-get install util-linux"
    _probe_result.append(reason)
    return reason
