"""PNG plots of a training run's metrics.jsonl: one figure per panel plus a combined summary.png.

Rendering uses matplotlib's Agg canvas on `Figure` objects directly (no pyplot, no display,
no global backend switch), so it is safe on headless machines and inside other programs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentgym.errors import AgentGymError
from agentgym.trainers.run_log import (
    EVAL_SUCCESS_RATE,
    METRICS_FILE,
    PLOTTED_KEYS,
    POLICY_APPROX_KL,
    POLICY_CLIP_FRACTION,
    POLICY_ENTROPY,
    POLICY_ENTROPY_VAR,
    POLICY_KL,
    POLICY_PROBE_ENTROPY,
    ROLLOUT_REWARD_MEAN,
    ROLLOUT_SUCCESS_RATE,
    read_metrics,
)

SUMMARY_FILE = "summary.png"


@dataclass(frozen=True)
class Series:
    """One metric key drawn as a line (every step) or as markers (periodic, e.g. eval)."""

    key: str
    label: str
    markers: bool = False


@dataclass(frozen=True)
class Panel:
    """One plot: its file name (without .png), title, y label and the series it draws."""

    name: str
    title: str
    ylabel: str
    series: tuple[Series, ...]
    ylim: tuple[float, float] | None = None


PANELS: tuple[Panel, ...] = (
    Panel(
        "success_rate", "Success rate", "success rate",
        (Series(ROLLOUT_SUCCESS_RATE, "rollout"), Series(EVAL_SUCCESS_RATE, "eval", markers=True)),
        ylim=(-0.03, 1.03),
    ),
    Panel("reward", "Mean rollout reward", "reward", (Series(ROLLOUT_REWARD_MEAN, "rollout reward (mean)"),)),
    Panel("entropy", "Policy entropy", "entropy (nats / token)", (Series(POLICY_ENTROPY, "trained turns"), Series(POLICY_PROBE_ENTROPY, "fixed probe turns"))),
    Panel("entropy_var", "Policy entropy variance", "variance", (Series(POLICY_ENTROPY_VAR, "entropy variance"),)),
    Panel("kl", "KL divergence", "KL", (Series(POLICY_KL, "KL"), Series(POLICY_APPROX_KL, "approx KL"))),
    Panel("clip_fraction", "Clip fraction", "fraction clipped", (Series(POLICY_CLIP_FRACTION, "clip fraction"),)),
    # Reward-model diagnostics (trainers/rewarding.py): how often groups give no gradient, and how big advantages are.
    Panel("advantage_collapse", "Groups with all-zero advantages", "fraction of groups",
          (Series("train/zero_advantage_groups", "advantage collapse"),), ylim=(-0.03, 1.03)),
    Panel("advantage_abs", "Mean |advantage| per turn", "|advantage|", (Series("train/advantage_abs_mean", "mean |A|"),)),
    Panel("reward_model_time", "Reward-model time", "ms per trajectory",
          (Series("time/reward_model_ms_per_trajectory", "reward model"),)),
    # A critic's (ArCHer's twin Q/V, PPO's value head; trainers/algorithms/): drawn only for runs that have one.
    Panel("critic_loss", "Critic losses and TD error", "loss",
          (Series("critic/q_loss", "Q loss (twins summed)"), Series("critic/v_loss", "V loss (ArCHer: twins summed)"),
           Series("critic/td_error", "|TD error| of Q1"))),
    Panel("critic_values", "Critic values and advantage", "value",
          (Series("critic/q_mean", "min Q"), Series("critic/v_mean", "V (ArCHer: min of twins)"),
           Series("critic/return_mean", "λ-return (PPO)"), Series("critic/advantage_mean", "A mean"),
           Series("critic/advantage_std", "A std"))),
    Panel("critic_explained_variance", "Value head's explained variance of the λ-returns (PPO)", "1 − Var(R − V) / Var(R)",
          (Series("critic/explained_variance", "explained variance"),)),
    Panel("step_phases", "Time per step by phase", "seconds",
          (Series("time/rollout", "rollout"), Series("time/critic", "critic"), Series("time/update", "actor update"),
           Series("time/sync", "sync"))),
)


def series_points(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one key over the records that have it; null or non-numeric values become NaN (gaps)."""
    steps: list[int] = []
    values: list[float] = []
    for record in records:
        if key not in record:
            continue
        value = record[key]
        number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
        steps.append(record["step"])
        values.append(number)
    return steps, values


def _present(values: Sequence[float]) -> bool:
    return any(math.isfinite(v) for v in values)


def _panel_data(panel: Panel, records: Sequence[dict[str, Any]]) -> list[tuple[Series, list[int], list[float]]]:
    """The series of a panel that have at least one finite value."""
    out = []
    for s in panel.series:
        steps, values = series_points(records, s.key)
        if _present(values):
            out.append((s, steps, values))
    return out


def _draw(ax: Any, panel: Panel, data: list[tuple[Series, list[int], list[float]]]) -> None:
    from matplotlib.ticker import MaxNLocator

    for s, steps, values in data:
        if s.markers:
            ax.plot(steps, values, marker="o", markersize=5, linestyle=":", linewidth=1, label=s.label)
        else:
            few = sum(math.isfinite(v) for v in values) <= 30
            ax.plot(steps, values, marker="." if few else None, linewidth=1.5, label=s.label)
    ax.set_title(panel.title, fontsize=12)
    ax.set_xlabel("step", fontsize=10)
    ax.set_ylabel(panel.ylabel, fontsize=10)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if panel.ylim is not None:
        ax.set_ylim(*panel.ylim)
    ax.grid(True, alpha=0.3)
    if len(data) > 1:
        ax.legend(fontsize=9)


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write one PNG per panel with data, and summary.png with all of them, into out_dir (default run_dir/plots)."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    drawn = [(panel, data) for panel in PANELS if (data := _panel_data(panel, records))]
    if not drawn:
        what = "no records" if not records else f"none of the plotted metrics ({', '.join(PLOTTED_KEYS)})"
        raise AgentGymError(f"nothing to plot in {run_dir}: {METRICS_FILE} has {what}")
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)

    written: list[Path] = []
    for panel, data in drawn:
        fig = _new_figure(6.4, 4.0)
        _draw(fig.add_subplot(1, 1, 1), panel, data)
        path = out / f"{panel.name}.png"
        fig.savefig(path)
        written.append(path)

    n = len(drawn)
    ncols = 1 if n == 1 else 2 if n in (2, 4) else 3
    nrows = math.ceil(n / ncols)
    fig = _new_figure(5.0 * ncols, 3.6 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (panel, data) in zip(axes, drawn, strict=False):
        _draw(ax, panel, data)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(f"Training run: {run_dir.resolve().name}", fontsize=14)
    path = out / SUMMARY_FILE
    fig.savefig(path)
    written.append(path)
    return written
