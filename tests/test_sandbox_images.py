"""Offline sandbox images: recipes, the apt mirror, caching, pip packages from host-downloaded wheels, errors."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentgym.sandboxes.base import SandboxError
from agentgym.sandboxes.images import DEFAULT_IMAGE, RECIPE_LABEL, ImageRecipe, apt_mirror, build_image, ensure_default_image
from agentgym.sandboxes.spec import SANDBOX_PYTHON, SandboxSpec

AGENTGYM = [sys.executable, "-m", "agentgym.cli"]
PIP_IMAGE = "agentgym-test/sandbox-pip:latest"


@pytest.fixture(scope="session")
def docker_client():
    """A Docker client with the default image built (once per session; debootstrap takes about a minute)."""
    from agentgym.sandboxes.docker_backend import DockerBackend

    backend = DockerBackend()
    reason = backend.unavailable_reason()
    if reason:
        pytest.skip(f"no Docker engine reachable: {reason}")
    ensure_default_image()
    return backend.client()


def test_recipe_keys() -> None:
    base = ImageRecipe()
    assert base.debian_packages() == ["python3"]
    assert ImageRecipe(python=False).debian_packages() == []
    assert ImageRecipe(pip=("six",)).debian_packages() == ["python3", "python3-pip"]
    assert ImageRecipe(pip=("a", "b")).key() == ImageRecipe(pip=("b", "a")).key()
    # pip packages change the image, not the debootstrap root filesystem under it.
    assert ImageRecipe(pip=("a",)).base_key() == ImageRecipe(pip=("b",)).base_key()
    assert ImageRecipe(pip=("a",)).key() != ImageRecipe(pip=("b",)).key()
    assert len({base.key(), ImageRecipe(apt=("git",)).key(), ImageRecipe(python=False).key()}) == 3


def test_apt_mirror_from_sources(tmp_path: Path) -> None:
    assert apt_mirror(tmp_path) == "http://deb.debian.org/debian"  # nothing configured
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    (tmp_path / "sources.list.d" / "other.list.disabled").write_text("deb http://wrong.example/debian bookworm main\n")
    assert apt_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text("# old\ndeb [arch=amd64] http://first.example/debian bookworm main\n")
    assert apt_mirror(tmp_path) == "http://first.example/debian"


def test_default_image_build_is_cached(docker_client) -> None:
    image = docker_client.images.get(DEFAULT_IMAGE)
    assert image.labels[RECIPE_LABEL] == ImageRecipe().key()
    started = time.monotonic()
    assert build_image(DEFAULT_IMAGE) == DEFAULT_IMAGE
    assert time.monotonic() - started < 2
    assert docker_client.images.get(DEFAULT_IMAGE).id == image.id
    done = subprocess.run([*AGENTGYM, "sandbox", "build-image", DEFAULT_IMAGE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split()[:2] == [DEFAULT_IMAGE, image.id]


def test_default_image_contents(docker_client) -> None:
    out = docker_client.containers.run(
        DEFAULT_IMAGE, ["sh", "-c", f"id -un; {SANDBOX_PYTHON} --version; stat -c %u /workspace; pwd"],
        network_mode="none", remove=True,
    ).decode()
    user, python, owner, cwd = out.split("\n")[:4]
    assert user == "agent" and python.startswith("Python 3.11") and owner == "1000" and cwd == "/workspace"


def test_unknown_pip_package_fails_fast_with_a_clear_error(docker_client) -> None:
    started = time.monotonic()
    with pytest.raises(SandboxError, match="cannot download wheels for agentgym-no-such-package-zz"):
        build_image("agentgym-test/never:latest", pip=["agentgym-no-such-package-zz==1.0"], client=docker_client)
    assert time.monotonic() - started < 60  # before any debootstrap
    done = subprocess.run([*AGENTGYM, "sandbox", "build-image", "agentgym-test/never:latest", "--pip", "agentgym-no-such-package-zz"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "cannot download wheels" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_unknown_debian_package_is_named_in_the_error(docker_client) -> None:
    with pytest.raises(SandboxError, match="Couldn't find these debs: agentgym-no-such-deb.*--apt"):
        build_image("agentgym-test/never:latest", apt=["agentgym-no-such-deb"], client=docker_client)
    with pytest.raises(SandboxError, match="not a Debian package name"):
        build_image("agentgym-test/never:latest", apt=["bad name; rm -rf /"], client=docker_client)


def test_missing_image_says_how_to_build_it(docker_client) -> None:
    from agentgym.sandboxes.docker_backend import DockerBackend

    with pytest.raises(SandboxError, match="agentgym sandbox build-image agentgym-test/never-built:1"):
        DockerBackend().create(SandboxSpec(image="agentgym-test/never-built:1"))


@pytest.mark.slow
def test_pip_image_installs_wheels_and_rebuilds_only_on_a_new_recipe(docker_client) -> None:
    from agentgym.sandboxes.docker_backend import DockerBackend

    build_image(PIP_IMAGE, pip=["six==1.16.0"], client=docker_client)  # builds, or finds it from an earlier run
    first = docker_client.images.get(PIP_IMAGE)
    started = time.monotonic()
    build_image(PIP_IMAGE, pip=["six==1.16.0"], client=docker_client)
    assert time.monotonic() - started < 2 and docker_client.images.get(PIP_IMAGE).id == first.id

    backend = DockerBackend()
    with backend.create(SandboxSpec(image=PIP_IMAGE)) as box:
        result = box.exec([SANDBOX_PYTHON, "-c", "import six; print(six.__version__)"])
        assert result.stdout == "1.16.0\n", result.stderr

    build_image(PIP_IMAGE, pip=["six==1.15.0"], client=docker_client)
    second = docker_client.images.get(PIP_IMAGE)
    assert second.id != first.id and second.labels[RECIPE_LABEL] == ImageRecipe(pip=("six==1.15.0",)).key()
    with DockerBackend().create(SandboxSpec(image=PIP_IMAGE)) as box:
        assert box.exec([SANDBOX_PYTHON, "-c", "import six; print(six.__version__)"]).stdout == "1.15.0\n"
