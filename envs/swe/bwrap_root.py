"""The root filesystem a bubblewrap SWE episode runs over: the project's Debian root plus the spec's pip packages."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from agentgym.cache import cache_root, file_lock, recipe_key
from agentgym.envs.swe.specs import RepoSpec
from agentgym.errors import AgentGymError
from agentgym.sandboxes.images import download_wheels
from agentgym.sandboxes.rootfs import project_rootfs

# Debian's python3.11 puts /usr/local/lib/python3.11/dist-packages on sys.path, and /usr is bound.
SITE = Path("usr/local/lib/python3.11/dist-packages")


class RootfsError(AgentGymError):
    """An environment root that cannot be made; the message names the spec and what failed."""


def environment_rootfs(spec: RepoSpec) -> Path:
    """A root for `spec` (made once, cached): hard links to the project root, the spec's wheels installed in it."""
    if spec.install or spec.apt:
        raise RootfsError(
            f"spec of {spec.repo}: bubblewrap roots take pip packages only (no `install` commands or apt "
            f"packages); use sandbox_backend=docker for this spec"
        )
    base = project_rootfs()
    key = recipe_key([str(base), sorted(spec.pip)])
    dest = cache_root() / "swe" / "roots" / key
    done = dest / ".agentgym-complete"
    if done.exists():
        return dest / "root"
    with file_lock(dest.with_suffix(".lock")):
        if done.exists():
            return dest / "root"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        # Hard links: the 300 MB root costs one directory walk, and nothing below writes into a linked file.
        subprocess.run(["cp", "-al", str(base), str(dest / "root")], check=True, capture_output=True)
        if spec.pip:
            with tempfile.TemporaryDirectory(prefix="agentgym-wheels-") as wheels:
                download_wheels(spec.pip, Path(wheels))
                done_pip = subprocess.run(
                    [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index",
                     "--no-deps", "--no-compile", "--target", str(dest / "root" / SITE),
                     *sorted(str(w) for w in Path(wheels).glob("*.whl"))],
                    capture_output=True, text=True,
                )
                if done_pip.returncode != 0:
                    raise RootfsError(f"spec of {spec.repo}: installing {' '.join(spec.pip)} into its root failed: "
                                      f"{(done_pip.stderr or done_pip.stdout).strip().splitlines()[-1:]}")
        done.touch()
    return dest / "root"
