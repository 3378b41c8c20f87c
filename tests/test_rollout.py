"""The rollout engine: order, concurrency, isolation of failures, timeouts, history windows, groups."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

import agentgym
from agentgym.policies import CallablePolicy, ScriptedPolicy, WalkthroughPolicy
from agentgym.errors import PolicyError
from agentgym.policies.base import EpisodeContext, Policy
from agentgym.policies.scripted import RandomAdmissiblePolicy
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


def test_structured_tool_calls_are_answered_by_tool_messages_with_their_ids() -> None:
    from agentgym.rollout.prompts import NOT_RUN
    from agentgym.types import FunctionCall, ToolCallRecord

    messages: list[Message] = []
    h = ChatHistory(messages, "rules", "goal")
    h.add("plain", "o0")
    calls = [ToolCallRecord(id="c1", function=FunctionCall(name="bash", arguments='{"command": "ls"}')),
             ToolCallRecord(id="c2", function=FunctionCall(name="bash", arguments='{"command": "pwd"}'))]
    h.add("let me look", "README.md", calls)
    h.add("done", "o2")
    assert [(m.role, m.content, m.tool_call_id) for m in messages[2:]] == [
        ("assistant", "plain", None), ("user", "o0", None),
        ("assistant", "let me look", None), ("tool", "README.md", "c1"), ("tool", NOT_RUN, "c2"),
        ("assistant", "done", None), ("user", "o2", None)]
    assert messages[4].tool_calls == calls and h.exchanges == 3
    # The window counts exchanges, not messages: the two-call exchange is kept or dropped whole.
    assert h.window_indices(2) == [0, 1, 4, 5, 6, 7, 8]
    assert h.window_indices(1) == [0, 1, 7, 8] and h.window_indices(0) == [0, 1]


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


async def test_random_admissible_policy_plays_only_valid_actions_and_replays_by_seed(tw_games_dir: Path) -> None:
    kwargs = {"games_dir": str(tw_games_dir), "max_turns": 6}
    tasks = agentgym.make("textworld", **kwargs).task_ids()

    async def play(seed: int) -> list:
        engine = RolloutEngine(lambda: agentgym.make("textworld", **kwargs), RandomAdmissiblePolicy(seed),
                               RolloutConfig(concurrency=2, seed=0), env_id="textworld", env_kwargs=kwargs)
        return await engine.run(plan_episodes(tasks, 4))

    first, again, other = await play(0), await play(0), await play(1)
    assert all(turn.signals["valid_action"] for t in first for turn in t.turns)  # every pick was admissible
    assert [[u.action for u in t.turns] for t in first] == [[u.action for u in t.turns] for t in again]
    assert [[u.action for u in t.turns] for t in first] != [[u.action for u in t.turns] for t in other]
    with pytest.raises(PolicyError, match="admissible actions"):
        await RandomAdmissiblePolicy().act([], context=None)


class _RecordingPolicy(Policy):
    """Records each call's sampling seed and prompt length; refuses prompts longer than `context_messages`."""

    def __init__(self, context_messages: int | None = None) -> None:
        self.calls: list[tuple[str, int, int | None, int]] = []
        self.context_messages = context_messages

    async def act(self, messages: Sequence[Message], tools=None, sampling=None, context=None) -> Completion:  # type: ignore[override]
        from agentgym.errors import ContextOverflowError

        assert context is not None and sampling is not None
        self.calls.append((context.episode_id, context.turn, sampling.seed, len(messages)))
        if self.context_messages is not None and len(messages) > self.context_messages:
            raise ContextOverflowError(f"{len(messages)} messages do not fit")
        return Completion(text="down")

    def describe(self) -> PolicyInfo:
        return PolicyInfo(kind="recording")


async def test_each_request_gets_a_seed_derived_from_run_seed_episode_and_turn() -> None:
    from agentgym.seeding import request_seed

    jobs = plan_episodes(["count-2", "count-3"], 4, samples_per_task=2, seed=5)

    async def seeds(run_seed: int | None) -> list[list[int | None]]:
        policy = _RecordingPolicy()
        trajs = await RolloutEngine(lambda: CountdownEnv(), policy, RolloutConfig(concurrency=3, seed=run_seed)).run(jobs)
        by_episode = {t.trajectory_id: [s for e, _, s, _ in sorted(policy.calls, key=lambda c: c[1]) if e == t.trajectory_id]
                      for t in trajs}
        return [by_episode[t.trajectory_id] for t in trajs]

    first, again, other = await seeds(7), await seeds(7), await seeds(8)
    assert first == again  # a rerun asks for the same samples, whatever order the workers ran in
    assert first != other
    assert first[0] == [request_seed(7, jobs[0].group_id, 0, turn) for turn in range(2)]
    # Rollouts of one group must still differ: each sample has its own seeds.
    assert first[0][0] != first[1][0]
    assert all(len(set(s)) == len(s) for s in first)  # and each turn its own
    assert await seeds(None) == [[None] * 2, [None] * 2, [None] * 3, [None] * 3]


async def test_a_prompt_that_outgrows_the_context_drops_older_exchanges_then_ends_truncated() -> None:
    from agentgym.evaluation import summarize

    # Instructions + goal + k exchanges = 2 + 2k messages; at most 6 fit (two exchanges).
    policy = _RecordingPolicy(context_messages=6)
    engine = RolloutEngine(lambda: CountdownEnv(starts=(9,)), policy, RolloutConfig(history_turns=None))
    (traj,) = await engine.run(plan_episodes(["count-9"], 1))
    assert traj.error is None and traj.success and traj.num_turns == 9  # shrinking let it finish
    assert all(len(u.prompt_messages) <= 6 for u in traj.turns) and len(traj.turns[-1].prompt_messages) < 2 + 2 * 8
    assert traj.truncation_reason is None

    # "end": the first prompt that does not fit ends the episode, truncated, and the summary counts it.
    policy = _RecordingPolicy(context_messages=6)
    engine = RolloutEngine(lambda: CountdownEnv(starts=(9,)), policy, RolloutConfig(history_turns=None, on_context_overflow="end"))
    (traj,) = await engine.run(plan_episodes(["count-9"], 1))
    assert traj.error is None and traj.truncated and not traj.terminated
    assert traj.truncation_reason == "context_overflow" and traj.num_turns == 3
    summary = summarize([traj], env_id="countdown", policy=traj.policy, planned=1, wall_seconds=1.0)
    assert summary.context_overflows == 1 and summary.errors == 0

    # Even the instructions and the goal alone do not fit: the episode ends at once, never crashes.
    policy = _RecordingPolicy(context_messages=1)
    (traj,) = await RolloutEngine(lambda: CountdownEnv(), policy, RolloutConfig()).run(plan_episodes(["count-2"], 1))
    assert traj.num_turns == 0 and traj.truncation_reason == "context_overflow" and traj.error is None


async def test_a_failing_env_close_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    class BadClose(CountdownEnv):
        def close(self) -> None:
            raise RuntimeError("close exploded")

    with caplog.at_level("WARNING"):
        await RolloutEngine(lambda: BadClose(), ScriptedPolicy(["down"] * 3), RolloutConfig()).run(plan_episodes(["count-2"], 1))
        await asyncio.sleep(0.2)  # the close runs in the env's thread
    assert any("close exploded" in (r.exc_text or "") or "close exploded" in str(r.exc_info) for r in caplog.records)


async def test_a_trajectory_keeps_the_reset_and_final_info_less_what_is_stored_apart() -> None:
    from agentgym.rollout.engine import kept_info

    engine = RolloutEngine(lambda: CountdownEnv(), ScriptedPolicy(["down"] * 5), RolloutConfig(concurrency=1), env_id="countdown")
    [traj] = await engine.run(plan_episodes(["count-2"], 1))
    assert traj.reset_info["task_id"] == "count-2" and traj.reset_info["turn"] == 0
    assert traj.final_info["success"] is True and traj.final_info["turn"] == 2
    assert not {"instructions", "tools", "admissible_actions"} & (set(traj.reset_info) | set(traj.final_info))
    assert kept_info({"answer": "Paris", "odd": {1, 2}.__class__, "tools": [1]}) == {"answer": "Paris", "odd": "<class 'set'>"}
