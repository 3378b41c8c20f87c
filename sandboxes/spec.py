"""What a sandbox is made from (`SandboxSpec`) and what one command in it returned (`ExecResult`)."""

from __future__ import annotations

import posixpath
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentgym.cache import recipe_key

# Debian's python3 in the images this project builds; the host's pyenv shim costs ~80 ms a start.
SANDBOX_PYTHON = "/usr/bin/python3"
# Where a repository may not be mounted: the system's own trees (bound read-only, or mounted by the backend).
_RESERVED_ROOTS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin", "/sys",
                   "/tmp", "/usr")


def _inside(path: str, root: str) -> bool:
    """`path` is `root` or below it (both normalised absolute paths)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


class RepoMount(BaseModel):
    """A directory of the sandbox holding a repository the agent edits; reset() puts its pristine copy back.

    It is writable by the sandbox user, counts against disk_mb, and sits at the same path after every
    reset, so an editable install made against that path (`pip install -e .`) keeps working.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field("/testbed", description="Absolute path of the repository inside the sandbox.")
    source: Path | None = Field(
        None,
        description="Host directory or tar archive (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz) holding the pristine "
        "repository; None: what the image (Docker) or the root filesystem (bubblewrap) holds at `path`.",
    )

    @field_validator("path")
    @classmethod
    def _mountable(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"repo.path must be an absolute path, got {value!r}")
        path = posixpath.normpath(value)
        if path == "/" or any(_inside(path, root) for root in _RESERVED_ROOTS):
            raise ValueError(f"repo.path {value!r} is a system directory; use a directory of its own such as /testbed")
        return path


class SandboxSpec(BaseModel):
    """Everything that decides what a sandbox is: its filesystem, its limits, its user and environment.

    Two sandboxes from equal specs are interchangeable, which is what lets a pool hand out a warm one.
    Limits are hard: a command that crosses one is stopped, and the sandbox stays usable or is replaced.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str | None = Field(
        None, description="Docker image (`agentgym sandbox build-image` makes them offline); None: the backend's default."
    )
    rootfs: Path | None = Field(
        None, description="bubblewrap: a prepared root filesystem directory; None: the project's Debian root (rootfs.py)."
    )
    cpus: float = Field(1.0, gt=0, description="CPU cores the sandbox may use.")
    memory_mb: int = Field(512, ge=16, description="Memory limit; a process that exceeds it is killed (OOM).")
    pids: int = Field(128, ge=8, description="Most processes and threads alive at once (stops fork bombs).")
    disk_mb: int = Field(256, ge=1, description="Size of the writable workdir (and /tmp); writes past it fail.")
    network: bool = Field(False, description="False: only a loopback interface of the sandbox's own.")
    wall_clock_s: float | None = Field(
        3600.0, gt=0, description="Lifetime of the sandbox; after it every exec fails and the sandbox is closed."
    )
    exec_timeout_s: float = Field(60.0, gt=0, description="Default timeout of one exec; the call can override it.")
    user: str = Field("1000:1000", description="uid:gid that commands run as; never root.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment of every command (exec's env adds to it).")
    workdir: str = Field("/workspace", description="Absolute path of the writable working directory.")
    output_cap_bytes: int = Field(
        1 << 20, ge=1024, description="Per stream; beyond it the middle is dropped, head and tail kept, and the result says so."
    )
    repo: RepoMount | None = Field(
        None, description="A writable repository directory (e.g. a SWE task's /testbed), restored to pristine by reset()."
    )

    @field_validator("workdir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or value == "/":
            raise ValueError(f"workdir must be an absolute path below '/', got {value!r}")
        return value.rstrip("/")

    @field_validator("user")
    @classmethod
    def _not_root(cls, value: str) -> str:
        uid, _, gid = value.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise ValueError(f"user must be numeric 'uid:gid', got {value!r}")
        if int(uid) == 0 or (gid and int(gid) == 0):
            raise ValueError("user must not be root (uid or gid 0): sandboxes never run commands as root")
        return value

    @model_validator(mode="after")
    def _repo_beside_workdir(self) -> SandboxSpec:
        # One writable tree may not hide part of the other: the repo is the workdir itself, or apart from it.
        repo = self.repo
        nested = repo is not None and (_inside(repo.path, self.workdir) or _inside(self.workdir, repo.path))
        if repo is not None and nested and repo.path != self.workdir:
            raise ValueError(f"repo.path {repo.path!r} and workdir {self.workdir!r} must be equal or apart, not nested")
        return self

    @property
    def uid(self) -> int:
        """The numeric user id commands run as."""
        return int(self.user.partition(":")[0])

    @property
    def gid(self) -> int:
        """The numeric group id commands run as (the uid when none is given)."""
        uid, _, gid = self.user.partition(":")
        return int(gid or uid)

    def key(self) -> str:
        """A short stable hash of the spec: pools and caches are keyed by it."""
        return recipe_key(self.model_dump_json())


class ExecResult(BaseModel):
    """What one command did: its exit code, its (possibly truncated) output, and whether a limit stopped it."""

    model_config = ConfigDict(extra="forbid")

    exit_code: int = Field(description="The command's exit status; 128+N when signal N killed it; -1 when it never ran.")
    stdout: str
    stderr: str
    timed_out: bool = Field(False, description="The command was killed at its timeout.")
    duration: float = Field(description="Seconds from start to exit, as seen by the caller.")
    oom_killed: bool = Field(False, description="A process of the command was killed for exceeding the memory limit.")
    stdout_truncated: int = Field(0, ge=0, description="Bytes of stdout dropped from the middle (0: complete).")
    stderr_truncated: int = Field(0, ge=0, description="Bytes of stderr dropped from the middle (0: complete).")

    @property
    def ok(self) -> bool:
        """The command exited 0 within its limits."""
        return self.exit_code == 0 and not self.timed_out and not self.oom_killed
