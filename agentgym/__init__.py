"""agentgym: a gym for multi-turn agentic RL.

    import agentgym
    env = agentgym.make("textworld")
    obs, info = env.reset(seed=0)
"""

from agentgym.env import EpisodeStart, StepOutcome, TextEnv
from agentgym.errors import AgentGymError
from agentgym.registry import EnvSpec, Registry, default_registry, list_envs, make, register, spec
from agentgym.types import Completion, Message, SamplingParams, Trajectory, Turn

__version__ = "0.1.0"

__all__ = [
    "AgentGymError", "Completion", "EnvSpec", "EpisodeStart", "Message", "Registry", "SamplingParams",
    "StepOutcome", "TextEnv", "Trajectory", "Turn", "default_registry", "list_envs", "make", "register", "spec",
]

# Built-in envs and installed plugins register now, so that gymnasium.make("agentgym/<id>")
# works right after `import agentgym`. Registration only records specs; no env module is imported.
default_registry.list_envs()
