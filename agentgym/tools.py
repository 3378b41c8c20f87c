"""Tools declared once: `@tool` on a method makes its signature and docstring an OpenAI function schema.

A `Toolbox` gathers the tools of one or more objects, refuses two tools of one name, lists their
schemas for `info["tools"]` and runs a parsed `ToolCall`, validating and coercing its arguments
with pydantic first. Anything wrong with a call raises `ToolCallError`, whose message shows the
tool's signature and an example call, so an env can hand it to the agent as the observation.

The description is the docstring's text before its first section (Args:, Returns:, ...), its
wrapped lines rejoined. Every parameter after `self` needs a type hint and an entry in Args:
(`name: text`, continued on deeper-indented lines); `Literal[...]` becomes an enum and a default
makes a parameter optional. A tool that breaks these rules fails when a Toolbox is built.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from agentgym.errors import AgentGymError
from agentgym.tool_calls import ToolCall, ToolCallError, render_tool_call

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__agentgym_tool__"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what OpenAI accepts as a function name
_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params|Returns?|Raises|Yields?|Examples?|Notes?):\s*$")
_ARG_SECTIONS = {"Args", "Arguments", "Parameters", "Params"}
_ARG_LINE = re.compile(r"^(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
# Models often send numbers for text arguments ({"answer": 42}); accepting them is what the agent meant.
_ARGUMENTS_CONFIG = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class ToolDefinitionError(AgentGymError, TypeError):
    """A tool declared wrongly: a bad name, a missing type hint or description, or two tools of one name."""


@dataclass
class _Mark:
    name: str
    example: dict[str, Any] | None
    spec: ToolSpec | None = None  # built on first use, when every annotation can be resolved


@overload
def tool(fn: F) -> F: ...


@overload
def tool(*, name: str | None = None, example: dict[str, Any] | None = None) -> Callable[[F], F]: ...


def tool(fn: F | None = None, *, name: str | None = None, example: dict[str, Any] | None = None) -> Any:
    """Declare a method as a tool (named after it unless `name` is given; `example` is its sample arguments)."""

    def mark(function: F) -> F:
        if not inspect.isfunction(function):
            raise ToolDefinitionError(f"@tool goes on a plain method (a def in a class body), not on {function!r}")
        tool_name = function.__name__ if name is None else name
        if not _NAME.match(tool_name):
            raise ToolDefinitionError(f"tool name {tool_name!r} of {function.__qualname__} must match {_NAME.pattern}")
        setattr(function, _MARK, _Mark(tool_name, None if example is None else dict(example)))
        return function

    return mark if fn is None else mark(fn)


@dataclass(frozen=True)
class ToolSpec:
    """One declared tool, unbound: its name, description, argument model, signature text and example call."""

    name: str
    description: str
    arguments: type[BaseModel]
    params: dict[str, str]  # parameter name -> field name in `arguments`
    parameters: dict[str, Any]  # the JSON schema of the arguments
    signature: str
    example: ToolCall

    def schema(self) -> dict[str, Any]:
        """The OpenAI function-calling schema of this tool (a fresh copy: callers may change it)."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": copy.deepcopy(self.parameters)}}

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, validated, coerced to the declared types, defaults filled in."""
        try:
            parsed = self.arguments.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(_problem(e) for e in exc.errors())
            raise ToolCallError(f"{self.name}: {problems}. {self.usage()}") from None
        return {param: getattr(parsed, field) for param, field in self.params.items()}

    def usage(self) -> str:
        """How to call the tool: its signature and an example tool-call line."""
        return f"Expected {self.signature}, e.g. {render_tool_call(self.example)}"


def tool_spec(function: Callable[..., Any]) -> ToolSpec:
    """The ToolSpec of a method marked with @tool, built from its signature and docstring once."""
    mark = getattr(function, _MARK, None)
    if not isinstance(mark, _Mark):
        raise ToolDefinitionError(f"{getattr(function, '__qualname__', function)!r} is not marked with @tool")
    if mark.spec is None:
        mark.spec = _build(function, mark)
    return mark.spec


@dataclass(frozen=True)
class BoundTool:
    """A tool bound to the object whose method runs it."""

    spec: ToolSpec
    method: Callable[..., Any]
    owner: str  # "Class.method", for error messages

    def __call__(self, arguments: dict[str, Any]) -> Any:
        """Validate `arguments` and run the method with them."""
        return self.method(**self.spec.validate(arguments))


class Toolbox:
    """The @tool methods of one or more objects, by name, in declaration order (earlier objects first)."""

    def __init__(self, *owners: object) -> None:
        if not owners:
            raise ToolDefinitionError("a Toolbox needs at least one object with @tool methods")
        self._tools: dict[str, BoundTool] = {}
        for owner in owners:
            methods = _marked_methods(type(owner))
            if not methods:
                raise ToolDefinitionError(f"{type(owner).__qualname__} has no @tool methods")
            for attribute, function in methods:
                spec = tool_spec(function)
                bound = BoundTool(spec, getattr(owner, attribute), f"{type(owner).__qualname__}.{attribute}")
                if spec.name in self._tools:
                    raise ToolDefinitionError(
                        f"two tools are named {spec.name!r}: {self._tools[spec.name].owner} and {bound.owner}; "
                        "rename one with @tool(name=...)")
                self._tools[spec.name] = bound

    def names(self) -> list[str]:
        """The tool names, in order."""
        return list(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        """The OpenAI function schemas of every tool, in order (what an env returns as info["tools"])."""
        return [t.spec.schema() for t in self._tools.values()]

    def spec(self, name: str) -> ToolSpec:
        """The spec of one tool; ToolCallError naming the tools when there is none of that name."""
        if name not in self._tools:
            close = difflib.get_close_matches(name, list(self._tools), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            listing = ", ".join(t.spec.signature for t in self._tools.values())
            raise ToolCallError(f"unknown tool {name!r}{hint}. The tools are: {listing}.")
        return self._tools[name].spec

    def call(self, call: ToolCall) -> Any:
        """Run a tool call: ToolCallError for an unknown tool or bad arguments; whatever the method returns."""
        self.spec(call.name)
        return self._tools[call.name](call.arguments)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[ToolSpec]:
        return (t.spec for t in self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)


def _marked_methods(cls: type) -> list[tuple[str, Callable[..., Any]]]:
    """(attribute, function) of each @tool method as `cls` resolves it: base-class tools first, overrides in place."""
    order: list[str] = []
    for klass in reversed(cls.__mro__):
        order.extend(a for a in vars(klass) if a not in order)
    found = []
    for attribute in order:
        # Static lookup, so that listing tools never runs a property.
        value = inspect.getattr_static(cls, attribute)
        if inspect.isfunction(value) and isinstance(getattr(value, _MARK, None), _Mark):
            found.append((attribute, value))
    return found


def _build(function: Callable[..., Any], mark: _Mark) -> ToolSpec:
    where = function.__qualname__
    description, arg_docs = _parse_docstring(function)
    if not description:
        raise ToolDefinitionError(f"tool {where} has no docstring: its text before Args is the tool's description")
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as exc:  # an unresolvable annotation: say which tool, not just the NameError
        raise ToolDefinitionError(f"tool {where}: cannot resolve its type hints ({exc})") from exc
    parameters = list(inspect.signature(function).parameters.values())[1:]  # [0] is self
    fields: dict[str, Any] = {}
    params: dict[str, str] = {}
    shown: list[str] = []
    for p in parameters:
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            raise ToolDefinitionError(f"tool {where}: parameter {p.name!r} must be a named one (no *args, **kwargs)")
        if p.name not in hints:
            raise ToolDefinitionError(f"tool {where}: parameter {p.name!r} has no type hint")
        if p.name not in arg_docs:
            raise ToolDefinitionError(f"tool {where}: parameter {p.name!r} is not described in the docstring's Args")
        default = ... if p.default is p.empty else p.default
        # Fields get private names, aliased to the parameter: a parameter may be called `json` or `copy`.
        field = f"arg_{p.name}"
        fields[field] = (hints[p.name], Field(default, alias=p.name, description=arg_docs[p.name]))
        params[p.name] = field
        shown.append(f"{p.name}: {_type_text(hints[p.name])}" + ("" if default is ... else f" = {default!r}"))
    unknown = sorted(set(arg_docs) - set(params))
    if unknown:
        raise ToolDefinitionError(f"tool {where}: the docstring describes {unknown}, which are not parameters")
    model = create_model(f"{mark.name}_arguments", __config__=_ARGUMENTS_CONFIG, **fields)
    example = ToolCall(mark.name, _placeholder_arguments(model) if mark.example is None else mark.example)
    spec = ToolSpec(mark.name, description, model, params, _parameters(model), f"{mark.name}({', '.join(shown)})",
                    example)
    try:
        spec.validate(spec.example.arguments)
    except ToolCallError as exc:  # a stale example would teach the agent a call that fails
        raise ToolDefinitionError(f"tool {where}: its example does not fit its signature: {exc}") from None
    return spec


def _parse_docstring(function: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) from a docstring with a Google-style Args section."""
    described: list[str] = []
    args: dict[str, list[str]] = {}
    section: str | None = None
    current: list[str] | None = None
    entry_indent: int | None = None
    for line in inspect.cleandoc(function.__doc__ or "").splitlines():
        stripped = line.strip()
        header = _SECTION.match(line)
        if header:
            section, current, entry_indent = header.group(1), None, None
        elif section is None:
            described.append(stripped)
        elif section in _ARG_SECTIONS and stripped:
            indent = len(line) - len(line.lstrip())
            entry = _ARG_LINE.match(stripped)
            # An entry starts at the section's own indent; deeper lines continue the one before.
            if entry and (entry_indent is None or indent <= entry_indent):
                entry_indent = indent
                current = args.setdefault(entry.group(1), [entry.group(2)])
            elif current is not None:
                current.append(stripped)
    return _paragraphs(described), {name: " ".join(w for w in words if w) for name, words in args.items()}


def _paragraphs(lines: list[str]) -> str:
    """Docstring lines rejoined: a paragraph's lines wrapped for the source become one line."""
    paragraphs, current = [], []
    for line in lines + [""]:
        if line:
            current.append(line)
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    return "\n\n".join(paragraphs)


def _parameters(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of the arguments, without pydantic's titles, and `X | None = None` shown as plain X.

    Dropping the titles and the null branch keeps the prompt short and easy for small models to copy;
    leaving out an optional argument is how the agent says None, and an explicit null is still accepted.
    """
    schema = model.model_json_schema(by_alias=True)
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
        branches = prop.get("anyOf")
        if prop.get("default", ...) is None and branches and len(branches) == 2 and {"type": "null"} in branches:
            del prop["anyOf"], prop["default"]
            prop.update(next(b for b in branches if b != {"type": "null"}))
    return schema


def _placeholder_arguments(model: type[BaseModel]) -> dict[str, Any]:
    """Sample values for the required arguments, for an example call when the tool gives none."""
    schema = model.model_json_schema(by_alias=True)
    samples = {"string": None, "integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}
    example: dict[str, Any] = {}
    for name in schema.get("required", []):
        prop = schema["properties"][name]
        prop = prop.get("anyOf", [prop])[0]
        if "enum" in prop:
            example[name] = prop["enum"][0]
        elif "const" in prop:
            example[name] = prop["const"]
        else:
            sample = samples.get(prop.get("type", "string"))
            example[name] = f"<{name}>" if sample is None else sample
    return example


def _problem(error: Any) -> str:
    """One pydantic validation error as the agent should read it."""
    name = str(error["loc"][0]) if error["loc"] else "arguments"
    if error["type"] == "missing":
        return f"missing required argument {name!r}"
    if error["type"] == "extra_forbidden":
        return f"unexpected argument {name!r}"
    if error["type"] == "model_type":
        return "the arguments must be a JSON object"
    got = repr(error["input"])
    got = got if len(got) <= 60 else got[:57] + "..."
    return f"argument {name!r}: {error['msg']} (got {got})"


def _type_text(annotation: Any) -> str:
    """A type hint as the agent should read it: `str`, `int | None`, `'view' | 'create'`, `list[int]`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is typing.Annotated:
        return _type_text(args[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_text(a) for a in args)
    if annotation is type(None):
        return "None"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_text(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))
