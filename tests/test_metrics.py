"""Evaluation statistics on numbers worked out by hand."""

from __future__ import annotations

import math

import pytest

from agentgym.evaluation import summarize
from agentgym.metrics import wilson_interval
from agentgym.types import PolicyInfo
from tests.test_store import make_traj


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # n=10, k=5, z=1.96: centre 0.5, half = 1.96/1.38416 * sqrt(0.025 + 3.8416/400) = 0.26341
        (5, 10, 0.23659, 0.76341),
        # k=0, n=20: centre = 0.09604/1.19208 = 0.08057, half = 1.64420 * sqrt(3.8416/1600) = 0.08057
        (0, 20, 0.0, 0.16113),
        (20, 20, 0.83887, 1.0),
    ],
)
def test_wilson_interval_matches_hand_computation(k: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=2e-5) and hi == pytest.approx(high, abs=2e-5)


def test_wilson_interval_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(5, 3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_summary_counts() -> None:
    trajs = [make_traj(i) for i in range(4)]  # successes at i=0,2; one error at i=1
    s = summarize(trajs, env_id="toy", policy=PolicyInfo(kind="scripted"), planned=5, wall_seconds=2.0)
    assert (s.episodes, s.planned_episodes, s.successes, s.success_rate, s.errors) == (4, 5, 2, 0.5, 1)
    assert s.mean_turns == 3.0 and s.mean_reward == 1.5
    assert s.invalid_action_rate == pytest.approx(1 / 3)  # turn 1 of every episode is invalid
    assert (s.tokens_in, s.tokens_out) == (36, 24)


def test_spearman_on_hand_worked_ranks() -> None:
    from agentgym.metrics import average_ranks, spearman

    # ranks equal the values; d = (0, 1, 1, 0): rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties: x ranks (1.5, 1.5, 3), y ranks (1, 2, 3); centred (-.5, -.5, 1) and (-1, 0, 1): 1.5 / sqrt(1.5 * 2)
    assert average_ranks([1, 1, 2]) == [1.5, 1.5, 3.0]
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / math.sqrt(3.0))
    assert spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([1], [2]))
    with pytest.raises(ValueError, match="paired"):
        spearman([1, 2], [1])
