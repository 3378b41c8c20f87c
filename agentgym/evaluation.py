"""Evaluation: play episodes, then summarise them as summary.json and summary.md."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from agentgym.env import TextEnv
from agentgym.metrics import wilson_interval
from agentgym.policies.base import Policy
from agentgym.rollout.engine import CONTEXT_OVERFLOW, EpisodeJob, RolloutConfig, RolloutEngine, TrajectoryCallback
from agentgym.store import TrajectoryWriter
from agentgym.types import PolicyInfo, Trajectory


class EvalSummary(BaseModel):
    """The numbers of one evaluation run."""

    model_config = ConfigDict(extra="forbid")

    env_id: str
    policy: PolicyInfo
    episodes: int
    planned_episodes: int
    successes: int
    success_rate: float
    success_ci95: tuple[float, float]
    mean_reward: float
    mean_turns: float
    invalid_action_rate: float
    errors: int
    context_overflows: int = 0
    tokens_in: int
    tokens_out: int
    wall_seconds: float
    interrupted: bool = False


def summarize(
    trajectories: Sequence[Trajectory], *, env_id: str, policy: PolicyInfo, planned: int, wall_seconds: float, interrupted: bool = False
) -> EvalSummary:
    """Success rate with its Wilson 95% interval, mean reward and turns, invalid-action rate, tokens, time."""
    n = len(trajectories)
    successes = sum(1 for t in trajectories if t.success)
    turns = [u for t in trajectories for u in t.turns]
    judged = [u for u in turns if "valid_action" in u.signals]
    invalid = sum(1 for u in judged if not u.signals["valid_action"])
    return EvalSummary(
        env_id=env_id, policy=policy, episodes=n, planned_episodes=planned, successes=successes,
        success_rate=successes / n if n else 0.0, success_ci95=wilson_interval(successes, n),
        mean_reward=sum(t.total_reward for t in trajectories) / n if n else 0.0,
        mean_turns=len(turns) / n if n else 0.0,
        invalid_action_rate=invalid / len(judged) if judged else 0.0,
        errors=sum(1 for t in trajectories if t.error is not None),
        context_overflows=sum(1 for t in trajectories if t.truncation_reason == CONTEXT_OVERFLOW),
        tokens_in=sum(u.prompt_tokens for u in turns), tokens_out=sum(u.completion_tokens for u in turns),
        wall_seconds=wall_seconds, interrupted=interrupted,
    )


def render_markdown(s: EvalSummary) -> str:
    """The summary as a small Markdown report."""
    low, high = s.success_ci95
    model = s.policy.model or s.policy.kind
    if s.policy.weights_step is not None:
        model += f" (weights after {s.policy.weights_step} training steps)"
    rows = [
        ("episodes", f"{s.episodes} of {s.planned_episodes}" + (" (interrupted)" if s.interrupted else "")),
        ("success rate", f"{s.success_rate:.3f} (95% CI {low:.3f}–{high:.3f})"),
        ("mean reward", f"{s.mean_reward:.3f}"),
        ("mean turns", f"{s.mean_turns:.2f}"),
        ("invalid-action rate", f"{s.invalid_action_rate:.3f}"),
        ("episodes with errors", str(s.errors)),
        ("episodes cut by context overflow", str(s.context_overflows)),
        ("tokens in / out", f"{s.tokens_in} / {s.tokens_out}"),
        ("wall time", f"{s.wall_seconds:.1f} s"),
    ]
    lines = [f"# Evaluation: {s.env_id} with {model}", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def write_summary(summary: EvalSummary, out_dir: str | Path) -> None:
    """Write summary.json and summary.md into `out_dir`."""
    out = Path(out_dir)
    (out / "summary.json").write_text(summary.model_dump_json(indent=2) + "\n")
    (out / "summary.md").write_text(render_markdown(summary))


async def evaluate(
    env_factory: Callable[[], TextEnv],
    policy: Policy,
    jobs: Sequence[EpisodeJob],
    out_dir: str | Path,
    *,
    env_id: str,
    env_kwargs: dict | None = None,
    config: RolloutConfig | None = None,
    callbacks: Sequence[TrajectoryCallback] = (),
) -> EvalSummary:
    """Play `jobs`, writing each trajectory to out_dir/trajectories.jsonl as it finishes, then the summary.

    If interrupted (Ctrl-C or cancellation), the summary of the finished episodes is still
    written, marked `interrupted`, and the interruption propagates.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done: list[Trajectory] = []
    started = time.perf_counter()
    with TrajectoryWriter(out / "trajectories.jsonl") as writer:
        engine = RolloutEngine(
            env_factory, policy, config, env_id=env_id, env_kwargs=env_kwargs,
            callbacks=[writer.write, done.append, *callbacks],
        )
        interrupted = True
        try:
            await engine.run(jobs)
            interrupted = False
        finally:
            summary = summarize(done, env_id=env_id, policy=policy.info(), planned=len(jobs),
                                wall_seconds=time.perf_counter() - started, interrupted=interrupted)
            write_summary(summary, out)
    return summary


def load_summary(out_dir: str | Path) -> EvalSummary:
    """Read a summary.json back."""
    return EvalSummary.model_validate(json.loads((Path(out_dir) / "summary.json").read_text()))
