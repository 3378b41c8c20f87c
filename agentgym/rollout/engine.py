"""The rollout engine: plays many episodes at once and records each as a Trajectory.

One fixed driver (`run_episode`) serves every env and policy. Policy calls are asyncio
coroutines; env calls block, so each worker runs its env in a thread of its own
(`EnvThread`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentgym.env import TextEnv
from agentgym.errors import ContextOverflowError
from agentgym.policies.base import EpisodeContext, Policy
from agentgym.rollout.env_thread import EnvThread
from agentgym.rollout.prompts import ChatHistory
from agentgym.seeding import request_seed
from agentgym.types import Completion, ErrorRecord, Message, SamplingParams, Trajectory, Turn

log = logging.getLogger(__name__)

TrajectoryCallback = Callable[[Trajectory], None]
CONTEXT_OVERFLOW = "context_overflow"


class RolloutConfig(BaseModel):
    """How the engine plays episodes."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(4, ge=1, description="Episodes played at once (one env instance each).")
    max_turns: int | None = Field(None, ge=1, description="Engine-side cap on turns; None leaves it to the env.")
    history_turns: int | None = Field(
        4, ge=0,
        description="Past exchanges kept in the prompt besides the instructions and the first observation; None keeps all. "
        "A window keeps prompt cost flat: with the whole history an in-process model re-reads every earlier turn each turn.",
    )
    turn_timeout_s: float | None = Field(600.0, gt=0, description="Limit on one policy call, and on one env call (reset or step).")
    episode_timeout_s: float | None = Field(None, gt=0, description="Limit on a whole episode.")
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    seed: int | None = Field(
        None, description="Run seed: each policy call samples with a seed derived from (seed, episode group, sample, turn), "
        "so a rerun samples the same tokens where the backend is deterministic; None: unseeded (or sampling.seed for every call).",
    )
    on_context_overflow: Literal["shrink", "end"] = Field(
        "shrink", description="When a prompt plus max_tokens outgrows the model's context: shrink (drop older exchanges "
        "from the prompt, halving the window until it fits, then end) or end (the episode ends truncated at once). "
        "Either way an episode that cannot go on ends truncated with truncation_reason 'context_overflow'.",
    )


@dataclass(frozen=True)
class EpisodeJob:
    """One episode to play: which task, which seed, and its place in a group of rollouts."""

    task_id: str
    seed: int | None
    group_id: str
    sample_index: int = 0


def plan_episodes(task_ids: Sequence[str], episodes: int, *, samples_per_task: int = 1, seed: int = 0) -> list[EpisodeJob]:
    """`episodes` jobs cycling through the tasks, `samples_per_task` rollouts per (task, seed) group."""
    if not task_ids:
        raise ValueError("no tasks to play")
    if episodes < 1 or samples_per_task < 1:
        raise ValueError("episodes and samples_per_task must be at least 1")
    jobs: list[EpisodeJob] = []
    group = 0
    while len(jobs) < episodes:
        task = task_ids[group % len(task_ids)]
        group_seed = seed + group
        for k in range(samples_per_task):
            if len(jobs) == episodes:
                break
            jobs.append(EpisodeJob(task, group_seed, f"{task}:{group_seed}", k))
        group += 1
    return jobs


class _EnvBroken(Exception):
    """The env may be mid-call in a worker thread (a timeout) or raised: it must not be reused."""


class RolloutEngine:
    """Plays `EpisodeJob`s with `concurrency` envs at once and hands each finished trajectory to callbacks."""

    def __init__(
        self,
        env_factory: Callable[[], TextEnv],
        policy: Policy,
        config: RolloutConfig | None = None,
        *,
        env_id: str = "",
        env_kwargs: dict[str, Any] | None = None,
        callbacks: Sequence[TrajectoryCallback] = (),
    ) -> None:
        self.env_factory = env_factory
        self.policy = policy
        self.config = config or RolloutConfig()
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.callbacks = list(callbacks)

    async def run(self, jobs: Sequence[EpisodeJob]) -> list[Trajectory]:
        """Play every job; results come back in job order. Env or policy failures end only their episode."""
        queue: asyncio.Queue[tuple[int, EpisodeJob]] = asyncio.Queue()
        for item in enumerate(jobs):
            queue.put_nowait(item)
        results: list[Trajectory | None] = [None] * len(jobs)
        workers = min(self.config.concurrency, len(jobs)) or 1
        await asyncio.gather(*(self._worker(queue, results) for _ in range(workers)))
        return [r for r in results if r is not None]

    async def _worker(self, queue: asyncio.Queue[tuple[int, EpisodeJob]], results: list[Trajectory | None]) -> None:
        env: TextEnv | None = None
        thread = EnvThread()
        try:
            while not queue.empty():
                _raise_if_cancelled()
                index, job = queue.get_nowait()
                if env is None:
                    env = await thread.call(self.env_factory)
                trajectory, healthy = await self._play(env, job, thread)
                if not healthy:
                    # The env may still be busy in its thread (a timeout): close it there once it is
                    # done, and give the next env a fresh thread rather than wait.
                    thread.submit(_close_quietly, env)
                    thread.stop()
                    env, thread = None, EnvThread()
                results[index] = trajectory
                for callback in self.callbacks:
                    callback(trajectory)
        finally:
            if env is not None:
                thread.submit(_close_quietly, env)  # queued behind any step still running
            thread.stop()

    async def _play(self, env: TextEnv, job: EpisodeJob, thread: EnvThread) -> tuple[Trajectory, bool]:
        """One episode under the episode timeout; returns the trajectory and whether the env is reusable."""
        traj = Trajectory(
            trajectory_id=uuid.uuid4().hex, env_id=self.env_id, env_kwargs=self.env_kwargs,
            task_id=job.task_id, seed=job.seed, group_id=job.group_id, sample_index=job.sample_index,
            policy=self.policy.info(), sampling=self.config.sampling, started_at=time.time(),
        )
        healthy = True
        clock = time.perf_counter()
        try:
            await asyncio.wait_for(self._drive(env, job, traj, thread), self.config.episode_timeout_s)
        except asyncio.TimeoutError as exc:
            traj.error = ErrorRecord.from_exception(exc, "timeout")
            traj.error.message = traj.error.message or f"episode exceeded {self.config.episode_timeout_s} s"
            traj.truncated, traj.truncation_reason, healthy = True, "timeout", False
        except _EnvBroken as exc:
            cause = exc.__cause__ or exc
            where = "timeout" if isinstance(cause, asyncio.TimeoutError) else "env"
            traj.error = ErrorRecord.from_exception(cause, where)
            if where == "timeout":
                traj.error.message = traj.error.message or f"turn exceeded {self.config.turn_timeout_s} s"
                traj.truncated, traj.truncation_reason = True, "timeout"
            healthy = False
        except Exception as exc:  # a policy failure ends this episode only
            traj.error = ErrorRecord.from_exception(exc, "policy")
        traj.duration_seconds = time.perf_counter() - clock
        traj.total_reward = sum(t.reward for t in traj.turns)
        return traj, healthy

    async def _drive(self, env: TextEnv, job: EpisodeJob, traj: Trajectory, thread: EnvThread) -> None:
        """reset, then policy → step until the episode ends; fills `traj` as it goes."""
        cfg = self.config

        async def env_call(fn: Callable[..., Any], *args: Any) -> Any:
            try:
                return await asyncio.wait_for(thread.call(fn, *args), cfg.turn_timeout_s)
            except Exception as exc:
                raise _EnvBroken(str(exc)) from exc

        observation, info = await env_call(lambda: env.reset(seed=job.seed, options={"task": job.task_id}))
        traj.instructions = info.get("instructions") or ""
        traj.initial_observation = observation
        traj.reset_info = kept_info(info)
        history = ChatHistory(traj.messages, traj.instructions, observation)
        tools = info.get("tools")
        context = EpisodeContext(episode_id=traj.trajectory_id, task_id=job.task_id, turn=0, reset_info=info,
                                 admissible_actions=info.get("admissible_actions"), group_id=job.group_id,
                                 sample_index=job.sample_index)
        turn = 0
        while True:
            _raise_if_cancelled()
            context.turn = turn
            started = time.perf_counter()
            answered = await self._ask(traj, history, job, turn, tools, context)
            if answered is None:  # the prompt no longer fits the model's context
                traj.truncated, traj.truncation_reason = True, CONTEXT_OVERFLOW
                return
            window, completion = answered
            policy_seconds = time.perf_counter() - started
            started = time.perf_counter()
            observation, reward, terminated, truncated, info = await env_call(env.step, completion.text)
            env_seconds = time.perf_counter() - started
            context.admissible_actions = info.get("admissible_actions")
            turn += 1
            cut = not (terminated or truncated) and cfg.max_turns is not None and turn >= cfg.max_turns
            traj.turns.append(Turn(
                index=turn - 1, prompt_messages=window, completion=completion.text, action=completion.text,
                prompt_token_ids=completion.prompt_token_ids, completion_token_ids=completion.token_ids,
                completion_logprobs=completion.logprobs, finish_reason=completion.finish_reason,
                prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
                observation=observation, reward=float(reward), terminated=bool(terminated),
                truncated=bool(truncated or cut), signals=info.get("signals") or {},
                policy_seconds=policy_seconds, env_seconds=env_seconds,
            ))
            if completion.tool_calls:  # answered as a tool message, so the server sees its own call's result
                history.add(completion.content or "", observation, completion.tool_calls)
            else:
                history.add(completion.text, observation)
            if terminated or truncated or cut:
                traj.terminated, traj.truncated = bool(terminated), bool(truncated or cut)
                if traj.truncated and not traj.terminated:
                    traj.truncation_reason = "max_turns" if cut else "env"
                traj.success = info.get("success")
                traj.final_info = kept_info(info)
                return

    async def _ask(
        self, traj: Trajectory, history: ChatHistory, job: EpisodeJob, turn: int,
        tools: list[dict[str, Any]] | None, context: EpisodeContext,
    ) -> tuple[list[int], Completion] | None:
        """The policy's answer at `turn` and the prompt window it saw; None when no window fits the context."""
        cfg = self.config
        sampling = cfg.sampling
        if cfg.seed is not None:
            sampling = sampling.model_copy(update={"seed": request_seed(cfg.seed, job.group_id, job.sample_index, turn)})
        keep = cfg.history_turns
        while True:
            window = history.window_indices(keep)
            prompt: list[Message] = [traj.messages[i] for i in window]
            try:
                completion = await asyncio.wait_for(self.policy.act(prompt, tools, sampling, context), cfg.turn_timeout_s)
                return window, completion
            except ContextOverflowError as exc:
                shown = history.exchanges if keep is None else min(keep, history.exchanges)
                if cfg.on_context_overflow == "end" or shown == 0:
                    log.info("episode %s ends at turn %d: %s", traj.trajectory_id, turn, exc)
                    return None
                keep = shown // 2  # fewer past exchanges; the instructions and the goal always stay


# Info keys a trajectory stores elsewhere (instructions), or that repeat at every step and can be
# rebuilt (tool schemas, the admissible actions of that moment).
_INFO_STORED_APART = ("instructions", "tools", "admissible_actions")


def kept_info(info: dict[str, Any]) -> dict[str, Any]:
    """An env info dict as a trajectory keeps it: JSON values only (others become strings), less the keys stored apart."""
    kept = {k: v for k, v in info.items() if k not in _INFO_STORED_APART}
    return json.loads(json.dumps(kept, default=str))


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation that an inner `asyncio.wait_for` swallowed.

    Python 3.11's wait_for returns the inner result when it finishes just as the outer task is
    cancelled, dropping the CancelledError; the task's cancel request stays counted. Without this
    check, Ctrl-C could leave one worker playing the whole remaining queue.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _close_quietly(env: TextEnv) -> None:
    """Close an env; a failing close is logged and must not end the run."""
    try:
        env.close()
    except Exception:
        log.warning("closing env %s failed; its resources may leak", type(env).__name__, exc_info=True)


async def run_rollouts(
    env_factory: Callable[[], TextEnv], policy: Policy, jobs: Sequence[EpisodeJob], config: RolloutConfig | None = None, **kwargs: Any
) -> list[Trajectory]:
    """Convenience wrapper: build an engine and play `jobs`."""
    return await RolloutEngine(env_factory, policy, config, **kwargs).run(jobs)
