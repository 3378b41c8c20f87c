#!/usr/bin/env python
"""SPA's per-turn rewards against TextWorld's true score increments, on held-out trajectories.

1. Plays `--train-episodes` episodes on TextWorld training games and `--eval-episodes` on
   held-out games with `--model` (sampling at temperature 1, so some win and some do not), plus
   the walkthroughs of the training games (wins whose every step counts).
2. Trains a progress estimator on the training trajectories (`reward_models.spa.train_progress`:
   contributions fitted so a trajectory's sum is its final score).
3. On the held-out trajectories: Spearman's rho of each turn's contribution c_t with the turn's
   true score increment, with a bootstrap 95% interval over trajectories; beside it the
   trajectory-level variant (every turn given its trajectory's mean contribution, what the
   released reference script does), which cannot rank turns within a trajectory. Two measures:
   rho pooled over every turn of every trajectory (which a trajectory-level value also earns by
   ranking won episodes above lost ones), and the mean rho within each trajectory whose
   increments vary (turn-level credit proper, where a constant reward scores 0).

    .venv/bin/python benchmarks/spa.py --model runs/demo/sft/model           # about 15 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

import agentgym
from agentgym.metrics import spearman
from agentgym.policies.scripted import WalkthroughPolicy
from agentgym.policies.transformers_local import TransformersPolicy
from agentgym.reward_models.spa import ProgressEstimator, train_progress
from agentgym.rollout.engine import RolloutConfig, RolloutEngine, plan_episodes
from agentgym.store import TrajectoryWriter, read_trajectories
from agentgym.trainers.rewarding import progress_increments
from agentgym.types import SamplingParams, Trajectory

console = Console(width=140)
TRAIN_GAMES = {"difficulty": "easy", "num_games": 40, "games_seed": 0, "max_turns": 10}
EVAL_GAMES = {"difficulty": "easy", "num_games": 20, "games_seed": 10000, "max_turns": 10}


async def play(policy: object, env_kwargs: dict, episodes: int, path: Path, seed: int) -> list[Trajectory]:
    """`episodes` TextWorld episodes into `path` (reused when it is there)."""
    if path.is_file():
        return list(read_trajectories(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tasks = agentgym.registry.task_ids("textworld", **env_kwargs)
    config = RolloutConfig(concurrency=8, history_turns=2, seed=seed, sampling=SamplingParams(temperature=1.0, max_tokens=24))
    with TrajectoryWriter(path) as writer:
        engine = RolloutEngine(lambda: agentgym.make("textworld", **env_kwargs), policy, config,  # type: ignore[arg-type]
                               env_id="textworld", callbacks=[writer.write])
        return await engine.run(plan_episodes(tasks, episodes, seed=seed))


def pooled_rho(trajectories: Sequence[Trajectory], rewards: Sequence[Sequence[float]]) -> float:
    """Spearman's rho over every turn of `trajectories`: reward against the true progress increment."""
    xs = [r for row in rewards for r in row]
    ys = [inc for t in trajectories for inc in (progress_increments(t) or [])]
    return spearman(xs, ys)


def within_rho(trajectories: Sequence[Trajectory], rewards: Sequence[Sequence[float]]) -> float:
    """Mean over trajectories whose true increments vary of Spearman's rho between their turns' rewards and increments.

    This is the question of turn-level credit: which turns of one episode made the progress. A
    reward that is the same on every turn ranks no turn above another: its rho counts as 0.
    """
    values = []
    for t, row in zip(trajectories, rewards):
        increments = progress_increments(t) or []
        if len(set(increments)) < 2:
            continue
        rho = spearman(row, increments)
        values.append(0.0 if rho != rho else rho)
    return statistics.mean(values) if values else float("nan")


Measure = Callable[[Sequence[Trajectory], Sequence[Sequence[float]]], float]


def bootstrap(trajectories: Sequence[Trajectory], rewards: Sequence[Sequence[float]], rounds: int = 1000,
              measure: Measure | None = None) -> tuple[float, float]:
    """A 95% percentile interval of `measure` (default: the pooled rho), resampling whole trajectories."""
    measure = measure or pooled_rho
    rng = random.Random(0)
    n = len(trajectories)
    values = []
    for _ in range(rounds):
        picks = [rng.randrange(n) for _ in range(n)]
        rho = measure([trajectories[i] for i in picks], [rewards[i] for i in picks])
        if rho == rho:  # not NaN
            values.append(rho)
    values.sort()
    return values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--train-episodes", type=int, default=160)
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--out", default="/tmp/agentgym-bench/spa")
    args = parser.parse_args()
    out = Path(args.out)
    policy = TransformersPolicy(args.model, max_batch_size=8)
    started = time.perf_counter()
    asyncio.run(play(WalkthroughPolicy(), TRAIN_GAMES, TRAIN_GAMES["num_games"], out / "walkthrough.jsonl", seed=0))
    asyncio.run(play(policy, TRAIN_GAMES, args.train_episodes, out / "train.jsonl", seed=1))
    held_out = [t for t in asyncio.run(play(policy, EVAL_GAMES, args.eval_episodes, out / "eval.jsonl", seed=2)) if t.error is None]
    played_s = time.perf_counter() - started
    model_dir = out / "progress"
    if not (model_dir / "progress_estimator.json").is_file():
        metrics = train_progress([out / "walkthrough.jsonl", out / "train.jsonl"], args.model, model_dir, epochs=args.epochs)
        console.print({k: v for k, v in metrics.items() if "mse" in k})
    estimator = ProgressEstimator.load(model_dir)
    started = time.perf_counter()
    per_turn = estimator.contributions(held_out)
    score_s = time.perf_counter() - started
    flat = [[statistics.mean(row)] * len(row) if row else [] for row in per_turn]
    wins = sum(bool(t.success) for t in held_out)
    increments = sum(1 for t in held_out for inc in (progress_increments(t) or []) if inc > 0)
    table = Table(title=f"Held-out TextWorld trajectories: {len(held_out)} ({wins} won), "
                        f"{sum(t.num_turns for t in held_out)} turns, {increments} with a score increment")
    for col in ("per-turn reward", "rho pooled over all turns", "95% CI", "rho within a trajectory (mean)", "95% CI"):
        table.add_column(col, justify="right")
    for label, rewards in (("SPA, each turn its own c_t", per_turn), ("trajectory-level value on every turn", flat)):
        low, high = bootstrap(held_out, rewards)
        w_low, w_high = bootstrap(held_out, rewards, measure=within_rho)
        table.add_row(label, f"{pooled_rho(held_out, rewards):.3f}", f"{low:.3f} to {high:.3f}",
                      f"{within_rho(held_out, rewards):.3f}", f"{w_low:.3f} to {w_high:.3f}")
    console.print(table)
    console.print(f"played in {played_s:.0f} s; scored the held-out turns in {score_s:.1f} s")


if __name__ == "__main__":
    main()
