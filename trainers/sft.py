"""`agentgym sft`: supervised warm start on recorded trajectories, in the same masked format RL trains on.

Turns recorded with token ids are used as sampled; turns without (walkthrough or other
scripted policies) are tokenised from their messages with the model's chat template. The
result is a full model directory (LoRA adapters are merged in), so `agentgym train --model
RUN_DIR/model` and `agentgym serve --model RUN_DIR/model` take it as it is.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentgym.errors import AgentGymError
from agentgym.hardware import resolve_placement
from agentgym.progress import Heartbeat, format_duration
from agentgym.store import read_trajectories
from agentgym.trainers.batches import turn_samples
from agentgym.trainers.config import SFTConfig
from agentgym.trainers.policy_model import load_trainable, save_model
from agentgym.trainers.run_log import RunLog
from agentgym.trainers.update import make_optimizer, sft_step
from agentgym.types import Trajectory


@dataclass
class SFTResult:
    """Where the fine-tuned model went and how training went."""

    model_dir: Path
    steps: int
    samples: int
    final_loss: float
    seconds: float


def load_sft_trajectories(paths: list[str], only_success: bool) -> list[Trajectory]:
    """Every trajectory of the given files (successful ones only, if asked); clear errors for missing or empty data."""
    trajectories: list[Trajectory] = []
    for path in paths:
        if not Path(path).is_file():
            raise AgentGymError(f"SFT data file {path!r} not found")
        trajectories += read_trajectories(path)
    kept = [t for t in trajectories if t.error is None and (t.success or not only_success)]
    if not kept:
        what = "successful trajectories" if only_success else "trajectories"
        raise AgentGymError(f"no {what} to train on in {', '.join(paths)}")
    # A file lists episodes in the order they finished, which concurrency varies from run to run;
    # a canonical order makes the seeded shuffle, and so the SFT model, the same on every run.
    return sorted(kept, key=lambda t: (t.env_id, t.task_id, t.seed, t.sample_index, t.trajectory_id))


def run_sft(
    cfg: SFTConfig, run_dir: str | Path, *, console: Console | None = None, show_progress: bool = True,
    heartbeat: Heartbeat | None = None,
) -> SFTResult:
    """Fine-tune cfg.model on cfg.data; writes RUN_DIR/model, metrics.jsonl and config.yaml (device and precision resolved).

    Progress is a bar on a terminal; elsewhere (a log file, CI) `heartbeat` prints a line at
    least every 30 s, since a bar shows nothing there until it ends. show_progress=False: neither.
    """
    console = console or Console(stderr=True)
    out = Path(run_dir)
    if (out / "model").exists():
        raise AgentGymError(f"{out / 'model'} already exists; pick another --out so nothing is overwritten")
    trajectories = load_sft_trajectories(cfg.data, cfg.only_success)
    placement = resolve_placement(cfg.device, cfg.update.precision)
    console.print(placement.describe(), highlight=False)
    # The run's record says what ran, not "auto": the same file on another machine could mean other hardware.
    cfg = cfg.model_copy(update={
        "device": str(placement.device), "update": cfg.update.model_copy(update={"precision": placement.precision}),
    })
    trainable = load_trainable(cfg.model, lora=cfg.lora, device=placement.device)
    samples, skipped = turn_samples(
        trajectories, max_length=cfg.max_length, tokenizer=trainable.tokenizer, eos_token_id=trainable.eos_token_id
    )
    if not samples:
        raise AgentGymError(f"all {skipped} turns are longer than max_length={cfg.max_length} tokens; raise it")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    optimizer = make_optimizer(trainable, cfg.update)
    rng = random.Random(cfg.seed)
    per_epoch = -(-len(samples) // cfg.batch_size)
    total = per_epoch * cfg.epochs
    console.print(f"SFT on {len(samples)} turns from {len(trajectories)} trajectories ({skipped} too long), {total} steps")
    started = time.perf_counter()
    step, loss, tokens, reported = 0, float("nan"), 0, False
    bar = show_progress and console.is_terminal
    if show_progress and not bar:
        heartbeat = heartbeat or Heartbeat(30.0, console=console)
    else:
        heartbeat = None
    progress = Progress(TextColumn("[bold]sft"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                        TimeElapsedColumn(), console=console, disable=not bar)

    def status() -> str:
        elapsed = time.perf_counter() - started
        left = elapsed / step * (total - step)
        return (f"sft step {step}/{total} · loss {loss:.3f} · {tokens / max(elapsed, 1e-9):.0f} tokens/s · "
                f"{format_duration(elapsed)} elapsed, {format_duration(left)} left")

    with RunLog(out) as log, progress:
        task = progress.add_task("sft", total=total, loss="-")
        for epoch in range(cfg.epochs):
            order = list(samples)
            rng.shuffle(order)
            for i in range(0, len(order), cfg.batch_size):
                batch = order[i:i + cfg.batch_size]
                metrics = sft_step(trainable, optimizer, batch, cfg.update)
                step += 1
                tokens += sum(len(s.input_ids) for s in batch)  # every token the step ran through the model
                loss = metrics["sft/loss"]
                log.log(step, {**metrics, "sft/epoch": float(epoch)})
                progress.update(task, completed=step, loss=f"{loss:.3f}")
                if heartbeat is not None:
                    reported = heartbeat.maybe(status)
    if heartbeat is not None and step and not reported:
        heartbeat.emit(status())  # the last line always says where it ended
    if trainable.is_lora:
        trainable.model = trainable.model.merge_and_unload()  # a plain model directory serves everywhere
    model_dir = save_model(trainable, out / "model")
    return SFTResult(model_dir, step, len(samples), loss, time.perf_counter() - started)
