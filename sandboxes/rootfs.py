"""Which root filesystem a bubblewrap sandbox sees: the spec's, the project's own Debian root, or the host's.

The project root is the debootstrap root the default Docker image is imported from (images.py), unpacked
once into `cache_root()/sandbox-rootfs/<base key>/root/` with the sandbox user added to its passwd, so
both backends run commands on the same Debian userland and a sandbox never reads the host's /etc.
`$AGENTGYM_BWRAP_ROOT` chooses, for specs without a rootfs:
- `auto` (default): the project root, made on first use (from the cached tarball, or debootstrap as root);
  when it cannot be made, the host's read-only /usr and /etc, with one warning line saying why.
- `project`: the project root or a SandboxError; for machines where the host view is not acceptable.
- `host`: the host's /usr and /etc (no preparation, as before the project root existed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from agentgym.cache import cache_root, file_lock
from agentgym.sandboxes.base import SandboxError
from agentgym.sandboxes.messages import last_line, one_line, warn_once

ROOT_ENV_VAR = "AGENTGYM_BWRAP_ROOT"
MODES = ("auto", "project", "host")
# Top-level directories a sandbox sees of the host, or of the project root (/root, /home, /run, /var stay out).
SYSTEM_VIEW = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")
# Unpacking ~160 MB of Debian takes seconds; the deadline keeps a wedged disk from hanging sandbox creation.
UNPACK_TIMEOUT_S = 600


@dataclass(frozen=True)
class RootView:
    """Where a sandbox's read-only `/` comes from: a host directory and which of its top-level entries to bind."""

    base: Path
    names: tuple[str, ...] | None  # None: every entry (a spec's own rootfs)
    label: str


HOST_ROOT = RootView(Path("/"), SYSTEM_VIEW, "the host's /usr and /etc")

_lock = threading.Lock()
_default: dict[str, RootView] = {}


def root_mode() -> str:
    """The $AGENTGYM_BWRAP_ROOT mode in force; SandboxError for an unknown one."""
    mode = os.environ.get(ROOT_ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise SandboxError(f"${ROOT_ENV_VAR}={mode!r} is not one of: {', '.join(MODES)}")
    return mode


def root_view(spec_rootfs: Path | None) -> RootView:
    """The root a sandbox of a spec runs on (see the module docstring); the default one is decided once per process."""
    if spec_rootfs is not None:
        base = Path(spec_rootfs)
        if not base.is_dir():
            raise SandboxError(f"rootfs {str(base)!r} is not a directory")
        return RootView(base, None, f"rootfs {base}")
    mode = root_mode()
    with _lock:
        if mode not in _default:
            _default[mode] = _choose(mode)
        return _default[mode]


def _choose(mode: str) -> RootView:
    if mode == "host":
        return HOST_ROOT
    try:
        return RootView(project_rootfs(), SYSTEM_VIEW, "the project's Debian root")
    except SandboxError as exc:
        if mode == "project":
            raise
        warn_once(f"bwrap sandboxes run on the host's read-only /usr and /etc: the project root cannot be made "
                  f"({exc}); set {ROOT_ENV_VAR}=host to choose that quietly, or run `agentgym sandbox prepare-rootfs`")
        return HOST_ROOT


def project_rootfs(build: bool = True) -> Path:
    """The project's Debian root as a directory, unpacked once from the default image's rootfs tarball.

    `build`: debootstrap the tarball when the cache has none (root and a reachable mirror needed).
    Idempotent and safe across processes: made under a file lock, marked complete last.
    """
    from agentgym.sandboxes.images import ImageRecipe, ensure_rootfs_tarball, images_dir

    recipe = ImageRecipe(python=True)
    entry = cache_root() / "sandbox-rootfs" / recipe.base_key()
    root, complete = entry / "root", entry / "complete"
    if complete.is_file():
        return root
    if os.geteuid() != 0:
        # Unpacked by another user, the files would be that user's, and /etc/shadow readable inside.
        raise SandboxError("unpacking the project root needs root (its files keep Debian's owners)")
    tarball = images_dir() / recipe.base_key() / "rootfs.tar"
    if not tarball.is_file():
        if not build:
            raise SandboxError(f"no rootfs tarball at {tarball}")
        tarball = ensure_rootfs_tarball(recipe)
    with file_lock(entry / "lock"):
        if complete.is_file():
            return root
        _unpack(tarball, root)
        complete.touch()
    return root


def _unpack(tarball: Path, root: Path) -> None:
    """Unpack a rootfs tarball into `root` (replacing a half-made one) and add the sandbox user."""
    from agentgym.sandboxes.images import SANDBOX_UID, SANDBOX_USER, SANDBOX_WORKDIR

    partial = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        # /dev's nodes are never used (bwrap mounts its own /dev) and need not exist in the cache.
        done = subprocess.run(["tar", "-C", str(partial), "--numeric-owner", "-xpf", str(tarball), "--exclude=./dev/*"],
                              capture_output=True, text=True, timeout=UNPACK_TIMEOUT_S)
        if done.returncode != 0:
            raise SandboxError(f"cannot unpack {tarball}: {last_line(done.stderr)}; delete it and try again")
        for tool in ("usr/bin/python3", "usr/bin/setpriv", "usr/bin/tar"):
            if not (partial / tool).exists():
                raise SandboxError(f"the rootfs tarball {tarball} has no /{tool}; delete it to have it rebuilt")
        # The same user the Docker image adds (images._dockerfile), so `id` and git name the sandbox user.
        _append_line(partial / "etc" / "passwd", f"{SANDBOX_USER}:x:{SANDBOX_UID}:{SANDBOX_UID}::{SANDBOX_WORKDIR}:/bin/sh")
        _append_line(partial / "etc" / "group", f"{SANDBOX_USER}:x:{SANDBOX_UID}:")
        os.chmod(partial, 0o755)
        partial.rename(root)
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"unpacking {tarball} took over {UNPACK_TIMEOUT_S}s") from exc
    except OSError as exc:
        raise SandboxError(f"cannot prepare the project root at {root}: {one_line(exc)}") from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _append_line(path: Path, line: str) -> None:
    """Append `line` unless an entry of the same name is there already."""
    text = path.read_text() if path.exists() else ""
    if not any(existing.split(":", 1)[0] == line.split(":", 1)[0] for existing in text.splitlines()):
        path.write_text(text + ("" if text.endswith("\n") or not text else "\n") + line + "\n")
