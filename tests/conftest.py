"""Shared fixtures: a small TextWorld game set, tiny models, an isolated cache, a clean registry."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tiny_model import TINY_REPLY, build_tiny_model

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


def _built(base: Path, name: str, reply: str | None) -> Path:
    """Build the tiny model into base/name unless a complete copy is there."""
    out = base / name
    if not (out / "model.safetensors").is_file() or not (out / "tokenizer.json").is_file():
        build_tiny_model(out, reply=reply)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Llama with a ChatML template (outputs vary with the prompt)."""
    return _built(tmp_path_factory.getbasetemp(), "tiny-random", None)


@pytest.fixture(scope="session")
def tiny_reply_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama fitted to answer every chat with TINY_REPLY then EOS under greedy decoding."""
    return _built(tmp_path_factory.getbasetemp(), "tiny-reply", TINY_REPLY)


@pytest.fixture(scope="module", params=["docker", "bwrap"])
def sandbox_backend(request: pytest.FixtureRequest) -> "SandboxBackend":  # noqa: F821
    """Each sandbox backend in turn; skipped, with the reason, where it cannot run."""
    from agentgym.sandboxes.factory import backend_class

    made = backend_class(request.param)()
    reason = made.unavailable_reason()
    if reason:
        pytest.skip(f"{request.param} backend unavailable: {reason}")
    return made
