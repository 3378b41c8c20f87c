"""Tool calls read from reply text, the python-tool task generator, and answer checking (no sandbox needed)."""

from __future__ import annotations

import subprocess

import pytest

from agentgym.envs.tools.python_tasks import FAMILIES, generate_tasks
from agentgym.envs.tools.python_tool import normalise_answer
from agentgym.tool_calls import ToolCall, ToolCallError, parse_tool_call, render_tool_call
from agentgym.sandboxes.spec import SANDBOX_PYTHON


def test_tagged_bare_openai_and_fenced_calls_are_read() -> None:
    tagged = 'I will compute it.\n<tool_call>{"name": "python", "arguments": {"code": "print(1)"}}</tool_call>'
    assert parse_tool_call(tagged) == ToolCall("python", {"code": "print(1)"})
    assert parse_tool_call('{"name": "submit", "arguments": {"answer": "7"}}') == ToolCall("submit", {"answer": "7"})
    openai_form = '{"function": {"name": "shell", "arguments": "{\\"command\\": \\"ls\\"}"}}'
    assert parse_tool_call(openai_form) == ToolCall("shell", {"command": "ls"})
    assert parse_tool_call("Let me run:\n```python\nprint(6 * 7)\n```") == ToolCall("python", {"code": "print(6 * 7)\n"})
    assert parse_tool_call("```sh\necho hi\n```") == ToolCall("shell", {"command": "echo hi\n"})
    # A reply cut at max_tokens before the closing tag still parses when its JSON is whole.
    assert parse_tool_call('<tool_call>{"name": "submit", "arguments": {"answer": "3"}}').name == "submit"


@pytest.mark.parametrize("text, message", [
    ("the answer is 42", "no tool call"),
    ("<tool_call>{not json}</tool_call>", "not valid JSON"),
    ('{"arguments": {}}', "no 'name'"),
    ('{"name": "python", "arguments": [1]}', "must be a JSON object"),
    ("```ruby\nputs 1\n```", "not a tool"),
])
def test_replies_without_a_usable_call_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ToolCallError, match=message):
        parse_tool_call(text)


def test_render_round_trips() -> None:
    call = ToolCall("python", {"code": 'print("a\\nb")'})
    assert parse_tool_call(render_tool_call(call)) == call


def test_tasks_are_reproducible_and_every_reference_program_prints_the_answer() -> None:
    tasks = generate_tasks(10, seed=3)
    assert [t.task_id for t in tasks] == [t.task_id for t in generate_tasks(10, seed=3)]
    assert [t.answer for t in tasks] != [t.answer for t in generate_tasks(10, seed=4)]
    # Task i does not depend on how many tasks were asked for.
    assert generate_tasks(3, seed=3)[2] == tasks[2]
    assert {t.task_id.rsplit("-", 2)[0] for t in tasks} == set(FAMILIES)
    for task in tasks:
        printed = subprocess.run([SANDBOX_PYTHON, "-c", task.solution], capture_output=True, text=True, timeout=60).stdout
        assert int(printed) == task.answer, task.task_id


def test_answers_are_compared_as_integers() -> None:
    assert normalise_answer(" 1,234. ") == 1234
    assert normalise_answer("-7") == -7
    assert normalise_answer("12.0") == 12
    assert normalise_answer("12.5") is None
    assert normalise_answer("twelve") is None
    with pytest.raises(ValueError):
        generate_tasks(0)
