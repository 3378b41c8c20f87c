"""The agent's tools for a repository checked out in a sandbox: bash, a file editor, search and submit.

`RepoTools` answers every call with observation text and never raises for the agent's mistakes: a
failing command shows its exit code, and an edit that cannot be made says why ("Error: ..."). It
also counts what the agent did (files changed, tests run and how many passed, submitted), which
`signals()` hands to the env for its step signals. Files are read and written with the sandbox's
file calls, so no content ever passes through shell quoting.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Literal

from pydantic import Field

from agentgym.sandboxes.base import Sandbox, SandboxClosedError, SandboxError
from agentgym.sandboxes.spec import ExecResult
from agentgym.tools import tool

EditorCommand = Literal["view", "create", "str_replace", "insert", "undo_edit"]
LineRange = Annotated[list[int], Field(min_length=2, max_length=2)]

# Which optional arguments each editor command reads; any other one given is a mistake worth saying.
_EDITOR_ARGUMENTS = {"view": {"view_range"}, "create": {"file_text"}, "str_replace": {"old_str", "new_str"},
                     "insert": {"insert_line", "new_str"}, "undo_edit": set()}
# A test runner in command position (first word, after ; && | ( or `python -m`), so `pip install pytest` is none.
_TEST_COMMAND = re.compile(
    r"(?:^|[;&|(]|\s-m)\s*(?:\w+=\S*\s+|timeout\s+\S+\s+)*(?:\S*/)?(?:pytest|py\.test|tox|nox)\b"
    r"|-m\s+unittest\b|\bruntests\.py\b|\bmanage\.py\s+test\b")
_PYTEST_SUMMARY = re.compile(
    r"^[=\s]*((?:\d+ (?:passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?|rerun)(?:, )?)+)"
    r"\s*in [\d.]+s", re.MULTILINE)
_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in ", re.MULTILINE)
_UNITTEST_RESULT = re.compile(r"^(OK|FAILED)\b(?: \(([^)]*)\))?", re.MULTILINE)
# Files Python and test runners write on their own; in files_modified they would hide what the agent changed.
_GENERATED_PARTS = {"__pycache__", ".pytest_cache", ".tox", ".mypy_cache", ".nox"}
# safe.directory: the sandbox user may not own the checkout, and git then refuses to read it.
GIT_STATUS = ["git", "-c", "safe.directory=*", "status", "--porcelain", "-z", "--untracked-files=all"]
_MAX_MATCHES = 100
_MAX_LINE_CHARS = 300
_SNIPPET_CONTEXT = 4


class _Refused(Exception):
    """A tool call that cannot be carried out; its message becomes the observation."""


def truncate(text: str, cap: int, already_cut: int = 0) -> str:
    """`text` cut to `cap` characters, keeping its head and tail and saying how much was cut between.

    `already_cut` adds what an earlier cap (the sandbox's output cap) dropped to the count shown.
    """
    if len(text) <= cap:
        return text
    head, tail = text[: cap // 2], text[len(text) - (cap - cap // 2):]
    return f"{head}\n[... {len(text) - cap + already_cut:,} characters cut ...]\n{tail}"


def is_test_command(command: str) -> bool:
    """The command runs a test suite (pytest, unittest, tox, nox, Django's runtests.py or manage.py test)."""
    return _TEST_COMMAND.search(command) is not None


def passed_fraction(output: str) -> float | None:
    """Passed over passed + failed + errors, from the last pytest or unittest summary in `output`; None if none."""
    pytest_runs = _PYTEST_SUMMARY.findall(output)
    if pytest_runs:
        counts = {word.rstrip("s"): int(n) for n, word in re.findall(r"(\d+) ([a-z]+)", pytest_runs[-1])}
        ran = counts.get("passed", 0) + counts.get("failed", 0) + counts.get("error", 0)
        return counts.get("passed", 0) / ran if ran else None
    ran_lines, results = _UNITTEST_RAN.findall(output), _UNITTEST_RESULT.findall(output)
    if ran_lines and results:
        details = dict(re.findall(r"(\w+)=(\d+)", results[-1][1]))
        ran = int(ran_lines[-1]) - int(details.get("skipped", 0))
        failed = int(details.get("failures", 0)) + int(details.get("errors", 0))
        return (ran - failed) / ran if ran > 0 else None
    return None


def git_changed_paths(porcelain: str) -> set[str]:
    """The changed paths in `git status --porcelain -z` output, less the files tools write on their own."""
    paths = set()
    entries = iter(porcelain.split("\0"))
    for entry in entries:
        if len(entry) < 4:
            continue
        if entry[0] in "RC":
            next(entries, None)  # a rename or copy is followed by its source path
        path = entry[3:].rstrip("/")
        parts = path.split("/")
        if not _GENERATED_PARTS.intersection(parts) and not path.endswith(".pyc") \
                and not any(p.endswith(".egg-info") for p in parts):
            paths.add(path)
    return paths


def numbered(lines: list[str], first: int) -> str:
    """Lines with their numbers, as `cat -n` prints them."""
    return "\n".join(f"{number:6}\t{line}" for number, line in enumerate(lines, start=first))


class RepoTools:
    """bash, str_replace_editor, search and submit on the repository at `repo` inside `sandbox`.

    Counters for the env's signals: `files_modified` (repo-relative paths changed by the editor, or
    seen changed by `git status` after a bash command), `ran_tests`, `tests_passed_frac` (of the
    latest test run; None when it printed no summary), `submitted` and `tool_errors`.
    """

    def __init__(self, sandbox: Sandbox, repo: str = "/testbed", timeout_s: float = 60.0,
                 max_timeout_s: float = 600.0, observation_chars: int = 10_000, track_git: bool = True) -> None:
        if not repo.startswith("/"):
            raise ValueError(f"repo must be an absolute path in the sandbox, got {repo!r}")
        if not 0 < timeout_s <= max_timeout_s:
            raise ValueError(f"need 0 < timeout_s <= max_timeout_s, got {timeout_s} and {max_timeout_s}")
        if observation_chars < 200:
            raise ValueError(f"observation_chars must be at least 200, got {observation_chars}")
        self.sandbox = sandbox
        self.repo = posixpath.normpath(repo)
        self.timeout_s = float(timeout_s)
        self.max_timeout_s = float(max_timeout_s)
        self.observation_chars = int(observation_chars)
        self.track_git = track_git
        self.files_modified: set[str] = set()
        self.ran_tests = False
        self.tests_passed_frac: float | None = None
        self.submitted = False
        self.tool_errors = 0
        # Per file, the contents before each editor change (None: the file did not exist), for undo_edit.
        self._history: dict[str, list[bytes | None]] = {}

    def signals(self) -> dict[str, object]:
        """What the agent has done so far, as JSON-ready step signals."""
        return {"files_modified": len(self.files_modified), "ran_tests": self.ran_tests,
                "tests_passed_frac": self.tests_passed_frac, "submitted": self.submitted,
                "tool_errors": self.tool_errors}

    @tool(example={"command": "git status"})
    def bash(self, command: str, timeout: Annotated[float, Field(gt=0)] | None = None) -> str:
        """Run a bash command in the repository and see its exit code and output (stdout and stderr together).

        Every command starts afresh in the repository directory: `cd` and variables do not carry
        over to the next call. Nothing can be typed into a running program; long output is cut in
        the middle.

        Args:
            command: The command line, run by bash.
            timeout: Seconds before the command is killed; by default the env's limit per command, and at
                most the env's maximum.
        """
        if not command.strip():
            return self._error("bash needs a command")
        limit = min(self.timeout_s if timeout is None else timeout, self.max_timeout_s)
        # `exec 2>&1` on the same line keeps stdout and stderr in order without shifting bash's line numbers.
        result = self.sandbox.exec(["bash", "-c", "exec 2>&1; " + command], timeout=limit, workdir=self.repo)
        output = (result.stdout + result.stderr).rstrip("\n")
        if is_test_command(command):
            self.ran_tests = True
            self.tests_passed_frac = passed_fraction(output)
        if self.track_git:
            self._note_git_changes()
        return f"{_status(result, limit)}\n{self._cap(output, result) if output else '(no output)'}"

    @tool(example={"command": "view", "path": "."})
    def str_replace_editor(self, command: EditorCommand, path: str, file_text: str | None = None,
                           old_str: str | None = None, new_str: str | None = None, insert_line: int | None = None,
                           view_range: LineRange | None = None) -> str:
        """View, create and edit files of the repository.

        view shows a file with line numbers, or lists a directory two levels deep. create writes a
        new file and refuses one that exists. str_replace replaces old_str, which must occur exactly
        once in the file, with new_str. insert adds new_str after line insert_line. undo_edit
        reverts the latest edit of the file.

        Args:
            command: What to do: view, create, str_replace, insert or undo_edit.
            path: A file or directory inside the repository, absolute or relative to the repository root.
            file_text: create: the whole content of the new file.
            old_str: str_replace: the exact text to replace, whitespace included; it must occur once.
            new_str: str_replace: the text that replaces old_str (omit it to delete old_str); insert: the
                text to insert.
            insert_line: insert: the line after which new_str goes (0 puts it before the first line).
            view_range: view: [first, last] line to show, counted from 1; last -1 shows to the end.
        """
        given = {"file_text": file_text, "old_str": old_str, "new_str": new_str, "insert_line": insert_line,
                 "view_range": view_range}
        try:
            stray = [name for name, value in given.items() if value is not None and name not in _EDITOR_ARGUMENTS[command]]
            if stray:
                raise _Refused(f"{command} does not take {', '.join(stray)}")
            full, rel = self._resolve(path)
            if command == "view":
                return self._cap(self._view(full, rel, view_range))
            if command == "create":
                return self._create(full, rel, file_text)
            if command == "str_replace":
                return self._str_replace(full, rel, old_str, new_str or "")
            if command == "insert":
                return self._insert(full, rel, insert_line, new_str)
            return self._undo(full, rel)
        except _Refused as refused:
            return self._error(str(refused))

    @tool(example={"pattern": "def main"})
    def search(self, pattern: str, path: str = ".", glob: str | None = None,
               mode: Literal["content", "files"] = "content") -> str:
        """Search the repository for lines matching a regular expression, or for files by name.

        Args:
            pattern: content mode: an extended regular expression (grep -E), such as "def \\w+_handler";
                files mode: a file-name glob, such as "test_*.py".
            path: The directory or file to search, absolute or relative to the repository root.
            glob: content mode: search only files whose names match this glob, such as "*.py".
            mode: "content" lists matching lines as path:line:text; "files" lists the paths of matching files.
        """
        try:
            if not pattern:
                raise _Refused("search needs a pattern")
            _, rel = self._resolve(path)
            target = "." if rel == "." else "./" + rel  # never an argument that starts with "-"
            if mode == "files":
                if glob is not None:
                    raise _Refused("glob is for content mode; in files mode the pattern is the file-name glob")
                argv = ["find", target, "-name", ".git", "-prune", "-o", "-type", "f", "-name", pattern, "-print"]
            else:
                argv = ["grep", "-rnIE", "--color=never", "--exclude-dir=.git", *(["--include", glob] if glob else []),
                        "-e", pattern, "--", target]
            result = self.sandbox.exec(argv, timeout=self.timeout_s, workdir=self.repo)
            found = sorted((line.removeprefix("./") for line in result.stdout.splitlines() if line), key=_by_place)
            if (result.exit_code > 1 and not found) or result.timed_out:
                raise _Refused(f"{argv[0]} failed: {result.stderr.strip() or _status(result, self.timeout_s)}")
            return self._cap(_listing(found, pattern, rel, "matching lines" if mode == "content" else "files"))
        except _Refused as refused:
            return self._error(str(refused))

    @tool
    def submit(self) -> str:
        """Say that you are done: the repository as you leave it is your answer, and the episode ends."""
        self.submitted = True
        changed = ", ".join(sorted(self.files_modified)) or "none"
        return f"Submitted. Files changed: {changed}."

    # --- the editor's commands ---
    def _view(self, full: str, rel: str, view_range: list[int] | None) -> str:
        data = self._read_if_file(full)
        if data is None:
            if not self._is_dir(full):
                raise _Refused(f"{rel} does not exist")
            if view_range is not None:
                raise _Refused(f"view_range is for files; {rel} is a directory")
            return self._directory_listing(full, rel)
        if b"\0" in data:
            raise _Refused(f"{rel} is a binary file; view shows text files")
        lines = data.decode("utf-8", errors="replace").splitlines()
        if not lines:
            return f"{rel} is empty"
        first, last = 1, len(lines)
        if view_range is not None:
            first, last = view_range
            if not 1 <= first <= len(lines):
                raise _Refused(f"view_range starts at line {first}, but {rel} has lines 1 to {len(lines)}")
            last = len(lines) if last == -1 else last
            if last < first:
                raise _Refused(f"view_range [{first}, {view_range[1]}] ends before it starts; use -1 for the end")
            last = min(last, len(lines))  # a range past the end shows what there is; the header says where it ends
        return f"{rel}, lines {first}-{last} of {len(lines)}:\n{numbered(lines[first - 1:last], first)}"

    def _create(self, full: str, rel: str, file_text: str | None) -> str:
        if file_text is None:
            raise _Refused("create needs file_text")
        if self._read_if_file(full) is not None:
            raise _Refused(f"{rel} already exists; view it, then change it with str_replace or insert")
        if self._is_dir(full):
            raise _Refused(f"{rel} is a directory")
        self._write(full, rel, file_text.encode(), previous=None)
        return f"Created {rel} ({len(file_text.splitlines())} lines)."

    def _str_replace(self, full: str, rel: str, old_str: str | None, new_str: str) -> str:
        if not old_str:
            raise _Refused("str_replace needs a non-empty old_str")
        data, text = self._read_text(full, rel)
        starts, at = [], text.find(old_str)
        while at != -1:
            starts.append(at)
            at = text.find(old_str, at + 1)
        if not starts:
            raise _Refused(f"old_str does not occur in {rel}; it must match the file exactly, whitespace and "
                           "indentation included (view the file to copy it)")
        if len(starts) > 1:
            lines = ", ".join(str(text.count("\n", 0, s) + 1) for s in starts)
            raise _Refused(f"old_str occurs {len(starts)} times in {rel}, at lines {lines}; include more of the "
                           "surrounding lines to make it unique")
        edited = text[: starts[0]] + new_str + text[starts[0] + len(old_str):]
        self._write(full, rel, edited.encode(), previous=data)
        return self._snippet(rel, edited, text.count("\n", 0, starts[0]) + 1, new_str)

    def _insert(self, full: str, rel: str, insert_line: int | None, new_str: str | None) -> str:
        if insert_line is None or new_str is None:
            raise _Refused("insert needs insert_line and new_str")
        data, text = self._read_text(full, rel)
        lines = text.splitlines(keepends=True)
        if not 0 <= insert_line <= len(lines):
            raise _Refused(f"insert_line must be between 0 and {len(lines)} (the number of lines in {rel}), "
                           f"got {insert_line}")
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += "\n"  # otherwise text inserted after the last line would join it
        block = new_str if new_str.endswith("\n") else new_str + "\n"
        edited = "".join(lines[:insert_line]) + block + "".join(lines[insert_line:])
        self._write(full, rel, edited.encode(), previous=data)
        return self._snippet(rel, edited, insert_line + 1, block)

    def _undo(self, full: str, rel: str) -> str:
        history = self._history.get(full)
        if not history:
            raise _Refused(f"there is no edit of {rel} to undo")
        previous = history.pop()
        self.files_modified.add(rel)
        if previous is None:
            result = self.sandbox.exec(["rm", "-f", "--", full], timeout=self.timeout_s)
            if not result.ok:
                raise _Refused(f"cannot remove {rel}: {result.stderr.strip()}")
            return f"Removed {rel}, which create had made."
        self._put(full, rel, previous)
        return f"Reverted the latest edit of {rel}."

    # --- helpers ---
    def _resolve(self, path: str) -> tuple[str, str]:
        """(absolute path, path relative to the repo) of an agent's path; refused when it leaves the repo."""
        if not path.strip():
            raise _Refused("the path is empty")
        full = posixpath.normpath(path if path.startswith("/") else posixpath.join(self.repo, path))
        if full != self.repo and not full.startswith(self.repo + "/"):
            raise _Refused(f"{path!r} is outside the repository {self.repo}; give a path inside it, absolute or "
                           "relative to the repository root")
        return full, posixpath.relpath(full, self.repo)

    def _read_if_file(self, full: str) -> bytes | None:
        """A regular file's bytes, or None where there is none (missing, or a directory)."""
        try:
            return self.sandbox.read_file(full)
        except SandboxClosedError:
            raise
        except SandboxError:
            return None

    def _read_text(self, full: str, rel: str) -> tuple[bytes, str]:
        data = self._read_if_file(full)
        if data is None:
            raise _Refused(f"{rel} is not a file" if self._is_dir(full) else f"{rel} does not exist; create it first")
        try:
            return data, data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused(f"{rel} is not UTF-8 text; edit it with bash") from None

    def _write(self, full: str, rel: str, data: bytes, previous: bytes | None) -> None:
        """Write an edit and remember what it replaced, for undo_edit."""
        self._put(full, rel, data)
        self._history.setdefault(full, []).append(previous)
        self.files_modified.add(rel)

    def _put(self, full: str, rel: str, data: bytes) -> None:
        try:
            self.sandbox.write_file(full, data)
        except SandboxClosedError:
            raise
        except SandboxError as exc:
            raise _Refused(f"cannot write {rel}: {exc}") from None

    def _is_dir(self, full: str) -> bool:
        return self.sandbox.exec(["test", "-d", full], timeout=self.timeout_s).ok

    def _directory_listing(self, full: str, rel: str) -> str:
        result = self.sandbox.exec(["find", ".", "-mindepth", "1", "-maxdepth", "2", "-name", ".git", "-prune",
                                    "-o", "-printf", "%y %P\n"], timeout=self.timeout_s, workdir=full)
        if not result.ok:
            raise _Refused(f"cannot list {rel}: {result.stderr.strip()}")
        entries = sorted(name + ("/" if kind == "d" else "")
                         for kind, _, name in (line.partition(" ") for line in result.stdout.splitlines()))
        return f"Files and directories in {rel}, two levels deep (.git left out):\n" + "\n".join(entries)

    def _snippet(self, rel: str, text: str, first_changed: int, new_text: str) -> str:
        """The changed lines of an edit with a few lines around them, numbered."""
        lines = text.splitlines()
        first = max(1, first_changed - _SNIPPET_CONTEXT)
        last = min(len(lines), first_changed + max(new_text.count("\n"), 1) + _SNIPPET_CONTEXT - 1)
        return self._cap(f"Edited {rel}. Lines {first}-{last} now read:\n{numbered(lines[first - 1:last], first)}")

    def _note_git_changes(self) -> None:
        """Add the paths `git status` reports changed (new files included) to files_modified."""
        result = self.sandbox.exec(GIT_STATUS, timeout=self.timeout_s, workdir=self.repo)
        if result.ok:
            self.files_modified |= git_changed_paths(result.stdout)
        elif result.exit_code == 127:  # no git in this sandbox: asking after every command would only cost time
            self.track_git = False

    def _cap(self, text: str, result: ExecResult | None = None) -> str:
        dropped = 0 if result is None else result.stdout_truncated + result.stderr_truncated
        return truncate(text, self.observation_chars, dropped)

    def _error(self, message: str) -> str:
        self.tool_errors += 1
        return f"Error: {message}"


def _status(result: ExecResult, limit: float) -> str:
    if result.timed_out:
        return f"timed out: killed after {limit:g}s"
    if result.oom_killed:
        return "killed: out of memory"
    return f"exit code {result.exit_code}"


def _by_place(line: str) -> tuple[str, int, str]:
    """Sort key of a grep line (path:number:text) or a path: by path, then by line number."""
    path, _, rest = line.partition(":")
    number, _, _ = rest.partition(":")
    return (path, int(number) if number.isdigit() else 0, line)


def _listing(found: list[str], pattern: str, rel: str, what: str) -> str:
    if not found:
        return f"No {what} for {pattern!r} in {rel}."
    shown = [line if len(line) <= _MAX_LINE_CHARS else line[:_MAX_LINE_CHARS] + " [line cut]"
             for line in found[:_MAX_MATCHES]]
    more = f"; the first {len(shown)} are shown, narrow the search with path or glob" if len(found) > len(shown) else ""
    return f"{len(found)} {what} for {pattern!r} in {rel}{more}:\n" + "\n".join(shown)
