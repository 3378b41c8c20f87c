"""Rollouts played ahead of the update, at most `max_staleness` weight versions behind it.

With `max_staleness` k = 0 each step's batch is played after the previous update, by the
newest weights: today's synchronous loop. With k >= 1, a background task plays the batch of
step s as soon as the weights of step s - k are in place, while the trainer is still updating
on an earlier batch; every episode of the batch of step s then starts with weights of step
s - k or newer (AReaL, prime-rl and SkyRL bound staleness the same way). The update corrects
for the gap with truncated importance sampling (objectives.truncated_importance_weights).

                 k = 0                                   k = 1
    rollout  R0 ---- R1 ---- R2                  R0 -- R1 ------- R2 -------
    update        U0      U1      U2                  U0 (with R1)  U1 (with R2)  U2
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Batch = TypeVar("Batch")


class RolloutPipeline(Generic[Batch]):
    """Hands out the batches of steps first..last-1 in order, played at most `max_staleness` versions behind."""

    def __init__(
        self, collect: Callable[[int], Awaitable[Batch]], *, first_step: int, last_step: int, max_staleness: int,
        weights_step: int,
    ) -> None:
        if max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
        self._collect = collect
        self._next = first_step
        self._last = last_step
        self.max_staleness = max_staleness
        self.weights_step = weights_step  # the version the policy plays with now
        self._ready: dict[int, asyncio.Future[Batch]] = {}
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RolloutPipeline[Batch]:
        if self.max_staleness > 0:
            self._task = asyncio.create_task(self._produce(), name="agentgym-rollout-pipeline")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def get(self, step: int) -> Batch:
        """The batch of `step`; synchronous mode plays it now, asynchronous mode waits for the background task."""
        if self.max_staleness == 0:
            if self.weights_step < step:
                raise RuntimeError(f"step {step}'s batch asked for with weights of step {self.weights_step}")
            return await self._collect(step)
        future = self._future(step)
        if self._task is not None and self._task.done() and not future.done():
            self._task.result()  # the producer died: raise its exception here
        batch = await future
        del self._ready[step]
        return batch

    async def weights_updated(self, step: int) -> None:
        """Record that the policy now plays with the weights after `step` steps; a waiting batch may start."""
        async with self._changed:
            self.weights_step = step
            self._changed.notify_all()

    async def aclose(self) -> None:
        """Stop playing ahead; episodes in flight are cancelled (finished ones are already on disk)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for future in self._ready.values():
            future.cancel()

    def _future(self, step: int) -> asyncio.Future[Batch]:
        if step not in self._ready:
            self._ready[step] = asyncio.get_running_loop().create_future()
        return self._ready[step]

    async def _produce(self) -> None:
        while self._next < self._last:
            step = self._next
            async with self._changed:
                # The batch of step s may be played by weights of step s - k or newer, never older.
                await self._changed.wait_for(lambda: self.weights_step >= step - self.max_staleness)
            future = self._future(step)
            try:
                batch = await self._collect(step)
            except Exception as exc:
                future.set_exception(exc)
                return
            future.set_result(batch)
            self._next += 1
