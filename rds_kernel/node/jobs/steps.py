"""The steps of a job that run code: a DP job, a reviewed job's mock run and its private run.

Each step first claims its job with a guarded status change (``queued`` → ``running``, ...),
so a job runs once even when two node processes, or the server and ``rds jobs approve``, try.
A DP job is ``jobs_dp``'s (reservation, fixed timetable, refunds). A reviewed job's mock run
that fails marks the job ``failed`` (mock data is public); once the owner approved the code,
the job ends in output review whatever happens — a private run that fails, or whose output
cannot be read, shows the owner a failing check (so only denial is possible) — because
``failed`` instead of ``output_review`` would tell the scientist a bit of the private data
before anyone reviewed it.

**A private run takes a fixed time.** How long a function runs on the private data depends on
the data. If the worker were freed, and the status changed, when the run ended, the end would
carry that: to the scientist watching the status, and to every job queued behind it — a DP
job's timetable starts when it gets a worker, and its runs can read the clock, so one person's
data could shift every output of a later DP job together (which sample-and-aggregate's
sensitivity does not cover). So a private run is a one-run timetable, like a DP job's
(``jobs_dp``): its run starts ``job_start_seconds`` after the job was taken up, is killed
``job_wall_seconds`` later, and the job holds its worker, and stays ``running``, until
``job_start_seconds + job_wall_seconds + 1`` s after it was taken up, whatever the run did
(:func:`private_seconds`). The output, its checks and the log are stored for the owner as soon
as the run ends; only the status change (and the worker) wait. Mock runs use public data and
are not padded. Together with DP jobs' timetables this makes every step that reads private
data hold a worker for a time fixed before it read anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import polars as pl

from rds_kernel.dp.aggregate import START_TOLERANCE, Timetable
from rds_kernel.errors import InternalError, RdsError
from rds_kernel.node.jobs import checks as jobs_checks
from rds_kernel.node.jobs.dp import FAILED, DpJobs, timetable_log
from rds_kernel.node.jobs.run import (
    RunOutcome,
    Sessions,
    arrow_stream,
    limits_of,
    owner_log,
    run_in_sandbox,
    sandbox_of,
    sleep_until,
)
from rds_kernel.node.service import NodeService
from rds_kernel.node.settings import PRIVATE_RUN_EXTRA_SECONDS, NodeSettings
from rds_kernel.node.store.jobs import Job, JobStore
from rds_kernel.sandbox import RunResult, Session

__all__ = ["FAILED", "Sessions", "Steps", "private_seconds"]


def private_timetable(settings: NodeSettings) -> Timetable:
    """A reviewed job's private run: one run of ``job_wall_seconds`` after the start-up."""
    return Timetable(float(settings.job_start_seconds), float(settings.job_wall_seconds), 1)


def private_seconds(settings: NodeSettings) -> float:
    """How long a reviewed job's private run holds its worker, whatever the run does: its
    timetable, then 0.6 s to parse, check and store the output (at most ``job_max_seconds``,
    which the settings check)."""
    return settings.job_start_seconds + settings.job_wall_seconds + PRIVATE_RUN_EXTRA_SECONDS


log = logging.getLogger("rds_kernel.node.jobs.service")


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
        It does so :func:`private_seconds` after it was taken up (see the module docstring);
        the owner can read the output as soon as the run ended.
        """
        if not self.store.move(job.id, ["approved"], "running", action="job.run"):
            return
        anchor = time.monotonic()  # the padded end is fixed now, before anything reads the data
        output, text, problem = self._private_output(job, anchor)
        checks = self._checks(output, problem)
        text = (text + ("" if problem is None else f"\n{problem}")).strip()
        self.store.note(job.id, ["running"], output=output, checks=checks, owner_log=text)
        end = anchor + private_seconds(self.settings)
        if time.monotonic() > end:  # the wrap-up allowance was too short: say so
            log.warning("job %s: the private run ended %.2f s late", job.id, time.monotonic() - end)
        sleep_until(self.sessions, end)
        self._to_output_review(job, output, checks, text)

    def _private_output(
        self, job: Job, anchor: float
    ) -> tuple[dict[str, Any] | None, str, str | None]:
        """The run's output, the owner's log, and what went wrong (None if nothing)."""
        text = ""
        try:
            result, text = self._on_timetable(job, anchor)
            if not result.ok:
                return None, text, f"the run failed: {result.describe()}"
            output = jobs_checks.parse_output(result.output, self.settings.job_max_output_bytes)
            if output is None:
                return None, text, "the run's output could not be read (not a valid result)"
            return output, text, None
        except Exception as exc:
            log.exception("job %s: the private run failed", job.id)
            return None, text, f"the run failed on the node: {type(exc).__name__}: {exc}"

    def _on_timetable(self, job: Job, anchor: float) -> tuple[RunResult, str]:
        """Start the sandbox, read the data, run once at the planned time; the result, the log."""
        plan = private_timetable(self.settings)
        session = Session(
            self.sandbox, job.source, entry=job.entry, mode="reviewed", limits=self.limits
        )
        register = self.sessions.register(job.id)
        register(session)
        try:
            session.start()
            started = time.monotonic() - anchor
            ds = self.node.datasets.get(job.dataset)
            data = arrow_stream(ds.scan().collect())
            ready = time.monotonic() - anchor
            [result] = session.run_timetable(
                [data],
                start=anchor + plan.start_seconds,
                slot=plan.slot_seconds,
                tolerance=START_TOLERANCE,
            )
            del data
            session.kill()  # the run has ended or been given up: nothing to wait for
        finally:
            session.close()
            register(None)
        text = (
            timetable_log(plan, started, ready)
            + "\n"
            + owner_log(RunOutcome([result], session.template_log), per_run=None)
        )
        return result, text

    def review_output(
        self, job: Job, output: dict[str, Any] | None, text: str, problem: str | None
    ) -> None:
        """Move a reviewed job from ``running`` to ``output_review`` with its checks, now."""
        checks = self._checks(output, problem)
        text = (text + ("" if problem is None else f"\n{problem}")).strip()
        self._to_output_review(job, output, checks, text)

    def _checks(self, output: dict[str, Any] | None, problem: str | None) -> list[dict[str, Any]]:
        if problem is not None or output is None:
            detail = (problem or "the run gave no output") + "; deny the job"
            return [{"check": "run", "ok": False, "detail": detail}]
        return jobs_checks.check_output(
            output,
            min_cell_count=self.settings.job_min_cell_count,
            max_bytes=self.settings.job_max_output_bytes,
        )

    def _to_output_review(
        self, job: Job, output: dict[str, Any] | None, checks: list[dict[str, Any]], text: str
    ) -> None:
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
