"""The attack suite (reference notes §7.3 and §7.5), run against the real sandbox.

Each test sends the sandbox a hostile function and pins what happens: the attack fails or is
cut off by a limit, the node side gets back only capped bytes, and (checked after every test
by ``nothing_left_behind``) no process of the sandbox survives the session.
"""

from __future__ import annotations

import json
import os
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rds_kernel.dp.aggregate import SampleAggregate, parse_output
from rds_kernel.sandbox import Limits, SandboxConfig
from tests.sandbox.helpers import QUICK, TEST_UID, run


def code(body: str) -> str:
    """A function ``f(df)`` with ``body`` (dedented) as its body."""
    return "def f(df):\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n"


def value(result: object) -> object:
    assert result.ok, (result.describe(), result.log)  # type: ignore[attr-defined]
    return json.loads(result.output)  # type: ignore[attr-defined]


def test_a_benign_function_runs_and_returns_json_numbers(config: SandboxConfig) -> None:
    """The baseline: pandas in, a JSON number out, under the sandbox uid."""
    [r] = run(config, code("import os\nprint(os.getuid())\nreturn df['x'].mean()"))
    assert value(r) == 2.0
    assert r.status["isolated"] is True
    if os.geteuid() == 0:
        assert r.log.strip() == str(TEST_UID)


def test_files_outside_the_job_cannot_be_read(config: SandboxConfig, tmp_path: Path) -> None:
    """/etc, home directories, the node directory and its database, the repository: absent."""
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    (node_dir / "node.db").write_text("secret ledger")
    (node_dir / "node.toml").write_text('name = "secret"')
    targets = [
        "/etc/passwd",
        "/etc/shadow",
        "/etc/hostname",
        str(Path.home() / ".bashrc"),
        str(node_dir / "node.db"),
        str(node_dir / "node.toml"),
        str(Path(__file__).resolve()),
        "/proc/self/environ",
        "/proc/1/cmdline",
        "/sys/kernel/hostname",
    ]
    body = f"""
    readable = []
    for path in {targets!r}:
        try:
            with open(path, 'rb') as fh:
                fh.read(1)
            readable.append(path)
        except OSError:
            pass
    import os
    print(readable, os.listdir('/'), os.listdir('/proc'), os.listdir('/tmp'))
    return float(len(readable))
    """
    [r] = run(config, code(body))
    assert value(r) == 0.0, r.log


def test_the_environment_holds_no_secrets(
    config: SandboxConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node's environment (tokens, database URLs) is cleared: the run sees only ours."""
    monkeypatch.setenv("RDS_NODE_SECRET", "s3cr3t-token")
    body = """
    import os
    env = dict(os.environ)
    print(sorted(env))
    return float(any('s3cr3t' in v for v in env.values()))
    """
    [r] = run(config, code(body))
    assert value(r) == 0.0
    assert "RDS_NODE_SECRET" not in r.log and "PATH" not in r.log


@pytest.fixture
def listeners() -> Iterator[tuple[socket.socket, socket.socket, int, str]]:
    """A TCP listener on the host's loopback and an abstract unix socket, both ours."""
    tcp = socket.create_server(("127.0.0.1", 0))
    tcp.setblocking(False)
    name = f"rds-test-{os.getpid()}-{time.monotonic_ns()}"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind("\0" + name)
    unix.listen()
    unix.setblocking(False)
    try:
        yield tcp, unix, tcp.getsockname()[1], name
    finally:
        tcp.close()
        unix.close()


def test_no_network_reaches_the_host(
    config: SandboxConfig, listeners: tuple[socket.socket, socket.socket, int, str]
) -> None:
    """TCP and UDP to loopback, abstract unix sockets, DNS: all fail; our listeners see nothing."""
    tcp, unix, port, name = listeners
    body = f"""
    import socket
    reached = []
    for attempt in ('tcp', 'udp', 'unix', 'dns', 'internet'):
        try:
            if attempt == 'tcp':
                socket.create_connection(('127.0.0.1', {port}), timeout=1).close()
            elif attempt == 'udp':
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                u.sendto(b'x', ('127.0.0.1', {port}))
            elif attempt == 'unix':
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect('\\0{name}')
            elif attempt == 'dns':
                socket.getaddrinfo('example.com', 80)
            else:
                socket.create_connection(('1.1.1.1', 53), timeout=1).close()
            reached.append(attempt)
        except OSError as exc:
            print(attempt, type(exc).__name__, exc)
    return float(len(reached))
    """
    [r] = run(config, code(body))
    assert value(r) == 0.0, r.log
    for listener in (tcp, unix):
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_processes_outside_the_run_are_invisible(config: SandboxConfig) -> None:
    """The run is PID 1 of its own namespace: no other process can be signalled or traced."""
    body = """
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    seen, traced = [], []
    for pid in range(2, 4000):
        try:
            os.kill(pid, 0)
            seen.append(pid)
        except OSError:
            pass
        if libc.ptrace(16, pid, 0, 0) == 0:  # PTRACE_ATTACH
            traced.append(pid)
    print(os.getpid(), seen, traced)
    return float(os.getpid() == 1 and not seen and not traced)
    """
    [r] = run(config, code(body))
    assert value(r) == 1.0, r.log


def test_the_filesystem_is_read_only_except_a_small_private_tmp(config: SandboxConfig) -> None:
    """Writes to /, /usr, the worker program, /dev and /proc fail; /tmp is bounded."""
    body = """
    import tempfile
    written = []
    for path in ('/pwned', '/usr/lib/pwned', '/sandbox/worker.py', '/sandbox/pwned',
                 '/dev/pwned', '/proc/pwned'):
        try:
            with open(path, 'w') as fh:
                fh.write('x')
            written.append(path)
        except OSError as exc:
            print(path, exc)
    big = 0
    try:
        with open(tempfile.gettempdir() + '/big', 'wb') as fh:
            for _ in range(50):
                fh.write(b'x' * (1 << 20))
                big += 1
    except OSError as exc:
        print('big file stopped after', big, 'MiB:', exc)
    small = 0
    try:
        for i in range(100000):
            with open(f'{tempfile.gettempdir()}/small{i}', 'w') as fh:
                fh.write('x')
            small += 1
    except OSError as exc:
        print('small files stopped after', small, exc)
    return [float(len(written)), float(big), float(small)]
    """
    [r] = run(config, code(body))
    written, big_mib, small_files = value(r)  # type: ignore[misc]
    assert written == 0, r.log
    assert big_mib <= 16  # RLIMIT_FSIZE
    assert small_files <= 1024  # the tmpfs has 1024 inodes


def test_a_fork_bomb_stops_at_the_process_limit(config: SandboxConfig) -> None:
    """RLIMIT_NPROC (per run, in its user namespace) stops it; the forks die with the run."""
    body = """
    import os, time
    n = 0
    try:
        while True:
            if os.fork() == 0:
                time.sleep(1000)
            n += 1
    except OSError as exc:
        print('stopped after', n, exc)
    return float(n)
    """
    [r] = run(config, code(body))
    assert value(r) < QUICK.processes


def test_many_threads_stop_at_the_process_limit(config: SandboxConfig) -> None:
    """Threads count as processes: a thousand cannot start."""
    body = """
    import threading, time
    n = 0
    try:
        for _ in range(1000):
            threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()
            n += 1
    except RuntimeError as exc:
        print('stopped after', n, exc)
    import os
    os._exit(0) if n >= 1000 else None
    return float(n)
    """
    [r] = run(config, code(body))
    assert value(r) < QUICK.processes


def test_an_infinite_loop_is_killed_by_the_cpu_limit(config: SandboxConfig) -> None:
    """RLIMIT_CPU ends a busy loop before the wall clock does."""
    limits = Limits(cpu_seconds=1, wall_seconds=20.0)
    started = time.monotonic()
    [r] = run(config, code("while True:\n    pass"), limits=limits)
    assert not r.ok
    assert not r.status["timed_out"]
    assert r.status["exit_code"] < 0  # a signal: SIGXCPU, then SIGKILL at the hard limit
    assert time.monotonic() - started < 15


def test_sleeping_forever_is_killed_by_the_wall_clock(config: SandboxConfig) -> None:
    """A run that uses no CPU is still killed at its wall-clock limit."""
    limits = Limits(cpu_seconds=10, wall_seconds=1.0)
    [r] = run(config, code("import time\ntime.sleep(1000)"), limits=limits)
    assert not r.ok
    assert r.status["timed_out"]
    assert r.status["wall_seconds"] < 3
    assert r.describe() == "killed at the wall-clock limit"


def test_setsid_and_fork_do_not_escape_the_kill(config: SandboxConfig) -> None:
    """A new session, a double fork, and the parent hanging: all gone after the wall clock."""
    body = """
    import os, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(1000)
        os._exit(0)
    time.sleep(1000)
    """
    [r] = run(config, code(body), limits=Limits(cpu_seconds=10, wall_seconds=1.0))
    assert r.status["timed_out"]
    # nothing_left_behind checks that no process of the sandbox uid survived


def test_a_50_gb_allocation_fails(config: SandboxConfig) -> None:
    """RLIMIT_AS turns a huge allocation into MemoryError instead of an OOM on the host."""
    [r] = run(config, code("x = bytearray(50 * 10**9)\nreturn 1.0"))
    assert not r.ok
    assert "MemoryError" in r.log


def test_a_flood_of_output_is_capped(config: SandboxConfig) -> None:
    """1 GB on stdout: the node keeps the first log_bytes and drops the rest."""
    body = """
    import sys
    chunk = 'x' * (1 << 20)
    for _ in range(1024):
        sys.stdout.write(chunk)
    return 1.0
    """
    limits = Limits(cpu_seconds=20, wall_seconds=20.0, log_bytes=4096)
    [r] = run(config, code(body), limits=limits)
    assert len(r.log) < 4096 + 200
    assert "dropped" in r.log


def test_a_result_that_is_not_json_numbers_counts_as_failed(config: SandboxConfig) -> None:
    """Garbage written straight to the result pipe, or text, is never a DP output."""
    job = SampleAggregate.from_dict({"bounds": [0, 1], "epsilon": 1.0, "partitions": 1})
    garbage = """
    import os
    for fd in range(3, 64):
        try:
            os.write(fd, b'{not json')
        except OSError:
            pass
    return 0.5
    """
    [r] = run(config, code(garbage))
    assert parse_output(r.output, job) is None
    [r] = run(config, code("return 'a string'"))
    assert not r.ok and parse_output(r.output, job) is None
    [r] = run(config, code("return float('nan')"))
    assert parse_output(r.output, job) is None


def test_a_huge_result_counts_as_failed(config: SandboxConfig) -> None:
    """A result above result_bytes is cut off and discarded."""
    limits = Limits(cpu_seconds=5, wall_seconds=10.0, result_bytes=64 * 1024)
    [r] = run(config, code("return [0.0] * 1_000_000"), limits=limits)
    assert r.output is None
    assert not r.ok


def test_subprocesses_find_no_programs(config: SandboxConfig) -> None:
    """There is no shell or other program in the sandbox to run."""
    body = """
    import os, subprocess
    ran = 0
    for argv in (['/bin/sh', '-c', 'id'], ['/usr/bin/id'], ['sh']):
        try:
            subprocess.run(argv, check=False)
            ran += 1
        except OSError as exc:
            print(argv, exc)
    return float(ran + (os.system('id') == 0))
    """
    [r] = run(config, code(body))
    assert value(r) == 0.0, r.log


def test_kernel_features_a_run_does_not_need_are_refused(config: SandboxConfig) -> None:
    """The seccomp filter: new namespaces, ptrace, keyrings, io_uring, inotify, file locks."""
    body = """
    import ctypes, fcntl, os, tempfile, threading
    libc = ctypes.CDLL(None, use_errno=True)
    def errno_of(result):
        return ctypes.get_errno() if result == -1 else 0
    refused = {
        'unshare': errno_of(libc.unshare(0x10000000)),
        'keyctl': errno_of(libc.syscall(250, 0, 0, 0, 0, 0)),
        'ptrace': errno_of(libc.ptrace(0, 0, 0, 0)),
        'io_uring_setup': errno_of(libc.syscall(425, 1, 0)),
        'bpf': errno_of(libc.syscall(321, 0, 0, 0)),
        'inotify_init1': errno_of(libc.inotify_init1(0)),
    }
    try:
        with open(tempfile.gettempdir() + '/lock', 'w') as fh:
            fcntl.lockf(fh, fcntl.LOCK_EX)
        refused['lockf'] = 0
    except OSError as exc:
        refused['lockf'] = exc.errno
    # what a run does need still works: fork and threads
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    thread = threading.Thread(target=print, args=('thread ok',))
    thread.start()
    thread.join()
    print(refused)
    return [float(v) for v in refused.values()]
    """
    [r] = run(config, code(body))
    assert value(r) == [1.0] * 7, r.log  # EPERM for each
    assert "thread ok" in r.log


def test_the_node_keeps_working_after_the_attacks(config: SandboxConfig) -> None:
    """After everything above, a new sandbox starts and a benign run works as before."""
    [r] = run(config, code("return float(len(df))"))
    assert value(r) == 3.0
