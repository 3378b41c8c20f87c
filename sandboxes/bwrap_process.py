"""The bwrap processes of a sandbox's execs: starting one confined, feeding and reading its pipes, killing it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from agentgym.sandboxes.base import SandboxError
from agentgym.sandboxes.cgroups import CgroupSet
from agentgym.sandboxes.output import CappedOutput

log = logging.getLogger(__name__)

CHUNK = 1 << 16
KILL_GRACE_S = 5.0
# How long bwrap may take to set a sandbox up and report its child (a few ms when the host is well).
START_TIMEOUT_S = 30.0


@dataclass(eq=False)
class BwrapRun:
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


class ByteSink:
    """An unbounded sink for internal commands whose output is bounded by the disk limit (archives)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        """Keep the next piece of the stream."""
        self.parts.append(chunk)

    def value(self) -> bytes:
        """Everything fed so far."""
        return b"".join(self.parts)


Sink = CappedOutput | ByteSink


def kill_bwraps_using(directory: Path) -> None:
    """SIGKILL the bwrap processes whose command line names `directory` (for sandboxes without cgroups)."""
    needle = str(directory).encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = Path(entry.path, "cmdline").read_bytes()
            if cmdline.split(b"\0", 1)[0].endswith(b"bwrap") and needle in cmdline:
                os.kill(int(entry.name), signal.SIGKILL)


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for child `pid` to exit (not reaping it); False if it still runs."""
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


def reap(proc: subprocess.Popen[bytes], timeout: float = KILL_GRACE_S) -> int | None:
    """Reap a bwrap process that was killed or has exited: its return code, or None if it outlived `timeout`."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGKILLed and still there: stuck in the kernel. Popen reaps it later; the caller must not hang on it.
        log.warning("bwrap process %d was still there %.0fs after SIGKILL; leaving it to be reaped later", proc.pid, timeout)
        return None


def read_info(fd: int, timeout: float) -> bytes:
    """Everything bwrap writes on its info fd, up to its end; SandboxError when that takes over `timeout` seconds."""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    info = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            raise SandboxError(f"bwrap did not report its sandbox within {timeout:g}s")
        chunk = os.read(fd, 4096)
        if not chunk:
            return info
        info += chunk


def pid_ns(pid: int) -> str | None:
    """The pid namespace of process `pid` ("pid:[inode]"), or None when it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def spawn(
    bwrap_args: list[str],
    command: list[str],
    env: dict[str, str],
    with_stdin: bool,
    seccomp: bytes | None,
    confine: Callable[[int], None],
    cgroups: CgroupSet | None,
    stdin_file: IO[bytes] | None = None,
) -> tuple[BwrapRun, int]:
    """Start bwrap, let `command` run once `confine` has limited its child; the run and the OOM kills before it.

    `stdin_file` (a real file) becomes the command's stdin as it is, so a large archive is never copied through us.
    """
    info_r, info_w = os.pipe()
    block_r, block_w = os.pipe()
    passed = [info_w, block_r]
    args = [*bwrap_args, "--info-fd", str(info_w), "--block-fd", str(block_r)]
    try:
        if seccomp:
            # bwrap reads the filter to EOF; a pipe holds it (a few hundred bytes) without a file.
            seccomp_r, seccomp_w = os.pipe()
            passed.append(seccomp_r)
            os.write(seccomp_w, seccomp)
            os.close(seccomp_w)
            args += ["--seccomp", str(seccomp_r)]
        proc = subprocess.Popen(
            [*args, "--", *command],
            stdin=stdin_file if stdin_file is not None else subprocess.PIPE if with_stdin else subprocess.DEVNULL,
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
        info = read_info(info_r, START_TIMEOUT_S)
    except BaseException:
        # bwrap never reported its child, so nothing of the command runs yet (it waits on the block fd).
        # Kill bwrap first (its child dies with it) and only then close the block fd: end of file there
        # would let the command start unconfined.
        with contextlib.suppress(OSError):
            proc.kill()
        reap(proc)
        os.close(block_w)
        raise
    finally:
        os.close(info_r)
    pidfd, namespace, child, oom_before = None, None, 0, 0
    try:
        # Empty info: bwrap failed before it made the sandbox; its stderr says why.
        child = int(json.loads(info)["child-pid"]) if info else 0
        if child:
            pidfd = os.pidfd_open(child)
            namespace = pid_ns(child)
            confine(child)
            if cgroups is not None:
                oom_before = cgroups.oom_kills()
        os.write(block_w, b"x")
    except ProcessLookupError:
        pass  # the child died during setup (so nothing runs unconfined); wait() reports it
    except BaseException:
        # Never let a child run outside its limits: kill it before it leaves the block.
        BwrapRun(proc, pidfd, None).kill()
        if pidfd is None and child:
            with contextlib.suppress(OSError):
                os.kill(child, signal.SIGKILL)
        reap(proc)
        raise
    finally:
        os.close(block_w)
    return BwrapRun(proc, pidfd, namespace), oom_before


def pump(run: BwrapRun, stdin: bytes | None, out: Sink, err: Sink, deadline: float) -> bool:
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
