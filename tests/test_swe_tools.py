"""RepoTools on a real bubblewrap sandbox holding a small git repository at /testbed: every tool, good and bad calls."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgym.envs.swe.tools import (GIT_STATUS, RepoTools, git_changed_paths, is_test_command, passed_fraction,
                                     truncate)
from agentgym.sandboxes.base import Sandbox, SandboxError
from agentgym.sandboxes.bwrap_backend import BwrapBackend
from agentgym.sandboxes.factory import create_sandbox
from agentgym.sandboxes.spec import SandboxSpec
from agentgym.tool_calls import ToolCall, ToolCallError
from agentgym.tools import Toolbox

_REASON = BwrapBackend().unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"bwrap unavailable: {_REASON}")

REPO = "/testbed"
CALC = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a + b\n"
TESTS = """import unittest

from pkg.calc import add, sub


class CalcTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(add(2, 3), 5)

    def test_add_zero(self):
        self.assertEqual(add(0, 4), 4)

    def test_add_negative(self):
        self.assertEqual(add(-1, 1), 0)

    def test_sub(self):
        self.assertEqual(sub(5, 3), 2)
"""
FILES = {"pkg/__init__.py": "", "pkg/calc.py": CALC, "tests/__init__.py": "", "tests/test_calc.py": TESTS,
         "README.md": "calc\n", "pkg/sub/deep/far.py": "x = 1\n"}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", *args],
                          check=True, capture_output=True, text=True, timeout=30).stdout


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository on the host, committed with git (the host has git; the sandbox's root may not)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed on this machine")
    repo = tmp_path_factory.mktemp("repo")
    for name, text in FILES.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "init")
    return repo


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    box = create_sandbox(SandboxSpec(workdir=REPO, exec_timeout_s=20), backend="bwrap")
    yield box
    box.close()


@pytest.fixture()
def tools(sandbox: Sandbox, pristine: Path) -> RepoTools:
    """Fresh tools on a fresh copy of the repository."""
    assert sandbox.exec(["find", REPO, "-mindepth", "1", "-delete"]).ok
    sandbox.upload(pristine, REPO)
    return RepoTools(sandbox, repo=REPO, timeout_s=10, observation_chars=1000)


def _edit(tools: RepoTools, **arguments: object) -> str:
    return tools.str_replace_editor(**{"file_text": None, "old_str": None, "new_str": None, "insert_line": None,
                                       "view_range": None, **arguments})


def _text(sandbox: Sandbox, path: str) -> str:
    return sandbox.read_file(f"{REPO}/{path}").decode()


# --- str_replace_editor: view ---
def test_view_numbers_lines_like_cat_n_and_honours_view_range(tools: RepoTools, sandbox: Sandbox) -> None:
    whole = _edit(tools, command="view", path="pkg/calc.py")
    header, body = whole.split("\n", 1)
    assert header == "pkg/calc.py, lines 1-6 of 6:"
    assert body == sandbox.exec(["cat", "-n", "pkg/calc.py"]).stdout.rstrip("\n")
    assert _edit(tools, command="view", path=f"{REPO}/pkg/calc.py", view_range=[5, 6]) == (
        "pkg/calc.py, lines 5-6 of 6:\n     5\tdef sub(a, b):\n     6\t    return a + b")
    assert _edit(tools, command="view", path="pkg/calc.py", view_range=[6, -1]).endswith("6\t    return a + b")
    # A range that runs past the end shows what there is, and the header says where the file ends.
    assert _edit(tools, command="view", path="pkg/calc.py", view_range=[5, 40]).startswith("pkg/calc.py, lines 5-6 of 6")


@pytest.mark.parametrize("view_range, message", [
    ([7, 8], "view_range starts at line 7, but pkg/calc.py has lines 1 to 6"),
    ([0, 2], "view_range starts at line 0"),
    ([4, 2], "ends before it starts"),
])
def test_view_range_out_of_range_is_refused(tools: RepoTools, view_range: list[int], message: str) -> None:
    answer = _edit(tools, command="view", path="pkg/calc.py", view_range=view_range)
    assert answer.startswith("Error: ") and message in answer and tools.tool_errors == 1


def test_view_of_a_directory_lists_two_levels_and_leaves_out_git(tools: RepoTools) -> None:
    listing = _edit(tools, command="view", path=".").splitlines()
    assert listing[0].startswith("Files and directories in .")
    assert listing[1:] == ["README.md", "pkg/", "pkg/__init__.py", "pkg/calc.py", "pkg/sub/", "tests/",
                           "tests/__init__.py", "tests/test_calc.py"]
    assert _edit(tools, command="view", path="pkg").splitlines()[1:] == [
        "__init__.py", "calc.py", "sub/", "sub/deep/"]
    assert "no-such" in _edit(tools, command="view", path="no-such.py") and tools.tool_errors == 1


# --- create, str_replace, insert, undo_edit ---
def test_create_refuses_an_existing_file_and_undo_removes_what_it_made(tools: RepoTools, sandbox: Sandbox) -> None:
    assert _edit(tools, command="create", path="pkg/mul.py", file_text="def mul(a, b):\n    return a * b\n") == (
        "Created pkg/mul.py (2 lines).")
    assert _text(sandbox, "pkg/mul.py") == "def mul(a, b):\n    return a * b\n"
    refused = _edit(tools, command="create", path="pkg/calc.py", file_text="gone")
    assert refused.startswith("Error: pkg/calc.py already exists") and _text(sandbox, "pkg/calc.py") == CALC
    assert "is a directory" in _edit(tools, command="create", path="pkg", file_text="x")
    assert _edit(tools, command="undo_edit", path="pkg/mul.py") == "Removed pkg/mul.py, which create had made."
    with pytest.raises(SandboxError):
        sandbox.read_file(f"{REPO}/pkg/mul.py")
    assert tools.files_modified == {"pkg/mul.py"}


def test_str_replace_needs_exactly_one_match(tools: RepoTools, sandbox: Sandbox) -> None:
    twice = _edit(tools, command="str_replace", path="pkg/calc.py", old_str="return a + b", new_str="return a - b")
    assert twice == ("Error: old_str occurs 2 times in pkg/calc.py, at lines 2, 6; include more of the surrounding "
                     "lines to make it unique")
    missing = _edit(tools, command="str_replace", path="pkg/calc.py", old_str="return a*b", new_str="x")
    assert missing.startswith("Error: old_str does not occur in pkg/calc.py")
    assert _text(sandbox, "pkg/calc.py") == CALC and tools.files_modified == set()
    done = _edit(tools, command="str_replace", path="pkg/calc.py",
                 old_str="def sub(a, b):\n    return a + b", new_str="def sub(a, b):\n    return a - b")
    assert _text(sandbox, "pkg/calc.py") == CALC.replace("return a + b\n", "return a - b\n").replace(
        "return a - b\n\n\n", "return a + b\n\n\n", 1)
    assert done.startswith("Edited pkg/calc.py.") and "     6\t    return a - b" in done
    # Leaving out new_str deletes old_str.
    _edit(tools, command="str_replace", path="README.md", old_str="calc\n")
    assert _text(sandbox, "README.md") == "" and tools.files_modified == {"pkg/calc.py", "README.md"}


def test_insert_goes_after_the_given_line(tools: RepoTools, sandbox: Sandbox) -> None:
    _edit(tools, command="insert", path="pkg/calc.py", insert_line=0, new_str="import math")
    _edit(tools, command="insert", path="pkg/calc.py", insert_line=7, new_str="\n\ndef mul(a, b):\n    return a * b\n")
    lines = _text(sandbox, "pkg/calc.py").splitlines()
    assert lines[0] == "import math" and lines[1] == "def add(a, b):" and lines[-2:] == ["def mul(a, b):", "    return a * b"]
    sandbox.write_file(f"{REPO}/notes.txt", "one\ntwo")  # no newline at the end
    _edit(tools, command="insert", path="notes.txt", insert_line=2, new_str="three")
    assert _text(sandbox, "notes.txt") == "one\ntwo\nthree\n"
    beyond = _edit(tools, command="insert", path="notes.txt", insert_line=9, new_str="x")
    assert beyond == "Error: insert_line must be between 0 and 3 (the number of lines in notes.txt), got 9"


def test_undo_walks_back_through_each_edit_of_a_file(tools: RepoTools, sandbox: Sandbox) -> None:
    _edit(tools, command="str_replace", path="pkg/calc.py", old_str="def add", new_str="def plus")
    _edit(tools, command="insert", path="pkg/calc.py", insert_line=0, new_str="# header")
    assert _edit(tools, command="undo_edit", path="pkg/calc.py") == "Reverted the latest edit of pkg/calc.py."
    assert _text(sandbox, "pkg/calc.py") == CALC.replace("def add", "def plus")
    _edit(tools, command="undo_edit", path="pkg/calc.py")
    assert _text(sandbox, "pkg/calc.py") == CALC
    assert _edit(tools, command="undo_edit", path="pkg/calc.py") == "Error: there is no edit of pkg/calc.py to undo"
    assert "no edit of README.md to undo" in _edit(tools, command="undo_edit", path="README.md")


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", f"{REPO}/../etc", "pkg/../../x", f"{REPO}x/a"])
def test_paths_outside_the_repository_are_refused(tools: RepoTools, path: str) -> None:
    for answer in (_edit(tools, command="view", path=path), _edit(tools, command="create", path=path, file_text="x"),
                   tools.search(pattern="x", path=path, glob=None, mode="content")):
        assert answer.startswith(f"Error: {path!r} is outside the repository {REPO}")


def test_a_path_that_only_passes_through_dotdot_stays_usable(tools: RepoTools) -> None:
    assert _edit(tools, command="view", path="tests/../pkg/calc.py").startswith("pkg/calc.py, lines 1-6")


def test_wrong_editor_arguments_are_named(tools: RepoTools) -> None:
    assert _edit(tools, command="create", path="a.py") == "Error: create needs file_text"
    assert _edit(tools, command="view", path="pkg/calc.py", old_str="x") == "Error: view does not take old_str"
    assert _edit(tools, command="insert", path="pkg/calc.py", new_str="x") == "Error: insert needs insert_line and new_str"
    assert "does not exist; create it first" in _edit(tools, command="str_replace", path="nope.py", old_str="x")
    assert _edit(tools, command="str_replace", path="pkg", old_str="x") == "Error: pkg is not a file"
    assert tools.tool_errors == 5
    # What the schema already rules out never reaches the tool: the Toolbox answers with the expected form.
    with pytest.raises(ToolCallError, match=r"argument 'view_range'.*Expected str_replace_editor\(command: 'view'"):
        Toolbox(tools).call(ToolCall("str_replace_editor", {"command": "view", "path": "a", "view_range": [1]}))
    with pytest.raises(ToolCallError, match="argument 'command': Input should be 'view', 'create'"):
        Toolbox(tools).call(ToolCall("str_replace_editor", {"command": "delete", "path": "a"}))


# --- bash ---
def test_bash_runs_in_the_repository_and_shows_exit_codes_and_both_streams(tools: RepoTools) -> None:
    assert tools.bash(command="pwd", timeout=None) == f"exit code 0\n{REPO}"
    failed = tools.bash(command="echo out; echo err >&2; exit 3", timeout=None)
    assert failed == "exit code 3\nout\nerr"
    assert tools.bash(command="true", timeout=None) == "exit code 0\n(no output)"
    assert tools.bash(command="no-such-program", timeout=None).startswith("exit code 127\n")
    assert tools.bash(command="sleep 5", timeout=0.5) == "timed out: killed after 0.5s\n(no output)"
    assert tools.bash(command="  ", timeout=None) == "Error: bash needs a command"


def test_long_output_keeps_head_and_tail_and_says_how_much_was_cut(tools: RepoTools) -> None:
    answer = tools.bash(command="seq 1 20000", timeout=None)
    output = "\n".join(str(i) for i in range(1, 20001))
    status, shown = answer.split("\n", 1)
    assert status == "exit code 0"
    cut = len(output) - 1000
    assert shown == f"{output[:500]}\n[... {cut:,} characters cut ...]\n{output[-500:]}"
    assert truncate("short", 10) == "short"


def test_test_runs_are_noticed_and_their_pass_fraction_kept(tools: RepoTools) -> None:
    tools.bash(command="ls", timeout=None)
    assert tools.signals()["ran_tests"] is False and tools.tests_passed_frac is None
    first = tools.bash(command="python3 -m unittest discover -s tests -t .", timeout=None)
    assert first.startswith("exit code 1") and "FAILED (failures=1)" in first
    assert tools.ran_tests and tools.tests_passed_frac == 0.75
    _edit(tools, command="str_replace", path="pkg/calc.py",
          old_str="def sub(a, b):\n    return a + b", new_str="def sub(a, b):\n    return a - b")
    tools.bash(command="python3 -m unittest discover -s tests -t .", timeout=None)
    assert tools.tests_passed_frac == 1.0
    tools.bash(command="python3 -m unittest discover -s tests -t . -k nothing_matches", timeout=None)
    assert tools.tests_passed_frac is None  # the latest run ran no test
    assert tools.submit() == "Submitted. Files changed: pkg/calc.py."
    assert tools.signals() == {"files_modified": 1, "ran_tests": True, "tests_passed_frac": None, "submitted": True,
                               "tool_errors": 0}


@pytest.mark.parametrize("output, fraction", [
    ("===== 3 passed, 1 failed in 0.12s =====", 0.75),
    ("collected 5 items\n..F.E\n1 failed, 3 passed, 1 error, 2 warnings in 1.50s", 0.6),
    ("==== 2 passed, 1 skipped, 1 xfailed in 61.22s (0:01:01) ====", 1.0),
    ("=== 1 passed in 0.01s ===\nlater\n=== 1 failed in 0.01s ===", 0.0),  # the last run counts
    ("==== no tests ran in 0.01s ====", None),
    ("Ran 4 tests in 0.001s\n\nFAILED (failures=1, errors=1, skipped=1)", 1 / 3),
    ("Ran 2 tests in 0.001s\n\nOK", 1.0),
    ("nothing to see", None),
])
def test_test_summaries_give_the_pass_fraction(output: str, fraction: float | None) -> None:
    assert passed_fraction(output) == (None if fraction is None else pytest.approx(fraction))


@pytest.mark.parametrize("command, runs_tests", [
    ("pytest -q tests", True), ("python -m pytest -x", True), ("cd src && python3 -m pytest", True),
    ("PYTHONPATH=. timeout 60 .venv/bin/pytest", True), ("python -m unittest discover", True), ("tox -e py311", True),
    ("python tests/runtests.py queries", True), ("(cd x; nox)", True),
    ("pip install pytest", False), ("grep -r pytest setup.cfg", False), ("cat tox.ini", False), ("ls tests", False),
])
def test_test_commands_are_recognised_by_the_runner_in_command_position(command: str, runs_tests: bool) -> None:
    assert is_test_command(command) is runs_tests


# --- files changed through bash ---
def test_git_status_paths_from_real_git_output(pristine: Path, tmp_path: Path) -> None:
    repo = tmp_path / "copy"
    shutil.copytree(pristine, repo)
    (repo / "pkg" / "calc.py").write_text(CALC + "# changed\n")
    (repo / "pkg" / "new file.py").write_text("x\n")
    (repo / "pkg" / "__pycache__").mkdir()
    (repo / "pkg" / "__pycache__" / "calc.cpython-311.pyc").write_bytes(b"\0")
    (repo / "tests" / "x.pyc").write_bytes(b"\0")
    _git(repo, "mv", "README.md", "README.txt")
    status = subprocess.run(GIT_STATUS, cwd=repo, capture_output=True, text=True, check=True, timeout=30).stdout
    assert git_changed_paths(status) == {"pkg/calc.py", "pkg/new file.py", "README.txt"}


def test_files_changed_by_bash_count_where_the_sandbox_has_git(tools: RepoTools, sandbox: Sandbox) -> None:
    if not sandbox.exec("command -v git").ok:
        # Without git only editor changes count; the sandbox stops asking after the first try.
        tools.bash(command="echo '# more' >> pkg/calc.py", timeout=None)
        assert tools.files_modified == set() and tools.track_git is False
        pytest.skip("this sandbox's root filesystem has no git")
    tools.bash(command="echo '# more' >> pkg/calc.py && echo new > added.py && python3 -c 'import pkg.calc'",
               timeout=None)
    assert tools.files_modified == {"pkg/calc.py", "added.py"}


# --- search ---
def test_search_finds_lines_and_files(tools: RepoTools) -> None:
    lines = tools.search(pattern=r"return a \+ b", path=".", glob=None, mode="content")
    assert lines == "2 matching lines for 'return a \\\\+ b' in .:\npkg/calc.py:2:    return a + b\npkg/calc.py:6:    return a + b"
    assert tools.search(pattern="def (add|sub)", path="pkg", glob="*.py", mode="content").count("\n") == 2
    assert tools.search(pattern="calc", path=".", glob="*.md", mode="content").endswith("README.md:1:calc")
    assert tools.search(pattern="zebra", path=".", glob=None, mode="content") == "No matching lines for 'zebra' in .."
    assert tools.search(pattern="*.py", path="pkg", glob=None, mode="files").splitlines()[1:] == [
        "pkg/__init__.py", "pkg/calc.py", "pkg/sub/deep/far.py"]
    assert tools.search(pattern="HEAD", path=".", glob=None, mode="files") == "No files for 'HEAD' in .."


def test_search_caps_what_it_lists_and_reports_bad_calls(tools: RepoTools, sandbox: Sandbox) -> None:
    sandbox.write_file(f"{REPO}/many.txt", "hit\n" * 150)
    tools = RepoTools(sandbox, repo=REPO, observation_chars=100_000)  # the match cap, not the observation cap
    many = tools.search(pattern="hit", path=".", glob=None, mode="content")
    assert many.startswith("150 matching lines for 'hit' in .; the first 100 are shown") and many.count("\n") == 100
    assert tools.search(pattern="(", path=".", glob=None, mode="content").startswith("Error: grep failed:")
    assert tools.search(pattern="*.py", path=".", glob="*.py", mode="files").startswith("Error: glob is for content mode")
    assert tools.tool_errors == 2


def test_the_tools_schemas_are_what_an_env_hands_the_agent(tools: RepoTools) -> None:
    box = Toolbox(tools)
    assert box.names() == ["bash", "str_replace_editor", "search", "submit"]
    editor = box.schemas()[1]["function"]["parameters"]
    assert editor["required"] == ["command", "path"]
    assert editor["properties"]["command"]["enum"] == ["view", "create", "str_replace", "insert", "undo_edit"]
    assert editor["properties"]["view_range"] == {"type": "array", "items": {"type": "integer"}, "minItems": 2,
                                                  "maxItems": 2, "description": editor["properties"]["view_range"]["description"]}
    assert box.call(ToolCall("bash", {"command": "echo hi", "timeout": "5"})) == "exit code 0\nhi"
    assert box.call(ToolCall("submit", {})).startswith("Submitted.") and tools.submitted
