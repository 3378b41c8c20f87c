"""The python-tool env on each real sandbox backend: tools run in the sandbox, answers are checked, episodes are isolated."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from gymnasium.utils.env_checker import check_env

import agentgym
from agentgym.envs.tools.python_tool import PythonToolEnv
from agentgym.policies.base import EpisodeContext
from agentgym.policies.scripted import CallablePolicy, WalkthroughPolicy
from agentgym.rollout.engine import RolloutConfig, plan_episodes, run_rollouts
from agentgym.sandboxes.base import SandboxBackend
from agentgym.sandboxes.pool import close_shared_pools
from agentgym.tool_calls import ToolCall, render_tool_call
from agentgym.types import Message


@pytest.fixture(autouse=True)
def _fresh_pools() -> None:
    yield
    close_shared_pools()


def _env(backend: SandboxBackend, **kwargs: object) -> PythonToolEnv:
    return PythonToolEnv(sandbox_backend=backend.name, num_tasks=16, pool_warm=1, **kwargs)


def test_the_reference_program_runs_in_the_sandbox_and_wins(sandbox_backend: SandboxBackend) -> None:
    env = _env(sandbox_backend)
    try:
        task = env.task_ids()[0]
        observation, info = env.reset(seed=0, options={"task": task})
        assert info["tools"] and {t["function"]["name"] for t in info["tools"]} == {"python", "shell", "submit"}
        run, submit = info["walkthrough"]
        observation, reward, terminated, truncated, info = env.step(run)
        assert observation.startswith("exit code 0") and not terminated
        printed = int(re.search(r"stdout:\n(-?\d+)", observation).group(1))
        # The answer comes from the sandbox's run, and it is the one the env checks against.
        observation, reward, terminated, truncated, info = env.step(
            render_tool_call(ToolCall("submit", {"answer": f"{printed:,}"})))
        assert terminated and reward == 1.0 and info["success"] is True
    finally:
        env.close()


def test_wrong_answers_bad_calls_and_failing_code(sandbox_backend: SandboxBackend) -> None:
    env = _env(sandbox_backend, exec_timeout_s=2.0)
    try:
        env.reset(seed=0, options={"task": env.task_ids()[1]})
        obs, reward, terminated, _, info = env.step("I think it is 5")
        assert not terminated and info["signals"]["valid_action"] is False and "tool_call" in obs
        obs, _, _, _, info = env.step(render_tool_call(ToolCall("rm_rf", {})))
        assert "unknown tool" in obs and info["signals"]["valid_action"] is False
        obs, _, _, _, info = env.step("```python\nraise SystemExit('boom')\n```")
        assert obs.startswith("exit code 1") and "boom" in obs and info["signals"]["exit_code"] == 1
        obs, _, _, _, info = env.step(render_tool_call(ToolCall("shell", {"command": "sleep 30"})))
        assert "time limit" in obs and info["signals"]["timed_out"] is True
        obs, reward, terminated, _, info = env.step(render_tool_call(ToolCall("submit", {"answer": "-1"})))
        assert terminated and reward == 0.0 and info["success"] is False
    finally:
        env.close()


def test_sixteen_concurrent_episodes_each_get_their_own_sandbox(sandbox_backend: SandboxBackend) -> None:
    """Every episode writes a file named for itself and lists its workdir: it must see only its own file."""

    def agent(messages: Sequence[Message], context: EpisodeContext | None) -> str:
        assert context is not None
        if context.turn == 0:
            name = f"mine-{context.episode_id}"
            return render_tool_call(ToolCall("shell", {"command": f"touch {name} && sleep 1 && ls -A"}))
        return render_tool_call(ToolCall("submit", {"answer": "0"}))

    kwargs = {"sandbox_backend": sandbox_backend.name, "num_tasks": 16, "pool_warm": 4, "pool_max": 16}
    jobs = plan_episodes(PythonToolEnv(**kwargs).task_ids(), 16)
    trajectories = asyncio.run(run_rollouts(
        lambda: agentgym.make("python-tool", **kwargs), CallablePolicy(agent), jobs,
        RolloutConfig(concurrency=16, max_turns=3, turn_timeout_s=300),
    ))
    assert len(trajectories) == 16 and all(t.error is None for t in trajectories), [t.error for t in trajectories]
    for t in trajectories:
        listing = t.turns[0].observation.split("stdout:\n", 1)[1].split()
        assert listing == [f"mine-{t.trajectory_id}"], listing


def test_the_walkthrough_solves_every_task(sandbox_backend: SandboxBackend) -> None:
    kwargs = {"sandbox_backend": sandbox_backend.name, "num_tasks": 5, "pool_warm": 2}
    jobs = plan_episodes(PythonToolEnv(**kwargs).task_ids(), 5)
    trajectories = asyncio.run(run_rollouts(
        lambda: agentgym.make("python-tool", **kwargs), WalkthroughPolicy(), jobs, RolloutConfig(concurrency=5),
    ))
    assert [t.success for t in trajectories] == [True] * 5


def test_gymnasium_env_checker_passes(sandbox_backend: SandboxBackend) -> None:
    env = _env(sandbox_backend)
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()


def test_an_eval_leaves_no_sandbox_behind(sandbox_backend: SandboxBackend, tmp_path: Path) -> None:
    """Pools are stopped before their sandboxes are closed at exit, so no reset in flight can leak one."""
    agentgym_cli = str(Path(sys.executable).with_name("agentgym"))
    for attempt in range(3):  # a leak is a race: give it several chances
        run = subprocess.Popen([agentgym_cli, "eval", "--env", "python-tool", "--policy", "walkthrough", "--episodes",
                                "8", "--concurrency", "4", "--quiet", "--env-opt", f"sandbox_backend={sandbox_backend.name}",
                                "--out", str(tmp_path / f"eval-{attempt}")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
        assert "failed to reset" not in stderr
        assert [i.id for i in sandbox_backend.list() if i.owner_pid == run.pid] == []
