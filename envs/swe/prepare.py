"""Repositories of task files this project built: each pypi/NAME project from its sdist, base commits rebuilt."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from agentgym.envs.swe import repos
from agentgym.envs.swe.builder import default_repos_dir, rebuild_base_commits
from agentgym.envs.swe.instance import load_instances


def prepare_repos(task_files: Sequence[Path], repos_dir: Path | None = None) -> Iterator[str]:
    """Make every pypi/NAME repository the task files need (deterministic, so their base commits come back); one line each."""
    root = Path(repos_dir) if repos_dir else default_repos_dir()
    by_project: dict[tuple[str, str], list[dict]] = {}
    for path in task_files:
        for instance in load_instances(path):
            owner, _, name = instance.repo.partition("/")
            if owner != repos.OWNER or not instance.version:
                continue  # not built from an sdist by this project: its repository comes from --repos
            by_project.setdefault((name, instance.version), []).append(instance.to_record())
    for (name, version), records in sorted(by_project.items()):
        local = repos.repo_from_sdist(f"{name}=={version}", root)
        rebuild_base_commits(records, local.path)
        yield f"{local.repo} {version}: {local.path} ({len(records)} base commits)"
