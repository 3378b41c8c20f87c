"""Dynamic sampling: which groups carry a learning signal, the further draws of a step, and what a step keeps."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from pydantic import ValidationError

from agentgym.trainers.config import TrainConfig
from agentgym.trainers.dynamic_sampling import informative_groups
from agentgym.trainers.loop import Trainer, step_jobs
from agentgym.types import PolicyInfo, SamplingParams, Trajectory, Turn


def test_a_group_is_informative_when_any_of_its_turns_has_an_advantage() -> None:
    groups = ["a", "a", "b", "b", "c", "c", "d"]
    advantages = [[0.0, 0.0], [0.0], [0.5, 0.5], [-0.5], [0.0], [0.0, -0.0], []]
    assert informative_groups(groups, advantages) == ["b"]
    # Order of first appearance, and a signal on a later turn of a later episode counts.
    assert informative_groups(["x", "y", "x"], [[0.0], [1.0], [0.0, 0.0, 2.0]]) == ["x", "y"]


def test_informative_groups_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="same length"):
        informative_groups(["a", "b"], [[1.0]])


def test_more_draws_need_a_group_baseline() -> None:
    with pytest.raises(ValidationError, match="has no groups"):
        TrainConfig(env="textworld", algo="reinforce", max_draws=3)
    assert TrainConfig(env="textworld", algo="rloo", max_draws=3).max_draws == 3


def test_further_draws_are_reproducible_and_never_reuse_a_group() -> None:
    cfg = TrainConfig(env="textworld", tasks_per_step=2, samples_per_task=3, seed=7)
    tasks = ["a", "b", "c", "d", "e"]
    first = step_jobs(tasks, cfg, 3)
    # Draw 0 is the step's original batch: a run without dynamic sampling resumes onto the same episodes.
    assert first == step_jobs(tasks, cfg, 3, draw=0)
    assert {j.seed for j in first} == {7 * 100_003 + 3 * 1_000 + g for g in range(2)}
    second, third = step_jobs(tasks, cfg, 3, draw=1), step_jobs(tasks, cfg, 3, draw=2)
    assert second == step_jobs(list(reversed(tasks)), cfg, 3, draw=1)
    ids = [{j.group_id for j in jobs} for jobs in (first, second, third)]
    assert all(len(g) == 2 for g in ids) and len(ids[0] | ids[1] | ids[2]) == 6
    assert len(second) == 6 and [j.sample_index for j in second] == [0, 1, 2, 0, 1, 2]


def _traj(group: str, reward: float, index: int) -> Trajectory:
    return Trajectory(trajectory_id=f"{group}-{index}", env_id="toy", task_id=group, seed=0, group_id=group,
                      sample_index=index, policy=PolicyInfo(kind="x"), sampling=SamplingParams(), started_at=0.0,
                      messages=[], total_reward=reward,
                      turns=[Turn(index=0, prompt_messages=[], completion="a", action="a", observation="o", reward=reward)])


def _scored(max_draws: int, draws: Sequence[dict[str, Sequence[float]]]) -> tuple[list[str], list[list[float]], int, int]:
    """Run the step's collection over scripted draws; the kept episodes, their advantages, episodes played, draws made."""
    cfg = TrainConfig(env="textworld", algo="grpo", normalize_std=False, tasks_per_step=2, samples_per_task=2,
                      max_draws=max_draws)
    # One turn per episode, rewarded with the episode's scripted reward (the env's own, the default reward model).
    trainer = Trainer(cfg, "/nonexistent", show_progress=False)
    asked: list[int] = []

    async def collect(step: int, task_ids: Sequence[str], policy: object, draw: int = 0) -> list[Trajectory]:
        asked.append(draw)
        return [_traj(g, r, i) for g, rewards in draws[draw].items() for i, r in enumerate(rewards)]

    trainer._collect = collect  # type: ignore[method-assign]
    batch = asyncio.run(trainer._collect_scored(0, [], None))  # type: ignore[arg-type]
    assert asked == list(range(batch.draws)) and batch.timings["time/rollout"] >= 0 and batch.excluded_errors == 0
    return [t.trajectory_id for t in batch.trajectories], batch.advantages, len(batch.played), batch.draws


def test_a_step_draws_until_enough_groups_disagree_and_keeps_only_those() -> None:
    draws = [
        {"A": [1.0, 1.0], "B": [0.0, 1.0]},  # A solved by both rollouts: no signal
        {"C": [0.0, 0.0], "D": [1.0, 0.0], "E": [0.0, 1.0]},  # D fills the batch; E is one group too many
        {"F": [1.0, 0.0]},  # never drawn
    ]
    kept, advantages, played, made = _scored(3, draws)
    assert made == 2 and played == 10
    assert kept == ["B-0", "B-1", "D-0", "D-1"]
    # Dr. GRPO advantages, reward minus the group mean (0.5), the same as if the groups were scored together.
    assert advantages == [[-0.5], [0.5], [0.5], [-0.5]]


def test_a_step_stops_at_the_draw_limit_with_what_it_found() -> None:
    draws = [{"A": [1.0, 1.0], "B": [0.0, 0.0]}, {"C": [0.0, 1.0], "D": [1.0, 1.0]}]
    kept, _, played, made = _scored(2, draws)
    assert (kept, played, made) == (["C-0", "C-1"], 8, 2)


def test_one_draw_keeps_every_group_as_before() -> None:
    kept, advantages, played, made = _scored(1, [{"A": [1.0, 1.0], "B": [0.0, 1.0]}])
    assert (kept, played, made) == (["A-0", "A-1", "B-0", "B-1"], 4, 1)
    assert advantages == [[0.0], [0.0], [-0.5], [0.5]]
