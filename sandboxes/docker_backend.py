"""Docker sandboxes: one long-lived, locked-down container per sandbox; commands run through docker exec.

How the limits hold (see docs/sandboxes.md):
- Container: `init=True`, no network, every capability dropped, no-new-privileges, pids/memory/cpu limits
  (memory and memory+swap equal: no swap), a read-only root filesystem, and size-limited tmpfs mounts for
  the workdir and /tmp, which is what bounds the disk (tmpfs pages count against the memory limit too).
- The container's own processes (docker-init and `sleep infinity`) run as a keeper uid that is not the
  sandbox user, so `kill -9 -1` run as the sandbox user kills every command process and leaves the
  container alive: that is how a timeout stops a command that ignores SIGTERM or spawns children.
- Files go in and out through `tar`/`cat` execs: the engine's archive API cannot write into a read-only
  container and does not see tmpfs mounts. snapshot() is therefore a tar of the workdir and /tmp kept on
  the host (a `docker commit` would capture nothing: the root filesystem is read-only).
"""

from __future__ import annotations

import heapq
import itertools
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentgym.cache import cache_root, recipe_key
from agentgym.sandboxes.base import Command, Sandbox, SandboxBackend, SandboxClosedError, SandboxError, SandboxInfo
from agentgym.sandboxes.images import ensure_default_image
from agentgym.sandboxes.output import CappedOutput
from agentgym.sandboxes.owner import Owner, current_owner
from agentgym.sandboxes.spec import ExecResult, SandboxSpec

if TYPE_CHECKING:
    import docker

SANDBOX_LABEL = "agentgym.sandbox"
# The uid of the container's init and sleep: any uid but the sandbox user's, and never root.
KEEPER_UID = 65534
# Network used when a spec asks for one; this project's engines run with --bridge=none and have none.
NETWORK_ENV_VAR = "AGENTGYM_SANDBOX_NETWORK"
_STREAM_STDOUT, _STREAM_STDERR = 1, 2
_RECV_BYTES = 1 << 18
# How long a killed command may take to release its output stream before the container is replaced.
_KILL_GRACE_S = 5.0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _docker_host() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


class DockerBackend(SandboxBackend):
    """Sandboxes as Docker containers on the engine that DOCKER_HOST (or the default socket) names."""

    name = "docker"

    def __init__(self) -> None:
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._image_ids: dict[str, str] = {}
        self._seeds: dict[tuple[str, str], Path | None] = {}

    # --- engine ---
    def unavailable_reason(self) -> str | None:
        """None when an engine answers a ping within a few seconds."""
        try:
            import docker
        except ImportError:
            return "the docker Python package is missing; install it with `pip install docker`"
        try:
            # A client of its own: the short timeout must not stay on the one that runs builds and execs.
            probe = docker.from_env(timeout=3)
            try:
                probe.ping()
            finally:
                probe.close()
        except Exception as exc:  # noqa: BLE001 - every failure to reach the engine reads the same
            return f"cannot connect to the Docker engine at {_docker_host()} ({_one_line(exc)}); start it with scripts/start-dockerd.sh"
        return None

    def client(self, timeout: int = 120) -> docker.DockerClient:
        """The backend's Docker client (made once; a connection pool shared by every sandbox)."""
        with self._lock:
            if self._client is None:
                try:
                    import docker
                except ImportError as exc:
                    raise SandboxError("the docker Python package is missing; install it with `pip install docker`") from exc
                try:
                    self._client = docker.from_env(timeout=timeout, max_pool_size=64)
                except Exception as exc:  # noqa: BLE001
                    raise SandboxError(
                        f"cannot connect to the Docker engine at {_docker_host()} ({_one_line(exc)}); "
                        "start it with scripts/start-dockerd.sh"
                    ) from exc
            return self._client

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
        if spec.wall_clock_s is not None:
            _REAPER.watch(sandbox, sandbox._deadline)
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
        _remove_container(self.client().api, sandbox_id)

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
            raise SandboxError(f"cannot inspect image {name!r}: {_one_line(exc)}") from exc
        self._image_ids[name] = found.id
        return found.id

    def _pull(self, name: str) -> Any:
        from docker.utils import parse_repository_tag

        repository, tag = parse_repository_tag(name)
        try:
            return self.client().images.pull(repository, tag=tag or "latest")
        except Exception as exc:  # noqa: BLE001
            raise SandboxError(
                f"image {name!r} is not on this machine and cannot be pulled ({_one_line(exc)}); "
                f"build it offline with `agentgym sandbox build-image {name}`"
            ) from exc

    def _workdir_seed(self, image_id: str, workdir: str, container_id: str) -> Path | None:
        """A tar of what the image holds at `workdir` (hidden by the tmpfs), or None when it holds nothing.

        Made once per image and workdir from the first container (the archive API reads the image's
        layers beneath the tmpfs) and kept in the cache, keyed by the image id.
        """
        key = (image_id, workdir)
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
            stream, _ = self.client().api.get_archive(container_id, workdir)
            with open(partial, "wb") as fh:
                for chunk in stream:
                    fh.write(chunk)
        except docker.errors.NotFound:
            partial.unlink(missing_ok=True)
            stem.with_suffix(".empty").touch()
            return None
        with tarfile.open(partial) as tar:
            # The first member is the workdir itself; a second one means the image has content there.
            members = itertools.islice(iter(tar), 2)
            has_content = len(list(members)) > 1
        if not has_content:
            partial.unlink()
            stem.with_suffix(".empty").touch()
            return None
        return partial.replace(stem.with_suffix(".tar"))


class DockerSandbox(Sandbox):
    """One container: a keeper process under docker-init, and every command as a `docker exec`."""

    backend = "docker"

    def __init__(self, owner: DockerBackend, spec: SandboxSpec, name: str, image_id: str) -> None:
        super().__init__(spec, name)
        self._backend = owner
        self._api = owner.client().api
        self._image_id = image_id
        self._container_id = ""
        self._oom_file: Path | None = None
        self._created = time.time()
        self._deadline = time.monotonic() + spec.wall_clock_s if spec.wall_clock_s is not None else None
        self._expired = False
        self._snapshot_dir: Path | None = None
        self._snapshots: dict[str, Path] = {}
        self._restore_point: Path | None = None
        self._lock = threading.Lock()

    # --- container ---
    def _start_container(self) -> None:
        """Create and start this sandbox's container, then put the workdir's initial files in."""
        import docker

        spec = self.spec
        keeper = KEEPER_UID if spec.uid != KEEPER_UID else KEEPER_UID - 1
        owner_ids = f"uid={spec.uid},gid={spec.gid}"
        tmpfs = {"/tmp": f"size={spec.disk_mb}m,{owner_ids},mode=1777"}
        tmpfs[spec.workdir] = f"size={spec.disk_mb}m,{owner_ids},mode=0755"
        labels = {
            SANDBOX_LABEL: "1",
            "agentgym.backend": "docker",
            "agentgym.spec": spec.key(),
            "agentgym.image": spec.image or "default",
            "agentgym.created": f"{self._created:.3f}",
            **current_owner().labels(),
        }
        try:
            host_config = self._api.create_host_config(
                init=True,
                network_mode=self._network_mode(),
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                pids_limit=spec.pids,
                mem_limit=f"{spec.memory_mb}m",
                memswap_limit=f"{spec.memory_mb}m",
                nano_cpus=int(spec.cpus * 1e9),
                read_only=True,
                tmpfs=tmpfs,
                shm_size=f"{min(spec.disk_mb, 64)}m",
            )
            container = self._api.create_container(
                self._image_id,
                command=["sleep", "infinity"],
                name=self.id,
                user=f"{keeper}:{keeper}",
                environment={"HOME": spec.workdir, **spec.env},
                working_dir=spec.workdir,
                labels=labels,
                host_config=host_config,
            )
            self._container_id = container["Id"]
            self._api.start(self._container_id)
        except docker.errors.APIError as exc:
            raise SandboxError(f"cannot start a sandbox container from image {spec.image or 'default'}: {_one_line(exc)}") from exc
        self._oom_file = _find_oom_file(self._container_id)
        seed = self._backend._workdir_seed(self._image_id, spec.workdir, self._container_id)
        if seed is not None:
            self._untar_file(seed, spec.workdir, strip=1)

    def _network_mode(self) -> str:
        if not self.spec.network:
            return "none"
        network = os.environ.get(NETWORK_ENV_VAR, "bridge")
        if not self._api.networks(names=[network]):
            raise SandboxError(
                f"the spec asks for network but this Docker engine has no {network!r} network "
                f"(dockerd --bridge=none?); create one or name it in ${NETWORK_ENV_VAR}"
            )
        return network

    def _replace_container(self, restore: Path | None) -> None:
        """Remove the container and start a fresh one under the same name, then put `restore` back."""
        self._check_open()
        _remove_container(self._api, self._container_id or self.id)
        self._container_id = ""
        self._start_container()
        if restore is not None:
            self._untar_file(restore, "/", strip=0)

    # --- commands ---
    def exec(
        self,
        cmd: Command,
        timeout: float | None = None,
        workdir: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        """Run `cmd` as the sandbox user to completion, or kill every process of it at the timeout."""
        self._check_alive()
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        limit = self.spec.exec_timeout_s if timeout is None else timeout
        started = time.monotonic()
        deadline = started + limit
        if self._deadline is not None:
            deadline = min(deadline, self._deadline)
        stdout, stderr = CappedOutput(self.spec.output_cap_bytes), CappedOutput(self.spec.output_cap_bytes)
        oom_before = _read_oom_kills(self._oom_file)
        exit_code, timed_out, note = self._run(
            argv, stdout.feed, stderr.feed, deadline,
            workdir=self.resolve(workdir) if workdir else None,
            env=env,
        )
        duration = time.monotonic() - started
        oom_after = _read_oom_kills(self._oom_file)
        if oom_before is not None and oom_after is not None:
            oom_killed = oom_after > oom_before
        else:
            # No cgroup file to read (remote engine): a SIGKILL that was not ours is most likely the OOM killer.
            oom_killed = exit_code == 137 and not timed_out
        if note:
            stderr.feed(note.encode())
        return ExecResult(
            exit_code=exit_code, stdout=stdout.text(), stderr=stderr.text(), timed_out=timed_out,
            duration=duration, oom_killed=oom_killed,
            stdout_truncated=stdout.dropped, stderr_truncated=stderr.dropped,
        )

    def _run(
        self,
        argv: list[str],
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        deadline: float,
        workdir: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: Iterable[bytes] | None = None,
    ) -> tuple[int, bool, str]:
        """One docker exec with its output streamed to callbacks: (exit code, timed out, note for stderr)."""
        import docker

        try:
            # uid:gid always: a bare uid the image's passwd does not know would run with gid 0.
            exec_id = self._api.exec_create(
                self._container_id, argv, stdin=stdin is not None, user=f"{self.spec.uid}:{self.spec.gid}",
                environment=dict(env) if env else None, workdir=workdir,
            )["Id"]
            response = self._api.exec_start(exec_id, socket=True)
        except docker.errors.NotFound as exc:
            raise self._gone(exc) from exc
        except docker.errors.APIError as exc:
            raise SandboxError(f"docker exec in sandbox {self.id} failed: {_one_line(exc)}") from exc
        sock: socket.socket = getattr(response, "_sock", response)
        timed_out = False
        try:
            if stdin is not None:
                timed_out = not _send_all(sock, stdin, deadline)
            if not timed_out:
                timed_out = not _pump(sock, deadline, on_stdout, on_stderr)
            note = ""
            if timed_out:
                note = self._kill_commands(sock, on_stdout, on_stderr)
        finally:
            response.close()
            sock.close()
        return self._exit_code(exec_id, timed_out), timed_out, note

    def _kill_commands(self, sock: socket.socket, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]) -> str:
        """Kill every process of the sandbox user; replace the container when that cannot be done."""
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self._expire()  # the sandbox's lifetime is over: removing the container kills everything
            return ""
        # kill(-1) as the sandbox user signals all its processes (children that left the process group
        # too) but not the keeper, which runs as another uid, so the container and its files stay.
        killed = self._quiet_exec(["sh", "-c", "kill -9 -1"]) in (0, 1)
        if killed and _pump(sock, time.monotonic() + _KILL_GRACE_S, on_stdout, on_stderr):
            return ""
        # The kill could not start (a fork bomb holds every pid) or the stream stayed open.
        with self._lock:
            if self.closed:
                return ""
            self._replace_container(self._restore_point)
        return f"\n[agentgym: the timed-out command could not be killed in place; sandbox {self.id} was replaced by a fresh one]\n"

    def _quiet_exec(self, argv: list[str]) -> int:
        """Exit code of a short helper exec whose output is not needed; -1 when it could not run."""
        import docker

        try:
            exec_id = self._api.exec_create(self._container_id, argv, user=f"{self.spec.uid}:{self.spec.gid}")["Id"]
            self._api.exec_start(exec_id)
            code = self._api.exec_inspect(exec_id).get("ExitCode")
        except docker.errors.APIError:
            return -1
        return -1 if code is None else int(code)

    def _exit_code(self, exec_id: str, timed_out: bool) -> int:
        import docker

        # The stream can end a moment before the engine records the exit code.
        for attempt in range(200):
            try:
                info = self._api.exec_inspect(exec_id)
            except docker.errors.NotFound as exc:
                if timed_out:
                    return 137
                raise self._gone(exc) from exc
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            time.sleep(0.001 if attempt < 20 else 0.01)
        return 137 if timed_out else -1

    def _gone(self, exc: BaseException) -> SandboxError:
        if self.closed:
            return SandboxClosedError(f"sandbox {self.id} was closed while the command ran")
        return SandboxError(f"the container of sandbox {self.id} is gone ({_one_line(exc)}); create a new sandbox")

    def _check_alive(self) -> None:
        """Raise for a closed sandbox, and close one whose wall-clock lifetime has run out."""
        if self._expired:
            raise SandboxClosedError(f"sandbox {self.id} reached its wall-clock limit of {self.spec.wall_clock_s:g}s and was removed")
        self._check_open()
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self._expire()
            self._check_alive()

    def _expire(self) -> None:
        self._expired = True
        self.close()

    # --- files ---
    def write_file(self, path: str, data: bytes | str) -> None:
        """Create or replace a file (parents created), owned by the sandbox user."""
        target = self.resolve(path)
        payload = data.encode() if isinstance(data, str) else bytes(data)
        parent = target.rsplit("/", 1)[0] or "/"
        self._checked(["sh", "-c", 'mkdir -p -- "$1" && cat > "$2"', "sh", parent, target], f"write {target}", stdin=[payload])

    def read_file(self, path: str) -> bytes:
        """A file's bytes; SandboxError if it does not exist or is not a regular file."""
        target = self.resolve(path)
        script = 'if [ -f "$1" ]; then exec cat -- "$1"; elif [ -e "$1" ]; then echo "not a regular file" >&2; ' \
                 'else echo "no such file" >&2; fi; exit 3'
        return self._checked(["sh", "-c", script, "sh", target], f"read {target}")

    def put_archive(self, path: str, tar_bytes: bytes) -> None:
        """Unpack a tar archive into directory `path` (created if missing), as the sandbox user."""
        target = self.resolve(path)
        self._checked(["sh", "-c", 'mkdir -p -- "$1" && tar -x -f - -C "$1"', "sh", target], f"unpack into {target}", stdin=[tar_bytes])

    def get_archive(self, path: str) -> bytes:
        """A tar archive of `path` with its basename as the top entry."""
        target = self.resolve(path)
        parent, _, base = target.rpartition("/")
        return self._checked(["tar", "-c", "-f", "-", "-C", parent or "/", base or "."], f"archive {target}")

    def _checked(self, argv: list[str], what: str, stdin: Iterable[bytes] | None = None) -> bytes:
        """Run a file helper; its whole stdout, or SandboxError with its stderr."""
        self._check_alive()
        out = bytearray()
        err = CappedOutput(4096)
        code, timed_out, _ = self._run(argv, out.extend, err.feed, time.monotonic() + self.spec.exec_timeout_s, stdin=stdin)
        if timed_out or code != 0:
            reason = "timed out" if timed_out else (err.text().strip().splitlines() or [f"exit code {code}"])[-1]
            raise SandboxError(f"cannot {what} in sandbox {self.id}: {reason}")
        return bytes(out)

    def _untar_file(self, tarball: Path, directory: str, strip: int) -> None:
        """Unpack a host tar file into the sandbox, streamed in chunks."""
        def chunks() -> Iterable[bytes]:
            with open(tarball, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    yield chunk

        argv = ["tar", "-x", "-f", "-", "-C", directory]
        if strip:
            argv.append(f"--strip-components={strip}")
        self._checked(argv, f"restore files into {directory}", stdin=chunks())

    # --- lifecycle ---
    def reset(self) -> None:
        """A fresh container from the image, with the files of the last restore() point if any."""
        self._check_alive()
        with self._lock:
            self._replace_container(self._restore_point)

    def snapshot(self) -> str:
        """Record the files of the workdir and /tmp (processes are not recorded); returns the snapshot id."""
        self._check_alive()
        if self._snapshot_dir is None:
            self._snapshot_dir = Path(tempfile.mkdtemp(prefix=f"{self.id}-snapshots-"))
        snapshot_id = f"{self.id}-snap{len(self._snapshots) + 1}"
        path = self._snapshot_dir / f"{snapshot_id}.tar"
        err = CappedOutput(4096)
        dirs = sorted({self.spec.workdir.lstrip("/"), "tmp"})
        with open(path, "wb") as fh:
            code, timed_out, _ = self._run(
                ["tar", "-c", "-f", "-", "-C", "/", *dirs], fh.write, err.feed, time.monotonic() + self.spec.exec_timeout_s
            )
        # tar exits 1 when a file changed while it was read: the snapshot is still usable.
        if timed_out or code not in (0, 1):
            path.unlink(missing_ok=True)
            raise SandboxError(f"cannot snapshot sandbox {self.id}: {err.text().strip() or f'tar exit code {code}'}")
        self._snapshots[snapshot_id] = path
        return snapshot_id

    def restore(self, snapshot_id: str) -> None:
        """Go back to the files recorded by snapshot() in a fresh container; later reset()s return here."""
        self._check_alive()
        path = self._snapshots.get(snapshot_id)
        if path is None:
            raise SandboxError(f"sandbox {self.id} has no snapshot {snapshot_id!r} (known: {', '.join(self._snapshots) or 'none'})")
        with self._lock:
            self._replace_container(path)
            self._restore_point = path

    def _close(self) -> None:
        try:
            _remove_container(self._api, self._container_id or self.id)
        finally:
            if self._snapshot_dir is not None:
                shutil.rmtree(self._snapshot_dir, ignore_errors=True)


def _remove_container(api: Any, container: str) -> None:
    """Kill and remove a container; one that is gone (or already being removed) is fine."""
    import docker

    try:
        api.remove_container(container, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code == 409 and "in progress" in str(exc):
            return
        raise SandboxError(f"cannot remove sandbox container {container}: {_one_line(exc)}") from exc


def _send_all(sock: socket.socket, chunks: Iterable[bytes], deadline: float) -> bool:
    """Write stdin and close our side so the command sees end of file; False at the deadline."""
    try:
        for chunk in chunks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            sock.settimeout(remaining)
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
    except socket.timeout:
        return False
    return True


def _pump(sock: socket.socket, deadline: float, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]) -> bool:
    """Read the exec's multiplexed stream to its end; False when the deadline came first.

    Each frame is an 8-byte header (stream type, 3 zero bytes, big-endian length) and its payload.
    Frames are handed on as they come, so memory stays bounded whatever the output's size.
    """
    buffer = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(remaining)
        try:
            data = sock.recv(_RECV_BYTES)
        except socket.timeout:
            return False
        except OSError:
            return True  # the engine closed the stream (the container went away)
        if not data:
            return True
        buffer += data
        pos, end = 0, len(buffer)
        while end - pos >= 8:
            size = int.from_bytes(buffer[pos + 4:pos + 8], "big")
            if end - pos - 8 < size:
                break
            kind = buffer[pos]
            payload = bytes(buffer[pos + 8:pos + 8 + size])
            (on_stderr if kind == _STREAM_STDERR else on_stdout)(payload)
            pos += 8 + size
        del buffer[:pos]


def _find_oom_file(container_id: str) -> Path | None:
    """The host cgroup file that counts OOM kills in the container (cgroup v1 or v2), if this host has it."""
    candidates = [
        Path(f"/sys/fs/cgroup/memory/docker/{container_id}/memory.oom_control"),
        Path(f"/sys/fs/cgroup/memory/system.slice/docker-{container_id}.scope/memory.oom_control"),
        Path(f"/sys/fs/cgroup/docker/{container_id}/memory.events"),
        Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.events"),
    ]
    for path in candidates:
        if _read_oom_kills(path) is not None:
            return path
    return None


def _read_oom_kills(path: Path | None) -> int | None:
    """The `oom_kill` counter of a memory.oom_control / memory.events file; None when unreadable."""
    if path is None:
        return None
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return None


class _Reaper:
    """One daemon thread that closes sandboxes whose wall-clock lifetime ran out, even when none is used."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref[DockerSandbox]]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, sandbox: DockerSandbox, deadline: float | None) -> None:
        """Close `sandbox` at `deadline` (time.monotonic()) unless it is closed before."""
        if deadline is None:
            return
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._counter), weakref.ref(sandbox)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="agentgym-docker-reaper", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                _, _, ref = heapq.heappop(self._heap)
            sandbox = ref()
            if sandbox is not None and not sandbox.closed:
                try:
                    sandbox._expire()
                except Exception:  # noqa: BLE001 - a failed removal is left to `agentgym sandbox gc`
                    pass


_REAPER = _Reaper()
