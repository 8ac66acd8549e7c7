"""Runs of one job cannot reach each other: the soundness of sample-and-aggregate rests on it.

If one partition's run could read another partition's rows (or leave it a message), one
person's data could move many outputs and the sensitivity (upper - lower)/k would be a lie.
"""

from __future__ import annotations

import json
import textwrap
import threading
import time

from rds_kernel.sandbox import Limits, SandboxConfig, Session
from tests.sandbox.helpers import arrow, run

# Each run leaves a file in /tmp, a SysV shared-memory segment, an abstract unix socket and a
# POSIX shared-memory object, all named after its own input size, then looks for the others'.
MARKERS = textwrap.dedent(
    """
    def f(df):
        import ctypes, os, socket, tempfile, time
        me = len(df)
        libc = ctypes.CDLL(None, use_errno=True)
        with open(f'{tempfile.gettempdir()}/mark{me}', 'w') as fh:
            fh.write(str(me))
        libc.shmget(7000 + me, 4096, 0o1666)  # IPC_CREAT | 0666
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(f'\\0mark{me}')
        listener.listen()
        time.sleep(0.5)  # while the other runs are alive
        found = []
        for other in range(1, 6):
            if other == me:
                continue
            if os.path.exists(f'{tempfile.gettempdir()}/mark{other}'):
                found.append(('file', other))
            if libc.shmget(7000 + other, 0, 0) != -1:
                found.append(('shm', other))
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(f'\\0mark{other}')
                found.append(('socket', other))
            except OSError:
                pass
        fds = sorted(int(n) for n in os.listdir('/dev/fd')) if os.path.isdir('/dev/fd') else []
        print(me, found, fds)
        return float(len(found))
    """
)


def inputs(sizes: list[int]) -> list[bytes]:
    return [arrow({"x": [float(i) for i in range(n)]}) for n in sizes]


def test_runs_leave_each_other_nothing_in_files_ipc_or_sockets(config: SandboxConfig) -> None:
    """Concurrent and consecutive runs of one job find none of each other's traces."""
    results = run(config, MARKERS, inputs=inputs([1, 2, 3, 4, 5]), parallel=3)
    for r in results:
        assert r.ok, (r.describe(), r.log)
        assert json.loads(r.output or b"") == 0.0, r.log
        assert r.status["isolated"] is True


def test_each_run_sees_only_its_own_partition(config: SandboxConfig) -> None:
    """A run gets its own rows, and no other file descriptor to read anyone else's."""
    source = textwrap.dedent(
        """
        def f(df):
            import os
            readable = 0
            for fd in range(3, 256):
                try:
                    os.lseek(fd, 0, 0)
                    if os.read(fd, 1):
                        readable += 1
                except OSError:
                    pass
            return [float(len(df)), float(readable)]
        """
    )
    results = run(config, source, inputs=inputs([3, 7, 11]), parallel=2)
    assert [json.loads(r.output or b"") for r in results] == [[3.0, 0.0], [7.0, 0.0], [11.0, 0.0]]


def test_a_run_that_kills_everything_harms_no_other_run(config: SandboxConfig) -> None:
    """``kill(-1, SIGKILL)`` reaches only the run's own processes."""
    source = textwrap.dedent(
        """
        def f(df):
            import os, signal, time
            if len(df) == 1:
                os.kill(-1, signal.SIGKILL)
            time.sleep(0.3)
            return float(len(df))
        """
    )
    results = run(config, source, inputs=inputs([1, 2, 3, 4]), parallel=4)
    assert not results[0].ok
    assert [json.loads(r.output or b"") for r in results[1:]] == [2.0, 3.0, 4.0]


def test_the_job_deadline_ends_every_run_still_going(config: SandboxConfig) -> None:
    """Runs not finished by the job's deadline end as failures, and the sandbox is killed."""
    source = "def f(df):\n    import time\n    time.sleep(100)\n"
    limits = Limits(cpu_seconds=10, wall_seconds=30.0)
    with Session(config, source, entry="f", mode="dp", limits=limits) as session:
        started = time.monotonic()
        results = session.run_all(inputs([1, 2, 3]), parallel=2, deadline=started + 1.0)
    assert time.monotonic() - started < 5
    assert [r.problem for r in results] == ["the job hit its wall-clock limit"] * 3


def test_kill_from_another_thread_stops_the_job(config: SandboxConfig) -> None:
    """What the node does at shutdown: every run still in flight ends as a failure, at once."""
    source = "def f(df):\n    import time\n    time.sleep(100)\n"
    limits = Limits(cpu_seconds=10, wall_seconds=30.0)
    with Session(config, source, entry="f", mode="dp", limits=limits) as session:
        threading.Timer(0.5, session.kill).start()
        started = time.monotonic()
        results = session.run_all(inputs([1, 2]), parallel=2)
    assert time.monotonic() - started < 5
    assert all(not r.ok for r in results)
