"""Shared by the reward-model benchmarks: one `agentgym train` run per setting, each in its own process.

A process per run, as a user runs it (runs in one process keep the earlier runs' memory); a run
whose final held-out evaluation is on disk is reused, so a benchmark killed half way resumes
where it was.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from agentgym.config import deep_merge, load_yaml
from agentgym.evaluation import EvalSummary, load_summary
from agentgym.trainers.config import TrainConfig
from agentgym.trainers.run_log import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def train_run(base_config: Path, overrides: dict[str, Any], out: Path) -> tuple[list[dict[str, Any]], EvalSummary]:
    """Train `base_config` with `overrides` into `out` (unless done); the per-step metrics and the last held-out summary."""
    data = deep_merge(load_yaml(base_config), overrides)
    data["out"] = str(out)
    cfg = TrainConfig.model_validate(data)
    final = out / "eval" / f"step-{cfg.steps:06d}"
    if not (final / "summary.json").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        config = out.with_suffix(".yaml")
        config.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        command = [str(Path(sys.executable).with_name("agentgym")), "train", "--config", str(config), "--out", str(out), "--quiet"]
        if (out / "config.yaml").is_file():
            command.append("--resume")
        subprocess.run(command, check=True, cwd=ROOT)
    return [m for m in read_metrics(out) if m.get("time/step") is not None], load_summary(final)
