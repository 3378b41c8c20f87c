"""Hostile code against both sandbox backends: each test checks the host is unharmed and the sandbox still works.

Docker tests need a reachable engine; `make test` starts one (scripts/start-dockerd.sh). When none
answers they are skipped with the reason, which `pytest -rs` prints.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgym.sandboxes.base import Command, Sandbox, SandboxBackend
from agentgym.sandboxes.spec import SANDBOX_PYTHON, ExecResult, SandboxSpec

HOSTILE_SPEC = SandboxSpec(memory_mb=128, pids=64, disk_mb=32, exec_timeout_s=30, output_cap_bytes=64 << 10)


@pytest.fixture
def box(sandbox_backend: SandboxBackend) -> Iterator[Sandbox]:
    sandbox = sandbox_backend.create(HOSTILE_SPEC)
    try:
        yield sandbox
    finally:
        sandbox.close()


def py(code: str) -> list[str]:
    """argv that runs `code` with the sandbox's Python."""
    return [SANDBOX_PYTHON, "-c", code]


def assert_host_fine_and_box_usable(box: Sandbox) -> None:
    """The host can still start processes, and the sandbox still runs commands and keeps files."""
    assert subprocess.run(["true"], timeout=30).returncode == 0
    result = box.exec("echo alive > still-here && cat still-here", timeout=30)
    assert result.exit_code == 0 and result.stdout.strip() == "alive", result


def host_processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline and int(entry) != os.getpid():
                found.append(int(entry))
    return found


def test_fork_bomb_is_contained_by_the_pids_limit(box: Sandbox) -> None:
    marker = f"bomb-{uuid.uuid4().hex}"
    bomb = f"import os  # {marker}\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = box.exec(py(bomb), timeout=5)
    assert result.timed_out
    assert host_processes_with(marker) == []
    assert_host_fine_and_box_usable(box)


def test_memory_hog_is_killed_and_reported_out_of_memory(box: Sandbox) -> None:
    hog = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n"
    result = box.exec(py(hog), timeout=60)
    assert not result.timed_out
    assert result.oom_killed, result
    assert result.exit_code != 0
    assert_host_fine_and_box_usable(box)


def test_infinite_loop_is_killed_at_the_timeout(box: Sandbox) -> None:
    result = box.exec("while :; do :; done", timeout=2)
    assert result.timed_out and not result.ok
    assert 1.5 <= result.duration < 15
    assert_host_fine_and_box_usable(box)


def test_a_process_that_ignores_sigterm_and_its_detached_child_die_at_the_timeout(box: Sandbox) -> None:
    marker = f"stubborn-{uuid.uuid4().hex}"
    stubborn = (
        f"import os, signal, subprocess, time  # {marker}\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"subprocess.Popen(['{SANDBOX_PYTHON}', '-c', 'import signal, time  # {marker}\\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\ntime.sleep(600)'], start_new_session=True)\n"
        "time.sleep(600)\n"
    )
    result = box.exec(py(stubborn), timeout=2)
    assert result.timed_out
    assert result.duration < 15
    assert host_processes_with(marker) == []
    assert_host_fine_and_box_usable(box)


# Endless writers of every shape an agent's test run takes; each is still writing when its timeout comes.
FLOODS: dict[str, Command] = {
    "stdout-text": "yes",
    "stderr-text": "yes >&2",
    "binary-urandom": "cat /dev/urandom",
    "both-streams": "yes out & yes err >&2; wait",
    "python-print-loop": py("while 1: print('x' * 1000)"),
    # The writer's own shell exits at once; the writer goes on in a session of its own.
    "setsid-child": "(setsid yes &); sleep 600",
    "setsid-child-binary-stderr": "(setsid sh -c 'cat /dev/urandom >&2' &); sleep 600",
    "long-line-no-newline": "tr '\\0' x < /dev/zero",
}
FLOOD_TIMEOUT_S = 3
FLOOD_BOUND_S = 10


def exec_within(box: Sandbox, cmd: Command, timeout: float, bound: float) -> ExecResult:
    """box.exec(cmd) on a worker thread: fails the test, rather than hanging it, when exec is not back within `bound`."""
    results: list[ExecResult | BaseException] = []

    def work() -> None:
        try:
            results.append(box.exec(cmd, timeout=timeout))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread and raised there
            results.append(exc)

    worker = threading.Thread(target=work, name="flood-exec", daemon=True)
    worker.start()
    worker.join(bound)
    if worker.is_alive():
        pytest.fail(f"exec with timeout={timeout}s of {cmd!r} had not returned after {bound}s")
    if isinstance(results[0], BaseException):
        raise results[0]
    return results[0]


@pytest.mark.parametrize("cmd", list(FLOODS.values()), ids=list(FLOODS))
def test_a_command_flooding_output_at_its_timeout_is_killed_and_exec_returns(box: Sandbox, cmd: Command) -> None:
    box.write_file("kept.txt", "kept")
    result = exec_within(box, cmd, FLOOD_TIMEOUT_S, FLOOD_BOUND_S)
    assert result.timed_out and not result.ok, result
    after = box.exec("echo ok", timeout=30)
    assert after.exit_code == 0 and after.stdout == "ok\n", after
    # A writer is killable where it runs: the sandbox is not replaced, so its files stay.
    assert "replaced" not in result.stderr[-500:], result.stderr[-500:]
    assert box.read_file("kept.txt") == b"kept"


def test_a_gigabyte_of_output_is_truncated_and_host_memory_stays_bounded(box: Sandbox) -> None:
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = box.exec("head -c 1000000000 /dev/zero | tr '\\0' x; echo; echo THE-END", timeout=240)
    peak_after_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert result.exit_code == 0 and not result.timed_out
    cap = HOSTILE_SPEC.output_cap_bytes
    assert result.stdout_truncated >= 1_000_000_000 - cap
    assert len(result.stdout.encode()) < 2 * cap
    assert result.stdout.startswith("xxxx") and result.stdout.rstrip().endswith("THE-END")
    assert "truncated" in result.stdout
    assert (peak_after_kib - peak_before_kib) * 1024 < 200 << 20, "host memory grew with the output"
    assert_host_fine_and_box_usable(box)


def test_network_is_only_a_loopback_of_its_own(box: Sandbox) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        probe = (
            "import os, socket\n"
            "print(sorted(os.listdir('/sys/class/net')))\n"
            f"for host, port in [('127.0.0.1', {port}), ('1.1.1.1', 80), ('8.8.8.8', 53)]:\n"
            "    s = socket.socket()\n    s.settimeout(3)\n"
            "    try:\n        s.connect((host, port))\n        print('CONNECTED', host)\n"
            "    except OSError as exc:\n        print('refused', host, type(exc).__name__)\n"
        )
        result = box.exec(py(probe), timeout=30)
    finally:
        listener.close()
    assert result.exit_code == 0, result
    lines = result.stdout.splitlines()
    assert lines[0] == "['lo']"
    assert "CONNECTED" not in result.stdout
    assert sum(line.startswith("refused") for line in lines) == 3


def test_writes_outside_the_workdir_fail_or_touch_nothing_on_the_host(box: Sandbox, tmp_path: Path) -> None:
    host_file = tmp_path / "planted-by-sandbox"
    targets = ["/etc/agentgym-planted", "/usr/agentgym-planted", "/root/agentgym-planted", str(host_file),
               "/work/agentgym-planted"]
    script = "; ".join(f"(echo pwned > {t}) 2>/dev/null && echo WROTE {t} || echo failed {t}" for t in targets)
    result = box.exec(script, timeout=30)
    for target in targets:
        assert not Path(target).exists(), f"the sandbox wrote {target} on the host"
    # Paths that exist on the host and are read-only inside must refuse the write.
    assert "WROTE /etc/agentgym-planted" not in result.stdout
    assert "WROTE /usr/agentgym-planted" not in result.stdout
    # Unprivileged inside: root-only files stay unreadable.
    assert box.exec("cat /etc/shadow", timeout=30).exit_code != 0
    assert box.exec("ls /root", timeout=30).exit_code != 0
    assert_host_fine_and_box_usable(box)


def test_the_docker_socket_is_absent(box: Sandbox) -> None:
    probe = (
        "import os, socket\n"
        "for path in ['/var/run/docker.sock', '/run/docker.sock']:\n"
        "    print(path, os.path.exists(path))\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n    s.connect('/var/run/docker.sock')\n    print('CONNECTED')\n"
        "except OSError as exc:\n    print('refused', type(exc).__name__)\n"
    )
    result = box.exec(py(probe), timeout=30)
    assert result.exit_code == 0, result
    assert "True" not in result.stdout and "CONNECTED" not in result.stdout


def test_filling_the_disk_stops_at_the_limit(box: Sandbox) -> None:
    limit = HOSTILE_SPEC.disk_mb << 20
    result = box.exec("dd if=/dev/zero of=fill bs=1M count=200 2>&1; echo rc=$?", timeout=60)
    assert "rc=0" not in result.stdout
    assert "No space left" in result.stdout or "quota" in result.stdout.lower(), result.stdout
    size = box.exec("wc -c < fill", timeout=30)
    assert 0 < int(size.stdout) <= limit
    tmp_fill = box.exec("dd if=/dev/zero of=/tmp/fill bs=1M count=200 2>&1; echo rc=$?", timeout=60)
    assert "rc=0" not in tmp_fill.stdout
    assert box.exec("rm -f fill /tmp/fill", timeout=30).exit_code == 0
    assert_host_fine_and_box_usable(box)
