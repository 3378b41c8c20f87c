"""Grading SWE tasks with swebench's own log parsers and reports: the eval script, the grade, the agent-diff filter."""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath

from pydantic import BaseModel, ConfigDict, Field
from swebench.harness.constants import (
    APPLY_PATCH_FAIL,
    END_TEST_OUTPUT,
    FAIL_ONLY_REPOS,
    FAIL_TO_PASS,
    NON_TEST_EXTS,
    PASS_TO_PASS,
    RESET_FAILED,
    START_TEST_OUTPUT,
    TEST_EXIT_CODE,
    TEST_EXIT_CODE_VAR,
    TESTS_ERROR,
    TESTS_TIMEOUT,
    EvalType,
    ResolvedStatus,
    TestStatus,
)
from swebench.harness.grading import SUITE_RAN, get_eval_tests_report, get_resolution_status, parse_test_exit_code
from swebench.harness.log_parsers import PARSER_REGISTRY
from swebench.types import TestSpec

from agentgym.envs.swe.instance import SWEInstance, parse_patch, patched_paths, test_files
from agentgym.envs.swe.specs import RepoSpec

# Lines swebench's harness writes when a run went wrong before or around the tests.
_BAD_RUN_MARKERS = {
    APPLY_PATCH_FAIL: "a patch failed to apply",
    RESET_FAILED: "resetting the repo failed",
    TESTS_ERROR: "the test command errored",
    TESTS_TIMEOUT: "the tests timed out",
}


class TestOutcome(BaseModel):
    """Tests of one list (FAIL_TO_PASS or PASS_TO_PASS) that ended as the list expects, and those that did not."""

    __test__ = False  # not a pytest test class, despite the name
    model_config = ConfigDict(frozen=True, extra="forbid")

    success: list[str] = Field(default_factory=list)
    failure: list[str] = Field(default_factory=list)


class GradeReport(BaseModel):
    """The verdict on one candidate patch: swebench's resolution status and the per-test results behind it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resolved: bool = Field(description="True only for swebench's RESOLVED_FULL.")
    status: str = Field(description="swebench's ResolvedStatus value: RESOLVED_FULL, RESOLVED_PARTIAL or RESOLVED_NO.")
    fail_to_pass: TestOutcome = Field(default_factory=TestOutcome)
    pass_to_pass: TestOutcome = Field(default_factory=TestOutcome)
    tests: dict[str, str] = Field(default_factory=dict, description="Each test id the parser found, with its status.")
    exit_code: int | None = Field(None, description="The test command's exit status, where the log records it.")
    error: str | None = Field(None, description="Why the log could not be graded; None when it was.")

    @classmethod
    def invalid(cls, reason: str, tests: dict[str, str] | None = None, exit_code: int | None = None) -> GradeReport:
        """Not resolved, because the log does not describe a test run that can be graded."""
        return cls(resolved=False, status=ResolvedStatus.NO.value, tests=tests or {}, exit_code=exit_code, error=reason)

    @classmethod
    def patch_failed(cls, reason: str) -> GradeReport:
        """Not resolved, because the candidate patch (or the test patch) did not apply."""
        return cls.invalid(f"patch failed to apply: {reason}")


def eval_script(instance: SWEInstance, spec: RepoSpec, workdir: str | None = "/testbed") -> str:
    """A bash script that runs the instance's tests between swebench's output markers and records the exit code.

    Run it after the candidate patch and the test patch are applied. The targets (spec.test_targets)
    are appended to the last command of spec.test_cmd. The deadline is the runner's
    (spec.test_timeout_s): a run cut off lacks the end marker, which grade() reports.
    """
    command = " ".join([spec.test_cmd, *(shlex.quote(t) for t in _test_targets(instance, spec))])
    lines = ["#!/bin/bash", "set -uo pipefail"]  # no -e: the test command's failure must not end the script
    if workdir is not None:
        lines.append(f"cd {shlex.quote(workdir)} || exit 1")
    lines += [
        f"echo {shlex.quote(START_TEST_OUTPUT)}",
        # One stream, so that the test output lands between the markers in order; no stdin, so nothing waits on it.
        f"{{ {command}\n}} </dev/null 2>&1",
        f"{TEST_EXIT_CODE_VAR}=$?",
        f"echo {shlex.quote(END_TEST_OUTPUT)}",
        # swebench's form, after the end marker so the parser never reads it (swebench.harness.utils.record_test_exit_code).
        f'echo "{TEST_EXIT_CODE}: ${TEST_EXIT_CODE_VAR}"',
    ]
    return "\n".join(lines) + "\n"


def _test_targets(instance: SWEInstance, spec: RepoSpec) -> list[str]:
    if spec.test_targets == "none":
        return []
    if spec.test_targets == "test_files":
        # As SWE-bench's directives: the test patch's files that still exist, data files left out.
        return [
            p.path
            for p in parse_patch(instance.test_patch)
            if not p.is_removed_file and not any(p.path.endswith(ext) for ext in NON_TEST_EXTS)
        ]
    targets: list[str] = []
    for test_id in [*instance.FAIL_TO_PASS, *instance.PASS_TO_PASS]:
        # Ids cut at a space inside a parameter (pytest -rA prints the space, parsers split on it) name no
        # node pytest can find, and one unknown node id stops the whole run; the function runs all its cases.
        if test_id.count("[") > test_id.count("]"):
            test_id = test_id.split("[", 1)[0]
        if test_id not in targets:
            targets.append(test_id)
    return targets


def grade(instance: SWEInstance, spec: RepoSpec, log: str) -> GradeReport:
    """Grade the log of eval_script's run as swebench's get_logs_eval and get_eval_report would."""
    for marker, what in _BAD_RUN_MARKERS.items():
        if marker in log:
            return GradeReport.patch_failed(what) if marker == APPLY_PATCH_FAIL else GradeReport.invalid(what)
    if START_TEST_OUTPUT not in log or END_TEST_OUTPUT not in log:
        missing = "start" if START_TEST_OUTPUT not in log else "end"
        return GradeReport.invalid(f"the test output's {missing} marker is missing: the tests did not start or were cut off")
    parser = PARSER_REGISTRY[spec.log_parser]
    test_spec = swebench_test_spec(instance, spec)
    tests = parser(log.split(START_TEST_OUTPUT, 1)[1].split(END_TEST_OUTPUT, 1)[0], test_spec)
    if not tests:
        # swebench's fallback: some runners print their results outside the markers.
        tests = parser(log, test_spec)
    exit_code = parse_test_exit_code(log)
    if not tests and not SUITE_RAN.search(log):
        return GradeReport.invalid("no test results in the log, and no sign that the test suite ran", exit_code=exit_code)
    failing = {TestStatus.FAILED.value, TestStatus.ERROR.value}
    if exit_code not in (None, 0) and tests and not failing & set(tests.values()):
        # A patch can print its own PASSED lines (a conftest hook); a failing exit with no failure says so.
        return GradeReport.invalid(
            f"the test command exited {exit_code} but the log reports no failing test", tests=tests, exit_code=exit_code
        )
    gold = {"instance_id": instance.instance_id, FAIL_TO_PASS: instance.FAIL_TO_PASS, PASS_TO_PASS: instance.PASS_TO_PASS}
    report = get_eval_tests_report(tests, gold, eval_type=EvalType(test_spec.eval_type))
    status = get_resolution_status(report)
    return GradeReport(
        resolved=status == ResolvedStatus.FULL.value,
        status=status,
        fail_to_pass=TestOutcome.model_validate(report[FAIL_TO_PASS]),
        pass_to_pass=TestOutcome.model_validate(report[PASS_TO_PASS]),
        tests=tests,
        exit_code=exit_code,
    )


def swebench_test_spec(instance: SWEInstance, spec: RepoSpec) -> TestSpec:
    """swebench's TestSpec for an instance, for its parsers and log readers (no image or eval script in it)."""
    # Some parsers read the instance id or version from the TestSpec, so it carries the real ones.
    eval_type = EvalType.FAIL_ONLY if instance.repo in FAIL_ONLY_REPOS else EvalType.PASS_AND_FAIL
    return TestSpec(
        instance_id=instance.instance_id,
        image=instance.image_name or "",
        eval_script_list=[],
        repo=instance.repo,
        version=instance.version or "",
        FAIL_TO_PASS=instance.FAIL_TO_PASS,
        PASS_TO_PASS=instance.PASS_TO_PASS,
        log_parser=spec.log_parser,
        eval_type=eval_type.value,
    )


def is_test_path(path: str) -> bool:
    """True for a path the agent may not change: a test module, a file under a tests/ directory, or a conftest.py."""
    parts = PurePosixPath(path).parts
    name = parts[-1] if parts else ""
    # conftest.py runs inside pytest and can rewrite results, so it is guarded like a test.
    return name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py" or "tests" in parts[:-1]


def agent_diff_filter(diff: str, test_patch: str) -> str:
    """The agent's diff without the files it may not change: those the test patch touches, and any is_test_path.

    A file is dropped whole (every hunk) when either side of it (a rename's old or new path) is guarded,
    so that an agent cannot make the tests pass by editing, adding, renaming or deleting them.
    The files kept are written as unidiff renders them (hunk headers in full, "@@ -1,1 +1,1 @@").
    """
    guarded = set(test_files(test_patch))
    kept = []
    for patched in parse_patch(diff):
        paths = patched_paths(patched)
        if guarded.intersection(paths) or any(is_test_path(p) for p in paths):
            continue
        kept.append(str(patched))
    return "".join(kept)
