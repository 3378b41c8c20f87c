"""ArCHer: an off-policy utterance-level critic (twin Q and V) whose advantage trains the token-level actor.

Zhou et al. 2024, "ArCHer" (arXiv:2402.19446). Each training step:

  1. the step's turns are encoded once by a frozen copy of the starting policy's backbone
     (trainers/turn_encoder.py) and added to the replay buffer (replay.py) with their per-turn
     rewards from the run's reward model;
  2. the critic takes `critic_updates` minibatch steps on transitions drawn from the whole
     buffer, old steps' turns included (off-policy), towards the TD targets of critic.py, the
     target heads following by soft updates;
  3. the step's turns get A_t = min(Q_1, Q_2)(s_t, a_t) - min(V_1, V_2)(s_t), broadcast to the
     turn's tokens by the shared PPO-clipped actor update (trainers/update.py), which also
     carries EPO and KL when configured.

The actor waits `warmup_steps` steps while the critic learns, then updates every `actor_every`
steps. The critic, its targets and its optimiser are saved in every checkpoint (critic.pt); the
buffer lives in run_dir/replay and is read back on --resume.

The encoder is frozen, the paper's critic is a fine-tuned RoBERTa: freezing keeps a transition's
features computable once, so a critic step costs a few small matrix products rather than a
forward and backward pass of a language model, which is what makes many critic steps per actor
step affordable on a CPU. A trained encoder is not offered.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from agentgym.trainers.algorithms.base import AlgorithmAdvantages, FrozenFeatureCritic, critic_advantage_stats, whiten
from agentgym.trainers.algorithms.critic import TwinCritic, critic_losses, q_targets, soft_update_, turn_advantage, v_targets
from agentgym.trainers.algorithms.replay import ReplayBuffer, Transitions
from agentgym.types import Trajectory

if TYPE_CHECKING:
    from agentgym.trainers.config import TrainConfig
    from agentgym.trainers.policy_model import TrainableModel
    from agentgym.trainers.turn_encoder import TurnEncoder, TurnFeatures

__all__ = ["ArCHer", "ArcherConfig", "transitions_of"]

CRITIC_FILE = "critic.pt"


class ArcherConfig(BaseModel):
    """ArCHer's critic and schedule (`archer.KEY=VALUE`); the discount is the run's `gamma`."""

    model_config = ConfigDict(extra="forbid")

    encoder: Literal["frozen"] = Field(
        "frozen", description="frozen: the critic's heads read a frozen copy of the starting policy's backbone "
        "(features computed once per turn); the only encoder offered.",
    )
    encoder_model: str | None = Field(None, description="The backbone the critic reads; default: the run's starting model.")
    hidden: int = Field(256, ge=1, description="Width of each Q and V head's two hidden layers.")
    lr: float = Field(1e-3, gt=0, description="The critic's AdamW learning rate.")
    critic_updates: int = Field(50, ge=1, description="Critic minibatch steps per training step.")
    batch_size: int = Field(64, ge=1, description="Transitions per critic minibatch, drawn from the whole buffer.")
    tau: float = Field(0.1, gt=0, le=1, description="Soft update of the target heads: θ̄ ← τθ + (1 − τ)θ̄.")
    warmup_steps: int = Field(1, ge=0, description="Training steps at the start in which only the critic learns.")
    actor_every: int = Field(1, ge=1, description="After the warm-up, update the actor every N steps (the critic every step).")
    buffer_capacity: int = Field(4096, ge=1, description="Newest transitions (turns) the replay buffer keeps.")
    normalize_advantages: bool = Field(
        False, description="Whiten the step's advantages (mean 0, std 1); off: the critic's values as they are, as the paper."
    )
    max_grad_norm: float = Field(1.0, gt=0)


def transitions_of(features: Sequence[TurnFeatures], rewards: Sequence[Sequence[float]]) -> Transitions:
    """(s_t, x_t, r_t, s_{t+1}, d_t) for every turn: s_{t+1} the next turn's state, d = 1 on each last turn.

    The last turn of an episode ends it (d = 1) whether the env terminated it or its turn budget
    ran out: the turn budget is part of the task, and no state exists after it to bootstrap from.
    """
    if len(features) != len(rewards):
        raise ValueError(f"{len(features)} trajectories of features for {len(rewards)} of rewards")
    parts = []
    for f, r in zip(features, rewards):
        n = len(f.state)
        if len(r) != n:
            raise ValueError(f"a trajectory of {n} turns was given {len(r)} rewards")
        if n == 0:
            continue
        next_state = torch.cat([f.state[1:], torch.zeros_like(f.state[:1])])
        done = torch.zeros(n)
        done[-1] = 1.0
        parts.append(Transitions(f.state, f.turn, next_state, torch.tensor([float(x) for x in r]), done))
    if not parts:
        raise ValueError("no turns to make transitions of")
    return Transitions.concat(parts)


class ArCHer(FrozenFeatureCritic):
    """ArCHer: twin Q/V critic trained off-policy from a replay buffer; its advantage drives the actor."""

    name: ClassVar[str] = "archer"
    summary: ClassVar[str] = "off-policy twin Q/V critic over turns, its advantage for the token actor"

    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.settings: ArcherConfig = cfg.archer
        self.encoder: TurnEncoder | None = None
        self.critic: TwinCritic | None = None
        self.target: TwinCritic | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.buffer = ReplayBuffer(self.run_dir / "replay", self.settings.buffer_capacity)
        self.device = torch.device("cpu")

    def setup(self, trainable: TrainableModel, step: int, checkpoint: Path | None) -> None:
        """The frozen encoder, the critic and its targets on the trainer's device, and the buffer up to `step`."""
        s = self.settings
        self.device = trainable.device
        self.encoder = self.frozen_encoder(trainable, s.encoder_model)
        size = self.encoder.hidden_size
        with torch.random.fork_rng(devices=[]):  # the critic's initialisation leaves the run's RNG stream alone
            torch.manual_seed(self.cfg.seed)
            self.critic = TwinCritic(size, 2 * size, s.hidden).to(self.device)
        self.target = copy.deepcopy(self.critic).requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.critic.parameters(), lr=s.lr)
        if checkpoint is not None and (checkpoint / CRITIC_FILE).is_file():
            blob = torch.load(checkpoint / CRITIC_FILE, map_location=self.device, weights_only=True)
            self.critic.load_state_dict(blob["critic"])
            self.target.load_state_dict(blob["target"])
            self.optimizer.load_state_dict(blob["optimizer"])
        self.buffer.load(step)

    def updates_actor(self, step: int) -> bool:
        """After `warmup_steps` critic-only steps, every `actor_every`-th step."""
        s = self.settings
        return step >= s.warmup_steps and (step - s.warmup_steps) % s.actor_every == 0

    def advantages(
        self, step: int, trajectories: Sequence[Trajectory], rewards: Sequence[Sequence[float]],
        estimated: Sequence[Sequence[float]],
    ) -> AlgorithmAdvantages:
        """Encode the step's turns, add them to the buffer, train the critic, and return its turn advantages."""
        if self.encoder is None or self.critic is None:
            raise RuntimeError("ArCHer.setup must run before advantages")
        if not trajectories:
            return AlgorithmAdvantages([], {})
        started = time.perf_counter()
        features = self.encoder.trajectory_features(trajectories)
        metrics = {"time/critic_encode": time.perf_counter() - started}
        self.buffer.add(step + 1, transitions_of(features, rewards))
        started = time.perf_counter()
        metrics.update(self._train_critic(step))
        metrics["time/critic_update"] = time.perf_counter() - started
        values = self._advantages(features)
        metrics.update(critic_advantage_stats(trajectories, values))
        metrics["replay/transitions"] = float(len(self.buffer))
        return AlgorithmAdvantages(values, metrics)

    def _train_critic(self, step: int) -> dict[str, float]:
        """`critic_updates` TD steps on minibatches of the buffer; the losses, values and TD error, averaged."""
        assert self.critic is not None and self.target is not None and self.optimizer is not None
        s = self.settings
        pool = self.buffer.all()
        fresh = not bool(self.critic.state_norm.fitted)
        self.critic.fit_standardizers(pool.state.to(self.device), pool.turn.to(self.device))
        if fresh:  # the targets start as the critic does, input statistics included
            self.target.load_state_dict(self.critic.state_dict())
        # A generator per step from the run's seed: a resumed step draws the same minibatches.
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        sums = dict.fromkeys(("critic/q_loss", "critic/v_loss", "critic/td_error", "critic/q_mean", "critic/v_mean"), 0.0)
        self.critic.train()
        for _ in range(s.critic_updates):
            batch = self.buffer.sample(s.batch_size, generator).to(self.device)
            with torch.no_grad():
                next_v = torch.minimum(*self.target.v(batch.next_state))
                y_q = q_targets(batch.reward, batch.done, next_v, self.cfg.gamma)
                y_v = v_targets(*self.target.q(batch.state, batch.turn))
            q, v = self.critic.q(batch.state, batch.turn), self.critic.v(batch.state)
            loss_q, loss_v = critic_losses(q, v, y_q, y_v)
            self.optimizer.zero_grad(set_to_none=True)
            (loss_q + loss_v).backward()
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), s.max_grad_norm)
            self.optimizer.step()
            soft_update_(self.target, self.critic, s.tau)
            sums["critic/q_loss"] += float(loss_q.detach())
            sums["critic/v_loss"] += float(loss_v.detach())
            sums["critic/td_error"] += float((q[0].detach() - y_q).abs().mean())
            sums["critic/q_mean"] += float(torch.minimum(*q).detach().mean())
            sums["critic/v_mean"] += float(torch.minimum(*v).detach().mean())
        self.critic.eval()
        return {k: v / s.critic_updates for k, v in sums.items()}

    def _advantages(self, features: Sequence[TurnFeatures]) -> list[list[float]]:
        """A_t of every turn under the critic as it is now, optionally whitened over the step."""
        assert self.critic is not None
        state = torch.cat([f.state for f in features]).to(self.device)
        turn = torch.cat([f.turn for f in features]).to(self.device)
        with torch.no_grad():
            a = turn_advantage(*self.critic.q(state, turn), *self.critic.v(state)).float().cpu()
        if self.settings.normalize_advantages:
            a = whiten(a)
        return [row.tolist() for row in torch.split(a, [len(f.state) for f in features])]

    def save(self, checkpoint_dir: Path) -> None:
        """critic.pt: the critic, its target heads and its optimiser (the buffer is in run_dir/replay)."""
        assert self.critic is not None and self.target is not None and self.optimizer is not None
        torch.save({"critic": self.critic.state_dict(), "target": self.target.state_dict(),
                    "optimizer": self.optimizer.state_dict()}, checkpoint_dir / CRITIC_FILE)

