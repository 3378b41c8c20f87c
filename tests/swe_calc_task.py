"""A tiny swe-gym task made in a temporary directory: a repo whose base commit has a bug in add()."""

from __future__ import annotations

import json
from pathlib import Path

from agentgym.envs.swe import repos
from agentgym.envs.swe.builder import PYTEST_VERSION, TEST_CMD
from agentgym.envs.swe.specs import RepoSpec, SpecSet

GOOD = "def add(a, b):\n    calc_total = a + b\n    return calc_total\n\n\ndef mul(a, b):\n    return a * b\n"
BUGGY = GOOD.replace("a + b", "a - b")
TESTS = (
    "from calc.ops import add, mul\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n"
    "def test_mul():\n    assert mul(2, 3) == 6\n"
)


def make_calc_task(root: Path) -> tuple[Path, Path]:
    """The task file (with its specs beside it) and the repos directory of instance local__calc-1, under `root`."""
    tree = root / "tree"
    (tree / "calc").mkdir(parents=True)
    (tree / "tests").mkdir()
    (tree / "calc" / "__init__.py").write_text("")
    (tree / "calc" / "ops.py").write_text(GOOD)
    (tree / "tests" / "test_ops.py").write_text(TESTS)
    repo = repos.repo_dir(root / "repos", "local/calc")
    repos.init_repo(repo)
    pristine = repos.commit_directory(repo, tree, "calc 1.0")
    base = repos.commit_with_files(repo, pristine, {"calc/ops.py": BUGGY.encode()}, "calc 1.0", repos.FIXED_DATE)
    instance = {
        "instance_id": "local__calc-1", "repo": "local/calc", "base_commit": base, "version": "1.0",
        "problem_statement": "add(2, 3) returns -1", "hints_text": "", "test_patch": "",
        "patch": repos.diff_commits(repo, base, pristine), "created_at": "2024-01-01T00:00:00Z",
        "environment_setup_commit": pristine,
        "FAIL_TO_PASS": json.dumps(["tests/test_ops.py::test_add"]),
        "PASS_TO_PASS": json.dumps(["tests/test_ops.py::test_mul"]),
    }
    tasks = root / "tasks.jsonl"
    tasks.write_text(json.dumps(instance) + "\n")
    SpecSet(specs=[RepoSpec(repo="local/calc", version="1.0", pip=[f"pytest=={PYTEST_VERSION}"], test_cmd=TEST_CMD)]).dump(
        root / "tasks.specs.yaml")
    return tasks, root / "repos"
