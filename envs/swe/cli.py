"""`agentgym swe ...`: build SWE task sets from real projects, prepare their repositories, validate them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

swe_app = typer.Typer(help="SWE tasks: build, prepare, validate.", no_args_is_help=True)
console = Console(stderr=True)


@swe_app.command("build-tasks")
def build_tasks_command(
    package: Annotated[str, typer.Option("--package", help="A real project from its sdist, pinned: NAME==VERSION.")],
    out: Annotated[Path, typer.Option("--out", help="JSONL task file to write (appended; resumable).")],
    n: Annotated[int, typer.Option("--n", help="Instances to keep.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the candidate bug sample.")] = 0,
    repos_dir: Annotated[Optional[Path], typer.Option("--repos", help="Where the project's git repository goes.")] = None,
    workers: Annotated[int, typer.Option(help="Candidates judged at once, each in its own sandbox.")] = 1,
    max_failing: Annotated[Optional[int], typer.Option(help="Keep a bug only when at most this many tests fail.")] = None,
    rewrite_base_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible server that rephrases problem statements.")] = None,
    rewrite_model: Annotated[Optional[str], typer.Option(help="Its model name.")] = None,
) -> None:
    """Inject bugs into a real project and keep those its own tests catch, as SWE-bench instances."""
    from agentgym.envs.swe.builder import BuildOptions, build_tasks, specs_path

    overrides = {k: v for k, v in {"max_failing": max_failing, "rewrite_base_url": rewrite_base_url,
                                   "rewrite_model": rewrite_model}.items() if v is not None}
    report = build_tasks(package, n, out, seed=seed, workers=workers, repos_dir=repos_dir,
                         options=BuildOptions(**overrides))
    console.print(f"{report}\ntasks: {out}\nspecs: {specs_path(out)}", highlight=False)


@swe_app.command("prepare")
def prepare_command(
    tasks: Annotated[Optional[Path], typer.Argument(help="Task file of pypi/NAME instances; default: the built-in set.")] = None,
    repos_dir: Annotated[Optional[Path], typer.Option("--repos", help="Where the repositories go.")] = None,
) -> None:
    """Make the repositories of a task file built by this project: sdists to git, base commits rebuilt."""
    from agentgym.envs.swe.prepare import prepare_repos
    from agentgym.envs.swe.swe_env import SPLITS, default_tasks

    files = [tasks] if tasks else [default_tasks(s) for s in SPLITS]
    for line in prepare_repos(files, repos_dir):
        console.print(line, highlight=False)
    if tasks is None:
        # The built-in set's bubblewrap roots (the specs' wheels, downloaded now so episodes need no network).
        from agentgym.envs.swe.bwrap_root import environment_rootfs
        from agentgym.envs.swe.specs import load_specs
        from agentgym.envs.swe.swe_env import default_specs

        for spec in load_specs(default_specs()).specs:
            console.print(f"{spec.repo} {spec.version}: bubblewrap root {environment_rootfs(spec)}", highlight=False)


@swe_app.command("build-images")
def build_images_command(
    tasks: Annotated[Path, typer.Argument(help="Task file in the SWE-bench schema.")],
    specs: Annotated[Optional[Path], typer.Option(help="Spec file; default: TASKS.specs.yaml beside the tasks.")] = None,
    repos_dir: Annotated[Optional[Path], typer.Option("--repos", help="Directory of OWNER__NAME repositories.")] = None,
    sandbox_backend: Annotated[str, typer.Option("--backend", help="auto | docker | bwrap")] = "auto",
) -> None:
    """Build every instance's environment now (one image or root per repo and version; repos exported per commit)."""
    import time

    from agentgym.envs.swe.swe_env import SWEGymEnv

    env = SWEGymEnv(tasks=str(tasks), specs=str(specs) if specs else None,
                    repos_dir=str(repos_dir) if repos_dir else None, sandbox_backend=sandbox_backend)
    for task_id in env.task_ids():
        started = time.perf_counter()
        workspace = env.workspace(task_id)
        where = workspace.sandbox_spec.image or workspace.sandbox_spec.rootfs
        console.print(f"{task_id}: {where} ({time.perf_counter() - started:.1f} s)", highlight=False)


@swe_app.command("validate")
def validate_command(
    tasks: Annotated[Optional[Path], typer.Argument(help="Task file (JSONL, JSON, Parquet or a datasets directory).")] = None,
    specs: Annotated[Optional[Path], typer.Option(help="Spec file; default: TASKS.specs.yaml beside the tasks.")] = None,
    repos_dir: Annotated[Optional[Path], typer.Option("--repos", help="Directory of OWNER__NAME repositories.")] = None,
    split: Annotated[str, typer.Option(help="With no TASKS: the built-in set's split.")] = "test",
    sandbox_backend: Annotated[str, typer.Option("--backend", help="auto | docker | bwrap")] = "auto",
) -> None:
    """Check every instance: the gold patch resolves it, the empty patch does not, PASS_TO_PASS passes."""
    from agentgym.envs.swe.swe_env import SWEGymEnv

    env = SWEGymEnv(tasks=str(tasks) if tasks else None, specs=str(specs) if specs else None,
                    repos_dir=str(repos_dir) if repos_dir else None, split=split, sandbox_backend=sandbox_backend)
    table = Table(title=f"swe validate: {len(env.task_ids())} instances ({env.backend})")
    for column in ("instance", "gold", "empty patch", "PASS_TO_PASS on gold", "verdict"):
        table.add_column(column)
    failures = 0
    for task_id in env.task_ids():
        try:
            workspace = env.workspace(task_id)
            gold, _ = workspace.grade(workspace.instance.patch)
            empty, _ = workspace.grade("")
        except Exception as exc:  # one broken instance must not hide the others' results
            failures += 1
            table.add_row(task_id, "-", "-", "-", f"[red]error: {exc}[/red]")
            continue
        p2p_ok = not gold.pass_to_pass.failure
        ok = gold.resolved and not empty.resolved and p2p_ok
        failures += not ok
        table.add_row(task_id, "resolved" if gold.resolved else f"NOT resolved ({gold.error or gold.status})",
                      "resolved (bad)" if empty.resolved else "not resolved",
                      "passes" if p2p_ok else f"{len(gold.pass_to_pass.failure)} fail",
                      "[green]ok[/green]" if ok else "[red]FAIL[/red]")
    env.close()
    Console().print(table)
    if failures:
        console.print(f"{failures} of {len(env.task_ids())} instances failed validation")
        raise typer.Exit(1)
