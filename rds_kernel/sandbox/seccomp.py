"""The seccomp filter every run installs before the scientist's code starts (x86-64 only).

The namespaces already keep a run away from the host and from the job's other runs; the filter
takes away kernel features a run has no use for, which are either attack surface or ways for
two runs of one job to signal each other (which would break sample-and-aggregate):

- making or joining namespaces (``unshare``, ``setns``, ``clone`` with namespace flags,
  ``clone3``), mounting, ``pivot_root``;
- ``ptrace``, ``process_vm_readv/writev``, ``pidfd_getfd``;
- kernel keyrings (per user, so shared by every run of the sandbox uid), ``bpf``,
  ``perf_event_open``, ``userfaultfd``, ``io_uring``, module loading, ``kexec``, ``syslog``;
- file locks (``flock``, ``fcntl`` record locks) and ``inotify``/``fanotify``, which a run can
  set on the shared read-only files for a concurrent run to see, and page-cache probes
  (``cachestat``, ``preadv2`` with ``RWF_NOWAIT``).

Denied calls fail with ``EPERM`` (``clone3`` with ``ENOSYS``, so the C library falls back to
``clone``); 32-bit (x32) system call numbers are refused; any other architecture kills the
process. Timing is not a system call: side channels through it remain (see docs).

The node builds the program (here) and sends it to the sandbox as bytes; the worker installs
it with ``prctl(PR_SET_SECCOMP)``. :func:`program` is None where the filter is not written for
the machine; runs then go without it and say so in the owner's log.
"""

from __future__ import annotations

import errno
import platform
import struct
from dataclasses import dataclass

__all__ = ["program"]

AUDIT_ARCH_X86_64 = 0xC000003E
X32_BIT = 0x40000000

RET_ALLOW = 0x7FFF0000
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000

# BPF: load a 32-bit word at an absolute offset of struct seccomp_data; compare; return
LD_ABS = 0x20
JEQ = 0x15
JGE = 0x35
JSET = 0x45
RET = 0x06

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
NR, ARCH = 0, 4


def _arg(i: int) -> int:
    return 16 + 8 * i  # the low 32 bits of args[i] (little-endian)


DENIED = {
    "ptrace": 101,
    "syslog": 103,
    "uselib": 134,
    "pivot_root": 155,
    "acct": 163,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "lookup_dcookie": 212,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "inotify_init": 253,
    "unshare": 272,
    "inotify_init1": 294,
    "perf_event_open": 298,
    "fanotify_init": 300,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_getfd": 438,
    "mount_setattr": 442,
    "cachestat": 451,
    "flock": 73,
}
CLONE, CLONE3, FCNTL, PREADV2 = 56, 435, 72, 327
NAMESPACE_FLAGS = 0x7E020080  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME
LOCK_COMMANDS = (5, 6, 7, 36, 37, 38)  # F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK/SETLK/SETLKW
RWF_NOWAIT = 0x8


@dataclass
class _Op:
    code: int
    k: int
    jt: int | str = 0  # an offset, or a label resolved by _assemble
    jf: int | str = 0


def _assemble(ops: list[_Op | str]) -> bytes:
    labels: dict[str, int] = {}
    code: list[_Op] = []
    for op in ops:
        if isinstance(op, str):
            labels[op] = len(code)
        else:
            code.append(op)
    out = bytearray()
    for i, op in enumerate(code):
        jt = labels[op.jt] - i - 1 if isinstance(op.jt, str) else op.jt
        jf = labels[op.jf] - i - 1 if isinstance(op.jf, str) else op.jf
        out += struct.pack("<HBBI", op.code, jt, jf, op.k)
    return bytes(out)


def _x86_64() -> bytes:
    eperm = RET_ERRNO | errno.EPERM
    ops: list[_Op | str] = [
        _Op(LD_ABS, ARCH),
        _Op(JEQ, AUDIT_ARCH_X86_64, 1, 0),
        _Op(RET, RET_KILL_PROCESS),
        _Op(LD_ABS, NR),
        _Op(JGE, X32_BIT, "deny", 0),
        *[_Op(JEQ, nr, "deny", 0) for nr in sorted(DENIED.values())],
        _Op(JEQ, CLONE3, "nosys", 0),
        _Op(JEQ, CLONE, "clone", 0),
        _Op(JEQ, FCNTL, "fcntl", 0),
        _Op(JEQ, PREADV2, "preadv2", 0),
        _Op(RET, RET_ALLOW),
        "clone",
        _Op(LD_ABS, _arg(0)),
        _Op(JSET, NAMESPACE_FLAGS, "deny", "allow"),
        "fcntl",
        _Op(LD_ABS, _arg(1)),
        *[_Op(JEQ, cmd, "deny", 0) for cmd in LOCK_COMMANDS],
        _Op(RET, RET_ALLOW),
        "preadv2",
        _Op(LD_ABS, _arg(4)),
        _Op(JSET, RWF_NOWAIT, "deny", "allow"),
        "allow",
        _Op(RET, RET_ALLOW),
        "deny",
        _Op(RET, eperm),
        "nosys",
        _Op(RET, RET_ERRNO | errno.ENOSYS),
    ]
    return _assemble(ops)


def program() -> bytes | None:
    """The filter as ``struct sock_filter`` array bytes, or None on other machines."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return None
    return _x86_64()
