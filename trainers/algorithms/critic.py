"""ArCHer's utterance-level critic: twin Q(s, a) and V(s) heads, their TD targets and the actor's advantage.

Zhou et al. 2024, "ArCHer: Training Language Model Agents via Hierarchical Multi-Turn RL"
(arXiv:2402.19446). A turn is one high-level step: s_t the context the policy had, a_t its whole
utterance, r_t the turn's reward, d_t = 1 at the episode's last turn. Bars are target networks.

    Q target    y_Q = r_t + gamma (1 - d_t) min(V̄_1, V̄_2)(s_{t+1})              (q_targets)
    V target    y_V = min(Q̄_1, Q̄_2)(s_t, a_t)                                   (v_targets)
                (the buffer's action a_t: the paper's implementation offers it beside sampling
                 a' from the current policy; with a frozen encoder it keeps every feature cached)
    losses      L_Q = mean (Q_1 - y_Q)^2 + mean (Q_2 - y_Q)^2,   L_V likewise    (critic_losses)
    advantage   A_t = min(Q_1, Q_2)(s_t, a_t) - min(V_1, V_2)(s_t)                (turn_advantage)
    targets     θ̄ ← τ θ + (1 - τ) θ̄ after every critic step                      (soft_update_)

The heads read features from a frozen copy of the policy's starting backbone
(trainers/turn_encoder.py): s is the hidden state at the prompt's last token, (s, a) that
joined to the utterance's features, so a transition is a few thousand floats in the buffer.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Standardizer", "TwinCritic", "critic_losses", "mlp_head", "q_targets", "soft_update_", "turn_advantage", "v_targets"]


def q_targets(rewards: torch.Tensor, dones: torch.Tensor, next_v: torch.Tensor, gamma: float) -> torch.Tensor:
    """y_Q = r + gamma (1 - d) V̄(s'), with V̄(s') = min over the twin target V heads, given as `next_v`."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    return rewards + gamma * (1.0 - dones) * next_v


def v_targets(target_q1: torch.Tensor, target_q2: torch.Tensor) -> torch.Tensor:
    """y_V = min(Q̄_1, Q̄_2)(s, a): the pessimistic twin estimate of the action taken."""
    return torch.minimum(target_q1, target_q2)


def critic_losses(
    q: tuple[torch.Tensor, torch.Tensor], v: tuple[torch.Tensor, torch.Tensor], y_q: torch.Tensor, y_v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_Q, L_V): each twin's mean squared error against its (detached) target, the twins summed."""
    y_q, y_v = y_q.detach(), y_v.detach()
    loss_q = ((q[0] - y_q) ** 2).mean() + ((q[1] - y_q) ** 2).mean()
    loss_v = ((v[0] - y_v) ** 2).mean() + ((v[1] - y_v) ** 2).mean()
    return loss_q, loss_v


def turn_advantage(
    q1: torch.Tensor, q2: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor
) -> torch.Tensor:
    """A = min(Q_1, Q_2)(s, a) - min(V_1, V_2)(s), one value per turn."""
    return torch.minimum(q1, q2) - torch.minimum(v1, v2)


@torch.no_grad()
def soft_update_(target: nn.Module, online: nn.Module, tau: float) -> None:
    """θ̄ ← τ θ + (1 - τ) θ̄ for every parameter (buffers are copied), in place."""
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(1.0 - tau).add_(o, alpha=tau)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)


class Standardizer(nn.Module):
    """(x - mean) / std with statistics fixed from the first data it is fitted on, saved with the critic.

    A backbone's hidden states have a few dimensions orders of magnitude larger than the rest;
    unstandardised, they would set the heads' first steps alone.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("std", torch.ones(size))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def fit(self, x: torch.Tensor) -> None:
        """Fix mean and std from `x` [N, size] (N ≥ 2), once; later calls leave them as they are."""
        if bool(self.fitted) or len(x) < 2:
            return
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0, unbiased=False).clamp_min(1e-6))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x standardised."""
        return (x - self.mean) / self.std


def mlp_head(size: int, hidden: int) -> nn.Sequential:
    """A value head with 2 hidden layers: size → hidden → hidden → 1."""
    return nn.Sequential(nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))


class TwinCritic(nn.Module):
    """Q_1, Q_2 over (state, turn) features and V_1, V_2 over state features, each a small MLP."""

    def __init__(self, state_size: int, turn_size: int, hidden: int = 256) -> None:
        super().__init__()
        self.state_norm = Standardizer(state_size)
        self.turn_norm = Standardizer(turn_size)
        self.q1, self.q2 = mlp_head(state_size + turn_size, hidden), mlp_head(state_size + turn_size, hidden)
        self.v1, self.v2 = mlp_head(state_size, hidden), mlp_head(state_size, hidden)

    def fit_standardizers(self, state: torch.Tensor, turn: torch.Tensor) -> None:
        """Fix the input statistics from the first features seen (see Standardizer)."""
        self.state_norm.fit(state)
        self.turn_norm.fit(turn)

    def q(self, state: torch.Tensor, turn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q_1, Q_2)(s, a), each [N]."""
        x = torch.cat([self.state_norm(state), self.turn_norm(turn)], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)

    def v(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(V_1, V_2)(s), each [N]."""
        x = self.state_norm(state)
        return self.v1(x).squeeze(-1), self.v2(x).squeeze(-1)
