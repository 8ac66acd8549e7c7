"""The steps of a job that run code: a DP job, a reviewed job's mock run and its private run.

Each step first claims its job with a guarded status change (``queued`` → ``running``, ...),
so a job runs once even when two node processes, or the server and ``rds jobs approve``, try.
A DP job is ``jobs_dp``'s (reservation, fixed timetable, refunds). A reviewed job's mock run
that fails marks the job ``failed`` (mock data is public); once the owner approved the code,
the job ends in output review whatever happens — a private run that fails, or whose output
cannot be read, shows the owner a failing check (so only denial is possible) — because
``failed`` instead of ``output_review`` would tell the scientist a bit of the private data
before anyone reviewed it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import polars as pl

from rds_kernel.errors import InternalError, RdsError
from rds_kernel.node import jobs_checks
from rds_kernel.node.jobs_dp import FAILED, DpJobs
from rds_kernel.node.jobs_run import (
    Sessions,
    arrow_stream,
    limits_of,
    owner_log,
    run_in_sandbox,
    sandbox_of,
)
from rds_kernel.node.jobs_store import Job, JobStore
from rds_kernel.node.service import NodeService
from rds_kernel.sandbox import RunResult

__all__ = ["FAILED", "Sessions", "Steps"]

log = logging.getLogger("rds_kernel.node.jobs")


class Steps:
    """Runs jobs' code in the sandbox for one node."""

    def __init__(self, node: NodeService, store: JobStore, sessions: Sessions) -> None:
        self.node = node
        self.store = store
        self.sessions = sessions
        self.settings = node.settings
        self.sandbox = sandbox_of(self.settings)
        self.limits = limits_of(self.settings)
        self.dp_jobs = DpJobs(node, store, sessions, self.sandbox, self.limits)

    def run(self, job_id: str) -> None:
        """Do the job's next step, if it has one."""
        job = self.store.get(job_id)
        if job.kind == "dp" and job.status == "queued":
            self.dp_jobs.run(job)
        elif job.status == "submitted":
            self.mock(job)
        elif job.status == "approved":
            self.private(job)

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
        limit = self.settings.job_max_output_bytes
        output = jobs_checks.parse_output(result.output, limit) if result.ok else None
        error = None
        if output is None:
            error = result.describe() if not result.ok else "the output could not be read"
        mock = {"ok": output is not None, "output": output, "log": result.log, "error": error}
        self.store.move(job.id, ["mock_running"], "pending_review", mock=mock, progress_done=0)

    def private(self, job: Job) -> None:
        """An approved reviewed job on the private rows; its output waits for the owner.

        Whatever happens from here the job goes to output review: a failure is a failing check
        the owner can only deny, never a ``failed`` the scientist would see before any review.
        """
        if not self.store.move(job.id, ["approved"], "running", action="job.run"):
            return
        self.review_output(job, *self._private_output(job))

    def _private_output(self, job: Job) -> tuple[dict[str, Any] | None, str, str | None]:
        """The run's output, the owner's log, and what went wrong (None if nothing)."""
        text = ""
        try:
            ds = self.node.datasets.get(job.dataset)
            result, text = self._once(job, ds.scan().collect())
            if not result.ok:
                return None, text, f"the run failed: {result.describe()}"
            output = jobs_checks.parse_output(result.output, self.settings.job_max_output_bytes)
            if output is None:
                return None, text, "the run's output could not be read (not a valid result)"
            return output, text, None
        except Exception as exc:
            log.exception("job %s: the private run failed", job.id)
            return None, text, f"the run failed on the node: {type(exc).__name__}: {exc}"

    def review_output(
        self, job: Job, output: dict[str, Any] | None, text: str, problem: str | None
    ) -> None:
        """Move a reviewed job from ``running`` to ``output_review`` with its checks."""
        if problem is not None:
            checks = [{"check": "run", "ok": False, "detail": problem + "; deny the job"}]
        else:
            assert output is not None
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
            owner_log=(text + ("" if problem is None else f"\n{problem}")).strip(),
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
            register=self.sessions.register(job.id),
        )
        return outcome.results[0], owner_log(outcome, per_run=None)

    def _fail(self, job: Job, frm: str, exc: BaseException) -> None:
        """A mock run that failed on the node (mock data is public: nothing to hide)."""
        log.error("job %s failed: %s", job.id, exc, exc_info=not isinstance(exc, RdsError))
        self.store.move(
            job.id,
            [frm],
            "failed",
            action="job.fail",
            detail={"reason": type(exc).__name__},
            error=FAILED,
            error_code=InternalError.code,
            owner_log=f"failed: {type(exc).__name__}: {exc}",
        )


def _lazy_arrow(frame: pl.DataFrame) -> Callable[[], bytes]:
    return lambda: arrow_stream(frame)
