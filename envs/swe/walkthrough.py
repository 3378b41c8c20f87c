"""The reference solution of an SWE instance as tool calls: the gold patch through str_replace_editor, a test run, submit."""

from __future__ import annotations

import shlex
from collections.abc import Callable

from agentgym.envs.swe.instance import SWEInstance, parse_patch
from agentgym.tool_calls import ToolCall, render_tool_call


def walkthrough(instance: SWEInstance, read_file: Callable[[str], str | None]) -> list[str]:
    """Reply texts that apply the gold patch, run the FAIL_TO_PASS tests, and submit.

    `read_file(path)` gives a repo file's text at base_commit (None: unknown), so that each hunk
    becomes one str_replace whose old text is unique in the file as edited so far; a hunk whose
    text is not unique rewrites the whole file instead.
    """
    calls: list[ToolCall] = []
    for patched in parse_patch(instance.patch):
        path = patched.path
        if patched.is_removed_file:
            calls.append(ToolCall("bash", {"command": f"rm -- {shlex.quote(path)}"}))
            continue
        current = "" if patched.is_added_file else read_file(path)
        hunks = [("".join(l.value for l in h if not l.is_added), "".join(l.value for l in h if not l.is_removed))
                 for h in patched]
        if patched.is_added_file:
            calls.append(ToolCall("str_replace_editor", {"command": "create", "path": path,
                                                         "file_text": "".join(new for _, new in hunks)}))
            continue
        if current is None:  # no pristine copy to check against: trust the hunks' context
            calls += [_replace(path, old, new) for old, new in hunks]
            continue
        edits, text = [], current
        for old, new in hunks:
            if old and text.count(old) == 1:
                edits.append(_replace(path, old, new))
                text = text.replace(old, new, 1)
            else:
                edits = None
                break
        if edits is None:  # rewrite the file: apply the hunks by position
            calls.append(ToolCall("bash", {"command": f"rm -- {shlex.quote(path)}"}))
            calls.append(ToolCall("str_replace_editor", {"command": "create", "path": path,
                                                         "file_text": _patched_text(current, patched)}))
        else:
            calls += edits
    test_files = sorted({t.split("::")[0] for t in instance.FAIL_TO_PASS if "::" in t})
    if test_files:
        calls.append(ToolCall("bash", {"command": "python3 -m pytest -q -p no:cacheprovider " + " ".join(map(shlex.quote, test_files))}))
    calls.append(ToolCall("submit", {}))
    return [render_tool_call(c) for c in calls]


def _replace(path: str, old: str, new: str) -> ToolCall:
    return ToolCall("str_replace_editor", {"command": "str_replace", "path": path, "old_str": old, "new_str": new})


def _patched_text(text: str, patched) -> str:  # noqa: ANN001 - a unidiff PatchedFile
    """`text` with the file's hunks applied at their line numbers."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    position = 0
    for hunk in patched:
        start = hunk.source_start - 1 if hunk.source_length else hunk.source_start
        out += lines[position:start]
        out += [l.value for l in hunk if not l.is_removed]
        position = start + hunk.source_length
    out += lines[position:]
    return "".join(out)
