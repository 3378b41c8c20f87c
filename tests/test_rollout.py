"""The rollout engine: order, concurrency, isolation of failures, timeouts, history windows, groups."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

import agentgym
from agentgym.policies import CallablePolicy, ScriptedPolicy, WalkthroughPolicy
from agentgym.policies.base import EpisodeContext, Policy
from agentgym.rollout import ChatHistory, EpisodeJob, RolloutConfig, RolloutEngine, plan_episodes
from agentgym.types import Completion, Message, PolicyInfo, SamplingParams
from tests.toy_envs import CountdownEnv


def test_plan_episodes_cycles_tasks_and_forms_groups() -> None:
    jobs = plan_episodes(["a", "b"], 5, samples_per_task=2, seed=10)
    assert [(j.task_id, j.seed, j.sample_index) for j in jobs] == [
        ("a", 10, 0), ("a", 10, 1), ("b", 11, 0), ("b", 11, 1), ("a", 12, 0)]
    assert jobs[0].group_id == jobs[1].group_id != jobs[2].group_id
    with pytest.raises(ValueError):
        plan_episodes([], 3)


def test_history_window_keeps_the_goal_and_the_last_exchanges() -> None:
    messages: list[Message] = []
    h = ChatHistory(messages, "rules", "goal")
    for i in range(4):
        h.add(f"a{i}", f"o{i}")
    assert [m.content for m in messages] == ["rules", "goal", "a0", "o0", "a1", "o1", "a2", "o2", "a3", "o3"]
    assert [m.content for m in h.window(None)] == [m.content for m in messages]
    assert h.window_indices(1) == [0, 1, 8, 9]
    assert [m.content for m in h.window(1)] == ["rules", "goal", "a3", "o3"]
    assert [m.content for m in h.window(0)] == ["rules", "goal"]
    assert h.window_indices(9) == list(range(10))
    assert ChatHistory([], "", "goal").window_indices(None) == [0]  # no system message without instructions


async def test_results_in_job_order_and_every_trajectory_to_callbacks() -> None:
    seen = []
    engine = RolloutEngine(lambda: CountdownEnv(), ScriptedPolicy(["down"] * 5), RolloutConfig(concurrency=3),
                           env_id="countdown", callbacks=[seen.append])
    jobs = plan_episodes(["count-4", "count-2", "count-3"], 6)
    trajs = await engine.run(jobs)
    assert [t.task_id for t in trajs] == [j.task_id for j in jobs]
    assert [t.num_turns for t in trajs] == [4, 2, 3, 4, 2, 3]
    assert all(t.success and t.terminated and not t.truncated and t.total_reward == 1.0 for t in trajs)
    assert sorted(t.trajectory_id for t in seen) == sorted(t.trajectory_id for t in trajs)


async def test_episodes_really_run_concurrently() -> None:
    active, peak, lock = 0, 0, threading.Lock()

    class Probe(Policy):
        async def act(self, messages, tools=None, sampling=None, context=None) -> Completion:
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            await asyncio.sleep(0.02)
            with lock:
                active -= 1
            return Completion(text="down")

        def describe(self) -> PolicyInfo:
            return PolicyInfo(kind="probe")

    await RolloutEngine(lambda: CountdownEnv(), Probe(), RolloutConfig(concurrency=4)).run(plan_episodes(["count-3"], 8))
    assert peak == 4


async def test_a_failing_env_ends_only_its_own_episode() -> None:
    def policy(messages: Sequence[Message], ctx: EpisodeContext | None) -> str:
        return "boom" if ctx and ctx.task_id == "count-3" else "down"

    made = []

    def factory() -> CountdownEnv:
        made.append(1)
        return CountdownEnv(fail_on="boom")

    trajs = await RolloutEngine(factory, CallablePolicy(policy), RolloutConfig(concurrency=1)).run(
        plan_episodes(["count-2", "count-3", "count-4"], 3))
    ok1, bad, ok2 = trajs
    assert ok1.success and ok2.success and ok2.error is None
    assert bad.error is not None and bad.error.where == "env" and "env exploded" in bad.error.traceback
    assert bad.success is None and bad.num_turns == 0
    assert len(made) == 2  # the broken env was replaced, not reused


async def test_a_failing_policy_ends_only_its_own_episode() -> None:
    def policy(messages: Sequence[Message], ctx: EpisodeContext | None) -> str:
        if ctx and ctx.task_id == "count-3" and ctx.turn == 1:
            raise ConnectionError("server went away")
        return "down"

    trajs = await RolloutEngine(lambda: CountdownEnv(), CallablePolicy(policy)).run(plan_episodes(["count-2", "count-3"], 2))
    assert trajs[0].success and trajs[1].error.where == "policy"
    assert trajs[1].num_turns == 1 and "server went away" in trajs[1].error.message


async def test_turn_timeout_truncates_the_episode_and_records_it() -> None:
    env_factory = lambda: CountdownEnv(step_delay_s=0.5)  # noqa: E731
    cfg = RolloutConfig(turn_timeout_s=0.1)
    (traj,) = await RolloutEngine(env_factory, ScriptedPolicy(["down"] * 5), cfg).run(plan_episodes(["count-2"], 1))
    assert traj.truncated and traj.error.where == "timeout" and traj.success is None


async def test_episode_timeout_keeps_the_turns_played_so_far() -> None:
    cfg = RolloutConfig(episode_timeout_s=0.35)
    env_factory = lambda: CountdownEnv(starts=[50], max_turns=100, step_delay_s=0.1)  # noqa: E731
    (traj,) = await RolloutEngine(env_factory, ScriptedPolicy(["down"] * 60), cfg).run(plan_episodes(["count-50"], 1))
    assert traj.truncated and traj.error.where == "timeout" and 1 <= traj.num_turns < 50


async def test_engine_max_turns_and_history_window_shape_the_prompts() -> None:
    cfg = RolloutConfig(max_turns=3, history_turns=1, sampling=SamplingParams(temperature=0.0, max_tokens=5))
    (traj,) = await RolloutEngine(lambda: CountdownEnv(), ScriptedPolicy(["x", "y", "z", "w"]), cfg).run(
        plan_episodes(["count-4"], 1))
    assert traj.num_turns == 3 and traj.truncated and not traj.terminated
    assert [len(traj.prompt(t)) for t in traj.turns] == [2, 4, 4]
    assert traj.prompt(2)[2].content == "y" and traj.sampling.max_tokens == 5
    # The conversation is stored once, whole: system, goal, then every reply and observation.
    assert [m.role for m in traj.messages] == ["system", "user"] + ["assistant", "user"] * 3
    assert [m.content for m in traj.messages[2::2]] == ["x", "y", "z"]
    assert [t.signals["valid_action"] for t in traj.turns] == [False, False, False]


async def test_walkthrough_policy_solves_textworld_through_the_engine(tw_games_dir: Path) -> None:
    kwargs = {"games_dir": str(tw_games_dir)}
    tasks = agentgym.make("textworld", **kwargs).task_ids()
    engine = RolloutEngine(lambda: agentgym.make("textworld", **kwargs), WalkthroughPolicy(),
                           RolloutConfig(concurrency=4), env_id="textworld", env_kwargs=kwargs)
    trajs = await engine.run(plan_episodes(tasks, 8))
    assert len(trajs) == 8 and all(t.success for t in trajs)
    assert all(t.env_kwargs == kwargs and t.policy.kind == "walkthrough" for t in trajs)
