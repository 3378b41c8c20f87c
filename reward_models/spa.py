"""SPA: stepwise progress attribution, a learned per-turn reward that sums to the outcome.

Wang et al. 2025, "SPA-RL: Reinforcing LLM Agents via Stepwise Progress Attribution"
(arXiv:2505.20732). A progress estimator predicts each turn's contribution c_t to the task; it
is trained on recorded trajectories so that the contributions of a trajectory add up to its
outcome R (the sum of the env's per-turn rewards, as G-RA's O):

    L = 1/N sum_i ( sum_t c_{i,t} - R_i )^2                       (progress_loss)

During RL the turn reward mixes the contribution with a grounding signal g_t, whether the
action was one the env could execute (the `valid_action` step signal):

    r_t = alpha c_t + beta g_t                                    (spa_rewards)

Every turn gets its own estimate. (The authors' released script replaced them with one
trajectory-level value for every turn, which makes the method an outcome reward again.)

The estimator here (`ProgressEstimator`) is a frozen causal LM, the policy's base model, with a
small trained head. A turn's features are the backbone's last hidden states over the context the
policy had at that turn followed by its completion: the state at the completion's last token
(what the model makes of the whole history and this turn's action) concatenated with the mean
state over the completion's tokens (what this turn itself did, which the last token alone
dilutes in a long history). Freezing the backbone lets training compute the features once and
then fit the head for many epochs on the cache, which takes seconds even on a CPU; the paper
trains the LLM under its estimator as well, at the cost of a GPU run per estimator.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from agentgym.errors import AgentGymError
from agentgym.models import resolve_model
from agentgym.reward_models.base import RewardModel, RewardScores, Scorer
from agentgym.reward_models.compose import outcome_total
from agentgym.trainers.turn_encoder import (
    DEFAULT_MAX_CONTEXT_TOKENS,
    DEFAULT_TOKEN_BUDGET,
    Backbone,
    TurnEncoder,
    TurnEncoderError,
    backbone_reference,
    clip_context,
)
from agentgym.types import Trajectory

__all__ = [
    "ProgressEstimator",
    "ProgressHead",
    "ProgressModelError",
    "ProgressRewards",
    "clip_context",
    "contribution_diagnostics",
    "grounding",
    "progress_loss",
    "read_config",
    "spa_rewards",
    "train_progress",
]

CONFIG_NAME = "progress_estimator.json"
WEIGHTS_NAME = "head.safetensors"
FORMAT = "agentgym-spa-progress"
FORMAT_VERSION = 1
FEATURE_KIND = "last_token+completion_mean"

# Defaults; the reward block (factory.RewardSettings) repeats alpha and beta and documents them.
DEFAULT_ALPHA = 1.0
DEFAULT_BETA = 0.5
DEFAULT_HEAD_HIDDEN = 64


class ProgressModelError(AgentGymError, ValueError):
    """A progress estimator that cannot be trained, saved or loaded as asked (the message says the fix)."""


# ---- the formulas ---------------------------------------------------------------------------


def spa_rewards(contributions: Sequence[float], grounding: Sequence[float], alpha: float, beta: float) -> list[float]:
    """SPA's turn rewards from the turns' contributions and grounding signals.

        r_t = alpha c_t + beta g_t

    c_t is the progress estimator's contribution of turn t, g_t in {0, 1} whether its action was
    valid; one reward per turn, each from its own turn's values.
    """
    if len(contributions) != len(grounding):
        raise ValueError(f"contributions and grounding need one value per turn, got {len(contributions)} and {len(grounding)}")
    if not (math.isfinite(alpha) and math.isfinite(beta)):
        raise ValueError(f"alpha and beta must be finite, got {alpha} and {beta}")
    rewards = [alpha * float(c) + beta * float(g) for c, g in zip(contributions, grounding)]
    bad = [r for r in rewards if not math.isfinite(r)]
    if bad:
        raise ValueError(f"SPA rewards must be finite; contributions {list(contributions)} give {bad}")
    return rewards


def progress_loss(contributions_per_traj: Sequence[torch.Tensor], outcomes: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """SPA's progress loss: the mean squared gap between a trajectory's summed contributions and its outcome.

        L = 1/N sum_i ( sum_t c_{i,t} - R_i )^2        dL/dc_{i,t} = 2/N ( sum_t c_{i,t} - R_i )

    `contributions_per_traj[i]` holds c_{i,t} for every turn t of trajectory i (a 1-D tensor);
    differentiable in them. Every turn of a trajectory gets the same gradient, so which turn the
    credit goes to is decided by the features the turns share or not, across trajectories.
    """
    if len(contributions_per_traj) == 0:
        raise ValueError("progress_loss needs at least one trajectory")
    if len(contributions_per_traj) != len(outcomes):
        raise ValueError(f"{len(contributions_per_traj)} trajectories of contributions but {len(outcomes)} outcomes")
    sums = torch.stack([c.sum() for c in contributions_per_traj])
    target = torch.as_tensor(outcomes, dtype=sums.dtype, device=sums.device)
    return torch.mean((sums - target) ** 2)


def grounding(trajectory: Trajectory) -> list[float]:
    """g_t for every turn: 1 when its `valid_action` signal is true (a bool, or a non-zero number), else 0; missing: 0."""
    out = []
    for turn in trajectory.turns:
        value = turn.signals.get("valid_action")
        ok = value is True or (isinstance(value, (int, float)) and not isinstance(value, bool) and value != 0)
        out.append(1.0 if ok else 0.0)
    return out


# ---- the estimator --------------------------------------------------------------------------


class ProgressHead(nn.Module):
    """c = head((x - mean) / std): a linear layer, or a 2-layer MLP, on standardised turn features."""

    def __init__(self, in_features: int, hidden: int = DEFAULT_HEAD_HIDDEN) -> None:
        super().__init__()
        # Standardised with the training features' statistics, saved with the head: the backbone's
        # hidden states have a few huge dimensions that would otherwise dominate the first steps.
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))
        if hidden > 0:
            self.net: nn.Module = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        else:
            self.net = nn.Linear(in_features, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[N, F] features → [N] contributions."""
        return self.net((features - self.mean) / self.std).squeeze(-1)


class ProgressEstimator:
    """Per-turn progress c_t: a trained `ProgressHead` on a frozen causal LM's features of each turn.

    Contexts are the turn's recorded `prompt_token_ids + completion_token_ids` when the rollout
    kept them, else `trajectory.prompt(t)` through the tokenizer's chat template plus the
    completion and EOS (as SFT tokenises text-only turns). Recorded ids must come from the
    backbone's tokenizer: use the policy's base model. Contexts longer than
    `max_context_tokens` keep their end. Features are computed in batches of at most
    `token_budget` padded tokens under torch.no_grad, on the device and in the precision
    `agentgym.hardware.resolve_placement` picks; the head runs on the CPU in float32.
    """

    def __init__(
        self, backbone: str, *, head_hidden: int = DEFAULT_HEAD_HIDDEN, alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA, max_context_tokens: int = DEFAULT_MAX_CONTEXT_TOKENS,
        token_budget: int = DEFAULT_TOKEN_BUDGET, device: str = "auto",
    ) -> None:
        if max_context_tokens < 1 or token_budget < 1 or head_hidden < 0:
            raise ValueError("max_context_tokens and token_budget must be >= 1, head_hidden >= 0")
        self.backbone_name = backbone_reference(backbone)
        self.encoder = TurnEncoder(backbone, max_context_tokens=max_context_tokens, token_budget=token_budget,
                                   device=device, name=self.backbone_name)
        self.head_hidden = int(head_hidden)
        self.alpha, self.beta = float(alpha), float(beta)
        self.max_context_tokens = int(max_context_tokens)
        self.token_budget = int(token_budget)
        self.head = ProgressHead(self.feature_size, self.head_hidden).eval()

    @property
    def feature_size(self) -> int:
        """F = 2H: the last token's hidden state and the completion's mean hidden state."""
        return 2 * self.backbone.hidden_size

    # -- features --

    @property
    def backbone(self) -> Backbone:
        """The frozen causal LM under the head."""
        return self.encoder.backbone

    def turn_contexts(self, trajectory: Trajectory) -> list[tuple[list[int], int]]:
        """(context ids, completion length in them) for every turn, from recorded ids or the chat template."""
        try:
            return self.encoder.turn_contexts(trajectory)
        except TurnEncoderError as exc:
            raise ProgressModelError(str(exc)) from None

    def features(self, trajectories: Sequence[Trajectory]) -> list[torch.Tensor]:
        """Per trajectory, a [T, F] float32 CPU tensor of its turns' features (all turns batched together)."""
        return [f.turn for f in self.encoder.trajectory_features(trajectories)]

    # -- contributions --

    def contributions_from_features(self, features: Sequence[torch.Tensor]) -> list[list[float]]:
        """c_t for every turn, from per-trajectory features as `features` returns them."""
        if not features:
            return []
        with torch.no_grad():
            flat = self.head(torch.cat(list(features)))
        return [row.tolist() for row in torch.split(flat, [len(f) for f in features])]

    def contributions(self, trajectories: Sequence[Trajectory]) -> list[list[float]]:
        """c_t for every turn of every trajectory: one forward pass per batch of turns, then the head."""
        return self.contributions_from_features(self.features(trajectories))

    # -- training --

    def fit(
        self, features: Sequence[torch.Tensor], outcomes: Sequence[float], *, epochs: int, lr: float, seed: int,
        batch_size: int = 32, weight_decay: float = 0.01,
    ) -> list[float]:
        """Train a fresh head on cached features by minimising `progress_loss`; returns the training loss per epoch.

        Each epoch visits the trajectories in a seeded order, `batch_size` at a time (AdamW).
        Initialisation and order come from `seed` alone, so equal features give an equal head.
        """
        if epochs < 1 or lr <= 0 or batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}")
        if not features or len(features) != len(outcomes):
            raise ValueError(f"fit needs one outcome per trajectory, got {len(features)} trajectories and {len(outcomes)} outcomes")
        head = self.fresh_head(features, seed)
        order_rng = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
        targets = torch.tensor([float(r) for r in outcomes])
        losses = []
        head.train()
        for _ in range(epochs):
            total = 0.0
            for chunk in torch.randperm(len(features), generator=order_rng).split(batch_size):
                picked = [features[i] for i in chunk.tolist()]
                predicted = torch.split(head(torch.cat(picked)), [len(f) for f in picked])
                loss = progress_loss(predicted, targets[chunk])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(picked)
            losses.append(total / len(features))
        self.head = head.eval()
        return losses

    def fresh_head(self, features: Sequence[torch.Tensor], seed: int) -> ProgressHead:
        """An untrained head, initialised from `seed`, standardising with the statistics of `features`."""
        # A forked RNG: seeding the global one would change what the caller draws next.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = ProgressHead(self.feature_size, self.head_hidden)
        flat = torch.cat(list(features))
        head.mean.copy_(flat.mean(0))
        head.std.copy_(flat.std(0, unbiased=False).clamp_min(1e-6))
        return head.eval()

    def mse(self, features: Sequence[torch.Tensor], outcomes: Sequence[float]) -> float:
        """progress_loss of the current head on cached features (NaN for no trajectories)."""
        if not features:
            return math.nan
        with torch.no_grad():
            return float(progress_loss([self.head(f) for f in features], [float(r) for r in outcomes]))

    # -- storage --

    def save(self, directory: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
        """Write the head (safetensors) and progress_estimator.json (backbone, sizes, alpha, beta) to `directory`."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, str(out / WEIGHTS_NAME))
        config = {
            "format": FORMAT, "version": FORMAT_VERSION, "backbone": self.backbone_name,
            "hidden_size": self.backbone.hidden_size, "feature": FEATURE_KIND, "head_hidden": self.head_hidden,
            "alpha": self.alpha, "beta": self.beta, "max_context_tokens": self.max_context_tokens,
            **(extra or {}),
        }
        # The JSON last: a directory with it holds complete weights.
        (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, device: str = "auto") -> ProgressEstimator:
        """The estimator `save` wrote to `directory`, its backbone loaded again; ProgressModelError if there is none."""
        from safetensors.torch import load_file

        config = read_config(directory)
        estimator = cls(
            config["backbone"], head_hidden=int(config["head_hidden"]), alpha=float(config["alpha"]),
            beta=float(config["beta"]), max_context_tokens=int(config["max_context_tokens"]), device=device,
        )
        if estimator.backbone.hidden_size != int(config["hidden_size"]):
            raise ProgressModelError(
                f"{directory}: the head was trained on hidden size {config['hidden_size']}, but the backbone "
                f"{config['backbone']} has {estimator.backbone.hidden_size}; train the estimator again on this backbone"
            )
        estimator.head.load_state_dict(load_file(str(Path(directory) / WEIGHTS_NAME)))
        estimator.head.eval()
        return estimator


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """progress_estimator.json of an estimator directory, checked; ProgressModelError naming the fix otherwise."""
    path = Path(directory)
    fix = f"train one with `agentgym reward train-progress --data TRAJECTORIES.jsonl --out {path}`"
    if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
        raise ProgressModelError(f"{path} holds no SPA progress estimator (no {CONFIG_NAME} and {WEIGHTS_NAME}); {fix}")
    try:
        config = json.loads((path / CONFIG_NAME).read_text())
    except json.JSONDecodeError as exc:
        raise ProgressModelError(f"{path / CONFIG_NAME} is not valid JSON ({exc}); {fix}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ProgressModelError(f"{path / CONFIG_NAME} is not an SPA progress estimator's config; {fix}")
    if config.get("version") != FORMAT_VERSION or config.get("feature") != FEATURE_KIND:
        raise ProgressModelError(
            f"{path}: estimator format {config.get('version')} with features {config.get('feature')!r}, this agentgym "
            f"reads version {FORMAT_VERSION} with {FEATURE_KIND!r}; {fix}"
        )
    return config


# ---- training from trajectory files ---------------------------------------------------------


def _usable_trajectories(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[Trajectory], int, int]:
    """The trajectories of the files worth training on, in a canonical order, and how many had an error / no turns."""
    from agentgym.store import read_trajectories

    if not paths:
        raise ProgressModelError("say what to learn from: --data TRAJECTORIES.jsonl (repeatable)")
    kept: list[Trajectory] = []
    errors = empty = 0
    for path in paths:
        if not Path(path).is_file():
            raise ProgressModelError(f"trajectory file {str(path)!r} not found")
        for traj in read_trajectories(path):
            if traj.error is not None:
                errors += 1  # its outcome says nothing about its turns: the episode broke, it did not fail
            elif not traj.turns:
                empty += 1
            else:
                kept.append(traj)
    if not kept:
        raise ProgressModelError(
            f"no usable trajectories in {', '.join(str(p) for p in paths)} ({errors} with an error, {empty} without turns)"
        )
    # Files list episodes in the order they finished, which varies with concurrency; sorting makes
    # the seeded split and shuffle, and so the estimator, the same for the same episodes.
    kept.sort(key=lambda t: (t.env_id, t.task_id, -1 if t.seed is None else t.seed, t.sample_index, t.trajectory_id))
    return kept, errors, empty


def _split_by_group(trajectories: Sequence[Trajectory], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Train and validation indices; whole groups go to validation, so it measures tasks the head never saw."""
    if not 0.0 <= val_fraction < 1.0:
        raise ProgressModelError(f"val_fraction must be in [0, 1), got {val_fraction}")
    groups = sorted({t.group_id for t in trajectories})
    random.Random(seed).shuffle(groups)
    n_val = min(round(len(groups) * val_fraction), len(groups) - 1)  # at least one group left to train on
    val_groups = set(groups[:n_val])
    train = [i for i, t in enumerate(trajectories) if t.group_id not in val_groups]
    val = [i for i, t in enumerate(trajectories) if t.group_id in val_groups]
    return train, val


def _writable_out(out_dir: str | os.PathLike[str]) -> Path:
    """`out_dir`, created; refused when it already holds an estimator or cannot be written."""
    out = Path(out_dir)
    if (out / CONFIG_NAME).exists():
        raise ProgressModelError(f"{out} already holds a progress estimator; pick another --out so nothing is overwritten")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProgressModelError(f"cannot write the estimator to {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK):
        raise ProgressModelError(f"cannot write the estimator to {out}: permission denied")
    return out


def train_progress(
    trajectory_files: Sequence[str | os.PathLike[str]], backbone: str, out_dir: str | os.PathLike[str], *,
    epochs: int = 200, lr: float = 1e-3, seed: int = 0, val_fraction: float = 0.1,
    alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA, head_hidden: int = DEFAULT_HEAD_HIDDEN,
    max_context_tokens: int = DEFAULT_MAX_CONTEXT_TOKENS, batch_size: int = 32, device: str = "auto",
) -> dict[str, float]:
    """Train a progress estimator on recorded trajectories and save it to `out_dir`; returns its metrics.

    Trajectories with an error (or no turns) are skipped and counted. The features are computed
    once; the head then trains `epochs` passes over them. Metrics: train and validation MSE
    (`progress_loss`) before and after training, trajectory and turn counts, and seconds spent on
    features and on the head. Deterministic given `seed` (and the machine's arithmetic).
    """
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ProgressModelError(f"epochs and batch size must be at least 1 and lr above 0, got {epochs}, {batch_size} and {lr}")
    trajectories, errors, empty = _usable_trajectories(trajectory_files)
    train_idx, val_idx = _split_by_group(trajectories, val_fraction, seed)
    resolve_model(backbone)  # an unknown backbone is refused before anything is written
    out = _writable_out(out_dir)
    estimator = ProgressEstimator(backbone, head_hidden=head_hidden, alpha=alpha, beta=beta,
                                  max_context_tokens=max_context_tokens, device=device)
    started = time.perf_counter()
    features = estimator.features(trajectories)
    feature_seconds = time.perf_counter() - started
    outcomes = [outcome_total(t) for t in trajectories]
    train_f, train_r = [features[i] for i in train_idx], [outcomes[i] for i in train_idx]
    val_f, val_r = [features[i] for i in val_idx], [outcomes[i] for i in val_idx]

    started = time.perf_counter()
    # "Before" is the very head fit starts from: same seed, same statistics.
    estimator.head = estimator.fresh_head(train_f, seed)
    before = (estimator.mse(train_f, train_r), estimator.mse(val_f, val_r))
    estimator.fit(train_f, train_r, epochs=epochs, lr=lr, seed=seed, batch_size=batch_size)
    fit_seconds = time.perf_counter() - started
    metrics = {
        "train_trajectories": float(len(train_idx)), "val_trajectories": float(len(val_idx)),
        "turns": float(sum(t.num_turns for t in trajectories)),
        "skipped_errors": float(errors), "skipped_empty": float(empty),
        "train_mse_initial": before[0], "train_mse": estimator.mse(train_f, train_r),
        "val_mse_initial": before[1], "val_mse": estimator.mse(val_f, val_r),
        "feature_seconds": feature_seconds, "fit_seconds": fit_seconds,
    }
    training = {"files": [str(p) for p in trajectory_files], "epochs": epochs, "lr": lr, "seed": seed,
                "val_fraction": val_fraction, "metrics": {k: _json_number(v) for k, v in metrics.items()}}
    estimator.save(out, {"training": training})
    return metrics


def _json_number(value: float) -> float | None:
    """JSON has no NaN: an absent validation set is recorded as null."""
    return None if math.isnan(value) else value


# ---- the reward model -----------------------------------------------------------------------


class ProgressRewards(RewardModel):
    """SPA: r_t = alpha c_t + beta g_t, with c_t the progress estimator's contribution of turn t.

    The estimator in `progress_model` (a directory `train_progress` wrote) is loaded once. alpha
    and beta default to those saved with it; the reward block passes its own. Every turn of the
    group is scored in one batched pass (in a worker thread, so the event loop keeps running).
    """

    name: ClassVar[str] = "spa"

    def __init__(
        self, progress_model: str | os.PathLike[str], *, alpha: float | None = None, beta: float | None = None,
        device: str = "auto",
    ) -> None:
        self.estimator = ProgressEstimator.load(progress_model, device=device)
        self.alpha = self.estimator.alpha if alpha is None else float(alpha)
        self.beta = self.estimator.beta if beta is None else float(beta)
        if not (math.isfinite(self.alpha) and math.isfinite(self.beta)):
            raise ValueError(f"alpha and beta must be finite, got {self.alpha} and {self.beta}")

    async def score(self, group: Sequence[Trajectory], scorer: Scorer | None = None) -> RewardScores:
        """r_t = alpha c_t + beta g_t for every turn of the group, with calibration and spread diagnostics."""
        contributions = await asyncio.to_thread(self.estimator.contributions, group)
        rewards = [spa_rewards(c, grounding(t), self.alpha, self.beta) for c, t in zip(contributions, group)]
        return RewardScores(rewards, contribution_diagnostics(contributions, [outcome_total(t) for t in group]))


def contribution_diagnostics(contributions: Sequence[Sequence[float]], outcomes: Sequence[float]) -> dict[str, float]:
    """Mean c_t; mean |c_t - mean of its trajectory's c| (turns differ); mean (sum_t c_t - R) (calibration)."""
    values = [c for row in contributions for c in row]
    spread = [abs(c - math.fsum(row) / len(row)) for row in contributions if row for c in row]
    gaps = [math.fsum(row) - r for row, r in zip(contributions, outcomes) if row]

    def mean(xs: Sequence[float]) -> float:
        return math.fsum(xs) / len(xs) if xs else math.nan

    return {"contribution_mean": mean(values), "contribution_spread": mean(spread), "calibration_gap": mean(gaps)}
