"""The env registry: printable specs, `make` with overrides, plugins through entry points.

Every id registered here is also registered in gymnasium's registry as `agentgym/<id>`,
so `gymnasium.make("agentgym/textworld")` and `agentgym.make("textworld")` build the same env.
Third-party packages add envs by declaring an entry point in the `agentgym.envs` group
whose target is a callable that calls `agentgym.register(...)`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import re
import threading
from collections.abc import Callable
from importlib import metadata
from typing import Any

import gymnasium as gym
from pydantic import BaseModel, ConfigDict, Field

from agentgym.errors import EnvConfigError, EnvLoadError, PluginLoadError, RegistrationError, UnknownEnvError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "agentgym.envs"
GYM_NAMESPACE = "agentgym"
_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class EnvSpec(BaseModel):
    """A serialisable description of how to build an env: id, `module:attr` entry point, default kwargs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    entry_point: str = Field(description="'package.module:ClassOrFactory'")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Defaults that `make` overrides.")
    description: str = ""

    @property
    def gym_id(self) -> str:
        """The id under which gymnasium knows this env."""
        return f"{GYM_NAMESPACE}/{self.id}"

    def load(self) -> Callable[..., Any]:
        """Import and return the entry point; any failure is an EnvLoadError naming it, chained to the cause."""
        module_name, _, attr = self.entry_point.partition(":")
        try:
            module = importlib.import_module(module_name)
        # Importing an env's module runs its code: a missing optional dependency, a broken shared
        # library or a bug there may raise anything, and the caller must still learn which env it was.
        except Exception as exc:
            raise EnvLoadError(self.id, self.entry_point, exc, _import_fix(module_name, exc)) from exc
        try:
            return getattr(module, attr)
        except AttributeError as exc:
            raise EnvLoadError(self.id, self.entry_point, exc, "check the name after ':'") from exc


def _import_fix(module_name: str, exc: Exception) -> str:
    """What to do about `exc`, raised while importing an env's module `module_name`."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        if module_name == exc.name or module_name.startswith(f"{exc.name}."):
            return "check the module path before ':', or install the package that holds it"
        return f"install the package that provides {exc.name!r} (the env needs it)"
    return "the chained traceback shows where importing the module failed"


class Registry:
    """A set of env specs; the module-level functions use one shared instance."""

    def __init__(self, *, load_plugins: bool = True, mirror_to_gymnasium: bool = True) -> None:
        self._specs: dict[str, EnvSpec] = {}
        self._load_plugins = load_plugins
        self._plugins_loaded = False
        self._plugin_errors: list[PluginLoadError] = []
        self._mirror = mirror_to_gymnasium
        self._lock = threading.RLock()

    def register(self, id: str, entry_point: str, *, description: str = "", **defaults: Any) -> EnvSpec:
        """Add an env; re-registering the identical spec is a no-op, a different one is an error."""
        if not _ID_PATTERN.match(id):
            raise RegistrationError(f"env id {id!r} must be lower-case letters, digits, '.', '_' or '-'")
        if ":" not in entry_point:
            raise RegistrationError(f"entry point {entry_point!r} must look like 'package.module:Attr'")
        spec = EnvSpec(id=id, entry_point=entry_point, kwargs=defaults, description=description)
        with self._lock:
            old = self._specs.get(id)
            if old is not None and old != spec:
                raise RegistrationError(
                    f"env {id!r} is already registered with entry point {old.entry_point!r}; "
                    "pick another id or unregister it first"
                )
            self._specs[id] = spec
        if self._mirror:
            gym.registry.pop(spec.gym_id, None)
            gym.register(id=spec.gym_id, entry_point=spec.entry_point, kwargs=dict(spec.kwargs))
        return spec

    def unregister(self, id: str) -> None:
        """Remove an env (tests use this to clean up)."""
        with self._lock:
            spec = self._specs.pop(id, None)
        if spec is not None and self._mirror:
            gym.registry.pop(spec.gym_id, None)

    def spec(self, id: str) -> EnvSpec:
        """The spec of `id`; unknown ids raise with the closest known ones."""
        self._ensure_plugins()
        bare = id.removeprefix(f"{GYM_NAMESPACE}/")
        try:
            return self._specs[bare]
        except KeyError:
            failures = self.plugin_errors
            # Chained to the first failure's exception so that its traceback is shown with the error.
            raise UnknownEnvError(bare, self._specs, failures) from (failures[0].__cause__ if failures else None)

    def make(self, id: str, **kwargs: Any) -> Any:
        """Build env `id` with its defaults overridden by `kwargs`."""
        spec = self.spec(id)
        factory = spec.load()
        merged = {**spec.kwargs, **kwargs}
        _check_options(spec.id, factory, merged)
        return factory(**merged)

    def list_envs(self) -> list[EnvSpec]:
        """All registered specs, sorted by id."""
        self._ensure_plugins()
        with self._lock:
            return [self._specs[k] for k in sorted(self._specs)]

    @property
    def plugin_errors(self) -> list[PluginLoadError]:
        """The plugins that failed to load, in entry-point order, each chained to its exception."""
        self._ensure_plugins()
        with self._lock:
            return list(self._plugin_errors)

    def _ensure_plugins(self) -> None:
        if not self._load_plugins or self._plugins_loaded:
            return
        with self._lock:
            if self._plugins_loaded:
                return
            self._plugins_loaded = True
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                try:
                    hook = ep.load()
                    hook()
                except Exception as exc:  # a broken plugin must not take the built-ins down
                    failure = PluginLoadError(ep.name, ep.value, exc)
                    # Remembered so that an unknown id can be blamed on it instead of reading as a typo.
                    self._plugin_errors.append(failure)
                    log.warning("agentgym: %s", failure, exc_info=exc)


def _check_options(env_id: str, factory: Callable[..., Any], options: dict[str, Any]) -> None:
    """Refuse options the env's constructor does not take, naming the closest ones (`gamesdir` → `games_dir`)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature: let the call decide
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"]
    for name in options:
        if name not in accepted:
            close = difflib.get_close_matches(name, accepted, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise EnvConfigError(f"env {env_id!r} has no option {name!r}; {hint}it takes: {', '.join(accepted)}")


default_registry = Registry()


def register(id: str, entry_point: str, *, description: str = "", **defaults: Any) -> EnvSpec:
    """Register an env in the default registry (and in gymnasium's as `agentgym/<id>`)."""
    return default_registry.register(id, entry_point, description=description, **defaults)


def make(id: str, **kwargs: Any) -> Any:
    """Build a registered env, overriding its default kwargs."""
    return default_registry.make(id, **kwargs)


def spec(id: str) -> EnvSpec:
    """The spec of a registered env."""
    return default_registry.spec(id)


def task_ids(id: str, **kwargs: Any) -> list[str]:
    """The task ids of env `id` built with `kwargs` (bad options and missing data fail here, once)."""
    env = make(id, **kwargs)
    try:
        return list(env.task_ids())
    finally:
        env.close()


def list_envs() -> list[EnvSpec]:
    """Every registered env spec."""
    return default_registry.list_envs()
