#!/usr/bin/env python
"""swe-gym's per-episode overhead on each sandbox backend, beside the bare operations it wraps.

For instances of the built-in test split (boltons): acquiring a sandbox with the repository at
/testbed, resetting it, and grading the gold patch (diff, fresh sandbox, patch, tests, swebench),
each beside running the same test command in an already-made sandbox that holds the fixed tree
(the bare test run). Then exec("true") in a repo sandbox beside a bare call with the same
isolation (benchmarks/sandbox.py's direct calls), and the environment's build time, cached and
(bubblewrap root) cold. Prints p50 / p95 and the goals: grading <= 1.5x the bare test run,
reset p50 <= 1 s, exec("true") <= 1.3x bare.

    .venv/bin/python benchmarks/swe.py                        # both backends, 4 instances x 3 rounds
    .venv/bin/python benchmarks/swe.py --backend bwrap --instances 8 --rounds 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sandbox import direct_bwrap, direct_docker, interleaved, percentile  # noqa: E402

from agentgym.envs.swe.bwrap_root import environment_rootfs  # noqa: E402
from agentgym.envs.swe.swe_env import SWEGymEnv  # noqa: E402
from agentgym.envs.swe.workspace import EVAL_SCRIPT, TESTBED, environment_image  # noqa: E402
from agentgym.envs.swe.grading import eval_script  # noqa: E402
from agentgym.sandboxes.factory import available_backends  # noqa: E402

console = Console(width=150)


def ms(samples: list[float]) -> str:
    """p50 / p95 of millisecond samples."""
    return f"{percentile(samples, 0.5):.0f} / {percentile(samples, 0.95):.0f}"


def measure(backend: str, instances: int, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per-episode operations and their bare counterparts, in milliseconds, over instances x rounds."""
    env = SWEGymEnv(split="test", sandbox_backend=backend)
    ops: dict[str, list[float]] = {"acquire": [], "reset": [], "grade (gold patch)": [], "bare test run": []}
    for task_id in list(env.task_ids())[:instances]:
        workspace = env.workspace(task_id)
        script = eval_script(workspace.instance, workspace.spec, TESTBED)
        with workspace.sandbox() as fixed:  # the fixed tree, for the bare test run
            for path, text in _gold_files(workspace).items():
                fixed.write_file(f"{TESTBED}/{path}", text)
            fixed.write_file(EVAL_SCRIPT, script)
            for _ in range(rounds):
                started = time.perf_counter()
                box = workspace.sandbox()
                ops["acquire"].append((time.perf_counter() - started) * 1000)
                box.write_file(f"{TESTBED}/scratch.txt", "an agent's edit")
                started = time.perf_counter()
                box.reset()
                ops["reset"].append((time.perf_counter() - started) * 1000)
                box.close()
                # Grading and the bare run alternate, so a change in load hits both.
                started = time.perf_counter()
                report, _ = workspace.grade(workspace.instance.patch)
                ops["grade (gold patch)"].append((time.perf_counter() - started) * 1000)
                assert report.resolved, f"{task_id}: the gold patch did not resolve ({report.error})"
                started = time.perf_counter()
                fixed.exec(["bash", EVAL_SCRIPT], workdir=TESTBED, timeout=600)
                ops["bare test run"].append((time.perf_counter() - started) * 1000)
    workspace = env.workspace(env.task_ids()[0])
    with workspace.sandbox() as box:
        calls = {"agentgym exec('true')": lambda: box.exec(["true"])}
        direct = direct_docker(box) if backend == "docker" else direct_bwrap()
        name = next(k for k in direct if "'true'" in k)
        calls[name] = direct[name]
        execs = interleaved(calls, 50)
    env.close()
    return ops, execs


def _gold_files(workspace) -> dict[str, str]:  # noqa: ANN001 - a Workspace
    """The files of the pristine tree the gold patch changes, as it leaves them."""
    import tempfile

    from agentgym.envs.swe import repos
    from agentgym.envs.swe.instance import test_files

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "w"
        shutil.copytree(workspace.pristine, work)
        repos.git(["apply", "-"], cwd=work, input=workspace.instance.patch.encode())
        return {p: (work / p).read_text() for p in test_files(workspace.instance.patch)}


def build_times(backend: str) -> list[tuple[str, str, float]]:
    """Seconds to get each spec's environment when it is cached, and (bubblewrap) when it is not."""
    env = SWEGymEnv(split="test", sandbox_backend=backend)
    spec = env.workspace(env.task_ids()[0]).spec
    rows = []
    if backend == "docker":
        started = time.perf_counter()
        environment_image(spec)
        rows.append((spec.repo, "cached image", time.perf_counter() - started))
    else:
        root = environment_rootfs(spec)
        started = time.perf_counter()
        environment_rootfs(spec)
        rows.append((spec.repo, "cached root", time.perf_counter() - started))
        shutil.rmtree(root.parent)
        started = time.perf_counter()
        environment_rootfs(spec)
        rows.append((spec.repo, "cold root (hard links + wheels)", time.perf_counter() - started))
    env.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", nargs="+", default=[b.name for b in available_backends()])
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    table = Table(title=f"swe-gym per-episode overhead, ms p50 / p95 ({args.instances} instances x {args.rounds} rounds)")
    for column in ("backend", "operation", "agentgym", "bare", "ratio (p50)", "goal"):
        table.add_column(column, justify="right")
    builds = Table(title="Environment build time")
    for column in ("backend", "project", "what", "seconds"):
        builds.add_column(column, justify="right")
    for backend in args.backend:
        ops, execs = measure(backend, args.instances, args.rounds)
        bare = statistics.median(ops["bare test run"])
        table.add_row(backend, "acquire (repo at /testbed)", ms(ops["acquire"]), "", "", "")
        table.add_row(backend, "reset", ms(ops["reset"]), "", "", "p50 <= 1000")
        table.add_row(backend, "grade the gold patch", ms(ops["grade (gold patch)"]), ms(ops["bare test run"]),
                      f"{statistics.median(ops['grade (gold patch)']) / bare:.2f}x", "<= 1.5x")
        (ours, ours_ms), (direct, direct_ms) = execs.items()
        table.add_row(backend, "exec('true')", ms(ours_ms), f"{ms(direct_ms)} ({direct.removeprefix('direct: ')})",
                      f"{statistics.median(ours_ms) / statistics.median(direct_ms):.2f}x", "<= 1.3x")
        for project, what, seconds in build_times(backend):
            builds.add_row(backend, project, what, f"{seconds:.2f}")
    console.print(table)
    console.print(builds)


if __name__ == "__main__":
    main()
