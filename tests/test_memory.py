"""Returning freed heap memory to the OS, and the resident-memory figures a training step logs."""

from __future__ import annotations

import ctypes.util
import sys

import pytest

from agentgym.memory import memory_stats, peak_resident_gib, release_freed_memory, resident_gib


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and glibc")
def test_resident_memory_is_read_and_bounded_by_the_peak() -> None:
    stats = memory_stats()
    assert 0 < stats["memory/rss_gib"] <= stats["memory/peak_rss_gib"] + 1e-3
    assert 0 < resident_gib() < 1024 and 0 < peak_resident_gib() < 1024


@pytest.mark.skipif(ctypes.util.find_library("c") is None, reason="no C library to load")
def test_release_freed_memory_calls_malloc_trim_where_the_c_library_has_it() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    assert release_freed_memory() is hasattr(libc, "malloc_trim")
