"""Reading and writing a bubblewrap sandbox's files from the host without following its symlinks out.

The agent controls every name in its writable trees, so each step of a path is opened relative to its
parent's fd with O_NOFOLLOW, and the sandbox's own symlinks are resolved as they would be inside it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from agentgym.sandboxes.base import SandboxError
from agentgym.sandboxes.spec import SandboxSpec

MAX_SYMLINK_HOPS = 40


class HostFiles:
    """The writable trees (workdir, /tmp, the repository) of one sandbox, seen from the host under its `fs` directory."""

    def __init__(self, fs: Path, spec: SandboxSpec, privileged: bool) -> None:
        self.fs = fs
        self.spec = spec
        self._privileged = privileged

    def tree_of(self, target: str) -> tuple[Path, str, str]:
        """The host directory behind the writable tree that holds sandbox path `target`, that tree's path, and the rest."""
        trees = [(self.spec.workdir, self.fs / "work"), ("/tmp", self.fs / "tmp")]
        if self.spec.repo is not None and self.spec.repo.path != self.spec.workdir:
            trees.append((self.spec.repo.path, self.fs / "repo"))
        for root, host in sorted(trees, key=lambda t: -len(t[0])):
            if target == root or target.startswith(root + "/"):
                return host, root, target[len(root):].lstrip("/")
        names = ", ".join(root for root, _ in trees)
        raise SandboxError(f"{target!r} is outside the sandbox's writable directories ({names})")

    def write(self, path: str, target: str, payload: bytes) -> None:
        """Create or replace file `target` (parents created), owned by the sandbox user; `path` names it in errors."""
        dir_fd, name = self._lookup(path, target, create_parents=True)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
        except OSError as exc:
            raise SandboxError(f"cannot write {path!r}: {exc.strerror}") from exc
        finally:
            os.close(dir_fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SandboxError(f"cannot write {path!r}: not a regular file")
            if self._privileged:
                os.fchown(fd, self.spec.uid, self.spec.gid)
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            hint = f" (the sandbox's disk limit is {self.spec.disk_mb} MB)" if exc.errno == errno.ENOSPC else ""
            raise SandboxError(f"cannot write {path!r}: {exc.strerror}{hint}") from exc
        finally:
            os.close(fd)

    def read(self, path: str, target: str) -> bytes:
        """File `target`'s bytes; SandboxError if it is missing, not a regular file, or outside the sandbox."""
        dir_fd, name = self._lookup(path, target)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            raise SandboxError(f"cannot read {path!r}: {exc.strerror}") from exc
        finally:
            os.close(dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise SandboxError(f"cannot read {path!r}: not a regular file")
        with os.fdopen(fd, "rb") as fh:
            return fh.read()

    def _lookup(self, path: str, target: str, create_parents: bool = False) -> tuple[int, str]:
        """An O_PATH fd of the directory holding `target` and the final name, following the sandbox's own
        symlinks inside its namespace (never the host's) and refusing any that lead out of its trees."""
        pending = target
        for _ in range(MAX_SYMLINK_HOPS):
            host, root, rest = self.tree_of(pending)
            parts = [p for p in rest.split("/") if p]
            if not parts:
                raise SandboxError(f"{path!r} is a directory")
            fd = os.open(host, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            current, redirect = root, None
            try:
                for i, name in enumerate(parts):
                    last = i == len(parts) - 1
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        if last:
                            break
                        if not create_parents:
                            raise SandboxError(f"{path!r}: no such file or directory") from None
                        os.mkdir(name, 0o755, dir_fd=fd)
                        self._own(name, fd)
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode):
                        link = os.readlink(name, dir_fd=fd)
                        redirect = os.path.normpath(os.path.join(current, link, *parts[i + 1:]))
                        break
                    if last:
                        break
                    if not stat.S_ISDIR(st.st_mode):
                        raise SandboxError(f"{path!r}: {current}/{name} is not a directory")
                    # O_NOFOLLOW: if the agent swapped the directory for a link since the stat, fail, never follow.
                    next_fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                    os.close(fd)
                    fd = next_fd
                    current = f"{current}/{name}"
            except BaseException as exc:
                os.close(fd)
                if isinstance(exc, OSError):
                    raise SandboxError(f"{path!r}: {exc.strerror}") from exc
                raise
            if redirect is None:
                return fd, parts[-1]
            os.close(fd)
            pending = redirect
        raise SandboxError(f"{path!r}: too many levels of symbolic links")

    def _own(self, name: str, dir_fd: int) -> None:
        if self._privileged:
            os.chown(name, self.spec.uid, self.spec.gid, dir_fd=dir_fd, follow_symlinks=False)
