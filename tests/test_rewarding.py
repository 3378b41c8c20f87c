"""A step's scoring: reward model per group, its failures recorded, advantages, and the diagnostics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from agentgym.reward_models.base import RewardModel, RewardScores
from agentgym.reward_models.env_reward import EnvReward
from agentgym.trainers.rewarding import progress_increments, score_step, write_scores
from agentgym.types import PolicyInfo, SamplingParams, Trajectory, Turn


def traj(group: str, i: int, rewards: Sequence[float], progress: Sequence[float] | None = None) -> Trajectory:
    turns = [
        Turn(index=k, prompt_messages=[], completion="a", action="a", observation="o", reward=r,
             signals={"progress": progress[k]} if progress is not None else {})
        for k, r in enumerate(rewards)
    ]
    return Trajectory(trajectory_id=f"{group}-{i}", env_id="toy", task_id=group, seed=0, group_id=group, sample_index=i,
                      policy=PolicyInfo(kind="x"), sampling=SamplingParams(), started_at=0.0, turns=turns)


class Broken(RewardModel):
    name = "broken"

    async def score(self, group, scorer=None):  # noqa: ANN001, ANN201
        if group[0].group_id == "B":
            raise RuntimeError("boom")
        return RewardScores([[1.0] * t.num_turns for t in group], {"seen": float(len(group))})


async def test_a_failing_group_is_recorded_and_the_others_are_scored(tmp_path: Path) -> None:
    batch = [traj("A", 0, [0, 1]), traj("A", 1, [0]), traj("B", 0, [1]), traj("B", 1, [0])]
    scored = await score_step(batch, Broken(), None, "grpo", gamma=1.0, normalize_std=False)
    assert [t.trajectory_id for t in scored.trajectories] == ["A-0", "A-1"] and scored.failed == batch[2:]
    assert all(t.error is not None and t.error.where == "reward" and t.error.message == "boom" for t in batch[2:])
    # rewards [[1, 1], [1]]: first-turn returns 2 and 1, mean 1.5: A = [[0.5, -0.5], [-0.5]]
    assert scored.rewards == [[1.0, 1.0], [1.0]] and scored.advantages == [[0.5, -0.5], [-0.5]]
    assert scored.diagnostics["reward/seen"] == 2.0 and scored.diagnostics["reward/errors"] == 2.0
    write_scores(tmp_path / "s.jsonl", scored)
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r.get("reward_error", {}).get("message") for r in rows] == [None, None, "boom", "boom"]


async def test_advantage_collapse_and_the_whole_batch_as_one_group() -> None:
    batch = [traj("A", 0, [1]), traj("A", 1, [1]), traj("B", 0, [1]), traj("B", 1, [0])]
    per_group = await score_step(batch, EnvReward(), None, "grpo", gamma=1.0, normalize_std=False)
    assert per_group.diagnostics["train/zero_advantage_groups"] == 0.5  # group A scored alike
    assert per_group.advantages == [[0.0], [0.0], [0.5], [-0.5]]
    one = await score_step(batch, EnvReward(), None, "grpo", gamma=1.0, normalize_std=False, one_group=True)
    assert one.advantages == [[0.25], [0.25], [0.25], [-0.75]]  # batch mean 0.75
    assert one.diagnostics["train/zero_advantage_groups"] == 0.0
    assert one.diagnostics["train/advantage_abs_mean"] == pytest.approx(1.5 / 4)


async def test_rewards_are_correlated_with_the_envs_true_progress_where_it_has_one() -> None:
    # progress 0.5 then 1.0: increments 0.5, 0.5; a reward that follows them ranks alike.
    a, b = traj("A", 0, [1, 0, 1], progress=[0.5, 0.5, 1.0]), traj("A", 1, [0, 0], progress=[0.0, 0.0])
    assert progress_increments(a) == [0.5, 0.0, 0.5]
    scored = await score_step([a, b], EnvReward(), None, "grpo", gamma=1.0, normalize_std=False)
    assert scored.diagnostics["reward/spearman_vs_progress"] == pytest.approx(1.0)
    plain = await score_step([traj("A", 0, [1]), traj("A", 1, [0])], EnvReward(), None, "grpo", gamma=1.0, normalize_std=False)
    assert "reward/spearman_vs_progress" not in plain.diagnostics
