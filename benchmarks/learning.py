#!/usr/bin/env python
"""Does a real model learn? SmolLM2-135M-Instruct on easy TextWorld, from scratch, on this machine.

Stages, each scored on the same episodes of 20 held-out games (seeds 10000..10019, never trained on):

  before    the untrained model, served by vLLM
  SFT       `agentgym sft` on walkthrough trajectories of the 40 training games (seeds 0..39)
  RL        `agentgym train` (configs/train-textworld.yaml: GRPO, vLLM rollouts, weight reload
            after every update) starting from the SFT model

It prints held-out success (with 95% Wilson intervals), invalid-action rate and the training
time spent so far, writes learning.png (held-out success by stage and RL's rollout success per
step) and the RL run's own plots. Evaluation time is reported apart from training time.

    .venv/bin/python benchmarks/learning.py                 # about 40 minutes on 2 cores
    .venv/bin/python benchmarks/learning.py --rl-steps 4 --out runs/learning-quick
    .venv/bin/python benchmarks/learning.py --epo           # the RL stage with EPO
    .venv/bin/python benchmarks/learning.py --max-draws 3   # the RL stage with dynamic sampling

Stage 2 (`--stage 2`, configs/train-textworld-stage2.yaml): "moderate" games (quests of 3 moves in
a larger world), 100 held-out episodes on 25 never-trained games, RL sampling at T = 1.0 with
dynamic sampling for the grouped algorithms, one RL run per `--algos` entry from the same SFT
model, and beside them a policy that plays a uniformly random admissible command:

    .venv/bin/python benchmarks/learning.py --stage 2 --algos grpo archer --out runs/learning-2
    .venv/bin/python benchmarks/learning.py --stage 2 --algos --out runs/learning-2   # up to SFT; rerun to add RL
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import agentgym
from agentgym.config import load_yaml
from agentgym.evaluation import EvalSummary, evaluate, load_summary
from agentgym.models import resolve_model
from agentgym.policies.openai_http import OpenAIPolicy
from agentgym.policies.scripted import RandomAdmissiblePolicy, WalkthroughPolicy
from agentgym.rollout.engine import RolloutConfig, plan_episodes
from agentgym.serve import VLLMServer
from agentgym.trainers.algorithms import get_algorithm
from agentgym.trainers.config import SFTConfig, TrainConfig
from agentgym.trainers.loop import Trainer, engine_config, eval_jobs
from agentgym.trainers.run_log import read_metrics
from agentgym.trainers.sft import run_sft

ROOT = Path(__file__).resolve().parents[1]
console = Console()


def env_kwargs(cfg: TrainConfig, held_out: bool) -> dict[str, Any]:
    """The training or held-out game set of the config."""
    return {**cfg.env_kwargs, **(cfg.eval_env_kwargs or {})} if held_out else dict(cfg.env_kwargs)


def walkthroughs(cfg: TrainConfig, out: Path) -> Path:
    """One walkthrough episode per training game: the SFT data."""
    kwargs = env_kwargs(cfg, held_out=False)
    tasks = agentgym.registry.task_ids(cfg.env, **kwargs)
    jobs = plan_episodes(tasks, len(tasks), seed=cfg.seed)
    asyncio.run(evaluate(lambda: agentgym.make(cfg.env, **kwargs), WalkthroughPolicy(), jobs, out,
                         env_id=cfg.env, env_kwargs=kwargs, config=RolloutConfig(concurrency=2)))
    return out / "trajectories.jsonl"


def eval_served(cfg: TrainConfig, model: str, out: Path) -> EvalSummary:
    """The trainer's held-out evaluation (same episodes, same sampling) of `model`, served by vLLM (reused if on disk)."""
    if (out / "summary.json").is_file():
        return load_summary(out)
    kwargs = env_kwargs(cfg, held_out=True)
    jobs = eval_jobs(agentgym.registry.task_ids(cfg.env, **kwargs), cfg)
    rollout = engine_config(cfg, cfg.eval_sampling)  # the trainer's own evaluation settings, seeds included
    with VLLMServer(resolve_model(model), name="policy", log_path=out / "vllm.log", **cfg.vllm.server_kwargs()) as server:
        policy = OpenAIPolicy(server.base_url, "policy")

        async def run() -> EvalSummary:
            try:
                return await evaluate(lambda: agentgym.make(cfg.env, **kwargs), policy, jobs, out,
                                      env_id=cfg.env, env_kwargs=kwargs, config=rollout)
            finally:
                await policy.aclose()

        return asyncio.run(run())


def eval_random(cfg: TrainConfig, out: Path) -> EvalSummary:
    """The held-out evaluation of a policy that plays a uniformly random admissible command each turn (reused if on disk)."""
    if (out / "summary.json").is_file():
        return load_summary(out)
    kwargs = env_kwargs(cfg, held_out=True)
    jobs = eval_jobs(agentgym.registry.task_ids(cfg.env, **kwargs), cfg)
    return asyncio.run(evaluate(lambda: agentgym.make(cfg.env, **kwargs), RandomAdmissiblePolicy(cfg.seed), jobs, out,
                                env_id=cfg.env, env_kwargs=kwargs, config=engine_config(cfg, cfg.eval_sampling)))


def stage_table(stages: list[tuple[str, EvalSummary, float]], title: str) -> Table:
    """Held-out success by stage, with intervals, invalid actions, turns and training minutes."""
    table = Table("stage", "held-out success", "95% CI", "episodes", "invalid actions", "mean turns",
                  "training minutes so far", title=title)
    for name, s, minutes in stages:
        table.add_row(name, f"{s.success_rate:.2f}", f"{s.success_ci95[0]:.2f}–{s.success_ci95[1]:.2f}", str(s.episodes),
                      f"{s.invalid_action_rate:.2f}", f"{s.mean_turns:.1f}", f"{minutes:.1f}")
    return table


def stage_two(args: argparse.Namespace) -> None:
    """Before / random / SFT / RL per algorithm on harder games; RL gains over SFT and over random, in points."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_yaml(args.config or str(ROOT / "configs" / "train-textworld-stage2.yaml"))
    if args.rl_steps:
        data["steps"] = args.rl_steps
    base = TrainConfig.model_validate({**data, "eval_at_start": False, "eval_every": 0})
    stages: list[tuple[str, EvalSummary, float]] = []
    started = time.perf_counter()
    data_path = walkthroughs(base, out / "walkthrough")
    console.print(f"walkthrough data in {time.perf_counter() - started:.0f} s")
    random_policy = eval_random(base, out / "eval-random")
    stages.append(("random admissible command", random_policy, 0.0))
    if not args.skip_before:
        stages.append(("before (untrained)", eval_served(base, base.model, out / "eval-before"), 0.0))
    started = time.perf_counter()
    sft_dir = out / "sft"
    model_dir = sft_dir / "model"
    if not model_dir.is_dir():
        run_sft(SFTConfig(data=[str(data_path)], model=base.model, epochs=args.sft_epochs,
                          update={"lr": args.sft_lr}, seed=base.seed), sft_dir)
    sft_minutes = (time.perf_counter() - started) / 60
    sft_eval = eval_served(base, str(model_dir), out / "eval-sft")
    stages.append(("after SFT", sft_eval, sft_minutes))
    for algo in args.algos:
        run = out / f"rl-{algo}"
        grouped = get_algorithm(algo).grouped  # dynamic sampling needs groups to compare
        cfg = TrainConfig.model_validate({**base.model_dump(), "model": str(model_dir), "algo": algo, "out": str(run),
                                          "max_draws": base.max_draws if grouped else 1})
        started = time.perf_counter()
        result = Trainer(cfg, run, resume=(run / "config.yaml").is_file()).run()
        metrics = read_metrics(run)
        eval_seconds = sum(m.get("time/eval") or 0.0 for m in metrics)
        minutes = (time.perf_counter() - started - eval_seconds) / 60
        final = result.evals.get(cfg.steps) or load_summary(run / "eval" / f"step-{cfg.steps:06d}")  # a finished run, reused
        stages.append((f"after RL, {algo} ({cfg.steps} steps)", final, sft_minutes + minutes))
    console.print(stage_table(stages, f"Learning, stage 2: {base.env_kwargs.get('difficulty')} TextWorld (held-out games)"))
    rl = [s for s in stages if s[0].startswith("after RL")]
    if rl:
        best = max(rl, key=lambda s: s[1].success_rate)
        console.print(f"best RL ({best[0]}): {100 * (best[1].success_rate - sft_eval.success_rate):+.0f} points over SFT, "
                      f"{100 * (best[1].success_rate - random_policy.success_rate):+.0f} points over the random policy")
    (out / "results.json").write_text(json.dumps({
        "stages": [{"stage": n, "success_rate": s.success_rate, "ci95": s.success_ci95, "episodes": s.episodes,
                    "invalid_action_rate": s.invalid_action_rate, "training_minutes": m} for n, s, m in stages],
    }, indent=2))


def plot(stages: list[tuple[str, EvalSummary, float]], rl_metrics: list[dict], path: Path) -> None:
    """learning.png: held-out success by stage (with intervals) and RL rollout success by step."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    left, right = fig.subplots(1, 2)
    names = [s[0] for s in stages]
    rates = [s[1].success_rate for s in stages]
    errs = [[r - s[1].success_ci95[0] for r, s in zip(rates, stages)], [s[1].success_ci95[1] - r for r, s in zip(rates, stages)]]
    left.bar(names, rates, yerr=errs, capsize=6, color=["#999999", "#4c72b0", "#dd8452"][: len(names)])
    left.set_ylim(0, 1.05)
    left.set_ylabel("held-out success rate (95% CI)")
    left.set_title("SmolLM2-135M on held-out easy TextWorld games")
    for i, (_, s, minutes) in enumerate(stages):
        left.text(i + 0.22, s.success_rate + 0.02, f"{s.success_rate:.2f}\n{minutes:.1f} min", ha="left", fontsize=9)
    steps = [m["step"] for m in rl_metrics if m.get("rollout/success_rate") is not None]
    succ = [m["rollout/success_rate"] for m in rl_metrics if m.get("rollout/success_rate") is not None]
    right.plot(steps, succ, marker="o", label="rollout success (training games)")
    evals = [(m["step"], m["eval/success_rate"]) for m in rl_metrics if m.get("eval/success_rate") is not None]
    if evals:
        right.plot(*zip(*evals), marker="s", linestyle="--", label="held-out success")
    right.set_xlabel("RL step")
    right.set_ylim(0, 1.05)
    right.set_title("RL (GRPO) from the SFT model")
    right.legend(loc="lower right")
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", type=int, choices=[1, 2], default=1, help="1: easy games, GRPO; 2: harder games, --algos.")
    parser.add_argument("--algos", nargs="*", default=["grpo", "archer"],
                        help="Stage 2: one RL run per algorithm; `--algos` alone stops after SFT.")
    parser.add_argument("--config", default=None, help="Default: configs/train-textworld.yaml (stage 1), -stage2.yaml (stage 2).")
    parser.add_argument("--out", default=f"runs/learning-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--rl-steps", type=int, default=None, help="RL steps (default: the config's).")
    parser.add_argument("--sft-epochs", type=int, default=2)
    parser.add_argument("--sft-lr", type=float, default=1e-4)
    parser.add_argument("--epo", action="store_true", help="RL with EPO entropy regularisation.")
    parser.add_argument("--max-draws", type=int, default=None, help="RL with dynamic sampling: up to this many draws a step.")
    parser.add_argument("--skip-before", action="store_true", help="Skip evaluating the untrained model.")
    args = parser.parse_args()
    if args.stage == 2:
        stage_two(args)
        return

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_yaml(args.config or str(ROOT / "configs" / "train-textworld.yaml"))
    if args.rl_steps:
        data["steps"] = args.rl_steps
    if args.epo:
        data.setdefault("update", {}).setdefault("epo", {})["enabled"] = True
    if args.max_draws:
        data["max_draws"] = args.max_draws
    base = TrainConfig.model_validate({**data, "eval_at_start": True, "eval_every": 0})
    stages: list[tuple[str, EvalSummary, float]] = []
    timings: dict[str, float] = {}

    started = time.perf_counter()
    data_path = walkthroughs(base, out / "walkthrough")
    timings["walkthrough data"] = time.perf_counter() - started
    if not args.skip_before:
        started = time.perf_counter()
        stages.append(("before", eval_served(base, base.model, out / "eval-before"), 0.0))
        timings["eval before"] = time.perf_counter() - started

    started = time.perf_counter()
    sft = run_sft(SFTConfig(data=[str(data_path)], model=base.model, epochs=args.sft_epochs,
                            update={"lr": args.sft_lr}, seed=base.seed), out / "sft")
    sft_minutes = (time.perf_counter() - started) / 60
    timings["SFT"] = sft_minutes * 60

    rl_cfg = base.model_copy(update={"model": str(sft.model_dir), "out": str(out / "rl")})
    started = time.perf_counter()
    result = Trainer(TrainConfig.model_validate(rl_cfg.model_dump()), out / "rl").run()
    rl_wall = time.perf_counter() - started
    metrics = read_metrics(out / "rl")
    eval_seconds = sum(m.get("time/eval") or 0.0 for m in metrics)
    start_eval = result.evals.get(0)
    # eval_at_start's evaluation is not in metrics' time/eval: take it from its summary.
    eval_seconds += start_eval.wall_seconds if start_eval else 0.0
    rl_minutes = (rl_wall - eval_seconds) / 60
    timings["RL (without its evaluations)"] = rl_wall - eval_seconds
    timings["RL evaluations"] = eval_seconds
    if start_eval:
        stages.append(("after SFT", start_eval, sft_minutes))
    stages.append((f"after RL ({result.steps} steps)", result.evals[result.steps], sft_minutes + rl_minutes))

    console.print(stage_table(stages, "Learning on easy TextWorld (held-out games)"))
    times = Table("phase", "seconds", title="Wall time")
    for name, seconds in timings.items():
        times.add_row(name, f"{seconds:.0f}")
    console.print(times)
    if len(stages) >= 2:
        gain = stages[-1][1].success_rate - stages[0][1].success_rate
        console.print(f"gain over {stages[0][0]}: {gain * 100:+.0f} points in {stages[-1][2]:.1f} training minutes")
    (out / "results.json").write_text(json.dumps({
        "stages": [{"stage": n, "success_rate": s.success_rate, "ci95": s.success_ci95, "episodes": s.episodes,
                    "invalid_action_rate": s.invalid_action_rate, "training_minutes": m} for n, s, m in stages],
        "seconds": timings,
    }, indent=2))
    plot(stages, metrics, out / "learning.png")
    from agentgym.plotting import plot_run

    plot_run(out / "rl")
    console.print(f"curves: {out / 'learning.png'} and {out / 'rl' / 'plots'}")


if __name__ == "__main__":
    main()
