"""One optimisation step on a batch of turn samples: policy gradient (PPO-clip) with optional KL and EPO terms, or SFT.

The batch is split into micro-batches by a token budget and gradients accumulate over them:
every loss term is normalised by the whole batch's token/sequence count, so the summed
micro-batch gradients equal the full-batch gradient and batch size never sets memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from agentgym.trainers import objectives
from agentgym.trainers.batches import TurnSample, batch_totals, micro_batches
from agentgym.hardware import resolve_precision
from agentgym.trainers.policy_model import TrainableModel, mean_token_entropy, score_policy_tokens


class EPOConfig(BaseModel):
    """Entropy-regularised policy optimisation for multi-turn agents (EPO, Xu et al. 2025)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    entropy_coef: float = Field(0.01, ge=0, description="Base weight β of the trajectory-level entropy bonus.")
    phases: list[tuple[float, float]] = Field(
        default_factory=lambda: [(0.0, 1.0), (0.3, 0.5), (0.7, 0.1)],
        description="(start fraction of training, multiplier of β): more exploration early, less late.",
    )
    smoothing_coef: float = Field(1.0, ge=0, description="Weight α of the entropy-smoothing penalty.")
    band: float = Field(0.2, ge=0, description="Entropy may stray this fraction of its recent average unpenalised.")
    window: int = Field(10, ge=1, description="Past steps whose mean entropy forms the average.")


class UpdateConfig(BaseModel):
    """How a batch of rollouts updates the policy."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    epochs: int = Field(1, ge=1, description="Passes over each batch (PPO-style reuse; ratios then leave 1).")
    clip_low: float = Field(0.2, gt=0, description="PPO clip ε below 1.")
    clip_high: float | None = Field(None, gt=0, description="PPO clip ε above 1 (DAPO's clip-higher); default clip_low.")
    aggregation: Literal["token", "sequence"] = Field(
        "token", description="token: every policy token weighs the same; sequence: every turn weighs the same."
    )
    kl_coef: float = Field(0.0, ge=0, description="Weight of KL(π‖π_ref) to the frozen starting model; 0 disables it.")
    micro_batch_tokens: int = Field(4096, ge=64, description="Padded tokens per forward/backward pass.")
    precision: Literal["auto", "fp32", "bf16-autocast"] = Field(
        "auto", description="auto: bf16-autocast where the device computes bfloat16 natively, else fp32 "
        "(a CPU that emulates bf16 runs it >100x slower); agentgym.hardware decides.",
    )
    tis_cap: float | None = Field(
        2.0, gt=0, description="Truncated importance sampling: the PPO ratio is taken against the trainer's own "
        "logprobs before the update, and each token is weighted by min(π_trainer/π_rollout, tis_cap), correcting for "
        "rollouts played by older weights (rollout.max_staleness) or by another engine's numerics (vLLM); "
        "None: the ratio is taken against the rollout's logprobs directly, uncorrected.",
    )
    epo: EPOConfig = Field(default_factory=EPOConfig)


def make_optimizer(trainable: TrainableModel, config: UpdateConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (adapters only under LoRA)."""
    params = [p for p in trainable.model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def policy_gradient_step(
    trainable: TrainableModel,
    optimizer: torch.optim.Optimizer,
    samples: Sequence[TurnSample],
    config: UpdateConfig,
    *,
    step: int,
    total_steps: int,
    entropy_history: list[float],
    ref_model: Any = None,
) -> dict[str, float]:
    """Update the policy on `samples` (config.epochs passes); returns the step's metrics.

    Appends this step's mean policy entropy to `entropy_history` (EPO's smoothing reads it).
    """
    num_tokens, num_sequences = batch_totals(samples)
    if num_tokens == 0:
        raise ValueError("no policy tokens to train on")
    epo = config.epo
    beta = objectives.epo_entropy_weight(step, total_steps, epo.entropy_coef, epo.phases) if epo.enabled else 0.0
    history = entropy_history[-epo.window:]
    device = trainable.device
    precision = resolve_precision(config.precision, device)
    params = [p for p in trainable.model.parameters() if p.requires_grad]
    sums: dict[str, float] = {}
    first_epoch_entropy = math.nan
    # The proximal policy of TIS: the trainer's logprobs before this update, one tensor per micro-batch
    # (micro-batches come in the same order every epoch). In epoch 0 they are the current logprobs.
    proximal: list[torch.Tensor] = []
    trainable.model.train()
    try:
        for epoch in range(config.epochs):
            slope, penalty = 0.0, 0.0
            if epo.enabled and epo.smoothing_coef > 0 and history:
                slope, penalty = smoothing_slope(trainable, samples, config, history)
            optimizer.zero_grad(set_to_none=True)
            totals = dict.fromkeys(("loss/policy", "loss/kl", "loss/entropy_bonus", "loss/entropy_smoothing",
                                    "policy/clip_fraction", "policy/ratio_mean", "policy/approx_kl",
                                    "policy/kl", "policy/entropy"), 0.0)
            if config.tis_cap is not None:
                totals.update(dict.fromkeys(("policy/tis_ratio_mean", "policy/tis_ratio_max", "policy/tis_truncated_fraction"), 0.0))
            batches = micro_batches(samples, config.micro_batch_tokens, trainable.pad_token_id, device=device)
            for index, mb in enumerate(batches):
                logprobs, entropy = score_policy_tokens(trainable.model, mb, precision=precision)
                assert entropy is not None
                old, weights = mb.old_logprobs, None
                if config.tis_cap is not None:
                    if epoch == 0:
                        proximal.append(logprobs.detach())
                    old = proximal[index]
                    weights, tis = objectives.truncated_importance_weights(
                        old, mb.old_logprobs, mb.loss_mask, cap=config.tis_cap, mode=config.aggregation,
                        num_tokens=num_tokens, num_sequences=num_sequences,
                    )
                    totals["policy/tis_ratio_mean"] += float(tis["ratio_mean"])
                    totals["policy/tis_truncated_fraction"] += float(tis["truncated_fraction"])
                    totals["policy/tis_ratio_max"] = max(totals["policy/tis_ratio_max"], float(tis["ratio_max"]))
                pg, stats = objectives.ppo_clip_loss(
                    logprobs, old, mb.advantages, mb.loss_mask,
                    clip_low=config.clip_low, clip_high=config.clip_high, mode=config.aggregation,
                    num_tokens=num_tokens, num_sequences=num_sequences, token_weights=weights,
                )
                loss = pg
                mean_entropy_part = (entropy * mb.loss_mask).sum() / num_tokens  # this micro-batch's share of H
                if config.kl_coef > 0 and ref_model is not None:
                    with torch.no_grad():
                        ref_logprobs, _ = score_policy_tokens(ref_model, mb, with_entropy=False, precision=precision)
                    kl = objectives.aggregate(
                        objectives.kl_penalty(logprobs, ref_logprobs), mb.loss_mask, config.aggregation,
                        num_tokens=num_tokens, num_sequences=num_sequences,
                    )
                    loss = loss + config.kl_coef * kl
                    totals["loss/kl"] += float(config.kl_coef * kl.detach())
                    totals["policy/kl"] += float(kl.detach())
                if epo.enabled:
                    bonus = objectives.trajectory_entropy_bonus(entropy, mb.loss_mask, mb.row_weights)
                    # P(H) is not linear in the batch entropy H = Σ_mb h_mb, so micro-batch terms cannot simply
                    # be summed. With H known (smoothing_slope, from a no-grad pass), P'(H)·h_mb summed over
                    # micro-batches has exactly the gradient of P(H) at the current weights.
                    loss = loss - beta * bonus + slope * mean_entropy_part
                    totals["loss/entropy_bonus"] += float(beta * bonus.detach())
                loss.backward()
                totals["loss/policy"] += float(pg.detach())
                totals["policy/entropy"] += float(mean_entropy_part.detach())
                for key in ("clip_fraction", "ratio_mean", "approx_kl"):
                    totals[f"policy/{key}"] += float(stats[key])
            totals["loss/entropy_smoothing"] = penalty
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            if epoch == 0:
                first_epoch_entropy = totals["policy/entropy"]
            totals["policy/grad_norm"] = float(grad_norm)
            for key, value in totals.items():
                sums[key] = sums.get(key, 0.0) + value / config.epochs
    finally:
        optimizer.zero_grad(set_to_none=True)
        trainable.model.eval()
    # The entropy the policy had when it sampled this batch (before this step's updates moved it).
    entropy_history.append(first_epoch_entropy)
    window = entropy_history[-epo.window:]
    mean = sum(window) / len(window)
    sums["policy/entropy"] = first_epoch_entropy
    sums["policy/entropy_var"] = sum((h - mean) ** 2 for h in window) / len(window)
    if not (config.kl_coef > 0 and ref_model is not None):
        sums.pop("policy/kl"), sums.pop("loss/kl")  # not measured: a 0 would plot as a real KL of 0
    if not epo.enabled:
        sums.pop("loss/entropy_bonus"), sums.pop("loss/entropy_smoothing")
    sums["epo/entropy_weight"] = beta
    sums["train/tokens"] = float(num_tokens)
    sums["train/sequences"] = float(num_sequences)
    return sums


def smoothing_slope(
    trainable: TrainableModel, samples: Sequence[TurnSample], config: UpdateConfig, history: Sequence[float]
) -> tuple[float, float]:
    """EPO's smoothing penalty P(H) at the batch's current mean entropy H, and its slope dP/dH.

    H needs a forward pass over the whole batch (no gradient) before the accumulating pass.
    """
    mean = mean_token_entropy(trainable.model, samples, config.micro_batch_tokens, trainable.pad_token_id, config.precision)
    h = torch.tensor(mean, requires_grad=True)
    penalty = objectives.entropy_smoothing_penalty(h, history, band=config.epo.band, coef=config.epo.smoothing_coef)
    (slope,) = torch.autograd.grad(penalty, h)
    return float(slope), float(penalty.detach())


def sft_step(
    trainable: TrainableModel, optimizer: torch.optim.Optimizer, samples: Sequence[TurnSample], config: UpdateConfig
) -> dict[str, float]:
    """One supervised step: maximise log p of the policy tokens (token-mean negative log-likelihood)."""
    num_tokens, num_sequences = batch_totals(samples)
    if num_tokens == 0:
        raise ValueError("no policy tokens to train on")
    params = [p for p in trainable.model.parameters() if p.requires_grad]
    device = trainable.device
    precision = resolve_precision(config.precision, device)
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    trainable.model.train()
    try:
        for mb in micro_batches(samples, config.micro_batch_tokens, trainable.pad_token_id, device=device):
            logprobs, _ = score_policy_tokens(trainable.model, mb, with_entropy=False, precision=precision)
            loss = objectives.aggregate(
                -logprobs, mb.loss_mask, config.aggregation, num_tokens=num_tokens, num_sequences=num_sequences
            )
            loss.backward()
            total += float(loss.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
    finally:
        optimizer.zero_grad(set_to_none=True)
        trainable.model.eval()
    return {"sft/loss": total, "policy/grad_norm": float(grad_norm), "train/tokens": float(num_tokens)}
