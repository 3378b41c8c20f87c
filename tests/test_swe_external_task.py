"""A task file made outside agentgym: a plain git history, a hand-written spec, the SWE-bench schema as-is.

The repository has the commits a real project has: the code before the bug, the commit that
brought the bug (the instance's base_commit), and a later commit that fixes it, the kind of
future history agents mine for the answer on real SWE-bench setups. The spec file is typed by
hand. Nothing here goes through agentgym's own repo or spec helpers.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentgym.cli import app
from agentgym.envs.swe.builder import PYTEST_VERSION
from agentgym.sandboxes.factory import available_backends

BACKENDS = [b.name for b in available_backends()]

GOOD = "def scale(values, k):\n    return [v * k for v in values]\n"
BUGGY = "def scale(values, k):\n    return [v + k for v in values]\n"
TESTS = (
    "from vec.core import scale\n\n\n"
    "def test_scale():\n    assert scale([1, 2], 3) == [3, 6]\n\n\n"
    "def test_scale_empty():\n    assert scale([], 3) == []\n"
)
GOLD = """diff --git a/vec/core.py b/vec/core.py
--- a/vec/core.py
+++ b/vec/core.py
@@ -1,2 +1,2 @@
 def scale(values, k):
-    return [v + k for v in values]
+    return [v * k for v in values]
"""
SPEC = f"""# written by hand, as a user would
specs:
  - repo: acme/vec
    version: "0.3"
    pip: ["pytest=={PYTEST_VERSION}"]
    test_cmd: python3 -m pytest -rA -p no:cacheprovider
    log_parser: parse_log_pytest
"""


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "dev", "GIT_AUTHOR_EMAIL": "dev@example.com",
           "GIT_COMMITTER_NAME": "dev", "GIT_COMMITTER_EMAIL": "dev@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`repos/acme__vec` with three commits, its task file and its spec file."""
    root = tmp_path_factory.mktemp("external")
    repo = root / "repos" / "acme__vec"
    (repo / "vec").mkdir(parents=True)
    (repo / "tests").mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "vec" / "__init__.py").write_text("")
    (repo / "vec" / "core.py").write_text(GOOD)
    (repo / "tests" / "test_core.py").write_text(TESTS)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "vec 0.3")
    (repo / "vec" / "core.py").write_text(BUGGY)
    git(repo, "commit", "-qam", "refactor scale")
    base = git(repo, "rev-parse", "HEAD")
    (repo / "vec" / "core.py").write_text(GOOD.replace("v * k", "k * v  # fixed upstream"))
    git(repo, "commit", "-qam", "fix scale (the future commit)")
    git(repo, "remote", "add", "origin", "https://example.com/acme/vec.git")
    instance = {
        "instance_id": "acme__vec-7", "repo": "acme/vec", "base_commit": base, "version": "0.3",
        "problem_statement": "scale([1, 2], 3) gives [4, 5] instead of [3, 6]", "hints_text": "",
        "patch": GOLD, "test_patch": "", "created_at": "2024-05-01T12:00:00Z", "environment_setup_commit": base,
        "FAIL_TO_PASS": json.dumps(["tests/test_core.py::test_scale"]),
        "PASS_TO_PASS": json.dumps(["tests/test_core.py::test_scale_empty"]),
    }
    tasks = root / "tasks.jsonl"
    tasks.write_text(json.dumps(instance) + "\n")
    specs = root / "my-specs.yaml"
    specs.write_text(SPEC)
    return {"tasks": tasks, "repos": root / "repos", "specs": specs, "root": root}


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_outside_task_file_builds_validates_and_plays(external: dict[str, Path], backend: str, tmp_path: Path) -> None:
    where = ["--repos", str(external["repos"]), "--specs", str(external["specs"]), "--backend", backend]
    runner = CliRunner()
    built = runner.invoke(app, ["swe", "build-images", str(external["tasks"]), *where])
    assert built.exit_code == 0, built.output
    valid = runner.invoke(app, ["swe", "validate", str(external["tasks"]), *where])
    assert valid.exit_code == 0, valid.output
    assert "acme__vec-7" in valid.output
    opts = [f"tasks={external['tasks']}", f"repos_dir={external['repos']}", f"specs={external['specs']}",
            f"sandbox_backend={backend}", "max_turns=6"]
    played = runner.invoke(app, ["eval", "--env", "swe-gym", "--policy", "walkthrough", "--episodes", "1", "--quiet",
                                 "--out", str(tmp_path / "eval"), *[a for o in opts for a in ("--env-opt", o)]])
    assert played.exit_code == 0, played.output
    [traj] = [json.loads(line) for line in (tmp_path / "eval" / "trajectories.jsonl").read_text().splitlines()]
    assert traj["success"] is True and traj["total_reward"] == 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_agent_sees_the_base_commit_only_never_the_future_fix(external: dict[str, Path], backend: str) -> None:
    import agentgym
    from agentgym.tool_calls import ToolCall, render_tool_call

    env = agentgym.make("swe-gym", tasks=str(external["tasks"]), repos_dir=str(external["repos"]),
                        specs=str(external["specs"]), sandbox_backend=backend, max_turns=4)
    try:
        env.reset(options={"task": "acme__vec-7"})
        probe = ("cat vec/core.py; grep -rl 'fixed upstream' . 2>/dev/null | wc -l; "
                 "(git log --all --oneline 2>/dev/null || echo nogit) | wc -l; ls -a")
        observation, *_ = env.step(render_tool_call(ToolCall("bash", {"command": probe})))
        pristine = env.workspace("acme__vec-7").pristine
    finally:
        env.close()
    # What the sandbox is made from: one commit, no remote, and no object of the future commit.
    assert git(pristine, "rev-list", "--all", "--count") == "1" and git(pristine, "remote") == ""
    future = git(external["repos"] / "acme__vec", "rev-parse", "main:vec/core.py")
    assert subprocess.run(["git", "-C", str(pristine), "cat-file", "-e", future], capture_output=True).returncode != 0
    assert "v + k" in observation and "fixed upstream" not in observation.replace("grep -rl 'fixed upstream'", "")
    counts = [line.strip() for line in observation.splitlines() if line.strip().isdigit()]
    assert counts[0] == "0", observation  # no file holds the future fix, packed git objects included
    assert counts[1] == "1", observation  # one commit (or no git to list any)
