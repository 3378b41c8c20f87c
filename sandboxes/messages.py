"""How the sandbox backends word their problems: an exception in one line, a warning said once."""

from __future__ import annotations

import logging

log = logging.getLogger("agentgym.sandboxes")

# Messages already logged by warn_once in this process.
_warned: set[str] = set()


def one_line(exc: BaseException) -> str:
    """An exception's message with its white space folded to single spaces (its type's name if empty)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def last_line(text: str, default: str = "no output") -> str:
    """The last non-blank line of a command's output, stripped (`default` when there is none)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else default


def warn_once(message: str) -> None:
    """Log `message` as a warning the first time this process asks, and never again."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)
