"""A third-party package adds an env through the `agentgym.envs` entry-point group, without touching this repo."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "agentgym-echo-plugin"
version = "0.0.1"

[project.entry-points."agentgym.envs"]
echo = "agentgym_echo_plugin:register"

[tool.setuptools]
py-modules = ["agentgym_echo_plugin"]
"""

PLUGIN_MODULE = '''
from agentgym import EpisodeStart, StepOutcome, TextEnv, register


class EchoEnv(TextEnv):
    """Win by saying the word of the task."""

    def __init__(self, words=("alpha", "beta"), max_turns=3):
        super().__init__(max_turns=max_turns)
        self.words = list(words)

    def task_ids(self):
        return self.words

    def start(self, task_id):
        self.word = task_id
        return EpisodeStart(observation=f"say {task_id}", instructions="Echo the word.")

    def act(self, action):
        won = action == self.word
        return StepOutcome(observation="yes" if won else "no", reward=float(won), terminated=won,
                           success=won or None, signals={"valid_action": True})


def register():
    register_env()


def register_env():
    from agentgym import register as reg
    reg("echo-plugin", "agentgym_echo_plugin:EchoEnv", description="plugin test env", max_turns=2)
'''

CHECK = """
import gymnasium as gym, agentgym
ids = [s.id for s in agentgym.list_envs()]
env = agentgym.make("echo-plugin")
obs, info = env.reset(options={"task": "beta"})
_, r, term, trunc, info = env.step("beta")
g = gym.make("agentgym/echo-plugin")
print(ids, obs, r, term, info["success"], env.max_turns, type(g.unwrapped).__name__)
"""


def test_installed_plugin_env_is_listed_made_and_known_to_gymnasium(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (src / "agentgym_echo_plugin.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    target = tmp_path / "site"
    # A real install (metadata and entry points included) into a private directory, not the project venv.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(src)],
        check=True, capture_output=True, text=True,
    )
    assert list(target.glob("agentgym_echo_plugin-*.dist-info/entry_points.txt"))
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert "'echo-plugin'" in line and "'textworld'" in line
    assert line.endswith("say beta 1.0 True True 2 EchoEnv")


BROKEN_CHECK = """
import agentgym
from agentgym.errors import UnknownEnvError
print([s.id for s in agentgym.list_envs()])
try:
    agentgym.make("echo")
except UnknownEnvError as exc:
    print(exc)
"""


def test_a_plugin_that_fails_to_load_is_logged_and_named_by_the_unknown_env_error(tmp_path: Path) -> None:
    # What pip leaves for a package whose entry point names a module it does not ship: the metadata alone.
    dist = tmp_path / "site" / "agentgym_broken_plugin-0.0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: agentgym-broken-plugin\nVersion: 0.0.1\n")
    (dist / "entry_points.txt").write_text("[agentgym.envs]\necho = mypackage.envs:register\n")
    env = {"PYTHONPATH": str(dist.parent), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", BROKEN_CHECK], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    ids, message = done.stdout.strip().splitlines()
    assert "'textworld'" in ids  # the built-ins still register
    assert message.startswith(
        "unknown env 'echo'; the plugin 'echo' (mypackage.envs:register) failed to load: "
        "ModuleNotFoundError: No module named 'mypackage'"
    )
    # Logged once, when the plugins loaded, with the traceback.
    assert done.stderr.count("the plugin 'echo' (mypackage.envs:register) failed to load") == 1
    assert "Traceback (most recent call last)" in done.stderr
