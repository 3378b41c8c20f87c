"""Reward models: a group of trajectories in, per-turn rewards out (docs/architecture.md, "Reward model").

`env` (the env's own rewards, the default), `dra` and `gra` (step signals accumulated directly or
gated on the outcome), `igpo` (information gain about the ground-truth answer) and `spa`
(stepwise progress attribution by a trained estimator); `factory.build_reward_model` makes one
from a config's `reward:` block.
"""

from agentgym.reward_models.base import RewardModel, RewardScores, Scorer
from agentgym.reward_models.env_reward import EnvReward

__all__ = ["EnvReward", "RewardModel", "RewardScores", "Scorer"]
