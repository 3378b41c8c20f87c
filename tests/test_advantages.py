"""The registered advantage estimators on a group worked out by hand, the registry, and the collapse diagnostic."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from agentgym.errors import AgentGymError
from agentgym.trainers.advantages import (
    AdvantageRegistry,
    UnknownAdvantageError,
    advantage_names,
    get_advantage,
    zero_advantage_fraction,
)

# One group of three trajectories of lengths 3, 2 and 1. Turn index 2 is reached by trajectory 0 alone.
REWARDS = [[1.0, 0.0, 2.0], [0.0, 1.0], [3.0]]
#
# Returns G_{i,t} = sum_{k>=t} gamma^(k-t) r_{i,k}:
#   gamma = 1:    G_0 = [3, 2, 2]        G_1 = [1, 1]      G_2 = [3]
#   gamma = 0.5:  G_0 = [1.5, 1, 2]      G_1 = [0.5, 1]    G_2 = [3]
#                 (1 + 0.5 (0 + 0.5 * 2) = 1.5;  0 + 0.5 * 1 = 0.5)
#
# Columns per turn index (the trajectories that reach it):
#   gamma = 1:    t=0: G = (3, 1, 3), mean 7/3, pop. std sqrt(8/9) = 2 sqrt(2)/3    t=1: G = (2, 1), mean 1.5, std 0.5
#   gamma = 0.5:  t=0: G = (1.5, 0.5, 3), mean 5/3                               t=1: G = (1, 1), mean 1, std 0
#   rewards:      t=0: r = (1, 0, 3), mean 4/3, std sqrt(14)/3                    t=1: r = (0, 1), mean 0.5, std 0.5

TOL = 1e-5  # the estimators divide by std + 1e-6, so exact fractions agree to about 1e-6


def advantages(name: str, gamma: float, normalize_std: bool) -> list[list[float]]:
    return get_advantage(name)(REWARDS, gamma=gamma, normalize_std=normalize_std)


def assert_close(got: list[list[float]], want: list[list[float]]) -> None:
    assert [len(row) for row in got] == [len(row) for row in want]
    for row_got, row_want in zip(got, want):
        assert row_got == pytest.approx(row_want, abs=TOL)


def test_the_registry_holds_the_four_estimators() -> None:
    assert advantage_names() == ["grpo", "grpo_turn", "igpo", "rloo", "rloo_turn", "turn_norm"]


# ---- grpo -----------------------------------------------------------------------------------


def test_grpo_gamma_1_compares_each_return_with_the_mean_at_its_own_turn_index() -> None:
    # t=0: 3 - 7/3 = 2/3, 1 - 7/3 = -4/3, 3 - 7/3 = 2/3;  t=1: 2 - 1.5 = 0.5, 1 - 1.5 = -0.5;  t=2: lone -> 0.
    # (Comparing G_{0,1} = 2 with mean G_0 = 7/3, as turn_advantages does, would make it -1/3.)
    assert_close(advantages("grpo_turn", 1.0, False), [[2 / 3, 0.5, 0.0], [-4 / 3, -0.5], [2 / 3]])


def test_grpo_gamma_1_with_std() -> None:
    # t=0: (2/3) / (2 sqrt(2)/3) = 1/sqrt(2), (-4/3) / (2 sqrt(2)/3) = -sqrt(2);  t=1: +-0.5 / 0.5 = +-1.
    r2 = math.sqrt(2)
    assert_close(advantages("grpo_turn", 1.0, True), [[1 / r2, 1.0, 0.0], [-r2, -1.0], [1 / r2]])


def test_grpo_gamma_half() -> None:
    # t=0: 1.5 - 5/3 = -1/6, 0.5 - 5/3 = -7/6, 3 - 5/3 = 4/3;  t=1: both returns are 1 -> 0;  t=2: lone -> 0.
    assert_close(advantages("grpo_turn", 0.5, False), [[-1 / 6, 0.0, 0.0], [-7 / 6, 0.0], [4 / 3]])


def test_grpo_gamma_half_with_std() -> None:
    # t=0: deviations (-1/6, -7/6, 4/3), squares (1, 49, 64)/36, pop. variance 114/108 = 19/18.
    # t=1: std 0 and deviations 0, so 0 / (0 + eps) = 0 rather than a blow-up.
    s = math.sqrt(19 / 18)
    assert_close(advantages("grpo_turn", 0.5, True), [[-1 / 6 / s, 0.0, 0.0], [-7 / 6 / s, 0.0], [4 / 3 / s]])


# ---- rloo -----------------------------------------------------------------------------------


def test_rloo_gamma_1_uses_the_mean_of_the_others_at_each_index() -> None:
    # t=0 (sum 7): 3 - (7-3)/2 = 1, 1 - (7-1)/2 = -2, 3 - (7-3)/2 = 1;  t=1 (sum 3): 2 - 1 = 1, 1 - 2 = -1;  t=2: lone -> 0.
    # (= n/(n-1) times grpo's: 2/3 * 3/2 = 1.)
    assert_close(advantages("rloo_turn", 1.0, False), [[1.0, 1.0, 0.0], [-2.0, -1.0], [1.0]])


def test_rloo_gamma_1_with_std() -> None:
    # t=0: 1 / (2 sqrt(2)/3) = 3/(2 sqrt(2)), -2 / (2 sqrt(2)/3) = -3/sqrt(2);  t=1: +-1 / 0.5 = +-2.
    r2 = math.sqrt(2)
    assert_close(advantages("rloo_turn", 1.0, True), [[3 / (2 * r2), 2.0, 0.0], [-3 / r2, -2.0], [3 / (2 * r2)]])


def test_rloo_gamma_half() -> None:
    # t=0 (sum 5): 1.5 - 3.5/2 = -0.25, 0.5 - 4.5/2 = -1.75, 3 - 2/2 = 2;  t=1: 1 - 1 = 0 twice.
    assert_close(advantages("rloo_turn", 0.5, False), [[-0.25, 0.0, 0.0], [-1.75, 0.0], [2.0]])


# ---- turn_norm ------------------------------------------------------------------------------


def test_turn_norm_gamma_1_normalises_rewards_per_index_then_sums() -> None:
    # rhat: t=0: 1 - 4/3 = -1/3, 0 - 4/3 = -4/3, 3 - 4/3 = 5/3;  t=1: -0.5, 0.5;  t=2: lone -> 0.
    # A:    traj 0: (-1/3 - 1/2 + 0, -1/2 + 0, 0) = (-5/6, -1/2, 0);  traj 1: (-4/3 + 1/2, 1/2) = (-5/6, 1/2);  traj 2: 5/3.
    assert_close(advantages("turn_norm", 1.0, False), [[-5 / 6, -0.5, 0.0], [-5 / 6, 0.5], [5 / 3]])


def test_turn_norm_gamma_half() -> None:
    # Same rhat.  traj 0: A_1 = -1/2, A_0 = -1/3 + 0.5 * (-1/2) = -7/12;  traj 1: A_1 = 1/2, A_0 = -4/3 + 1/4 = -13/12.
    assert_close(advantages("turn_norm", 0.5, False), [[-7 / 12, -0.5, 0.0], [-13 / 12, 0.5], [5 / 3]])


def test_turn_norm_gamma_1_with_std() -> None:
    # t=0: deviations (-1, -4, 5)/3 over std sqrt(14)/3 -> (-1, -4, 5)/sqrt(14);  t=1: (-0.5, 0.5)/0.5 = (-1, 1).
    # A: traj 0: (-1/sqrt(14) - 1, -1, 0);  traj 1: (-4/sqrt(14) + 1, 1);  traj 2: 5/sqrt(14).
    r14 = math.sqrt(14)
    assert_close(advantages("turn_norm", 1.0, True), [[-1 / r14 - 1, -1.0, 0.0], [-4 / r14 + 1, 1.0], [5 / r14]])


# ---- igpo (pooled normalisation) ------------------------------------------------------------


def test_igpo_pools_every_reward_of_the_group() -> None:
    # Pool (1, 0, 2, 0, 1, 3): mean 7/6.  rhat: traj 0 (-1, -7, 5)/6, traj 1 (-7, -1)/6, traj 2 (11)/6.
    # gamma = 1: traj 0 (-3/6, -2/6, 5/6), traj 1 (-8/6, -1/6), traj 2 11/6.
    assert_close(advantages("igpo", 1.0, False), [[-0.5, -1 / 3, 5 / 6], [-4 / 3, -1 / 6], [11 / 6]])
    # gamma = 0.5: traj 0: A_1 = -7/6 + 5/12 = -3/4, A_0 = -1/6 - 3/8 = -13/24;  traj 1: A_0 = -7/6 - 1/12 = -5/4.
    assert_close(advantages("igpo", 0.5, False), [[-13 / 24, -0.75, 5 / 6], [-1.25, -1 / 6], [11 / 6]])


def test_igpo_with_std() -> None:
    # Pop. variance of the pool: (1 + 49 + 25 + 49 + 1 + 121) / 36 / 6 = 41/36, std sqrt(41)/6, so rhat = k / sqrt(41).
    r41 = math.sqrt(41)
    assert_close(advantages("igpo", 1.0, True), [[-3 / r41, -2 / r41, 5 / r41], [-8 / r41, -1 / r41], [11 / r41]])


# ---- shared behaviour -----------------------------------------------------------------------


def test_episode_level_grpo_and_rloo_compare_every_turn_with_the_groups_first_turn_returns() -> None:
    # rewards [[0, 1], [0, 0]], gamma 1: G = [[1, 1], [0, 0]]; first-turn returns R = (1, 0), mean 0.5, std 0.5.
    rewards = [[0.0, 1.0], [0.0, 0.0]]
    assert_close(get_advantage("grpo")(rewards, gamma=1.0, normalize_std=False), [[0.5, 0.5], [-0.5, -0.5]])
    assert_close(get_advantage("grpo")(rewards, gamma=1.0, normalize_std=True), [[0.5 / (0.5 + 1e-6)] * 2, [-0.5 / (0.5 + 1e-6)] * 2])
    # rloo: the other episode's R is the baseline: 1 - 0 and 0 - 1.
    assert_close(get_advantage("rloo")(rewards, gamma=1.0, normalize_std=True), [[1.0, 1.0], [-1.0, -1.0]])
    # gamma 0.5: G = [[0.5, 1], [0, 0]], mean R 0.25: the flaw per-turn baselines fix shows at turn 1.
    assert_close(get_advantage("grpo")(rewards, gamma=0.5, normalize_std=False), [[0.25, 0.75], [-0.25, -0.25]])


@pytest.mark.parametrize("name", ["grpo_turn", "rloo_turn", "turn_norm", "igpo"])
@pytest.mark.parametrize("normalize_std", [False, True])
def test_a_lone_trajectory_gets_zero_advantage(name: str, normalize_std: bool) -> None:
    # No sibling at any index: nothing says whether these turns were better or worse than expected.
    out = get_advantage(name)([[1.0, 5.0, -2.0], []], gamma=1.0, normalize_std=normalize_std)
    assert out == [[0.0, 0.0, 0.0], []]


@pytest.mark.parametrize("name", ["grpo_turn", "rloo_turn", "turn_norm", "igpo"])
def test_equal_trajectories_get_zero_advantage_even_with_std(name: str) -> None:
    # Every deviation is 0 (up to rounding), so dividing by std + eps cannot blow it up.
    out = get_advantage(name)([[0.1, 0.1], [0.1, 0.1]], gamma=1.0, normalize_std=True)
    assert all(a == pytest.approx(0.0, abs=1e-9) for row in out for a in row)


@pytest.mark.parametrize("name", ["grpo", "rloo", "grpo_turn", "rloo_turn", "turn_norm", "igpo"])
def test_bad_inputs_are_refused(name: str) -> None:
    fn = get_advantage(name)
    with pytest.raises(ValueError, match="gamma"):
        fn(REWARDS, gamma=1.5, normalize_std=False)
    with pytest.raises(ValueError, match="trajectory 1, turn 0"):
        fn([[0.0], [math.nan]], gamma=1.0, normalize_std=False)


def test_an_empty_group_has_no_advantages() -> None:
    assert get_advantage("grpo")([], gamma=1.0, normalize_std=True) == []


# ---- registry -------------------------------------------------------------------------------


def test_an_unknown_name_lists_the_known_ones_and_suggests_the_closest() -> None:
    with pytest.raises(UnknownAdvantageError) as info:
        get_advantage("rlooo")
    message = str(info.value)
    assert "'rlooo'" in message and "did you mean 'rloo'?" in message
    assert "known: grpo, grpo_turn, igpo, rloo, rloo_turn, turn_norm" in message
    assert isinstance(info.value, AgentGymError) and isinstance(info.value, KeyError)


def test_a_fresh_registry_registers_and_refuses_duplicates() -> None:
    registry = AdvantageRegistry()

    @registry.register("zeros")
    def zeros(rewards: Sequence[Sequence[float]], *, gamma: float, normalize_std: bool) -> list[list[float]]:
        return [[0.0] * len(row) for row in rewards]

    assert registry.names() == ["zeros"] and registry.get("zeros") is zeros
    assert "zeros" not in advantage_names()  # the project's registry is untouched
    with pytest.raises(ValueError, match="already registered"):
        registry.register("zeros")(zeros)
    with pytest.raises(UnknownAdvantageError, match="known: zeros"):
        registry.get("grpo")
    with pytest.raises(ValueError, match="non-empty name"):
        registry.register(" ")


# ---- zero_advantage_fraction ----------------------------------------------------------------


def test_zero_advantage_fraction_counts_collapsed_groups() -> None:
    groups = [
        [[0.0, 0.0], [0.0]],       # collapsed
        [[1e-12], [-1e-12]],       # collapsed: within tol
        [[0.5], [-0.5]],           # informative
        [[], []],                  # no turns at all: collapsed
    ]
    assert zero_advantage_fraction(groups) == pytest.approx(3 / 4)
    assert zero_advantage_fraction(groups, tol=0.5) == pytest.approx(1.0)
    assert math.isnan(zero_advantage_fraction([]))


def test_zero_advantage_fraction_on_real_estimates() -> None:
    # An all-success group (outcome 1 everywhere) collapses under grpo; the worked group does not.
    same = get_advantage("grpo_turn")([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]], gamma=1.0, normalize_std=True)
    mixed = advantages("grpo_turn", 1.0, True)
    assert zero_advantage_fraction([same, mixed]) == pytest.approx(0.5)
