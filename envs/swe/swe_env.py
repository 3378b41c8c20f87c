"""swe-gym: fix a real bug in a real repository with bash and an editor; graded by the instance's own tests."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from agentgym.env import EpisodeStart, StepOutcome, TextEnv
from agentgym.envs.swe.builder import specs_path
from agentgym.envs.swe.grading import GradeReport
from agentgym.envs.swe.instance import load_instances
from agentgym.envs.swe.specs import SpecSet, load_specs
from agentgym.envs.swe.tools import RepoTools
from agentgym.envs.swe.walkthrough import walkthrough
from agentgym.envs.swe.workspace import TESTBED, Limits, Workspace, prepare
from agentgym.errors import EnvConfigError
from agentgym.sandboxes.base import Sandbox
from agentgym.sandboxes.factory import get_backend
from agentgym.tool_calls import ToolCall, ToolCallError, parse_tool_call, render_tool_call
from agentgym.tools import Toolbox

SPLITS = ("train", "test")
CALL_EXAMPLE = render_tool_call(ToolCall("bash", {"command": "grep -rn 'def parse' src | head"}))
INSTRUCTIONS = (
    f"You are fixing a bug in the Python repository at {TESTBED}. Each turn, reply with exactly one tool "
    f"call in this form:\n{CALL_EXAMPLE}\n"
    "Tools: bash(command) runs a shell command in the repository; str_replace_editor(command, path, ...) views, "
    "creates and edits files (command is view, create, str_replace, insert or undo_edit); search(pattern) greps "
    "the repository; submit() ends the episode and your changes are graded by the project's tests. Find the "
    "cause of the reported problem, change the code (not the tests), check it with the tests, then submit."
)


def default_tasks(split: str) -> Path:
    """The task file of the default set's split (built from real projects by `agentgym swe build-tasks`)."""
    if split not in SPLITS:
        raise EnvConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return Path(str(resources.files("agentgym.envs.swe") / "data" / f"tasks-{split}.jsonl"))


def default_specs() -> Path:
    """The spec file of the default task set."""
    return Path(str(resources.files("agentgym.envs.swe") / "data" / "specs.yaml"))


class SWEGymEnv(TextEnv):
    """Each task is an SWE-bench instance: a repository at base_commit, a problem statement, tests that grade.

    The episode's sandbox holds the repository at /testbed (network off); the agent works through
    `RepoTools`. On `submit`, or at the turn limit, the diff of its working tree against
    base_commit (test files left out) is applied in a fresh sandbox with the test patch, the
    FAIL_TO_PASS and PASS_TO_PASS tests run, and swebench's parser and grading decide: reward 1
    when the instance is resolved, else 0. The final info holds the grade, the per-test results
    and the patch.
    """

    def __init__(
        self,
        tasks: str | None = None,
        specs: str | None = None,
        repos_dir: str | None = None,
        split: str = "test",
        max_turns: int = 30,
        sandbox_backend: str = "auto",
        exec_timeout_s: float = 60.0,
        observation_chars: int = 6000,
        memory_mb: int = 1024,
        disk_mb: int = 512,
        pids: int = 256,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(max_turns=int(max_turns), render_mode=render_mode)
        if tasks is None and specs is not None:
            raise EnvConfigError("specs= needs tasks= as well (the default task set brings its own specs)")
        self._tasks_path = Path(tasks) if tasks else default_tasks(split)
        self._specs: SpecSet = load_specs(Path(specs) if specs else (
            default_specs() if tasks is None else specs_path(self._tasks_path)))
        self._instances = {i.instance_id: i for i in load_instances(self._tasks_path)}
        for instance in self._instances.values():
            self._specs.for_instance(instance)  # a missing spec is an error now, not in the middle of a run
        self._repos_dir = Path(repos_dir) if repos_dir else None
        self._backend = get_backend(sandbox_backend).name
        self._limits = Limits(memory_mb=int(memory_mb), disk_mb=int(disk_mb), pids=int(pids),
                              exec_timeout_s=float(exec_timeout_s))
        self._observation_chars = int(observation_chars)
        self._workspaces: dict[str, Workspace] = {}
        self._workspace: Workspace | None = None
        self._box: Sandbox | None = None
        self._repo_tools: RepoTools | None = None
        self._toolbox: Toolbox | None = None

    @property
    def backend(self) -> str:
        """The sandbox backend its episodes run on ("docker" or "bwrap")."""
        return self._backend

    def task_ids(self) -> Sequence[str]:
        """The instance ids of the task file, in its order."""
        return list(self._instances)

    def workspace(self, task_id: str) -> Workspace:
        """The instance's sandbox spec and pristine tree (its image or root is built on first use)."""
        if task_id not in self._workspaces:
            instance = self._instances[task_id]
            self._workspaces[task_id] = prepare(instance, self._specs.for_instance(instance), self._repos_dir,
                                                self._backend, self._limits)
        return self._workspaces[task_id]

    def start(self, task_id: str) -> EpisodeStart:
        """A fresh sandbox with the repository at base_commit, and the problem statement."""
        self._release()
        workspace = self.workspace(task_id)
        self._workspace = workspace
        self._box = workspace.sandbox()
        self._repo_tools = RepoTools(self._box, TESTBED, timeout_s=self._limits.exec_timeout_s,
                                observation_chars=self._observation_chars)
        self._toolbox = Toolbox(self._repo_tools)
        instance = workspace.instance
        return EpisodeStart(
            observation=f"Problem report for {instance.repo}:\n\n{instance.problem_statement.strip()}",
            instructions=INSTRUCTIONS, tools=self._toolbox.schemas(),
            info={"walkthrough": walkthrough(instance, self._pristine_text), "sandbox_id": self._box.id,
                  "instance_id": instance.instance_id, "repo": instance.repo},
        )

    def act(self, action: str) -> StepOutcome:
        """Run the tool the reply calls; grade on submit or on the last turn."""
        if self._toolbox is None or self._repo_tools is None:
            raise RuntimeError("no episode is running")
        try:
            call = parse_tool_call(action)
            observation = str(self._toolbox.call(call))
            valid = True
        except ToolCallError as exc:
            observation = f"{exc}. Reply with exactly one tool call, such as {CALL_EXAMPLE}"
            valid = False
        signals: dict[str, Any] = {"valid_action": valid, **self._repo_tools.signals(),
                                   "patch_nonempty": bool(self._repo_tools.files_modified)}
        last_turn = self._turn >= self.max_turns
        if not (self._repo_tools.submitted or last_turn):
            return StepOutcome(observation=observation, signals=signals)
        report, patch = self._grade()
        signals["patch_nonempty"] = bool(patch.strip())
        verdict = "resolved" if report.resolved else f"not resolved ({report.error or report.status})"
        return StepOutcome(
            observation=f"{observation}\nGraded by the project's tests: {verdict}.",
            reward=1.0 if report.resolved else 0.0, terminated=self._repo_tools.submitted, success=report.resolved,
            signals=signals, info={"grade": report.model_dump(mode="json"), "patch": patch},
        )

    def close(self) -> None:
        """Close the episode's sandbox."""
        self._release()
        super().close()

    def _grade(self) -> tuple[GradeReport, str]:
        assert self._workspace is not None and self._box is not None
        patch = self._workspace.agent_diff(self._box)
        report, _log = self._workspace.grade(patch)
        return report, patch

    def _pristine_text(self, path: str) -> str | None:
        assert self._workspace is not None
        if self._workspace.pristine is None:
            return None
        file = self._workspace.pristine / path
        return file.read_text(encoding="utf-8", errors="surrogateescape") if file.is_file() else None

    def _release(self) -> None:
        if self._box is not None:
            self._box.close()
        self._box = self._repo_tools = self._toolbox = None
