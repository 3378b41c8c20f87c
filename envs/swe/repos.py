"""Local git repositories of real Python projects, made from their sdists so every machine rebuilds the same commits.

A repository lives at `DIR/<owner>__<name>/` (SWE-bench's convention); projects from PyPI get the owner
`pypi`. Each released version is one parentless commit of the pristine sdist tree, tagged
`refs/tags/pypi/<version>`, written with a fixed author, committer, date and message, so the same sdist gives
the same sha anywhere and a task file can name base commits that setup rebuilds. `export_tree` hands an agent
one commit's files as a fresh repository holding that commit alone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agentgym.cache import cache_root, file_lock
from agentgym.errors import AgentGymError

OWNER = "pypi"
# Every commit this module writes carries this identity; the date is the caller's or this one.
IDENTITY = ("agentgym", "agentgym@localhost")
FIXED_DATE = "2000-01-01T00:00:00+00:00"
GIT_TIMEOUT_S = 300
DOWNLOAD_TIMEOUT_S = 600
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9][A-Za-z0-9.+!_-]*)\s*$")
_SHA = re.compile(r"^[0-9a-f]{4,64}$")
_SDIST_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")


class RepoError(AgentGymError):
    """A repository that cannot be made, read or exported; the message names the repository and the fix."""


@dataclass(frozen=True)
class LocalRepo:
    """A project's local repository and the pristine commit of one version of it."""

    repo: str  # "pypi/toolz"
    path: Path  # DIR/pypi__toolz
    commit: str  # the pristine tree of `version`
    name: str  # normalised distribution name
    version: str


@dataclass(frozen=True)
class ExportedTree:
    """A commit's files written as a fresh one-commit repository: where, from which commit, and its new HEAD."""

    path: Path
    source_commit: str
    head: str


def normalize_name(name: str) -> str:
    """PEP 503 normalised project name (`More_Itertools` -> `more-itertools`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(requirement: str) -> tuple[str, str]:
    """(normalised name, version) of a pinned `NAME==VERSION`; RepoError for anything else."""
    match = _REQUIREMENT.match(requirement)
    if not match:
        raise RepoError(f"{requirement!r} is not a pinned requirement; give NAME==VERSION, e.g. toolz==1.0.0")
    return normalize_name(match.group(1)), match.group(2)


def repo_dir(repos_dir: Path, repo: str) -> Path:
    """`repos_dir/<owner>__<name>/` for a repo id `owner/name` (SWE-bench's layout)."""
    owner, sep, name = repo.partition("/")
    if not sep or not owner or not name or "/" in name or owner in (".", "..") or name in (".", ".."):
        raise RepoError(f"{repo!r} is not a repo id; give OWNER/NAME, e.g. pypi/toolz")
    return Path(repos_dir) / f"{owner}__{name}"


def git(
    args: list[str], cwd: Path, env: Mapping[str, str] | None = None, input: bytes | None = None,
    timeout: float = GIT_TIMEOUT_S,
) -> bytes:
    """Run git with no user or system configuration (so hooks, signing or autocrlf of this machine never apply)."""
    full_env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0",
                "LC_ALL": "C", **(env or {})}
    cmd = ["git", "-c", "core.autocrlf=false", "-c", "core.fileMode=true", "-c", "core.logAllRefUpdates=false",
           "-c", "gc.auto=0", "-c", "commit.gpgSign=false", *args]
    try:
        done = subprocess.run(cmd, cwd=cwd, env=full_env, input=input, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise RepoError(f"git {' '.join(args[:2])} in {cwd} did not finish within {timeout:.0f}s") from exc
    if done.returncode != 0:
        message = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        raise RepoError(f"git {' '.join(args[:2])} in {cwd} failed: {message[-1] if message else done.returncode}")
    return done.stdout


def commit_env(date: str = FIXED_DATE) -> dict[str, str]:
    """Author and committer of every commit made here: fixed, so a commit's sha depends on its tree and message only."""
    name, email = IDENTITY
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email, "GIT_COMMITTER_DATE": date}


def init_repo(path: Path) -> None:
    """An empty repository at `path` with no hooks, no sample files and `main` as its unborn branch."""
    path.mkdir(parents=True, exist_ok=True)
    git(["init", "-q", "--template=", "--initial-branch=main", str(path)], cwd=path)


def commit_directory(repo_path: Path, tree_dir: Path, message: str, date: str = FIXED_DATE) -> str:
    """A parentless commit of every file under `tree_dir` (its ignore rules disregarded); its sha."""
    with tempfile.TemporaryDirectory(prefix="agentgym-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_WORK_TREE": str(Path(tree_dir).resolve()),
               "GIT_DIR": str(Path(repo_path).resolve() / ".git")}
        # -f: an sdist's own .gitignore must not drop files it ships.
        git(["add", "-A", "-f", "."], cwd=tree_dir, env=env)
        tree = git(["write-tree"], cwd=tree_dir, env=env).decode().strip()
    return commit_tree(repo_path, tree, message, date)


def commit_tree(repo_path: Path, tree: str, message: str, date: str = FIXED_DATE) -> str:
    """A parentless commit of `tree` with the fixed identity; its sha."""
    return git(["commit-tree", tree, "-m", message], cwd=repo_path, env=commit_env(date)).decode().strip()


def commit_with_files(repo_path: Path, base: str, files: Mapping[str, bytes], message: str, date: str) -> str:
    """A parentless commit of `base`'s tree with `files` (repo-relative paths) replaced; its sha."""
    with tempfile.TemporaryDirectory(prefix="agentgym-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git(["read-tree", f"{base}^{{tree}}"], cwd=repo_path, env=env)
        for rel, data in sorted(files.items()):
            blob = git(["hash-object", "-w", "--stdin"], cwd=repo_path, input=data).decode().strip()
            mode = _file_mode(repo_path, base, rel)
            git(["update-index", "--add", "--cacheinfo", f"{mode},{blob},{rel}"], cwd=repo_path, env=env)
        tree = git(["write-tree"], cwd=repo_path, env=env).decode().strip()
    return commit_tree(repo_path, tree, message, date)


def commit_reverse_patch(repo_path: Path, base: str, patch: str, message: str, date: str) -> str:
    """A parentless commit of `base`'s tree with `patch` (a/ b/ prefixes) applied in reverse; its sha."""
    with tempfile.TemporaryDirectory(prefix="agentgym-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git(["read-tree", f"{base}^{{tree}}"], cwd=repo_path, env=env)
        git(["apply", "--cached", "-R", "-"], cwd=repo_path, env=env, input=patch.encode("utf-8"))
        tree = git(["write-tree"], cwd=repo_path, env=env).decode().strip()
    return commit_tree(repo_path, tree, message, date)


def _file_mode(repo_path: Path, commit: str, rel: str) -> str:
    """The mode `rel` has in `commit` (100644 when it is new), so a replaced script keeps its executable bit."""
    listing = git(["ls-tree", commit, "--", rel], cwd=repo_path).decode().split()
    return listing[0] if listing else "100644"


def check_commit(path: Path, sha: str) -> None:
    """RepoError "repo DIR has no commit SHA" unless `sha` names a commit of the repository at `path`."""
    if not _SHA.match(sha or ""):
        raise RepoError(f"{sha!r} is not a commit sha (4 to 64 hex digits)")
    if not (Path(path) / ".git").exists():
        raise RepoError(f"repo {path} has no commit {sha}: it is not a git repository (run the SWE setup to build it)")
    try:
        git(["cat-file", "-e", f"{sha}^{{commit}}"], cwd=Path(path))
    except RepoError:
        raise RepoError(f"repo {path} has no commit {sha}") from None


def resolve_ref(path: Path, ref: str) -> str | None:
    """The commit `ref` points at in the repository at `path`, or None."""
    try:
        return git(["rev-parse", "-q", "--verify", f"{ref}^{{commit}}"], cwd=path).decode().strip()
    except RepoError:
        return None


def set_ref(path: Path, ref: str, sha: str) -> None:
    """Point `ref` at `sha` (no reflog is kept)."""
    git(["update-ref", ref, sha], cwd=path)


def version_ref(version: str) -> str:
    """The tag of a version's pristine commit."""
    return f"refs/tags/{OWNER}/{version}"


def repo_from_tree(tree_dir: Path, name: str, version: str, dest_root: Path) -> LocalRepo:
    """The repository of project `name` under `dest_root` with the pristine tree of `version` committed from `tree_dir`."""
    name, dest_root = normalize_name(name), Path(dest_root).resolve()
    repo = f"{OWNER}/{name}"
    path = repo_dir(dest_root, repo)
    ref = version_ref(version)
    with file_lock(Path(dest_root) / f".{OWNER}__{name}.lock"):
        existing = resolve_ref(path, ref) if (path / ".git").is_dir() else None
        if existing is None:
            if not (path / ".git").is_dir():
                init_repo(path)
            commit = commit_directory(path, Path(tree_dir), f"{name} {version} (sdist)")
            set_ref(path, ref, commit)
            _check_out(path, commit)
        else:
            commit = existing
    return LocalRepo(repo=repo, path=path, commit=commit, name=name, version=version)


def _check_out(path: Path, commit: str) -> None:
    """Make the working tree of `path` the tree of `commit` (HEAD detached there)."""
    git(["checkout", "-q", "-f", "--detach", commit], cwd=path)


def repo_from_sdist(requirement: str, dest_root: Path, cache: Path | None = None) -> LocalRepo:
    """Download (cached) and unpack the sdist of `NAME==VERSION` and commit its tree as `dest_root/pypi__NAME`."""
    name, version = parse_requirement(requirement)
    path = repo_dir(Path(dest_root), f"{OWNER}/{name}")
    if (path / ".git").is_dir() and (commit := resolve_ref(path, version_ref(version))):
        return LocalRepo(repo=f"{OWNER}/{name}", path=path, commit=commit, name=name, version=version)
    sdist = download_sdist(requirement, cache)
    with tempfile.TemporaryDirectory(prefix="agentgym-sdist-") as tmp:
        tree = unpack_sdist(sdist, Path(tmp))
        return repo_from_tree(tree, name, version, dest_root)


def sdist_cache_dir(requirement: str, cache: Path | None = None) -> Path:
    """Where the sdist of a pinned requirement is kept once downloaded."""
    name, version = parse_requirement(requirement)
    return (cache or cache_root()) / "sdists" / f"{name}-{version}"


def cached_sdist(requirement: str, cache: Path | None = None) -> Path | None:
    """The sdist of `requirement` when it was downloaded before, else None (no network)."""
    entry = sdist_cache_dir(requirement, cache)
    found = sorted(p for p in entry.glob("*") if p.name.endswith(_SDIST_SUFFIXES)) if entry.is_dir() else []
    return found[0] if found else None


def download_sdist(requirement: str, cache: Path | None = None) -> Path:
    """The sdist of `NAME==VERSION`, from the cache or downloaded there once with pip."""
    entry = sdist_cache_dir(requirement, cache)
    with file_lock(entry / ".lock"):
        if found := cached_sdist(requirement, cache):
            return found
        with tempfile.TemporaryDirectory(prefix="agentgym-download-", dir=entry) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-binary", ":all:",
                   "--no-deps", "-q", "-d", tmp, requirement]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
            except subprocess.TimeoutExpired as exc:
                raise RepoError(f"pip download {requirement} did not finish within {DOWNLOAD_TIMEOUT_S}s") from exc
            files = [p for p in Path(tmp).iterdir() if p.name.endswith(_SDIST_SUFFIXES)]
            if done.returncode != 0 or len(files) != 1:
                lines = (done.stderr or done.stdout or "no sdist in pip's output").strip().splitlines()
                raise RepoError(f"cannot download the sdist of {requirement}: {lines[-1] if lines else done.returncode}; "
                                "check the name and version, and that a package index answers")
            final = entry / files[0].name
            files[0].replace(final)
    return final


def unpack_sdist(sdist: Path, dest: Path) -> Path:
    """Unpack an sdist archive into `dest` and return its single top-level directory."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if sdist.name.endswith(".zip"):
            with zipfile.ZipFile(sdist) as archive:
                for member in archive.namelist():
                    if member.startswith("/") or ".." in Path(member).parts:
                        raise RepoError(f"{sdist} holds an unsafe path {member!r}")
                archive.extractall(dest)
        else:
            with tarfile.open(sdist) as archive:
                # The "data" filter refuses absolute paths, links out of dest and device files.
                archive.extractall(dest, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        raise RepoError(f"cannot unpack {sdist}: {exc}; delete it from the cache and build again") from exc
    tops = [p for p in dest.iterdir()]
    if len(tops) != 1 or not tops[0].is_dir():
        raise RepoError(f"{sdist} does not hold one top-level directory (found {len(tops)} entries)")
    return tops[0]


def materialize(repo_path: Path, commit: str, dest: Path) -> Path:
    """Write the files of `commit` into directory `dest` (no .git); the source repository is not changed."""
    check_commit(repo_path, commit)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="agentgym-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git(["read-tree", f"{commit}^{{tree}}"], cwd=repo_path, env=env)
        git(["checkout-index", "-a", "-f", f"--prefix={dest.resolve()}/"], cwd=repo_path, env=env)
    return dest


def export_tree(repo_path: Path, commit: str, dest: Path, message: str = "Initial commit") -> ExportedTree:
    """Write `commit`'s tree to `dest` as a new repository whose only objects are that tree and one parentless commit.

    Only the tree's own objects are copied (a pack of `rev-list --objects TREE`), so no other commit, no
    reflog, no remote and no dangling object is there for an agent to find; the new commit's sha differs
    from `commit` and is returned as `head`.
    """
    repo_path, dest = Path(repo_path).resolve(), Path(dest).resolve()
    check_commit(repo_path, commit)
    if dest.exists() and any(dest.iterdir()):
        raise RepoError(f"cannot export into {dest}: it is not empty")
    tree = git(["rev-parse", f"{commit}^{{tree}}"], cwd=repo_path).decode().strip()
    objects = git(["rev-list", "--objects", tree], cwd=repo_path)
    pack = git(["pack-objects", "--stdout", "-q"], cwd=repo_path, input=objects)
    init_repo(dest)
    git(["unpack-objects", "-q"], cwd=dest, input=pack)
    head = commit_tree(dest, tree, message)
    set_ref(dest, "refs/heads/main", head)
    git(["config", "core.logAllRefUpdates", "false"], cwd=dest)
    git(["read-tree", "--reset", "-u", "HEAD"], cwd=dest)
    # Nothing here keeps a reflog or ORIG_HEAD, but remove any a git version wrote regardless.
    shutil.rmtree(dest / ".git" / "logs", ignore_errors=True)
    (dest / ".git" / "ORIG_HEAD").unlink(missing_ok=True)
    return ExportedTree(path=dest, source_commit=commit, head=head)


def diff_commits(repo_path: Path, old: str, new: str) -> str:
    """`git diff old new` with a/ and b/ prefixes, whatever this machine's diff settings."""
    return git(["diff", "--no-color", "--no-ext-diff", "--no-renames", "--src-prefix=a/", "--dst-prefix=b/",
                old, new], cwd=repo_path).decode()


def read_blob(repo_path: Path, commit: str, rel: str) -> bytes:
    """The bytes of file `rel` in `commit`."""
    return git(["show", f"{commit}:{rel}"], cwd=repo_path)
