"""Reward models: trajectory → per-turn rewards. The trainer calls one on every trajectory it trains on.

`EnvReward` passes the env's own rewards through; G-RA, IGPO and SPA come with the reward-model issue.
"""

from agentgym.reward_models.env_reward import EnvReward

__all__ = ["EnvReward"]
