"""Grading on real pytest logs: eval_script's run on a tiny project, graded as swebench grades it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest
from swebench.harness.constants import END_TEST_OUTPUT, START_TEST_OUTPUT, TEST_EXIT_CODE, ResolvedStatus
from swebench.harness.grading import get_logs_eval
from swebench.harness.log_parsers import parse_log_pytest
from unidiff import PatchSet

from agentgym.envs.swe.grading import (
    GradeReport, agent_diff_filter, eval_script, grade, is_test_path, swebench_test_spec,
)
from agentgym.envs.swe.instance import SWEInstance, test_files
from agentgym.envs.swe.specs import RepoSpec

BUGGY = "def add(a, b):\n    return a - b\n\ndef sub(a, b):\n    return a - b\n"
FIXED = BUGGY.replace("return a - b\n\ndef sub", "return a + b\n\ndef sub")
TESTS = textwrap.dedent(
    """
    import pytest
    from calc import add, sub

    def test_add():
        assert add(2, 3) == 5

    def test_sub():
        assert sub(5, 3) == 2

    @pytest.mark.parametrize("word", ["a b", "c"])
    def test_words(word):
        assert word
    """
)
F2P = ["tests/test_calc.py::test_add"]
# "test_words[a" is how SWE-bench files record the "a b" case: the parser splits its line at the space.
P2P = ["tests/test_calc.py::test_sub", "tests/test_calc.py::test_words[a", "tests/test_calc.py::test_words[c]"]


def make_instance() -> SWEInstance:
    """An instance whose tests are those of the tiny project."""
    return SWEInstance(
        instance_id="toy__calc-1", repo="toy/calc", base_commit="0" * 40, problem_statement="add subtracts",
        patch="", FAIL_TO_PASS=F2P, PASS_TO_PASS=P2P, version="1.0",
    )


SPEC = RepoSpec(repo="toy/calc", test_cmd=f"{sys.executable} -m pytest -rA -p no:cacheprovider")


def run_eval(tmp_path, source: str) -> str:
    """The log of eval_script run with bash in a project whose calc.py is `source`."""
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True, exist_ok=True)
    (project / "calc.py").write_text(source)
    (project / "tests" / "test_calc.py").write_text(TESTS)
    (project / "pytest.ini").write_text("[pytest]\npythonpath = .\n")
    script = eval_script(make_instance(), SPEC, workdir=str(project))
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


def test_script_quotes_ids_and_trims_truncated_ones():
    script = eval_script(make_instance(), SPEC)
    assert "cd /testbed" in script
    assert "tests/test_calc.py::test_words " in script + " "  # the truncated id runs its whole function
    assert "'tests/test_calc.py::test_words[c]'" in script  # brackets are quoted, not globbed
    assert script.index(START_TEST_OUTPUT) < script.index(END_TEST_OUTPUT) < script.index(TEST_EXIT_CODE)


def test_buggy_code_is_not_resolved_and_fixed_code_is(tmp_path):
    buggy_log = run_eval(tmp_path, BUGGY)
    buggy = grade(make_instance(), SPEC, buggy_log)
    assert not buggy.resolved
    assert buggy.status == ResolvedStatus.NO.value
    assert buggy.fail_to_pass.failure == F2P and buggy.pass_to_pass.success == P2P
    assert buggy.exit_code == 1 and buggy.error is None

    fixed_log = run_eval(tmp_path, FIXED)
    fixed = grade(make_instance(), SPEC, fixed_log)
    assert fixed.resolved and fixed.status == ResolvedStatus.FULL.value
    assert fixed.fail_to_pass.success == F2P and fixed.pass_to_pass.failure == []
    assert fixed.exit_code == 0


def test_statuses_match_swebench_own_parser_and_log_reader(tmp_path):
    log = run_eval(tmp_path, BUGGY)
    report = grade(make_instance(), SPEC, log)
    inside = log.split(START_TEST_OUTPUT)[1].split(END_TEST_OUTPUT)[0]
    assert report.tests == parse_log_pytest(inside, None)
    assert report.tests["tests/test_calc.py::test_add"] == "FAILED"
    assert report.tests["tests/test_calc.py::test_words[a"] == "PASSED"
    log_file = tmp_path / "test_output.txt"
    log_file.write_text(log)
    status_map, found = get_logs_eval(swebench_test_spec(make_instance(), SPEC), str(log_file))
    assert found and status_map == report.tests


def test_logs_that_cannot_be_graded(tmp_path):
    fixed_log = run_eval(tmp_path, FIXED)
    cut = grade(make_instance(), SPEC, fixed_log.split(END_TEST_OUTPUT)[0])
    assert not cut.resolved and "end marker is missing" in cut.error
    # Every test printed PASSED, yet the command failed: the log is not to be trusted (swebench's rule).
    forged = fixed_log.replace(f"{TEST_EXIT_CODE}: 0", f"{TEST_EXIT_CODE}: 1")
    report = grade(make_instance(), SPEC, forged)
    assert not report.resolved and "exited 1" in report.error
    failed = GradeReport.patch_failed("hunk #1 of calc.py")
    assert not failed.resolved and failed.status == ResolvedStatus.NO.value and "calc.py" in failed.error
    applied_badly = grade(make_instance(), SPEC, ">>>>> Patch Apply Failed\n" + fixed_log)
    assert not applied_badly.resolved and applied_badly.error.startswith("patch failed to apply")


TEST_PATCH = """diff --git a/tests/test_calc.py b/tests/test_calc.py
--- a/tests/test_calc.py
+++ b/tests/test_calc.py
@@ -1 +1,2 @@
 import pytest
+import calc
diff --git a/fixtures.py b/fixtures.py
new file mode 100644
--- /dev/null
+++ b/fixtures.py
@@ -0,0 +1 @@
+DATA = 1
"""


def file_diff(path: str, old: str, new: str) -> str:
    """A one-line change of `path`."""
    return f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-{old}\n+{new}\n"


def test_agent_diff_filter_drops_test_files_only(tmp_path):
    source_change = file_diff("calc.py", "def add(a, b):", "def add(a, b):  # fixed")
    diff = (
        source_change
        + file_diff("tests/test_calc.py", "import pytest", "import pytest  # edited")
        + file_diff("fixtures.py", "DATA = 1", "DATA = 2")  # not a test path, but the test patch touches it
        + file_diff("pkg/conftest.py", "x = 1", "x = 2")
        + file_diff("pkg/test_extra.py", "x = 1", "x = 2")
        + file_diff("pkg/io_test.py", "x = 1", "x = 2")
        + "diff --git a/tests/helper.py b/helper.py\nsimilarity index 100%\nrename from tests/helper.py\nrename to helper.py\n"
    )
    kept = agent_diff_filter(diff, TEST_PATCH)
    assert test_files(kept) == ["calc.py"]
    assert kept == str(PatchSet(source_change))  # unidiff's rendering: "@@ -1 +1 @@" becomes "@@ -1,1 +1,1 @@"
    if shutil.which("git"):
        # What is left is still a diff git applies.
        subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30)
        (tmp_path / "calc.py").write_text("def add(a, b):\n")
        subprocess.run(["git", "-C", str(tmp_path), "apply", "-"], input=kept, text=True, check=True, timeout=30)
        assert "# fixed" in (tmp_path / "calc.py").read_text()
    assert agent_diff_filter("", TEST_PATCH) == ""


@pytest.mark.parametrize(
    ("path", "guarded"),
    [
        ("tests/unit/helpers.py", True),
        ("src/test_io.py", True),
        ("src/io_test.py", True),
        ("conftest.py", True),
        ("src/testing.py", False),
        ("src/contest.py", False),
        ("tests.py", False),
        ("docs/latest_notes.md", False),
    ],
)
def test_is_test_path(path, guarded):
    assert is_test_path(path) is guarded
