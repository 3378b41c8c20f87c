"""The seccomp filter of bubblewrap sandboxes: close to Docker's default profile, and no new user namespaces."""

from __future__ import annotations

import errno
import struct

# Syscalls a sandbox never needs and Docker's default seccomp profile also refuses: kernel keyrings (not
# namespaced), bpf, perf, userfaultfd, io_uring, module and kexec loading, and mounting (which an
# unprivileged user could do inside a user namespace of its own).
_BLOCKED = ("keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
            "io_uring_enter", "io_uring_register", "kexec_load", "kexec_file_load", "init_module", "finit_module",
            "delete_module", "mount", "umount2", "pivot_root", "open_tree", "move_mount", "fsopen", "fsconfig",
            "fsmount", "fspick", "mount_setattr", "setns")
_SYSCALLS = {
    "x86_64": (0xC000003E, dict(clone=56, clone3=435, unshare=272, setns=308, mount=165, umount2=166, pivot_root=155,
               open_tree=428, move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433, mount_setattr=442,
               keyctl=250, add_key=248, request_key=249, bpf=321, perf_event_open=298, userfaultfd=323,
               io_uring_setup=425, io_uring_enter=426, io_uring_register=427, kexec_load=246, kexec_file_load=320,
               init_module=175, finit_module=313, delete_module=176)),
    "aarch64": (0xC00000B7, dict(clone=220, clone3=435, unshare=97, setns=268, mount=40, umount2=39, pivot_root=41,
                open_tree=428, move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433, mount_setattr=442,
                keyctl=219, add_key=217, request_key=218, bpf=280, perf_event_open=241, userfaultfd=282,
                io_uring_setup=425, io_uring_enter=426, io_uring_register=427, kexec_load=104, kexec_file_load=294,
                init_module=105, finit_module=273, delete_module=106)),
}
CLONE_NEWUSER = 0x10000000


def seccomp_program(machine: str | None = None) -> bytes | None:
    """A seccomp filter for bwrap --seccomp that refuses _BLOCKED and new user namespaces (None: unknown CPU)."""
    import platform

    arch = _SYSCALLS.get(machine or platform.machine())
    if arch is None:
        return None
    audit_arch, nr = arch
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    prog: list[tuple[int, int | str, int | str, int]] = [
        (ld, 0, 0, 4), (jeq, 1, 0, audit_arch), (ret, 0, 0, 0x00050000 | errno.ENOSYS),  # a foreign ABI: refuse
        (ld, 0, 0, 0),
        (jge, "eperm", 0, 0x40000000),  # x32 numbers would slip past the checks below
        *((jeq, "eperm", 0, nr[name]) for name in _BLOCKED),
        # clone3 keeps its flags in memory a filter cannot read: ENOSYS makes libc fall back to clone().
        (jeq, "enosys", 0, nr["clone3"]),
        (jeq, "flags", 0, nr["clone"]),
        (jeq, "flags", 0, nr["unshare"]),
        (ret, 0, 0, 0x7FFF0000),
    ]
    labels = {"flags": len(prog), "eperm": len(prog) + 3, "enosys": len(prog) + 4}
    prog += [(ld, 0, 0, 16), (jset, "eperm", 0, CLONE_NEWUSER), (ret, 0, 0, 0x7FFF0000),
             (ret, 0, 0, 0x00050000 | errno.EPERM), (ret, 0, 0, 0x00050000 | errno.ENOSYS)]

    def offset(i: int, target: int | str) -> int:
        return labels[target] - i - 1 if isinstance(target, str) else target

    return b"".join(struct.pack("=HBBI", code, offset(i, jt), offset(i, jf), k)
                    for i, (code, jt, jf, k) in enumerate(prog))
