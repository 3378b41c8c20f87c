"""Where an SWE instance runs and how it is graded: its sandbox spec, the agent's diff, the tamper-proof grade.

Everything that decides the reward happens outside the agent's sandbox. The agent's diff is
taken by downloading its working tree and comparing it, on the host, against the pristine
export of `base_commit` (the agent may rewrite `.git` at will: its history, index and refs are
never read). The diff, less any test file, is applied on the host to a fresh copy of the
pristine tree, the test patch over it, and only the resulting files go into a *fresh*
sandbox from the same spec, where the spec's test command runs and swebench grades the log.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agentgym.cache import cache_root, file_lock, recipe_key
from agentgym.envs.swe import repos
from agentgym.envs.swe.builder import default_repos_dir
from agentgym.envs.swe.grading import GradeReport, agent_diff_filter, eval_script, grade
from agentgym.envs.swe.instance import SWEInstance, repo_dirname
from agentgym.envs.swe.specs import RepoSpec
from agentgym.errors import AgentGymError
from agentgym.sandboxes.base import Sandbox
from agentgym.sandboxes.factory import create_sandbox
from agentgym.sandboxes.spec import RepoMount, SandboxSpec

TESTBED = "/testbed"
EVAL_SCRIPT = "/tmp/agentgym_eval.sh"
# SWE-bench's and SWE-Gym's instance image names: where one exists in the engine it is used as it is.
_PREBUILT = ("sweb.eval.x86_64.{id}:latest", "xingyaoww/sweb.eval.x86_64.{id}:latest")


class WorkspaceError(AgentGymError):
    """An instance whose repository or environment cannot be made; the message names the instance and the fix."""


@dataclass(frozen=True)
class Limits:
    """The sandbox limits of every SWE episode (configs/train-swe.yaml sets them)."""

    memory_mb: int = 1024
    disk_mb: int = 512
    pids: int = 256
    exec_timeout_s: float = 60.0
    wall_clock_s: float = 3600.0


@dataclass(frozen=True)
class Workspace:
    """One instance made runnable: the sandbox spec its episodes and its grading use, and the pristine tree."""

    instance: SWEInstance
    spec: RepoSpec
    sandbox_spec: SandboxSpec
    pristine: Path | None  # host copy of base_commit's tree (an exported one-commit repo); None: a prebuilt image
    backend: str

    def sandbox(self) -> Sandbox:
        """A new sandbox holding the pristine repository at /testbed."""
        return create_sandbox(self.sandbox_spec, backend=self.backend)

    def agent_diff(self, sandbox: Sandbox) -> str:
        """The agent's changes to the repository as a git diff against base_commit, read from its working tree."""
        if self.pristine is None:
            return _diff_in_sandbox(sandbox)
        with tempfile.TemporaryDirectory(prefix="agentgym-swe-diff-") as tmp:
            work = Path(tmp) / "work"
            _copy_git_dir(self.pristine, work)
            _extract_tree(sandbox.get_archive(TESTBED), work)
            repos.git(["add", "-A", "--force", "."], cwd=work)
            return repos.git(["diff", "--cached", "--no-color", "--no-ext-diff", "--binary", "--src-prefix=a/",
                              "--dst-prefix=b/", "HEAD"], cwd=work).decode("utf-8", errors="replace")

    def grade(self, diff: str, timeout_s: float | None = None) -> tuple[GradeReport, str]:
        """Apply `diff` (test files dropped) and the test patch in a fresh sandbox, run the tests, grade; (report, log)."""
        model_patch = agent_diff_filter(diff, self.instance.test_patch) if diff.strip() else ""
        timeout = timeout_s or self.spec.test_timeout_s
        with self.sandbox() as box:
            if self.pristine is None:
                failure = _apply_in_sandbox(box, model_patch, self.instance.test_patch)
            else:
                failure = self._apply_on_host(box, model_patch)
            if failure:
                return GradeReport.patch_failed(failure), failure
            box.write_file(EVAL_SCRIPT, eval_script(self.instance, self.spec, TESTBED))
            result = box.exec(["bash", EVAL_SCRIPT], timeout=timeout, workdir=TESTBED)
        log = result.stdout + ("\n" + result.stderr if result.stderr else "")
        if result.timed_out:
            return GradeReport.invalid(f"the tests did not finish within {timeout:.0f} s"), log
        return grade(self.instance, self.spec, log), log

    def _apply_on_host(self, box: Sandbox, model_patch: str) -> str | None:
        """Patch a copy of the pristine tree on the host and write the files that changed into `box`."""
        assert self.pristine is not None
        with tempfile.TemporaryDirectory(prefix="agentgym-swe-grade-") as tmp:
            work = Path(tmp) / "work"
            shutil.copytree(self.pristine, work, symlinks=True)
            for name, patch in (("the model's patch", model_patch), ("the test patch", self.instance.test_patch)):
                if patch.strip():
                    error = _git_apply(work, patch)
                    if error:
                        return f"{name} does not apply: {error}"
            repos.git(["add", "-A", "--force", "."], cwd=work)
            changed = repos.git(["diff", "--cached", "--name-status", "--no-renames", "-z", "HEAD"], cwd=work).decode()
            fields = [f for f in changed.split("\0") if f]
            for status, path in zip(fields[0::2], fields[1::2]):
                target = f"{TESTBED}/{path}"
                if status == "D":
                    box.exec(["rm", "-f", "--", target], timeout=30)
                else:
                    box.write_file(target, (work / path).read_bytes())
        return None


def prepare(instance: SWEInstance, spec: RepoSpec, repos_dir: Path | None, backend: str, limits: Limits) -> Workspace:
    """The Workspace of `instance`: a prebuilt SWE-bench/SWE-Gym image if the engine has one, else our own."""
    mount = RepoMount(path=TESTBED)
    common = dict(memory_mb=limits.memory_mb, disk_mb=limits.disk_mb, pids=limits.pids,
                  exec_timeout_s=limits.exec_timeout_s, wall_clock_s=limits.wall_clock_s, workdir=TESTBED,
                  env={"PYTHONDONTWRITEBYTECODE": "1", "PIP_NO_INDEX": "1", "HOME": "/tmp"})
    if backend == "docker":
        prebuilt = _prebuilt_image(instance)
        if prebuilt:
            return Workspace(instance, spec, SandboxSpec(image=prebuilt, repo=mount, **common), None, backend)
    pristine = export_instance(instance, repos_dir)
    if backend == "docker":
        image = environment_image(spec)
        sandbox_spec = SandboxSpec(image=image, repo=RepoMount(path=TESTBED, source=pristine), **common)
    else:
        from agentgym.envs.swe.bwrap_root import environment_rootfs

        sandbox_spec = SandboxSpec(rootfs=environment_rootfs(spec), repo=RepoMount(path=TESTBED, source=pristine),
                                   **common)
    return Workspace(instance, spec, sandbox_spec, pristine, backend)


def export_instance(instance: SWEInstance, repos_dir: Path | None) -> Path:
    """The pristine one-commit export of the instance's base_commit, made once under the agentgym cache."""
    source = repos.repo_dir(Path(repos_dir) if repos_dir else default_repos_dir(), instance.repo)
    if not (source / ".git").exists():  # check_commit says the same, without where to get the repository
        raise WorkspaceError(
            f"instance {instance.instance_id}: no repository for {instance.repo} at {source} "
            f"(give --env-opt repos_dir=DIR holding {repo_dirname(instance.repo)}/, or run `agentgym swe prepare`)"
        )
    try:
        repos.check_commit(source, instance.base_commit)
    except repos.RepoError as exc:
        raise WorkspaceError(f"instance {instance.instance_id}: {exc}") from None
    dest = cache_root() / "swe" / "instances" / f"{instance.instance_id}-{recipe_key([str(source), instance.base_commit])}"
    done = dest / ".agentgym-complete"
    if done.exists():
        return dest / "tree"
    with file_lock(dest.with_suffix(".lock")):
        if not done.exists():
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            repos.export_tree(source, instance.base_commit, dest / "tree")
            done.touch()
    return dest / "tree"


def environment_image(spec: RepoSpec) -> str:
    """The Docker image of a (repo, version) environment: the spec's Debian and pip packages, built offline once."""
    from agentgym.sandboxes.images import build_image

    if spec.install:
        # Our images hold no repository (it is mounted per episode), so a build-time install has nothing to run on.
        raise WorkspaceError(
            f"spec of {spec.repo} {spec.version or ''}: `install` commands need an instance image with the repo "
            f"built in (a SWE-bench/SWE-Gym image in the engine); this project's images take pip packages only"
        )
    apt = sorted({"git", *spec.apt})
    return build_image(f"agentgym/swe-env:{recipe_key([sorted(spec.pip), apt])}", pip=list(spec.pip), apt=apt)


def _prebuilt_image(instance: SWEInstance) -> str | None:
    """A SWE-bench/SWE-Gym image for the instance already in the Docker engine, or None."""
    from agentgym.sandboxes.images import engine

    names = [instance.image_name] if instance.image_name else []
    names += [n.format(id=instance.instance_id.lower()) for n in _PREBUILT]
    client = engine()
    for name in names:
        try:
            client.images.get(name)
            return name
        except Exception:  # docker.errors.ImageNotFound, or a name the engine refuses
            continue
    return None


def _copy_git_dir(pristine: Path, work: Path) -> None:
    """A work directory that holds only the pristine repository's .git (HEAD = base_commit's export)."""
    work.mkdir(parents=True)
    shutil.copytree(pristine / ".git", work / ".git", symlinks=True)


def _extract_tree(tar_bytes: bytes, dest: Path) -> None:
    """Unpack a get_archive() of /testbed into dest, leaving out the agent's .git (never trusted)."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r") as tar:
        members = []
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if not parts:
                continue
            rel = Path(*parts[1:])  # the archive's top entry is "testbed"
            if not rel.parts or rel.parts[0] == ".git":
                continue
            member.name = str(rel)
            members.append(member)
        tar.extractall(dest, members=members, filter="data")


def _git_apply(work: Path, patch: str) -> str | None:
    """Apply `patch` in `work` with git; the reason it does not apply, or None."""
    try:
        repos.git(["apply", "--whitespace=nowarn", "-"], cwd=work, input=patch.encode())
    except repos.RepoError as exc:
        return str(exc)
    return None


def _diff_in_sandbox(box: Sandbox) -> str:
    """The diff in a prebuilt image, where the base tree is only inside the sandbox: `git diff` of /testbed."""
    result = box.exec(f"cd {TESTBED} && git add -A && git diff --cached --no-color --binary HEAD", timeout=120)
    return result.stdout if result.ok else ""


def _apply_in_sandbox(box: Sandbox, model_patch: str, test_patch: str) -> str | None:
    """Apply the patches inside a fresh prebuilt-image sandbox with its own git; the reason on failure."""
    for name, patch in (("the model's patch", model_patch), ("the test patch", test_patch)):
        if patch.strip():
            box.write_file("/tmp/agentgym.patch", patch)
            result = box.exec(["git", "-C", TESTBED, "apply", "--whitespace=nowarn", "/tmp/agentgym.patch"], timeout=120)
            if not result.ok:
                return f"{name} does not apply: {(result.stderr or result.stdout).strip()[:300]}"
    return None
