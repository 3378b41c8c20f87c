#!/usr/bin/env python
"""EPO on vs off: does entropy smoothing steady the policy's entropy across training steps?

Two `agentgym train` runs from the same starting model with the same seeds (the same tasks and
episode seeds at every step; configs/train-textworld.yaml otherwise), one with `--epo`. Prints
each step's mean token entropy for both, then the variance of entropy across steps and the mean
step-to-step change. An existing run can stand in for either side (--off-run / --on-run), e.g.
the RL stage of benchmarks/learning.py as the EPO-off run.

    .venv/bin/python benchmarks/epo_entropy.py --model runs/learning/sft/model --steps 8
    .venv/bin/python benchmarks/epo_entropy.py --model M --off-run runs/learning/rl --steps 8
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agentgym.config import load_yaml
from agentgym.store import read_trajectories
from agentgym.trainers.config import TrainConfig
from agentgym.trainers.loop import Trainer
from agentgym.trainers.run_log import read_metrics

ROOT = Path(__file__).resolve().parents[1]
console = Console()


def train(config: Path, model: str, steps: int, epo: bool, out: Path) -> Path:
    """One training run (held-out evaluation after the last step only); returns its directory."""
    data = load_yaml(config)
    data.update(model=model, steps=steps, eval_every=0, out=str(out))
    data.setdefault("update", {}).setdefault("epo", {})["enabled"] = epo
    Trainer(TrainConfig.model_validate(data), out).run()
    return out


def entropies(run: Path, steps: int) -> list[float]:
    """Per-step mean token entropy of the policy, estimated from every rollout token of the step.

    The trainer's own `policy/entropy` covers only the turns it trained on, and without EPO it
    skips turns whose advantage is zero, so the two runs would measure different token sets. The
    mean -log p of the sampled tokens (rollouts sample at temperature 1) estimates the entropy over
    all of them, the same way in both runs.
    """
    values = []
    for step in range(1, steps + 1):
        path = run / "trajectories" / f"step-{step:06d}.jsonl"
        if not path.is_file():
            break
        nll = [-lp for t in read_trajectories(path) for u in t.turns for lp in (u.completion_logprobs or [])]
        values.append(statistics.fmean(nll))
    return values


def trained_entropies(run: Path, steps: int) -> list[float]:
    """The trainer's `policy/entropy` per step (over the turns it trained on)."""
    return [m["policy/entropy"] for m in read_metrics(run) if m.get("policy/entropy") is not None][:steps]


def held_out(run: Path) -> str:
    """The held-out success rate of a run's last evaluation, as text."""
    rates = [m["eval/success_rate"] for m in read_metrics(run) if m.get("eval/success_rate") is not None]
    return f"{rates[-1]:.2f}" if rates else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Starting model (e.g. the SFT model of benchmarks/learning.py).")
    parser.add_argument("--config", default=str(ROOT / "configs" / "train-textworld.yaml"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", default=f"runs/epo-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--off-run", help="Use this finished run as the EPO-off side.")
    parser.add_argument("--on-run", help="Use this finished run as the EPO-on side.")
    args = parser.parse_args()
    out = Path(args.out)
    off = Path(args.off_run) if args.off_run else train(Path(args.config), args.model, args.steps, False, out / "off")
    on = Path(args.on_run) if args.on_run else train(Path(args.config), args.model, args.steps, True, out / "on")
    h_off, h_on = entropies(off, args.steps), entropies(on, args.steps)
    t_off, t_on = trained_entropies(off, args.steps), trained_entropies(on, args.steps)

    per_step = Table("step", "EPO off: rollout tokens", "EPO on: rollout tokens", "EPO off: trained turns",
                     "EPO on: trained turns", title="Mean token entropy per step (nats)")
    columns = (h_off, h_on, t_off, t_on)
    for i in range(max(len(c) for c in columns)):
        per_step.add_row(str(i + 1), *(f"{c[i]:.4f}" if i < len(c) else "-" for c in columns))
    console.print(per_step)
    summary = Table("run", "steps", "mean entropy", "variance across steps", "mean |step-to-step change|",
                    "held-out success", title="Entropy stability")
    for name, h, run in (("EPO off", h_off, off), ("EPO on", h_on, on)):
        changes = [abs(b - a) for a, b in zip(h, h[1:])]
        summary.add_row(f"{name} ({run})", str(len(h)), f"{statistics.fmean(h):.4f}",
                        f"{statistics.pvariance(h):.6f}", f"{statistics.fmean(changes):.4f}" if changes else "-",
                        held_out(run))
    console.print(summary)
    console.print("entropy here: mean -log p of every sampled rollout token of the step (temperature 1), "
                  "the same token population in both runs")


if __name__ == "__main__":
    main()
