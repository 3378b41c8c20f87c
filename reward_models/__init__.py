"""Reward models that turn a trajectory into per-turn rewards (outcome, G-RA, IGPO, SPA).

Not built yet; the reward-model issue fills this package.
"""
