#!/usr/bin/env python
"""G-RA against D-RA on TextWorld, where a step signal can be farmed without solving the game.

Both runs start from the same model with the same seeds and configs/train-textworld.yaml; the
immediate reward is `weight` per valid command (`valid_action`, which TextWorld grants to any
admissible command, "look" included). D-RA pays it on every turn, so an episode that wanders
for ten valid turns earns more than one that wins in three; G-RA pays it only on episodes
whose outcome (the game's score) reaches tau, so winning stays the way to earn it. Prints, per
step, the reward each run optimises and the rollouts' env success, then held-out success with
95% intervals (`--eval-episodes` >= 100 for the issue's comparison) beside the starting model's
on the same episodes.

    .venv/bin/python benchmarks/gated_rewards.py --model runs/demo/sft/model                # about 25 minutes
    .venv/bin/python benchmarks/gated_rewards.py --model M --steps 8 --weight 1.0 --eval-episodes 100  # 45 min, bf16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning import eval_served  # noqa: E402  (benchmarks/learning.py: the trainer's held-out evaluation of a model)
from train_runs import ROOT, train_run  # noqa: E402

from agentgym.config import deep_merge, load_yaml  # noqa: E402
from agentgym.trainers.config import TrainConfig  # noqa: E402

console = Console(width=140)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the starting policy (an `agentgym sft` output or an alias)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "train-textworld.yaml"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--weight", type=float, default=0.2, help="immediate reward per valid action")
    parser.add_argument("--tau", type=float, default=1.0)
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--out", default="/tmp/agentgym-bench/gated-rewards")
    args = parser.parse_args()
    runs = {}
    for name in ("dra", "gra"):
        overrides = {
            "model": args.model, "steps": args.steps, "eval_episodes": args.eval_episodes,
            "reward": {"name": name, "signals": {"valid_action": args.weight}, "tau": args.tau},
        }
        runs[name] = train_run(Path(args.config), overrides, Path(args.out) / name)

    curves = Table(title=f"Per step, same start and seeds (valid_action weight {args.weight}, tau {args.tau})")
    for col in ("step", "D-RA reward optimised", "D-RA env success", "D-RA turns", "G-RA reward optimised",
                "G-RA env success", "G-RA turns", "G-RA gate open"):
        curves.add_column(col, justify="right")
    for d, g in zip(*(runs[n][0] for n in ("dra", "gra"))):
        curves.add_row(
            str(d["step"]), f"{d['reward/total_mean']:.2f}", f"{d['rollout/success_rate']:.2f}", f"{d['rollout/turns_mean']:.1f}",
            f"{g['reward/total_mean']:.2f}", f"{g['rollout/success_rate']:.2f}", f"{g['rollout/turns_mean']:.1f}",
            f"{g.get('reward/gate_open_fraction', float('nan')):.2f}",
        )
    # The start on the same held-out episodes, with the same sampling: what "falls or stalls" is measured against.
    base = deep_merge(load_yaml(Path(args.config)), {"model": args.model, "eval_episodes": args.eval_episodes,
                                                     "out": str(Path(args.out) / "start")})  # fmt: skip
    start = eval_served(TrainConfig.model_validate(base), args.model, Path(args.out) / "start" / "eval")
    held = Table(title="Held-out success after the last step")
    for col in ("reward model", "success", "95% CI", "episodes", "mean turns"):
        held.add_column(col, justify="right")
    for name, (_, summary) in {"start (no RL)": (None, start), **runs}.items():
        low, high = summary.success_ci95
        held.add_row(name, f"{summary.success_rate:.3f}", f"{low:.2f}-{high:.2f}", str(summary.episodes), f"{summary.mean_turns:.1f}")
    console.print(curves)
    console.print(held)


if __name__ == "__main__":
    main()
