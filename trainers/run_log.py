"""The per-step metrics record of a training run: `metrics.jsonl` plus TensorBoard scalars.

`metrics.jsonl` holds one JSON object per line, ``{"step": int, "time": unix float, **metrics}``,
appended and fsynced line by line, so a killed run loses at most the line being written.
Nothing recorded is ever deleted: a run resumed from a checkpoint at step S re-does the
steps after S and appends their records again, and readers (`read_metrics`) keep the LAST
record of each step. Values that are None or not finite are written as null.

TensorBoard event files go under ``run_dir/tensorboard/``, one scalar per metric key (the
key is the tag, e.g. "rollout/success_rate"). On resume the writer purges steps > S so
the curves do not double back.
"""

from __future__ import annotations

import json
import math
import operator
import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from agentgym.errors import AgentGymError

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"

# Metric keys the trainer logs and `agentgym.plotting` draws.
ROLLOUT_SUCCESS_RATE = "rollout/success_rate"
ROLLOUT_REWARD_MEAN = "rollout/reward_mean"
EVAL_SUCCESS_RATE = "eval/success_rate"
POLICY_ENTROPY = "policy/entropy"
POLICY_ENTROPY_VAR = "policy/entropy_var"
POLICY_PROBE_ENTROPY = "policy/probe_entropy"
POLICY_KL = "policy/kl"
POLICY_APPROX_KL = "policy/approx_kl"
POLICY_CLIP_FRACTION = "policy/clip_fraction"
PLOTTED_KEYS: tuple[str, ...] = (
    ROLLOUT_SUCCESS_RATE,
    EVAL_SUCCESS_RATE,
    ROLLOUT_REWARD_MEAN,
    POLICY_ENTROPY,
    POLICY_ENTROPY_VAR,
    POLICY_PROBE_ENTROPY,
    POLICY_KL,
    POLICY_APPROX_KL,
    POLICY_CLIP_FRACTION,
)

_RESERVED = ("step", "time")


def metrics_path(run_dir: str | Path) -> Path:
    """The metrics.jsonl file of a run directory."""
    return Path(run_dir) / METRICS_FILE


def _json_value(key: str, value: Any) -> int | float | None:
    """A metric value as JSON-safe int, float or None (null for None and non-finite values)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        number = float(value)  # numpy scalars, 0-d tensors
    except (TypeError, ValueError) as exc:
        raise AgentGymError(f"metric {key!r} must be a number or None, got {type(value).__name__}: {value!r}") from exc
    return number if math.isfinite(number) else None


class RunLog:
    """Appends per-step metrics to run_dir/metrics.jsonl and (optionally) TensorBoard; a context manager."""

    def __init__(self, run_dir: str | Path, *, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.path = metrics_path(self.run_dir)
        self.resume_step = None if resume_step is None else operator.index(resume_step)
        if self.resume_step is not None and self.resume_step < 0:
            raise AgentGymError(f"resume_step must be >= 0, got {resume_step}")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        try:
            self._end_torn_line()
            self._writer = self._open_tensorboard() if tensorboard else None
        except BaseException:
            self._file.close()
            raise
        self._closed = False

    def _end_torn_line(self) -> None:
        """If a crash left the file without a final newline, end that line so the next record starts clean."""
        size = self._file.tell()  # append mode: positioned at the end
        if size == 0:
            return
        with open(self.path, "rb") as f:
            f.seek(size - 1)
            last = f.read(1)
        if last != b"\n":
            self._write_bytes(b"\n")

    def _open_tensorboard(self) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        purge = None if self.resume_step is None else self.resume_step + 1
        return SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR), purge_step=purge)

    def _write_bytes(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())

    def log(self, step: int, metrics: Mapping[str, float | int | None]) -> None:
        """Record the metrics of one step: one fsynced JSON line, and finite values as TensorBoard scalars."""
        if self._closed:
            raise AgentGymError(f"RunLog for {self.run_dir} is closed")
        try:
            step = operator.index(step)
        except TypeError as exc:
            raise AgentGymError(f"step must be an int, got {type(step).__name__}: {step!r}") from exc
        if step < 0:
            raise AgentGymError(f"step must be >= 0, got {step}")
        record: dict[str, Any] = {"step": step, "time": time.time()}
        for key, value in metrics.items():
            if not isinstance(key, str) or not key:
                raise AgentGymError(f"metric keys must be non-empty strings, got {key!r}")
            if key in _RESERVED:
                raise AgentGymError(f"metric key {key!r} is reserved in metrics.jsonl; rename it")
            record[key] = _json_value(key, value)
        line = json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n"
        self._write_bytes(line.encode("utf-8"))
        if self._writer is not None:
            for key, value in record.items():
                if key in _RESERVED or value is None:
                    continue
                self._writer.add_scalar(key, value, global_step=step)
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the metrics file and the TensorBoard writer; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            self._file.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of run_dir/metrics.jsonl: the last one for each step, sorted by step; torn lines skipped."""
    path = metrics_path(run_dir)
    if not path.is_file():
        raise AgentGymError(f"no {METRICS_FILE} in {run_dir}; is it a training run directory?")
    by_step: dict[int, dict[str, Any]] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash
            if not isinstance(record, dict):
                continue
            step = record.get("step")
            if not isinstance(step, int) or isinstance(step, bool):
                continue
            by_step[step] = record
    return [by_step[s] for s in sorted(by_step)]
