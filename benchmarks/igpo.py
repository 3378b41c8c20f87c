#!/usr/bin/env python
"""IGPO against outcome-only rewards on Twenty Questions, where every task carries its answer.

Three parts, all from the same starting model:

  collapse  one set of rollouts (groups of `--samples` episodes on training objects), scored twice:
            with the env's outcome reward and GRPO's baseline, and with IGPO's information gain
            (the policy's teacher-forced probability of the hidden object after each answer)
            and IGPO's pooled advantage. Prints the fraction of groups whose advantages are all
            zero (advantage collapse) under each, and the reward model's cost per trajectory.
  training  `agentgym train --config configs/train-twenty-questions.yaml` with `--reward env` and
            with `--reward igpo`, same seeds: held-out success side by side with 95% intervals.
  scoring   IGPO's scorer on vLLM as the trainer runs it: one step's rollouts (`--groups` x
            `--samples`, the config's rollout settings) through a vLLM server, then the same
            trajectories scored through each of the scorer's routes, prefix cache read
            (`prefix-cache`) and every prompt recomputed (`completions`): time per trajectory
            against the rollout's, and the largest difference between the two routes' rewards.

    .venv/bin/python benchmarks/igpo.py                                  # hours on 2 cores: size it down
    .venv/bin/python benchmarks/igpo.py --parts collapse --groups 8      # about 70 minutes on 2 cores
    .venv/bin/python benchmarks/igpo.py --parts training --steps 2 --tasks-per-step 2 --eval-episodes 48   # about 70
    .venv/bin/python benchmarks/igpo.py --parts scoring --groups 2     # about 15 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_runs import ROOT, train_run  # noqa: E402

import agentgym  # noqa: E402
from agentgym.config import load_yaml  # noqa: E402
from agentgym.models import resolve_model  # noqa: E402
from agentgym.policies.openai_http import OpenAIPolicy  # noqa: E402
from agentgym.policies.scoring import VLLMScorer, scorer_for  # noqa: E402
from agentgym.policies.transformers_local import TransformersPolicy  # noqa: E402
from agentgym.progress import RolloutProgress  # noqa: E402
from agentgym.reward_models.env_reward import EnvReward  # noqa: E402
from agentgym.reward_models.igpo import InformationGainRewards  # noqa: E402
from agentgym.rollout.engine import RolloutConfig, RolloutEngine, plan_episodes  # noqa: E402
from agentgym.serve import VLLMServer  # noqa: E402
from agentgym.trainers.config import TrainConfig  # noqa: E402
from agentgym.trainers.loop import engine_config  # noqa: E402
from agentgym.trainers.rewarding import groups_of, score_step  # noqa: E402
from agentgym.types import SamplingParams  # noqa: E402

console = Console(width=140)
CONFIG = ROOT / "configs" / "train-twenty-questions.yaml"


async def collapse(args: argparse.Namespace) -> Table:
    """Advantage collapse of the same rollouts under outcome-only rewards and under IGPO."""
    cfg = load_yaml(args.config)
    env_kwargs = cfg["env_kwargs"]
    policy = TransformersPolicy(args.model, max_batch_size=8)
    policy.load()
    tasks = agentgym.registry.task_ids(cfg["env"], **env_kwargs)
    jobs = plan_episodes(tasks, args.groups * args.samples, samples_per_task=args.samples, seed=3)
    # Rollouts on an in-process model take many minutes on a CPU: a progress line keeps the log alive.
    with RolloutProgress(len(jobs), "collapse rollouts", console=console) as progress:
        engine = RolloutEngine(
            lambda: agentgym.make(cfg["env"], **env_kwargs), policy,
            RolloutConfig(concurrency=8, history_turns=2, seed=0, sampling=SamplingParams(temperature=1.0, max_tokens=24)),
            env_id=cfg["env"], callbacks=[progress.update],
        )
        started = time.perf_counter()
        trajectories = await engine.run(jobs)
        rollout_s = time.perf_counter() - started
    console.print(f"{len(trajectories)} rollouts in {rollout_s:.0f} s; scoring them with each reward model")
    usable = [t for t in trajectories if t.error is None]
    scorer = scorer_for(policy)
    table = Table(title=f"The same {len(usable)} rollouts ({args.groups} groups x {args.samples}) of {args.model}, scored two ways")
    for col in ("reward", "advantage", "groups all-zero", "mean |A|", "reward model ms / trajectory", "rollouts s / trajectory"):
        table.add_column(col, justify="right")
    for label, model, advantage in (("outcome only (env)", EnvReward(), "grpo"), ("IGPO information gain", InformationGainRewards(), "igpo")):
        scored = await score_step(usable, model, scorer, advantage, gamma=1.0, normalize_std=True)
        d = scored.diagnostics
        table.add_row(label, advantage, f"{d['train/zero_advantage_groups']:.2f}", f"{d['train/advantage_abs_mean']:.3f}",
                      f"{d['time/reward_model_ms_per_trajectory']:.1f}", f"{rollout_s / len(trajectories):.2f}")
    await policy.aclose()
    return table


async def scoring(args: argparse.Namespace) -> Table:
    """IGPO's scorer on vLLM right after the rollouts it scores: prefix cache read against every prompt recomputed."""
    from transformers import AutoTokenizer

    data = load_yaml(args.config)
    data.update(model=args.model, out=str(Path(args.out) / "scoring"))
    if args.kvcache_gib:
        data.setdefault("vllm", {})["kvcache_space_gib"] = args.kvcache_gib
    cfg = TrainConfig.model_validate(data)
    model_dir = resolve_model(cfg.model)
    tasks = agentgym.registry.task_ids(cfg.env, **cfg.env_kwargs)
    jobs = plan_episodes(tasks, args.groups * args.samples, samples_per_task=args.samples, seed=3)
    # The server as the trainer starts it (cfg.vllm), so its cache and precision are the training run's.
    log = Path(args.out) / "scoring-vllm.log"
    with VLLMServer(model_dir, name="policy", log_path=log, **cfg.vllm.server_kwargs()) as server:
        policy = OpenAIPolicy(server.base_url, "policy")
        engine = RolloutEngine(
            lambda: agentgym.make(cfg.env, **cfg.env_kwargs), policy, engine_config(cfg, cfg.rollout.sampling), env_id=cfg.env
        )
        started = time.perf_counter()
        trajectories = [t for t in await engine.run(jobs) if t.error is None]
        rollout_s = time.perf_counter() - started
        await policy.aclose()
        console.print(f"{len(trajectories)} rollouts in {rollout_s:.0f} s; scoring them through each route")
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        results = {}
        # The prefix-cache route first, as in training: right after the rollouts, their prompts still cached.
        for route in ("prefix-cache", "completions"):
            scorer = VLLMScorer(server.base_url, "policy", tokenizer, route=route, timeout_s=cfg.rollout.turn_timeout_s)
            scored = await score_step(trajectories, InformationGainRewards(), scorer, "igpo", gamma=cfg.gamma,
                                      normalize_std=cfg.normalize_std)  # fmt: skip
            results[route] = (scored, scorer)
    reference = results["completions"][0].rewards
    table = Table(title=f"IGPO scoring of the same {len(trajectories)} rollouts ({args.groups} groups x {args.samples}) of "
                        f"{args.model} on vLLM ({cfg.vllm.dtype}, KV cache {cfg.vllm.kvcache_space_gib} GiB)")  # fmt: skip
    for col in ("scorer route", "contexts scored", "prompt tokens read from the cache", "asked again without it",
                "reward model ms / trajectory", "rollout ms / trajectory", "reward model / rollout",
                "max |r - r(completions)|"):  # fmt: skip
        table.add_column(col, justify="right")
    rollout_ms = rollout_s * 1000 / len(trajectories)
    for route, (scored, scorer) in results.items():
        d = scored.diagnostics
        diff = max(abs(a - b) for rr, ee in zip(scored.rewards, reference, strict=True) for a, b in zip(rr, ee, strict=True))
        ms = d["time/reward_model_ms_per_trajectory"]
        contexts = d.get("reward/contexts_scored", float("nan")) * len(groups_of(trajectories))  # a mean over groups
        read = f"{scorer.cache_read_tokens:,} of {scorer.prompt_tokens:,}" if scorer.prompt_tokens else "-"
        table.add_row(route, f"{contexts:.0f}", read, str(scorer.recomputed), f"{ms:,.0f}",
                      f"{rollout_ms:,.0f}", f"{ms / rollout_ms:.1%}", f"{diff:.1e}")  # fmt: skip
    return table


def training(args: argparse.Namespace) -> Table:
    """Held-out success after the same training budget with outcome-only rewards and with IGPO, and IGPO's cost."""
    table = Table(title=f"Held-out success after {args.steps} steps from {args.model} (same seeds)")
    for col in ("reward", "success", "95% CI", "episodes", "advantage collapse (mean over steps)",
                "reward model ms / trajectory", "rollout s / step", "reward model share of step"):
        table.add_column(col, justify="right")
    for name in ("env", "igpo"):
        overrides = {"model": args.model, "steps": args.steps, "reward": {"name": name}, "eval_episodes": args.eval_episodes}
        if args.tasks_per_step:
            overrides["tasks_per_step"] = args.tasks_per_step
        metrics, summary = train_run(Path(args.config), overrides, Path(args.out) / name)
        collapsed = [m["train/zero_advantage_groups"] for m in metrics if "train/zero_advantage_groups" in m]
        # The reward model's whole cost per step against the step's wall time (evaluation excluded).
        cost = [m["time/reward_model_ms_per_trajectory"] * m["rollout/episodes"] / 1000 for m in metrics]
        low, high = summary.success_ci95
        table.add_row(
            name, f"{summary.success_rate:.3f}", f"{low:.2f}-{high:.2f}", str(summary.episodes),
            f"{sum(collapsed) / len(collapsed):.2f}" if collapsed else "-",
            f"{sum(m['time/reward_model_ms_per_trajectory'] for m in metrics) / len(metrics):.1f}",
            f"{sum(m['time/rollout'] for m in metrics) / len(metrics):.0f}",
            f"{sum(cost) / sum(m['time/step'] for m in metrics):.1%}",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--parts", nargs="+", default=["collapse", "training"], choices=["collapse", "training", "scoring"])
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--tasks-per-step", type=int, default=None, help="training groups per step (default: the config's)")
    parser.add_argument("--eval-episodes", type=int, default=96, help="held-out episodes (the test split's 48 objects, twice)")
    parser.add_argument("--kvcache-gib", type=int, default=None, help="scoring: vLLM's KV cache (default: the config's)")
    parser.add_argument("--out", default="/tmp/agentgym-bench/igpo")
    args = parser.parse_args()
    if "collapse" in args.parts:
        console.print(asyncio.run(collapse(args)))
    if "training" in args.parts:
        console.print(training(args))
    if "scoring" in args.parts:
        console.print(asyncio.run(scoring(args)))


if __name__ == "__main__":
    main()
