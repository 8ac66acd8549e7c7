"""The node's side of a sandbox: start one template per job, hand it runs, collect what comes back.

::

    with Session(config, source, entry="f", mode="reviewed", limits=Limits()) as session:
        [result] = session.run_all([arrow_bytes], parallel=1)

    with Session(config, source, entry="f", mode="dp", limits=Limits(wall_seconds=1.0)) as s:
        results = s.run_timetable(partitions, start=time.monotonic() + 2, slot=1.4, tolerance=0.1)

:meth:`Session.run_all` starts each run as soon as a slot frees (a reviewed job's single run,
and tests). :meth:`Session.run_timetable` is what DP jobs use: runs one at a time on a fixed
timetable, so that no run's start depends on what an earlier run did (predictable transactions,
Haeberlen, Pierce, Narayan, "Differential Privacy Under Fire", USENIX Security 2011).

A session is one job: one fresh sandbox (never reused for another job or scientist) whose
template forks a fresh, isolated process per run (see ``_worker.py``). Each run's input is an
Arrow IPC stream in a sealed memfd, handed over with its pipes as file descriptors, so no input
is ever on disk or visible to another run. Everything that comes back is capped and untrusted:
the result (at most ``limits.result_bytes``), stdout and stderr together (the first
``limits.log_bytes``, the rest drained and dropped), and the supervisor's status report.

Whatever happens, :meth:`Session.close` leaves no process behind: it kills the template's
process group, and bubblewrap (``--die-with-parent``) or the runs' PID namespaces take
everything else with it.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from importlib.resources import files
from types import TracebackType
from typing import Literal

from rds_kernel.errors import InternalError
from rds_kernel.sandbox import seccomp
from rds_kernel.sandbox.launch import (
    WORKER_PATH,
    SandboxConfig,
    bwrap_argv,
    check_available,
    runtime_paths,
    scratch_dir,
)
from rds_kernel.sandbox.limits import Limits
from rds_kernel.sandbox.results import CHUNK, RunPipes, RunResult, Stream

__all__ = ["RunMode", "Session"]

log = logging.getLogger("rds_kernel.sandbox")

RunMode = Literal["dp", "reviewed"]
Input = bytes | Callable[[], bytes]

_STATUS_BYTES = 64 * 1024
_TEMPLATE_LOG_BYTES = 64 * 1024
_GRACE = 2.0  # seconds past a run's own wall-clock limit before the node gives up on it
# Trusted settings for the sandbox's environment (scientist code gets nothing else).
_ENV = {"LANG": "C.UTF-8", "MPLBACKEND": "Agg"}


class Session:
    """One job's sandbox. Use as a context manager; :meth:`run_all` may be called once."""

    def __init__(
        self,
        config: SandboxConfig,
        source: str,
        *,
        entry: str,
        mode: RunMode,
        limits: Limits,
        start_timeout: float = 60.0,
    ) -> None:
        self.config = config
        self.limits = limits
        filter_program = seccomp.program()
        scratch = scratch_dir(runtime_paths(config.python))
        self._env = {**_ENV, "HOME": scratch, "TMPDIR": scratch}
        self._job = {
            "source": source,
            "entry": entry,
            "mode": mode,
            "uid": config.uid,
            "gid": config.gid,
            "limits": limits.to_dict(),
            "env": self._env,
            "scratch": scratch,
            "template_processes": 1024 if os.geteuid() == 0 else None,
            "seccomp": None
            if filter_program is None
            else base64.b64encode(filter_program).decode(),
        }
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._template_log = bytearray()
        self._killed = threading.Event()
        self._lock = threading.Lock()
        self._wake: int | None = None  # written by kill() to wake run_timetable at once
        # whether each run gets its own namespaces (set when the template is ready)
        self.isolated = False
        self.isolation_error: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Session:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def template_log(self) -> str:
        """What the template itself printed (start-up problems), for the owner."""
        return self._template_log.decode(errors="replace")

    def start(self) -> None:
        """Start the template and wait until it has imported its libraries and dropped its uid."""
        check_available(self.config)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        worker = _memfd(
            "rds-worker", files("rds_kernel.sandbox").joinpath("_worker.py").read_bytes()
        )
        try:
            command = [self.config.python, "-I", "-S", "-B"]
            if self.config.mode == "bwrap":
                argv = bwrap_argv(
                    self.config, worker, [*command, WORKER_PATH, str(child.fileno())], self._env
                )
                env: dict[str, str] = {}
            else:
                argv = [*command, f"/proc/self/fd/{worker}", str(child.fileno())]
                env = dict(self._env)
            self._proc = subprocess.Popen(  # noqa: S603 - our own fixed command line
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(child.fileno(), worker),
                start_new_session=True,
                env=env,
                cwd="/",
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
            os.close(worker)
        self._control = parent
        parent.send(json.dumps(self._job).encode())
        self._await_ready()

    def _await_ready(self) -> None:
        assert self._control is not None and self._proc is not None and self._proc.stdout
        deadline = time.monotonic() + self._start_timeout
        sel = selectors.DefaultSelector()
        sel.register(self._control, selectors.EVENT_READ, "control")
        sel.register(self._proc.stdout, selectors.EVENT_READ, "log")
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise InternalError("the sandbox did not start in time; nothing ran")
                for key, _ in sel.select(left):
                    if key.data == "log":
                        chunk = os.read(self._proc.stdout.fileno(), CHUNK)
                        if not chunk:
                            sel.unregister(self._proc.stdout)
                        self._keep_template_log(chunk)
                        continue
                    message = self._control.recv(_STATUS_BYTES)
                    reply = json.loads(message) if message else {}
                    if reply.get("ready") is True:
                        self.isolated = reply.get("isolated") is True
                        self.isolation_error = reply.get("isolation_error")
                        return
                    if self._killed.is_set():
                        raise InternalError("the sandbox was stopped while it started")
                    self._drain_template_log()
                    log.error("sandbox failed to start: %s %s", reply, self.template_log)
                    raise InternalError(
                        "the sandbox failed to start, so nothing ran; the node owner can find "
                        "the cause in the job's log"
                    )
        except BaseException:
            self.close()
            raise
        finally:
            sel.close()

    def close(self) -> None:
        """Stop the sandbox: let the template exit, then kill whatever is left. Idempotent."""
        with self._lock:
            control, self._control = self._control, None
        if control is not None:
            control.close()  # the template exits at end of input, once its runs are done
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2.0)
        self._kill_group()
        proc.wait()
        self._drain_template_log()
        if proc.stdout is not None:
            proc.stdout.close()

    def kill(self) -> None:
        """Kill the sandbox now (any thread). Runs still in flight end as failures."""
        self._killed.set()
        with self._lock:
            if self._wake is not None:
                with contextlib.suppress(OSError):
                    os.write(self._wake, b"x")
        self._kill_group()

    def _kill_group(self) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def _keep_template_log(self, chunk: bytes) -> None:
        room = _TEMPLATE_LOG_BYTES - len(self._template_log)
        if room > 0:
            self._template_log += chunk[:room]

    def _drain_template_log(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None or proc.stdout.closed:
            return
        os.set_blocking(proc.stdout.fileno(), False)
        try:
            while chunk := os.read(proc.stdout.fileno(), CHUNK):
                self._keep_template_log(chunk)
        except (BlockingIOError, OSError):
            pass

    # ------------------------------------------------------------------ runs

    def run_all(
        self,
        inputs: Sequence[Input],
        *,
        parallel: int,
        deadline: float | None = None,
        on_result: Callable[[RunResult], None] | None = None,
    ) -> list[RunResult]:
        """Run the function once per input, at most ``parallel`` at a time; results by index.

        ``deadline`` (a ``time.monotonic()`` value) bounds the whole job: runs still going then
        are killed with the sandbox and end as failures, like runs never started.
        """
        if self._control is None:
            raise InternalError("the sandbox session is not running")
        control = self._control
        results: dict[int, RunResult] = {}
        waiting = deque(range(len(inputs)))
        running: dict[int, RunPipes] = {}
        sel = selectors.DefaultSelector()
        sel.register(control, selectors.EVENT_READ, None)

        def finish(result: RunResult) -> None:
            results[result.index] = result
            if on_result is not None:
                on_result(result)

        try:
            while waiting or running:
                while waiting and len(running) < max(1, parallel) and not self._killed.is_set():
                    index = waiting.popleft()
                    run = self._dispatch(control, index, inputs[index])
                    running[index] = run
                    for stream in (run.result, run.log, run.status):
                        sel.register(stream.fd, selectors.EVENT_READ, (run, stream))
                now = time.monotonic()
                wake = min([r.deadline for r in running.values()] + [deadline or now + 60.0])
                if (deadline is not None and now >= deadline) or self._killed.is_set():
                    break
                sandbox_gone = False
                for key, _ in sel.select(max(0.0, wake - now)):
                    if key.data is None:  # the template hung up: the sandbox is gone
                        sandbox_gone = True
                        continue
                    run, stream = key.data
                    stream.read(sel)
                for index, run in list(running.items()):
                    if run.status.closed:
                        self._settle(sel, run)
                        finish(run.result_of())
                        del running[index]
                    elif time.monotonic() > run.deadline:
                        # the supervisor should have killed it by now; it has lost control
                        sandbox_gone = True
                if sandbox_gone:
                    break
        finally:
            for run in running.values():
                for stream in (run.result, run.log, run.status):
                    stream.close(sel)
            sel.close()
        if running or waiting:
            self.kill()
            reason = (
                "the job hit its wall-clock limit"
                if deadline is not None and time.monotonic() >= deadline
                else "the sandbox stopped"
            )
            for index in [*running, *waiting]:
                log_text = (
                    running[index].log.data.decode(errors="replace") if index in running else ""
                )
                finish(RunResult(index, None, log_text, {}, problem=reason))
        return [results[i] for i in range(len(inputs))]

    def run_timetable(
        self,
        inputs: Sequence[bytes],
        *,
        start: float,
        slot: float,
        tolerance: float,
    ) -> list[RunResult]:
        """Run the function once per input, one at a time, run ``i`` at ``start + i * slot``.

        Predictable transactions (Haeberlen, Pierce, Narayan, "Differential Privacy Under
        Fire", USENIX Security 2011): the start of every run is fixed in advance (``start`` is a
        ``time.monotonic()`` value), never "when the previous run ended", so no run can move
        another run's start, and the call returns at ``start + len(inputs) * slot`` however
        early the runs ended. Each run is killed by its supervisor ``limits.wall_seconds`` after
        its planned start (not after its actual start: a slow fork shortens the run, it does not
        shift its end); ``slot`` must leave room to start and kill it. A run that has not reported
        by the end of its slot ends as a failure (it is not waited for), and a run the node
        cannot dispatch within ``tolerance`` seconds of its start is not started at all and
        ends as a failure too; both are logged for the owner.

        Inputs are already serialized: the only work between two runs is handing the next one
        its memfd. If the sandbox is killed (:meth:`kill`, the node shutting down) the call
        returns at once, with the runs not done ending as failures.
        """
        if self._control is None:
            raise InternalError("the sandbox session is not running")
        control: socket.socket | None = self._control
        results: dict[int, RunResult] = {}
        active: dict[int, tuple[RunPipes, float]] = {}
        sel = selectors.DefaultSelector()
        sel.register(self._control, selectors.EVENT_READ, None)
        wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        sel.register(wake_r, selectors.EVENT_READ, "wake")
        with self._lock:
            self._wake = wake_w
        try:
            for index, data in enumerate(inputs):
                due = start + index * slot
                if self._pump(sel, active, results, until=due):
                    control = None  # the template hung up: no run can start any more
                if self._killed.is_set():
                    break
                late = time.monotonic() - due
                if control is None or late > tolerance:
                    why = (
                        "not started: the sandbox had stopped"
                        if control is None
                        else f"not started: the node was {late * 1000:.0f} ms late for its "
                        f"slot (at most {tolerance * 1000:.0f} ms allowed)"
                    )
                    log.warning("run %d of a DP job %s", index, why)
                    results[index] = RunResult(index, None, "", {}, problem=why)
                    continue
                try:
                    run = self._dispatch(control, index, data, due + self.limits.wall_seconds)
                except OSError as exc:
                    why = f"not started: the sandbox stopped ({exc.strerror})"
                    results[index] = RunResult(index, None, "", {}, problem=why)
                    control = None
                    continue
                active[index] = (run, due + slot)
                for stream in (run.result, run.log, run.status):
                    sel.register(stream.fd, selectors.EVENT_READ, (run, stream))
            if not self._killed.is_set():
                self._pump(sel, active, results, until=start + len(inputs) * slot)
        finally:
            for run, _end in active.values():
                for stream in (run.result, run.log, run.status):
                    stream.close(sel)
            sel.close()
            with self._lock:
                self._wake = None
            os.close(wake_r)
            os.close(wake_w)
        for index, (run, _end) in active.items():
            log_text = run.log.data.decode(errors="replace")
            results[index] = RunResult(index, None, log_text, {}, problem="the sandbox stopped")
        for index in range(len(inputs)):
            if index not in results:
                results[index] = RunResult(index, None, "", {}, problem="the sandbox stopped")
        return [results[i] for i in range(len(inputs))]

    def _pump(
        self,
        sel: selectors.BaseSelector,
        active: dict[int, tuple[RunPipes, float]],
        results: dict[int, RunResult],
        *,
        until: float,
    ) -> bool:
        """Read the active runs' pipes until ``until``; settle runs that ended or ran out of slot.

        Never blocks past ``until`` (a run that is slow to close its pipes is not waited for).
        Returns True if the template hung up.
        """
        gone = False
        while not self._killed.is_set():
            now = time.monotonic()
            for index, (run, end) in list(active.items()):
                streams = (run.result, run.log, run.status)
                if all(stream.closed for stream in streams):
                    results[index] = run.result_of()
                elif now >= end:
                    for stream in streams:
                        stream.close(sel)
                    log.warning("run %d of a DP job had not ended by the end of its slot", index)
                    results[index] = RunResult(
                        index,
                        None,
                        run.log.data.decode(errors="replace"),
                        {},
                        problem="had not ended by the end of its slot",
                    )
                else:
                    continue
                del active[index]
            if now >= until:
                return gone
            wake_at = min([until] + [end for _run, end in active.values()])
            for key, _ in sel.select(max(0.0, wake_at - now)):
                if key.data == "wake":  # kill(): the loop ends at its next check
                    continue
                if key.data is None:  # the template hung up: the sandbox is gone
                    sel.unregister(key.fileobj)
                    gone = True
                    continue
                _run, stream = key.data
                stream.read(sel)
        return gone

    def _dispatch(
        self, control: socket.socket, index: int, source: Input, kill_at: float | None = None
    ) -> RunPipes:
        data = source() if callable(source) else source
        data_fd = _memfd(f"rds-input-{index}", data, seal=True)
        pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(3)]
        request: dict[str, object] = {"run": index}
        if kill_at is not None:
            request["kill_at"] = kill_at  # time.monotonic() is CLOCK_MONOTONIC, as in the sandbox
        try:
            socket.send_fds(
                control,
                [json.dumps(request).encode()],
                [data_fd, *(w for _r, w in pipes)],
            )
        except OSError:
            for r, _w in pipes:
                os.close(r)
            raise
        finally:
            os.close(data_fd)
            for _r, w in pipes:
                os.close(w)
        (result_r, _), (log_r, _), (status_r, _) = pipes
        for r in (result_r, log_r, status_r):
            os.set_blocking(r, False)
        return RunPipes(
            index=index,
            deadline=time.monotonic() + self.limits.wall_seconds + _GRACE,
            result=Stream(result_r, self.limits.result_bytes),
            log=Stream(log_r, self.limits.log_bytes),
            status=Stream(status_r, _STATUS_BYTES),
        )

    def _settle(self, sel: selectors.BaseSelector, run: RunPipes) -> None:
        """The supervisor has reported: read what is left of the result and the log."""
        until = time.monotonic() + 0.5
        for stream in (run.result, run.log):
            while not stream.closed and time.monotonic() < until:
                try:
                    ready, _w, _x = _select_one(stream.fd, until - time.monotonic())
                except OSError:
                    break
                if ready:
                    stream.read(sel)
            stream.close(sel)


def _select_one(fd: int, timeout: float) -> tuple[list[int], list[int], list[int]]:
    import select

    return select.select([fd], [], [], max(0.0, timeout))


def _memfd(name: str, data: bytes, *, seal: bool = False) -> int:
    """An anonymous in-memory file holding ``data`` (sealed: nobody can change it)."""
    flags = os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if seal else 0)
    fd = os.memfd_create(name, flags)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        if seal:
            seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except BaseException:
        os.close(fd)
        raise
    return fd
