"""@tool and Toolbox: schemas from signatures and docstrings, refused declarations, validated and coerced calls."""

from __future__ import annotations

import re
from typing import Literal

import pytest

from agentgym.tool_calls import ToolCall, ToolCallError, parse_tool_call, render_tool_call
from agentgym.tools import Toolbox, ToolDefinitionError, tool


class Files:
    """A small tool owner: one tool of every parameter kind the schema must express."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    @tool
    def read(self, path: str, mode: Literal["text", "bytes"] = "text", limit: int | None = None,
             ratio: float = 0.5) -> str:
        """Read a file.

        The file is read whole unless a limit
        is given.

        Args:
            path: Which file to read,
                relative to the root.
            mode: How to return it.
            limit: Most characters to return.
            ratio: A number with a default.

        Returns:
            The text (this section is not part of the schema).
        """
        self.calls.append((path, mode, limit, ratio))
        return f"read {path}"

    @tool(name="rename", example={"old": "a.txt", "new": "b.txt"})
    def rename_file(self, old: str, new: str) -> str:
        """Rename a file.

        Args:
            old: The current name.
            new: The new name.
        """
        return f"{old} -> {new}"

    @property
    def explodes(self) -> str:
        raise AssertionError("collecting tools must not evaluate properties")

    def helper(self) -> None:
        """Not a tool."""


def test_the_schema_comes_from_the_signature_and_the_docstring() -> None:
    schemas = Toolbox(Files()).schemas()
    assert [s["function"]["name"] for s in schemas] == ["read", "rename"]
    assert schemas[0] == {"type": "function", "function": {
        "name": "read",
        "description": "Read a file.\n\nThe file is read whole unless a limit is given.",
        "parameters": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "path": {"type": "string", "description": "Which file to read, relative to the root."},
                "mode": {"type": "string", "enum": ["text", "bytes"], "default": "text",
                         "description": "How to return it."},
                # `int | None = None` is shown as a plain optional integer, not as anyOf with null.
                "limit": {"type": "integer", "description": "Most characters to return."},
                "ratio": {"type": "number", "default": 0.5, "description": "A number with a default."},
            },
            "required": ["path"],
        },
    }}
    assert schemas[1]["function"]["parameters"]["required"] == ["old", "new"]


def test_calls_are_validated_coerced_and_filled_with_defaults() -> None:
    files = Files()
    box = Toolbox(files)
    assert box.call(ToolCall("read", {"path": "a.txt"})) == "read a.txt"
    # "7" -> 7 and 1 -> 1.0 as declared; a number for a text argument is taken as its text; null means None.
    box.call(ToolCall("read", {"path": 12, "mode": "bytes", "limit": "7", "ratio": 1}))
    box.call(ToolCall("read", {"path": "b", "limit": None}))
    assert files.calls == [("a.txt", "text", None, 0.5), ("12", "bytes", 7, 1.0), ("b", "text", None, 0.5)]
    assert isinstance(files.calls[1][2], int) and isinstance(files.calls[1][3], float)
    assert box.call(ToolCall("rename", {"old": "x", "new": "y"})) == "x -> y"


@pytest.mark.parametrize("arguments, problem", [
    ({}, "missing required argument 'path'"),
    ({"path": "a", "colour": "red"}, "unexpected argument 'colour'"),
    ({"path": "a", "mode": "lines"}, "argument 'mode': Input should be 'text' or 'bytes' (got 'lines')"),
    ({"path": "a", "limit": 2.5}, "argument 'limit'"),
    ({"path": ["a"]}, "argument 'path'"),
])
def test_bad_arguments_say_what_is_wrong_and_show_a_call_that_works(arguments: dict, problem: str) -> None:
    box = Toolbox(Files())
    with pytest.raises(ToolCallError) as raised:
        box.call(ToolCall("read", arguments))
    message = str(raised.value)
    assert message.startswith("read: ") and problem in message
    signature = "read(path: str, mode: 'text' | 'bytes' = 'text', limit: int | None = None, ratio: float = 0.5)"
    assert signature in message
    # The example in the message is a real call: parsed back from the text, it runs.
    example = parse_tool_call(re.search(r"<tool_call>.*</tool_call>", message).group(0))
    assert example == ToolCall("read", {"path": "<path>"})
    assert box.call(example) == "read <path>"


def test_an_unknown_tool_lists_the_tools_and_suggests_the_closest() -> None:
    box = Toolbox(Files())
    with pytest.raises(ToolCallError, match=r"unknown tool 'raed' \(did you mean 'read'\?\)\. The tools are: read\(path"):
        box.call(ToolCall("raed", {}))
    with pytest.raises(ToolCallError) as raised:
        box.call(ToolCall("delete", {}))
    assert "did you mean" not in str(raised.value) and "rename(old: str, new: str)" in str(raised.value)


def test_a_given_example_is_used_in_messages() -> None:
    with pytest.raises(ToolCallError) as raised:
        Toolbox(Files()).call(ToolCall("rename", {"old": "a"}))
    assert render_tool_call(ToolCall("rename", {"old": "a.txt", "new": "b.txt"})) in str(raised.value)


class Shell:
    @tool
    def run(self, command: str) -> str:
        """Run a command.

        Args:
            command: The command.
        """
        return f"shell {command}"

    @tool
    def submit(self) -> str:
        """Finish."""
        return "shell submit"


class Answers:
    @tool
    def submit(self, answer: str) -> str:
        """Give the answer.

        Args:
            answer: The answer.
        """
        return answer


def test_tools_of_several_objects_combine_and_a_shared_name_is_refused_naming_both() -> None:
    box = Toolbox(Files(), Shell())
    assert box.names() == ["read", "rename", "run", "submit"] and "run" in box and len(box) == 4
    assert box.call(ToolCall("run", {"command": "ls"})) == "shell ls"
    with pytest.raises(ToolDefinitionError, match=r"two tools are named 'submit': Shell\.submit and Answers\.submit"):
        Toolbox(Shell(), Answers())


def test_two_methods_of_one_class_under_one_name_are_refused() -> None:
    class Twice:
        @tool(name="go")
        def first(self) -> None:
            """One."""

        @tool(name="go")
        def second(self) -> None:
            """Two."""

    with pytest.raises(ToolDefinitionError, match=r"'go': .*Twice\.first and .*Twice\.second"):
        Toolbox(Twice())


def test_subclasses_inherit_tools_and_an_override_replaces_one_in_place() -> None:
    class LoudShell(Shell):
        @tool
        def run(self, command: str) -> str:
            """Run a command loudly.

            Args:
                command: The command.
            """
            return f"LOUD {command}"

        @tool
        def shout(self) -> str:
            """Shout."""
            return "!"

    box = Toolbox(LoudShell())
    assert box.names() == ["run", "submit", "shout"]
    assert box.call(ToolCall("run", {"command": "ls"})) == "LOUD ls"
    assert box.schemas()[0]["function"]["description"] == "Run a command loudly."


def _declare(method) -> Toolbox:
    return Toolbox(type("Owner", (), {method.__name__: method})())


def _no_hint(self, path) -> None:
    """Read.

    Args:
        path: A path.
    """


def _undescribed(self, path: str, size: int = 1) -> None:
    """Read.

    Args:
        path: A path.
    """


def _stale_docstring(self, path: str) -> None:
    """Read.

    Args:
        path: A path.
        mode: Gone.
    """


def _no_docstring(self, path: str) -> None:
    pass


def _varargs(self, *paths: str) -> None:
    """Read.

    Args:
        paths: Paths.
    """


@pytest.mark.parametrize("method, message", [
    (_no_hint, "parameter 'path' has no type hint"),
    (_undescribed, "parameter 'size' is not described"),
    (_stale_docstring, r"describes \['mode'\], which are not parameters"),
    (_no_docstring, "has no docstring"),
    (_varargs, "must be a named one"),
])
def test_wrong_declarations_are_refused_when_the_toolbox_is_built(method, message: str) -> None:
    with pytest.raises(ToolDefinitionError, match=message):
        _declare(tool(method))


def test_bad_names_and_examples_are_refused() -> None:
    with pytest.raises(ToolDefinitionError, match="must match"):
        tool(name="read file")(_undescribed)
    with pytest.raises(ToolDefinitionError, match="plain method"):
        tool(staticmethod(_undescribed))
    with pytest.raises(ToolDefinitionError, match="example does not fit its signature: .*unexpected argument 'file'"):
        _declare(tool(example={"file": "x"})(_one_path))


def _one_path(self, path: str) -> None:
    """Read.

    Args:
        path: A path.
    """


def test_the_python_tool_env_declares_its_tools_with_the_same_schemas_as_before() -> None:
    from agentgym.envs.tools.python_tool import PythonToolEnv

    env = PythonToolEnv(num_tasks=1)  # no sandbox is made until an episode starts
    described = {s["function"]["name"]: s["function"] for s in env.tools.schemas()}
    assert described == {
        "python": {"name": "python", "description": "Run a Python 3 program in your sandbox and see what it prints.",
                   "parameters": {"type": "object", "additionalProperties": False, "required": ["code"], "properties": {
                       "code": {"type": "string", "description": "The program; print what you want to see."}}}},
        "shell": {"name": "shell", "description": "Run a shell command in your sandbox (working directory /workspace).",
                  "parameters": {"type": "object", "additionalProperties": False, "required": ["command"],
                                 "properties": {"command": {"type": "string", "description": "The command line, run by sh."}}}},
        "submit": {"name": "submit", "description": "Give your final answer; this ends the episode.",
                   "parameters": {"type": "object", "additionalProperties": False, "required": ["answer"], "properties": {
                       "answer": {"type": "string", "description": "The answer: a single integer."}}}},
    }


def test_an_object_without_tools_is_refused_and_schemas_are_copies() -> None:
    with pytest.raises(ToolDefinitionError, match="object has no @tool methods"):
        Toolbox(object())
    box = Toolbox(Files())
    box.schemas()[0]["function"]["parameters"]["properties"].clear()
    assert "path" in box.schemas()[0]["function"]["parameters"]["properties"]
