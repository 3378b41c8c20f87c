"""RL algorithms as registered peers: each one is an `Algorithm` under its name (`--algo NAME`).

    grpo, rloo, reinforce   critic-free policy gradient (policy_gradient.py)
    ppo                     an on-policy value head over turns and GAE advantages (ppo.py, value.py)
    archer                  an off-policy utterance-level critic and a token-level actor (archer.py)

A new algorithm is one module here with an `Algorithm` subclass, registered below.
"""

from __future__ import annotations

import difflib

from agentgym.errors import AgentGymError
from agentgym.trainers.algorithms.archer import ArCHer
from agentgym.trainers.algorithms.base import Algorithm, AlgorithmAdvantages
from agentgym.trainers.algorithms.policy_gradient import GRPO, RLOO, Reinforce
from agentgym.trainers.algorithms.ppo import PPO

__all__ = ["ALGORITHMS", "Algorithm", "AlgorithmAdvantages", "UnknownAlgorithmError", "algorithm_names", "get_algorithm"]


class UnknownAlgorithmError(AgentGymError, ValueError):
    """An --algo name no algorithm is registered under."""


ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (GRPO, RLOO, Reinforce, PPO, ArCHer)}


def algorithm_names() -> list[str]:
    """The registered algorithm names."""
    return list(ALGORITHMS)


def get_algorithm(name: str) -> type[Algorithm]:
    """The Algorithm class registered under `name`; UnknownAlgorithmError naming the known ones otherwise."""
    if name not in ALGORITHMS:
        close = difflib.get_close_matches(name, ALGORITHMS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownAlgorithmError(f"unknown algo {name!r}{hint} (known: {', '.join(ALGORITHMS)})")
    return ALGORITHMS[name]
