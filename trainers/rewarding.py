"""A training step's scoring: the reward model on each group, then the advantage estimator.

A reward model sees one group (the rollouts of one task and seed) at a time. Its answer is
checked (one reward per turn of each trajectory); an exception it raises is recorded on every
trajectory of that group (`error.where = "reward"`), which leaves them out of the update and
counts them, and the other groups go on. What each trajectory got is written beside the step's
trajectories, so a run can always be audited: `scores/step-N.jsonl` in the run directory.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentgym.metrics import spearman
from agentgym.reward_models.base import RewardModel, Scorer
from agentgym.reward_models.compose import checked_score
from agentgym.trainers.advantages import get_advantage, zero_advantage_fraction
from agentgym.types import ErrorRecord, Trajectory

log = logging.getLogger(__name__)


@dataclass
class StepScores:
    """The scored trajectories of one draw, with their per-turn rewards and advantages."""

    trajectories: list[Trajectory]
    rewards: list[list[float]]
    advantages: list[list[float]]
    diagnostics: dict[str, float] = field(default_factory=dict)
    failed: list[Trajectory] = field(default_factory=list)  # their reward model raised: recorded on them, never trained on


def groups_of(trajectories: Sequence[Trajectory]) -> list[list[Trajectory]]:
    """The trajectories by group_id, groups in order of first appearance."""
    groups: dict[str, list[Trajectory]] = {}
    for t in trajectories:
        groups.setdefault(t.group_id, []).append(t)
    return list(groups.values())


async def score_step(
    trajectories: Sequence[Trajectory],
    model: RewardModel,
    scorer: Scorer | None,
    advantage: str,
    *,
    gamma: float,
    normalize_std: bool,
    one_group: bool = False,
) -> StepScores:
    """Rewards per group from `model`, then advantages from the registered estimator `advantage`.

    `one_group` takes the whole batch as one group for the advantage (critic-free PPO-style
    whitening); the reward model still sees the task groups.
    """
    estimator = get_advantage(advantage)
    started = time.perf_counter()
    kept: list[Trajectory] = []
    rewards: list[list[float]] = []
    sums: dict[str, list[float]] = {}
    failed: list[Trajectory] = []
    for group in groups_of(trajectories):
        try:
            scores = await checked_score(model, group, scorer)
        # A reward model is user code (a plugin, a scorer over HTTP): whatever it raises, only its group is lost.
        except Exception as exc:
            record = ErrorRecord.from_exception(exc, where="reward")
            log.warning("reward model %s failed on group %s: %s", model.name, group[0].group_id, exc)
            for t in group:
                t.error = record
            failed += group
            continue
        kept += group
        rewards += [[float(r) for r in row] for row in scores.rewards]
        for key, value in scores.diagnostics.items():
            sums.setdefault(key, []).append(float(value))
    reward_seconds = time.perf_counter() - started
    advantages = _advantages(kept, rewards, estimator, gamma=gamma, normalize_std=normalize_std, one_group=one_group)
    diagnostics = {f"reward/{k}": _mean(v) for k, v in sums.items()}
    diagnostics.update(advantage_stats(kept, advantages, one_group=one_group))
    rho = progress_correlation(kept, rewards)
    if rho is not None:
        diagnostics["reward/spearman_vs_progress"] = rho
    diagnostics["reward/errors"] = float(len(failed))
    # What the policy is optimised for, per episode: beside the env's own reward, it shows farming.
    diagnostics["reward/total_mean"] = _mean([math.fsum(row) for row in rewards])
    diagnostics["time/reward_model_ms_per_trajectory"] = 1000 * reward_seconds / max(1, len(trajectories))
    return StepScores(kept, rewards, advantages, diagnostics, failed)


def _advantage_groups(trajectories: Sequence[Trajectory], one_group: bool) -> list[list[int]]:
    """Indices of the trajectories that share a baseline: each group's, or the whole batch as one."""
    index: dict[str, list[int]] = {}
    for i, t in enumerate(trajectories):
        index.setdefault("batch" if one_group else t.group_id, []).append(i)
    return list(index.values())


def _advantages(
    trajectories: Sequence[Trajectory], rewards: Sequence[Sequence[float]], estimator: object, *,
    gamma: float, normalize_std: bool, one_group: bool,
) -> list[list[float]]:
    """Each trajectory's advantages, computed group by group (or over the batch as one group)."""
    out: list[list[float]] = [[] for _ in trajectories]
    for members in _advantage_groups(trajectories, one_group):
        got = estimator([rewards[i] for i in members], gamma=gamma, normalize_std=normalize_std)  # type: ignore[operator]
        for i, row in zip(members, got):
            out[i] = list(row)
    return out


def advantage_stats(trajectories: Sequence[Trajectory], advantages: Sequence[Sequence[float]], *, one_group: bool) -> dict[str, float]:
    """Advantage collapse (the fraction of groups whose advantages are all 0) and the mean |advantage| per turn."""
    groups = [[advantages[i] for i in members] for members in _advantage_groups(trajectories, one_group)]
    flat = [abs(x) for row in advantages for x in row]
    return {
        "train/zero_advantage_groups": zero_advantage_fraction(groups) if groups else math.nan,
        "train/advantage_abs_mean": _mean(flat),
    }


def progress_increments(trajectory: Trajectory) -> list[float] | None:
    """Each turn's increase of the env's true `progress` signal (TextWorld: score / max score); None if an env gives none."""
    out, before = [], 0.0
    for turn in trajectory.turns:
        value = turn.signals.get("progress")
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        out.append(float(value) - before)
        before = float(value)
    return out


def progress_correlation(trajectories: Sequence[Trajectory], rewards: Sequence[Sequence[float]]) -> float | None:
    """Spearman's rho of the per-turn rewards against the env's true progress increments, over every turn; None without them."""
    xs: list[float] = []
    ys: list[float] = []
    for t, row in zip(trajectories, rewards):
        increments = progress_increments(t)
        if increments is None:
            return None
        xs += row
        ys += increments
    return spearman(xs, ys) if xs else None


def write_scores(path: Path, scored: StepScores) -> None:
    """Append what each trajectory got (rewards, advantages, or the reward model's error) to a JSONL file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        for t, r, a in zip(scored.trajectories, scored.rewards, scored.advantages):
            out.write(json.dumps({"trajectory_id": t.trajectory_id, "group_id": t.group_id, "rewards": r, "advantages": a}) + "\n")
        for t in scored.failed:
            error = t.error.model_dump(exclude={"traceback"}) if t.error else None
            out.write(json.dumps({"trajectory_id": t.trajectory_id, "group_id": t.group_id, "reward_error": error}) + "\n")


def write_advantages(path: Path, trajectories: Sequence[Trajectory], advantages: Sequence[Sequence[float]]) -> None:
    """Write the per-turn advantages an algorithm gave each trajectory (a critic's) as JSONL, replacing the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for t, a in zip(trajectories, advantages):
            out.write(json.dumps({"trajectory_id": t.trajectory_id, "group_id": t.group_id, "advantages": a}) + "\n")


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan
