"""`agentgym alfworld ...`: make ALFWorld games offline in alfworld's own format."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

alfworld_app = typer.Typer(help="ALFWorld games.", no_args_is_help=True)
console = Console(stderr=True)


@alfworld_app.command("make-games")
def make_games_command(
    out: Annotated[Path, typer.Option("--out", help="Directory for the game set (json_2.1.1/<split>/..., as alfworld's data).")],
    n: Annotated[int, typer.Option("--n", help="Number of games over all splits (a fifth each to valid_seen and valid_unseen).")] = 120,
    seed: Annotated[int, typer.Option(help="Seed of the whole set: the same seed gives the same files.")] = 0,
    workers: Annotated[int, typer.Option(help="Games made at once, each in its own interpreter.")] = 2,
) -> None:
    """Generate solvable ALFWorld games of all six task types from alfworld's room layouts; no download."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from agentgym.envs.text.alfworld_games import make_games, split_sizes
    from agentgym.errors import EnvConfigError

    if n < 1:
        raise EnvConfigError(f"--n must be at least 1, got {n}")
    started = time.monotonic()
    columns = (TextColumn("ALFWorld games"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        job = bar.add_task("games", total=n)
        paths = make_games(out, n=n, seed=seed, workers=workers, progress=lambda done, _: bar.update(job, completed=done))
    sizes = ", ".join(f"{split} {count}" for split, count in split_sizes(n).items())
    console.print(f"{len(paths)} ALFWorld games ({sizes}) in {out} in {time.monotonic() - started:.0f} s; "
                  f"play them with --env-opt data_dir={out} or ALFWORLD_DATA={out}", highlight=False)
