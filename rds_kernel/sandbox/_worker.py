"""The program that runs inside the sandbox: a template process that forks one child per run.

This file is handed to the sandbox as data (never imported by the node) and runs as
``python -I -S -B worker.py``. It needs only the standard library until it pre-imports numpy,
pandas and pyarrow; it never imports rds_kernel, which is why it is one self-contained file.

Protocol, over the control socket whose fd number is ``argv[1]`` (``SOCK_SEQPACKET``, one JSON
message each):

1. the node sends the job: ``{"source", "entry", "mode", "uid", "gid", "limits", "env"}``;
2. the template pre-imports, drops to the sandbox uid, applies its own limits, checks that runs
   can be isolated from each other, and answers ``{"ready": true, "isolated": ...}`` (or
   ``{"ready": false, "error": ...}``);
3. for each run the node sends ``{"run": i}`` with four file descriptors attached: the input
   (an Arrow IPC stream in a sealed memfd), the result pipe, the log pipe and the status pipe;
   a DP job's runs add ``"kill_at"``, the ``CLOCK_MONOTONIC`` time (the same clock in the node
   and in the sandbox, which has no time namespace) at which the run is killed, so that the
   end of a run is fixed by the node's timetable, not by how quickly it was started.

For each run the template forks a **supervisor**, which moves into fresh user, mount, network,
IPC, PID and UTS namespaces and forks the **runner** as PID 1 of the new PID namespace. The
runner hides ``/proc``, mounts a private size-limited ``/tmp`` (the job's ``scratch``
directory), drops every capability,
installs the node's seccomp filter, sets the run's rlimits, reads its input and only then
compiles and calls the scientist's function. So
runs of one job cannot see each other's input, files, processes, sockets or IPC objects, and
none of them can see the template (which never reads any input). The supervisor enforces the
wall-clock limit by killing the runner, which takes every process of its PID namespace with it
(``setsid`` does not escape), and reports how the run ended on the status pipe, which the runner
never holds. The scientist's code only ever reaches the result and log pipes; the node treats
both as hostile.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any

MAX_MESSAGE = 4 * 1024 * 1024

# <sched.h> and <sys/mount.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REC = 0x4000
MS_PRIVATE = 0x40000
# <linux/prctl.h> and <linux/capability.h>
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAP_VERSION_3 = 0x20080522
CAP_LAST = 63

# Libraries must not start threads in the template: it forks, and a fork copies one thread.
QUIET_THREADS = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "JE_ARROW_MALLOC_CONF": "background_thread:false",
    "ARROW_DEFAULT_MEMORY_POOL": "system",
}

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


# ---------------------------------------------------------------- the template


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    job = json.loads(control.recv(MAX_MESSAGE))
    try:
        _prepare_template(job)
    except BaseException as exc:  # report why, then give up: the node refuses the job
        control.send(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"}).encode())
        raise
    isolated, why = _probe_isolation()
    reply = {"ready": True, "isolated": isolated, "isolation_error": why}
    control.send(json.dumps(reply).encode())
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    children: set[int] = set()
    while True:
        message, fds, _flags, _addr = socket.recv_fds(control, MAX_MESSAGE, 4)
        if not message:
            break
        children = _reap(children)
        request = json.loads(message)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                control.close()
                kill_at = request.get("kill_at")
                _supervise(job, int(request["run"]), fds, None if kill_at is None else kill_at)
            finally:
                os._exit(70)
        children.add(pid)
        for fd in fds:
            os.close(fd)
    for pid in children:
        os.waitpid(pid, 0)


def _prepare_template(job: dict[str, Any]) -> None:
    os.environ.clear()
    os.environ.update(QUIET_THREADS)
    os.environ.update(job.get("env", {}))
    # Started with -S: the environment's site-packages are added only now, by trusted code.
    import site

    site.main()
    # Imported once here, so each run starts in milliseconds instead of half a second.
    import numpy
    import pandas
    import pyarrow
    import pyarrow.ipc

    pyarrow.set_cpu_count(1)
    pyarrow.set_io_thread_count(1)
    # A run's input conversion and output encoding, on a frame of no data: what they import
    # lazily (pyarrow's pandas shim and pandas_compat, ...) is imported now, before the uid
    # drop, so no run needs to read the environment to get its input or send its output.
    sample = pyarrow.table({"x": pyarrow.array([0.5])}).to_pandas(use_threads=False)
    _output(sample)
    _numbers(sample["x"].mean())
    del numpy, pandas, sample
    _drop_to(job)
    limits = job["limits"]
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_NOFILE, limits["open_files"] + 16)
    if job.get("template_processes"):
        # counts every process of the sandbox uid on the host; each run gets its own below
        _limit(resource.RLIMIT_NPROC, job["template_processes"])


def _drop_to(job: dict[str, Any]) -> None:
    """Switch from root to the sandbox's unprivileged uid (which also drops every capability)."""
    if os.geteuid() != 0:
        return
    uid, gid = int(job["uid"]), int(job["gid"])
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.geteuid() == 0 or os.getuid() == 0:
        raise PermissionError("could not leave uid 0")


def _probe_isolation() -> tuple[bool, str | None]:
    """Whether runs can get their own namespaces here (some hosts forbid nested ones)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        isolated, why = _isolate()
        os.write(w, json.dumps([isolated, why]).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        answer = f.read()
    os.waitpid(pid, 0)
    try:
        isolated, why = json.loads(answer)
    except ValueError:
        return False, "the isolation probe failed"
    return bool(isolated), why


def _reap(children: set[int]) -> set[int]:
    alive = set()
    for pid in children:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if not done:
            alive.add(pid)
    return alive


def _limit(which: int, value: int) -> None:
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


# ---------------------------------------------------------------- the supervisor (one per run)


def _supervise(job: dict[str, Any], run: int, fds: list[int], kill_at: float | None) -> None:
    data_fd, result_fd, log_fd, status_fd = fds
    started = time.monotonic()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    isolated, why = _isolate()  # (which makes this process dumpable: /proc/self is its own)
    # If memory runs out, the kernel should kill a run (whose failure is its own default), not
    # the template (whose death would fail every later run of the job). Raising one's own
    # score needs no privilege; the runner inherits it.
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
    runner = os.fork()
    if runner == 0:
        os.close(status_fd)
        try:
            _run(job, isolated, data_fd, result_fd, log_fd)
        finally:
            os._exit(71)
    os.close(data_fd)
    os.close(result_fd)
    wall = float(job["limits"]["wall_seconds"])
    if kill_at is not None:
        wall = min(wall, max(0.0, float(kill_at) - time.monotonic()))
    timed_out = not _wait_for(runner, wall)
    if timed_out:
        # PID 1 of its namespace: killing it kills every process the run started
        os.kill(runner, signal.SIGKILL)
    _pid, status, usage = os.wait4(runner, 0)
    report = {
        "run": run,
        "isolated": isolated,
        "isolation_error": why,
        "timed_out": timed_out,
        "exit_code": os.waitstatus_to_exitcode(status),
        "wall_seconds": round(time.monotonic() - started, 4),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 4),
    }
    os.write(status_fd, json.dumps(report).encode())
    os.close(status_fd)
    os.close(log_fd)
    os._exit(0)


def _wait_for(pid: int, seconds: float) -> bool:
    """Wait until ``pid`` exits, at most ``seconds``; True if it exited."""
    pidfd = os.pidfd_open(pid)
    try:
        ready, _w, _x = select.select([pidfd], [], [], seconds)
        return bool(ready)
    finally:
        os.close(pidfd)


def _isolate() -> tuple[bool, str | None]:
    """New user, mount, network, IPC, PID and UTS namespaces for this run, mapped to our uid."""
    uid, gid = os.getuid(), os.getgid()
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # a uid change cleared it; the maps need it
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWUTS
    if _libc.unshare(flags) != 0:
        errno = ctypes.get_errno()
        return False, f"unshare: {os.strerror(errno)}"
    try:
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{uid} {uid} 1"),
            ("gid_map", f"{gid} {gid} 1"),
        ):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    except OSError as exc:
        return False, f"user namespace map: {exc.strerror}"
    return True, None


# ---------------------------------------------------------------- the runner (scientist code)


def _run(job: dict[str, Any], isolated: bool, data_fd: int, result_fd: int, log_fd: int) -> None:
    limits = job["limits"]
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if isolated:
        _private_mounts(job)
        _drop_capabilities()
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    filtered = _install_seccomp(job.get("seccomp"))
    null = os.open("/dev/null", os.O_RDONLY) if os.path.exists("/dev/null") else None
    if null is not None:
        os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    keep = sorted({0, 1, 2, data_fd, result_fd})
    for low, high in zip(keep, [*keep[1:], 65536], strict=True):
        os.closerange(low + 1, high)
    if not isolated:
        print("[rds sandbox] this run is not isolated from the job's other runs", file=sys.stderr)
        if job["mode"] == "dp":
            # a DP run that could reach the job's other runs would break the sensitivity: it
            # never reads its input, and counts as a failed run (the node refuses such jobs
            # before they start; this is for a run whose own isolation failed)
            _flush()
            os._exit(3)
    if not filtered:
        print("[rds sandbox] no seccomp filter on this machine", file=sys.stderr)
    _limit(resource.RLIMIT_CPU, int(limits["cpu_seconds"]))
    _limit(resource.RLIMIT_AS, int(limits["memory_bytes"]))
    _limit(resource.RLIMIT_FSIZE, int(limits["file_bytes"]))
    _limit(resource.RLIMIT_NOFILE, int(limits["open_files"]))
    _limit(resource.RLIMIT_NPROC, int(limits["processes"]))
    _limit(resource.RLIMIT_CORE, 0)
    scratch = job["scratch"]
    os.chdir(scratch if os.access(scratch, os.W_OK) else "/")
    try:
        frame = _read_input(data_fd)
        value = _call(job, frame)
        payload = _encode(value, job["mode"])
    except BaseException:
        _flush()
        traceback.print_exc()
        _flush()
        os._exit(1)
    _write_all(result_fd, payload)
    os.close(result_fd)
    _flush()
    os._exit(0)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken by the scientist
            stream.flush()


def _private_mounts(job: dict[str, Any]) -> None:
    limits = job["limits"]
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    # /proc (the sandbox's) would show the job's other runs; cover it with an empty read-only fs
    if os.path.isdir("/proc"):
        _check(
            _libc.mount(
                b"tmpfs", b"/proc", b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, b"size=4k,mode=555"
            ),
            "hide /proc",
        )
    size = f"size={int(limits['tmp_bytes'])},nr_inodes=1024,mode=1777".encode()
    for where in (job["scratch"].encode(), b"/dev/shm"):
        if os.path.isdir(where):
            _check(_libc.mount(b"tmpfs", where, b"tmpfs", MS_NOSUID | MS_NODEV, size), "tmpfs")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _drop_capabilities() -> None:
    """Give up the capabilities the new user namespace granted (bounding, ambient, all sets)."""
    for cap in range(CAP_LAST + 1):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the kernel's last capability
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def _install_seccomp(encoded: str | None) -> bool:
    """Install the node's seccomp program (see ``seccomp.py``); False if there is none."""
    if not encoded:
        return False
    import base64

    program = base64.b64decode(encoded)
    fprog = _SockFprog(len(program) // 8, program)
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")
    return True


def _read_input(fd: int) -> Any:
    import pyarrow as pa
    import pyarrow.ipc

    os.lseek(fd, 0, os.SEEK_SET)
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    table = pyarrow.ipc.open_stream(pa.py_buffer(data)).read_all()
    del data
    return table.to_pandas(use_threads=False)


def _call(job: dict[str, Any], frame: Any) -> Any:
    import numpy
    import pandas

    namespace: dict[str, Any] = {
        "__name__": "__rds_job__",
        "pd": pandas,
        "pandas": pandas,
        "np": numpy,
        "numpy": numpy,
    }
    code = compile(job["source"], "<job>", "exec")
    exec(code, namespace)  # noqa: S102 - this is the sandbox: scientist code runs only here
    function = namespace.get(job["entry"])
    if not callable(function):
        raise TypeError(f"the source defines no function named {job['entry']!r}")
    return function(frame)


def _encode(value: Any, mode: str) -> bytes:
    if mode == "dp":
        return json.dumps(_numbers(value)).encode()
    return json.dumps(_output(value), allow_nan=False).encode()


def _numbers(value: Any) -> float | list[float]:
    """A DP run's result as a float or a list of floats (NaN and inf pass; the node rejects)."""
    import numpy

    if isinstance(value, bool | numpy.bool_):
        raise TypeError("the function returned a bool; return a number or a list of numbers")
    if isinstance(value, int | float | numpy.integer | numpy.floating):
        return float(value)
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list | tuple):
        out = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise TypeError("the function must return a number or a list of numbers")
            out.append(float(item))
        return out
    raise TypeError(f"the function returned {type(value).__name__}, not numbers")


def _output(value: Any) -> dict[str, Any]:
    """A reviewed run's output: a table, bytes (e.g. a PNG) or plain JSON."""
    import base64

    import pandas

    if isinstance(value, pandas.Series):
        value = value.to_frame()
    if isinstance(value, pandas.DataFrame):
        frame = value.reset_index() if not isinstance(value.index, pandas.RangeIndex) else value
        columns = [str(c) for c in frame.columns]
        kinds = [_kind(frame[c]) for c in frame.columns]
        rows = [[_plain(v) for v in row] for row in frame.itertuples(index=False, name=None)]
        return {"type": "table", "columns": columns, "kinds": kinds, "rows": rows}
    if isinstance(value, bytes | bytearray):
        return {"type": "bytes", "base64": base64.b64encode(bytes(value)).decode()}
    return {"type": "json", "value": _plain(value)}


def _kind(column: Any) -> str:
    import pandas.api.types as t

    if t.is_bool_dtype(column):
        return "bool"
    if t.is_integer_dtype(column):
        return "int"
    if t.is_float_dtype(column):
        return "float"
    return "other"


def _plain(value: Any) -> Any:
    """Plain JSON values: numpy and pandas scalars unwrapped, NaN as None, times as ISO text."""
    import math

    import numpy

    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, numpy.generic):
        return _plain(value.item())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    try:
        import pandas

        if pandas.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    raise TypeError(f"cannot return a {type(value).__name__} from a reviewed job")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


if __name__ == "__main__":
    main()
