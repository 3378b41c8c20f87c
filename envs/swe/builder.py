"""SWE tasks from a real project offline: inject a bug, keep it if a few of the project's own tests catch it.

`build_tasks("toolz==1.0.0", n, out)` makes the project's repository from its sdist (repos.py), runs its
test suite on the pristine tree in a sandbox (twice: a test must pass both times to count), then tries
mutations (mutations.py) in a seeded order, each on the whole suite with a timeout. A mutation is kept
when at least one and at most `max_failing` tests fail and the grader itself (grading.eval_script and
grade, on the tests of the failing files) finds the bug unresolved and the pristine tree resolved.
A kept mutation becomes a SWE-bench instance: the buggy tree
is an orphan commit (tag `agentgym/<instance_id>`) so its history cannot reveal the fix; `patch` is the
fix (buggy -> pristine); FAIL_TO_PASS / PASS_TO_PASS are JSON lists over the files the grader runs.
Every candidate's outcome is appended to `<out>.candidates.jsonl`, so a rerun resumes where it stopped.
"""

from __future__ import annotations

import collections
import datetime as dt
import difflib
import email.parser
import json
import logging
import os
import queue
import shlex
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from agentgym.cache import cache_root, recipe_key
from agentgym.envs.swe import grading, problem_statements, repos
from agentgym.envs.swe import mutations as mut
from agentgym.envs.swe.instance import SWEInstance
from agentgym.envs.swe.specs import RepoSpec, SpecSet, load_specs
from agentgym.errors import AgentGymError

log = logging.getLogger(__name__)

PYTEST_VERSION = "9.2.0"
TEST_CMD = "python3 -m pytest -rA --tb=short -p no:cacheprovider"
LOG_PARSER = "parse_log_pytest"
# created_at (and the buggy commit's date) falls in this year, at an offset drawn from the mutation's hash.
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
_FAILED = ("FAILED", "ERROR")
ENOUGH = "function has enough instances"
# Where grading's eval script is written in a sandbox's workdir while it runs.
EVAL_SCRIPT = ".agentgym-eval.sh"


class BuildError(AgentGymError):
    """A task build that cannot go on; the message says why and what to do."""


class BuildOptions(BaseModel):
    """How candidates are run and judged; the defaults suit small pure-Python projects."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_failing: int = Field(20, ge=1, description="Most tests a kept bug may break (more is not a small bug).")
    max_per_function: int = Field(2, ge=1, description="Most instances from bugs in one function.")
    timeout_s: float | None = Field(None, gt=0, description="Per test run; None: 4x the pristine suite's time + 20 s.")
    memory_mb: int = Field(2048, ge=256, description="Sandbox memory (its workdir's files count against it).")
    disk_mb: int = Field(1024, ge=64, description="Sandbox workdir size.")
    image: str | None = Field(None, description="Docker image with the spec's pip packages; None: built from them.")
    rewrite_base_url: str | None = Field(None, description="OpenAI-compatible server to rephrase statements; None: off.")
    rewrite_model: str | None = Field(None, description="Model name for the rephrasing server.")


@dataclass
class BuildReport:
    """What a build did: instances in the file, candidates kept and skipped (by reason), and how long it took."""

    out_path: Path
    repo: str
    version: str
    instances: int = 0
    kept: int = 0
    tried: int = 0
    candidates: int = 0
    passing_tests: int = 0
    suite_seconds: float = 0.0
    seconds: float = 0.0
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass
class _Run:
    """One pytest run in a sandbox: per-test statuses (swebench's parser), its log and how it ended."""

    statuses: dict[str, str]
    log: str
    exit_code: int
    timed_out: bool
    oom_killed: bool
    seconds: float


@dataclass
class _Outcome:
    """The verdict on one candidate: a reason it was skipped, or the tests that make it an instance."""

    mutation: mut.Mutation
    reason: str | None = None
    fail_to_pass: list[str] = field(default_factory=list)
    pass_to_pass: list[str] = field(default_factory=list)
    log: str = ""
    seconds: float = 0.0


def repo_spec(tree: Path, repo: str, version: str) -> RepoSpec:
    """The RepoSpec of a project tree: pytest (pinned) plus its runtime requirements, the test command, the parser."""
    pip = [f"pytest=={PYTEST_VERSION}", *runtime_requirements(tree)]
    # A src/ layout is importable without an install once src is on the path.
    src_layout = (tree / "src").is_dir() and not (tree / "src" / "__init__.py").exists()
    cmd = f"PYTHONPATH=src {TEST_CMD}" if src_layout else TEST_CMD
    return RepoSpec(repo=repo, version=version, pip=pip, test_cmd=cmd, test_targets="test_ids", log_parser=LOG_PARSER)


def runtime_requirements(tree: Path) -> list[str]:
    """Requires-Dist entries of the sdist's PKG-INFO that no extra gates (what `import package` needs)."""
    info = tree / "PKG-INFO"
    if not info.is_file():
        return []
    meta = email.parser.Parser().parsestr(info.read_text(encoding="utf-8", errors="replace"))
    required = [r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r.replace("extra==", "extra ==")]
    return sorted(r.split(";")[0].strip() for r in required)


def specs_path(out_path: Path) -> Path:
    """The spec file written beside a task file (`tasks.jsonl` -> `tasks.specs.yaml`)."""
    return out_path.with_name(out_path.stem + ".specs.yaml")


def write_specs(path: Path, spec: RepoSpec) -> None:
    """Put `spec` into the spec file at `path`, replacing the one for the same repo and version."""
    others = [s for s in load_specs(path).specs if (s.repo, s.version) != (spec.repo, spec.version)] if path.is_file() else []
    SpecSet(specs=[*others, spec]).dump(path)


def build_tasks(
    requirement: str, n: int, out_path: Path, seed: int = 0, workers: int = 1, sandbox_backend: str = "docker",
    repos_dir: Path | None = None, options: BuildOptions | None = None,
    on_progress: Callable[[BuildReport], None] | None = None,
) -> BuildReport:
    """Up to `n` validated SWE instances of the pinned project `requirement`, appended to the JSONL `out_path`."""
    local = repos.repo_from_sdist(requirement, Path(repos_dir or default_repos_dir()))
    return build_tasks_for_repo(local, n, out_path, seed, workers, sandbox_backend, options, on_progress)


def default_repos_dir() -> Path:
    """Where SWE repositories live unless a caller says otherwise."""
    return cache_root() / "swe" / "repos"


def build_tasks_for_repo(
    local: repos.LocalRepo, n: int, out_path: Path, seed: int = 0, workers: int = 1, sandbox_backend: str = "docker",
    options: BuildOptions | None = None, on_progress: Callable[[BuildReport], None] | None = None,
) -> BuildReport:
    """`build_tasks` for a repository made already (repos.repo_from_tree or repo_from_sdist)."""
    if n < 1 or workers < 1:
        raise BuildError(f"n and workers must be at least 1 (got n={n}, workers={workers})")
    if sandbox_backend != "docker":
        raise BuildError(f"build-tasks runs tests in an image with pytest: use the docker backend, not {sandbox_backend!r}")
    options = options or BuildOptions()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report = BuildReport(out_path=out_path, repo=local.repo, version=local.version)
    existing = [i for i in read_instances(out_path) if i["repo"] == local.repo and i["version"] == local.version]
    rebuild_base_commits(existing, local.path)
    report.instances = len(existing)
    done, per_function = _resume_state(existing, candidates_log(out_path))
    with tempfile.TemporaryDirectory(prefix="agentgym-swe-build-") as tmp:
        tree = repos.materialize(local.path, local.commit, Path(tmp) / "pristine")
        spec = repo_spec(tree, local.repo, local.version)
        write_specs(specs_path(out_path), spec)
        order = [m for m in mut.sample(mut.find_mutations(tree), seed) if m.key() not in done]
        report.candidates = len(order) + len(done)
        if report.instances >= n:
            return _finish(report, started)
        image = options.image or _ensure_image(spec.pip)
        with _Runners(tree, spec.test_cmd, image, workers, options) as runners:
            passing, suite_s = runners.baseline()
            report.passing_tests, report.suite_seconds = len(passing), suite_s
            timeout = options.timeout_s or 4 * suite_s + 20
            judge = _Judge(runners, spec, passing, timeout, options.max_failing)

            def crowded(m: mut.Mutation) -> str | None:
                # Counts only grow, so a candidate refused here would be refused after judging too.
                return ENOUGH if per_function[_function_of(m)] >= options.max_per_function else None

            with _Progress(n, report) as progress:
                for outcome in _in_order(order, judge, workers, lambda: report.instances >= n, crowded):
                    report.tried += 1
                    if outcome.reason is None:
                        outcome.reason = crowded(outcome.mutation)
                    _record(outcome, local, tree, spec, out_path, report, options, per_function)
                    progress.update()
                    if on_progress:
                        on_progress(report)
    return _finish(report, started)


def _finish(report: BuildReport, started: float) -> BuildReport:
    report.seconds = time.monotonic() - started
    return report


def _function_of(m: mut.Mutation) -> str:
    return f"{m.file}::{m.function}"


def _in_order(
    order: Sequence[mut.Mutation], judge: _Judge, workers: int, stop: Callable[[], bool],
    precheck: Callable[[mut.Mutation], str | None],
) -> Iterable[_Outcome]:
    """Judge candidates `workers` at a time, yielding verdicts in `order` (so the kept set does not depend on timing)."""
    window: collections.deque[Future[_Outcome]] = collections.deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="swe-build") as pool:
        candidates = iter(order)
        try:
            while True:
                while len(window) < workers and (m := next(candidates, None)) is not None:
                    if reason := precheck(m):
                        window.append(Future())
                        window[-1].set_result(_Outcome(m, reason))
                    else:
                        window.append(pool.submit(judge, m))
                if not window:
                    return
                yield window.popleft().result()
                if stop():
                    return
        finally:
            for future in window:
                future.cancel()


class _Progress:
    """Instances made of `n` and candidates tried: a rich bar on a terminal, else a heartbeat line every 30 s."""

    def __init__(self, n: int, report: BuildReport) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from agentgym.progress import Heartbeat

        self.report = report
        console = Console(stderr=True)
        self.heartbeat = None if console.is_terminal else Heartbeat(30.0, console=console)
        self.bar = Progress(TextColumn(f"[bold]{report.repo}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("tried {task.fields[tried]}"), TimeElapsedColumn(),
                            console=console, disable=self.heartbeat is not None)
        self.task = self.bar.add_task("instances", total=n, completed=report.instances, tried=0)

    def line(self) -> str:
        r = self.report
        return (f"{r.repo}: {r.instances}/{self.bar.tasks[0].total} instances, {r.tried} candidates tried, "
                f"{sum(r.skipped.values())} skipped")

    def update(self) -> None:
        self.bar.update(self.task, completed=self.report.instances, tried=self.report.tried)
        if self.heartbeat is not None:
            self.heartbeat.maybe(self.line)

    def __enter__(self) -> _Progress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()
        if self.heartbeat is not None:
            self.heartbeat.emit(self.line())


class _Runners:
    """A pool of sandboxes, each holding the pristine tree, that run the test command with some files replaced."""

    def __init__(self, tree: Path, test_cmd: str, image: str, workers: int, options: BuildOptions) -> None:
        from agentgym.sandboxes import SandboxSpec

        self.tree, self.test_cmd = tree, test_cmd
        self.spec = SandboxSpec(image=image, cpus=1.0, memory_mb=options.memory_mb, disk_mb=options.disk_mb, pids=256,
                                wall_clock_s=None, exec_timeout_s=600, output_cap_bytes=16 << 20,
                                env={"PYTHONDONTWRITEBYTECODE": "1"})
        self.workers = workers
        self.free: queue.Queue = queue.Queue()
        self.boxes: list = []

    def __enter__(self) -> _Runners:
        from agentgym.sandboxes import create_sandbox

        try:
            for _ in range(self.workers):
                box = create_sandbox(self.spec, backend="docker")
                self.boxes.append(box)
                box.upload(self.tree)
                self.free.put(box)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for box in self.boxes:
            box.close()

    def run(self, replaced: dict[str, str], files: Sequence[str] = (), timeout: float = 600) -> _Run:
        """The test command (on `files`, or the whole suite) with `replaced` files written over the pristine ones."""
        return self.run_command(replaced, self.test_cmd + "".join(f" {shlex.quote(f)}" for f in files), timeout)

    def run_script(self, replaced: dict[str, str], script: str, timeout: float) -> _Run:
        """A bash script (grading's eval script) run in the workdir with `replaced` files written over the pristine ones."""
        return self.run_command({**replaced, EVAL_SCRIPT: script}, f"bash {EVAL_SCRIPT}", timeout, cleanup=(EVAL_SCRIPT,))

    def run_command(self, replaced: dict[str, str], cmd: str, timeout: float, cleanup: Sequence[str] = ()) -> _Run:
        """`cmd` in a free sandbox with `replaced` files written first and the pristine ones put back after."""
        from swebench.harness.log_parsers.python import parse_log_pytest

        box = self.free.get()
        try:
            for rel, text in replaced.items():
                box.write_file(rel, text)
            result = box.exec(cmd, timeout=timeout)
            run = _Run(parse_log_pytest(result.stdout, None), result.stdout + "\n" + result.stderr, result.exit_code,
                       result.timed_out, result.oom_killed, result.duration)
            if result.timed_out or result.oom_killed:
                # A killed run may have left processes or files behind: start again from a fresh sandbox.
                box.reset()
                box.upload(self.tree)
            else:
                for rel in replaced:
                    if rel in cleanup:
                        box.exec(["rm", "-f", rel], timeout=30)
                    else:
                        box.write_file(rel, (self.tree / rel).read_bytes())
            return run
        finally:
            self.free.put(box)

    def baseline(self) -> tuple[set[str], float]:
        """Tests that pass in two runs of the whole pristine suite, and the slower run's seconds."""
        first, second = self.run({}), self.run({})
        for run in (first, second):
            if run.timed_out or run.oom_killed:
                raise BuildError(f"the pristine test suite of {self.tree.name} did not finish (timed out or out of memory)")
        passing = {t for t, s in first.statuses.items() if s == "PASSED" and second.statuses.get(t) == "PASSED"}
        passing = {t for t in passing if _whole_id(t)}
        if not passing:
            tail = " | ".join(first.log.strip().splitlines()[-3:])
            raise BuildError(f"no test passes on the pristine tree of {self.tree.name} ({tail}); check its test_cmd")
        return passing, max(first.seconds, second.seconds)


def _whole_id(test: str) -> bool:
    """swebench's parser splits a line at spaces: a parametrised id with a space arrives cut (`test[a`)."""
    return test.count("[") == test.count("]")


class _Judge:
    """Runs one candidate and decides whether it is a task (callable from worker threads)."""

    def __init__(self, runners: _Runners, spec: RepoSpec, passing: set[str], timeout: float, max_failing: int) -> None:
        self.runners, self.spec, self.passing = runners, spec, passing
        self.timeout, self.max_failing = timeout, max_failing

    def __call__(self, m: mut.Mutation) -> _Outcome:
        started = time.monotonic()
        outcome = self._judge(m)
        outcome.seconds = time.monotonic() - started
        return outcome

    def _judge(self, m: mut.Mutation) -> _Outcome:
        buggy = {m.file: m.apply((self.runners.tree / m.file).read_text(encoding="utf-8"))}
        full = self.runners.run(buggy, timeout=self.timeout)
        if reason := _broken(full):
            return _Outcome(m, reason)
        failing = sorted(t for t in self.passing if full.statuses.get(t) in _FAILED)
        changed = [t for t in self.passing if full.statuses.get(t) not in (*_FAILED, "PASSED")]
        if changed:
            return _Outcome(m, f"tests vanished or were skipped ({len(changed)})")
        if not failing:
            return _Outcome(m, "no test fails")
        if len(failing) > self.max_failing:
            return _Outcome(m, f"too many tests fail (>{self.max_failing})")
        # As SWE-bench grades: only the tests of the files holding a failure, FAIL_TO_PASS then PASS_TO_PASS.
        files = {t.split("::")[0] for t in failing}
        pass_to_pass = sorted(t for t in self.passing if t.split("::")[0] in files and t not in failing)
        return self._graded(m, buggy, failing, pass_to_pass)

    def _graded(self, m: mut.Mutation, buggy: dict[str, str], failing: list[str], pass_to_pass: list[str]) -> _Outcome:
        """The grader's own verdicts (its eval script and grade()): the bug unresolved, the pristine tree resolved."""
        draft = SWEInstance(instance_id="candidate", repo=self.spec.repo, base_commit="0" * 40, problem_statement="",
                            patch="", FAIL_TO_PASS=failing, PASS_TO_PASS=pass_to_pass, version=self.spec.version)
        script = grading.eval_script(draft, self.spec, workdir=None)
        timeout = max(self.timeout, self.spec.test_timeout_s)
        bug_run = self.runners.run_script(buggy, script, timeout)
        if reason := _broken(bug_run):
            return _Outcome(m, f"graded run: {reason}")
        bug = grading.grade(draft, self.spec, bug_run.log)
        if bug.error or bug.fail_to_pass.success or bug.pass_to_pass.failure:
            return _Outcome(m, "failures differ when only the graded tests run")
        gold_run = self.runners.run_script({}, script, timeout)
        gold = grading.grade(draft, self.spec, gold_run.log)
        if not gold.resolved:
            return _Outcome(m, "the pristine tree does not pass the graded tests")
        return _Outcome(m, None, failing, pass_to_pass, bug_run.log)


def _broken(run: _Run) -> str | None:
    """Why a run says nothing about single tests (a hang, OOM, a module that no longer imports), or None."""
    if run.timed_out:
        return "timeout"
    if run.oom_killed:
        return "out of memory"
    if "ERROR collecting" in run.log or "errors during collection" in run.log or run.exit_code not in (0, 1):
        return "collection error"
    return None


def _record(
    outcome: _Outcome, local: repos.LocalRepo, tree: Path, spec: RepoSpec, out_path: Path,
    report: BuildReport, options: BuildOptions, per_function: collections.Counter[str],
) -> None:
    """Write a kept candidate as an instance, log every candidate's verdict, and count it."""
    m = outcome.mutation
    entry = {"key": m.key(), "file": m.file, "function": m.function, "line": m.line, "operator": m.operator,
             "detail": m.detail, "seconds": round(outcome.seconds, 2)}
    if outcome.reason is None:
        instance = make_instance(local, tree, m, outcome, spec.test_cmd, options)
        _append_jsonl(out_path, instance)
        per_function[_function_of(m)] += 1
        report.instances += 1
        report.kept += 1
        entry |= {"outcome": "kept", "instance_id": instance["instance_id"], "fail_to_pass": len(outcome.fail_to_pass)}
        log.info("%s %s:%d %s [%s] kept as %s (%d FAIL_TO_PASS)", m.key(), m.file, m.line, m.function, m.operator,
                 instance["instance_id"], len(outcome.fail_to_pass))
    else:
        report.skipped[outcome.reason] += 1
        entry |= {"outcome": "skipped", "reason": outcome.reason}
        log.info("%s %s:%d %s [%s] skipped: %s", m.key(), m.file, m.line, m.function, m.operator, outcome.reason)
    _append_jsonl(candidates_log(out_path), entry)


def changed_lines(m: mut.Mutation) -> list[str]:
    """The stripped lines a mutation changed, both versions, that are long enough to be recognisable in a log."""
    diff = difflib.ndiff(m.original.splitlines(), m.replacement.splitlines())
    return sorted({line[2:].strip() for line in diff if line[:2] in ("- ", "+ ") and len(line[2:].strip()) >= 10})


def instance_id(local: repos.LocalRepo, m: mut.Mutation) -> str:
    """`<owner>__<name>-<mutation hash>`, SWE-bench's shape."""
    owner, name = local.repo.split("/", 1)
    return f"{owner}__{name}-{m.key()}"


def created_at(m: mut.Mutation) -> str:
    """A fixed ISO timestamp drawn from the mutation's hash (so reruns and other machines agree)."""
    offset = int(m.key(), 16) % (365 * 24 * 3600)
    return (EPOCH + dt.timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git_date(iso: str) -> str:
    return iso.replace("Z", "+00:00")


def base_commit_message(repo: str, version: str) -> str:
    """The message of every buggy base commit (it says nothing of the bug)."""
    return f"{repo} {version}"


def make_instance(
    local: repos.LocalRepo, tree: Path, m: mut.Mutation, outcome: _Outcome, test_cmd: str, options: BuildOptions,
) -> dict[str, str]:
    """The SWE-bench instance of a kept mutation; commits the buggy tree as an orphan tagged agentgym/<id>."""
    iid, when = instance_id(local, m), created_at(m)
    buggy = m.apply((tree / m.file).read_text(encoding="utf-8"))
    base = repos.commit_with_files(local.path, local.commit, {m.file: buggy.encode("utf-8")},
                                   base_commit_message(local.repo, local.version), _git_date(when))
    repos.set_ref(local.path, f"refs/tags/agentgym/{iid}", base)
    hide = changed_lines(m)
    statement = problem_statements.write_statement(
        local.name, local.version, outcome.fail_to_pass, outcome.log, seed=iid,
        test_cmd=test_cmd.replace("python3", "python").replace(" -rA --tb=short -p no:cacheprovider", ""), hide=hide,
    )
    if options.rewrite_base_url and options.rewrite_model:
        statement = problem_statements.rewrite(statement, options.rewrite_base_url, options.rewrite_model)
    record = {
        "repo": local.repo, "instance_id": iid, "base_commit": base,
        "patch": repos.diff_commits(local.path, base, local.commit), "test_patch": "",
        "problem_statement": statement, "hints_text": "", "created_at": when, "version": local.version,
        "FAIL_TO_PASS": json.dumps(outcome.fail_to_pass), "PASS_TO_PASS": json.dumps(outcome.pass_to_pass),
        "environment_setup_commit": local.commit,
    }
    SWEInstance.from_record(record)  # what the env will load must load
    return record


def rebuild_base_commits(instances: Iterable[dict], repo_path: Path) -> None:
    """Recreate missing buggy base commits from the pristine commit and each gold patch (same sha, or BuildError)."""
    for inst in instances:
        base, pristine = inst["base_commit"], inst["environment_setup_commit"]
        if repos.resolve_ref(repo_path, base):
            continue
        repos.check_commit(repo_path, pristine)
        sha = repos.commit_reverse_patch(repo_path, pristine, inst["patch"],
                                         base_commit_message(inst["repo"], inst["version"]), _git_date(inst["created_at"]))
        if sha != base:
            raise BuildError(f"{inst['instance_id']}: rebuilt base commit {sha} is not {base}; the repo's sdist differs")
        repos.set_ref(repo_path, f"refs/tags/agentgym/{inst['instance_id']}", sha)


def read_instances(path: Path) -> list[dict]:
    """The instances of a JSONL task file (none when it does not exist); BuildError naming a bad line."""
    if not Path(path).is_file():
        return []
    instances = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                instances.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise BuildError(f"{path} line {number} is not JSON ({exc.msg}); fix or remove it to resume") from exc
    return instances


def candidates_log(out_path: Path) -> Path:
    """The file of every candidate's verdict beside a task file."""
    return out_path.with_name(out_path.stem + ".candidates.jsonl")


def _resume_state(instances: Sequence[dict], log_path: Path) -> tuple[set[str], collections.Counter[str]]:
    """Mutation keys already decided (the file's instances, candidates logged as skipped) and instances per function."""
    keys = {i["instance_id"].rsplit("-", 1)[1] for i in instances}
    ids = {i["instance_id"] for i in instances}
    per_function: collections.Counter[str] = collections.Counter()
    for entry in read_instances(log_path):
        if entry.get("outcome") == "skipped" and entry.get("reason") != ENOUGH:
            keys.add(entry["key"])  # a function's quota is a setting of this run, not a verdict on the bug
        elif entry.get("outcome") == "kept" and entry.get("instance_id") in ids:
            per_function[f"{entry['file']}::{entry['function']}"] += 1
    return keys, per_function


def _append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line and make it durable, so a killed build loses at most the line it was writing."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _ensure_image(pip: list[str]) -> str:
    """A sandbox image with the spec's pip packages, built offline on first use."""
    from agentgym.sandboxes.images import build_image

    return build_image(f"agentgym/swe-py:{recipe_key(sorted(pip))}", pip=pip)
