"""Local SWE repositories: deterministic pristine commits, the repo layout, and exports that hide every other commit."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from agentgym.envs.swe import repos
from agentgym.envs.swe.repos import RepoError


def make_project(root: Path, order: tuple[str, ...] = ("a", "b")) -> Path:
    """A small project tree; `order` changes the order files are created in (it must not matter)."""
    files = {
        "fakepkg/__init__.py": "from .core import add\n",
        "fakepkg/core.py": "def add(a, b):\n    return a + b\n",
        "tests/test_core.py": "from fakepkg import add\n\ndef test_add():\n    assert add(1, 2) == 3\n",
        # An sdist's own ignore rules must not drop files it ships.
        ".gitignore": "core.py\n*.txt\n",
        "notes.txt": "shipped anyway\n",
        "run.sh": "#!/bin/sh\necho hi\n",
    }
    items = sorted(files.items(), reverse=order[0] == "b")
    for rel, text in items:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "run.sh").chmod(0o755)
    return root


def git_out(path: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=True).stdout


def test_same_tree_gives_the_same_commit_whatever_the_machine_settings(tmp_path, monkeypatch):
    first = repos.repo_from_tree(make_project(tmp_path / "src1"), "FakePkg", "0.1", tmp_path / "repos1")
    # Another machine: other file order and mtimes, another user, time zone and umask.
    src2 = make_project(tmp_path / "src2", order=("b", "a"))
    for path in src2.rglob("*"):
        os.utime(path, (1_600_000_000, 1_600_000_000))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Somebody Else")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "else@example.com")
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    old_umask = os.umask(0o077)
    try:
        second = repos.repo_from_tree(src2, "fakepkg", "0.1", tmp_path / "repos2")
    finally:
        os.umask(old_umask)
    assert first.commit == second.commit
    assert first.repo == "pypi/fakepkg" and first.path == (tmp_path / "repos1" / "pypi__fakepkg").resolve()
    files = git_out(first.path, "ls-tree", "-r", "--name-only", first.commit).split()
    assert {"fakepkg/core.py", "notes.txt", ".gitignore", "run.sh"} <= set(files)
    assert "100755" in git_out(first.path, "ls-tree", first.commit, "run.sh")
    # A parentless commit with the fixed identity and date.
    assert git_out(first.path, "log", "--format=%P|%an|%cn|%aI", first.commit).strip() == \
        "|agentgym|agentgym|2000-01-01T00:00:00+00:00"


def test_commit_sha_is_pinned(tmp_path):
    made = repos.repo_from_tree(make_project(tmp_path / "src"), "fakepkg", "0.1", tmp_path / "repos")
    tree = git_out(made.path, "rev-parse", f"{made.commit}^{{tree}}").strip()
    # The commit is a pure function of the tree and the fixed metadata: recomputing it by hand must agree.
    body = (f"tree {tree}\nauthor agentgym <agentgym@localhost> 946684800 +0000\n"
            f"committer agentgym <agentgym@localhost> 946684800 +0000\n\nfakepkg 0.1 (sdist)\n")
    by_hand = subprocess.run(["git", "hash-object", "-t", "commit", "--stdin"], input=body, text=True,
                             capture_output=True, check=True, cwd=made.path).stdout.strip()
    assert made.commit == by_hand


def test_repo_from_tree_is_idempotent_and_keeps_versions_apart(tmp_path):
    src = make_project(tmp_path / "src")
    first = repos.repo_from_tree(src, "fakepkg", "0.1", tmp_path / "repos")
    again = repos.repo_from_tree(src, "fakepkg", "0.1", tmp_path / "repos")
    assert again == first
    (src / "fakepkg" / "core.py").write_text("def add(a, b):\n    return b + a\n")
    newer = repos.repo_from_tree(src, "fakepkg", "0.2", tmp_path / "repos")
    assert newer.commit != first.commit and newer.path == first.path
    assert repos.resolve_ref(first.path, "refs/tags/pypi/0.1") == first.commit
    assert repos.resolve_ref(first.path, "refs/tags/pypi/0.2") == newer.commit


def test_repo_from_sdist_uses_the_cached_sdist(tmp_path):
    cache = tmp_path / "cache"
    project = make_project(tmp_path / "fakepkg-0.1")
    entry = repos.sdist_cache_dir("fakepkg==0.1", cache)
    entry.mkdir(parents=True)
    with tarfile.open(entry / "fakepkg-0.1.tar.gz", "w:gz") as tar:
        tar.add(project, arcname="fakepkg-0.1")
    one = repos.repo_from_sdist("fakepkg==0.1", tmp_path / "r1", cache=cache)
    two = repos.repo_from_sdist("FakePkg == 0.1", tmp_path / "r2", cache=cache)
    from_tree = repos.repo_from_tree(project, "fakepkg", "0.1", tmp_path / "r3")
    assert one.commit == two.commit == from_tree.commit
    assert one.path.name == "pypi__fakepkg" and one.version == "0.1"


def test_toolz_sdist_gives_its_pinned_commit(tmp_path):
    if repos.cached_sdist("toolz==1.0.0") is None:
        pytest.skip("the toolz 1.0.0 sdist is not in the test cache; fetch it once with "
                    "AGENTGYM_CACHE=<the test cache> and repos.download_sdist('toolz==1.0.0')")
    made = repos.repo_from_sdist("toolz==1.0.0", tmp_path)
    assert made.commit == "0557589bd4adf88b46136e08046f771130ad4015"


@pytest.mark.parametrize("bad", ["toolz", "toolz>=1.0", "toolz==", "==1.0", "toolz==1.0; python_version<'3'"])
def test_unpinned_requirements_are_refused(bad):
    with pytest.raises(RepoError, match="is not a pinned requirement; give NAME==VERSION"):
        repos.parse_requirement(bad)


def test_repo_dir_follows_swebench_layout(tmp_path):
    assert repos.repo_dir(tmp_path, "pypi/toolz") == tmp_path / "pypi__toolz"
    assert repos.repo_dir(tmp_path, "psf/requests") == tmp_path / "psf__requests"
    for bad in ("toolz", "a/b/c", "/toolz", "pypi/", "../x"):
        with pytest.raises(RepoError, match="is not a repo id"):
            repos.repo_dir(tmp_path, bad)


def test_check_commit_names_the_repo_and_the_missing_sha(tmp_path):
    made = repos.repo_from_tree(make_project(tmp_path / "src"), "fakepkg", "0.1", tmp_path / "repos")
    repos.check_commit(made.path, made.commit)
    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(RepoError, match=f"^repo {made.path} has no commit {missing}$"):
        repos.check_commit(made.path, missing)
    with pytest.raises(RepoError, match="has no commit"):
        repos.check_commit(tmp_path / "nowhere", missing)
    with pytest.raises(RepoError, match="is not a commit sha"):
        repos.check_commit(made.path, "HEAD; rm -rf /")


def objects_of(path: Path) -> set[str]:
    listing = git_out(path, "cat-file", "--batch-all-objects", "--batch-check=%(objectname)")
    return set(listing.split())


def test_export_tree_holds_one_commit_and_nothing_else(tmp_path):
    made = repos.repo_from_tree(make_project(tmp_path / "src"), "fakepkg", "0.1", tmp_path / "repos")
    fixed_blob = git_out(made.path, "rev-parse", f"{made.commit}:fakepkg/core.py").strip()
    buggy = repos.commit_with_files(made.path, made.commit, {"fakepkg/core.py": b"def add(a, b):\n    return a - b\n"},
                                    "bug", "2024-01-02T00:00:00+00:00")
    repos.set_ref(made.path, "refs/tags/agentgym/bug", buggy)
    dest = tmp_path / "work"
    exported = repos.export_tree(made.path, buggy, dest)

    assert exported.source_commit == buggy and exported.head != buggy
    assert git_out(dest, "rev-parse", "HEAD").strip() == exported.head
    # The same tree, so the grader can diff the working tree against HEAD.
    assert git_out(dest, "rev-parse", "HEAD^{tree}") == git_out(made.path, "rev-parse", f"{buggy}^{{tree}}")
    assert (dest / "fakepkg" / "core.py").read_text() == "def add(a, b):\n    return a - b\n"
    assert os.access(dest / "run.sh", os.X_OK)
    assert git_out(dest, "status", "--porcelain") == ""
    # Nothing leads to another commit: one commit in all refs, no reflog, no remote, no other ref.
    assert git_out(dest, "log", "--all", "--format=%H").split() == [exported.head]
    assert git_out(dest, "log", "--format=%P", "HEAD").strip() == ""
    assert git_out(dest, "reflog").strip() == ""
    assert git_out(dest, "remote").strip() == ""
    assert git_out(dest, "for-each-ref", "--format=%(refname)").split() == ["refs/heads/main"]
    assert git_out(dest, "stash", "list").strip() == ""
    # Every object there is reachable from HEAD: the fixed file's blob and the pristine commit are absent.
    reachable = {line.split()[0] for line in git_out(dest, "rev-list", "--objects", "HEAD").splitlines()}
    assert objects_of(dest) == reachable
    assert fixed_blob not in objects_of(dest) and made.commit not in objects_of(dest)
    fsck = subprocess.run(["git", "fsck", "--lost-found", "--no-reflogs"], cwd=dest, capture_output=True, text=True)
    assert fsck.returncode == 0 and "dangling" not in fsck.stdout + fsck.stderr
    assert not (dest / ".git" / "lost-found").exists() or not any((dest / ".git" / "lost-found").rglob("*"))
    for leftover in ("ORIG_HEAD", "FETCH_HEAD", "packed-refs", "logs", "hooks"):
        assert not (dest / ".git" / leftover).exists(), leftover
    # The source repository is untouched by the export.
    assert repos.resolve_ref(made.path, "refs/tags/agentgym/bug") == buggy


def test_export_tree_refuses_a_non_empty_destination_and_a_missing_commit(tmp_path):
    made = repos.repo_from_tree(make_project(tmp_path / "src"), "fakepkg", "0.1", tmp_path / "repos")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(RepoError, match="it is not empty"):
        repos.export_tree(made.path, made.commit, tmp_path / "busy")
    with pytest.raises(RepoError, match="has no commit"):
        repos.export_tree(made.path, "f" * 40, tmp_path / "empty")


def test_commit_with_files_is_deterministic_and_parentless(tmp_path):
    one = repos.repo_from_tree(make_project(tmp_path / "s1"), "fakepkg", "0.1", tmp_path / "r1")
    two = repos.repo_from_tree(make_project(tmp_path / "s2"), "fakepkg", "0.1", tmp_path / "r2")
    change = {"fakepkg/core.py": b"def add(a, b):\n    return a * b\n"}
    a = repos.commit_with_files(one.path, one.commit, change, "m", "2024-05-06T07:08:09+00:00")
    b = repos.commit_with_files(two.path, two.commit, change, "m", "2024-05-06T07:08:09+00:00")
    assert a == b
    assert git_out(one.path, "log", "--format=%P", a).strip() == ""
    diff = repos.diff_commits(one.path, a, one.commit)
    assert diff.startswith("diff --git a/fakepkg/core.py b/fakepkg/core.py")
    assert "-    return a * b\n+    return a + b\n" in diff


def test_materialize_writes_a_commit_without_touching_the_repo(tmp_path):
    made = repos.repo_from_tree(make_project(tmp_path / "src"), "fakepkg", "0.1", tmp_path / "repos")
    out = repos.materialize(made.path, made.commit, tmp_path / "out")
    assert (out / "fakepkg" / "core.py").read_text() == "def add(a, b):\n    return a + b\n"
    assert not (out / ".git").exists()
    assert git_out(made.path, "status", "--porcelain") == ""
