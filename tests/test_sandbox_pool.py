"""SandboxPool on each real backend: warm hand-out, reset between users, bounds, replacement, close."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from agentgym.sandboxes.base import SandboxBackend, SandboxError
from agentgym.sandboxes.pool import SandboxPool, close_shared_pools, shared_pool
from agentgym.sandboxes.spec import SandboxSpec

SPEC = SandboxSpec(memory_mb=128, pids=64, disk_mb=16, exec_timeout_s=30)


def test_a_released_sandbox_comes_back_clean(sandbox_backend: SandboxBackend) -> None:
    with SandboxPool(SPEC, sandbox_backend, warm=1, max_size=1) as pool:
        with pool.sandbox(timeout=60) as first:
            first.write_file("secret.txt", "episode 1")
            first.exec("echo leftover > /tmp/leftover")
            first_id = first.id
        with pool.sandbox(timeout=60) as second:
            # max_size 1: the same slot, reset (the Docker backend gives it a fresh container).
            listing = second.exec("ls -A . /tmp")
            assert listing.exit_code == 0, listing
            assert "secret.txt" not in listing.stdout and "leftover" not in listing.stdout
        assert pool.size == 1
    assert first_id  # the pool handed out a real sandbox


def test_warm_acquire_does_not_create_on_the_callers_path(sandbox_backend: SandboxBackend) -> None:
    created = []
    original = sandbox_backend.create

    def counting_create(spec: SandboxSpec):  # type: ignore[no-untyped-def]
        created.append(threading.current_thread().name)
        return original(spec)

    sandbox_backend.create = counting_create  # type: ignore[method-assign]
    try:
        with SandboxPool(SPEC, sandbox_backend, warm=2, max_size=4) as pool:
            pool.wait_warm(timeout=120)
            caller = threading.current_thread().name
            boxes = [pool.acquire(timeout=60), pool.acquire(timeout=60)]
            assert caller not in created  # both came ready from the pool's worker
            assert len({b.id for b in boxes}) == 2
            for b in boxes:
                pool.release(b)
    finally:
        del sandbox_backend.create


def test_the_pool_is_bounded_and_times_out_clearly(sandbox_backend: SandboxBackend) -> None:
    with SandboxPool(SPEC, sandbox_backend, warm=0, max_size=2) as pool:
        held = [pool.acquire(timeout=60), pool.acquire(timeout=60)]
        started = time.monotonic()
        with pytest.raises(SandboxError, match="all 2 of the pool are in use"):
            pool.acquire(timeout=0.5)
        assert time.monotonic() - started < 5
        # A waiter gets the next sandbox as soon as one comes back.
        got: list = []
        waiter = threading.Thread(target=lambda: got.append(pool.acquire(timeout=60)))
        waiter.start()
        pool.release(held.pop())
        waiter.join(timeout=90)
        assert got and pool.size == 2
        pool.release(got[0])
        pool.release(held[0])


def test_a_closed_sandbox_is_replaced_not_reused(sandbox_backend: SandboxBackend) -> None:
    with SandboxPool(SPEC, sandbox_backend, warm=0, max_size=1) as pool:
        box = pool.acquire(timeout=60)
        box.close()
        pool.release(box)
        fresh = pool.acquire(timeout=60)
        assert fresh.id != box.id and not fresh.closed
        assert fresh.exec("echo ok").stdout.strip() == "ok"
        pool.release(fresh)


def test_closing_the_pool_closes_its_sandboxes(sandbox_backend: SandboxBackend) -> None:
    pool = SandboxPool(SPEC, sandbox_backend, warm=2, max_size=3)
    pool.wait_warm(timeout=120)
    out = pool.acquire(timeout=60)
    pool.close()
    assert pool.size == 1  # the one still handed out
    pool.release(out)
    assert out.closed and pool.size == 0
    ids = {info.id for info in sandbox_backend.list()}
    assert out.id not in ids
    with pytest.raises(SandboxError, match="closed"):
        pool.acquire()


def test_shared_pools_are_one_per_backend_and_spec(sandbox_backend: SandboxBackend) -> None:
    try:
        a = shared_pool(SPEC, sandbox_backend.name, warm=0, max_size=2)
        assert shared_pool(SPEC, sandbox_backend.name, warm=0, max_size=2) is a
        assert shared_pool(SPEC.model_copy(update={"memory_mb": 96}), sandbox_backend.name, warm=0, max_size=2) is not a
    finally:
        close_shared_pools()


def test_bad_pool_sizes_are_refused(sandbox_backend: SandboxBackend) -> None:
    with pytest.raises(SandboxError, match="warm"):
        SandboxPool(SPEC, sandbox_backend, warm=3, max_size=2)


def test_a_failed_reset_and_close_are_logged_and_the_pool_carries_on(
    sandbox_backend: SandboxBackend, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(what: str):  # type: ignore[no-untyped-def]
        def fail() -> None:
            raise SandboxError(f"{what} refused (test)")
        return fail

    with SandboxPool(SPEC, sandbox_backend, warm=0, max_size=1) as pool:
        box = pool.acquire(timeout=60)
        box.reset, box.close = refuse("reset"), refuse("close")  # type: ignore[method-assign]
        try:
            with caplog.at_level(logging.WARNING, logger="agentgym.sandboxes.pool"):
                pool.release(box)
                fresh = pool.acquire(timeout=60)  # the broken one's slot is given back once it is dealt with
            assert fresh.id != box.id and fresh.exec("echo ok").stdout == "ok\n"
            pool.release(fresh)
        finally:
            del box.reset, box.close
            box.close()
    logged = {str(r.exc_info[1]) for r in caplog.records if r.name == "agentgym.sandboxes.pool" and r.exc_info}
    assert logged == {"reset refused (test)", "close refused (test)"}
