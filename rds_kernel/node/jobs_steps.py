"""The steps of a job that run code: a DP job, a reviewed job's mock run and its private run.

Each step first claims its job with a guarded status change (``queued`` → ``running``, ...),
so a job runs once even when two node processes, or the server and ``rds jobs approve``, try.
A step that fails marks the job ``failed`` with a message for the scientist that says nothing
about the data (or, for a budget refusal, the ledger's message) and the whole story in the
owner's log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import polars as pl

from rds_kernel.dp.aggregate import (
    SampleAggregate,
    clamp_outputs,
    parse_output,
    prepare_aggregate,
    release_aggregate,
)
from rds_kernel.errors import BudgetExceeded, InternalError, RdsError
from rds_kernel.node import jobs_checks
from rds_kernel.node.jobs_run import (
    arrow_stream,
    limits_of,
    owner_log,
    partition,
    run_in_sandbox,
    sandbox_of,
)
from rds_kernel.node.jobs_store import Job, JobStore
from rds_kernel.node.service import NodeService
from rds_kernel.sandbox import RunResult, Session

__all__ = ["FAILED", "Sessions", "Steps"]

log = logging.getLogger("rds_kernel.node.jobs")

FAILED = (
    "the job failed on the node and nothing was released or charged; the owner can see why "
    "in the job's log (`rds jobs show`)"
)
_PROGRESS_EVERY = 0.5  # seconds between progress writes


class Sessions:
    """The sandboxes running now, by job, so that closing the node can kill them all."""

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


class Steps:
    """Runs jobs' code in the sandbox for one node."""

    def __init__(self, node: NodeService, store: JobStore, sessions: Sessions) -> None:
        self.node = node
        self.store = store
        self.sessions = sessions
        self.settings = node.settings
        self.sandbox = sandbox_of(self.settings)
        self.limits = limits_of(self.settings)

    def run(self, job_id: str) -> None:
        """Do the job's next step, if it has one."""
        job = self.store.get(job_id)
        if job.kind == "dp" and job.status == "queued":
            self.dp(job)
        elif job.status == "submitted":
            self.mock(job)
        elif job.status == "approved":
            self.private(job)

    def dp(self, job: Job) -> None:
        """Sample-and-aggregate on the private rows, charged through ``Store.charge``."""
        if not self.store.move(job.id, ["queued"], "running", action="job.run"):
            return
        spec = SampleAggregate.from_dict(job.params)
        text = ""
        try:
            prepared = prepare_aggregate(spec)
            ds = self.node.datasets.get(job.dataset)
            parts = partition(ds.scan().collect(), spec.partitions, ds.schema.identifier)
            outcome = run_in_sandbox(
                self.sandbox,
                self.limits,
                source=job.source,
                entry=job.entry,
                mode="dp",
                inputs=[_lazy_arrow(p) for p in parts],
                parallel=self.settings.job_parallel,
                on_result=self._progress(job.id),
                register=self.sessions.register(job.id),
            )
            del parts
            text = owner_log(outcome)
            if not any(r.status for r in outcome.results):
                raise InternalError("no run started in the sandbox")
            # every run counts: failed ones as the default, so the count of failures (which
            # depends on the data) is never released
            outputs = [parse_output(r.output, spec) if r.ok else None for r in outcome.results]
            values = release_aggregate(prepared, clamp_outputs(spec, outputs))
            epsilon, delta = prepared.cost
            answer = {
                "job": job.id,
                "dataset": job.dataset,
                "value": values[0] if spec.scalar else values,
                "partitions": spec.partitions,
                "bounds": [list(b) for b in spec.bounds],
                "cost": {"epsilon": epsilon, "delta": delta},
                "summary": prepared.summary(),
            }
            charged = self.node.store.charge(
                user=self.node.store.get_user(job.user),
                dataset=job.dataset,
                request_id=job.request_id,
                spec_hash=job.spec_hash,
                epsilon=epsilon,
                delta=delta,
                answer=answer,
            )
        except Exception as exc:
            self._fail(job, "running", exc, text)
            return
        self.store.move(
            job.id,
            ["running"],
            "done",
            output=charged.release.answer,
            owner_log=text,
            progress_done=spec.partitions,
        )

    def mock(self, job: Job) -> None:
        """A reviewed job on the public mock data; everything about it is for the scientist."""
        if not self.store.move(job.id, ["submitted"], "mock_running", action="job.run_mock"):
            return
        try:
            ds = self.node.datasets.get(job.dataset)
            result, _text = self._once(job, pl.read_parquet(ds.mock_path))
        except Exception as exc:
            self._fail(job, "mock_running", exc)
            return
        output = jobs_checks.parse_output(result.output) if result.ok else None
        mock = {
            "ok": output is not None,
            "output": output,
            "log": result.log,
            "error": None if output is not None else result.describe(),
        }
        self.store.move(job.id, ["mock_running"], "pending_review", mock=mock, progress_done=0)

    def private(self, job: Job) -> None:
        """An approved reviewed job on the private rows; its output waits for the owner."""
        if not self.store.move(job.id, ["approved"], "running", action="job.run"):
            return
        try:
            ds = self.node.datasets.get(job.dataset)
            result, text = self._once(job, ds.scan().collect())
        except Exception as exc:
            self._fail(job, "running", exc)
            return
        output = jobs_checks.parse_output(result.output) if result.ok else None
        if output is None:
            self._fail(job, "running", InternalError(result.describe()), text)
            return
        checks = jobs_checks.check_output(
            output,
            min_cell_count=self.settings.job_min_cell_count,
            max_bytes=self.settings.job_max_output_bytes,
        )
        self.store.move(
            job.id,
            ["running"],
            "output_review",
            action="job.output_ready",
            detail={"checks_ok": all(c["ok"] for c in checks)},
            output=output,
            checks=checks,
            owner_log=text,
            progress_done=1,
        )

    def _once(self, job: Job, frame: pl.DataFrame) -> tuple[RunResult, str]:
        outcome = run_in_sandbox(
            self.sandbox,
            self.limits,
            source=job.source,
            entry=job.entry,
            mode="reviewed",
            inputs=[_lazy_arrow(frame)],
            parallel=1,
            register=self.sessions.register(job.id),
        )
        return outcome.results[0], owner_log(outcome, per_run=None)

    def _progress(self, job_id: str) -> Callable[[RunResult], None]:
        done = 0
        last = 0.0

        def on_result(_result: RunResult) -> None:
            nonlocal done, last
            done += 1
            now = time.monotonic()
            if now - last >= _PROGRESS_EVERY:
                last = now
                self.store.progress(job_id, done)

        return on_result

    def _fail(self, job: Job, frm: str, exc: BaseException, log_text: str = "") -> None:
        log.error("job %s failed: %s", job.id, exc, exc_info=not isinstance(exc, RdsError))
        budget = isinstance(exc, BudgetExceeded)
        self.store.move(
            job.id,
            [frm],
            "failed",
            action="job.fail",
            detail={"reason": type(exc).__name__},
            error=exc.message if isinstance(exc, BudgetExceeded) else FAILED,
            error_code=BudgetExceeded.code if budget else InternalError.code,
            owner_log=(log_text + f"\nfailed: {type(exc).__name__}: {exc}").strip(),
        )


def _lazy_arrow(frame: pl.DataFrame) -> Callable[[], bytes]:
    return lambda: arrow_stream(frame)
