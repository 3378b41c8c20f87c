"""The bubblewrap backend against real bwrap: isolation, limits, files, lifecycle and gc."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgym.sandboxes.base import SandboxClosedError, SandboxError
from agentgym.sandboxes.bwrap_backend import BwrapBackend, BwrapSandbox, sandboxes_root
from agentgym.sandboxes.cgroups import CgroupSet
from agentgym.sandboxes.spec import SANDBOX_PYTHON, SandboxSpec

_BACKEND = BwrapBackend()
_REASON = _BACKEND.unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"bwrap unavailable: {_REASON}")
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="cgroups, tmpfs and setpriv need root")


@pytest.fixture()
def make() -> Iterator:
    """A factory of sandboxes that closes every one it made."""
    made: list[BwrapSandbox] = []

    def _make(**spec: object) -> BwrapSandbox:
        sandbox = _BACKEND.create(SandboxSpec(**spec))
        made.append(sandbox)
        return sandbox

    yield _make
    for sandbox in made:
        sandbox.close()


@pytest.fixture()
def sandbox(make) -> BwrapSandbox:
    return make()


def _mounted(sandbox_id: str) -> bool:
    return f"agentgym-{sandbox_id} " in Path("/proc/mounts").read_text()


def _host_pids_with(marker: str, exact: bool = False) -> list[int]:
    """Host processes whose command line holds `marker` (or is exactly it, spaces as argument breaks)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if (cmdline == marker.replace(" ", "\0").encode() + b"\0") if exact else marker.encode() in cmdline:
                found.append(int(entry.name))
    return found


# --- commands ---
def test_exec_returns_output_and_exit_codes(sandbox: BwrapSandbox) -> None:
    result = sandbox.exec("echo out; echo err >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.ok and not result.timed_out and result.duration > 0
    assert sandbox.exec(["printf", "%s|", "a b", "c"]).stdout == "a b|c|"
    assert sandbox.exec("no-such-command").exit_code == 127
    assert sandbox.exec("kill -9 $$").exit_code == 137
    assert sandbox.exec("true").ok


def test_env_is_clean_and_workdir_is_the_cwd(make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTGYM_HOST_SECRET", "leaked")
    sandbox = make(env={"FROM_SPEC": "1", "LANG": "C"})
    env = dict(line.split("=", 1) for line in sandbox.exec("env", env={"FROM_CALL": "2"}).stdout.splitlines() if "=" in line)
    assert "AGENTGYM_HOST_SECRET" not in env and "AGENTGYM_CACHE" not in env
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin" and env["HOME"] == "/workspace"
    assert (env["FROM_SPEC"], env["FROM_CALL"], env["LANG"]) == ("1", "2", "C")
    assert sandbox.exec("pwd").stdout == "/workspace\n"
    sandbox.exec("mkdir -p sub/dir")
    assert sandbox.exec("pwd", workdir="sub/dir").stdout == "/workspace/sub/dir\n"
    assert sandbox.exec("pwd", workdir="/tmp").stdout == "/tmp\n"


def test_files_persist_across_execs(sandbox: BwrapSandbox) -> None:
    sandbox.exec("echo one > a.txt && mkdir -p d && echo two > /tmp/b.txt")
    assert sandbox.exec("cat a.txt /tmp/b.txt").stdout == "one\ntwo\n"


def test_user_is_unprivileged_without_capabilities(make) -> None:
    sandbox = make(user="1234:2345")
    assert sandbox.exec("id -u; id -g; id -G").stdout.split() == ["1234", "2345", "2345"]
    status = dict(line.split(":\t", 1) for line in sandbox.exec("cat /proc/self/status").stdout.splitlines() if ":\t" in line)
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert sandbox.exec("stat -c '%u:%g' .").stdout.strip() == "1234:2345"


def test_host_is_hidden_and_root_filesystem_read_only(sandbox: BwrapSandbox) -> None:
    for path in ("/root", "/home", "/work", "/run", "/var/run/docker.sock", "/var", str(sandboxes_root())):
        assert sandbox.exec(f"test -e {path}").exit_code == 1, path
    for cmd in ("touch /etc/x", "touch /usr/x", "touch /x", "mkdir /opt"):
        assert sandbox.exec(cmd).exit_code != 0, cmd
    # Its own pid namespace: a handful of processes, not the host's.
    assert len(sandbox.exec("ls -d /proc/[0-9]*").stdout.split()) < 6
    assert sandbox.exec("readlink /bin").stdout.strip() in ("usr/bin", "")
    assert sandbox.exec(f"{SANDBOX_PYTHON} -c 'print(6*7)'").stdout == "42\n"


def test_kernel_attack_surface_is_filtered(sandbox: BwrapSandbox) -> None:
    assert "Seccomp:\t2" in sandbox.exec("cat /proc/self/status").stdout
    for cmd in ("unshare -U true", "unshare -Ur true", "unshare -n true", "mount -t tmpfs none /tmp"):
        assert sandbox.exec(cmd).exit_code != 0, cmd
    threads = "import threading, subprocess\nt = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n" \
        "print(subprocess.run(['echo', 'child'], capture_output=True, text=True).stdout.strip())"
    assert sandbox.exec([SANDBOX_PYTHON, "-c", threads]).stdout.split() == ["thread", "child"]


@ROOT_ONLY
def test_a_prepared_rootfs_replaces_the_host_view(make, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "os-release").write_text("ID=agentgym-test-rootfs\n")
    for name in ("bin", "lib", "lib64", "sbin"):
        if Path(f"/{name}").is_symlink():
            (rootfs / name).symlink_to(os.readlink(f"/{name}"))
    subprocess.run(["mount", "--bind", "-o", "ro", "/usr", str(rootfs / "usr")], check=True)
    try:
        sandbox = make(rootfs=rootfs)
        assert sandbox.exec("cat /etc/os-release").stdout == "ID=agentgym-test-rootfs\n"
        assert sandbox.exec("test -e /etc/passwd").exit_code == 1
        assert sandbox.exec("echo hi > f && cat f && id -u").stdout.split() == ["hi", "1000"]
        sandbox.close()
    finally:
        subprocess.run(["umount", str(rootfs / "usr")], check=True)


@ROOT_ONLY
def test_by_default_sandboxes_run_on_the_project_root_not_the_hosts_etc(make) -> None:
    from agentgym.sandboxes.rootfs import HOST_ROOT, project_rootfs, root_view

    view = root_view(None)
    if view == HOST_ROOT:
        pytest.skip("the project root cannot be made here (the warning said why)")
    root = project_rootfs()
    assert view.base == root and (root / "usr" / "bin" / "python3").is_file()
    sandbox = make()
    # The same file, seen through the bind: its inode is the project root's, never the host's.
    inode = int(sandbox.exec("stat -c %i /etc/passwd").stdout)
    assert inode == (root / "etc" / "passwd").stat().st_ino != Path("/etc/passwd").stat().st_ino
    assert int(sandbox.exec("stat -c %i /usr/bin/python3").stdout) == (root / "usr" / "bin" / "python3").lstat().st_ino
    assert sandbox.exec("id -un").stdout == "agent\n"  # the sandbox user is in the root's passwd, as in the image


def test_the_root_switch(make, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from agentgym.sandboxes import rootfs

    monkeypatch.setenv(rootfs.ROOT_ENV_VAR, "host")
    sandbox = make()
    assert int(sandbox.exec("stat -c %i /etc/passwd").stdout) == Path("/etc/passwd").stat().st_ino
    monkeypatch.setenv(rootfs.ROOT_ENV_VAR, "chroot")
    with pytest.raises(SandboxError, match="AGENTGYM_BWRAP_ROOT='chroot' is not one of: auto, project, host"):
        make()

    def unavailable(build: bool = True) -> Path:
        raise SandboxError("no rootfs tarball here")

    monkeypatch.setattr(rootfs, "project_rootfs", unavailable)
    monkeypatch.setattr(rootfs, "_default", {})
    monkeypatch.setenv(rootfs.ROOT_ENV_VAR, "project")
    with pytest.raises(SandboxError, match="no rootfs tarball here"):
        make()
    monkeypatch.setenv(rootfs.ROOT_ENV_VAR, "auto")
    with caplog.at_level(logging.WARNING, logger="agentgym.sandboxes"):
        assert rootfs.root_view(None) == rootfs.HOST_ROOT
        assert rootfs.root_view(None) == rootfs.HOST_ROOT
    warnings = [r.getMessage() for r in caplog.records if "project root cannot be made" in r.getMessage()]
    assert len(warnings) <= 1 and all("no rootfs tarball here" in w for w in warnings)


@ROOT_ONLY
def test_the_project_root_is_unpacked_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from agentgym.sandboxes import rootfs
    from agentgym.sandboxes.images import ImageRecipe, images_dir

    key = ImageRecipe(python=True).base_key()
    tarball = images_dir() / key / "rootfs.tar"
    if not tarball.is_file():
        pytest.skip("no rootfs tarball in the test cache (the Docker image tests make it)")
    monkeypatch.setenv("AGENTGYM_CACHE", str(tmp_path))
    (images_dir() / key).mkdir(parents=True)
    (images_dir() / key / "rootfs.tar").symlink_to(tarball)
    made: list[Path] = []
    threads = [threading.Thread(target=lambda: made.append(rootfs.project_rootfs(build=False))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    root = tmp_path / "sandbox-rootfs" / key / "root"
    assert made == [root, root] and (root.parent / "complete").is_file()
    assert (root / "usr" / "bin" / "python3").is_file() and not list((root / "dev").iterdir())
    assert "agent:x:1000:1000::/workspace:/bin/sh" in (root / "etc" / "passwd").read_text().splitlines()
    assert sorted(p.name for p in root.parent.iterdir()) == ["complete", "lock", "root"]  # no partial copy left
    stamp = (root / "etc" / "passwd").stat().st_mtime_ns
    assert rootfs.project_rootfs(build=False) == root and (root / "etc" / "passwd").stat().st_mtime_ns == stamp


def test_no_network_but_loopback(make) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    probe = textwrap.dedent(f"""
        import socket, sys
        for host, port in (("127.0.0.1", {port}), ("1.1.1.1", 53), ("8.8.8.8", 443)):
            try:
                socket.create_connection((host, port), timeout=2).close()
                print(host, "connected")
            except OSError as exc:
                print(host, "failed", exc)
    """)
    try:
        sandbox = make()
        devices = [line.split(":")[0].strip() for line in sandbox.exec("cat /proc/net/dev").stdout.splitlines()[2:]]
        assert devices == ["lo"]
        if os.geteuid() == 0:  # /sys needs a sysfs mount, which only root can make
            assert sandbox.exec("ls /sys/class/net").stdout.split() == ["lo"]
            assert sandbox.exec("touch /sys/x").exit_code != 0
        out = sandbox.exec([SANDBOX_PYTHON, "-c", probe]).stdout
        assert "connected" not in out and out.count("failed") == 3
        # The spec's switch really is the only difference: with network on, the host listener answers.
        online = make(network=True)
        assert "127.0.0.1 connected" in online.exec([SANDBOX_PYTHON, "-c", probe]).stdout
        if os.geteuid() == 0:
            assert set(online.exec("ls /sys/class/net").stdout.split()) == set(os.listdir("/sys/class/net"))
    finally:
        listener.close()


# --- files ---
def test_files_round_trip(sandbox: BwrapSandbox, tmp_path: Path) -> None:
    sandbox.write_file("src/main.py", "print('hi')\n")
    sandbox.write_file("/tmp/blob.bin", bytes(range(256)) * 10)
    assert sandbox.read_file("/workspace/src/main.py") == b"print('hi')\n"
    assert sandbox.read_file("/tmp/blob.bin") == bytes(range(256)) * 10
    assert sandbox.exec(f"{SANDBOX_PYTHON} src/main.py").stdout == "hi\n"
    owners = sandbox.exec("stat -c %u:%g src src/main.py /tmp/blob.bin").stdout.split()
    assert owners == [sandbox.spec.user] * 3
    sandbox.exec("echo changed > src/main.py")
    sandbox.write_file("src/main.py", b"v2")
    assert sandbox.exec("cat src/main.py").stdout == "v2"

    local = tmp_path / "up"
    (local / "pkg").mkdir(parents=True)
    (local / "pkg" / "mod.py").write_text("x = 1\n")
    (local / "README").write_text("readme\n")
    sandbox.upload(local, "proj")
    listing = sandbox.exec("cat proj/README proj/pkg/mod.py && stat -c %u proj/pkg/mod.py").stdout.split()
    assert listing == ["readme", "x", "=", "1", str(sandbox.spec.uid)]
    copy = sandbox.download("proj", tmp_path / "down")
    assert (copy / "pkg" / "mod.py").read_text() == "x = 1\n" and (copy / "README").read_text() == "readme\n"
    with tarfile.open(fileobj=io.BytesIO(sandbox.get_archive("src/main.py"))) as tar:
        assert tar.getnames() == ["main.py"]

    for bad in ("missing.txt", "/etc/passwd", "/workspace/../etc/passwd", "/proc/self/environ", "src"):
        with pytest.raises(SandboxError):
            sandbox.read_file(bad)
    for bad in ("/etc/evil", "/usr/evil", "../outside"):
        with pytest.raises(SandboxError):
            sandbox.write_file(bad, "x")
    with pytest.raises(SandboxError):
        sandbox.get_archive("/etc")


def test_symlinks_never_reach_the_host(sandbox: BwrapSandbox) -> None:
    owner_file = sandbox.dir / "owner.json"  # a host file right next to the sandbox's tmpfs
    secret = Path(sandbox.dir / "host-secret.txt")
    secret.write_text("host data")
    sandbox.exec(
        f"ln -s /etc/shadow shadow; ln -s {owner_file} owner; ln -s {secret} secret; ln -s ../../.. up; "
        f"ln -s / root; ln -s {sandbox.dir} hostdir; echo inside > real.txt; ln -s /workspace/real.txt good; "
        "ln -s real.txt good2; mkdir d; ln -s ../real.txt d/good3; ln -s /tmp tmplink"
    )
    shadow = Path("/etc/shadow").read_bytes()
    links = ("shadow", "owner", "secret", "up/etc/passwd", "root/etc/passwd", "hostdir/owner.json", "hostdir/host-secret.txt")
    for link in links:
        with pytest.raises(SandboxError):
            sandbox.read_file(link)
    for link in links:
        # A link may lead into the sandbox's own /tmp (the host's paths are under /tmp here), where a
        # write may land; what matters is that no host file changes.
        try:
            sandbox.write_file(link, "overwritten")
        except SandboxError:
            pass
    assert secret.read_text() == "host data" and json.loads(owner_file.read_text())["id"] == sandbox.id
    assert Path("/etc/shadow").read_bytes() == shadow
    with pytest.raises(SandboxError):
        sandbox.write_file("shadow", "overwritten")
    # Links that stay inside the sandbox resolve as the sandbox sees them.
    for link in ("good", "good2", "d/good3"):
        assert sandbox.read_file(link) == b"inside\n"
    sandbox.write_file("tmplink/via-link.txt", "ok")
    assert sandbox.exec("cat /tmp/via-link.txt").stdout == "ok"
    sandbox.exec("mkfifo fifo")
    with pytest.raises(SandboxError, match="regular file"):
        sandbox.read_file("fifo")


# --- limits ---
@ROOT_ONLY
def test_timeout_kills_the_whole_tree(sandbox: BwrapSandbox) -> None:
    marker = f"{int(time.time() * 1000) % 100000}.5"
    script = (
        f"trap '' TERM; (setsid sh -c \"trap '' TERM; exec sleep 1{marker}\" &); "
        f"(sh -c 'sleep 2{marker} & exit 0' &); sleep 3{marker}"
    )
    result = sandbox.exec(script, timeout=1)
    assert result.timed_out and result.exit_code == 137 and not result.ok
    assert 0.9 < result.duration < 6
    assert sandbox._cgroups is not None and sandbox._cgroups.procs() == set()
    assert all(_host_pids_with(f"sleep {n}{marker}") == [] for n in (1, 2, 3))
    assert sandbox.exec("echo usable").stdout == "usable\n"


@ROOT_ONLY
def test_oom_is_reported(make) -> None:
    sandbox = make(memory_mb=64)
    grab = "x = bytearray(128 << 20)\nx[::4096] = b'x' * len(x[::4096])\nprint('survived')"
    result = sandbox.exec([SANDBOX_PYTHON, "-c", grab])
    assert result.oom_killed and result.exit_code == 137 and "survived" not in result.stdout and not result.ok
    small = sandbox.exec([SANDBOX_PYTHON, "-c", "x = bytearray(8 << 20); print('fine')"])
    assert small.stdout == "fine\n" and not small.oom_killed


@ROOT_ONLY
def test_pids_limit_stops_a_fork_bomb(make) -> None:
    sandbox = make(pids=64)
    bomb = textwrap.dedent("""
        import os, time
        children = 0
        while children < 1000:
            try:
                pid = os.fork()
            except OSError as exc:
                print("stopped", children, exc.errno)
                break
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            children += 1
    """)
    result = sandbox.exec([SANDBOX_PYTHON, "-c", bomb], timeout=20)
    word, count, errno_ = result.stdout.split()
    assert word == "stopped" and int(count) < 64 and int(errno_) == 11
    assert result.duration < 10  # the sleeping children died with the exec's namespace
    assert sandbox.exec("echo usable").stdout == "usable\n"


@ROOT_ONLY
def test_disk_limit_covers_workdir_and_tmp(make) -> None:
    sandbox = make(disk_mb=16)
    result = sandbox.exec("dd if=/dev/zero of=big bs=1M count=64")
    assert result.exit_code != 0 and "No space left" in result.stderr
    assert int(sandbox.exec("stat -c %s big").stdout) <= 16 << 20
    assert "No space left" in sandbox.exec("dd if=/dev/zero of=/tmp/more bs=1M count=4").stderr
    assert "No space left" in sandbox.exec("dd if=/dev/zero of=/dev/shm/more bs=1M count=4").stderr
    with pytest.raises(SandboxError, match="No space left"):
        sandbox.write_file("/tmp/x", b"x" * (1 << 20))
    too_big = io.BytesIO()
    with tarfile.open(fileobj=too_big, mode="w") as tar:
        info = tarfile.TarInfo("huge.bin")
        info.size = 32 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    with pytest.raises(SandboxError, match="No space left"):
        sandbox.put_archive("/workspace", too_big.getvalue())
    sandbox.exec("rm -f big /tmp/more /dev/shm/more")
    assert sandbox.exec("dd if=/dev/zero of=ok bs=1M count=8").exit_code == 0


@ROOT_ONLY
def test_limits_are_set_on_the_sandbox_cgroups(make) -> None:
    sandbox = make(memory_mb=100, pids=50, cpus=0.5)
    group = sandbox._cgroups
    assert group is not None
    assert int((group.paths["memory"] / "memory.limit_in_bytes").read_text()) == 100 << 20
    assert int((group.paths["pids"] / "pids.max").read_text()) == 50
    quota, period = (int((group.paths["cpu"] / f).read_text()) for f in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
    assert quota / period == 0.5


def test_concurrent_execs_and_a_timeout_spare_the_others(sandbox: BwrapSandbox) -> None:
    from concurrent.futures import ThreadPoolExecutor

    start = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        slow = pool.submit(sandbox.exec, "sleep 0.8; echo slow", timeout=10)
        stuck = pool.submit(sandbox.exec, "sleep 30", timeout=0.3)
        quick = [pool.submit(sandbox.exec, f"echo {i}") for i in range(6)]
        assert [q.result().stdout for q in quick] == [f"{i}\n" for i in range(6)]
        assert stuck.result().timed_out
        assert slow.result().stdout == "slow\n" and slow.result().ok
    assert time.monotonic() - start < 8


def test_a_bwrap_that_never_reports_its_sandbox_fails_the_exec_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentgym.sandboxes import bwrap_process

    monkeypatch.setattr(bwrap_process, "START_TIMEOUT_S", 0.5)
    marker = f"{int(time.time() * 1000) % 100000}.25"
    # A stand-in for a wedged bwrap: it holds the info fd open and never writes to it.
    stuck = ["sh", "-c", f"exec sleep 6{marker}", "sh"]
    with pytest.raises(SandboxError, match="did not report its sandbox"):
        bwrap_process.spawn(stuck, ["true"], {"PATH": "/usr/bin:/bin"}, False, None, lambda pid: None, None)
    assert _host_pids_with(f"sleep 6{marker}") == []  # killed and reaped, not left behind


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def test_huge_output_is_truncated_in_bounded_memory(make) -> None:
    cap = 16 << 20
    sandbox = make(output_cap_bytes=cap)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak RSS, to the current RSS
    before = _rss_kb("VmHWM")
    result = sandbox.exec("echo START; head -c 200000000 /dev/zero | tr '\\0' a; echo; echo END", timeout=120)
    growth = (_rss_kb("VmHWM") - before) << 10
    assert result.exit_code == 0
    assert result.stdout.startswith("START\naaaa") and result.stdout.endswith("aaaa\nEND\n")
    assert result.stdout_truncated == 200_000_011 - cap and "bytes of output truncated" in result.stdout
    assert len(result.stdout.encode()) < cap + 200
    # The kept head and tail (about a cap) plus, for a moment, their decoded text (about two more):
    # a few caps, never the 200 MB stream.
    assert growth < 4 * cap, f"RSS grew by {growth >> 20} MB"


# --- lifecycle ---
def test_reset_gives_a_clean_sandbox(sandbox: BwrapSandbox) -> None:
    sandbox.exec("echo x > a; mkdir -p d/e; echo y > /tmp/b; echo z > /dev/shm/c")
    sandbox.reset()
    assert sandbox.exec("ls -A /workspace /tmp /dev/shm").stdout.split() == ["/dev/shm:", "/tmp:", "/workspace:"]
    assert sandbox.exec("stat -c %u:%a /workspace; stat -c %a /tmp").stdout.split() == [f"{sandbox.spec.uid}:755", "1777"]
    assert sandbox.exec("echo ok > a && cat a").stdout == "ok\n"


def test_snapshot_and_restore_round_trip(sandbox: BwrapSandbox) -> None:
    sandbox.exec("echo v1 > a; mkdir d; ln -s a link; chmod 700 d; echo t > /tmp/t")
    snap = sandbox.snapshot()
    sandbox.exec("echo v2 > a; echo new > b; rm /tmp/t")
    sandbox.restore(snap)
    state = sandbox.exec("cat a link /tmp/t; ls; stat -c %a:%u d").stdout.split()
    assert state == ["v1", "v1", "t", "a", "d", "link", f"700:{sandbox.spec.uid}"]
    sandbox.exec("echo v3 > a")
    sandbox.reset()  # back to the restore point, not to empty
    assert sandbox.read_file("a") == b"v1\n"
    with pytest.raises(SandboxError):
        sandbox.restore("snap-0000")
    with pytest.raises(SandboxError):
        sandbox.restore("../../etc")


def test_close_removes_directory_mount_cgroups_and_processes(sandbox: BwrapSandbox) -> None:
    import threading

    assert _mounted(sandbox.id) == (os.geteuid() == 0)
    worker = threading.Thread(target=sandbox.exec, args=("sleep 4242.25",), daemon=True)
    worker.start()
    deadline = time.monotonic() + 10
    while not _host_pids_with("sleep 4242.25", exact=True) and time.monotonic() < deadline:
        time.sleep(0.05)
    sandbox.close()
    worker.join(10)
    assert not worker.is_alive()
    assert not sandbox.dir.exists() and not _mounted(sandbox.id) and not CgroupSet(sandbox.id).exists()
    assert _host_pids_with("sleep 4242.25") == []
    with pytest.raises(SandboxClosedError):
        sandbox.exec("true")
    sandbox.close()  # idempotent


def test_wall_clock_limit_closes_the_sandbox(make) -> None:
    sandbox = make(wall_clock_s=1.0)
    assert sandbox.exec("sleep 5").timed_out  # cut at the sandbox's remaining lifetime
    with pytest.raises(SandboxClosedError):
        sandbox.exec("true")
    assert sandbox.closed and not sandbox.dir.exists()


def test_list_shows_live_sandboxes(sandbox: BwrapSandbox) -> None:
    info = {i.id: i for i in _BACKEND.list()}[sandbox.id]
    assert info.owner_pid == os.getpid() and info.owner_alive and info.spec_key == sandbox.spec.key()
    assert sandbox.id not in _BACKEND.gc()
    assert sandbox.exec("true").ok


@ROOT_ONLY
def test_gc_removes_cgroups_whose_directory_was_deleted(sandbox: BwrapSandbox) -> None:
    subprocess.run(["umount", "-l", str(sandbox.fs)], check=True)
    shutil.rmtree(sandbox.dir)
    assert CgroupSet(sandbox.id).exists()
    assert sandbox.id in {i.id for i in _BACKEND.list() if not i.owner_alive}
    assert sandbox.id in _BACKEND.gc()
    assert not CgroupSet(sandbox.id).exists()


def test_factory_hands_out_this_backend() -> None:
    from agentgym.sandboxes.factory import get_backend

    assert _REASON is None and isinstance(get_backend("bwrap"), BwrapBackend)


_OWNER_SCRIPT = """
import sys, threading, time
from agentgym.sandboxes.bwrap_backend import BwrapBackend
from agentgym.sandboxes.spec import SandboxSpec
backend = BwrapBackend()
for _ in range(3):
    sandbox = backend.create(SandboxSpec())
    threading.Thread(target=sandbox.exec, args=("sleep 4343.75",), daemon=True).start()
    print(sandbox.id, flush=True)
time.sleep(600)
"""


def test_gc_removes_everything_of_a_killed_owner() -> None:
    owner = subprocess.Popen([sys.executable, "-c", _OWNER_SCRIPT], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert owner.stdout is not None
        ids = [owner.stdout.readline().strip() for _ in range(3)]
        deadline = time.monotonic() + 20
        while len(_host_pids_with("sleep 4343.75", exact=True)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    listed = {i.id: i for i in _BACKEND.list()}
    assert all(i in listed and not listed[i].owner_alive for i in ids)
    assert set(ids) <= set(_BACKEND.gc())
    for sandbox_id in ids:
        assert not (sandboxes_root() / sandbox_id).exists()
        assert not _mounted(sandbox_id) and not CgroupSet(sandbox_id).exists()
    assert _host_pids_with("sleep 4343.75") == []
    assert not set(ids) & {i.id for i in _BACKEND.list()}
