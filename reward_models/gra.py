"""Direct and gated accumulation of immediate rewards (D-RA and G-RA).

Sun et al. 2025, "Stabilizing Long-term Multi-turn Reinforcement Learning with Gated Rewards"
(arXiv:2508.10548), the paper of the SWE-oriented RL framework. A trajectory has an outcome
(high-level) reward, the env's own, and immediate (low-level) rewards per turn: here a weighted sum
of the env's step signals (`valid_action`, `ran_tests`, `tests_passed_frac`, ...). Summing them
always (D-RA) lets a policy farm the immediate rewards without ever solving the task, which the
paper saw end in collapse; G-RA counts the immediate rewards of a trajectory only when its outcome
reached a threshold tau.

Notation: o_t the outcome reward of turn t (the env's reward, usually 0 until the last turn),
O = sum_t o_t the trajectory's outcome, i_t the immediate reward of turn t.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from agentgym.reward_models.base import RewardModel, RewardScores, Scorer
from agentgym.types import Trajectory

__all__ = [
    "DirectRewards",
    "GatedRewards",
    "direct_accumulation",
    "gated_accumulation",
    "immediate_rewards",
    "outcome_rewards",
    "signal_value",
]


def direct_accumulation(immediate: Sequence[float], outcome: Sequence[float]) -> list[float]:
    """D-RA: every turn's immediate reward is added to its outcome reward, always.

        r_t = o_t + i_t        (so sum_t r_t = O + sum_t i_t)
    """
    _check_same_length(immediate, outcome)
    return [float(o) + float(i) for i, o in zip(immediate, outcome)]


def gated_accumulation(immediate: Sequence[float], outcome: Sequence[float], outcome_total: float, tau: float) -> list[float]:
    """G-RA: immediate rewards count only when the trajectory's outcome reached the threshold.

        r_t = o_t + 1[O >= tau] i_t

    `outcome_total` is O; with the gate closed the trajectory keeps its outcome rewards alone.
    """
    _check_same_length(immediate, outcome)
    if not math.isfinite(tau):
        raise ValueError(f"tau must be finite, got {tau}")
    gate = 1.0 if outcome_total >= tau else 0.0
    return [float(o) + gate * float(i) for i, o in zip(immediate, outcome)]


def _check_same_length(immediate: Sequence[float], outcome: Sequence[float]) -> None:
    if len(immediate) != len(outcome):
        raise ValueError(f"immediate and outcome rewards must have one value per turn, got {len(immediate)} and {len(outcome)}")


def signal_value(value: Any, name: str) -> float:
    """A step signal as a number: a bool counts 1/0, a missing or None signal 0, a number itself."""
    if value is None:  # e.g. tests_passed_frac before any test run printed a summary
        return 0.0
    if isinstance(value, bool):  # before int: bool is an int subclass
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"signal {name!r} is {number}; a signal used as a reward must be finite")
        return number
    raise TypeError(f"signal {name!r} is a {type(value).__name__} ({value!r}); only numbers and bools can be weighted")


def immediate_rewards(trajectory: Trajectory, weights: Mapping[str, float]) -> list[float]:
    """Immediate reward of every turn: the weighted sum of its step signals.

        i_t = sum_k w_k s_{k,t}      (s_{k,t}: signal k of turn t as signal_value reads it)
    """
    out = []
    for turn in trajectory.turns:
        try:
            out.append(math.fsum(w * signal_value(turn.signals.get(k), k) for k, w in weights.items()))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"trajectory {trajectory.trajectory_id}, turn {turn.index}: {exc}") from exc
    return out


def outcome_rewards(trajectory: Trajectory) -> list[float]:
    """The env's reward of every turn, o_t."""
    return [float(t.reward) for t in trajectory.turns]


class _SignalAccumulation(RewardModel):
    """Shared part of D-RA and G-RA: weights over named step signals, validated once."""

    def __init__(self, signals: Mapping[str, float]) -> None:
        weights = {str(k): float(w) for k, w in signals.items()}
        bad = {k: w for k, w in weights.items() if not math.isfinite(w)}
        if bad:
            raise ValueError(f"signal weights must be finite, got {bad}")
        self.signals = weights

    def _immediate(self, group: Sequence[Trajectory]) -> list[list[float]]:
        return [immediate_rewards(traj, self.signals) for traj in group]


class DirectRewards(_SignalAccumulation):
    """D-RA: the env's rewards plus weighted step signals on every turn (the baseline G-RA fixes)."""

    name: ClassVar[str] = "dra"

    async def score(self, group: Sequence[Trajectory], scorer: Scorer | None = None) -> RewardScores:
        """r_t = o_t + i_t for every turn of the group."""
        immediate = self._immediate(group)
        rewards = [direct_accumulation(imm, outcome_rewards(traj)) for imm, traj in zip(immediate, group)]
        return RewardScores(rewards, {"immediate_mean": _mean_per_turn(immediate)})


class GatedRewards(_SignalAccumulation):
    """G-RA: the env's rewards, plus weighted step signals only on trajectories whose outcome reached tau.

    ``signals`` maps step-signal names to weights, e.g. ``{"valid_action": 0.1, "ran_tests": 0.1,
    "tests_passed_frac": 0.2}``. ``tau`` defaults to 1.0, which for envs that reward a solved task
    with 1 (swe-gym, the text games) means: immediate rewards only on successes. The outcome O is
    the sum of the env's per-turn rewards.
    """

    name: ClassVar[str] = "gra"

    def __init__(self, signals: Mapping[str, float], tau: float = 1.0) -> None:
        super().__init__(signals)
        if not math.isfinite(tau):
            raise ValueError(f"tau must be finite, got {tau}")
        self.tau = float(tau)

    async def score(self, group: Sequence[Trajectory], scorer: Scorer | None = None) -> RewardScores:
        """r_t = o_t + 1[O >= tau] i_t for every turn of the group."""
        immediate = self._immediate(group)
        rewards, opened, dropped = [], 0, 0.0
        for imm, traj in zip(immediate, group):
            outcome = outcome_rewards(traj)
            total = math.fsum(outcome)
            rewards.append(gated_accumulation(imm, outcome, total, self.tau))
            if total >= self.tau:
                opened += 1
            else:
                dropped += math.fsum(imm)
        diagnostics = {
            "immediate_mean": _mean_per_turn(immediate),
            # Immediate reward the gate withheld, per trajectory: how much farming it stopped.
            "immediate_dropped": dropped / len(group) if group else math.nan,
            "gate_open_fraction": opened / len(group) if group else math.nan,
        }
        return RewardScores(rewards, diagnostics)


def _mean_per_turn(rows: Sequence[Sequence[float]]) -> float:
    values = [v for row in rows for v in row]
    return math.fsum(values) / len(values) if values else math.nan
