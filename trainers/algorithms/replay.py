"""The off-policy critic's replay buffer of turn transitions, persisted step by step in the run directory.

A transition is (s, x, r, s', d): the state and turn features of one turn (trainers/turn_encoder.py),
its reward, the next turn's state features and whether the episode ended there. Each step's
transitions are one file, `replay/step-N.safetensors`, written under a temporary name, flushed and
renamed into place, so a `kill -9` leaves whole files only. On `--resume` from the checkpoint of
step k, the files of steps 1..k are read back (those of a later step belong to a step that is
played again and are replaced when it is). The buffer keeps the newest `capacity` transitions;
files wholly older than that are deleted.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["ReplayBuffer", "Transitions"]

_FIELDS = ("state", "turn", "next_state", "reward", "done")
_NAME = re.compile(r"^step-(\d{6})\.safetensors$")


@dataclass
class Transitions:
    """N transitions, field by field: state [N, H], turn [N, F], next_state [N, H], reward [N], done [N]."""

    state: torch.Tensor
    turn: torch.Tensor
    next_state: torch.Tensor
    reward: torch.Tensor
    done: torch.Tensor

    def __post_init__(self) -> None:
        sizes = {name: len(getattr(self, name)) for name in _FIELDS}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"transition fields disagree on their count: {sizes}")

    def __len__(self) -> int:
        return len(self.reward)

    @staticmethod
    def concat(parts: list[Transitions]) -> Transitions:
        """All of `parts`, in order, as one."""
        return Transitions(*(torch.cat([getattr(p, name) for p in parts]) for name in _FIELDS))

    def take(self, index: torch.Tensor) -> Transitions:
        """The transitions at `index`."""
        return Transitions(*(getattr(self, name)[index] for name in _FIELDS))

    def to(self, device: torch.device | str) -> Transitions:
        """A copy on `device`."""
        return Transitions(*(getattr(self, name).to(device) for name in _FIELDS))


class ReplayBuffer:
    """The newest `capacity` transitions of a run, backed by one safetensors file per step under `directory`."""

    def __init__(self, directory: str | Path, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"the replay buffer's capacity must be at least 1 transition, got {capacity}")
        self.directory = Path(directory)
        self.capacity = int(capacity)
        self._steps: list[tuple[int, Transitions]] = []  # (step, its transitions), oldest first

    def __len__(self) -> int:
        return min(self.capacity, sum(len(t) for _, t in self._steps))

    @property
    def steps(self) -> list[int]:
        """The steps whose transitions are held, oldest first."""
        return [s for s, _ in self._steps]

    def add(self, step: int, transitions: Transitions) -> None:
        """Hold and persist step `step`'s transitions (replacing any this step had: a step played again)."""
        if step < 1:
            raise ValueError(f"steps are numbered from 1, got {step}")
        if self._steps and step <= self._steps[-1][0]:
            self._steps = [(s, t) for s, t in self._steps if s < step]
        if len(transitions):
            self._write(step, transitions)
            self._steps.append((step, transitions))
        self._prune()

    def load(self, up_to_step: int) -> None:
        """Read back the files of steps 1..`up_to_step` (a resume); later steps' files are deleted."""
        self._steps = []
        if not self.directory.is_dir():
            return
        from safetensors.torch import load_file

        for path in sorted(self.directory.iterdir()):
            found = _NAME.match(path.name)
            if not found:
                continue
            step = int(found.group(1))
            if step > up_to_step:
                path.unlink()  # a step the run is about to play again
                continue
            tensors = load_file(str(path))
            self._steps.append((step, Transitions(*(tensors[name] for name in _FIELDS))))
        self._prune()

    def all(self) -> Transitions:
        """Every held transition, the newest `capacity` of them, oldest first."""
        if not self._steps:
            raise ValueError("the replay buffer is empty")
        joined = Transitions.concat([t for _, t in self._steps])
        return joined.take(torch.arange(max(0, len(joined) - self.capacity), len(joined)))

    def sample(self, batch_size: int, generator: torch.Generator) -> Transitions:
        """`batch_size` transitions drawn uniformly with replacement from the held ones."""
        pool = self.all()
        return pool.take(torch.randint(len(pool), (batch_size,), generator=generator))

    def _write(self, step: int, transitions: Transitions) -> None:
        from safetensors.torch import save_file

        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"step-{step:06d}.safetensors"
        tmp = final.with_name(f".{final.name}.tmp")
        save_file({name: getattr(transitions, name).contiguous() for name in _FIELDS}, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)

    def _prune(self) -> None:
        """Drop (and delete) the oldest steps once the newer ones alone fill the capacity."""
        while len(self._steps) > 1 and sum(len(t) for _, t in self._steps[1:]) >= self.capacity:
            step, _ = self._steps.pop(0)
            (self.directory / f"step-{step:06d}.safetensors").unlink(missing_ok=True)
