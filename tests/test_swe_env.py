"""swe-gym end to end on a small project made here: walkthrough, anti-cheat rules, bad input, both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import agentgym
from agentgym.envs.swe import repos
from agentgym.envs.swe.swe_env import SWEGymEnv
from agentgym.envs.swe.workspace import WorkspaceError
from agentgym.sandboxes.factory import available_backends
from agentgym.tool_calls import ToolCall, render_tool_call
from tests.swe_calc_task import make_calc_task

BACKENDS = [b.name for b in available_backends()]


def call(name: str, **arguments: object) -> str:
    return render_tool_call(ToolCall(name, dict(arguments)))


@pytest.fixture(scope="module")
def task_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A repo whose base commit (an orphan, as the builder makes them) has a bug in add(), and its task file."""
    return make_calc_task(tmp_path_factory.mktemp("swe"))


@pytest.fixture(scope="module", params=BACKENDS)
def env(request: pytest.FixtureRequest, task_files: tuple[Path, Path]) -> SWEGymEnv:
    tasks, repos_dir = task_files
    made = agentgym.make("swe-gym", tasks=str(tasks), repos_dir=str(repos_dir), sandbox_backend=request.param,
                         max_turns=6)
    yield made
    made.close()


def play(env: SWEGymEnv, actions: list[str]) -> tuple[float, dict]:
    env.reset(options={"task": "local__calc-1"})
    reward, info = 0.0, {}
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    return reward, info


def test_the_walkthrough_resolves_and_the_final_info_holds_the_grade(env: SWEGymEnv) -> None:
    _, info = env.reset(options={"task": "local__calc-1"})
    assert {t["function"]["name"] for t in info["tools"]} == {"bash", "str_replace_editor", "search", "submit"}
    reward, final = play(env, info["walkthrough"])
    assert reward == 1.0 and final["success"] is True
    assert final["grade"]["resolved"] is True
    assert final["grade"]["tests"]["tests/test_ops.py::test_add"] == "PASSED"
    assert final["signals"]["submitted"] and final["signals"]["patch_nonempty"]
    assert "calc_total = a + b" in final["patch"]


def test_submitting_at_once_gets_zero(env: SWEGymEnv) -> None:
    reward, final = play(env, [call("submit")])
    assert reward == 0.0 and final["success"] is False
    assert final["grade"]["fail_to_pass"]["failure"] == ["tests/test_ops.py::test_add"]
    assert final["signals"]["patch_nonempty"] is False


def test_editing_the_tests_does_not_help(env: SWEGymEnv) -> None:
    cheat = call("str_replace_editor", command="str_replace", path="tests/test_ops.py",
                 old_str="assert add(2, 3) == 5", new_str="assert add(2, 3) == -1")
    reward, final = play(env, [cheat, call("submit")])
    assert reward == 0.0
    assert "tests/test_ops.py" in final["patch"]  # the agent's diff has it; grading left it out


def test_the_repo_holds_one_commit_no_remote_and_no_copy_of_the_fix(env: SWEGymEnv) -> None:
    probe = call("bash", command="git log --all --oneline | wc -l; git remote | wc -l; "
                                 "grep -rl 'calc_total = a + b' / --include=*.py 2>/dev/null | grep -v '^/proc' | wc -l")
    env.reset(options={"task": "local__calc-1"})
    observation, *_ = env.step(probe)
    counts = [line for line in observation.splitlines() if line.strip().isdigit()]
    if "git: not found" in observation or "command not found" in observation:
        counts = ["1", "0", counts[-1]]  # no git in this root: nothing to mine either
    assert counts[-1] == "0", observation  # the fixed line is nowhere in the sandbox
    assert counts[:2] == ["1", "0"], observation


def test_an_agent_commit_rewriting_history_does_not_change_what_is_graded(env: SWEGymEnv) -> None:
    fix = call("str_replace_editor", command="str_replace", path="calc/ops.py", old_str="a - b", new_str="a + b")
    rewrite = call("bash", command="rm -rf .git")
    reward, _ = play(env, [fix, rewrite, call("submit")])
    assert reward == 1.0  # the diff is taken from the working tree against the pristine export


def test_a_malformed_call_is_an_invalid_action_that_shows_the_form(env: SWEGymEnv) -> None:
    env.reset(options={"task": "local__calc-1"})
    observation, reward, terminated, _, info = env.step("let me look at the code")
    assert info["signals"]["valid_action"] is False and not terminated and reward == 0.0
    assert "<tool_call>" in observation
    observation, *_ , info = env.step(call("str_replace_editor", command="view"))
    assert info["signals"]["valid_action"] is False and "path" in observation


def test_a_patch_that_does_not_apply_is_recorded_with_reward_zero(env: SWEGymEnv) -> None:
    workspace = env.workspace("local__calc-1")
    report, _ = workspace.grade("diff --git a/calc/ops.py b/calc/ops.py\n--- a/calc/ops.py\n+++ b/calc/ops.py\n"
                                "@@ -1,2 +1,2 @@\n def nothing_like_this():\n-    pass\n+    return 1\n")
    assert not report.resolved and "does not apply" in (report.error or "")


def test_a_repo_without_the_base_commit_is_one_clear_error(task_files: tuple[Path, Path], tmp_path: Path) -> None:
    tasks, _ = task_files
    empty = tmp_path / "repos" / "local__calc"
    repos.init_repo(empty)
    env = SWEGymEnv(tasks=str(tasks), repos_dir=str(tmp_path / "repos"), sandbox_backend=BACKENDS[-1])
    with pytest.raises(WorkspaceError, match="local__calc-1: repo .* has no commit"):
        env.reset(options={"task": "local__calc-1"})


def test_validate_prints_a_table_and_fails_on_an_instance_whose_gold_patch_does_not_resolve(
    task_files: tuple[Path, Path], tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from agentgym.cli import app

    tasks, repos_dir = task_files
    good = CliRunner().invoke(app, ["swe", "validate", str(tasks), "--repos", str(repos_dir), "--backend", BACKENDS[-1]])
    assert good.exit_code == 0, good.output
    assert "local__calc-1" in good.output and "resolved" in good.output
    broken = json.loads(tasks.read_text())
    broken["patch"] = broken["patch"].replace("+    calc_total = a + b", "+    calc_total = a * b")
    bad = tmp_path / "tasks.jsonl"
    bad.write_text(json.dumps(broken) + "\n")
    (tmp_path / "tasks.specs.yaml").write_text((tasks.parent / "tasks.specs.yaml").read_text())
    failed = CliRunner().invoke(app, ["swe", "validate", str(bad), "--repos", str(repos_dir), "--backend", BACKENDS[-1]])
    assert failed.exit_code == 1
    assert "FAIL" in failed.output and "1 of 1 instances failed validation" in failed.output
