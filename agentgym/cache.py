"""The one cache directory for expensive, reusable artefacts (converted models, generated games)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

CACHE_ENV_VAR = "AGENTGYM_CACHE"


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """`override`, else $AGENTGYM_CACHE, else ~/.cache/agentgym; created if missing."""
    root = Path(override or os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "agentgym").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def recipe_key(*parts: object) -> str:
    """A short stable hash of what an artefact was made from, to name its cache entry."""
    digest = hashlib.sha256("\x1f".join(repr(p) for p in parts).encode()).hexdigest()
    return digest[:12]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed) so two processes never build one entry at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
