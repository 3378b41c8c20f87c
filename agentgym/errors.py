"""One exception root for agentgym; each subclass carries what a caller needs and says the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class AgentGymError(Exception):
    """Base of every error agentgym raises on purpose; the CLI prints its message as one line."""


class UnknownEnvError(AgentGymError, KeyError):
    """An env id that is not registered; names the plugins that failed to load, which may have held it."""

    def __init__(self, env_id: str, known: Iterable[str], plugin_errors: Sequence[PluginLoadError] = ()) -> None:
        self.env_id = env_id
        self.known = sorted(known)
        self.plugin_errors = list(plugin_errors)
        close = difflib.get_close_matches(env_id, self.known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = "" if close else f" (known: {', '.join(self.known) or 'none'})"
        # A plugin that failed to load is the likeliest reason an id is missing, so it comes first.
        plugins = "".join(f"; {e}" for e in self.plugin_errors)
        if plugins:
            plugins += " (fix or uninstall the plugin; its traceback was logged when it failed)"
        super().__init__(f"unknown env {env_id!r}{plugins}{hint}{listing}")

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])


class RegistrationError(AgentGymError):
    """An env registration that conflicts with another or cannot be loaded."""


class PluginLoadError(RegistrationError):
    """A plugin (an entry point of the `agentgym.envs` group) whose hook failed to import or to run."""

    def __init__(self, plugin: str, entry_point: str, cause: BaseException) -> None:
        self.plugin = plugin
        self.entry_point = entry_point
        super().__init__(f"the plugin {plugin!r} ({entry_point}) failed to load: {type(cause).__name__}: {cause}")
        self.__cause__ = cause


class EnvLoadError(RegistrationError):
    """A registered env whose entry point cannot be imported (a missing optional dependency, a typo)."""

    def __init__(self, env_id: str, entry_point: str, cause: BaseException, fix: str) -> None:
        self.env_id = env_id
        self.entry_point = entry_point
        super().__init__(
            f"env {env_id!r}: cannot load entry point {entry_point!r}: {type(cause).__name__}: {cause}; {fix}"
        )
        self.__cause__ = cause


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


class ContextOverflowError(PolicyError):
    """A prompt plus max_tokens that does not fit the model's context window."""

    def __init__(self, message: str, *, prompt_tokens: int | None = None, limit: int | None = None) -> None:
        self.prompt_tokens = prompt_tokens
        self.limit = limit
        super().__init__(message)
