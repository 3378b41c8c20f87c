"""The pristine copy of a sandbox's repository (`SandboxSpec.repo`): one plain tar, made once, read by every reset.

A host directory or a (compressed) tar archive is packed, or unpacked to a plain tar, once into
`cache_root()/sandbox-repos/`, named by what it was made from (for a directory: every entry's name,
type, mode, size, mtime and link target), so a changed source gets a new tar (replacing the old one's)
and an unchanged one is never packed twice. A sandbox keeps its tar open: a cache wiped under a live
sandbox costs nothing.
Both backends unpack the tar *inside* the sandbox as the sandbox user, so every file of the repository
belongs to that user and a link in the archive can only point within the sandbox's own view.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from agentgym.cache import cache_root, file_lock, recipe_key
from agentgym.sandboxes.base import SandboxError
from agentgym.sandboxes.messages import last_line

# Bump when the way a source becomes a tar changes, so tars made by older code are not reused.
FORMAT_VERSION = 1
CHUNK = 1 << 20
# Packing a large repository (SWE-bench's biggest are a few hundred MB) must still end.
PACK_TIMEOUT_S = 600
_DECOMPRESSORS = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}


class PristineTar:
    """An open, read-only tar of a repository's pristine state; `strip` leading path components to drop on unpacking."""

    def __init__(self, path: Path, strip: int = 0) -> None:
        self.path = path
        self.strip = strip
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.size = os.fstat(self._fd).st_size

    def open(self) -> IO[bytes]:
        """A new reader from the start (its own file offset), even if the cache entry was deleted since."""
        return open(f"/proc/self/fd/{self._fd}", "rb")

    def chunks(self) -> Iterator[bytes]:
        """The tar's bytes from the start, in pieces (for a docker exec's stdin)."""
        offset = 0
        while chunk := os.pread(self._fd, CHUNK, offset):
            offset += len(chunk)
            yield chunk

    def check_fits(self, disk_mb: int, where: str) -> None:
        """SandboxError when the repository alone is larger than the sandbox's disk limit."""
        _check_size(self.size, disk_mb, where)

    def close(self) -> None:
        """Release the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        # A sandbox dropped without close(): give the descriptor back; at interpreter exit os may be gone already.
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def repos_dir() -> Path:
    """Where the pristine tars of host repositories live."""
    path = cache_root() / "sandbox-repos"
    path.mkdir(parents=True, exist_ok=True)
    return path


def pristine_tar(source: Path, disk_mb: int, where: str) -> PristineTar:
    """The pristine tar of a host directory or tar archive, packed into the cache on first use.

    SandboxError when the repository is larger than `disk_mb` (a directory is measured before it is packed).
    """
    source = Path(source).expanduser().resolve()
    if source.is_dir():
        fingerprint, size = _tree_fingerprint(source)
        _check_size(size, disk_mb, where)
        version = recipe_key("repo-dir", FORMAT_VERSION, fingerprint)
        make = _pack_directory
    elif source.is_file():
        info = source.stat()
        version = recipe_key("repo-tar", FORMAT_VERSION, info.st_size, info.st_mtime_ns)
        make = _plain_tar
    else:
        raise SandboxError(f"repo.source {str(source)!r} is neither a directory nor a tar archive")
    # <name>-<which source>-<which version of it>: a new version replaces the tars of older ones.
    stem = f"{source.name[:40]}-{recipe_key(str(source))}"
    target = repos_dir() / f"{stem}-{version}.tar"
    # One lock for all packing (rare and short; a lock file per entry would litter the cache). The tar is
    # opened under it, so a newer version's pruning cannot remove it between the check and the open.
    with file_lock(repos_dir() / "pack.lock"):
        if not target.is_file():
            partial = target.with_suffix(f".partial-{os.getpid()}")
            try:
                make(source, partial)
                partial.replace(target)
            finally:
                partial.unlink(missing_ok=True)
            for older in repos_dir().glob(f"{stem}-*.tar"):
                if older != target:
                    older.unlink(missing_ok=True)  # sandboxes still using it keep it open
        tar = PristineTar(target)
    try:
        _check_size(tar.size, disk_mb, where)
    except SandboxError:
        tar.close()
        raise
    return tar


def _check_size(size: int, disk_mb: int, where: str) -> None:
    """SandboxError when a repository of `size` bytes cannot fit in a sandbox's disk limit."""
    if size > disk_mb << 20:
        raise SandboxError(f"the repository for {where} is {size / 2**20:.1f} MB, more than the sandbox's "
                           f"disk_mb={disk_mb}; raise disk_mb above its size plus what the task writes")


def _tree_fingerprint(root: Path) -> tuple[str, int]:
    """A hash of every entry's path, type, mode, size, mtime and link target, and the files' total size.

    No file is read: a few ms per thousand entries.
    """
    rows: list[str] = []
    total = 0
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(directory, name)
            st = os.lstat(path)
            link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
            rows.append(f"{os.path.relpath(path, root)}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0{link}")
    return recipe_key(*rows), total


def _pack_directory(source: Path, out: Path) -> None:
    """GNU tar of the directory's contents (links kept as links, members named ./...), in a stable order."""
    try:
        done = subprocess.run(["tar", "-C", str(source), "--sort=name", "--numeric-owner", "-cf", str(out), "."],
                              capture_output=True, text=True, timeout=PACK_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"packing the repository {source} took over {PACK_TIMEOUT_S}s") from exc
    if done.returncode != 0:
        raise SandboxError(f"cannot pack the repository {source}: {last_line(done.stderr, f'tar exit {done.returncode}')}")


def _plain_tar(source: Path, out: Path) -> None:
    """The archive itself, decompressed when it is gzip, bzip2 or xz (tar cannot sniff compression on a pipe)."""
    with open(source, "rb") as fh:
        magic = fh.read(6)
    opener = next((fn for prefix, fn in _DECOMPRESSORS.items() if magic.startswith(prefix)), open)
    try:
        with opener(source, "rb") as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise SandboxError(f"cannot read the repository archive {source}: {exc}") from exc
    if not tarfile.is_tarfile(out):
        raise SandboxError(f"repo.source {str(source)!r} is not a tar archive (.tar, .tar.gz, .tar.bz2 or .tar.xz)")
