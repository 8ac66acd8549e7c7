"""Running a job's code in the sandbox: partitions, Arrow inputs, limits, the owner's log.

Private rows are read here, in the node, and handed to the sandbox as Arrow IPC bytes; the
scientist's code only ever sees them inside the sandbox. For a DP job the rows are split into
``k`` disjoint random partitions: with an identifier column, every row of one person goes to
the same partition (a keyed hash with a fresh secret key per job), so one person changes one
partition's output; otherwise each row goes to an independent uniformly random partition.
(DP jobs run their partitions on a fixed timetable: see ``jobs_dp``.)
"""

from __future__ import annotations

import io
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from rds_kernel.errors import PermissionDenied
from rds_kernel.node.settings import NodeSettings
from rds_kernel.sandbox import Limits, RunResult, SandboxConfig, Session
from rds_kernel.sandbox.session import RunMode

__all__ = [
    "RunOutcome",
    "Sessions",
    "arrow_stream",
    "limits_of",
    "owner_log",
    "partition",
    "run_in_sandbox",
    "sandbox_of",
    "sleep_until",
]

log = logging.getLogger("rds_kernel.node.jobs.service")

_PART = "__rds_partition__"
_LOG_PER_RUN_DP = 4096
_LOG_TOTAL = 256 * 1024
_START_SECONDS = 60.0


def sandbox_of(settings: NodeSettings) -> SandboxConfig:
    """The node's sandbox configuration; the node directory is never visible inside."""
    return SandboxConfig(
        mode=settings.sandbox,
        uid=settings.sandbox_uid,
        gid=settings.sandbox_uid,
        hidden=(settings.directory,),
    )


def limits_of(settings: NodeSettings) -> Limits:
    return Limits(
        cpu_seconds=settings.job_cpu_seconds,
        wall_seconds=float(settings.job_wall_seconds),
        memory_bytes=settings.job_memory_mb * 1024 * 1024,
        processes=settings.job_processes,
        result_bytes=settings.job_max_output_bytes,
    )


def arrow_stream(frame: pl.DataFrame) -> bytes:
    """``frame`` as an Arrow IPC stream (what the sandbox reads into pandas)."""
    buffer = io.BytesIO()
    frame.write_ipc_stream(buffer)
    return buffer.getvalue()


def partition(frame: pl.DataFrame, k: int, identifier: str | None) -> list[pl.DataFrame]:
    """``k`` disjoint random parts of ``frame`` (some may be empty); see the module docstring."""
    if identifier is not None:
        seed = secrets.randbits(64)
        labels = (frame.get_column(identifier).hash(seed=seed) % k).cast(pl.Int64)
    else:
        rng = np.random.default_rng(secrets.randbits(128))
        labels = pl.Series(rng.integers(0, k, frame.height), dtype=pl.Int64)
    tagged = frame.with_columns(labels.alias(_PART))
    groups = {
        key[0]: part.drop(_PART) for key, part in tagged.partition_by(_PART, as_dict=True).items()
    }
    empty = frame.clear()
    return [groups.get(i, empty) for i in range(k)]


@dataclass(frozen=True)
class RunOutcome:
    """What the sandbox gave back for every input, and the sandbox's own start-up log."""

    results: list[RunResult]
    template_log: str


class Sessions:
    """The sandboxes running now, by job, so that closing the node can kill them all.

    ``closed`` is set only by :meth:`kill_all` (the node shutting down, an owner's action): a
    DP job stopped that way is refunded, which no failure a run can cause ever is.
    """

    def __init__(self) -> None:
        self._running: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.closed = False

    def register(self, job_id: str) -> Callable[[Session | None], None]:
        def register(session: Session | None) -> None:
            with self._lock:
                if session is None:
                    self._running.pop(job_id, None)
                elif self.closed:
                    session.kill()
                else:
                    self._running[job_id] = session

        return register

    def kill_all(self) -> None:
        with self._lock:
            self.closed = True
            running = list(self._running.values())
        for session in running:
            session.kill()


def sleep_until(sessions: Sessions, moment: float) -> None:
    """Wait until ``moment`` (``time.monotonic()``), unless the node shuts down meanwhile."""
    while not sessions.closed and (left := moment - time.monotonic()) > 0:
        time.sleep(min(left, 0.25))


def run_in_sandbox(
    config: SandboxConfig,
    limits: Limits,
    *,
    source: str,
    entry: str,
    mode: RunMode,
    inputs: Sequence[Callable[[], bytes]],
    register: Callable[[Session | None], None] | None = None,
) -> RunOutcome:
    """Run ``entry`` from ``source`` once per input in one fresh sandbox; always cleans up.

    The runs go one after another, each as soon as the previous one ended (a reviewed job's
    mock run, on public data; whatever reads private data runs on a fixed timetable instead,
    see ``jobs_dp`` and ``jobs_steps``). The job as a whole may take ``wall_seconds`` per run,
    plus start-up.
    """
    deadline = time.monotonic() + _START_SECONDS + len(inputs) * (limits.wall_seconds + 2.0)
    session = Session(config, source, entry=entry, mode=mode, limits=limits)
    if register is not None:
        register(session)
    try:
        with session:
            if mode == "dp" and not session.isolated:
                # in any sandbox mode: runs that can reach each other break the sensitivity
                raise PermissionDenied(
                    "this host does not let the sandbox isolate the runs of a job from each "
                    f"other ({session.isolation_error}), which DP code jobs need; nothing ran"
                )
            results = session.run_all(inputs, parallel=1, deadline=deadline)
        return RunOutcome(results, session.template_log)
    finally:
        if register is not None:
            register(None)


def owner_log(outcome: RunOutcome, *, per_run: int | None = _LOG_PER_RUN_DP) -> str:
    """A readable account of every run for the owner: how it ended, and what it printed."""
    lines = []
    if outcome.template_log.strip():
        lines.append("sandbox: " + outcome.template_log.strip())
    failed = sum(not r.ok for r in outcome.results)
    lines.append(f"{len(outcome.results)} run(s), {failed} failed")
    for r in outcome.results:
        usage = ""
        if r.status:
            usage = f" (cpu {r.status.get('cpu_seconds')} s, wall {r.status.get('wall_seconds')} s)"
        lines.append(f"--- run {r.index}: {r.describe()}{usage}")
        text = r.log
        if per_run is not None and len(text) > per_run:
            # the start (what it printed) and the end (how it failed)
            text = text[: per_run // 4] + "\n[...]\n" + text[-(per_run * 3 // 4) :]
        if text.strip():
            lines.append(text.rstrip())
    out = "\n".join(lines)
    return out if len(out) <= _LOG_TOTAL else out[:_LOG_TOTAL] + "\n[log truncated]"
