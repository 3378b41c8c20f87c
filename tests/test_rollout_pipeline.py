"""The rollout pipeline: batches in step order, played ahead of the update by at most max_staleness versions."""

from __future__ import annotations

import asyncio

import pytest

from agentgym.trainers.rollout_pipeline import RolloutPipeline


async def _train(max_staleness: int, steps: int, update_s: float = 0.05) -> list[tuple[int, int, int]]:
    """Run a fake training loop; returns (step, weights version when its batch started, version when it ended)."""
    started: list[tuple[int, int, int]] = []
    pipeline: RolloutPipeline[int]

    async def collect(step: int) -> int:
        begin = pipeline.weights_step
        await asyncio.sleep(0.05)  # playing the episodes
        started.append((step, begin, pipeline.weights_step))
        return step * 10

    pipeline = RolloutPipeline(collect, first_step=0, last_step=steps, max_staleness=max_staleness, weights_step=0)
    async with pipeline:
        for step in range(steps):
            assert await pipeline.get(step) == step * 10
            await asyncio.sleep(update_s)  # the update
            await pipeline.weights_updated(step + 1)
    return sorted(started)


async def test_synchronous_mode_plays_each_batch_with_the_newest_weights() -> None:
    assert await _train(0, 4) == [(s, s, s) for s in range(4)]


@pytest.mark.parametrize("k", [1, 2])
async def test_batches_run_ahead_but_never_more_than_max_staleness_versions(k: int) -> None:
    played = await _train(k, 6)
    assert [s for s, _, _ in played] == list(range(6))
    for step, begin, _ in played:
        assert step - k <= begin <= step  # the bound, and never weights from the future
    # It really runs ahead: some batch started before the previous step's update was in.
    assert any(begin < step for step, begin, _ in played[1:])


async def test_a_failing_collection_reaches_the_trainer() -> None:
    async def collect(step: int) -> int:
        if step == 1:
            raise RuntimeError("vLLM went away")
        return step

    async with RolloutPipeline(collect, first_step=0, last_step=3, max_staleness=1, weights_step=0) as pipeline:
        assert await pipeline.get(0) == 0
        with pytest.raises(RuntimeError, match="vLLM went away"):
            await pipeline.get(1)


async def test_a_resumed_pipeline_starts_at_the_resumed_step_and_closing_cancels_play_ahead() -> None:
    seen: list[int] = []
    gate = asyncio.Event()

    async def collect(step: int) -> int:
        seen.append(step)
        await gate.wait()
        return step

    pipeline = RolloutPipeline(collect, first_step=3, last_step=6, max_staleness=2, weights_step=3)
    async with pipeline:
        await asyncio.sleep(0.01)
        assert seen == [3]
    gate.set()
    assert seen == [3]  # cancelled on close: nothing more is played
    with pytest.raises(ValueError):
        RolloutPipeline(collect, first_step=0, last_step=1, max_staleness=-1, weights_step=0)
