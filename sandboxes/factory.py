"""Pick a sandbox backend by name, or the best one this machine has ("auto": Docker, else bubblewrap)."""

from __future__ import annotations

import logging
from functools import lru_cache

from agentgym.sandboxes.base import Sandbox, SandboxBackend, SandboxError
from agentgym.sandboxes.spec import SandboxSpec

log = logging.getLogger("agentgym.sandboxes")

BACKENDS = ("docker", "bwrap")


def backend_class(name: str) -> type[SandboxBackend]:
    """The backend class for a name; imported lazily so bubblewrap users never import docker."""
    if name == "docker":
        from agentgym.sandboxes.docker_backend import DockerBackend

        return DockerBackend
    if name == "bwrap":
        from agentgym.sandboxes.bwrap_backend import BwrapBackend

        return BwrapBackend
    raise SandboxError(f"unknown sandbox backend {name!r}; choose one of: auto, {', '.join(BACKENDS)}")


@lru_cache(maxsize=None)
def get_backend(name: str = "auto") -> SandboxBackend:
    """A ready backend; "auto" takes Docker when an engine answers and says in one line when it falls back."""
    if name != "auto":
        backend = backend_class(name)()
        reason = backend.unavailable_reason()
        if reason:
            raise SandboxError(f"sandbox backend {name!r} is not available: {reason}")
        return backend
    docker = backend_class("docker")()
    reason = docker.unavailable_reason()
    if reason is None:
        return docker
    bwrap = backend_class("bwrap")()
    bwrap_reason = bwrap.unavailable_reason()
    if bwrap_reason:
        raise SandboxError(f"no sandbox backend is available: docker: {reason}; bwrap: {bwrap_reason}")
    log.warning("no Docker engine reachable (%s); sandboxes fall back to bubblewrap", reason)
    return bwrap


def create_sandbox(spec: SandboxSpec | None = None, backend: str = "auto") -> Sandbox:
    """A new sandbox for `spec` (default spec when None) on the named backend."""
    return get_backend(backend).create(spec or SandboxSpec())


def available_backends() -> list[SandboxBackend]:
    """Every backend that can run here (for `agentgym sandbox ls/gc`)."""
    found = []
    for name in BACKENDS:
        backend = backend_class(name)()
        if backend.unavailable_reason() is None:
            found.append(backend)
    return found
