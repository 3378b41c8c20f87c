"""agentgym's built-in envs, one subpackage per family (text/, tools/, swe/, games/, and later web/)."""

from agentgym.envs.games import register_game_envs
from agentgym.registry import register


def register_builtin_envs() -> None:
    """Register every built-in env (the `builtin` entry point of the `agentgym.envs` group)."""
    register(
        "textworld",
        "agentgym.envs.text.textworld_env:TextWorldEnv",
        description="TextWorld text adventures generated offline; reward from the game score.",
    )
    register(
        "alfworld",
        "agentgym.envs.text.alfworld_env:ALFWorldEnv",
        description="ALFWorld household tasks on its own TextWorld/PDDL engine; games from ALFWORLD_DATA or generated offline.",
    )
    register(
        "python-tool",
        "agentgym.envs.tools.python_tool:PythonToolEnv",
        description="Calculation tasks solved by running Python or shell in a sandbox; reward for the exact answer.",
    )
    register(
        "swe-gym",
        "agentgym.envs.swe.swe_env:SWEGymEnv",
        description="SWE-bench-format tasks: fix a bug in a real repository; graded by its own tests with swebench.",
    )
    register_game_envs()
