#!/usr/bin/env python
"""ArCHer against GRPO (and any other registered algorithm, `--algos`) at equal environment-step budgets, from the same start.

Every run uses the env's training config (configs/train-<env>.yaml) with `--algo A` for each
A in `--algos` (default: grpo archer; add ppo for the value-head baseline), the same seeds and
batch layout, evaluating the same held-out episodes every `--eval-every` steps (the step-0
evaluation is played once, by the first run: all start from the same weights and seeds).
Finished runs are reused, so adding an algorithm later runs only that one. Prints:

  1. held-out success at each evaluation point, against the env steps (turns) played so far,
     with Wilson 95% intervals;
  2. env steps until held-out success first reached `--level` (and until the interval's lower
     bound did), "not reached" otherwise;
  3. the mean time of each phase of a step (rollout, critic, actor update, sync) and, for an
     algorithm with a critic, the critic's share of the step.

    .venv/bin/python benchmarks/archer_vs_grpo.py --model runs/demo/sft/model              # TextWorld, about 35 min
    .venv/bin/python benchmarks/archer_vs_grpo.py --env twenty-questions --model M --steps 4
    .venv/bin/python benchmarks/archer_vs_grpo.py --model runs/demo/sft/model --algos grpo archer ppo
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_runs import ROOT, train_run  # noqa: E402

from agentgym.config import deep_merge, dotted_overrides  # noqa: E402
from agentgym.evaluation import EvalSummary, load_summary  # noqa: E402
from agentgym.trainers.algorithms import get_algorithm  # noqa: E402
from agentgym.trainers.run_log import read_metrics  # noqa: E402

console = Console(width=150)
CONFIGS = {"textworld": "train-textworld.yaml", "twenty-questions": "train-twenty-questions.yaml"}
PHASES = ("time/rollout", "time/critic", "time/update", "time/sync", "time/step")


def env_steps(metrics: list[dict[str, Any]]) -> dict[int, int]:
    """Env steps (turns) played up to and including each training step: episodes x mean turns, summed."""
    total, out = 0, {0: 0}
    for m in sorted(metrics, key=lambda m: m["step"]):
        total += round(m["rollout/episodes"] * m["rollout/turns_mean"])
        out[m["step"]] = total
    return out


def evaluations(run: Path) -> dict[int, EvalSummary]:
    """Every held-out evaluation a run wrote, by step."""
    found = {}
    for d in sorted((run / "eval").glob("step-*")):
        if (d / "summary.json").is_file():
            found[int(d.name.split("-")[1])] = load_summary(d)
    return found


def first_reaching(points: list[tuple[int, EvalSummary]], level: float, *, lower_bound: bool) -> str:
    """The env steps of the first evaluation at or above `level` (its success, or its CI's lower end)."""
    for steps, s in points:
        if (s.success_ci95[0] if lower_bound else s.success_rate) >= level:
            return str(steps)
    return "not reached"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the starting policy (an `agentgym sft` output)")
    parser.add_argument("--env", default="textworld", choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--eval-every", type=int, default=3)
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--level", type=float, default=0.6, help="the held-out success whose env-step cost is compared")
    parser.add_argument("--algos", nargs="+", default=["grpo", "archer"], help="registered algorithms, one run each")
    parser.add_argument("--out", default="/tmp/agentgym-bench/archer-vs-grpo")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE overrides for both runs (e.g. archer.critic_updates=100)")
    args = parser.parse_args()
    for algo in args.algos:
        try:
            get_algorithm(algo)  # an unknown name fails before any run, with the known ones
        except ValueError as exc:
            parser.error(str(exc))
    algos = list(dict.fromkeys(args.algos))
    out = Path(args.out) / args.env
    # KEY=VALUE overrides parsed as `agentgym train` parses them, over the benchmark's own settings.
    base = deep_merge({"model": args.model, "steps": args.steps, "eval_every": args.eval_every,
                       "eval_episodes": args.eval_episodes}, dotted_overrides(args.overrides))
    runs: dict[str, tuple[list[dict[str, Any]], dict[int, EvalSummary]]] = {}
    for i, algo in enumerate(algos):
        # The starting policy is evaluated once, by the first run: the same weights on the same episodes.
        train_run(ROOT / "configs" / CONFIGS[args.env], {**base, "algo": algo, "eval_at_start": i == 0}, out / algo)
        runs[algo] = ([m for m in read_metrics(out / algo) if m.get("time/step") is not None], evaluations(out / algo))
    start = runs[algos[0]][1].get(0)

    curve = Table(title=f"{args.env}: held-out success ({args.eval_episodes} episodes) against env steps, from {args.model}")
    for col in ("training step", *(f"{a} {c}" for a in algos for c in ("env steps", "success", "95% CI"))):
        curve.add_column(col, justify="right")
    by_step: dict[str, dict[int, tuple[int, EvalSummary]]] = {}
    for algo in algos:
        metrics, evals = runs[algo]
        steps = env_steps(metrics)
        both = {0: start, **evals} if start is not None else evals
        by_step[algo] = {n: (steps[n], s) for n, s in sorted(both.items()) if n in steps}
    points = {algo: list(by_step[algo].values()) for algo in algos}
    for n in sorted({n for algo in algos for n in by_step[algo]}):
        row = [str(n)]
        for algo in algos:
            if n in by_step[algo]:
                e, s = by_step[algo][n]
                row += [str(e), f"{s.success_rate:.3f}", f"{s.success_ci95[0]:.2f}-{s.success_ci95[1]:.2f}"]
            else:
                row += ["-", "-", "-"]
        curve.add_row(*row)
    console.print(curve)

    reach = Table(title=f"Env steps until held-out success reached {args.level}")
    for col in ("algo", "success >= level", "95% CI lower bound >= level", "env steps in all", "final success", "95% CI"):
        reach.add_column(col, justify="right")
    for algo in algos:
        final = points[algo][-1][1]
        reach.add_row(algo, first_reaching(points[algo], args.level, lower_bound=False),
                      first_reaching(points[algo], args.level, lower_bound=True), str(env_steps(runs[algo][0])[args.steps]),
                      f"{final.success_rate:.3f}", f"{final.success_ci95[0]:.2f}-{final.success_ci95[1]:.2f}")
    console.print(reach)

    phases = Table(title="Mean seconds per training step, by phase (evaluation excluded)")
    for col in ("algo", "rollout", "critic", "actor update", "sync", "step", "critic share of step"):
        phases.add_column(col, justify="right")
    for algo in algos:
        metrics = runs[algo][0]
        means = {}
        for key in PHASES:
            values = [m[key] for m in metrics if isinstance(m.get(key), int | float)]
            means[key] = sum(values) / len(values) if values else math.nan
        critic = sum(m.get("time/critic") or 0.0 for m in metrics) / sum(m["time/step"] for m in metrics)
        phases.add_row(algo, *(f"{means[k]:.1f}" if math.isfinite(means[k]) else "-" for k in PHASES),
                       f"{critic:.1%}" if get_algorithm(algo).has_critic else "-")
    console.print(phases)


if __name__ == "__main__":
    main()
