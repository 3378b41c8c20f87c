"""The SWE task builder: problem statements, specs and rebuilt commits here; end to end through Docker (slow)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from agentgym.envs.swe import builder, grading, problem_statements, repos
from agentgym.envs.swe import mutations as mut
from agentgym.envs.swe.instance import SWEInstance
from agentgym.envs.swe.specs import load_specs

OPS = textwrap.dedent('''\
    """Small numeric helpers."""


    def clamp(x, lo, hi):
        if x < lo:
            return lo
        if x > hi:
            return hi
        return x


    def mean(xs):
        if not xs:
            raise ValueError("mean of an empty sequence")
        return sum(xs) / len(xs)


    def window(xs, n):
        return [xs[i:i + n] for i in range(len(xs) - n + 1)]


    def count_if(pred, xs):
        total = 0
        for x in xs:
            if pred(x):
                total += 1
        return total


    def countdown(n):
        steps = 0
        while n > 0:
            n -= 1
            steps += 1
        return steps
''')

TESTS = textwrap.dedent('''\
    import pytest

    from calc.ops import clamp, count_if, countdown, mean, window


    @pytest.mark.parametrize("x, want", [(-5, 0), (0, 0), (3, 3), (10, 10), (11, 10)])
    def test_clamp(x, want):
        assert clamp(x, 0, 10) == want


    def test_mean():
        assert mean([1, 2, 3, 4]) == 2.5


    def test_mean_of_nothing():
        with pytest.raises(ValueError):
            mean([])


    def test_window():
        assert window([1, 2, 3, 4], 2) == [[1, 2], [2, 3], [3, 4]]


    def test_count_if():
        assert count_if(lambda v: v % 2 == 0, range(10)) == 5


    def test_countdown():
        assert countdown(4) == 4
''')

LOG = textwrap.dedent('''\
    ============================= test session starts ==============================
    collected 3 items

    calc/tests/test_ops.py F.F                                               [100%]

    =================================== FAILURES ===================================
    __________________________________ test_mean ___________________________________
    calc/tests/test_ops.py:5: in test_mean
        assert mean([1, 2, 3, 4]) == 2.5
    calc/ops.py:12: in mean
        return sum(xs) // len(xs) + secret_marker_line
    E   AssertionError: assert 2 == 3
    E    +  where 2 = mean([1, 2, 3, 6])
    E   Use -v to get more diff
    ___________________________ TestBox.test_get[a-1] ____________________________
    calc/tests/test_ops.py:9: in test_get
        assert box.get("a") == 1
    E   KeyError: 'a' in return sum(xs) // len(xs) + secret_marker_line
    E   KeyError: 'a'
    E   where <function f at 0x7fbcc12d27a0> was called
    =========================== short test summary info ============================
    FAILED calc/tests/test_ops.py::test_mean - AssertionError: assert 2 == 3
    FAILED calc/tests/test_ops.py::TestBox::test_get[a-1] - KeyError: 'a'
    PASSED calc/tests/test_ops.py::test_window
''')


def make_project(root: Path) -> Path:
    (root / "calc").mkdir(parents=True)
    (root / "calc" / "__init__.py").write_text("")
    (root / "calc" / "ops.py").write_text(OPS)
    (root / "tests").mkdir()
    (root / "tests" / "test_ops.py").write_text(TESTS)
    (root / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: calc\nVersion: 0.1\n")
    return root


def test_statement_quotes_errors_but_no_library_frame():
    failing = ["calc/tests/test_ops.py::test_mean", "calc/tests/test_ops.py::TestBox::test_get[a-1]"]
    excerpts = problem_statements.failure_excerpts(LOG, failing)
    assert excerpts[failing[0]] == ["   AssertionError: assert 2 == 3", "    +  where 2 = mean([1, 2, 3, 6])"]
    assert excerpts[failing[1]][-2] == "   KeyError: 'a'"
    text = problem_statements.write_statement("calc", "0.1", failing, LOG, seed="x",
                                              hide=["return sum(xs) // len(xs) + secret_marker_line"])
    assert "secret_marker_line" not in text  # neither the frame inside the library nor an error quoting it
    assert "calc/ops.py" not in text
    assert "`calc/tests/test_ops.py::test_mean`" in text and "TestBox.test_get[a-1]" in text
    assert "AssertionError: assert 2 == 3" in text and "Use -v" not in text
    assert "<function f at 0x...> was called" in text  # addresses change from run to run
    assert "python -m pytest calc/tests/test_ops.py" in text
    assert text == problem_statements.write_statement("calc", "0.1", failing, LOG, seed="x",
                                                      hide=["return sum(xs) // len(xs) + secret_marker_line"])


def test_statement_needs_a_failing_test():
    with pytest.raises(ValueError, match="at least one failing test"):
        problem_statements.write_statement("calc", "0.1", [], LOG, seed="x")


def test_spec_pins_pytest_and_reads_runtime_requirements(tmp_path):
    tree = make_project(tmp_path / "p")
    spec = builder.repo_spec(tree, "pypi/calc", "0.1")
    assert spec.pip == [f"pytest=={builder.PYTEST_VERSION}"] and spec.repo == "pypi/calc" and spec.version == "0.1"
    assert spec.test_cmd == builder.TEST_CMD and spec.log_parser == "parse_log_pytest"
    assert spec.test_targets == "test_ids"  # the test patch is empty: the grader runs FAIL_TO_PASS + PASS_TO_PASS
    (tree / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: calc\nRequires-Dist: six>=1.0\n"
                                   "Requires-Dist: pytest; extra == 'test'\n")
    (tree / "src").mkdir()
    newer = builder.repo_spec(tree, "pypi/calc", "0.2")
    assert newer.pip == [f"pytest=={builder.PYTEST_VERSION}", "six>=1.0"]
    assert newer.test_cmd.startswith("PYTHONPATH=src ")
    out = tmp_path / "calc.specs.yaml"
    builder.write_specs(out, spec)
    builder.write_specs(out, newer)
    builder.write_specs(out, spec)  # replaces, never duplicates
    loaded = load_specs(out)
    assert sorted(s.version for s in loaded.specs) == ["0.1", "0.2"]
    assert loaded.lookup("pypi/calc", "0.2") == newer


def fake_outcome(m: mut.Mutation) -> builder._Outcome:
    return builder._Outcome(m, None, ["tests/test_ops.py::test_mean"], ["tests/test_ops.py::test_window"], LOG)


def test_instances_use_swebench_fields_and_base_commits_rebuild_anywhere(tmp_path):
    tree = make_project(tmp_path / "p")
    local = repos.repo_from_tree(tree, "calc", "0.1", tmp_path / "repos")
    (m,) = [m for m in mut.mutations_in_source(OPS, "calc/ops.py")
            if m.function == "mean" and m.operator == "swap_arithmetic" and "//" in m.replacement]
    inst = builder.make_instance(local, tree, m, fake_outcome(m), builder.TEST_CMD, builder.BuildOptions())
    assert set(inst) == {"repo", "instance_id", "base_commit", "patch", "test_patch", "problem_statement",
                         "hints_text", "created_at", "version", "FAIL_TO_PASS", "PASS_TO_PASS",
                         "environment_setup_commit"}
    assert inst["instance_id"] == f"pypi__calc-{m.key()}" and inst["repo"] == "pypi/calc"
    assert json.loads(inst["FAIL_TO_PASS"]) == ["tests/test_ops.py::test_mean"] and inst["test_patch"] == ""
    assert inst["environment_setup_commit"] == local.commit and inst["created_at"] == builder.created_at(m)
    assert inst["created_at"].endswith("Z") and inst["created_at"].startswith("2024-")
    assert inst["patch"].startswith("diff --git a/calc/ops.py b/calc/ops.py")
    assert "-    return sum(xs) // len(xs)\n+    return sum(xs) / len(xs)\n" in inst["patch"]
    assert "//" not in inst["problem_statement"]
    # The buggy commit is an orphan, tagged per instance.
    parents = subprocess.run(["git", "log", "-1", "--format=%P", inst["base_commit"]], cwd=local.path,
                             capture_output=True, text=True, check=True).stdout.strip()
    assert parents == ""
    assert repos.resolve_ref(local.path, f"refs/tags/agentgym/{inst['instance_id']}") == inst["base_commit"]
    # Another machine: the same sdist tree, then the task file's base commit rebuilt from the gold patch.
    other = repos.repo_from_tree(make_project(tmp_path / "q"), "calc", "0.1", tmp_path / "elsewhere")
    with pytest.raises(repos.RepoError, match="has no commit"):
        repos.check_commit(other.path, inst["base_commit"])
    builder.rebuild_base_commits([inst], other.path)
    repos.check_commit(other.path, inst["base_commit"])
    assert repos.read_blob(other.path, inst["base_commit"], "calc/ops.py").decode() == m.apply(OPS)


def test_rebuild_refuses_a_patch_that_gives_another_commit(tmp_path):
    tree = make_project(tmp_path / "p")
    local = repos.repo_from_tree(tree, "calc", "0.1", tmp_path / "repos")
    m = mut.mutations_in_source(OPS, "calc/ops.py")[0]
    inst = builder.make_instance(local, tree, m, fake_outcome(m), builder.TEST_CMD, builder.BuildOptions())
    other = repos.repo_from_tree(make_project(tmp_path / "q"), "calc", "0.1", tmp_path / "elsewhere")
    forged = {**inst, "base_commit": "1" * 40}
    with pytest.raises(builder.BuildError, match="rebuilt base commit .* is not 1111"):
        builder.rebuild_base_commits([forged], other.path)


def test_bad_arguments_get_one_clear_line(tmp_path):
    local = repos.repo_from_tree(make_project(tmp_path / "p"), "calc", "0.1", tmp_path / "repos")
    with pytest.raises(builder.BuildError, match="at least 1"):
        builder.build_tasks_for_repo(local, 0, tmp_path / "out.jsonl")
    with pytest.raises(builder.BuildError, match="use the docker backend"):
        builder.build_tasks_for_repo(local, 1, tmp_path / "out.jsonl", sandbox_backend="bwrap")
    (tmp_path / "bad.jsonl").write_text('{"repo": "pypi/calc"\n')
    with pytest.raises(builder.BuildError, match="bad.jsonl line 1 is not JSON"):
        builder.read_instances(tmp_path / "bad.jsonl")


# --- end to end, in Docker ---

@pytest.fixture(scope="module")
def image():
    from agentgym.sandboxes.base import SandboxError

    try:
        return builder._ensure_image([f"pytest=={builder.PYTEST_VERSION}"])
    except SandboxError as exc:
        pytest.skip(f"no Docker image with pytest: {exc}")


def graded(tree: Path, image: str, inst: dict, spec) -> grading.GradeReport:
    """The grader's verdict on `tree`: its eval script run in a fresh sandbox, its log graded."""
    from agentgym.sandboxes import SandboxSpec, create_sandbox

    instance = SWEInstance.from_record(inst)
    with create_sandbox(SandboxSpec(image=image, memory_mb=1024, disk_mb=256), backend="docker") as box:
        box.upload(tree)
        box.write_file("eval.sh", grading.eval_script(instance, spec, workdir=None))
        result = box.exec("bash eval.sh", timeout=120)
    return grading.grade(instance, spec, result.stdout)


@pytest.mark.slow
def test_build_end_to_end_through_docker(tmp_path, image):
    local = repos.repo_from_tree(make_project(tmp_path / "calc-0.1"), "calc", "0.1", tmp_path / "repos")
    out = tmp_path / "tasks" / "calc.jsonl"
    options = builder.BuildOptions(timeout_s=10, image=image)
    report = builder.build_tasks_for_repo(local, 3, out, seed=0, options=options)
    instances = builder.read_instances(out)
    assert report.instances == len(instances) == 3 and report.kept == 3 and report.passing_tests == 10
    assert report.tried == 3 + sum(report.skipped.values())
    spec = load_specs(builder.specs_path(out)).lookup("pypi/calc", "0.1")
    verdicts = builder.read_instances(builder.candidates_log(out))
    assert len(verdicts) == report.tried and {v["outcome"] for v in verdicts} <= {"kept", "skipped"}
    for inst in instances:
        f2p, p2p = json.loads(inst["FAIL_TO_PASS"]), json.loads(inst["PASS_TO_PASS"])
        assert 1 <= len(f2p) <= 20 and not set(f2p) & set(p2p)
        files = sorted({t.split("::")[0] for t in f2p})
        assert all(t.split("::")[0] in files for t in p2p)
        # What the agent gets: the buggy tree alone. Its F2P tests fail there...
        work = repos.export_tree(local.path, inst["base_commit"], tmp_path / inst["instance_id"])
        assert subprocess.run(["git", "log", "--all", "--format=%H"], cwd=work.path, capture_output=True,
                              text=True, check=True).stdout.split() == [work.head]
        before = graded(work.path, image, inst, spec)
        assert not before.resolved and before.error is None
        assert before.fail_to_pass.failure == f2p and before.pass_to_pass.success == p2p
        assert all(before.tests[t] in ("FAILED", "ERROR") for t in f2p)
        # ...and pass, with every P2P test, once the gold patch is applied.
        subprocess.run(["git", "apply", "-"], cwd=work.path, input=inst["patch"], text=True, check=True)
        after = graded(work.path, image, inst, spec)
        assert after.resolved and all(after.tests[t] == "PASSED" for t in f2p + p2p)
        assert inst["instance_id"].split("-")[-1] not in inst["problem_statement"]
        assert f2p[0] in inst["problem_statement"]
    # A rerun resumes: nothing is tried again, nothing is added.
    again = builder.build_tasks_for_repo(local, 3, out, seed=0, options=options)
    assert again.tried == 0 and again.instances == 3 and len(builder.read_instances(out)) == 3
    # Asking for more goes on from the next untried candidate and keeps what is there.
    more = builder.build_tasks_for_repo(local, 4, out, seed=0, options=options)
    grown = builder.read_instances(out)
    assert more.instances == 4 and more.kept == 1 and grown[:3] == instances
    judged = [v["key"] for v in builder.read_instances(builder.candidates_log(out)) if v.get("reason") != builder.ENOUGH]
    assert len(judged) == len(set(judged))  # no candidate judged twice


@pytest.mark.slow
def test_hangs_and_untested_code_are_skipped_with_their_reason(tmp_path, image):
    tree = make_project(tmp_path / "calc-0.1")
    source = (tree / "calc" / "ops.py").read_text()
    found = mut.mutations_in_source(source, "calc/ops.py")
    (hang,) = [m for m in found if m.function == "countdown" and m.operator == "swap_augmented"
               and "n += 1" in m.replacement]
    (caught,) = [m for m in found if m.function == "mean" and m.operator == "swap_arithmetic"]
    options = builder.BuildOptions(image=image)
    spec = builder.repo_spec(tree, "pypi/calc", "0.1")
    with builder._Runners(tree, builder.TEST_CMD, image, 1, options) as runners:
        passing, _ = runners.baseline()
        judge = builder._Judge(runners, spec, passing, timeout=5, max_failing=20)
        assert judge(hang).reason == "timeout"
        # The killed run's sandbox was replaced: the next candidate runs on the pristine tree plus its own bug.
        verdict = judge(caught)
        assert verdict.reason is None and verdict.fail_to_pass == ["tests/test_ops.py::test_mean"]
        assert "tests/test_ops.py::test_window" in verdict.pass_to_pass
        tight = builder._Judge(runners, spec, passing, timeout=30, max_failing=1)
        clamp_bugs = [m for m in found if m.function == "clamp" and m.operator == "drop_return_value"]
        assert any(tight(m).reason == "too many tests fail (>1)" for m in clamp_bugs)
