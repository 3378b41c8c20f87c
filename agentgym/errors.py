"""One exception root for agentgym; each subclass carries what a caller needs and says the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AgentGymError(Exception):
    """Base of every error agentgym raises on purpose; the CLI prints its message as one line."""


class UnknownEnvError(AgentGymError, KeyError):
    """An env id that is not registered."""

    def __init__(self, env_id: str, known: Iterable[str]) -> None:
        self.env_id = env_id
        self.known = sorted(known)
        close = difflib.get_close_matches(env_id, self.known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = "" if close else f" (known: {', '.join(self.known) or 'none'})"
        super().__init__(f"unknown env {env_id!r}{hint}{listing}")

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])


class RegistrationError(AgentGymError):
    """An env registration that conflicts with another or cannot be loaded."""


class EnvConfigError(AgentGymError, ValueError):
    """Bad keyword arguments or data for an env (a missing games directory, an unknown option)."""


class TaskNotFoundError(AgentGymError, KeyError):
    """A task id that the env does not have."""

    def __str__(self) -> str:
        return str(self.args[0])


class PolicyError(AgentGymError):
    """A policy that cannot be built or cannot reach its backend."""


class ServerUnreachableError(PolicyError):
    """No OpenAI-compatible server answers at the given base URL."""

    def __init__(self, base_url: str, reason: str) -> None:
        self.base_url = base_url
        super().__init__(
            f"no OpenAI-compatible server at {base_url} ({reason}); "
            "start one with `agentgym serve --model smollm2-135m` or check --base-url"
        )


class ModelNotFoundError(PolicyError):
    """A model name that is neither a known alias nor a local path."""


class StoreError(AgentGymError):
    """A trajectory file that cannot be read or written."""
