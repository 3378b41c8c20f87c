"""Closing Docker sandboxes when their wall-clock lifetime runs out, whether or not anyone uses them."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentgym.sandboxes.docker_sandbox import DockerSandbox

log = logging.getLogger(__name__)


class Reaper:
    """One daemon thread that closes sandboxes whose wall-clock lifetime ran out, even when none is used."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref[DockerSandbox]]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, sandbox: DockerSandbox, deadline: float | None) -> None:
        """Close `sandbox` at `deadline` (time.monotonic()) unless it is closed before."""
        if deadline is None:
            return
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._counter), weakref.ref(sandbox)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="agentgym-docker-reaper", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                _, _, ref = heapq.heappop(self._heap)
            sandbox = ref()
            if sandbox is not None and not sandbox.closed:
                try:
                    sandbox.close()
                except Exception:  # noqa: BLE001 - a failed removal is left to `agentgym sandbox gc`
                    log.warning("could not remove sandbox %s at the end of its lifetime; `agentgym sandbox gc` will",
                                sandbox.id, exc_info=True)


REAPER = Reaper()
