"""Code jobs: the node's service for DP code jobs and reviewed jobs (DESIGN §2, rows 2 and 3).

The scientist sends a function's **source text** and its parameters; the node stores it as data
and never compiles or runs it: only the sandbox does (``rds_kernel.sandbox``).

**DP job** (``kind="dp"``): ``queued`` → ``running`` → ``done`` | ``failed``. Sample-and-
aggregate (``rds_kernel.dp.aggregate``): the private rows go to ``k`` disjoint random
partitions, the function runs on each in the sandbox — one partition at a time, on a timetable
fixed before any data is read — failures and timeouts become the declared default, outputs are
clamped, averaged and noised by OpenDP. The exact cost (``measurement.map``) is reserved through
``Store.charge`` under the job's ``request_id`` before anything reads the data, and the answer
replaces the reservation's placeholder at the end (``jobs_dp``), so a job is charged once,
however often it is fetched or retried, and a failure after the data was read is charged too.
Nothing a run prints, raises or returns reaches the scientist except through that release —
not even how many runs failed, nor how long they took: while it runs the scientist sees no
progress, and the job ends when its timetable does. The owner sees it all.

**Reviewed job** (``kind="reviewed"``): ``submitted`` → ``mock_running`` → ``pending_review``
(the mock output, computed on public mock data, is shown to the scientist) → the owner approves
the code → ``approved`` → ``running`` (private data, in the sandbox) → ``output_review`` (the
automatic output checks run; a run that failed is a failing check) → the owner approves the
output → ``released``; the owner may deny at either review (``denied``: nothing is released).
Every step is in the audit log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from rds_kernel.dp.aggregate import SampleAggregate, prepare_aggregate, timetable
from rds_kernel.errors import BadRequest, Conflict, InternalError, PermissionDenied
from rds_kernel.node.jobs_budget import BudgetRequests
from rds_kernel.node.jobs_dp import FAILED, job_timetable
from rds_kernel.node.jobs_steps import Sessions, Steps
from rds_kernel.node.jobs_store import Job, JobStore, NewJob
from rds_kernel.node.records import User
from rds_kernel.node.service import NodeService
from rds_kernel.node.tables import utcnow
from rds_kernel.sandbox import check_available

__all__ = ["JobService"]

log = logging.getLogger("rds_kernel.node.jobs")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_ENTRY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_MAX_SOURCE = 200_000
_MAX_MESSAGE = 4000
LOUD = (
    "SANDBOX WEAKENED: sandbox = 'rlimits-only' — scientist code runs without bubblewrap, "
    "with only a separate uid and rlimits: it can see the host's files that uid can read "
    "and may reach the network. Install bubblewrap and set sandbox = 'bwrap'"
)


class JobService:
    """Submit, run, review and release code jobs; grant budget top-ups.

    With ``background=True`` (the server) runs go to a thread pool; otherwise (the CLI) they
    run in the calling thread. :meth:`close` kills running sandboxes and waits for the pool.
    """

    def __init__(self, node: NodeService, *, background: bool = True) -> None:
        self.node = node
        self.settings = node.settings
        self.store = JobStore(self.settings.resolved_database_url)
        self.store.create_tables()
        self.requests = BudgetRequests(self.store.engine, node.store)
        self._sessions = Sessions()
        self.steps = Steps(node, self.store, self._sessions)
        self.sandbox = self.steps.sandbox
        self._background = background
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        if self.settings.sandbox == "rlimits-only":
            log.warning(LOUD)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        self._sessions.kill_all()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        self.store.close()

    # ------------------------------------------------------------------ scientists

    def submit(self, user: User, body: dict[str, Any]) -> Job:
        """Validate and store a job, then start it; the same ``request_id`` returns the same job."""
        if user.role != "scientist":
            raise PermissionDenied("only scientists submit jobs; use a scientist's token")
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
            raise BadRequest(
                "request_id must be 1-128 letters, digits or '_.:-'; the client picks a fresh "
                "one per job and reuses it only to retry"
            )
        new = self._validate(body)
        if self.store.find(user, request_id) is None:
            # a retry gets its stored job back even if the budget or the sandbox changed since
            check_available(self.sandbox)
            if new.kind == "dp":
                self._precheck(user, request_id, new)
        job, created = self.store.create(user, request_id, new)
        if created:
            if self.settings.sandbox == "rlimits-only":
                log.warning("job %s: %s", job.id, LOUD)
            self.run_later(job.id)
        return self.store.get(job.id)

    def _validate(self, body: dict[str, Any]) -> NewJob:
        kind = body.get("kind")
        if kind not in ("dp", "reviewed"):
            raise BadRequest("kind must be 'dp' (a DP answer, automatic) or 'reviewed'")
        ds = self.node.datasets.get(str(body.get("dataset", "")))
        source, entry = body.get("source"), body.get("entry")
        if not isinstance(source, str) or not source.strip() or len(source) > _MAX_SOURCE:
            raise BadRequest(f"source must be the function's source text, 1-{_MAX_SOURCE} chars")
        if "\x00" in source:
            raise BadRequest("source must be text: it contains a NUL character")
        if not isinstance(entry, str) or not _ENTRY.match(entry):
            raise BadRequest("entry must be the name of the function to call, e.g. 'f'")
        message = body.get("message") or ""
        if not isinstance(message, str) or len(message) > _MAX_MESSAGE or "\x00" in message:
            raise BadRequest(f"message must be text of at most {_MAX_MESSAGE} characters")
        params: dict[str, Any] = {}
        total = 1
        plan: dict[str, Any] | None = None
        if kind == "dp":
            job = SampleAggregate.from_dict(body.get("params"))
            if job.partitions > self.settings.job_max_partitions:
                raise BadRequest(
                    f"partitions={job.partitions} is more than this node allows "
                    f"({self.settings.job_max_partitions}); ask for fewer"
                )
            if job.run_seconds > self.settings.job_wall_seconds:
                raise BadRequest(
                    f"run_seconds={job.run_seconds:g} is more than this node allows for a run "
                    f"({self.settings.job_wall_seconds} s); ask for less"
                )
            epsilon, delta = prepare_aggregate(job).cost
            params = {**job.to_dict(), "cost": {"epsilon": epsilon, "delta": delta}}
            plan = timetable(job, self.settings.job_start_seconds).to_dict()
            total = job.partitions
        elif not message.strip():
            raise BadRequest("a reviewed job needs a message for the owner: what it does and why")
        spec = {"kind": kind, "dataset": ds.name, "source": source, "entry": entry}
        spec.update(message=message, params=params)
        spec_hash = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        if plan is not None:
            # the node's timetable for the job (not part of what the scientist asked for)
            params = {**params, "timetable": plan}
        status = "queued" if kind == "dp" else "submitted"
        return NewJob(kind, ds.name, source, entry, message, params, spec_hash, status, total)

    def _precheck(self, user: User, request_id: str, new: NewJob) -> None:
        """Refuse now what the reservation would refuse (it checks again when the job starts).

        A ``request_id`` that names a release already (a query's) is a ``Conflict``, and every
        budget scope — the scientist's total, their cap on the dataset, the dataset's global
        cap — must cover the cost (``Store.precheck``); nothing is stored or run otherwise.
        """
        if self.node.store.find_release(user, request_id) is not None:
            raise Conflict(
                f"request_id {request_id!r} was already used for a release (a query, or a job "
                "submitted elsewhere); use a new request_id for a new job",
                {"request_id": request_id},
            )
        cost = new.params["cost"]
        self.node.store.precheck(user, new.dataset, cost["epsilon"], cost["delta"])

    def job(self, user: User, job_id: str) -> Job:
        return self.store.get(job_id, user)

    def jobs(self, user: User, limit: int = 100) -> list[Job]:
        return self.store.list(user=user, limit=limit)

    # ------------------------------------------------------------------ the owner

    def approve(self, job_id: str, *, actor: str, note: str | None = None) -> Job:
        """Approve the code (it then runs on private data) or the output (it is released)."""
        job = self.store.get(job_id)
        if job.kind != "reviewed":
            raise BadRequest("DP jobs need no approval: they release only a charged DP answer")
        if job.status == "pending_review":
            if not self.store.move(
                job.id,
                ["pending_review"],
                "approved",
                actor=actor,
                action="job.approve_code",
                detail={"note": note},
                reviewer=actor,
                review_note=note,
            ):
                raise _changed(job.id)
            self.run_later(job.id)
            return self.store.get(job.id)
        if job.status == "output_review":
            failing = [c for c in job.checks or [] if not c.get("ok")]
            if failing or job.output is None:
                raise BadRequest(
                    "this output fails the automatic checks ("
                    + "; ".join(f"{c['check']}: {c['detail']}" for c in failing)
                    + ") and cannot be released; deny it with `rds jobs deny`"
                )
            if not self.store.move(
                job.id,
                ["output_review"],
                "released",
                actor=actor,
                action="job.release",
                detail={"note": note, "user": job.user, "checks": job.checks},
                reviewer=actor,
                review_note=note,
            ):
                raise _changed(job.id)
            return self.store.get(job.id)
        raise BadRequest(
            f"job {job.id} is {job.status}; only a job pending review (its code) or in output "
            "review (its output) can be approved"
        )

    def deny(self, job_id: str, *, actor: str, reason: str | None = None) -> Job:
        """Deny a reviewed job's code or output: nothing is released, ever."""
        job = self.store.get(job_id)
        if job.kind != "reviewed":
            raise BadRequest("DP jobs are released automatically and cannot be denied")
        stages = ["submitted", "mock_running", "pending_review", "approved", "output_review"]
        if not self.store.move(
            job.id,
            stages,
            "denied",
            actor=actor,
            action="job.deny",
            detail={"reason": reason, "was": job.status},
            reviewer=actor,
            review_note=reason,
        ):
            raise BadRequest(f"job {job.id} is {job.status} and can no longer be denied")
        return self.store.get(job.id)

    # ------------------------------------------------------------------ running

    def resume(self) -> None:
        """Start jobs left waiting (after a restart); settle jobs a crash left ``running``.

        A DP job is never run again: with its answer recorded it is done; with only its
        reservation it failed and stays charged (its runs may have seen the data); without a
        reservation it failed uncharged. An approved reviewed job goes to output review with a
        failing check, as any failure of its private run does; a mock run simply failed.
        """
        for job in self.store.list(statuses=["queued", "submitted", "approved"], limit=1000):
            self.run_later(job.id)
        now = utcnow()
        for job in self.store.list(statuses=["running", "mock_running"], limit=1000):
            # a job is left alone while it may still be running in another node process
            if now - job.updated_at < timedelta(seconds=self._job_seconds(job)):
                continue
            if job.kind == "dp":
                self.steps.dp_jobs.settle(job, "interrupted: the node stopped while the job ran")
            elif job.status == "running":
                problem = "interrupted: the node stopped while the private run ran"
                self.steps.review_output(job, None, "", problem)
            else:
                self.store.move(
                    job.id,
                    ["mock_running"],
                    "failed",
                    action="job.fail",
                    detail={"reason": "interrupted"},
                    error=FAILED,
                    error_code=InternalError.code,
                    owner_log="interrupted: the node stopped while the job ran",
                )

    def _job_seconds(self, job: Job) -> float:
        """Longer than ``job`` can run: its timetable (DP) or one run, start-up and a margin.

        A DP job writes nothing while it runs, so its ``updated_at`` is when it started.
        """
        if job.kind == "dp":
            return 360.0 + job_timetable(job, self.settings.job_start_seconds).seconds
        return 360.0 + self.settings.job_wall_seconds + 2.0

    def run_later(self, job_id: str) -> None:
        """Do the job's next step in the pool (the server), or now (the CLI)."""
        if not self._background:
            self.run(job_id)
            return
        with self._lock:
            if self._closed:
                return
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.settings.job_workers, thread_name_prefix="rds-job"
                )
            self._executor.submit(self._run_logged, job_id)

    def _run_logged(self, job_id: str) -> None:
        try:
            self.run(job_id)
        except Exception:
            log.exception("job %s crashed", job_id)

    def run(self, job_id: str) -> None:
        """Do the job's next step, if it has one (each step claims the job first)."""
        self.steps.run(job_id)


def _changed(job_id: str) -> BadRequest:
    return BadRequest(f"job {job_id} changed while you looked at it; show it again and retry")
