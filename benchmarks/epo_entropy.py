#!/usr/bin/env python
"""EPO on vs off: does entropy smoothing steady the policy's entropy across training steps?

Two `agentgym train` runs from the same starting model with the same seeds (the same tasks and
episode seeds at every step; configs/train-textworld.yaml otherwise), one with `--epo`. Both
measure the policy's entropy after every step on the same fixed probe turns (walkthrough turns of
the training games; `entropy_probe` in the trainer's config), so a step's number does not depend
on which tasks that step drew. Prints the per-step entropies, then for each run the variance of
entropy across steps and the mean step-to-step change. The entropy of each step's own rollout
tokens is shown beside it. An existing run made with the same probe can stand in for either side
(--off-run / --on-run).

    .venv/bin/python benchmarks/epo_entropy.py --model runs/learning/sft/model --steps 8
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agentgym.config import load_yaml
from agentgym.trainers.config import TrainConfig
from agentgym.trainers.loop import Trainer
from agentgym.trainers.run_log import read_metrics
from learning import walkthroughs  # benchmarks/learning.py: the same SFT data doubles as the probe

ROOT = Path(__file__).resolve().parents[1]
console = Console(width=130)  # the stability table is wide; keep it whole in logs and pipes


def train(config: Path, model: str, steps: int, epo: bool, probe: Path, out: Path) -> Path:
    """One training run (held-out evaluation after the last step only); returns its directory."""
    data = load_yaml(config)
    data.update(model=model, steps=steps, eval_every=0, out=str(out), entropy_probe=str(probe))
    data.setdefault("update", {}).setdefault("epo", {})["enabled"] = epo
    Trainer(TrainConfig.model_validate(data), out).run()
    return out


def series(run: Path, key: str, first: int, last: int) -> list[float]:
    """A metric of the run at steps first..last, in step order (steps that lack it are left out).

    Two are compared: `policy/probe_entropy` (the same probe turns every time; step 0 is the
    start) and `rollout/sampled_token_nll`, the mean -log p of every token the step sampled at
    temperature 1, an estimate of the entropy over all rollout tokens. The trainer's own
    `policy/entropy` is not used: it covers only the turns it trained on, and without EPO it skips
    turns whose advantage is zero, so the two runs would measure different token sets.
    """
    values = {m["step"]: m[key] for m in read_metrics(run) if m.get(key) is not None}
    return [values[s] for s in range(first, last + 1) if s in values]


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
    parser.add_argument("--probe", help="Trajectories JSONL of probe turns (default: walkthroughs of the training games).")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = Path(args.config)
    if args.probe:
        probe = Path(args.probe)
    else:
        probe = walkthroughs(TrainConfig.model_validate({**load_yaml(config), "model": args.model}), out / "probe")
    off = Path(args.off_run) if args.off_run else train(config, args.model, args.steps, False, probe, out / "off")
    on = Path(args.on_run) if args.on_run else train(config, args.model, args.steps, True, probe, out / "on")
    p_off, p_on = (series(run, "policy/probe_entropy", 0, args.steps) for run in (off, on))
    h_off, h_on = (series(run, "rollout/sampled_token_nll", 1, args.steps) for run in (off, on))

    per_step = Table("step", "EPO off: probe", "EPO on: probe", "EPO off: rollout tokens", "EPO on: rollout tokens",
                     title="Mean token entropy per step (nats); probe: after the step's update, step 0 = start")
    columns = (p_off, p_on, [math.nan, *h_off], [math.nan, *h_on])
    for i in range(max(len(c) for c in columns)):
        per_step.add_row(str(i), *(f"{c[i]:.4f}" if i < len(c) and not math.isnan(c[i]) else "-" for c in columns))
    console.print(per_step)
    summary = Table("run", "measure", "points", "mean", "variance across steps", "variance, second half",
                    "mean |step-to-step change|", "held-out success", title="Entropy stability")
    for name, run, measures in (("EPO off", off, (("probe", p_off), ("rollout tokens", h_off))),
                              ("EPO on", on, (("probe", p_on), ("rollout tokens", h_on)))):
        for measure, h in measures:
            if len(h) < 2:
                summary.add_row(name, measure, str(len(h)), "-", "-", "-", "-", held_out(run))
                continue
            changes = [abs(b - a) for a, b in zip(h, h[1:])]
            # EPO weighs its entropy bonus most in the first phase of training: the second half shows
            # how steady entropy stays once that exploration push has faded.
            late = h[len(h) // 2:]
            summary.add_row(name, measure, str(len(h)), f"{statistics.fmean(h):.4f}", f"{statistics.pvariance(h):.6f}",
                            f"{statistics.pvariance(late):.6f}" if len(late) > 1 else "-",
                            f"{statistics.fmean(changes):.4f}", held_out(run))
    console.print(summary)
    console.print(f"probe: full-distribution entropy on the first turns of {probe} (fixed); rollout tokens: mean "
                  "-log p of every token sampled at the step (temperature 1), which also varies with the tasks drawn")


if __name__ == "__main__":
    main()
