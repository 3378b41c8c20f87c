"""Warm sandboxes of one spec, handed out at once and reset to a clean state between episodes."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator

from agentgym.sandboxes.base import Sandbox, SandboxBackend, SandboxError
from agentgym.sandboxes.factory import get_backend
from agentgym.sandboxes.spec import SandboxSpec

log = logging.getLogger(__name__)

# Every pool of the process, so that exit and signal handlers stop their workers before closing sandboxes.
_POOLS: weakref.WeakSet[SandboxPool] = weakref.WeakSet()
_POOLS_LOCK = threading.Lock()


def close_all_pools() -> None:
    """Close every pool of this process, waiting for their workers (cleanup.close_all calls this first)."""
    with _POOLS_LOCK:
        pools = list(_POOLS)
    for pool in pools:
        pool.close()


class SandboxPool:
    """Keeps up to `warm` ready sandboxes of one spec and at most `max_size` in existence.

    `acquire()` hands out a ready sandbox when one is waiting (no creation on the caller's path);
    `release()` gives it back, and a background thread resets it (a fresh container, an emptied
    workdir) before it is handed out again, so no episode sees another's files. A sandbox whose
    reset fails is closed and replaced.
    """

    def __init__(
        self,
        spec: SandboxSpec | None = None,
        backend: str | SandboxBackend = "auto",
        warm: int = 2,
        max_size: int = 16,
    ) -> None:
        if warm < 0 or max_size < 1 or warm > max_size:
            raise SandboxError(f"need 0 <= warm <= max_size and max_size >= 1, got warm={warm}, max_size={max_size}")
        self.spec = spec or SandboxSpec()
        self.backend = get_backend(backend) if isinstance(backend, str) else backend
        self.warm = warm
        self.max_size = max_size
        self._ready: deque[Sandbox] = deque()
        self._to_reset: deque[Sandbox] = deque()
        self._count = 0  # sandboxes in existence: ready + handed out + being reset or created
        self._cond = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._maintain, name="sandbox-pool", daemon=True)
        self._worker.start()
        with _POOLS_LOCK:
            _POOLS.add(self)

    # --- handing out ---
    def acquire(self, timeout: float | None = None) -> Sandbox:
        """A clean sandbox for the caller's sole use; waits when max_size are out (SandboxError after `timeout`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise SandboxError("the sandbox pool is closed")
                if self._ready:
                    sandbox = self._ready.popleft()
                    self._cond.notify_all()  # the maintainer tops the warm set up again
                    return sandbox
                if self._count < self.max_size:
                    self._count += 1  # a slot for the sandbox made below, outside the lock
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise SandboxError(f"no sandbox free within {timeout:.1f}s: all {self.max_size} of the pool are in use")
                self._cond.wait(remaining)
        try:
            return self.backend.create(self.spec)
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify_all()
            raise

    def release(self, sandbox: Sandbox) -> None:
        """Give a sandbox back; it is reset in the background before anyone gets it again."""
        with self._cond:
            if self._closed or sandbox.closed:
                self._count -= 1
                self._cond.notify_all()
                closing = True
            else:
                self._to_reset.append(sandbox)
                self._cond.notify_all()
                closing = False
        if closing:
            sandbox.close()

    @contextlib.contextmanager
    def sandbox(self, timeout: float | None = None) -> Iterator[Sandbox]:
        """acquire() for the length of a `with` block, then release()."""
        sandbox = self.acquire(timeout)
        try:
            yield sandbox
        finally:
            self.release(sandbox)

    # --- upkeep ---
    def _maintain(self) -> None:
        """Reset returned sandboxes, and create new ones until `warm` are ready."""
        while True:
            with self._cond:
                while not self._closed and not self._to_reset and not (
                    len(self._ready) < self.warm and self._count < self.max_size
                ):
                    self._cond.wait()
                if self._closed:
                    return
                sandbox = self._to_reset.popleft() if self._to_reset else None
                if sandbox is None:
                    self._count += 1
            if sandbox is not None:
                self._reset(sandbox)
            else:
                self._create_warm()

    def _reset(self, sandbox: Sandbox) -> None:
        """Reset a returned sandbox and make it ready; one whose reset fails is closed and not counted."""
        try:
            sandbox.reset()
        except Exception:
            if not sandbox.closed:  # closed under us (process exit, pool close): nothing to report
                log.warning("sandbox %s failed to reset; replacing it", sandbox.id, exc_info=True)
            _close_quietly(sandbox, "after its failed reset")
            with self._cond:
                self._count -= 1
                self._cond.notify_all()
            return
        self._put_ready(sandbox)

    def _create_warm(self) -> None:
        """Create one more warm sandbox; on failure, give its slot back and pause."""
        try:
            sandbox = self.backend.create(self.spec)
        except Exception:
            log.warning("could not create a warm sandbox", exc_info=True)
            with self._cond:
                self._count -= 1
                self._cond.notify_all()
            time.sleep(1.0)  # do not spin on a backend that keeps failing
            return
        self._put_ready(sandbox)

    def _put_ready(self, sandbox: Sandbox) -> None:
        with self._cond:
            if self._closed:
                self._count -= 1
                closing = True
            else:
                self._ready.append(sandbox)
                closing = False
            self._cond.notify_all()
        if closing:
            sandbox.close()

    def wait_warm(self, timeout: float = 60.0) -> None:
        """Block until `warm` sandboxes are ready (for benchmarks and tests that time warm acquires)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._ready) < self.warm and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SandboxError(f"the pool did not reach {self.warm} warm sandboxes within {timeout:.0f}s")
                self._cond.wait(remaining)

    @property
    def size(self) -> int:
        """Sandboxes in existence (ready, handed out, or being reset)."""
        with self._cond:
            return self._count

    @property
    def ready(self) -> int:
        """Sandboxes ready to hand out now."""
        with self._cond:
            return len(self._ready)

    def close(self) -> None:
        """Close every sandbox the pool holds; handed-out ones are closed when released."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            idle = list(self._ready) + list(self._to_reset)
            self._ready.clear()
            self._to_reset.clear()
            self._count -= len(idle)
            self._cond.notify_all()
        self._worker.join(timeout=30)
        if self._worker.is_alive():
            log.warning("the pool's worker was still busy 30 s after close; its sandbox is closed when it finishes")
        for sandbox in idle:
            _close_quietly(sandbox, "as its pool closed")

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_quietly(sandbox: Sandbox, when: str) -> None:
    """Close a sandbox the caller no longer needs; a failure is logged, not raised (gc removes what is left)."""
    try:
        sandbox.close()
    except Exception:
        log.warning("could not close sandbox %s %s", sandbox.id, when, exc_info=True)


_SHARED: dict[tuple[str, str, int, int], SandboxPool] = {}
_SHARED_LOCK = threading.Lock()


def shared_pool(spec: SandboxSpec, backend: str = "auto", warm: int = 2, max_size: int = 32) -> SandboxPool:
    """One pool per (backend, spec, sizes) for this process, so every env instance of a run shares warm sandboxes."""
    resolved = get_backend(backend)
    key = (resolved.name, spec.key(), warm, max_size)
    with _SHARED_LOCK:
        pool = _SHARED.get(key)
        if pool is None or pool._closed:
            pool = _SHARED[key] = SandboxPool(spec, resolved, warm=warm, max_size=max_size)
        return pool


def close_shared_pools() -> None:
    """Close every shared pool (at exit; tests)."""
    with _SHARED_LOCK:
        pools = list(_SHARED.values())
        _SHARED.clear()
    for pool in pools:
        pool.close()
