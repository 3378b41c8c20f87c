"""Repository mode (`SandboxSpec.repo`) on each real backend: a writable /testbed that reset() makes pristine again."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from agentgym.sandboxes.base import Sandbox, SandboxBackend, SandboxError
from agentgym.sandboxes.pool import SandboxPool
from agentgym.sandboxes.spec import SANDBOX_PYTHON, RepoMount, SandboxSpec

# A digest of a tree: every entry's path, type, permission bits and content (or link target); owners and
# times left out, since the sandbox's copy belongs to the sandbox user. Runs in the sandbox and on the host.
TREE_DIGEST = textwrap.dedent(r"""
    import hashlib, os, stat, sys
    root, digest = sys.argv[1], hashlib.sha256()
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                body = os.readlink(path).encode()
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as fh:
                    body = fh.read()
            else:
                body = b""
            row = f"{os.path.relpath(path, root)}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode):o}\0"
            digest.update(row.encode() + hashlib.sha256(body).digest())
    print(digest.hexdigest())
""")
IMPORT = [SANDBOX_PYTHON, "-c", "import tinypkg; print(tinypkg.__file__, tinypkg.VALUE)"]
PATH = "/testbed"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small git checkout: a package, an executable script, a read-only file, a link, an empty directory."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed on the host")
    root = tmp_path_factory.mktemp("repo") / "checkout"
    (root / "tinypkg").mkdir(parents=True)
    (root / "tinypkg" / "__init__.py").write_text("VALUE = 1\n")
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "nested" / "deeper" / "data.txt").write_text("data\n" * 100)
    (root / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (root / "run.sh").chmod(0o755)
    (root / "READONLY").write_text("do not edit\n")
    (root / "READONLY").chmod(0o444)
    (root / "link").symlink_to("tinypkg/__init__.py")
    (root / "empty").mkdir()
    (root / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "tinypkg"
        version = "0.1"

        [tool.setuptools]
        packages = ["tinypkg"]
    """))
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "pristine")
    return root


def host_digest(path: Path) -> str:
    """TREE_DIGEST of a host directory."""
    done = subprocess.run([sys.executable, "-c", TREE_DIGEST, str(path)], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def digest(box: Sandbox, path: str = PATH) -> str:
    """TREE_DIGEST of a sandbox directory."""
    result = box.exec([SANDBOX_PYTHON, "-c", TREE_DIGEST, path], timeout=60)
    assert result.ok, result
    return result.stdout.strip()


def spec_for(source: Path | None, **fields: object) -> SandboxSpec:
    """A small repo-mode spec (memory above disk: tmpfs pages count against memory)."""
    settings: dict[str, object] = {"memory_mb": 256, "pids": 64, "disk_mb": 32, "exec_timeout_s": 60}
    settings.update(fields)
    return SandboxSpec(repo=RepoMount(path=PATH, source=source), **settings)


@pytest.fixture()
def make(sandbox_backend: SandboxBackend) -> Iterator:
    """A factory of sandboxes on the backend under test that closes every one it made."""
    made: list[Sandbox] = []

    def _make(spec: SandboxSpec) -> Sandbox:
        box = sandbox_backend.create(spec)
        made.append(box)
        return box

    yield _make
    for box in made:
        box.close()


# --- the spec ---
def test_repo_spec_is_validated_and_keyed() -> None:
    spec = SandboxSpec(repo=RepoMount(path="/testbed/", source=Path("/src/a")))
    assert spec.repo is not None and spec.repo.path == "/testbed"
    assert spec.key() == SandboxSpec(repo=RepoMount(path="/testbed", source=Path("/src/a"))).key()
    assert spec.key() != SandboxSpec(repo=RepoMount(path="/testbed", source=Path("/src/b"))).key()
    assert spec.key() != SandboxSpec().key()
    hash(spec.repo)  # frozen: usable as a key itself
    for bad, message in (("testbed", "absolute"), ("/", "system directory"), ("/usr/src/repo", "system directory"),
                         ("/tmp/repo", "system directory")):
        with pytest.raises(ValidationError, match=message):
            RepoMount(path=bad)
    with pytest.raises(ValidationError, match="must be equal or apart"):
        SandboxSpec(workdir="/testbed/work", repo=RepoMount(path="/testbed"))
    with pytest.raises(ValidationError, match="must be equal or apart"):
        SandboxSpec(workdir="/work", repo=RepoMount(path="/work/repo"))
    with pytest.raises(ValidationError):
        RepoMount(path="/testbed", mode="overlay")  # unknown fields are refused


# --- both backends ---
def test_the_repo_starts_pristine_and_belongs_to_the_sandbox_user(make, repo: Path) -> None:
    box = make(spec_for(repo))
    assert digest(box) == host_digest(repo)
    owners = box.exec(f"find {PATH} ! -user {box.spec.uid} -o ! -group {box.spec.gid}")
    assert owners.ok and owners.stdout == "", owners
    # Writable by the user, and executable: a repository runs its scripts and loads what it builds.
    edits = f"cd {PATH} && touch made && mkdir -p a/b && echo '# edited' >> tinypkg/__init__.py && ./run.sh"
    assert box.exec(edits).stdout == "ran\n"
    assert box.exec(["sh", "-c", "cd / && python3 -c 'import sys; sys.path.insert(0, \"/testbed\"); import tinypkg'"]).ok
    box.write_file(f"{PATH}/via-api.txt", "hello")
    assert box.read_file(f"{PATH}/via-api.txt") == b"hello"
    assert box.exec(f"stat -c %u {PATH}/via-api.txt").stdout.strip() == str(box.spec.uid)


def test_reset_restores_exactly_the_pristine_tree(make, repo: Path) -> None:
    box = make(spec_for(repo))
    pristine = digest(box)
    vandalism = (
        f"cd {PATH} && echo 'VALUE = 2' > tinypkg/__init__.py && echo new > new_file.py && rm run.sh "
        "&& rm -rf nested && chmod 600 READONLY && ln -sf /etc/passwd link "
        # .git broken every way: objects gone, HEAD garbage, refs unreadable.
        "&& rm -rf .git/objects && echo garbage > .git/HEAD && chmod 000 .git/refs"
    )
    assert box.exec(vandalism).ok
    assert digest(box) != pristine
    box.reset()
    assert digest(box) == pristine == host_digest(repo)
    assert box.exec(f"cat {PATH}/tinypkg/__init__.py").stdout == "VALUE = 1\n"
    assert box.exec(f"test -e {PATH}/new_file.py").exit_code == 1


def test_the_disk_limit_holds_in_the_repo(make, repo: Path) -> None:
    box = make(spec_for(repo, disk_mb=16))
    flood = box.exec(f"dd if=/dev/zero of={PATH}/big bs=1M count=40", timeout=60)
    assert flood.exit_code != 0 and "No space left" in flood.stderr, flood
    assert int(box.exec(f"du -sm {PATH}").stdout.split()[0]) <= 16
    box.reset()
    assert digest(box) == host_digest(repo)


def test_a_repo_larger_than_disk_mb_is_refused_clearly(sandbox_backend: SandboxBackend, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    (big / "blob").write_bytes(os.urandom(3 << 20))
    with pytest.raises(SandboxError, match="more than the sandbox's disk_mb=2"):
        sandbox_backend.create(spec_for(big, disk_mb=2)).close()


def test_a_missing_source_is_one_clear_error(sandbox_backend: SandboxBackend, tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="neither a directory nor a tar archive"):
        sandbox_backend.create(spec_for(tmp_path / "nowhere")).close()
    (tmp_path / "notes.txt").write_text("not an archive")
    with pytest.raises(SandboxError, match="not a tar archive"):
        sandbox_backend.create(spec_for(tmp_path / "notes.txt")).close()


def test_network_is_off_in_repo_mode(make, repo: Path) -> None:
    box = make(spec_for(repo))
    devices = box.exec("tail -n +3 /proc/net/dev | cut -d: -f1").stdout.split()
    assert devices == ["lo"]
    connect = "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 80), timeout=3)\n    print('CONNECTED')\n" \
              "except OSError as exc:\n    print('refused', exc)"
    assert box.exec([SANDBOX_PYTHON, "-c", connect], timeout=30).stdout.startswith("refused")


def test_two_sandboxes_of_one_spec_do_not_see_each_others_edits(make, repo: Path) -> None:
    spec = spec_for(repo)
    first, second = make(spec), make(spec)
    assert first.exec(f"echo mine > {PATH}/first-only && rm {PATH}/run.sh").ok
    assert second.exec(f"test -e {PATH}/first-only").exit_code == 1
    assert second.exec(f"test -e {PATH}/run.sh").ok
    assert digest(second) == host_digest(repo)


def test_a_pool_hands_out_a_reset_repo(sandbox_backend: SandboxBackend, repo: Path) -> None:
    with SandboxPool(spec_for(repo), sandbox_backend, warm=1, max_size=1) as pool:
        with pool.sandbox(timeout=120) as first:
            assert first.exec(f"cd {PATH} && rm -rf tinypkg .git && echo dirty > dirty").ok
        with pool.sandbox(timeout=120) as second:
            assert second is first  # max_size 1: the same sandbox, reset by the pool's worker
            assert digest(second) == host_digest(repo)


def test_snapshot_and_restore_keep_the_repos_deletions(make, repo: Path) -> None:
    box = make(spec_for(repo))
    assert box.exec(f"cd {PATH} && rm run.sh && echo 2 > tinypkg/__init__.py && echo kept > added").ok
    state = digest(box)
    snapshot = box.snapshot()
    assert box.exec(f"rm -rf {PATH}/tinypkg {PATH}/added").ok
    box.restore(snapshot)
    assert digest(box) == state
    assert box.exec(f"test -e {PATH}/run.sh").exit_code == 1  # the pristine copy does not come back under it
    box.reset()  # after a restore, reset returns to the restore point
    assert digest(box) == state


def test_a_repo_at_the_workdir(make, repo: Path) -> None:
    box = make(spec_for(repo, workdir=PATH))
    assert box.exec("pwd").stdout == f"{PATH}\n"
    assert digest(box) == host_digest(repo)
    box.write_file("scratch.txt", "relative paths land in the repository")
    assert box.exec("./run.sh && cat scratch.txt").stdout == "ran\nrelative paths land in the repository"
    box.reset()
    assert digest(box) == host_digest(repo)


def test_a_compressed_tarball_source(make, repo: Path, tmp_path: Path) -> None:
    archive = tmp_path / "repo.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(repo, arcname=".")
    box = make(spec_for(archive))
    assert digest(box) == host_digest(repo)
    assert box.exec(f"rm -rf {PATH}/tinypkg").ok
    box.reset()
    assert digest(box) == host_digest(repo)


def test_a_changed_source_is_packed_again_and_live_sandboxes_keep_theirs(make, repo: Path, tmp_path: Path) -> None:
    from agentgym.cache import recipe_key
    from agentgym.sandboxes.repo_source import repos_dir

    source = tmp_path / "src"
    shutil.copytree(repo, source, symlinks=True)
    before = make(spec_for(source))
    (source / "tinypkg" / "__init__.py").write_text("VALUE = 3\n")  # same size: only the mtime tells
    after = make(spec_for(source))
    show = f"cat {PATH}/tinypkg/__init__.py"
    assert after.exec(show).stdout == "VALUE = 3\n"
    assert len(list(repos_dir().glob(f"src-{recipe_key(str(source.resolve()))}-*.tar"))) == 1  # the old one's is gone
    before.reset()
    assert before.exec(show).stdout == "VALUE = 1\n"  # its own pristine copy, held open


# --- Docker: the repository inside an instance image, installed editable ---
@pytest.fixture(scope="module")
def editable_image(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An image holding the repo at /testbed, `pip install -e`'d as a SWE-bench instance image is (built offline)."""
    from agentgym.sandboxes.docker_backend import DockerBackend
    from agentgym.sandboxes.images import build_image, engine

    reason = DockerBackend().unavailable_reason()
    if reason:
        pytest.skip(f"docker backend unavailable: {reason}")
    client = engine()
    # Debian's pip and setuptools, so the editable install needs no index (the base is the pip image's).
    base = build_image("agentgym-test/repo-pip", apt=["python3-pip"], client=client)
    context = tmp_path_factory.mktemp("editable-image")
    shutil.copytree(repo, context / "testbed", symlinks=True)
    (context / "Dockerfile").write_text(textwrap.dedent(f"""
        FROM {base}
        USER 0:0
        COPY testbed {PATH}
        RUN python3 -m pip install --no-index --no-build-isolation --no-deps --break-system-packages -q -e {PATH}
        USER 1000:1000
    """))
    tag = "agentgym-test/repo-editable:latest"
    client.images.build(path=str(context), tag=tag, network_mode="none", rm=True, forcerm=True, pull=False)
    yield tag
    try:
        client.images.remove(tag, force=True)
    except Exception:  # noqa: BLE001 - a leftover test image is harmless
        pass


@pytest.mark.slow
def test_docker_editable_install_survives_edits_and_resets(editable_image: str) -> None:
    from agentgym.sandboxes.docker_backend import DockerBackend

    spec = SandboxSpec(image=editable_image, memory_mb=256, disk_mb=32, repo=RepoMount(path=PATH))
    with DockerBackend().create(spec) as box:
        pristine = digest(box)
        # setuptools' editable install points the image's site-packages at /testbed, which the tmpfs then holds.
        assert box.exec("grep -l /testbed /usr/local/lib/python3*/dist-packages/__editable__*").ok
        assert box.exec(IMPORT, workdir="/").stdout == "/testbed/tinypkg/__init__.py 1\n"
        assert box.exec(f"find {PATH} ! -user {spec.uid} | head -1").stdout == ""
        assert box.exec(f"echo 'VALUE = 2' > {PATH}/tinypkg/__init__.py").ok
        assert box.exec(IMPORT, workdir="/").stdout.endswith(" 2\n")  # an edit is live at once: editable
        assert box.exec(f"rm -rf {PATH}/tinypkg {PATH}/.git").ok
        assert box.exec(IMPORT, workdir="/").exit_code != 0
        box.reset()
        assert digest(box) == pristine
        assert box.exec(IMPORT, workdir="/").stdout == "/testbed/tinypkg/__init__.py 1\n"


def test_docker_image_without_the_repo_is_a_clear_error(repo: Path) -> None:
    from agentgym.sandboxes.docker_backend import DockerBackend

    backend = DockerBackend()
    if backend.unavailable_reason():
        pytest.skip(f"docker backend unavailable: {backend.unavailable_reason()}")
    with pytest.raises(SandboxError, match="holds nothing at /testbed and repo.source is not set"):
        backend.create(spec_for(None)).close()


# --- bubblewrap: the repository inside a prepared rootfs, with a .pth as an editable install leaves ---
@pytest.fixture()
def bwrap_backend() -> SandboxBackend:
    from agentgym.sandboxes.bwrap_backend import BwrapBackend

    backend = BwrapBackend()
    reason = backend.unavailable_reason()
    if reason:
        pytest.skip(f"bwrap backend unavailable: {reason}")
    return backend


def test_bwrap_rootfs_repo_with_a_pth_imports_after_reset(bwrap_backend: SandboxBackend, repo: Path, tmp_path: Path) -> None:
    from agentgym.sandboxes.rootfs import project_rootfs

    try:
        project = project_rootfs(build=False)
    except SandboxError as exc:
        pytest.skip(f"no project rootfs here: {exc}")
    root = tmp_path / "root"
    # Hard links: a copy of ~160 MB in a second; only new files are written into it, never a linked one.
    if subprocess.run(["cp", "-al", str(project), str(root)], capture_output=True).returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["cp", "-a", str(project), str(root)], check=True)
    shutil.copytree(repo, root / "testbed", symlinks=True)
    site = next((root / "usr" / "lib").glob("python3.*")).name
    packages = root / "usr" / "local" / "lib" / site / "dist-packages"
    packages.mkdir(parents=True, exist_ok=True)
    (packages / "__editable__.tinypkg-0.1.pth").write_text(f"{PATH}\n")  # what setuptools' editable install writes

    spec = SandboxSpec(rootfs=root, memory_mb=256, disk_mb=32, repo=RepoMount(path=PATH))  # source: the rootfs's /testbed
    with bwrap_backend.create(spec) as box:
        assert digest(box) == host_digest(repo)
        assert box.exec(IMPORT, workdir="/").stdout == "/testbed/tinypkg/__init__.py 1\n"
        assert box.exec(f"echo 'VALUE = 2' > {PATH}/tinypkg/__init__.py && rm -rf {PATH}/.git").ok
        assert box.exec(IMPORT, workdir="/").stdout.endswith(" 2\n")
        assert box.exec(f"rm -rf {PATH}/tinypkg").ok
        assert box.exec(IMPORT, workdir="/").exit_code != 0
        box.reset()
        assert digest(box) == host_digest(repo)  # before the import, which may write __pycache__ into the repo
        assert box.exec(IMPORT, workdir="/").stdout == "/testbed/tinypkg/__init__.py 1\n"
        assert (root / "testbed" / "tinypkg" / "__init__.py").read_text() == "VALUE = 1\n"  # the rootfs is untouched


def test_bwrap_without_a_source_needs_a_rootfs_holding_the_repo(bwrap_backend: SandboxBackend) -> None:
    with pytest.raises(SandboxError, match="repo.source is not set and .* has no directory /testbed"):
        bwrap_backend.create(spec_for(None)).close()
