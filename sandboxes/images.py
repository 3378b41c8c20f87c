"""Sandbox images built offline: a Debian root filesystem from debootstrap, imported into Docker, plus layers.

No registry is needed. The base (debootstrap of bookworm with the recipe's Debian packages) is cached as a
tarball under the agentgym cache and as an image in the engine; the final image adds the sandbox user,
the workdir and pip packages from wheels the host downloads. Every image carries the hash of its recipe
in the `agentgym.recipe` label, so a build of a recipe that is already there is a no-op.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agentgym.cache import cache_root, file_lock, recipe_key
from agentgym.sandboxes.base import SandboxError
from agentgym.sandboxes.messages import last_line, one_line

if TYPE_CHECKING:
    import docker

DEFAULT_IMAGE = "agentgym/sandbox:py"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SANDBOX_USER = "agent"
SANDBOX_UID = 1000
SANDBOX_WORKDIR = "/workspace"
RECIPE_LABEL = "agentgym.recipe"
# Bump when the steps below change, so images made by older code are rebuilt.
RECIPE_VERSION = 1
# Debian bookworm's python3 is 3.11 with glibc 2.36: every manylinux tag up to 2_36 runs there.
WHEEL_PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]
_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


@dataclass(frozen=True)
class ImageRecipe:
    """What an image is made from; equal recipes give interchangeable images."""

    python: bool = True
    pip: tuple[str, ...] = ()
    apt: tuple[str, ...] = ()

    def debian_packages(self) -> list[str]:
        """The packages debootstrap adds to minbase (pip needs Debian's python3-pip to install wheels)."""
        packages = set(self.apt)
        if self.python or self.pip:
            packages.add("python3")
        if self.pip:
            packages.add("python3-pip")
        return sorted(packages)

    def base_key(self) -> str:
        """Hash of the root filesystem: suite, variant and Debian packages (the mirror does not change it)."""
        return recipe_key("agentgym-sandbox-rootfs", RECIPE_VERSION, SUITE, "minbase", self.debian_packages())

    def key(self) -> str:
        """Hash of the whole image: its root filesystem, the sandbox user and the pip packages."""
        return recipe_key("agentgym-sandbox-image", self.base_key(), SANDBOX_UID, SANDBOX_WORKDIR, sorted(self.pip))


def images_dir() -> Path:
    """Where root filesystem tarballs and build locks live."""
    path = cache_root() / "sandbox-images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def engine(timeout: int = 600) -> docker.DockerClient:
    """A Docker client with a timeout long enough for builds; SandboxError when no engine answers."""
    import docker

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure to connect means the same to the user
        raise SandboxError(f"cannot connect to the Docker engine ({one_line(exc)}); start it with scripts/start-dockerd.sh") from exc
    return client


def build_image(
    name: str,
    python: bool = True,
    pip: Sequence[str] = (),
    apt: Sequence[str] = (),
    force: bool = False,
    client: docker.DockerClient | None = None,
) -> str:
    """Build image `name` offline from a recipe (Debian packages, pip packages) unless it exists; returns `name`."""
    for package in apt:
        if not _PACKAGE_NAME.match(package):
            raise SandboxError(f"{package!r} is not a Debian package name; give names like `git` or `build-essential`")
    recipe = ImageRecipe(python=python, pip=tuple(pip), apt=tuple(apt))
    client = client or engine()
    key = recipe.key()
    if not force and _has_recipe(client, name, key):
        return name
    with file_lock(images_dir() / f"image-{key}.lock"):
        # Another process may have built it while this one waited for the lock.
        if not force and _has_recipe(client, name, key):
            return name
        with tempfile.TemporaryDirectory(prefix="agentgym-image-") as tmp:
            context = Path(tmp)
            # Wheels first: a misspelt package fails in seconds, before the slow debootstrap.
            if recipe.pip:
                download_wheels(recipe.pip, context / "wheels")
            base = _ensure_base(client, recipe, force)
            (context / "Dockerfile").write_text(_dockerfile(base, recipe))
            previous = _image_id(client, name)
            _docker_build(client, context, name, {RECIPE_LABEL: key, "agentgym.image": "1"})
        if previous and previous != _image_id(client, name):
            _remove_untagged(client, previous)
    return name


_default_ready = threading.Event()


def ensure_default_image(client: docker.DockerClient | None = None) -> str:
    """The default sandbox image (python3, no pip packages), built on first use; checked once per process."""
    if not _default_ready.is_set():
        build_image(DEFAULT_IMAGE, python=True, client=client)
        _default_ready.set()
    return DEFAULT_IMAGE


def apt_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses for the main archive (deb.debian.org when none is found)."""
    sources = apt_dir / "sources.list"
    candidates: list[str] = []
    if sources.is_file():
        candidates += _mirrors_one_line(sources.read_text())
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".sources":
                candidates += _mirrors_deb822(path.read_text())
            elif path.suffix == ".list":
                candidates += _mirrors_one_line(path.read_text())
    return candidates[0].rstrip("/") if candidates else DEFAULT_MIRROR


def _mirrors_one_line(text: str) -> list[str]:
    """URIs of `deb URI bookworm ...` lines (options in brackets skipped)."""
    found = []
    for line in text.splitlines():
        line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
        if len(line) >= 3 and line[0] == "deb" and line[2] == SUITE:
            found.append(line[1])
    return found


def _mirrors_deb822(text: str) -> list[str]:
    """URIs of deb822 stanzas whose Suites include bookworm itself (not -security or -updates)."""
    found = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            field, _, value = line.partition(":")
            fields[field.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and SUITE in fields.get("suites", "").split():
            found += [uri for uri in fields.get("uris", "").split() if uri.startswith(("http://", "https://", "file:/"))]
    return found


def _has_recipe(client: docker.DockerClient, name: str, key: str) -> bool:
    import docker

    try:
        image = client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:
        raise SandboxError(f"cannot inspect image {name!r}: {one_line(exc)}") from exc
    return (image.labels or {}).get(RECIPE_LABEL) == key


def _image_id(client: docker.DockerClient, name: str) -> str | None:
    import docker

    try:
        return client.images.get(name).id
    except docker.errors.ImageNotFound:
        return None


def _remove_untagged(client: docker.DockerClient, image_id: str) -> None:
    """Drop the image a rebuild replaced, unless something still uses or names it."""
    import docker

    try:
        if not client.images.get(image_id).tags:
            client.images.remove(image_id)
    except docker.errors.APIError:
        pass  # in use by a container: it stays


def _ensure_base(client: docker.DockerClient, recipe: ImageRecipe, force: bool) -> str:
    """The base image (debootstrap rootfs imported into Docker), from the cached tarball when there is one."""
    base_key = recipe.base_key()
    tag = f"agentgym/sandbox-base:{base_key}"
    entry = images_dir() / base_key
    with file_lock(entry / "lock"):
        if not force and _has_recipe(client, tag, base_key):
            return tag
        tarball = _rootfs_tarball(recipe, force)
        try:
            client.api.import_image_from_file(
                str(tarball), repository=tag.split(":")[0], tag=base_key, changes=[f"LABEL {RECIPE_LABEL}={base_key}"]
            )
        except Exception as exc:  # noqa: BLE001
            raise SandboxError(f"docker import of {tarball} failed ({one_line(exc)}); delete it and build again") from exc
    return tag


def ensure_rootfs_tarball(recipe: ImageRecipe, force: bool = False) -> Path:
    """The recipe's debootstrapped root filesystem as a tarball in the cache, made on first use (bubblewrap's root)."""
    with file_lock(images_dir() / recipe.base_key() / "lock"):
        return _rootfs_tarball(recipe, force)


def _rootfs_tarball(recipe: ImageRecipe, force: bool) -> Path:
    """The cached rootfs tarball of a recipe, debootstrapped when missing; the caller holds the entry's lock."""
    tarball = images_dir() / recipe.base_key() / "rootfs.tar"
    if force or not tarball.is_file():
        _debootstrap(recipe.debian_packages(), tarball)
    return tarball


def _debootstrap(packages: list[str], tarball: Path) -> None:
    """Make a minbase bookworm root filesystem with `packages` and pack it into `tarball`."""
    import os

    if shutil.which("debootstrap") is None:
        raise SandboxError("debootstrap is not installed; install it with `apt-get install debootstrap` (scripts/setup.sh does)")
    if os.geteuid() != 0:
        raise SandboxError("building a sandbox image runs debootstrap, which needs root; run the build as root (sudo)")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    rootfs = tarball.parent / f"rootfs-{os.getpid()}"
    shutil.rmtree(rootfs, ignore_errors=True)
    mirror = apt_mirror()
    include = ["--include=" + ",".join(packages)] if packages else []
    try:
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", *include, SUITE, str(rootfs), mirror],
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise SandboxError(
                f"debootstrap of {SUITE} from {mirror} failed ({last_line(done.stdout + done.stderr)}); "
                "check the --apt package names and that the mirror answers"
            )
        # Package caches are dead weight in a sandbox that cannot reach a mirror anyway.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True, capture_output=True)
        partial.replace(tarball)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def download_wheels(packages: Iterable[str], dest: Path) -> None:
    """Download wheels (dependencies included) for the image's python 3.11 with the host's pip."""
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
           "--python-version", "3.11", "--implementation", "cp", "-d", str(dest)]
    for platform in WHEEL_PLATFORMS:
        cmd += ["--platform", platform]
    done = subprocess.run([*cmd, *packages], capture_output=True, text=True)
    if done.returncode != 0:
        raise SandboxError(
            f"cannot download wheels for {' '.join(packages)} ({last_line(done.stderr or done.stdout)}); "
            "check the names and versions, and that a wheel exists for Python 3.11 on Linux"
        )


def _dockerfile(base: str, recipe: ImageRecipe) -> str:
    """The layers on top of the base: the sandbox user, its workdir, pip packages."""
    lines = [
        f"FROM {base}",
        f"RUN groupadd -g {SANDBOX_UID} {SANDBOX_USER} && useradd -u {SANDBOX_UID} -g {SANDBOX_UID} "
        f"-d {SANDBOX_WORKDIR} -M -s /bin/sh {SANDBOX_USER} && mkdir -p {SANDBOX_WORKDIR} "
        f"&& chown {SANDBOX_UID}:{SANDBOX_UID} {SANDBOX_WORKDIR}",
    ]
    if recipe.pip:
        lines += [
            "COPY wheels /tmp/wheels",
            # Debian marks its python as externally managed; this image is ours to change.
            "RUN python3 -m pip install --no-index --find-links /tmp/wheels --break-system-packages "
            "--no-cache-dir --disable-pip-version-check " + " ".join(_shell_quote(p) for p in recipe.pip)
            + " && rm -rf /tmp/wheels",
        ]
    lines += [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1",
        f"WORKDIR {SANDBOX_WORKDIR}",
        f"USER {SANDBOX_UID}:{SANDBOX_UID}",
        'CMD ["sleep", "infinity"]',
    ]
    return "\n".join(lines) + "\n"


def _docker_build(client: docker.DockerClient, context: Path, name: str, labels: dict[str, str]) -> None:
    """Build with the engine's classic builder and no network (nothing may be fetched at build time)."""
    import docker

    try:
        client.images.build(path=str(context), tag=name, labels=labels, network_mode="none", rm=True, forcerm=True, pull=False)
    except docker.errors.BuildError as exc:
        log = "".join(str(item.get("stream") or item.get("error") or "") for item in exc.build_log)
        raise SandboxError(f"docker build of {name!r} failed: {last_line(log or str(exc))}") from exc
    except docker.errors.APIError as exc:
        raise SandboxError(f"docker build of {name!r} failed: {one_line(exc)}; image names are lowercase, e.g. me/sandbox:py") from exc


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
