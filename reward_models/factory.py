"""The `reward:` block of a training config, and the reward model it names."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentgym.reward_models.base import RewardModel

RewardName = Literal["env", "dra", "gra", "igpo", "spa"]

# The advantage estimator each reward model is meant for when the config names none
# (trainers/advantages.py): dense per-turn rewards need baselines per turn index, and IGPO
# defines its own pooled normalisation. SPA's rewards are per turn too (each turn's own contribution).
# None: the algorithm's episode-level baseline.
DEFAULT_ADVANTAGE: dict[str, str | None] = {
    "env": None, "dra": "grpo_turn", "gra": "grpo_turn", "igpo": "igpo", "spa": "grpo_turn",
}


class RewardSettings(BaseModel):
    """Which reward model turns trajectories into per-turn rewards, and with which settings."""

    model_config = ConfigDict(extra="forbid")

    name: RewardName = Field("env", description="env: the env's own rewards | dra | gra | igpo | spa.")
    signals: dict[str, float] = Field(
        default_factory=lambda: {"valid_action": 0.1},
        description="dra/gra: immediate reward per turn, as weights over the env's step signals (a bool counts 1/0).",
    )
    tau: float = Field(1.0, description="gra: immediate rewards count only on trajectories whose env reward reaches tau.")
    success_bonus: float = Field(0.0, description="env: added to the last turn of a successful episode.")
    gain: Literal["prob", "logprob"] = Field("prob", description="igpo: gain in the answer's probability or its log-probability.")
    progress_model: str | None = Field(
        None, description="spa: directory of a progress estimator (`agentgym reward train-progress --out DIR`); required for spa.",
    )
    # alpha 1: contributions keep the outcome's scale (they are trained to sum to it). beta 0.5: a
    # valid action earns half of a solved task's outcome of 1, enough to steer a policy off
    # unparseable actions; with per-turn baselines only its differences within a group count, but
    # over long episodes the sum of beta g_t outgrows the outcome, so lower it there.
    alpha: float = Field(1.0, allow_inf_nan=False, description="spa: weight of the estimated contribution c_t in r_t = alpha c_t + beta g_t.")
    beta: float = Field(0.5, allow_inf_nan=False, description="spa: weight of the grounding signal g_t (1 when the turn's valid_action is true).")
    advantage: str | None = Field(
        None, description="Advantage estimator (trainers/advantages.py); default: the one the reward model is meant for.",
    )

    @model_validator(mode="after")
    def _spa_needs_a_progress_model(self) -> RewardSettings:
        """spa without reward.progress_model is refused when the config is read, not at the first step."""
        if self.name == "spa" and not self.progress_model:
            raise ValueError(
                "reward spa needs reward.progress_model=DIR, a progress estimator directory "
                "(train one with `agentgym reward train-progress --data TRAJECTORIES.jsonl --out DIR`)"
            )
        return self

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
    if settings.name == "spa":
        from agentgym.reward_models.spa import ProgressRewards

        assert settings.progress_model is not None  # the validator refuses spa without one
        return ProgressRewards(settings.progress_model, alpha=settings.alpha, beta=settings.beta)
    from agentgym.reward_models.igpo import InformationGainRewards

    return InformationGainRewards(form=settings.gain)
