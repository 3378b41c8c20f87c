"""agentgym's built-in envs, one subpackage per family (text/, and later web/, swe/, tools/)."""

from agentgym.registry import register


def register_builtin_envs() -> None:
    """Register every built-in env (the `builtin` entry point of the `agentgym.envs` group)."""
    register(
        "textworld",
        "agentgym.envs.text.textworld_env:TextWorldEnv",
        description="TextWorld text adventures generated offline; reward from the game score.",
    )
