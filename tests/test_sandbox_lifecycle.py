"""Sandboxes close on exceptions, SIGINT and SIGTERM; `agentgym sandbox gc` removes what a kill -9 left; auto falls back to bubblewrap."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agentgym.sandboxes.base import SandboxBackend, SandboxClosedError, SandboxError
from agentgym.sandboxes.docker_reaper import Reaper
from agentgym.sandboxes.spec import SandboxSpec

ROOT = Path(__file__).resolve().parents[1]
AGENTGYM = str(Path(sys.executable).with_name("agentgym"))
SMALL = SandboxSpec(memory_mb=64, pids=32, disk_mb=8)

HOLDER = textwrap.dedent("""
    import sys, time
    from agentgym.sandboxes.factory import get_backend
    from agentgym.sandboxes.spec import SandboxSpec
    backend = get_backend(sys.argv[1])
    boxes = [backend.create(SandboxSpec(memory_mb=64, pids=32, disk_mb=8)) for _ in range(int(sys.argv[2]))]
    for box in boxes:
        box.write_file("note.txt", "held")
    print(" ".join(b.id for b in boxes), flush=True)
    time.sleep(600)
""")


def _hold(backend: SandboxBackend, count: int) -> tuple[subprocess.Popen, list[str]]:
    """A child process that creates `count` sandboxes, prints their ids and waits to be killed."""
    # A shell without job control starts background jobs with SIGINT ignored, and Python keeps an
    # ignored SIGINT ignored: restore the default so the child gets KeyboardInterrupt however the
    # suite was launched (`make test &` included).
    child = subprocess.Popen([sys.executable, "-c", HOLDER, backend.name, str(count)], stdout=subprocess.PIPE,
                             text=True, cwd=ROOT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert child.stdout is not None
    line = child.stdout.readline()
    ids = line.split()
    assert len(ids) == count, f"the holder printed {line!r} (exit code {child.poll()})"
    return child, ids


def _ours(backend: SandboxBackend, ids: list[str]) -> set[str]:
    return {info.id for info in backend.list()} & set(ids)


def test_an_exception_in_a_with_block_closes_the_sandbox(sandbox_backend: SandboxBackend) -> None:
    with pytest.raises(RuntimeError):
        with sandbox_backend.create(SMALL) as box:
            raise RuntimeError("episode failed")
    assert box.closed and not _ours(sandbox_backend, [box.id])
    with pytest.raises(SandboxClosedError):
        box.exec("true")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_closes_every_sandbox_of_the_process(sandbox_backend: SandboxBackend, signum: int) -> None:
    child, ids = _hold(sandbox_backend, 2)
    assert _ours(sandbox_backend, ids) == set(ids)
    child.send_signal(signum)
    child.wait(timeout=120)
    assert _ours(sandbox_backend, ids) == set()


def test_gc_removes_everything_a_kill_9_left_behind(sandbox_backend: SandboxBackend) -> None:
    child, ids = _hold(sandbox_backend, 8)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    left = _ours(sandbox_backend, ids)
    assert left == set(ids)  # kill -9 runs no handler: the sandboxes outlive their owner...
    listing = subprocess.run([AGENTGYM, "sandbox", "ls"], capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    gc = subprocess.run([AGENTGYM, "sandbox", "gc"], capture_output=True, text=True, timeout=300)
    assert gc.returncode == 0, gc.stderr
    assert _ours(sandbox_backend, ids) == set()  # ...until gc finds their owner gone
    if sandbox_backend.name == "docker":
        ps = subprocess.run(["docker", "ps", "-a", "-q", "--filter", "label=agentgym.sandbox"],
                            capture_output=True, text=True, check=True)
        assert not {c[:12] for c in ps.stdout.split()} & {i[:12] for i in ids}


def test_gc_leaves_sandboxes_of_live_processes_alone(sandbox_backend: SandboxBackend) -> None:
    with sandbox_backend.create(SMALL) as box:
        removed = sandbox_backend.gc()
        assert box.id not in removed
        assert box.exec("echo ok").stdout.strip() == "ok"


def test_auto_falls_back_to_bubblewrap_with_one_line_when_no_engine_answers(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        from agentgym.sandboxes import create_sandbox, get_backend
        backend = get_backend("auto")
        with create_sandbox() as box:
            print(backend.name, box.exec("echo hi").stdout.strip())
    """)
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["bwrap", "hi"]
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "bubblewrap" in lines[0] and "Docker" in lines[0], run.stderr


class _Unremovable:
    """Stands in for a Docker sandbox whose container the engine refuses to remove."""

    id = "agentgym-unremovable"
    closed = False

    def close(self) -> None:
        raise SandboxError("removal refused (test)")


def test_the_reaper_logs_a_sandbox_it_cannot_remove_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    reaper, stuck, later = Reaper(), _Unremovable(), _Unremovable()
    with caplog.at_level(logging.WARNING, logger="agentgym.sandboxes.docker_reaper"):
        reaper.watch(stuck, time.monotonic())  # type: ignore[arg-type]
        reaper.watch(later, time.monotonic() + 0.1)  # type: ignore[arg-type]
        deadline = time.monotonic() + 30
        while len(caplog.records) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    records = [r for r in caplog.records if r.name == "agentgym.sandboxes.docker_reaper"]
    assert len(records) == 2, records
    assert all("agentgym-unremovable" in r.getMessage() and r.exc_info for r in records)
    assert str(records[0].exc_info[1]) == "removal refused (test)"
