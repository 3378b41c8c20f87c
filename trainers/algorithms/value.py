"""PPO's value function over turns: GAE advantages, λ-returns, the clipped value loss and its diagnostics.

Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage
Estimation" (arXiv:1506.02438), and Schulman et al. 2017, "Proximal Policy Optimization
Algorithms" (arXiv:1707.06347), with a turn as the time step: s_t is the context the policy had
at turn t of an episode of T turns, r_t the turn's reward, and V(s_T) = 0 because the episode is
over after its last turn (terminated, or out of turns: the turn budget is part of the task, as
ArCHer's transitions count it).

    TD residual     δ_t = r_t + γ V(s_{t+1}) − V(s_t)                              (gae)
    advantage       A_t = Σ_{k≥0} (γλ)^k δ_{t+k}  =  δ_t + γλ A_{t+1},  A_T = 0
    value target    R_t = A_t + V(s_t)   (the λ-return; λ = 1 gives G_t, λ = 0 r_t + γV(s_{t+1}))
    value loss      L_V = ½ mean_t max( (V_t − R_t)², (V_old,t + clip(V_t − V_old,t, −ε, ε) − R_t)² )
                    (value_loss; without ε: ½ mean (V_t − R_t)²)
    explained var.  1 − Var(R − V_old) / Var(R)                                    (explained_variance)

V_old are the values the advantages were computed with, before this step's value update.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from agentgym.trainers.algorithms.critic import Standardizer, mlp_head

__all__ = ["ValueHead", "explained_variance", "gae", "value_loss"]


def gae(rewards: Sequence[float], values: Sequence[float], gamma: float, lam: float) -> tuple[list[float], list[float]]:
    """(A_t, R_t) of one episode's turns from its rewards r_t and values V(s_t), V(s_T) = 0."""
    if len(rewards) != len(values):
        raise ValueError(f"{len(rewards)} rewards for {len(values)} values")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    advantages = [0.0] * len(rewards)
    running, next_value = 0.0, 0.0
    for t in reversed(range(len(rewards))):
        delta = float(rewards[t]) + gamma * next_value - float(values[t])
        running = delta + gamma * lam * running
        advantages[t] = running
        next_value = float(values[t])
    return advantages, [a + float(v) for a, v in zip(advantages, values)]


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_V, fraction of turns where the clipped term was the larger) for values [N] against returns [N]."""
    if not values.shape == old_values.shape == returns.shape:
        raise ValueError(f"shapes differ: values {tuple(values.shape)}, old {tuple(old_values.shape)}, "
                         f"returns {tuple(returns.shape)}")
    returns, old_values = returns.detach(), old_values.detach()
    unclipped = (values - returns) ** 2
    if clip is None:
        return 0.5 * unclipped.mean(), torch.zeros(())
    if clip <= 0:
        raise ValueError(f"the value clip must be positive, got {clip}")
    clipped = (old_values + (values - old_values).clamp(-clip, clip) - returns) ** 2
    return 0.5 * torch.maximum(unclipped, clipped).mean(), (clipped > unclipped).float().mean()


def explained_variance(old_values: torch.Tensor, returns: torch.Tensor) -> float:
    """1 − Var(R − V_old) / Var(R): 1 a perfect value function, 0 no better than a constant; NaN if Var(R) = 0."""
    var = float(returns.var(unbiased=False))
    if var == 0.0:
        return float("nan")
    return 1.0 - float((returns - old_values).var(unbiased=False)) / var


class ValueHead(nn.Module):
    """V(s): a standardiser and a small MLP over a turn's state features."""

    def __init__(self, state_size: int, hidden: int = 256) -> None:
        super().__init__()
        self.state_norm = Standardizer(state_size)
        self.v = mlp_head(state_size, hidden)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """V(s) of each row of `state` [N, H], as [N]."""
        return self.v(self.state_norm(state)).squeeze(-1)
