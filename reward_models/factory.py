"""The `reward:` block of a training config, and the reward model it names."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agentgym.reward_models.base import RewardModel

RewardName = Literal["env", "dra", "gra", "igpo"]

# The advantage estimator each reward model is meant for when the config names none
# (trainers/advantages.py): dense per-turn rewards need baselines per turn index, and IGPO
# defines its own pooled normalisation. None: the algorithm's episode-level baseline.
DEFAULT_ADVANTAGE: dict[str, str | None] = {"env": None, "dra": "grpo_turn", "gra": "grpo_turn", "igpo": "igpo"}


class RewardSettings(BaseModel):
    """Which reward model turns trajectories into per-turn rewards, and with which settings."""

    model_config = ConfigDict(extra="forbid")

    name: RewardName = Field("env", description="env: the env's own rewards | dra | gra | igpo.")
    signals: dict[str, float] = Field(
        default_factory=lambda: {"valid_action": 0.1},
        description="dra/gra: immediate reward per turn, as weights over the env's step signals (a bool counts 1/0).",
    )
    tau: float = Field(1.0, description="gra: immediate rewards count only on trajectories whose env reward reaches tau.")
    success_bonus: float = Field(0.0, description="env: added to the last turn of a successful episode.")
    gain: Literal["prob", "logprob"] = Field("prob", description="igpo: gain in the answer's probability or its log-probability.")
    advantage: str | None = Field(
        None, description="Advantage estimator (trainers/advantages.py); default: the one the reward model is meant for.",
    )

    def advantage_for(self, algo_default: str) -> str:
        """The estimator to use: the configured one, the reward model's own, or the algorithm's."""
        return self.advantage or DEFAULT_ADVANTAGE[self.name] or algo_default


def build_reward_model(settings: RewardSettings) -> RewardModel:
    """The reward model `settings` names."""
    if settings.name == "env":
        from agentgym.reward_models.env_reward import EnvReward

        return EnvReward(success_bonus=settings.success_bonus)
    if settings.name in ("dra", "gra"):
        from agentgym.reward_models.gra import DirectRewards, GatedRewards

        return DirectRewards(settings.signals) if settings.name == "dra" else GatedRewards(settings.signals, settings.tau)
    from agentgym.reward_models.igpo import InformationGainRewards

    return InformationGainRewards(form=settings.gain)
