"""One Docker sandbox: a long-lived, locked-down container, and every command as a `docker exec` in it.

How the limits hold (see docs/sandboxes.md):
- Container: `init=True`, no network, every capability dropped, no-new-privileges, pids/memory/cpu limits
  (memory and memory+swap equal: no swap), a read-only root filesystem, and size-limited tmpfs mounts for
  the workdir and /tmp, which is what bounds the disk (tmpfs pages count against the memory limit too).
- The container's own processes (docker-init and `sleep infinity`) run as a keeper uid that is not the
  sandbox user, so `kill -9 -1` run as the sandbox user kills every command process and leaves the
  container alive: that is how a timeout stops a command that ignores SIGTERM or spawns children.
- A command still running at its timeout is killed by a second exec started detached (`kill -9 -1` as the
  sandbox user) while the first one's output is read on to its end: the engine does not finish an attached
  exec while another exec's output waits unread, so waiting on an attached kill would never end under a
  command that floods its output. Every call into the engine has a deadline; a kill not confirmed within
  a few seconds makes the sandbox replace its container.
- Files go in and out through `tar`/`cat` execs: the engine's archive API cannot write into a read-only
  container and does not see tmpfs mounts. snapshot() is therefore a tar of the workdir, /tmp and the
  repository kept on the host (a `docker commit` would capture nothing: the root filesystem is read-only).
- A spec's repository (`repo`) is one more tmpfs (exec allowed) at repo.path, unpacked at every start from
  its pristine tar: the image's own files at that path (read once per image beneath the tmpfs, like the
  workdir's) or repo.source packed on the host. reset() is a fresh container, so the repository comes
  back pristine whatever the agent did to it, .git included.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentgym.sandboxes.base import Sandbox, SandboxClosedError, SandboxError
from agentgym.sandboxes.docker_exec import Demuxer, pump, send_all
from agentgym.sandboxes.docker_oom import find_oom_file, read_oom_kills
from agentgym.sandboxes.messages import last_line, one_line
from agentgym.sandboxes.output import CappedOutput
from agentgym.sandboxes.owner import current_owner
from agentgym.sandboxes.repo_source import PristineTar, pristine_tar
from agentgym.sandboxes.spec import SandboxSpec

if TYPE_CHECKING:
    from agentgym.sandboxes.docker_backend import DockerBackend

log = logging.getLogger(__name__)

SANDBOX_LABEL = "agentgym.sandbox"
# The uid of the container's init and sleep: any uid but the sandbox user's, and never root.
KEEPER_UID = 65534
# Network used when a spec asks for one; this project's engines run with --bridge=none and have none.
NETWORK_ENV_VAR = "AGENTGYM_SANDBOX_NETWORK"
# How long a timed-out command may take to be confirmed dead (the kill exec done, its output stream ended)
# before the container is replaced instead.
_KILL_GRACE_S = 5.0
# The longest one engine call of a kill may take: a client of its own, so none waits the default 120 s.
_CONTROL_TIMEOUT_S = 5
# How long the engine may take to record an exec's exit code after its stream ended.
_EXIT_CODE_WAIT_S = 2.0
# The longest unpacking (or packing, for a snapshot) a repository may take: a few hundred MB for SWE-bench's
# largest, whatever exec_timeout_s is.
SEED_TIMEOUT_S = 300.0
_REPLACED_NOTE = "\n[agentgym: the timed-out command could not be killed in place; sandbox {id} was replaced by a fresh one]\n"


class DockerSandbox(Sandbox):
    """One container: a keeper process under docker-init, and every command as a `docker exec`."""

    backend = "docker"

    def __init__(self, owner: DockerBackend, spec: SandboxSpec, name: str, image_id: str) -> None:
        super().__init__(spec, name)
        self._backend = owner
        self._api = owner.client().api
        self._control = owner.client(_CONTROL_TIMEOUT_S).api
        self._image_id = image_id
        self._container_id = ""
        self._oom_file: Path | None = None
        self._created = time.time()
        self._snapshot_dir: Path | None = None
        self._snapshots: dict[str, Path] = {}
        self._restore_point: Path | None = None
        self._repo: PristineTar | None = None  # the repository's pristine tar, found at the first start
        self._lock = threading.Lock()

    # --- container ---
    def _start_container(self, seed: bool = True) -> None:
        """Create and start this sandbox's container, then (`seed`) put the workdir's and the repository's files in."""
        import docker

        spec = self.spec
        keeper = KEEPER_UID if spec.uid != KEEPER_UID else KEEPER_UID - 1
        owner_ids = f"uid={spec.uid},gid={spec.gid}"
        tmpfs = {"/tmp": f"size={spec.disk_mb}m,{owner_ids},mode=1777"}
        tmpfs[spec.workdir] = f"size={spec.disk_mb}m,{owner_ids},mode=0755"
        if spec.repo is not None:
            # Docker's tmpfs is noexec by default; a repository runs its scripts and loads the .so files it builds.
            tmpfs[spec.repo.path] = f"size={spec.disk_mb}m,{owner_ids},mode=0755,exec"
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
            raise SandboxError(f"cannot start a sandbox container from image {spec.image or 'default'}: {one_line(exc)}") from exc
        self._oom_file = find_oom_file(self._container_id)
        if not seed:
            return
        # A repository at the workdir replaces what the image holds there.
        if spec.repo is None or spec.repo.path != spec.workdir:
            workdir_seed = self._backend._workdir_seed(self._image_id, spec.workdir, self._container_id)
            if workdir_seed is not None:
                self._untar(_file_chunks(workdir_seed), spec.workdir, strip=1)
        if spec.repo is not None:
            repo = self._repo_tar()
            # -p: the pristine modes exactly, not filtered by the umask.
            self._untar(repo.chunks(), spec.repo.path, strip=repo.strip, extra=["-p"], timeout=self._bulk_timeout())

    def _repo_tar(self) -> PristineTar:
        """The repository's pristine tar: from repo.source, or what the image holds at repo.path (read once per image)."""
        if self._repo is None:
            repo = self.spec.repo
            assert repo is not None
            if repo.source is None:
                found = self._backend._workdir_seed(self._image_id, repo.path, self._container_id)
                if found is None:
                    raise SandboxError(f"image {self.spec.image or 'default'} holds nothing at {repo.path} and repo.source "
                                       "is not set; build the repository into the image or name its host copy in repo.source")
                tar = PristineTar(found, strip=1)
                try:
                    tar.check_fits(self.spec.disk_mb, repo.path)
                except SandboxError:
                    tar.close()
                    raise
            else:
                tar = pristine_tar(repo.source, self.spec.disk_mb, repo.path)
            self._repo = tar
        return self._repo

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
        remove_container(self._api, self._container_id or self.id)
        self._container_id = ""
        # A snapshot holds the workdir, /tmp and the repository whole: seeding under it would bring back what it deleted.
        self._start_container(seed=restore is None)
        if restore is not None:
            self._untar(_file_chunks(restore), "/", strip=0, extra=["-p"], timeout=self._bulk_timeout())

    def _bulk_timeout(self) -> float | None:
        """The deadline of moving whole trees in or out: the exec timeout, stretched when a repository is among them."""
        return None if self.spec.repo is None else max(self.spec.exec_timeout_s, SEED_TIMEOUT_S)

    @property
    def container_id(self) -> str:
        """The id of the container serving this sandbox now (a reset makes a new one)."""
        return self._container_id

    # --- commands ---
    def _exec(
        self,
        argv: list[str],
        deadline: float,
        workdir: str | None,
        env: Mapping[str, str] | None,
        stdout: CappedOutput,
        stderr: CappedOutput,
    ) -> tuple[int, bool, bool]:
        """One docker exec as the sandbox user; at the deadline every process of it is killed."""
        oom_before = read_oom_kills(self._oom_file)
        exit_code, timed_out, note = self._run(argv, stdout.feed, stderr.feed, deadline, workdir=workdir, env=env)
        oom_after = read_oom_kills(self._oom_file)
        if oom_before is not None and oom_after is not None:
            oom_killed = oom_after > oom_before
        else:
            # No cgroup file to read (remote engine): a SIGKILL that was not ours is most likely the OOM killer.
            oom_killed = exit_code == 137 and not timed_out
        if note:
            stderr.feed(note.encode())
        return exit_code, timed_out, oom_killed

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
        exec_id, response = self._start_attached(argv, workdir, env, stdin is not None)
        sock: socket.socket = getattr(response, "_sock", response)
        frames = Demuxer(on_stdout, on_stderr)
        failed_kill: str | None = None
        try:
            timed_out = stdin is not None and not send_all(sock, stdin, deadline)
            if not timed_out:
                timed_out = not pump(sock, deadline, frames)
            if timed_out:
                failed_kill = self._kill_in_place(sock, frames)
        finally:
            response.close()
            sock.close()
        note = "" if failed_kill is None else self._replace_after_failed_kill(failed_kill)
        return self._exit_code(exec_id, timed_out), timed_out, note

    def _start_attached(
        self, argv: list[str], workdir: str | None, env: Mapping[str, str] | None, with_stdin: bool
    ) -> tuple[str, Any]:
        """Create and start an exec as the sandbox user, attached: its id and the response holding its socket."""
        import docker
        import requests

        try:
            # uid:gid always: a bare uid the image's passwd does not know would run with gid 0.
            exec_id = self._api.exec_create(
                self._container_id, argv, stdin=with_stdin, user=f"{self.spec.uid}:{self.spec.gid}",
                environment=dict(env) if env else None, workdir=workdir,
            )["Id"]
            return exec_id, self._api.exec_start(exec_id, socket=True)
        except docker.errors.NotFound as exc:
            raise self._gone(exc) from exc
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise SandboxError(f"docker exec in sandbox {self.id} failed: {one_line(exc)}") from exc

    def _kill_in_place(self, sock: socket.socket, frames: Demuxer) -> str | None:
        """Kill every process of the sandbox user, reading the command's stream on; None when done, else why not."""
        if self.lifetime_over():
            self.close()  # the sandbox's lifetime is over: removing the container kills everything
            return None
        deadline = time.monotonic() + _KILL_GRACE_S
        # kill(-1) as the sandbox user signals all its processes (children that left the process group
        # too) but not the keeper, which runs as another uid, so the container and its files stay.
        kill_id, why = self._start_detached(["sh", "-c", "kill -9 -1"])
        if kill_id is None:
            return why  # a fork bomb holds every pid, or the engine did not answer in time
        # The stream ends once the command's last process is dead; until then the engine holds the
        # kill exec's end back, so the stream is read first and the kill's exit code asked after.
        if not pump(sock, deadline, frames):
            return f"its output stream was still open {_KILL_GRACE_S:g}s after the kill"
        code = self._wait_exit(kill_id, deadline)
        return None if code in (0, 1) else f"the kill exec ended with {code}"

    def _start_detached(self, argv: list[str]) -> tuple[str | None, str]:
        """Start a helper exec as the sandbox user without attaching to it: (its id, '') or (None, why not)."""
        import docker
        import requests

        try:
            exec_id = self._control.exec_create(self._container_id, argv, user=f"{self.spec.uid}:{self.spec.gid}")["Id"]
            self._control.exec_start(exec_id, detach=True)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            return None, f"the kill exec could not start: {one_line(exc)}"
        return exec_id, ""

    def _wait_exit(self, exec_id: str, deadline: float) -> int | None:
        """The exit code of a helper exec once the engine has it; None at the deadline or when it cannot say."""
        import docker
        import requests

        while time.monotonic() < deadline:
            try:
                info = self._control.exec_inspect(exec_id)
            except (docker.errors.APIError, requests.exceptions.RequestException):
                return None
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            time.sleep(0.01)
        return None

    def _replace_after_failed_kill(self, why: str) -> str:
        """Replace the container of a command that could not be killed in place; the note for its stderr."""
        log.warning("sandbox %s: the timed-out command could not be killed in place (%s); replacing its container", self.id, why)
        with self._lock:
            if self.closed:
                return ""
            self._replace_container(self._restore_point)
        return _REPLACED_NOTE.format(id=self.id)

    def _exit_code(self, exec_id: str, timed_out: bool) -> int:
        """The exec's exit code, waited for a moment: the stream can end just before the engine records it."""
        import docker
        import requests

        deadline = time.monotonic() + _EXIT_CODE_WAIT_S
        pause = 0.001
        while True:
            try:
                info = self._api.exec_inspect(exec_id)
            except docker.errors.NotFound as exc:
                if timed_out:
                    return 137  # its container was replaced or closed
                raise self._gone(exc) from exc
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                raise SandboxError(f"cannot read the exit code of an exec in sandbox {self.id}: {one_line(exc)}") from exc
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            if time.monotonic() >= deadline:
                return 137 if timed_out else -1
            time.sleep(pause)
            pause = min(0.01, pause * 2)

    def _gone(self, exc: BaseException) -> SandboxError:
        if self.closed:
            return SandboxClosedError(f"sandbox {self.id} was closed while the command ran")
        return SandboxError(f"the container of sandbox {self.id} is gone ({one_line(exc)}); create a new sandbox")

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

    def _checked(self, argv: list[str], what: str, stdin: Iterable[bytes] | None = None, timeout: float | None = None) -> bytes:
        """Run a file helper; its whole stdout, or SandboxError with its stderr."""
        self._check_open()
        out = bytearray()
        err = CappedOutput(4096)
        deadline = time.monotonic() + (self.spec.exec_timeout_s if timeout is None else timeout)
        code, timed_out, _ = self._run(argv, out.extend, err.feed, deadline, stdin=stdin)
        if timed_out or code != 0:
            reason = "timed out" if timed_out else last_line(err.text(), f"exit code {code}")
            raise SandboxError(f"cannot {what} in sandbox {self.id}: {reason}")
        return bytes(out)

    def _untar(
        self, chunks: Iterable[bytes], directory: str, strip: int, extra: Iterable[str] = (), timeout: float | None = None
    ) -> None:
        """Unpack a tar streamed in chunks into a sandbox directory, as the sandbox user (so the files are its)."""
        argv = ["tar", "-x", *extra, "-f", "-", "-C", directory]
        if strip:
            argv.append(f"--strip-components={strip}")
        try:
            self._checked(argv, f"restore files into {directory}", stdin=chunks, timeout=timeout)
        except SandboxError as exc:
            hint = f" (the disk limit is {self.spec.disk_mb} MB)" if "No space left" in str(exc) else ""
            raise SandboxError(f"{exc}{hint}") from exc

    # --- lifecycle ---
    def reset(self) -> None:
        """A fresh container from the image, with the files of the last restore() point if any."""
        self._check_open()
        with self._lock:
            self._replace_container(self._restore_point)

    def snapshot(self) -> str:
        """Record the files of the workdir, /tmp and the repository (not processes); returns the snapshot id."""
        self._check_open()
        if self._snapshot_dir is None:
            self._snapshot_dir = Path(tempfile.mkdtemp(prefix=f"{self.id}-snapshots-"))
        snapshot_id = f"{self.id}-snap{len(self._snapshots) + 1}"
        path = self._snapshot_dir / f"{snapshot_id}.tar"
        err = CappedOutput(4096)
        trees = {self.spec.workdir, "/tmp"} | ({self.spec.repo.path} if self.spec.repo else set())
        dirs = sorted(tree.lstrip("/") for tree in trees)
        with open(path, "wb") as fh:
            code, timed_out, _ = self._run(
                ["tar", "-c", "-f", "-", "-C", "/", *dirs], fh.write, err.feed,
                time.monotonic() + (self._bulk_timeout() or self.spec.exec_timeout_s)
            )
        # tar exits 1 when a file changed while it was read: the snapshot is still usable.
        if timed_out or code not in (0, 1):
            path.unlink(missing_ok=True)
            raise SandboxError(f"cannot snapshot sandbox {self.id}: {err.text().strip() or f'tar exit code {code}'}")
        self._snapshots[snapshot_id] = path
        return snapshot_id

    def restore(self, snapshot_id: str) -> None:
        """Go back to the files recorded by snapshot() in a fresh container; later reset()s return here."""
        self._check_open()
        path = self._snapshots.get(snapshot_id)
        if path is None:
            raise SandboxError(f"sandbox {self.id} has no snapshot {snapshot_id!r} (known: {', '.join(self._snapshots) or 'none'})")
        with self._lock:
            self._replace_container(path)
            self._restore_point = path

    def _close(self) -> None:
        try:
            # Under the lock: a reset in flight (a pool's worker) finishes first, so the container it
            # made is the one removed here rather than one that outlives the sandbox.
            with self._lock:
                remove_container(self._api, self._container_id or self.id)
        finally:
            if self._snapshot_dir is not None:
                shutil.rmtree(self._snapshot_dir, ignore_errors=True)
            if self._repo is not None:
                self._repo.close()


def _file_chunks(path: Path) -> Iterable[bytes]:
    """A host file's bytes in pieces (for a docker exec's stdin)."""
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            yield chunk


def remove_container(api: Any, container: str) -> None:
    """Kill and remove a container; one that is gone (or already being removed) is fine."""
    import docker

    try:
        api.remove_container(container, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code == 409 and "in progress" in str(exc):
            return
        raise SandboxError(f"cannot remove sandbox container {container}: {one_line(exc)}") from exc
