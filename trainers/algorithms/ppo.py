"""PPO: an on-policy value function V(s) over turns, GAE advantages for the PPO-clipped token actor.

Schulman et al. 2017 (arXiv:1707.06347) with GAE (arXiv:1506.02438), a turn as the time step.
Each training step:

  1. the step's turns are encoded once by a frozen copy of the starting policy's backbone
     (trainers/turn_encoder.py, as ArCHer's critic reads it): s_t is the hidden state at the
     prompt's last token;
  2. the value head gives V_old(s_t) of every turn, and GAE turns the run's per-turn rewards
     (any reward model) and those values into A_t and the λ-returns R_t (value.py);
  3. the value head takes `value_epochs` passes over the step's turns in minibatches of
     `batch_size`, towards R_t with the clipped value loss: on-policy, so the step's turns only;
  4. the actor gets A_t (whitened over the step when `normalize_advantages`), broadcast to the
     turn's tokens by the shared PPO-clipped update (trainers/update.py, `update.epochs` passes,
     EPO and KL when configured).

The value is of the turn, not of every token: a turn is one action in the environment, and
its reward arrives only after the whole utterance. The value head and its optimiser are saved in
every checkpoint (value.pt) and read back on --resume.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from agentgym.trainers.algorithms.base import AlgorithmAdvantages, FrozenFeatureCritic, critic_advantage_stats, whiten
from agentgym.trainers.algorithms.value import ValueHead, explained_variance, gae, value_loss
from agentgym.types import Trajectory

if TYPE_CHECKING:
    from agentgym.trainers.config import TrainConfig
    from agentgym.trainers.policy_model import TrainableModel
    from agentgym.trainers.turn_encoder import TurnEncoder

__all__ = ["PPO", "PPOConfig"]

VALUE_FILE = "value.pt"


class PPOConfig(BaseModel):
    """PPO's value function and GAE (`ppo.KEY=VALUE`); the discount is the run's `gamma`, the actor's epochs `update.epochs`."""

    model_config = ConfigDict(extra="forbid")

    encoder: Literal["frozen"] = Field(
        "frozen", description="frozen: the value head reads a frozen copy of the starting policy's backbone "
        "(features computed once per turn); the only encoder offered.",
    )
    encoder_model: str | None = Field(None, description="The backbone the value head reads; default: the run's starting model.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE's λ: 1 gives Monte Carlo returns minus V, 0 one-step TD.")
    hidden: int = Field(256, ge=1, description="Width of the value head's two hidden layers.")
    lr: float = Field(1e-3, gt=0, description="The value head's AdamW learning rate.")
    value_epochs: int = Field(4, ge=1, description="Passes of the value head over each step's turns.")
    batch_size: int = Field(64, ge=1, description="Turns per value minibatch.")
    value_clip: float | None = Field(
        0.2, gt=0, description="PPO's value clipping: V may move this far from V_old before the clipped term takes over; "
        "None: plain squared error.",
    )
    normalize_advantages: bool = Field(True, description="Whiten the step's advantages (mean 0, std 1), as PPO implementations do.")
    warmup_steps: int = Field(0, ge=0, description="Training steps at the start in which only the value head learns.")
    max_grad_norm: float = Field(1.0, gt=0)


class PPO(FrozenFeatureCritic):
    """PPO with a turn-level value head on frozen features and GAE(γ, λ) advantages."""

    name: ClassVar[str] = "ppo"
    summary: ClassVar[str] = "on-policy value head over turns, GAE advantages (turn-level PPO)"

    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.settings: PPOConfig = cfg.ppo
        self.encoder: TurnEncoder | None = None
        self.value: ValueHead | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.device = torch.device("cpu")

    def setup(self, trainable: TrainableModel, step: int, checkpoint: Path | None) -> None:
        """The frozen encoder and the value head with its optimiser on the trainer's device, read back on a resume."""
        s = self.settings
        self.device = trainable.device
        self.encoder = self.frozen_encoder(trainable, s.encoder_model)
        with torch.random.fork_rng(devices=[]):  # the head's initialisation leaves the run's RNG stream alone
            torch.manual_seed(self.cfg.seed)
            self.value = ValueHead(self.encoder.hidden_size, s.hidden).to(self.device)
        self.optimizer = torch.optim.AdamW(self.value.parameters(), lr=s.lr)
        if checkpoint is not None and (checkpoint / VALUE_FILE).is_file():
            blob = torch.load(checkpoint / VALUE_FILE, map_location=self.device, weights_only=True)
            self.value.load_state_dict(blob["value"])
            self.optimizer.load_state_dict(blob["optimizer"])

    def updates_actor(self, step: int) -> bool:
        """After `warmup_steps` value-only steps, every step."""
        return step >= self.settings.warmup_steps

    def advantages(
        self, step: int, trajectories: Sequence[Trajectory], rewards: Sequence[Sequence[float]],
        estimated: Sequence[Sequence[float]],
    ) -> AlgorithmAdvantages:
        """Encode the step's turns, take GAE under the current values, then fit the value head to the λ-returns."""
        if self.encoder is None or self.value is None:
            raise RuntimeError("PPO.setup must run before advantages")
        if len(rewards) != len(trajectories):
            raise ValueError(f"{len(rewards)} reward lists for {len(trajectories)} trajectories")
        if not trajectories:
            return AlgorithmAdvantages([], {})
        started = time.perf_counter()
        features = self.encoder.trajectory_features(trajectories)
        metrics = {"time/critic_encode": time.perf_counter() - started}
        lengths = [len(f.state) for f in features]
        for n, r in zip(lengths, rewards):
            if len(r) != n:
                raise ValueError(f"a trajectory of {n} turns was given {len(r)} rewards")
        state = torch.cat([f.state for f in features]).to(self.device)
        if len(state) == 0:
            return AlgorithmAdvantages([[] for _ in trajectories], {})
        self.value.state_norm.fit(state)
        with torch.no_grad():
            old = self.value(state).float().cpu()
        advantages, returns = [], []
        for r, v in zip(rewards, torch.split(old, lengths)):
            a, g = gae(r, v.tolist(), self.cfg.gamma, self.settings.lam)
            advantages.extend(a)
            returns.extend(g)
        target = torch.tensor(returns)
        metrics["critic/explained_variance"] = explained_variance(old, target)
        metrics["critic/v_mean"] = float(old.mean())
        metrics["critic/return_mean"] = float(target.mean())
        started = time.perf_counter()
        metrics.update(self._fit_value(step, state, old.to(self.device), target.to(self.device)))
        metrics["time/critic_update"] = time.perf_counter() - started
        a = torch.tensor(advantages)
        if self.settings.normalize_advantages:
            a = whiten(a)
        values = [row.tolist() for row in torch.split(a, lengths)]
        metrics.update(critic_advantage_stats(trajectories, values))
        return AlgorithmAdvantages(values, metrics)

    def _fit_value(self, step: int, state: torch.Tensor, old: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """`value_epochs` shuffled passes of minibatches towards the λ-returns; mean loss and clip fraction."""
        assert self.value is not None and self.optimizer is not None
        s = self.settings
        # A generator per step from the run's seed: a resumed step draws the same minibatches.
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        loss_sum, clipped_sum, batches = 0.0, 0.0, 0
        self.value.train()
        for _ in range(s.value_epochs):
            order = torch.randperm(len(state), generator=generator).to(self.device)
            for index in torch.split(order, s.batch_size):
                loss, clipped = value_loss(self.value(state[index]), old[index], target[index], s.value_clip)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.value.parameters(), s.max_grad_norm)
                self.optimizer.step()
                loss_sum += float(loss.detach())
                clipped_sum += float(clipped)
                batches += 1
        self.value.eval()
        return {"critic/v_loss": loss_sum / batches, "critic/value_clip_fraction": clipped_sum / batches}

    def save(self, checkpoint_dir: Path) -> None:
        """value.pt: the value head (its input statistics included) and its optimiser."""
        assert self.value is not None and self.optimizer is not None
        torch.save({"value": self.value.state_dict(), "optimizer": self.optimizer.state_dict()}, checkpoint_dir / VALUE_FILE)
