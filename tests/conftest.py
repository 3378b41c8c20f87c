"""Shared fixtures: a small TextWorld game set, an isolated cache, a clean registry."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests never touch the user's cache: everything they generate lives in one session directory.
_SESSION_CACHE = Path(os.environ.get("AGENTGYM_TEST_CACHE", "/tmp/agentgym-test-cache"))
os.environ["AGENTGYM_CACHE"] = str(_SESSION_CACHE)


@pytest.fixture(scope="session")
def tw_games_dir() -> Path:
    """Four easy TextWorld games, generated once per machine (seeds 100..103) and reused."""
    from agentgym.envs.text.textworld_games import make_games

    out = _SESSION_CACHE / "test-games-easy"
    make_games(out, n=4, seed=100, difficulty="easy")
    return out


@pytest.fixture()
def registry() -> Iterator["agentgym.Registry"]:  # noqa: F821
    """A fresh registry that does not load plugins or touch gymnasium's global one."""
    from agentgym.registry import Registry

    yield Registry(load_plugins=False, mirror_to_gymnasium=False)
