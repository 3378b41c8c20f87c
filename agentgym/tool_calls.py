"""Tool calls in a policy's reply text: JSON calls (bare or in <tool_call> tags) and fenced code blocks."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCED = re.compile(r"```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)
_FENCE_TOOLS = {"python": "python", "py": "python", "python3": "python", "sh": "shell", "bash": "shell", "shell": "shell"}


@dataclass
class ToolCall:
    """A tool's name and its arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


class ToolCallError(ValueError):
    """A reply that holds no usable tool call; the message tells the agent what to send instead."""


def parse_tool_call(text: str) -> ToolCall:
    """The first tool call in `text`.

    Accepted, in this order: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (the
    Hermes/Qwen chat-template form), the same JSON object bare, the OpenAI form
    `{"function": {"name": ..., "arguments": "<json>"}}`, and a fenced ```python or ```sh block
    (small models often answer that way), which becomes a python or shell call.
    """
    tagged = _TAGGED.search(text)
    if tagged:
        return _from_json(tagged.group(1))
    stripped = text.strip()
    if stripped.startswith("{"):
        return _from_json(stripped)
    fenced = _FENCED.search(text)
    if fenced:
        tool = _FENCE_TOOLS.get(fenced.group(1).lower())
        if tool is None:
            raise ToolCallError(f"a ```{fenced.group(1)} block is not a tool; use ```python or ```sh, or a JSON tool call")
        key = "code" if tool == "python" else "command"
        return ToolCall(tool, {key: fenced.group(2)})
    raise ToolCallError("no tool call found")


def _from_json(blob: str) -> ToolCall:
    try:
        data = json.loads(blob)
    except json.JSONDecodeError as exc:
        raise ToolCallError(f"the tool call is not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(data, dict):
        raise ToolCallError("a tool call must be a JSON object with 'name' and 'arguments'")
    if isinstance(data.get("function"), dict):  # OpenAI's wire form
        data = data["function"]
    name, arguments = data.get("name"), data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            raise ToolCallError("the tool call's 'arguments' string is not valid JSON") from None
    if not isinstance(name, str) or not name:
        raise ToolCallError("the tool call has no 'name'")
    if not isinstance(arguments, dict):
        raise ToolCallError("the tool call's 'arguments' must be a JSON object")
    return ToolCall(name, arguments)


def render_tool_call(call: ToolCall) -> str:
    """The reply text that parse_tool_call reads back as `call`."""
    return f"<tool_call>{json.dumps({'name': call.name, 'arguments': call.arguments})}</tool_call>"
