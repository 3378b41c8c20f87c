"""The Docker backend: sandboxes as containers on the engine that DOCKER_HOST (or the default socket) names.

This module talks to the engine (client, images, the workdir seeds of images) and makes, lists and
removes sandboxes; docker_sandbox.py is one sandbox and how its limits hold.
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from agentgym.cache import cache_root, recipe_key
from agentgym.sandboxes.base import SandboxBackend, SandboxError, SandboxInfo
from agentgym.sandboxes.docker_reaper import REAPER
from agentgym.sandboxes.docker_sandbox import SANDBOX_LABEL, DockerSandbox, remove_container
from agentgym.sandboxes.images import ensure_default_image
from agentgym.sandboxes.messages import one_line
from agentgym.sandboxes.owner import Owner
from agentgym.sandboxes.spec import SandboxSpec

if TYPE_CHECKING:
    import docker


_NO_SDK = "the docker Python package is missing; install it with `pip install docker`"
# The longest the engine may take over one call (a container's creation or removal, an image lookup).
CALL_TIMEOUT_S = 120
# The longest reading an image's files at a workdir may take in all (once per image and workdir).
SEED_READ_S = 300


def _cannot_connect(exc: BaseException) -> str:
    """Why no engine answered, and how to start one."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return f"cannot connect to the Docker engine at {host} ({one_line(exc)}); start it with scripts/start-dockerd.sh"


class DockerBackend(SandboxBackend):
    """Sandboxes as Docker containers on the engine that DOCKER_HOST (or the default socket) names."""

    name = "docker"

    def __init__(self) -> None:
        self._clients: dict[float, docker.DockerClient] = {}
        self._lock = threading.Lock()
        self._image_ids: dict[str, str] = {}
        self._seeds: dict[tuple[str, str], Path | None] = {}
        # First containers of an image made at once (a pool's worker and its caller) must not extract
        # its seed side by side: they would write and rename the same partial file.
        self._seed_lock = threading.Lock()

    # --- engine ---
    def unavailable_reason(self) -> str | None:
        """None when an engine answers a ping within a few seconds."""
        try:
            import docker
        except ImportError:
            return _NO_SDK
        try:
            # A client of its own: the short timeout must not stay on the one that runs builds and execs.
            probe = docker.from_env(timeout=3)
            try:
                probe.ping()
            finally:
                probe.close()
        except Exception as exc:  # noqa: BLE001 - every failure to reach the engine reads the same
            return _cannot_connect(exc)
        return None

    def client(self, timeout: float = CALL_TIMEOUT_S) -> docker.DockerClient:
        """The backend's Docker client whose every call waits at most `timeout` seconds for the engine.

        One per timeout, made once: a connection pool shared by every sandbox. The SDK takes the
        timeout per client only, so the short calls of a kill get a client of their own.
        """
        with self._lock:
            if timeout not in self._clients:
                try:
                    import docker
                except ImportError as exc:
                    raise SandboxError(_NO_SDK) from exc
                try:
                    self._clients[timeout] = docker.from_env(timeout=timeout, max_pool_size=64)
                except Exception as exc:  # noqa: BLE001
                    raise SandboxError(_cannot_connect(exc)) from exc
            return self._clients[timeout]

    # --- sandboxes ---
    def create(self, spec: SandboxSpec) -> DockerSandbox:
        """A new running container for `spec` (the default image is built on first use)."""
        image_id = self._image_id(spec.image)
        sandbox = DockerSandbox(self, spec, f"agentgym-{secrets.token_hex(6)}", image_id)
        try:
            sandbox._start_container()
        except BaseException:
            sandbox.close()
            raise
        REAPER.watch(sandbox, sandbox.expires_at)
        return sandbox

    def list(self) -> list[SandboxInfo]:
        """Every agentgym container on this engine, running or not, whoever made it."""
        api = self.client().api
        infos = []
        for row in api.containers(all=True, filters={"label": f"{SANDBOX_LABEL}=1"}):
            labels = row.get("Labels") or {}
            owner = Owner.from_labels(labels)
            try:
                created = float(labels.get("agentgym.created", row.get("Created", 0)))
            except ValueError:
                created = float(row.get("Created", 0))
            names = row.get("Names") or [row["Id"]]
            infos.append(SandboxInfo(
                id=names[0].lstrip("/"), backend=self.name, owner_pid=owner.pid, owner_alive=owner.alive(),
                created=created, spec_key=labels.get("agentgym.spec", ""), status=row.get("State", ""),
            ))
        return infos

    def remove(self, sandbox_id: str) -> None:
        """Kill and remove a sandbox's container; a container that is already gone is not an error."""
        remove_container(self.client().api, sandbox_id)

    # --- images ---
    def _image_id(self, image: str | None) -> str:
        """The id of the image to run: the default one (built if missing), a local one, or one pulled."""
        import docker

        name = image or ensure_default_image()
        if name in self._image_ids:
            return self._image_ids[name]
        client = self.client()
        try:
            found = client.images.get(name)
        except docker.errors.ImageNotFound:
            found = self._pull(name)
        except docker.errors.APIError as exc:
            raise SandboxError(f"cannot inspect image {name!r}: {one_line(exc)}") from exc
        self._image_ids[name] = found.id
        return found.id

    def _pull(self, name: str) -> Any:
        from docker.utils import parse_repository_tag

        repository, tag = parse_repository_tag(name)
        try:
            return self.client().images.pull(repository, tag=tag or "latest")
        except Exception as exc:  # noqa: BLE001
            raise SandboxError(
                f"image {name!r} is not on this machine and cannot be pulled ({one_line(exc)}); "
                f"build it offline with `agentgym sandbox build-image {name}`"
            ) from exc

    def _workdir_seed(self, image_id: str, workdir: str, container_id: str) -> Path | None:
        """A tar of what the image holds at `workdir` (hidden by the tmpfs), or None when it holds nothing.

        Made once per image and workdir from the first container (the archive API reads the image's
        layers beneath the tmpfs) and kept in the cache, keyed by the image id.
        """
        key = (image_id, workdir)
        with self._seed_lock:
            if key in self._seeds:
                return self._seeds[key]
            seeds = cache_root() / "sandbox-seeds"
            seeds.mkdir(parents=True, exist_ok=True)
            stem = seeds / f"{image_id.split(':')[-1][:16]}-{recipe_key(workdir)}"
            seed: Path | None
            if stem.with_suffix(".tar").is_file():
                seed = stem.with_suffix(".tar")
            elif stem.with_suffix(".empty").is_file():
                seed = None
            else:
                seed = self._extract_seed(container_id, workdir, stem)
            self._seeds[key] = seed
            return seed

    def _extract_seed(self, container_id: str, workdir: str, stem: Path) -> Path | None:
        import tarfile

        import docker

        partial = stem.with_suffix(f".partial-{os.getpid()}")
        try:
            with open(partial, "wb") as fh:
                self._copy_archive(container_id, workdir, fh)
        except docker.errors.NotFound:
            partial.unlink(missing_ok=True)
            stem.with_suffix(".empty").touch()
            return None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        with tarfile.open(partial) as tar:
            # The first member is the workdir itself; a second one means the image has content there.
            members = itertools.islice(iter(tar), 2)
            has_content = len(list(members)) > 1
        if not has_content:
            partial.unlink()
            stem.with_suffix(".empty").touch()
            return None
        return partial.replace(stem.with_suffix(".tar"))

    def _copy_archive(self, container_id: str, path: str, out: IO[bytes]) -> None:
        """Write the engine's tar of `path` in a container to `out`; each read and the whole have a deadline.

        The SDK's get_archive turns its socket's timeout off while it streams, so a stalled engine would
        hang it: this is the same request with the client's timeout left on every read.
        """
        import docker
        import requests

        api = self.client().api
        deadline = time.monotonic() + SEED_READ_S
        try:
            response = api._get(api._url("/containers/{0}/archive", container_id), params={"path": path}, stream=True)
            try:
                api._raise_for_status(response)
                for chunk in response.iter_content(1 << 20):
                    if time.monotonic() > deadline:
                        raise SandboxError(f"reading {path} of image container {container_id[:12]} took over {SEED_READ_S}s")
                    out.write(chunk)
            finally:
                response.close()
        except docker.errors.NotFound:
            raise
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise SandboxError(f"cannot read {path} of container {container_id[:12]} from the engine: {one_line(exc)}") from exc

