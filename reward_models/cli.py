"""`agentgym reward ...`: train the learned reward models (SPA's progress estimator)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agentgym.errors import AgentGymError

reward_app = typer.Typer(help="Learned reward models: train them on recorded trajectories.", no_args_is_help=True)
out_console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


@reward_app.command("train-progress")
def train_progress_command(
    data: Annotated[list[Path], typer.Option("--data", help="Trajectory JSONL file (repeatable), e.g. from agentgym eval.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the estimator (use as reward.progress_model=DIR).")],
    backbone: Annotated[str, typer.Option(help="Frozen causal LM under the head: the policy's base model (alias or directory).")] = "smollm2-135m",
    epochs: Annotated[int, typer.Option(help="Passes of the head over the cached turn features.")] = 200,
    lr: Annotated[float, typer.Option(help="AdamW learning rate of the head.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of the split, the head's initialisation and the order.")] = 0,
    val_fraction: Annotated[float, typer.Option(help="Share of the groups held out for validation.")] = 0.1,
    batch_size: Annotated[int, typer.Option(help="Trajectories per step of the head's training.")] = 32,
) -> None:
    """Train SPA's progress estimator: per-turn contributions that sum to each trajectory's outcome."""
    from agentgym.reward_models.spa import train_progress

    try:
        metrics = train_progress(data, backbone, out, epochs=epochs, lr=lr, seed=seed,
                                 val_fraction=val_fraction, batch_size=batch_size)
    except AgentGymError as exc:
        # One line, also when the command runs inside another program (agentgym.cli.main prints these too).
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    out_console.print(metrics_table(metrics))
    skipped = int(metrics["skipped_errors"] + metrics["skipped_empty"])
    out_console.print(
        f"{int(metrics['turns'])} turns; skipped {skipped} trajectories ({int(metrics['skipped_errors'])} with an error, "
        f"{int(metrics['skipped_empty'])} without turns); features {metrics['feature_seconds']:.1f} s, "
        f"head {metrics['fit_seconds']:.1f} s",
        highlight=False,
    )
    out_console.print(f"progress estimator: {out}  (train with: agentgym train --reward spa reward.progress_model={out} ...)",
                      highlight=False)


def metrics_table(metrics: dict[str, float]) -> Table:
    """Train and validation MSE, before and after training, as a rich table."""
    table = Table("split", "trajectories", "MSE before", "MSE after", title="progress loss: mean (sum_t c_t - R)^2")
    for split in ("train", "val"):
        table.add_row(split, str(int(metrics[f"{split}_trajectories"])),
                      _shown(metrics[f"{split}_mse_initial"]), _shown(metrics[f"{split}_mse"]))
    return table


def _shown(value: float) -> str:
    """A metric for the table; '-' where there was nothing to measure (no validation groups)."""
    return "-" if math.isnan(value) else f"{value:.4f}"
