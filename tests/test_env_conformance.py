"""Every registered env, built-in or added later, passes gymnasium's env checker and agentgym's info contract.

The test is parametrised over `agentgym.list_envs()`, so a new env is checked the day it is
registered. Envs whose defaults would be slow in a test get small options here; an env not
named below is checked with its defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import agentgym
from agentgym.env import INFO_KEYS

# Options that keep an env's first build small; the conformance is the same at any size.
SMALL: dict[str, dict[str, Any]] = {
    "chess-endgames": {"num_positions": 2},
    "maze": {"num_mazes": 5},
    "alfworld": {"num_games": 6},
}


def _kwargs(env_id: str, tw_games_dir: Path, tmp_path: Path) -> dict[str, Any]:
    if env_id == "textworld":
        return {"games_dir": str(tw_games_dir)}
    if env_id == "swe-gym":  # the built-in set needs `agentgym swe prepare`; a one-instance task file does not
        from tests.swe_calc_task import make_calc_task

        tasks, repos_dir = make_calc_task(tmp_path)
        return {"tasks": str(tasks), "repos_dir": str(repos_dir), "sandbox_backend": "bwrap"}
    return dict(SMALL.get(env_id, {}))


def _supported(env_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` without the options this env's constructor does not take (an option named above may go away)."""
    import inspect

    entry = agentgym.spec(env_id).load()
    params = inspect.signature(entry).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


@pytest.mark.parametrize("env_id", [spec.id for spec in agentgym.list_envs()])
def test_every_registered_env_passes_the_gymnasium_checker_and_fills_the_info_keys(
    env_id: str, tw_games_dir: Path, tmp_path: Path,
) -> None:
    env = gym.make(f"agentgym/{env_id}", **_supported(env_id, _kwargs(env_id, tw_games_dir, tmp_path)))
    try:
        check_env(env.unwrapped, skip_render_check=True)
        observation, info = env.unwrapped.reset(seed=3)
        assert isinstance(observation, str) and observation
        assert set(INFO_KEYS) <= set(info), f"{env_id} reset info lacks {set(INFO_KEYS) - set(info)}"
        assert info["task_id"] in env.unwrapped.task_ids() and info["success"] is None
        observation, reward, terminated, truncated, info = env.unwrapped.step("this is not a move of any game")
        assert isinstance(observation, str) and isinstance(reward, float)
        assert set(INFO_KEYS) <= set(info) and "valid_action" in info["signals"]
        assert info["signals"]["valid_action"] is False, f"{env_id} took nonsense as a valid action"
    finally:
        env.close()
