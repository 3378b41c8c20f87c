"""A thread of its own for one env: calls run in order and come back to asyncio as futures."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()
log = logging.getLogger(__name__)


class EnvThread:
    """Runs one env's blocking calls, in order, on one dedicated thread.

    One thread per env means an env is never touched by two threads at once: a close queued
    after an interrupt waits for the step in flight (game engines written in C crash
    otherwise). Results are handed back with `call_soon_threadsafe` directly, which costs
    about half of `run_in_executor`'s future chaining per call (benchmarks/rollout_overhead.py).
    """

    def __init__(self, name: str = "agentgym-env") -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name)
        self._thread.start()

    def call(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Queue `fn(*args)`; the returned future (of the running loop) gets its result or exception."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((fn, args, loop, future))
        return future

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue `fn(*args)` without waiting for it; an exception it raises is logged, not raised."""
        self._jobs.put((fn, args, None, None))

    def stop(self) -> None:
        """Let the thread end once the calls already queued have run."""
        self._jobs.put(_STOP)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not _STOP:
            fn, args, loop, future = job
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting coroutine, which decides
                if future is not None:
                    _deliver(loop, future, None, exc)
                else:  # nobody awaits a submitted call: say what failed rather than drop it
                    log.warning("%s failed in env thread %s", getattr(fn, "__name__", fn), self._thread.name, exc_info=exc)
            else:
                if future is not None:
                    _deliver(loop, future, result, None)


def _deliver(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    def settle() -> None:
        if future.cancelled():  # the caller timed out and moved on
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop has closed (the run was interrupted): nobody is waiting
        pass
