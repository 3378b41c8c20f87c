"""RL algorithms as registered peers: each one is an `Algorithm` under its name (`--algo NAME`).

    grpo, rloo, reinforce   critic-free policy gradient (policy_gradient.py)
    archer                  an off-policy utterance-level critic and a token-level actor (archer.py)

A new algorithm is one module here with an `Algorithm` subclass, registered below.
"""

from __future__ import annotations

import difflib

from agentgym.errors import AgentGymError
from agentgym.trainers.algorithms.archer import ArCHer
from agentgym.trainers.algorithms.base import Algorithm, AlgorithmAdvantages
from agentgym.trainers.algorithms.policy_gradient import GRPO, RLOO, Reinforce

__all__ = ["ALGORITHMS", "Algorithm", "AlgorithmAdvantages", "UnknownAlgorithmError", "algorithm_names", "get_algorithm"]

RENAMED = {"ppo": "reinforce"}


class UnknownAlgorithmError(AgentGymError, ValueError):
    """An --algo name no algorithm is registered under."""


ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (GRPO, RLOO, Reinforce, ArCHer)}


def algorithm_names() -> list[str]:
    """The registered algorithm names."""
    return list(ALGORITHMS)


def get_algorithm(name: str) -> type[Algorithm]:
    """The Algorithm class registered under `name`; UnknownAlgorithmError naming the known ones otherwise."""
    if name in RENAMED:
        raise UnknownAlgorithmError(
            f"algo {name!r} is now {RENAMED[name]!r}: it had no value function, so it was never PPO "
            f"(batch-whitened returns, PPO-clipped like every algorithm here); for a critic use 'archer'"
        )
    if name not in ALGORITHMS:
        close = difflib.get_close_matches(name, ALGORITHMS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownAlgorithmError(f"unknown algo {name!r}{hint} (known: {', '.join(ALGORITHMS)})")
    return ALGORITHMS[name]
