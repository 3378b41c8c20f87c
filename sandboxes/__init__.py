"""Sandboxes that run agent commands off the host: Docker and bubblewrap behind one contract.

See docs/architecture.md (Sandbox) and docs/sandboxes.md. `create_sandbox(SandboxSpec(...))` picks Docker
when an engine answers and bubblewrap otherwise.
"""

from agentgym.sandboxes.base import Sandbox, SandboxBackend, SandboxClosedError, SandboxError, SandboxInfo, SnapshotUnsupportedError
from agentgym.sandboxes.factory import available_backends, create_sandbox, get_backend
from agentgym.sandboxes.output import CappedOutput
from agentgym.sandboxes.spec import ExecResult, RepoMount, SandboxSpec

__all__ = [
    "CappedOutput",
    "ExecResult",
    "RepoMount",
    "Sandbox",
    "SandboxBackend",
    "SandboxClosedError",
    "SandboxError",
    "SandboxInfo",
    "SandboxSpec",
    "SnapshotUnsupportedError",
    "available_backends",
    "create_sandbox",
    "get_backend",
]
