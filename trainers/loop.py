"""`agentgym train`: collect → score → advantages → update → sync → evaluate → checkpoint, resumable.

A run directory holds:

    config.yaml                  the resolved TrainConfig
    metrics.jsonl, tensorboard/  one record per step (RunLog)
    trajectories/step-N.jsonl    every rollout of step N, appended as each episode ends
    eval/step-N/                 held-out evaluations (trajectories, summary.json, summary.md)
    checkpoints/step-N, latest   resumable state (model, optimiser, step, RNG, entropy history)
    vllm.log                     the server's log, when the trainer started one

Each step's episodes are a pure function of (seed, step), so a resumed run replays the
step it was killed in: episodes already finished in trajectories/step-N.jsonl are reused,
not played again, and nothing recorded is lost. With `rollout.max_staleness` k > 0 the
batch of step s is played while earlier steps update (trainers/rollout_pipeline.py), by
weights of step s - k or newer; a resume replays the unfinished batches the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import agentgym
from agentgym.errors import AgentGymError
from agentgym.evaluation import EvalSummary, evaluate, load_summary
from agentgym.policies.base import Policy
from agentgym.hardware import resolve_placement
from agentgym.memory import memory_stats, release_freed_memory
from agentgym.progress import Heartbeat, format_duration
from agentgym.reward_models.base import RewardModel, Scorer
from agentgym.reward_models.env_reward import PerTrajectoryReward
from agentgym.reward_models.factory import build_reward_model
from agentgym.rollout.engine import CONTEXT_OVERFLOW, EpisodeJob, RolloutConfig, RolloutEngine, plan_episodes
from agentgym.seeding import eval_seed_base, train_seed
from agentgym.store import TrajectoryWriter, read_trajectories
from agentgym.trainers.algorithms import get_algorithm
from agentgym.trainers.batches import TurnSample, mean_or_nan, turn_samples
from agentgym.trainers.checkpoint import TrainerState, latest_checkpoint, read_state, restore_optimizer, save_checkpoint
from agentgym.trainers.config import TrainConfig
from agentgym.trainers.dynamic_sampling import informative_groups
from agentgym.trainers.policy_model import TrainableModel, load_trainable
from agentgym.trainers.probe import load_probe, probe_entropy
from agentgym.trainers.rewarding import StepScores, score_step, write_advantages, write_scores
from agentgym.trainers.rollout_pipeline import RolloutPipeline
from agentgym.trainers.run_log import (
    EVAL_SUCCESS_RATE,
    POLICY_ENTROPY,
    POLICY_PROBE_ENTROPY,
    ROLLOUT_REWARD_MEAN,
    ROLLOUT_SUCCESS_RATE,
    RunLog,
)
from agentgym.trainers.update import make_optimizer, policy_gradient_step
from agentgym.trainers.weight_sync import InProcessSync, VLLMReloadSync, WeightSync
from agentgym.types import SamplingParams, Trajectory

_T = TypeVar("_T")


@dataclass
class ScoredBatch:
    """One step's rollouts: those to train on with their turn advantages, and everything that was played."""

    trajectories: list[Trajectory]
    advantages: list[list[float]]  # the registered estimator's; the algorithm may replace them
    played: list[Trajectory]
    draws: int
    excluded_errors: int  # episodes that ended with an error: played and counted, never trained on
    timings: dict[str, float]
    rewards: list[list[float]] = field(default_factory=list)  # the reward model's, per turn of `trajectories`


@dataclass
class TrainResult:
    """What a finished (or resumed-and-finished) run reports."""

    run_dir: Path
    steps: int
    last_metrics: dict[str, float] = field(default_factory=dict)
    evals: dict[int, EvalSummary] = field(default_factory=dict)


def step_jobs(task_ids: Sequence[str], cfg: TrainConfig, step: int, draw: int = 0) -> list[EpisodeJob]:
    """The episodes of draw `draw` of training step `step`: the same on every run with this seed, so resumes replay them."""
    rng = random.Random(f"{cfg.seed}:{step}" if draw == 0 else f"{cfg.seed}:{step}:{draw}")
    ids = sorted(task_ids)
    tasks = rng.sample(ids, cfg.tasks_per_step) if cfg.tasks_per_step <= len(ids) else rng.choices(ids, k=cfg.tasks_per_step)
    jobs = []
    for g, task in enumerate(tasks):
        # Training seeds lie in [0, 2**31) and held-out ones above it (agentgym.seeding): never shared.
        if draw == 0:
            group_seed = train_seed(cfg.seed * 100_003 + step * 1_000 + g)
            group_id = f"s{step}:{task}:{group_seed}"
        else:  # dynamic sampling's further draws: their own seeds and group ids
            group_seed = train_seed(rng.randrange(2**31))
            group_id = f"s{step}d{draw}:{task}:{group_seed}"
        jobs += [EpisodeJob(task, group_seed, group_id, k) for k in range(cfg.samples_per_task)]
    return jobs


def engine_config(cfg: TrainConfig, sampling: SamplingParams) -> RolloutConfig:
    """The rollout engine's settings of a run with `sampling`, seeded by the run seed unless the config gives its own."""
    rollout = cfg.rollout
    seed = rollout.seed if rollout.seed is not None else cfg.seed
    return RolloutConfig.model_validate(
        {**rollout.model_dump(include=set(RolloutConfig.model_fields)), "sampling": sampling, "seed": seed}
    )


def eval_jobs(eval_tasks: Sequence[str], cfg: TrainConfig) -> list[EpisodeJob]:
    """The held-out episodes of every evaluation of a run: seeds at or above 2**31, so never a training episode's."""
    return plan_episodes(eval_tasks, cfg.eval_episodes, seed=eval_seed_base(cfg.seed))


def rollout_stats(trajectories: Sequence[Trajectory], prefix: str = "rollout") -> dict[str, float]:
    """Success rate, mean reward and turns, invalid-action rate and errors of a batch of episodes."""
    turns = [u for t in trajectories for u in t.turns]
    judged = [u for u in turns if "valid_action" in u.signals]
    logprobs = [lp for u in turns for lp in (u.completion_logprobs or [])]
    return {
        # Mean -log p of the sampled tokens: at temperature 1 an unbiased estimate of the policy's
        # per-token entropy over every rollout token, trained on or not.
        f"{prefix}/sampled_token_nll": mean_or_nan([-lp for lp in logprobs]),
        f"{prefix}/episodes": float(len(trajectories)),
        f"{prefix}/success_rate": mean_or_nan([float(bool(t.success)) for t in trajectories]),
        f"{prefix}/reward_mean": mean_or_nan([t.total_reward for t in trajectories]),
        f"{prefix}/turns_mean": mean_or_nan([float(t.num_turns) for t in trajectories]),
        f"{prefix}/invalid_action_rate": mean_or_nan([float(not u.signals["valid_action"]) for u in judged]),
        f"{prefix}/errors": float(sum(t.error is not None for t in trajectories)),
        f"{prefix}/context_overflows": float(sum(t.truncation_reason == CONTEXT_OVERFLOW for t in trajectories)),
    }


class Trainer:
    """Runs one training job in a run directory (fresh, or resumed from its latest checkpoint)."""

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: str | Path,
        *,
        resume: bool = False,
        console: Console | None = None,
        show_progress: bool = True,
        reward_fn: Callable[[Trajectory], list[float]] | RewardModel | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress
        if reward_fn is None:
            self.reward_model = build_reward_model(cfg.reward)
        elif isinstance(reward_fn, RewardModel):
            self.reward_model = reward_fn
        else:
            self.reward_model = PerTrajectoryReward(reward_fn)
        self.algorithm = get_algorithm(cfg.algo)(cfg, self.run_dir)
        self._scorer_made: Scorer | None = None
        self._tokenizer: Any = None  # the trainable's, once loaded
        self._compute: ThreadPoolExecutor | None = None  # the run's compute thread (None: asyncio's default pool)
        # Where the model trains and in which precision, read off this machine (agentgym.hardware).
        self.placement = resolve_placement(cfg.device, cfg.update.precision)
        # The run records what ran, not "auto": the same file on another machine could mean other hardware.
        self.cfg = cfg = cfg.model_copy(update={
            "device": str(self.placement.device),
            "update": cfg.update.model_copy(update={"precision": self.placement.precision}),
        })
        # What the heartbeat line reports: the phase of which step, episodes and tokens played, last metrics.
        self._phase: tuple[int, str] = (0, "starting")
        self._server: Any = None  # the VLLMServer this run started, watched for an early exit
        self._episodes = self._tokens = 0
        self._last: dict[str, float] = {}
        self._step_seconds: list[float] = []
        self._started = time.monotonic()

    # -- setup -----------------------------------------------------------------------------

    def _prepare_dir(self) -> None:
        self.console.print(self.placement.describe(), highlight=False)
        cfg_path = self.run_dir / "config.yaml"
        if self.resume:
            if not cfg_path.is_file():
                raise AgentGymError(f"nothing to resume: {self.run_dir} holds no training run (no config.yaml)")
            return
        if cfg_path.exists() or (self.run_dir / "metrics.jsonl").exists():
            raise AgentGymError(
                f"{self.run_dir} already holds a training run; continue it with --resume or pick another --out"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(yaml.safe_dump(self.cfg.model_dump(mode="json"), sort_keys=False))

    def _load_model(self) -> tuple[TrainableModel, torch.optim.Optimizer, TrainerState]:
        ckpt = latest_checkpoint(self.run_dir / "checkpoints") if self.resume else None
        if ckpt is None:
            trainable = load_trainable(self.cfg.model, lora=self.cfg.lora, device=self.placement.device)
            self.algorithm.setup(trainable, 0, None)
            return trainable, make_optimizer(trainable, self.cfg.update), TrainerState(step=0)
        state = read_state(ckpt)
        if self.cfg.lora is not None:
            trainable = load_trainable(self.cfg.model, adapter_dir=ckpt / "model", device=self.placement.device)
        else:
            trainable = load_trainable(str(ckpt / "model"), device=self.placement.device)
        optimizer = make_optimizer(trainable, self.cfg.update)
        restore_optimizer(ckpt, optimizer)
        self.algorithm.setup(trainable, state.step, ckpt)
        self.console.print(f"resuming from {ckpt} (step {state.step} of {self.cfg.steps} done)")
        return trainable, optimizer, state

    @contextlib.contextmanager
    def _rollout_backend(self, trainable: TrainableModel) -> Iterator[tuple[Policy, WeightSync]]:
        """The policy that plays episodes and the sync that keeps it at the trainer's weights."""
        cfg = self.cfg
        if cfg.rollout_backend == "inprocess":
            from agentgym.policies.transformers_local import TransformersPolicy

            policy = TransformersPolicy(
                str(trainable.model_dir), dtype=cfg.inprocess_dtype, device=str(trainable.device),
                max_batch_size=cfg.rollout.concurrency,
            )
            policy.load()
            yield policy, InProcessSync(policy)
            return
        from agentgym.policies.openai_http import OpenAIPolicy
        from agentgym.serve import VLLMServer

        name = cfg.served_model or cfg.model
        sync_dir = self.run_dir / "sync"
        if cfg.base_url:
            yield OpenAIPolicy(cfg.base_url, name), VLLMReloadSync(cfg.base_url, sync_dir, name)
            return
        server = VLLMServer(
            trainable.model_dir, name=name, log_path=self.run_dir / "vllm.log", **cfg.vllm.server_kwargs()
        )
        self.console.print(f"starting vLLM on {trainable.model_dir} (log {self.run_dir / 'vllm.log'})")
        if cfg.rollout.max_staleness > 0 and trainable.device.type == "cpu":
            # Rollouts and updates now overlap: vLLM's CPU engine binds one core, so the trainer takes
            # the others rather than fight it for that one.
            threads = max(1, len(os.sched_getaffinity(0)) - 1)
            torch.set_num_threads(threads)
            self.console.print(f"asynchronous rollouts: the trainer uses {threads} of this machine's CPU threads beside vLLM")
        with server:
            self._server = server
            yield OpenAIPolicy(server.base_url, name), VLLMReloadSync(server.base_url, sync_dir, name)

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train until cfg.steps steps are done; returns the last metrics and the evaluations."""
        # One event loop for the whole run: async clients and the in-process batcher bind to it.
        return asyncio.run(self._run())

    async def _run(self) -> TrainResult:
        self._prepare_dir()
        cfg = self.cfg
        spec = agentgym.spec(cfg.env)
        task_ids = agentgym.registry.task_ids(spec.id, **cfg.env_kwargs)
        eval_kwargs = {**cfg.env_kwargs, **(cfg.eval_env_kwargs or {})}
        eval_tasks = agentgym.registry.task_ids(spec.id, **eval_kwargs) if cfg.eval_episodes else []
        trainable, optimizer, state = self._load_model()
        self._tokenizer = trainable.tokenizer
        ref_model = self._reference_model() if cfg.update.kl_coef > 0 else None
        if state.step == 0:
            torch.manual_seed(cfg.seed)
            random.seed(cfg.seed)
        result = TrainResult(self.run_dir, state.step)
        async with contextlib.AsyncExitStack() as stack:
            # Every torch phase of a step runs in this one thread, so they reuse one heap arena (agentgym/memory.py).
            self._compute = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentgym-compute"))
            log = stack.enter_context(RunLog(self.run_dir, resume_step=state.step if self.resume else None))
            policy, sync = stack.enter_context(self._rollout_backend(trainable))
            stack.push_async_callback(policy.aclose)
            await policy.check()
            if self.resume or cfg.base_url:  # the server holds other weights than the trainer's
                push_weights(policy, sync, trainable, state.step)
            else:
                policy.weights_step = state.step
            progress = stack.enter_context(self._progress(state.step))
            if self.show_progress and not self.console.is_terminal:
                # A progress bar shows nothing in a log file or CI: a plain line every 30 s instead.
                beat = asyncio.create_task(self._heartbeat(Heartbeat(30.0, console=self.console)))
                stack.push_async_callback(_cancel, beat)
            probe = self._probe(trainable)
            start_metrics: dict[str, float] = {}
            if probe and state.step == 0:
                start_metrics[POLICY_PROBE_ENTROPY] = self._probe_entropy(trainable, probe)
            if cfg.eval_at_start and state.step == 0 and cfg.eval_episodes:
                summary = await self._evaluate(policy, eval_kwargs, eval_tasks, 0)
                result.evals[0] = summary
                start_metrics.update({EVAL_SUCCESS_RATE: summary.success_rate, "eval/reward_mean": summary.mean_reward})
            if start_metrics:
                log.log(0, start_metrics)
            pipeline: RolloutPipeline[ScoredBatch] = await stack.enter_async_context(RolloutPipeline(
                lambda s: self._collect_scored(s, task_ids, policy), first_step=state.step, last_step=cfg.steps,
                max_staleness=cfg.rollout.max_staleness, weights_step=state.step,
            ))
            for step in range(state.step, cfg.steps):
                step_started = time.perf_counter()
                self._phase = (step, "rollouts")
                waited = time.perf_counter()
                batch = await pipeline.get(step)
                waited = time.perf_counter() - waited
                metrics = await self._train_step(step, batch, policy, sync, trainable, optimizer, state, ref_model)
                await pipeline.weights_updated(step + 1)
                metrics["time/rollout_wait"] = waited  # what rollouts cost the step: all of them when synchronous
                if probe:
                    metrics[POLICY_PROBE_ENTROPY] = self._probe_entropy(trainable, probe)
                number = step + 1
                self._step_seconds.append(time.perf_counter() - step_started)
                if cfg.eval_episodes and ((cfg.eval_every and number % cfg.eval_every == 0) or number == cfg.steps):
                    started = time.perf_counter()
                    summary = await self._evaluate(policy, eval_kwargs, eval_tasks, number)
                    result.evals[number] = summary
                    metrics.update({EVAL_SUCCESS_RATE: summary.success_rate, "eval/reward_mean": summary.mean_reward,
                                    "time/eval": time.perf_counter() - started})
                state.step = number
                if number % cfg.checkpoint_every == 0 or number == cfg.steps:
                    started = time.perf_counter()
                    # In a thread: rollouts played ahead keep going while half a GB is written.
                    await self._in_compute_thread(
                        save_checkpoint, self.run_dir / "checkpoints", trainable, optimizer, state, keep=cfg.keep_checkpoints,
                        write_extra=self.algorithm.save,
                    )
                    metrics["time/checkpoint"] = time.perf_counter() - started
                # Wall time of the step without its held-out evaluation: what training costs.
                metrics["time/step"] = time.perf_counter() - step_started - metrics.get("time/eval", 0.0)
                log.log(number, metrics)
                result.last_metrics, result.steps = metrics, number
                self._report(progress, number, metrics)
        return result

    async def _train_step(
        self, step: int, batch: ScoredBatch, policy: Policy, sync: WeightSync, trainable: TrainableModel,
        optimizer: torch.optim.Optimizer, state: TrainerState, ref_model: Any,
    ) -> dict[str, float]:
        cfg = self.cfg
        timings = dict(batch.timings)
        self._phase = (step, "critic" if self.algorithm.has_critic else "update")
        started = time.perf_counter()
        # The algorithm's advantages: the estimator's as they are, or a critic's (trained here, in a thread).
        given = await self._in_compute_thread(self.algorithm.advantages, step, batch.trajectories, batch.rewards, batch.advantages)
        if self.algorithm.has_critic:
            timings["time/critic"] = time.perf_counter() - started
            write_advantages(self.run_dir / "scores" / f"step-{step + 1:06d}.{cfg.algo}.jsonl", batch.trajectories, given.advantages)
        self._phase = (step, "update")
        started = time.perf_counter()
        samples, skipped = turn_samples(batch.trajectories, given.advantages, max_length=cfg.max_length, require_logprobs=True)
        keep_all = cfg.update.epo.enabled or cfg.update.kl_coef > 0
        # A turn with zero advantage adds nothing to the policy-gradient term: skip its forward/backward
        # unless an entropy or KL term still needs it.
        trained = samples if keep_all else [s for s in samples if s.advantage != 0.0]
        timings["time/score"] += time.perf_counter() - started

        metrics = rollout_stats(batch.played)
        metrics.update({"train/samples": float(len(trained)), "train/skipped_turns": float(skipped),
                        "train/groups": float(len({t.group_id for t in batch.trajectories})),
                        "train/excluded_errors": float(batch.excluded_errors)})
        metrics.update(staleness_stats(batch.trajectories, step))
        if cfg.max_draws > 1:
            metrics["rollout/draws"] = float(batch.draws)
        actor = self.algorithm.updates_actor(step)
        if trained and actor:
            started = time.perf_counter()
            # In a worker thread (torch releases the GIL): the event loop keeps playing rollouts meanwhile.
            metrics.update(await self._in_compute_thread(
                policy_gradient_step, trainable, optimizer, trained, cfg.update, step=step, total_steps=cfg.steps,
                entropy_history=state.entropy_history, ref_model=ref_model,
            ))
            timings["time/update"] = time.perf_counter() - started
            started = time.perf_counter()
            await self._in_compute_thread(push_weights, policy, sync, trainable, step + 1)
            timings["time/sync"] = time.perf_counter() - started
        else:
            tried = f" in {batch.draws} draws" if cfg.max_draws > 1 else ""
            why = ("the critic warms up, the actor waits" if not actor
                   else f"every advantage is zero (all rollouts of each group scored alike{tried})")
            self.console.print(f"step {step + 1}: {why}; no update")
            policy.weights_step = step + 1  # unchanged weights, and still those after step + 1 steps
        metrics.update(timings)
        metrics.update(memory_stats())
        metrics.update(given.metrics)  # a critic's advantage statistics replace the estimator's
        metrics["train/actor_updated"] = float(bool(trained and actor))
        return metrics

    async def _in_compute_thread(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """fn(*args, **kwargs) in the trainer's compute thread (the event loop keeps playing rollouts), its freed heap then returned."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._compute, functools.partial(fn, *args, **kwargs))
        finally:
            release_freed_memory()

    async def _collect_scored(self, step: int, task_ids: Sequence[str], policy: Policy) -> ScoredBatch:
        """This step's episodes to train on with their turn advantages, every episode played, and the draws made."""
        cfg = self.cfg
        timings = {"time/rollout": 0.0, "time/score": 0.0}
        kept: list[Trajectory] = []
        kept_advantages: list[list[float]] = []
        kept_rewards: list[list[float]] = []
        played: list[Trajectory] = []
        groups: list[str] = []
        excluded = 0
        for draw in range(cfg.max_draws):
            started = time.perf_counter()
            batch = await self._collect(step, task_ids, policy, draw)
            timings["time/rollout"] += time.perf_counter() - started
            played += batch
            # An episode cut short by a timeout or an env crash says nothing about the policy's
            # actions: training on it as a failure would punish whatever came before the crash.
            usable = [t for t in batch if t.error is None]
            excluded += len(batch) - len(usable)
            started = time.perf_counter()
            scored = await self._score(step, usable, policy)
            excluded += len(scored.failed)
            usable, advantages = scored.trajectories, scored.advantages
            timings.update(scored.diagnostics)
            timings["time/score"] += time.perf_counter() - started
            if cfg.max_draws == 1:
                return ScoredBatch(usable, advantages, played, 1, excluded, timings, scored.rewards)
            # Group baselines are computed within a group, so each draw's advantages stand on their own.
            wanted = informative_groups([t.group_id for t in usable], advantages)[: cfg.tasks_per_step - len(groups)]
            groups += wanted
            for t, a, r in zip(usable, advantages, scored.rewards):
                if t.group_id in wanted:
                    kept.append(t)
                    kept_advantages.append(a)
                    kept_rewards.append(r)
            if len(groups) >= cfg.tasks_per_step:
                break
        return ScoredBatch(kept, kept_advantages, played, draw + 1, excluded, timings, kept_rewards)

    async def _score(self, step: int, trajectories: Sequence[Trajectory], policy: Policy) -> StepScores:
        """Per-turn rewards from the reward model, group by group, then advantages; written beside the step's trajectories."""
        cfg = self.cfg
        scorer = self._scorer(policy) if self.reward_model.needs_scorer else None
        scored = await score_step(
            trajectories, self.reward_model, scorer, cfg.estimator, gamma=cfg.gamma,
            normalize_std=cfg.normalize_std and self.algorithm.uses_std, one_group=self.algorithm.one_group,
        )
        write_scores(self.run_dir / "scores" / f"step-{step + 1:06d}.jsonl", scored)
        if scored.failed and len(scored.failed) == len(trajectories):  # a setup error (e.g. IGPO on tasks without answers)
            first = scored.failed[0].error
            raise AgentGymError(
                f"the reward model {self.reward_model.name!r} failed on every group of step {step + 1}; "
                f"the first: {first.type}: {first.message}"  # type: ignore[union-attr]
            )
        return scored

    def _scorer(self, policy: Policy) -> Scorer:
        """The policy's teacher-forced scorer (IGPO), made once; it tokenises as the trainer does."""
        if self._scorer_made is None:
            from agentgym.policies.scoring import scorer_for

            # A scoring request queues behind generation on the same server: give it the turn's budget
            # (on a loaded 2-core CPU a 60 s limit failed every group of a 20Q step).
            self._scorer_made = scorer_for(policy, tokenizer=self._tokenizer, timeout_s=self.cfg.rollout.turn_timeout_s)
        return self._scorer_made

    def _reference_model(self) -> Any:
        """The frozen starting model that the KL term keeps the policy near: cfg.model, also after a resume.

        A copy of the trainable would be the checkpoint's weights after --resume, moving the anchor.
        Under LoRA the starting policy is the base model itself (adapters start at zero).
        """
        reference = load_trainable(self.cfg.model, device=self.placement.device).model
        reference.requires_grad_(False)
        reference.eval()
        return reference

    def _probe(self, trainable: TrainableModel) -> list[TurnSample]:
        """The fixed probe turns of cfg.entropy_probe (empty when off)."""
        if not self.cfg.entropy_probe:
            return []
        return load_probe(self.cfg.entropy_probe, trainable, self.cfg.entropy_probe_turns, self.cfg.max_length)

    def _probe_entropy(self, trainable: TrainableModel, probe: Sequence[TurnSample]) -> float:
        return probe_entropy(trainable, probe, self.cfg.update.micro_batch_tokens, self.cfg.update.precision)

    async def _collect(self, step: int, task_ids: Sequence[str], policy: Policy, draw: int = 0) -> list[Trajectory]:
        """Play one draw of this step's episodes, reusing any finished in an earlier (killed) attempt at the step."""
        cfg = self.cfg
        jobs = step_jobs(task_ids, cfg, step, draw)
        path = self.run_dir / "trajectories" / f"step-{step + 1:06d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        done: dict[tuple[str, int], Trajectory] = {}
        if path.exists():
            for t in read_trajectories(path):
                if t.error is None:
                    done[(t.group_id, t.sample_index)] = t
        todo = [j for j in jobs if (j.group_id, j.sample_index) not in done]
        reused = len(jobs) - len(todo)
        if reused:
            self.console.print(f"step {step + 1}: reusing {reused} of {len(jobs)} episodes finished before the restart ({path.name})")
        if todo:
            with TrajectoryWriter(path) as writer:
                engine = RolloutEngine(
                    lambda: agentgym.make(cfg.env, **cfg.env_kwargs), policy, self._rollout_config(cfg.rollout.sampling),
                    env_id=cfg.env, env_kwargs=cfg.env_kwargs, callbacks=[writer.write, self._count_episode],
                )
                played = await engine.run(todo)
            self._fail_if_the_policy_is_gone(played, f"step {step + 1}'s rollouts")
            for t in played:
                done[(t.group_id, t.sample_index)] = t
        return [done[(j.group_id, j.sample_index)] for j in jobs if (j.group_id, j.sample_index) in done]

    async def _evaluate(self, policy: Policy, env_kwargs: dict[str, Any], eval_tasks: Sequence[str], step: int) -> EvalSummary:
        """Play the held-out episodes (the same ones at every evaluation) into eval/step-N."""
        cfg = self.cfg
        out = self.run_dir / "eval" / f"step-{step:06d}"
        if (out / "summary.json").is_file():
            summary = load_summary(out)
            if not summary.interrupted:
                return summary  # finished before a crash: keep it
        if out.exists():  # an evaluation cut short: keep its trajectories beside the new one
            out.rename(out.with_name(f"{out.name}.interrupted-{int(time.time())}"))
        jobs = eval_jobs(eval_tasks, cfg)
        self._phase = (max(step - 1, 0), f"held-out evaluation ({len(jobs)} episodes)")
        played: list[Trajectory] = []
        summary = await evaluate(
            lambda: agentgym.make(cfg.env, **env_kwargs), policy, jobs, out,
            env_id=cfg.env, env_kwargs=env_kwargs, config=self._rollout_config(cfg.eval_sampling),
            callbacks=[self._count_episode, played.append],
        )
        self._fail_if_the_policy_is_gone(played, "the held-out evaluation")
        return summary

    def _fail_if_the_policy_is_gone(self, trajectories: Sequence[Trajectory], what: str) -> None:
        """Stop the run when its vLLM server died, or every episode failed in the policy.

        Episodes that fail one by one are recorded and left out of the update; but a dead server
        fails them all, and going on would train on nothing and report a held-out success of 0.
        """
        server = self._server
        if server is not None and not server.is_running():
            code = server.process.returncode if server.process is not None else None
            raise AgentGymError(
                f"the vLLM server exited (code {code}) during {what}; the end of its log {server.log_path}:\n"
                f"{server.log_tail()}"
            )
        failed = [t for t in trajectories if t.error is not None and t.error.where == "policy"]
        if failed and len(failed) == len(trajectories):
            first = failed[0].error
            raise AgentGymError(f"every episode of {what} failed in the policy; the first: {first.type}: {first.message}")

    def _rollout_config(self, sampling: SamplingParams) -> RolloutConfig:
        return engine_config(self.cfg, sampling)

    # -- display -----------------------------------------------------------------------------

    def _count_episode(self, trajectory: Trajectory) -> None:
        self._episodes += 1
        self._tokens += sum(u.completion_tokens for u in trajectory.turns)

    async def _heartbeat(self, beat: Heartbeat) -> None:
        """Print a status line at least every beat.interval_s until cancelled."""
        while True:
            beat.maybe(self._status_line)
            await asyncio.sleep(min(5.0, beat.interval_s))

    def _status_line(self) -> str:
        """One line: where the run is, what it has played, its last metrics and the time left."""
        step, phase = self._phase
        parts = [f"train step {step + 1}/{self.cfg.steps}: {phase}",
                 f"{self._episodes} episodes, {self._tokens} tokens played"]
        if self._last:
            parts.append(f"last step success {shown_metric(self._last, ROLLOUT_SUCCESS_RATE, 2)}, "
                         f"loss {shown_metric(self._last, 'loss/policy', 4)}")
        parts.append(f"{format_duration(time.monotonic() - self._started)} elapsed")
        if self._step_seconds:
            mean = sum(self._step_seconds) / len(self._step_seconds)
            parts.append(f"about {format_duration(mean * (self.cfg.steps - step))} left")
        return " · ".join(parts)

    def _progress(self, done: int) -> Progress:
        progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("success {task.fields[success]}"), TextColumn("reward {task.fields[reward]}"),
            TextColumn("entropy {task.fields[entropy]}"), TimeElapsedColumn(),
            console=self.console, disable=not self.show_progress,
        )
        self._task = progress.add_task("train", total=self.cfg.steps, completed=done, success="-", reward="-", entropy="-")
        return progress

    def _report(self, progress: Progress, step: int, m: dict[str, float]) -> None:
        self._last = m
        shown = {"success": shown_metric(m, ROLLOUT_SUCCESS_RATE, 2), "reward": shown_metric(m, ROLLOUT_REWARD_MEAN, 2),
                 "entropy": shown_metric(m, POLICY_ENTROPY, 3)}
        progress.update(self._task, completed=step, **shown)
        parts = [f"step {step}/{self.cfg.steps}", *(f"{name} {value}" for name, value in shown.items())]
        if EVAL_SUCCESS_RATE in m:
            parts.append(f"held-out success {shown_metric(m, EVAL_SUCCESS_RATE, 2)}")
        phases = [f"{k.split('/')[1]} {m[k]:.1f}s" for k in ("time/rollout", "time/update", "time/sync", "time/eval") if k in m]
        progress.console.print(" · ".join(parts + phases), highlight=False)


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait for it to end."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def shown_metric(metrics: dict[str, float], key: str, digits: int) -> str:
    """A metric as the progress line shows it: rounded, or '-' for a step that did not measure it."""
    value = metrics.get(key)
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def staleness_stats(trajectories: Sequence[Trajectory], step: int) -> dict[str, float]:
    """How many weight versions behind the update of `step` its rollouts were played (by the weights they started with)."""
    behind = [step - t.policy.weights_step for t in trajectories if t.policy.weights_step is not None]
    if not behind:
        return {}
    return {"rollout/staleness_mean": sum(behind) / len(behind), "rollout/staleness_max": float(max(behind))}


def push_weights(policy: Policy, sync: WeightSync, trainable: TrainableModel, step: int) -> None:
    """Bring the policy to the trainer's weights after `step` steps, and record that step on what it plays next."""
    name = sync.push(trainable.model, step)
    # An OpenAI-compatible policy must ask for the model name the server now answers to (LoRA versions change it).
    if hasattr(policy, "model") and isinstance(getattr(policy, "model"), str):
        policy.model = name  # type: ignore[attr-defined]
    policy.weights_step = step
