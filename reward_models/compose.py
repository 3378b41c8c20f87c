"""Reward models built from reward models: a sum, a scale, and a gate on the env's outcome.

With O_i = sum_t o_{i,t} the outcome of trajectory i (the sum of the env's per-turn rewards):

    SumRewards(M_1, ..., M_m):       r_{i,t} = sum_k r^{M_k}_{i,t}
    ScaleRewards(M, k):              r_{i,t} = k r^M_{i,t}
    GateRewards(M, on_outcome_at_least=tau):
                                     r_{i,t} = 1[O_i >= tau] r^M_{i,t}

so G-RA is the env's reward plus GateRewards(signal rewards, tau). Every inner model's answer is
checked before it is combined: one reward list per trajectory, one reward per turn. Diagnostics
are merged under the inner model's name ("gra/gate_open_fraction"); a name used again gets a
number ("gra", "gra_2").
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import ClassVar

from agentgym.reward_models.base import RewardModel, RewardScores, Scorer
from agentgym.types import Trajectory

__all__ = ["GateRewards", "ScaleRewards", "SumRewards", "checked_score", "outcome_total"]


def _label(model: RewardModel) -> str:
    return f"{model.name!r} ({type(model).__name__})"


async def checked_score(model: RewardModel, group: Sequence[Trajectory], scorer: Scorer | None) -> RewardScores:
    """`model.score(group, scorer)`, refused with a ValueError unless it has one reward per turn of each trajectory."""
    scores = await model.score(group, scorer)
    if len(scores.rewards) != len(group):
        raise ValueError(
            f"reward model {_label(model)} returned {len(scores.rewards)} reward lists for a group of {len(group)} trajectories"
        )
    for traj, rewards in zip(group, scores.rewards):
        if len(rewards) != traj.num_turns:
            raise ValueError(
                f"reward model {_label(model)} returned {len(rewards)} rewards for trajectory "
                f"{traj.trajectory_id}, which has {traj.num_turns} turns"
            )
    return scores


def outcome_total(trajectory: Trajectory) -> float:
    """O: the sum of the env's per-turn rewards of a trajectory."""
    return math.fsum(float(t.reward) for t in trajectory.turns)


def _prefixes(models: Sequence[RewardModel]) -> list[str]:
    """One diagnostics prefix per model: its name, then name_2, name_3 for the later models of the same name."""
    seen: dict[str, int] = {}
    out = []
    for model in models:
        seen[model.name] = seen.get(model.name, 0) + 1
        out.append(model.name if seen[model.name] == 1 else f"{model.name}_{seen[model.name]}")
    return out


def _prefixed(prefix: str, diagnostics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{key}": value for key, value in diagnostics.items()}


class SumRewards(RewardModel):
    """The elementwise sum of several reward models' per-turn rewards."""

    name: ClassVar[str] = "sum"

    def __init__(self, *models: RewardModel) -> None:
        if not models:
            raise ValueError("SumRewards needs at least one reward model")
        self.models = list(models)
        # An instance attribute: whether a scorer is needed depends on the parts, not on the class.
        self.needs_scorer = any(m.needs_scorer for m in self.models)

    async def score(self, group: Sequence[Trajectory], scorer: Scorer | None = None) -> RewardScores:
        """r_{i,t} = sum_k r^{M_k}_{i,t}; the parts are scored concurrently."""
        parts = await asyncio.gather(*(checked_score(m, group, scorer) for m in self.models))
        # Per trajectory, the parts' reward lists; per turn, the parts' rewards (lengths were checked).
        rewards = [[math.fsum(at_turn) for at_turn in zip(*rows)] for rows in zip(*(p.rewards for p in parts))]
        diagnostics: dict[str, float] = {}
        for prefix, part in zip(_prefixes(self.models), parts):
            diagnostics.update(_prefixed(prefix, part.diagnostics))
        return RewardScores(rewards, diagnostics)


class ScaleRewards(RewardModel):
    """A reward model's per-turn rewards times a constant k."""

    name: ClassVar[str] = "scale"

    def __init__(self, model: RewardModel, k: float) -> None:
        if not math.isfinite(k):
            raise ValueError(f"k must be finite, got {k}")
        self.model = model
        self.k = float(k)
        self.needs_scorer = model.needs_scorer

    async def score(self, group: Sequence[Trajectory], scorer: Scorer | None = None) -> RewardScores:
        """r_{i,t} = k r^M_{i,t}; the inner diagnostics are passed on unscaled."""
        inner = await checked_score(self.model, group, scorer)
        rewards = [[self.k * r for r in row] for row in inner.rewards]
        return RewardScores(rewards, _prefixed(self.model.name, inner.diagnostics))


class GateRewards(RewardModel):
    """A reward model's per-turn rewards, kept only on trajectories whose env outcome reached tau."""

    name: ClassVar[str] = "gate"

    def __init__(self, inner: RewardModel, *, on_outcome_at_least: float) -> None:
        if not math.isfinite(on_outcome_at_least):
            raise ValueError(f"on_outcome_at_least must be finite, got {on_outcome_at_least}")
        self.inner = inner
        self.tau = float(on_outcome_at_least)
        self.needs_scorer = inner.needs_scorer

    async def score(self, group: Sequence[Trajectory], scorer: Scorer | None = None) -> RewardScores:
        """r_{i,t} = 1[O_i >= tau] r^M_{i,t}, O_i the sum of the env's rewards of trajectory i."""
        inner = await checked_score(self.inner, group, scorer)
        open_ = [outcome_total(traj) >= self.tau for traj in group]
        rewards = [list(row) if keep else [0.0] * len(row) for keep, row in zip(open_, inner.rewards)]
        diagnostics = _prefixed(self.inner.name, inner.diagnostics)
        diagnostics["open_fraction"] = sum(open_) / len(group) if group else math.nan
        return RewardScores(rewards, diagnostics)
