"""python-tool: solve small calculation tasks by running Python or shell in a sandbox, then submit the answer."""

from __future__ import annotations

from collections.abc import Sequence
from agentgym.env import EpisodeStart, StepOutcome, TextEnv
from agentgym.envs.tools.python_tasks import ToolTask, generate_tasks
from agentgym.tool_calls import ToolCall, ToolCallError, parse_tool_call, render_tool_call
from agentgym.tools import Toolbox, tool
from agentgym.errors import EnvConfigError
from agentgym.sandboxes.base import Sandbox
from agentgym.sandboxes.output import CappedOutput
from agentgym.sandboxes.pool import SandboxPool, shared_pool
from agentgym.sandboxes.spec import SANDBOX_PYTHON, ExecResult, SandboxSpec

CALL_EXAMPLE = '<tool_call>{"name": "python", "arguments": {"code": "print(2 + 2)"}}</tool_call>'
INSTRUCTIONS = (
    "You solve calculation tasks with tools. Each turn, reply with exactly one tool call in this form:\n"
    f"{CALL_EXAMPLE}\n"
    "Tools: python(code) runs a Python 3 program and shows its output; shell(command) runs a shell "
    "command; submit(answer) gives your final answer (one integer) and ends the episode. Compute the "
    "answer with python, then submit it."
)


def normalise_answer(text: str) -> int | None:
    """An integer answer from what the agent submitted ("1,234", " 42.", "-7"), or None when it is not one."""
    cleaned = text.strip().rstrip(".").replace(",", "").replace("_", "").replace(" ", "")
    try:
        return int(cleaned)
    except ValueError:
        try:
            value = float(cleaned)
        except ValueError:
            return None
        return int(value) if value.is_integer() else None


class PythonToolEnv(TextEnv):
    """Each task is a question with an exact integer answer; the agent's code runs in its own sandbox.

    Every episode gets a clean sandbox from a pool shared by the process's env instances; the one
    it used is reset in the background before another episode sees it. Reward 1 for a correct
    submitted answer, else 0.
    """

    def __init__(
        self,
        num_tasks: int = 50,
        tasks_seed: int = 0,
        max_turns: int = 6,
        sandbox_backend: str = "auto",
        memory_mb: int = 256,
        pids: int = 64,
        disk_mb: int = 64,
        exec_timeout_s: float = 10.0,
        observation_chars: int = 2000,
        pool_warm: int = 2,
        pool_max: int = 32,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(max_turns=int(max_turns), render_mode=render_mode)
        if int(observation_chars) < 100:
            raise EnvConfigError(f"observation_chars must be at least 100, got {observation_chars}")
        self._tasks = {t.task_id: t for t in generate_tasks(int(num_tasks), int(tasks_seed))}
        self.sandbox_spec = SandboxSpec(memory_mb=int(memory_mb), pids=int(pids), disk_mb=int(disk_mb),
                                 exec_timeout_s=float(exec_timeout_s))
        self.sandbox_backend = sandbox_backend
        self.observation_chars = int(observation_chars)
        self._pool_sizes = (int(pool_warm), int(pool_max))
        self._pool: SandboxPool | None = None
        self._sandbox: Sandbox | None = None
        self._task: ToolTask | None = None
        self.tools = Toolbox(self)

    def task_ids(self) -> Sequence[str]:
        """One task per generated question."""
        return list(self._tasks)

    def start(self, task_id: str) -> EpisodeStart:
        """Take a clean sandbox for the episode and pose the question."""
        self._release()
        if self._pool is None:  # made on first use, so listing tasks never starts a sandbox
            self._pool = shared_pool(self.sandbox_spec, self.sandbox_backend, *self._pool_sizes)
        self._sandbox = self._pool.acquire()
        self._task = self._tasks[task_id]
        walkthrough = [
            render_tool_call(ToolCall("python", {"code": self._task.solution})),
            render_tool_call(ToolCall("submit", {"answer": str(self._task.answer)})),
        ]
        return EpisodeStart(
            observation=self._task.question, instructions=INSTRUCTIONS, tools=self.tools.schemas(),
            info={"walkthrough": walkthrough, "sandbox_id": self._sandbox.id},
        )

    def act(self, action: str) -> StepOutcome:
        """Run the tool the reply calls; a submit ends the episode."""
        if self._sandbox is None or self._task is None:
            raise RuntimeError("act() before start(): reset the env first")
        try:
            call = parse_tool_call(action)
        except ToolCallError as exc:
            return self._invalid(f"{exc}. Reply with exactly one tool call, such as {CALL_EXAMPLE}")
        try:
            return self.tools.call(call)
        except ToolCallError as exc:
            return self._invalid(str(exc))

    @tool(example={"code": "print(2 + 2)"})
    def python(self, code: str) -> StepOutcome:
        """Run a Python 3 program in your sandbox and see what it prints.

        Args:
            code: The program; print what you want to see.
        """
        if not code.strip():
            raise ToolCallError("python needs a non-empty string argument 'code'.")
        return self._ran("python", self._sandbox.exec([SANDBOX_PYTHON, "-c", code]))

    @tool(example={"command": "ls -la"})
    def shell(self, command: str) -> StepOutcome:
        """Run a shell command in your sandbox (working directory /workspace).

        Args:
            command: The command line, run by sh.
        """
        if not command.strip():
            raise ToolCallError("shell needs a non-empty string argument 'command'.")
        return self._ran("shell", self._sandbox.exec(command))

    @tool(example={"answer": "42"})
    def submit(self, answer: str) -> StepOutcome:
        """Give your final answer; this ends the episode.

        Args:
            answer: The answer: a single integer.
        """
        correct = normalise_answer(answer) == self._task.answer
        text = "Correct." if correct else f"Submitted {answer.strip()[:100]!r}: that is not the answer."
        return StepOutcome(observation=text, reward=1.0 if correct else 0.0, terminated=True, success=correct,
                           signals={"valid_action": True, "tool": "submit", "correct": correct})

    def close(self) -> None:
        """Give the episode's sandbox back to the pool."""
        self._release()
        super().close()

    def _ran(self, tool_name: str, result: ExecResult) -> StepOutcome:
        return StepOutcome(
            observation=self._describe(result),
            signals={"valid_action": True, "tool": tool_name, "exit_code": result.exit_code,
                     "timed_out": result.timed_out, "oom_killed": result.oom_killed},
        )

    def _invalid(self, message: str) -> StepOutcome:
        return StepOutcome(observation=message, signals={"valid_action": False})

    def _describe(self, result: ExecResult) -> str:
        """What the agent sees of a run: its status and its output, cut to observation_chars."""
        if result.timed_out:
            status = f"killed after {result.duration:.1f}s (time limit)"
        elif result.oom_killed:
            status = "killed: out of memory"
        else:
            status = f"exit code {result.exit_code}"
        parts = [status]
        for name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
            if text:
                capped = CappedOutput(self.observation_chars // 2)
                capped.feed(text.encode())
                parts.append(f"{name}:\n{capped.text().rstrip()}")
        return "\n".join(parts)

    def _release(self) -> None:
        if self._sandbox is not None and self._pool is not None:
            self._pool.release(self._sandbox)
        self._sandbox = None
