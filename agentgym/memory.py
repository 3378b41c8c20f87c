"""Handing the heap memory a training phase freed back to the operating system.

PyTorch's CPU tensors come from the C heap. A 4096-token micro-batch of a 135M model holds about
13 GiB of activations at its peak; once they are freed, glibc keeps the pages in the arena of the
thread that used them. The next phase run in another thread gets another arena, so a trainer
whose phases hop between pool threads held two peaks at once and was OOM-killed on a 23 GiB
machine (benchmarks/README.md). `malloc_trim` returns the free pages; the trainer also runs its
phases in one thread, so they reuse one arena.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Any

__all__ = ["memory_stats", "peak_resident_gib", "release_freed_memory", "resident_gib"]


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def release_freed_memory() -> bool:
    """Return the C heap's free pages to the OS (glibc's malloc_trim); False where the C library has no such call."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:  # musl, macOS: nothing to call, and their allocators return memory differently
        return False
    trim(0)
    return True


def resident_gib() -> float:
    """This process's resident memory in GiB, from /proc (NaN where /proc is absent)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
    except OSError:
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def peak_resident_gib() -> float:
    """The most resident memory this process has held, in GiB (getrusage; NaN where it is unavailable)."""
    try:
        import resource
    except ImportError:  # not on this platform
        return float("nan")
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def memory_stats() -> dict[str, float]:
    """memory/rss_gib (now) and memory/peak_rss_gib (the process's high-water mark), for a step's metrics."""
    return {"memory/rss_gib": resident_gib(), "memory/peak_rss_gib": peak_resident_gib()}
