"""The TextEnv base class: seeding, truncation, info conventions, and gymnasium's checker."""

from __future__ import annotations

import random

import pytest
from gymnasium.utils.env_checker import check_env

from agentgym.env import INFO_KEYS
from agentgym.errors import TaskNotFoundError
from tests.toy_envs import CountdownEnv


def test_info_carries_every_agreed_key_on_reset_and_step() -> None:
    env = CountdownEnv()
    _, info = env.reset(seed=0, options={"task": "count-2"})
    assert set(INFO_KEYS) <= set(info) and info["task_id"] == "count-2" and info["success"] is None
    _, _, _, _, info = env.step("down")
    assert set(INFO_KEYS) <= set(info) and info["signals"] == {"valid_action": True}


def test_win_terminates_and_reports_success() -> None:
    env = CountdownEnv()
    env.reset(options={"task": "count-2"})
    assert env.step("down")[2:4] == (False, False)
    obs, reward, terminated, truncated, info = env.step("down")
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)


def test_max_turns_truncates_and_is_not_termination() -> None:
    env = CountdownEnv(max_turns=2)
    env.reset(options={"task": "count-4"})
    env.step("down")
    _, _, terminated, truncated, info = env.step("down")
    assert terminated is False and truncated is True and info["success"] is False
    with pytest.raises(RuntimeError, match="episode has ended"):
        env.step("down")


def test_invalid_action_is_an_observation_not_an_exception() -> None:
    env = CountdownEnv()
    env.reset(options={"task": "count-2"})
    obs, reward, terminated, truncated, info = env.step("up")
    assert "not a command" in obs and info["signals"]["valid_action"] is False
    assert (reward, terminated, truncated) == (0.0, False, False)


def test_seeded_task_choice_uses_the_envs_own_generator() -> None:
    env = CountdownEnv(starts=range(2, 40))
    random.seed(1)
    first = [env.reset(seed=s)[1]["task_id"] for s in range(10)]
    random.seed(2)  # the global generator must not matter
    again = [env.reset(seed=s)[1]["task_id"] for s in range(10)]
    assert first == again and len(set(first)) > 1


def test_reset_clears_the_previous_episode() -> None:
    env = CountdownEnv(max_turns=3)
    env.reset(options={"task": "count-4"})
    env.step("down")
    env.step("down")
    obs, info = env.reset(options={"task": "count-4"})
    assert obs == "4 to go" and info["turn"] == 0 and env.history == []
    env.step("down")
    env.step("down")
    assert env.step("down")[3] is True  # the turn counter restarted: truncation only at 3 again


def test_misuse_is_refused_clearly() -> None:
    env = CountdownEnv()
    with pytest.raises(RuntimeError, match="reset"):
        env.step("down")
    with pytest.raises(TaskNotFoundError, match="unknown task 'nope'"):
        env.reset(options={"task": "nope"})
    env.reset()
    with pytest.raises(TypeError, match="must be a str"):
        env.step(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CountdownEnv(max_turns=0)


def test_gymnasium_env_checker_passes() -> None:
    check_env(CountdownEnv(), skip_render_check=False)
