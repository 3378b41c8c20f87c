"""Bug reports written the way a user files them, from what the failing tests printed, never from the diff.

A report names the failing tests, shows how to run them and quotes the error lines pytest printed for
each (the `E` lines of `--tb=short`), trimmed. Traceback frames are left out: a frame inside the library
would show the very line the bug is on. `rewrite` can have an OpenAI-compatible model rephrase a report.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence

import httpx

from agentgym.errors import AgentGymError

MAX_TESTS_LISTED = 8
MAX_TESTS_QUOTED = 3
MAX_LINES_PER_TEST = 6
MAX_LINE_CHARS = 160
_HEADER = re.compile(r"^_{3,} (.+?) _{3,}$")
_SECTION_END = re.compile(r"^={5,} .* ={5,}$")
# Object addresses differ from run to run; a report quotes them as 0x... so that rebuilding gives the same text.
_ADDRESS = re.compile(r"\b0x[0-9a-f]{6,16}\b")
# pytest's own hints, not part of the error.
_NOISE = ("Use -v to get more diff", "Full diff:", "Omitting ")

_OPENERS = (
    "Some of {project}'s own tests fail on a clean checkout of {version}.",
    "I ran the {project} test suite ({version}) and a few tests fail for me.",
    "After setting up {project} {version}, running its tests gives failures I did not expect.",
    "{project} {version}: tests are failing on an unmodified checkout.",
)
_CLOSERS = (
    "The tests look right to me, so I think the bug is in the library code, not in the tests.",
    "As far as I can tell the tests are correct and the library's behaviour is what changed.",
    "I would expect these tests to pass; the failures point at a bug in {project} itself.",
)


class RewriteError(AgentGymError):
    """The rephrasing server did not give a usable answer."""


def failure_excerpts(log: str, tests: Sequence[str]) -> dict[str, list[str]]:
    """For each node id in `tests`, the error lines pytest printed under its FAILURES/ERRORS header."""
    wanted = {_headline(t): t for t in tests}
    excerpts: dict[str, list[str]] = {}
    current: str | None = None
    for line in log.splitlines():
        if match := _HEADER.match(line):
            head = match.group(1)
            # An error in a fixture is headed "ERROR at setup of NAME".
            head = re.sub(r"^ERROR at (setup|teardown) of ", "", head)
            current = wanted.get(head)
            continue
        if _SECTION_END.match(line):
            current = None
            continue
        if current is not None and line.startswith("E "):
            text = line[1:].rstrip()
            if text.strip() and not text.strip().startswith(_NOISE):
                excerpts.setdefault(current, []).append(text)
    return excerpts


def _headline(node_id: str) -> str:
    """The header pytest prints for a test: `Class.test[param]` for `path::Class::test[param]`."""
    return ".".join(node_id.split("::")[1:])


def _clean(lines: Sequence[str], hide: Sequence[str]) -> list[str]:
    """The first lines of an excerpt, dedented, trimmed, without any line showing one of `hide`."""
    indent = min((len(line) - len(line.lstrip()) for line in lines), default=0)
    kept = []
    for line in lines:
        if any(h and h in line for h in hide):
            continue
        line = _ADDRESS.sub("0x...", line[indent:])
        kept.append(line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS - 3] + "...")
        if len(kept) == MAX_LINES_PER_TEST:
            break
    return kept


def write_statement(
    project: str, version: str, failing: Sequence[str], log: str, seed: str, test_cmd: str = "python -m pytest",
    hide: Sequence[str] = (),
) -> str:
    """A user's bug report for the tests `failing` from the pytest `log` of the buggy tree; `hide`: text never to quote."""
    if not failing:
        raise ValueError("a bug report needs at least one failing test")
    rng = random.Random(seed)
    excerpts = failure_excerpts(log, failing)
    listed = list(failing[:MAX_TESTS_LISTED])
    parts = [rng.choice(_OPENERS).format(project=project, version=version), "", "Failing tests:", ""]
    parts += [f"- `{t}`" for t in listed]
    if len(failing) > len(listed):
        parts.append(f"- ... and {len(failing) - len(listed)} more")
    files = sorted({t.split("::")[0] for t in failing})
    parts += ["", "To reproduce:", "", "```", f"{test_cmd} {' '.join(files)}", "```"]
    quoted = [(t, _clean(excerpts[t], hide)) for t in failing if excerpts.get(t)][:MAX_TESTS_QUOTED]
    for test, lines in quoted:
        if lines:
            parts += ["", f"`{_headline(test)}` fails with:", "", "```", *lines, "```"]
    parts += ["", rng.choice(_CLOSERS).format(project=project)]
    return "\n".join(parts).strip() + "\n"


def rewrite(statement: str, client_base_url: str, model: str, timeout_s: float = 120.0,
            headers: Mapping[str, str] | None = None) -> str:
    """The report rephrased by a model behind an OpenAI-compatible server (test names and errors kept)."""
    prompt = (
        "Rewrite this bug report as a developer would post it in an issue tracker. Keep every test name, "
        "command and error message exactly as given. Do not guess at the cause or suggest a fix. "
        "Answer with the report only.\n\n" + statement
    )
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.7}
    url = client_base_url.rstrip("/") + "/chat/completions"
    try:
        response = httpx.post(url, json=body, timeout=timeout_s, headers=dict(headers or {}))
        response.raise_for_status()
        text = response.json()["choices"][0]["message"]["content"]
    except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise RewriteError(f"cannot rephrase a problem statement with {model} at {url}: {exc}") from exc
    if not isinstance(text, str) or not text.strip():
        raise RewriteError(f"{model} at {url} answered with an empty problem statement")
    return text.strip() + "\n"
