"""Resumable checkpoints: model (or adapters), optimiser, step, RNG states, EPO's entropy history and an algorithm's own state.

A checkpoint is written under a temporary name and renamed into place, and the `latest`
pointer is replaced atomically afterwards, so a `kill -9` at any moment leaves the previous
checkpoint intact and `latest` always names a complete one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agentgym.errors import AgentGymError
from agentgym.trainers.policy_model import TrainableModel, save_model

LATEST = "latest"


@dataclass
class TrainerState:
    """Where a run stands after a finished step."""

    step: int  # steps finished
    entropy_history: list[float] = field(default_factory=list)
    served_model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(
    root: str | Path, trainable: TrainableModel, optimizer: torch.optim.Optimizer, state: TrainerState, *, keep: int = 2,
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write checkpoint `step-N` under root, point `latest` at it and prune all but the newest `keep`.

    `write_extra(directory)` adds files of its own (an algorithm's critic) before the checkpoint is made visible.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{state.step:06d}"
    final = root / name
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(trainable, tmp / "model")
    torch.save({"optimizer": optimizer.state_dict(), "rng": _rng_state()}, tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({
        "step": state.step, "entropy_history": state.entropy_history,
        "served_model": state.served_model, "extra": state.extra, "lora": trainable.is_lora,
    }, indent=2))
    if write_extra is not None:
        write_extra(tmp)
    _fsync_tree(tmp)
    shutil.rmtree(final, ignore_errors=True)  # a step re-done after a resume replaces its old checkpoint
    os.replace(tmp, final)
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(name)
    os.replace(pointer, root / LATEST)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint `latest` names, or None if the run has none yet."""
    pointer = Path(root) / LATEST
    if not pointer.is_file():
        return None
    path = Path(root) / pointer.read_text().strip()
    if not (path / "state.json").is_file():
        raise AgentGymError(f"checkpoint pointer {pointer} names {path}, which is incomplete or missing")
    return path


def read_state(checkpoint: str | Path) -> TrainerState:
    """The TrainerState stored in a checkpoint directory."""
    data = json.loads((Path(checkpoint) / "state.json").read_text())
    return TrainerState(step=int(data["step"]), entropy_history=list(data.get("entropy_history", [])),
                        served_model=data.get("served_model"), extra=dict(data.get("extra", {})))


def restore_optimizer(checkpoint: str | Path, optimizer: torch.optim.Optimizer) -> None:
    """Load the optimiser state and the RNG states saved with a checkpoint."""
    blob = torch.load(Path(checkpoint) / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(blob["optimizer"])
    _set_rng_state(blob["rng"])


def _fsync_tree(path: Path) -> None:
    """Flush every file under `path` to disk before the rename makes the checkpoint visible."""
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as fh:
                os.fsync(fh.fileno())
