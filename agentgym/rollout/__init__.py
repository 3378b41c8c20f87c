"""The rollout engine: many episodes at once against a policy, recorded as trajectories."""

from agentgym.rollout.engine import EpisodeJob, RolloutConfig, RolloutEngine, plan_episodes, run_rollouts
from agentgym.rollout.prompts import ChatHistory

__all__ = ["ChatHistory", "EpisodeJob", "RolloutConfig", "RolloutEngine", "plan_episodes", "run_rollouts"]
