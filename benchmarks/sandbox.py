#!/usr/bin/env python
"""Sandbox latency per backend: agentgym's operations beside the same operations done directly.

For each available backend (Docker, bubblewrap): cold create, warm acquire from a pool,
exec("true"), exec of python3 -c 'print(1)', a 1 MB file write, and reset; and in the same run
the direct equivalents: docker-py's `exec_run`, the `docker exec` CLI, and a bare `bwrap` call.
agentgym's execs and the direct ones alternate call by call, so a change in machine load
during the run does not favour either. Prints p50/p95 in milliseconds and the issue's goals.

    .venv/bin/python benchmarks/sandbox.py            # both backends, 50 repetitions
    .venv/bin/python benchmarks/sandbox.py --backend bwrap --n 200
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from agentgym.sandboxes.factory import BACKENDS, backend_class
from agentgym.sandboxes.pool import SandboxPool
from agentgym.sandboxes.spec import SANDBOX_PYTHON, SandboxSpec

console = Console()
SPEC = SandboxSpec(memory_mb=256, pids=128, disk_mb=64)
ONE_MB = b"x" * (1 << 20)


def timed(fn: Callable[[], object], n: int, warmup: int = 2) -> list[float]:
    """Wall milliseconds of n calls of fn (after a few untimed ones)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def percentile(samples: list[float], q: float) -> float:
    """The q-quantile (0..1) of the samples."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def interleaved(fns: dict[str, Callable[[], object]], n: int, warmup: int = 2) -> dict[str, list[float]]:
    """Wall milliseconds of each fn, called in turn round after round, so drift in machine load hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(n):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - started) * 1000)
    return samples


def measure_backend(name: str, n: int) -> dict[str, list[float]]:
    """Every operation of one backend, agentgym's and the direct ones."""
    backend = backend_class(name)()
    rows: dict[str, list[float]] = {}
    created = []

    def cold_create() -> None:
        created.append(backend.create(SPEC))

    rows["cold create"] = timed(cold_create, max(5, n // 5), warmup=1)
    for box in created:
        box.close()

    with SandboxPool(SPEC, backend, warm=2, max_size=4) as pool:
        samples = []  # only the hand-out is timed: the pool refills between acquires
        for _ in range(max(5, n // 5)):
            pool.wait_warm(timeout=120)
            started = time.perf_counter()
            box = pool.acquire()
            samples.append((time.perf_counter() - started) * 1000)
            pool.release(box)
        rows["warm acquire (pool)"] = samples

    box = backend.create(SPEC)
    try:
        calls: dict[str, Callable[[], object]] = {
            "exec('true')": lambda: box.exec("true"),
            "exec python3 -c 'print(1)'": lambda: box.exec([SANDBOX_PYTHON, "-c", "print(1)"]),
        }
        calls.update(direct_docker(box) if name == "docker" else direct_bwrap())
        rows.update(interleaved(calls, n))
        rows["write_file 1 MB"] = timed(lambda: box.write_file("one-mb.bin", ONE_MB), n)
        rows["reset"] = timed(box.reset, max(5, n // 5), warmup=1)
    finally:
        box.close()
    return rows


def direct_docker(box: object) -> dict[str, Callable[[], object]]:
    """docker-py exec_run and the docker exec CLI against the same container, as the same user."""
    import docker

    client = docker.from_env()
    container = client.containers.get(box.container_id)  # type: ignore[attr-defined]
    user = box.spec.user  # type: ignore[attr-defined]
    return {
        "direct: docker-py exec_run('true')": lambda: container.exec_run(["true"], user=user),
        "direct: docker-py exec_run python3": lambda: container.exec_run([SANDBOX_PYTHON, "-c", "print(1)"], user=user),
        "direct: docker exec CLI 'true'": lambda: subprocess.run(
            ["docker", "exec", "--user", user, container.id, "true"], check=True, capture_output=True),
    }


def direct_bwrap() -> dict[str, Callable[[], object]]:
    """A bare bwrap call with the namespaces a sandbox uses, no limits or bookkeeping."""
    base = ["bwrap", "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "--proc", "/proc", "--dev", "/dev"]
    return {
        "direct: bare bwrap 'true'": lambda: subprocess.run([*base, "true"], check=True),
        "direct: bare bwrap python3": lambda: subprocess.run(
            [*base, SANDBOX_PYTHON, "-c", "print(1)"], check=True, capture_output=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=[*BACKENDS, "all"], default="all")
    parser.add_argument("--n", type=int, default=50, help="Repetitions of each exec and write (creates and resets: n/5).")
    args = parser.parse_args()
    names = BACKENDS if args.backend == "all" else (args.backend,)
    results: dict[str, dict[str, list[float]]] = {}
    for name in names:
        reason = backend_class(name)().unavailable_reason()
        if reason:
            console.print(f"[yellow]{name}: skipped ({reason})")
            continue
        results[name] = measure_backend(name, args.n)

    table = Table("backend", "operation", "n", "p50 ms", "p95 ms", title="Sandbox latency")
    for name, rows in results.items():
        for op, samples in rows.items():
            table.add_row(name, op, str(len(samples)), f"{statistics.median(samples):.1f}", f"{percentile(samples, 0.95):.1f}")
    console.print(table)

    goals = Table("goal", "measured", "met", title="Goals")
    for name, rows in results.items():
        warm = statistics.median(rows["warm acquire (pool)"])
        goals.add_row(f"{name}: warm acquire p50 <= 50 ms", f"{warm:.2f} ms", "yes" if warm <= 50 else "NO")
        if name == "docker":
            ours = statistics.median(rows["exec('true')"])
            direct = statistics.median(rows["direct: docker-py exec_run('true')"])
            overhead = ours / direct - 1
            goals.add_row("docker: exec overhead over docker-py exec_run <= 10%", f"{overhead:+.1%}",
                          "yes" if overhead <= 0.10 else "NO")
        if name == "bwrap":
            p50 = statistics.median(rows["exec('true')"])
            goals.add_row("bwrap: exec('true') p50 <= 15 ms", f"{p50:.1f} ms", "yes" if p50 <= 15 else "NO")
    console.print(goals)


if __name__ == "__main__":
    main()
