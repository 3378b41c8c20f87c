"""The Docker sandbox backend against a real engine: commands, files, limits, isolation, lifecycle, gc."""

from __future__ import annotations

import io
import os
import resource
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgym.sandboxes.base import SandboxClosedError, SandboxError
from agentgym.sandboxes.spec import SANDBOX_PYTHON, SandboxSpec

AGENTGYM = [sys.executable, "-m", "agentgym.cli"]


@pytest.fixture(scope="session")
def backend() -> "DockerBackend":  # noqa: F821
    """The docker backend with the default image built (once; debootstrap takes about a minute)."""
    from agentgym.sandboxes.docker_backend import DockerBackend
    from agentgym.sandboxes.images import ensure_default_image

    found = DockerBackend()
    reason = found.unavailable_reason()
    if reason:
        pytest.skip(f"no Docker engine reachable: {reason}")
    ensure_default_image()
    return found


@pytest.fixture()
def sandbox(backend) -> Iterator["DockerSandbox"]:  # noqa: F821
    with backend.create(SandboxSpec()) as box:
        yield box


def processes(box) -> list[str]:
    """Command lines of every process in the sandbox but the listing itself."""
    script = 'for p in /proc/[0-9]*; do [ "${p#/proc/}" = "$$" ] || tr "\\0" " " < $p/cmdline 2>/dev/null; echo; done'
    lines = box.exec(script).stdout.splitlines()
    return [line.strip() for line in lines if line.strip() and "/proc/[0-9]" not in line]


# --- commands ---
def test_exec_output_exit_code_and_argv(sandbox) -> None:
    result = sandbox.exec("echo out; echo err >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.ok and not result.timed_out and not result.oom_killed and result.duration > 0
    # A list is argv: no shell, so the $ stays literal.
    listed = sandbox.exec(["printf", "%s|", "a b", "$HOME"])
    assert listed.ok and listed.stdout == "a b|$HOME|"
    missing = sandbox.exec(["no-such-program"])
    assert missing.exit_code in (126, 127)


def test_env_workdir_and_home(backend) -> None:
    spec = SandboxSpec(env={"GREETING": "hi", "SHARED": "spec"}, workdir="/work/here")
    with backend.create(spec) as box:
        result = box.exec('echo "$GREETING $SHARED $EXTRA"; pwd; echo $HOME', env={"EXTRA": "x", "SHARED": "call"})
        assert result.stdout.splitlines() == ["hi call x", "/work/here", "/work/here"]
        box.exec("mkdir -p sub")
        assert box.exec("pwd", workdir="sub").stdout == "/work/here/sub\n"
        assert box.exec("echo $SHARED").stdout == "spec\n"  # the call's env does not stick


def test_python_runs_as_sandbox_user(sandbox) -> None:
    result = sandbox.exec([SANDBOX_PYTHON, "-c", "import os, sys; print(os.getuid(), os.getgid(), sys.version_info[:2])"])
    assert result.stdout.strip() == "1000 1000 (3, 11)"


# --- files ---
def test_files_round_trip_owned_by_sandbox_user(sandbox) -> None:
    payload = bytes(range(256)) * 1000
    sandbox.write_file("deep/dir/data.bin", payload)
    sandbox.write_file("/tmp/note.txt", "héllo\n")
    assert sandbox.read_file("/workspace/deep/dir/data.bin") == payload
    assert sandbox.read_file("/tmp/note.txt").decode() == "héllo\n"
    assert sandbox.exec("stat -c %u:%g deep/dir/data.bin deep").stdout.split() == ["1000:1000", "1000:1000"]
    sandbox.write_file("deep/dir/data.bin", "replaced")
    assert sandbox.read_file("deep/dir/data.bin") == b"replaced"
    with pytest.raises(SandboxError, match="no such file"):
        sandbox.read_file("nope.txt")
    with pytest.raises(SandboxError, match="not a regular file"):
        sandbox.read_file("deep")
    with pytest.raises(SandboxError, match="Read-only"):
        sandbox.write_file("/etc/evil", "x")


def test_archives_upload_and_download(sandbox, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in [("a.txt", b"A"), ("pkg/b.txt", b"B")]:
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    sandbox.put_archive("unpacked", buffer.getvalue())
    assert sandbox.exec("cat unpacked/a.txt unpacked/pkg/b.txt; stat -c %u unpacked/pkg/b.txt").stdout == "AB1000\n"
    with tarfile.open(fileobj=io.BytesIO(sandbox.get_archive("unpacked")), mode="r") as tar:
        assert {"unpacked", "unpacked/a.txt", "unpacked/pkg/b.txt"} <= set(tar.getnames())

    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    (src / "one.txt").write_text("1")
    (src / "nested" / "two.txt").write_text("2")
    sandbox.upload(src, "/workspace/project")
    assert sandbox.exec("cat project/one.txt project/nested/two.txt").stdout == "12"
    copied = sandbox.download("project", tmp_path / "back")
    assert (copied / "nested" / "two.txt").read_text() == "2"


def test_image_files_at_the_workdir_are_seeded_into_it(backend) -> None:
    """An image with a project at the workdir (the SWE images) shows it under the workdir's tmpfs."""
    from agentgym.sandboxes.images import DEFAULT_IMAGE

    dockerfile = f"FROM {DEFAULT_IMAGE}\nRUN mkdir -p /workspace/repo && echo 'print(42)' > /workspace/repo/main.py\n"
    image, _ = backend.client().images.build(fileobj=io.BytesIO(dockerfile.encode()), tag="agentgym-test/seeded:latest",
                                             network_mode="none", rm=True)
    with backend.create(SandboxSpec(image="agentgym-test/seeded:latest")) as box:
        assert box.exec([SANDBOX_PYTHON, "repo/main.py"]).stdout == "42\n"
        box.write_file("repo/main.py", "print(43)")  # writable, owned by the sandbox user
        assert box.exec("stat -c %u repo/main.py").stdout == "1000\n"
        box.reset()
        assert box.read_file("repo/main.py") == b"print(42)\n"


# --- limits ---
def test_timeout_kills_term_ignoring_process_and_its_children(sandbox) -> None:
    sandbox.write_file("kept.txt", "still here")
    script = textwrap.dedent(f"""\
        trap '' TERM
        {SANDBOX_PYTHON} -c 'import os, signal, time; os.setsid(); signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)' &
        (trap '' TERM; sleep 300) &
        echo started
        sleep 300
    """)
    started = time.monotonic()
    result = sandbox.exec(script, timeout=1.5)
    assert result.timed_out and not result.ok and result.exit_code in (137, -1)
    assert "started" in result.stdout
    assert 1.4 < time.monotonic() - started < 10
    # Nothing of the command survives, and the sandbox goes on with its files.
    assert not [p for p in processes(sandbox) if "sleep 300" in p or "time.sleep" in p]
    assert sandbox.read_file("kept.txt") == b"still here"
    assert sandbox.exec("echo ok").ok


def test_timeout_when_a_fork_bomb_holds_every_pid(backend) -> None:
    with backend.create(SandboxSpec(pids=32)) as box:
        bomb = f"{SANDBOX_PYTHON} -c 'import os\nwhile True:\n    try: os.fork()\n    except OSError: pass'"
        result = box.exec(bomb, timeout=2)
        assert result.timed_out
        after = box.exec("echo alive")
        assert after.ok and after.stdout == "alive\n"
        assert len(processes(box)) <= 3  # the keeper (init, sleep) and nothing left of the bomb


def test_memory_limit_reports_oom(backend) -> None:
    with backend.create(SandboxSpec(memory_mb=64)) as box:
        result = box.exec([SANDBOX_PYTHON, "-c", "blocks = [bytearray(8 << 20) for _ in range(40)]; print('survived')"])
        assert result.oom_killed and not result.ok and "survived" not in result.stdout
        small = box.exec([SANDBOX_PYTHON, "-c", "block = bytearray(8 << 20); print('fine')"])
        assert small.ok and not small.oom_killed and small.stdout == "fine\n"


def test_disk_limit_stops_writes(backend) -> None:
    with backend.create(SandboxSpec(disk_mb=16)) as box:
        result = box.exec("dd if=/dev/zero of=big bs=1M count=64 2>&1; du -m big | cut -f1")
        assert "No space left on device" in result.stdout
        assert int(result.stdout.split()[-1]) <= 16
        assert box.exec("touch /usr/x").exit_code != 0  # the root filesystem is read-only


def test_output_truncated_keeping_head_and_tail(backend) -> None:
    with backend.create(SandboxSpec(output_cap_bytes=1024)) as box:
        result = box.exec("echo START; head -c 100000 /dev/zero | tr '\\0' x; echo; echo END; echo ERR >&2")
        assert result.stdout.startswith("START\n") and result.stdout.endswith("END\n")
        assert result.stdout_truncated == 100000 + len("START\n\nEND\n") - 1024
        assert "bytes of output truncated" in result.stdout and len(result.stdout) < 1200
        assert result.stderr == "ERR\n" and result.stderr_truncated == 0


def test_huge_output_streams_in_bounded_memory(sandbox) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = sandbox.exec("head -c 300000000 /dev/zero", timeout=120)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert result.ok and result.stdout_truncated == 300_000_000 - sandbox.spec.output_cap_bytes
    assert grown_mb < 64, f"host memory grew by {grown_mb:.0f} MB for 300 MB of output"


# --- isolation ---
def test_isolation_inside_the_container(sandbox) -> None:
    assert sandbox.exec("ls /sys/class/net").stdout.split() == ["lo"]
    caps = dict(line.split(":\t") for line in sandbox.exec("grep Cap /proc/self/status").stdout.splitlines())
    assert all(int(value, 16) == 0 for name, value in caps.items() if name in ("CapPrm", "CapEff", "CapBnd", "CapAmb"))
    assert sandbox.exec("id -u; id -g").stdout.split() == ["1000", "1000"]
    assert sandbox.exec("ls -la /var/run/docker.sock /run/docker.sock").exit_code != 0
    assert sandbox.exec("grep NoNewPrivs /proc/self/status").stdout.split()[-1] == "1"


def test_container_config_and_labels(backend, sandbox) -> None:
    attrs = backend.client().api.inspect_container(sandbox.id)
    labels, host = attrs["Config"]["Labels"], attrs["HostConfig"]
    assert labels["agentgym.sandbox"] == "1" and labels["agentgym.spec"] == sandbox.spec.key()
    assert int(labels["agentgym.owner.pid"]) == os.getpid() and float(labels["agentgym.created"]) > 0
    assert host["NetworkMode"] == "none" and host["CapDrop"] == ["ALL"] and host["ReadonlyRootfs"]
    assert host["Memory"] == host["MemorySwap"] == sandbox.spec.memory_mb << 20
    assert host["PidsLimit"] == sandbox.spec.pids and host["Init"]
    assert not host.get("Binds") and not [m for m in attrs["Mounts"] if m["Type"] == "bind"]
    info = {i.id: i for i in backend.list()}[sandbox.id]
    assert info.owner_alive and info.owner_pid == os.getpid() and info.status == "running"


def test_network_needs_an_engine_network(backend) -> None:
    has_bridge = bool(backend.client().api.networks(names=["bridge"]))
    if has_bridge:
        with backend.create(SandboxSpec(network=True)) as box:
            assert len(box.exec("ls /sys/class/net").stdout.split()) > 1
    else:
        with pytest.raises(SandboxError, match="network"):
            backend.create(SandboxSpec(network=True))
    assert not [c for c in backend.client().api.containers(all=True, filters={"label": f"agentgym.owner.pid={os.getpid()}"})
                if c["State"] == "created"]


# --- lifecycle ---
def test_reset_gives_a_clean_sandbox(sandbox) -> None:
    sandbox.write_file("dirty.txt", "x")
    sandbox.write_file("/tmp/dirty", "x")
    sandbox.exec("nohup sleep 300 >/dev/null 2>&1 &")
    sandbox.reset()
    assert sandbox.exec("ls -A /workspace /tmp").stdout.split() == ["/tmp:", "/workspace:"]
    assert not [p for p in processes(sandbox) if "sleep 300" in p]
    assert sandbox.exec("echo $HOME").stdout == "/workspace\n"


def test_snapshot_and_restore(sandbox) -> None:
    sandbox.write_file("a.txt", "v1")
    sandbox.write_file("/tmp/t.txt", "tmp")
    first = sandbox.snapshot()
    sandbox.write_file("a.txt", "v2")
    sandbox.write_file("b.txt", "new")
    second = sandbox.snapshot()
    sandbox.restore(first)
    assert sandbox.read_file("a.txt") == b"v1" and sandbox.read_file("/tmp/t.txt") == b"tmp"
    assert sandbox.exec("test -e b.txt").exit_code == 1
    assert sandbox.exec("stat -c %u a.txt").stdout == "1000\n"
    sandbox.write_file("c.txt", "after restore")
    sandbox.reset()  # back to the restore point, not to the empty image
    assert sandbox.exec("ls").stdout.split() == ["a.txt"]
    sandbox.restore(second)
    assert sandbox.exec("cat a.txt b.txt").stdout == "v2new"
    with pytest.raises(SandboxError, match="no snapshot"):
        sandbox.restore("nope")


def test_close_removes_the_container(backend) -> None:
    import docker

    box = backend.create(SandboxSpec())
    box.close()
    box.close()  # idempotent
    with pytest.raises(docker.errors.NotFound):
        backend.client().api.inspect_container(box.id)
    with pytest.raises(SandboxClosedError):
        box.exec("true")
    backend.remove(box.id)  # already gone: not an error


def test_wall_clock_limit_removes_the_sandbox(backend) -> None:
    box = backend.create(SandboxSpec(wall_clock_s=2))
    result = box.exec("sleep 30")  # the lifetime cuts the command short
    assert result.timed_out and result.duration < 10
    deadline = time.monotonic() + 10
    while box.id in {i.id for i in backend.list()} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert box.id not in {i.id for i in backend.list()}
    with pytest.raises(SandboxClosedError, match="wall-clock"):
        box.exec("true")


# --- orphans ---
ORPHAN_MAKER = """
import sys, time
from agentgym.sandboxes.docker_backend import DockerBackend
from agentgym.sandboxes.spec import SandboxSpec
backend = DockerBackend()
boxes = [backend.create(SandboxSpec()) for _ in range(3)]
print(" ".join(b.id for b in boxes), flush=True)
time.sleep(600)
"""


def test_gc_removes_sandboxes_of_a_killed_process(backend) -> None:
    maker = subprocess.Popen([sys.executable, "-c", ORPHAN_MAKER], stdout=subprocess.PIPE, text=True)
    try:
        ids = maker.stdout.readline().split()
    finally:
        maker.send_signal(signal.SIGKILL)
        maker.wait()
    assert len(ids) == 3
    listed = {i.id: i for i in backend.list()}
    assert all(i in listed and not listed[i].owner_alive and listed[i].owner_pid == maker.pid for i in ids)
    ls = subprocess.run([*AGENTGYM, "sandbox", "ls"], capture_output=True, text=True, timeout=60)
    assert ls.returncode == 0 and all(i in ls.stdout for i in ids)
    gc = subprocess.run([*AGENTGYM, "sandbox", "gc"], capture_output=True, text=True, timeout=120)
    assert gc.returncode == 0 and "docker: removed" in gc.stdout, gc.stderr
    remaining = {i.id for i in backend.list()}
    assert not set(ids) & remaining


def test_gc_keeps_sandboxes_of_live_owners(backend, sandbox) -> None:
    assert sandbox.id not in backend.gc()
    assert sandbox.exec("true").ok
