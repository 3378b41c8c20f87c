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
    """Per-step mean policy entropy of a run's first `steps` steps."""
    values = [m["policy/entropy"] for m in read_metrics(run) if m.get("policy/entropy") is not None]
    return values[:steps]


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

    per_step = Table("step", "entropy, EPO off", "entropy, EPO on", title="Mean token entropy of the rollouts' policy")
    for i in range(max(len(h_off), len(h_on))):
        per_step.add_row(str(i + 1), *(f"{h[i]:.4f}" if i < len(h) else "-" for h in (h_off, h_on)))
    console.print(per_step)
    summary = Table("run", "steps", "mean entropy", "variance across steps", "mean |step-to-step change|",
                    "held-out success", title="Entropy stability")
    for name, h, run in (("EPO off", h_off, off), ("EPO on", h_on, on)):
        changes = [abs(b - a) for a, b in zip(h, h[1:])]
        summary.add_row(f"{name} ({run})", str(len(h)), f"{statistics.fmean(h):.4f}",
                        f"{statistics.pvariance(h):.6f}", f"{statistics.fmean(changes):.4f}" if changes else "-",
                        held_out(run))
    console.print(summary)


if __name__ == "__main__":
    main()
