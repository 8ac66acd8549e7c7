"""Code jobs: the node's service for DP code jobs and reviewed jobs (architecture §2, rows 2 and 3).

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

**Sharing the node.** Job steps wait in a queue that is fair across scientists: at most
``job_running_per_user`` running per scientist, a freed worker going to the scientist who has
waited longest, and no job holding a worker for more than ``job_max_seconds`` (a DP job whose
timetable is longer is refused at submission). A step that reads private data holds its worker
for a time fixed before it reads anything, so when a waiting job starts (and its runs can read
the clock) says nothing about another job's data. The process running a job writes a
heartbeat; the server settles jobs whose heartbeat stopped (``jobs_queue``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
from datetime import timedelta
from typing import Any

from rds_kernel.dp.aggregate import (
    MIN_RUN_SECONDS,
    SLOT_ALLOWANCE,
    SampleAggregate,
    prepare_aggregate,
    timetable,
)
from rds_kernel.errors import BadRequest, Conflict, InternalError, PermissionDenied, RdsError
from rds_kernel.node.jobs.dp import FAILED
from rds_kernel.node.jobs.queue import Heartbeat, JobQueue, Ticker
from rds_kernel.node.jobs.steps import Sessions, Steps
from rds_kernel.node.refusals import asked
from rds_kernel.node.service import NodeService
from rds_kernel.node.store.budget_requests import BudgetRequests
from rds_kernel.node.store.jobs import Job, JobStore, NewJob
from rds_kernel.node.store.records import User, check_request_id
from rds_kernel.node.store.tables import utcnow
from rds_kernel.sandbox import check_available

__all__ = ["JobService"]

log = logging.getLogger("rds_kernel.node.jobs.service")

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

    With ``background=True`` (the server) steps go to the fair queue (``jobs_queue``), and
    from :meth:`resume` on a sweeper settles, every ``job_stale_seconds / 2``, jobs whose
    process died; otherwise (the CLI) steps run in the calling thread. Either way the jobs
    this process runs have a heartbeat. :meth:`close` kills running sandboxes, waits for the
    workers and stops the sweeper and the heartbeat.
    """

    def __init__(self, node: NodeService, *, background: bool = True) -> None:
        self.node = node
        self.settings = node.settings
        # The node's one engine: the store makes the tables, the node service disposes of it.
        node.store.create_all()
        self.store = JobStore(node.store.engine)
        self.requests = BudgetRequests(node.store)
        self._sessions = Sessions()
        self.steps = Steps(node, self.store, self._sessions)
        self.sandbox = self.steps.sandbox
        self._background = background
        self._lock = threading.Lock()
        self._closed = False
        stale = self.settings.job_stale_seconds
        self._heartbeat = Heartbeat(self.store, stale / 6)
        self._queue: JobQueue | None = None
        self._sweeper: Ticker | None = None
        if background:
            self._queue = JobQueue(
                self.settings.job_workers, self.settings.job_running_per_user, self._run_logged
            )
        if self.settings.sandbox == "rlimits-only":
            log.warning(LOUD)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.close()
        self._sessions.kill_all()
        if self._queue is not None:
            self._queue.close()
        self._heartbeat.close()

    # ------------------------------------------------------------------ scientists

    def submit(self, user: User, body: dict[str, Any]) -> Job:
        """Validate and store a job, then start it; the same ``request_id`` returns the same job.

        A refusal is audited once, with what was asked (as for query releases).
        """
        try:
            return self._submit(user, body)
        except RdsError as exc:
            self.node.refused(user.name, "job.refused", asked(body, body.get("request_id")), exc)
            raise

    def _submit(self, user: User, body: dict[str, Any]) -> Job:
        if user.role != "scientist":
            raise PermissionDenied("only scientists submit jobs; use a scientist's token")
        request_id = check_request_id(body.get("request_id"), per="job")
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
            self.run_later(job.id, user.name)
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
        if not isinstance(entry, str) or not _ENTRY.fullmatch(entry):
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
            self._check_duration(job)
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

    def _check_duration(self, job: SampleAggregate) -> None:
        """Refuse a DP job whose timetable is longer than one job may hold a worker."""
        limit = self.settings.job_max_seconds
        start = self.settings.job_start_seconds
        plan = timetable(job, start)
        if plan.seconds <= limit + 1e-9:  # (float sums: 1 + 20 × (0.55 + 0.4) is 20.000...04)
            return
        fit_k = math.floor((limit - start) / plan.slot_seconds + 1e-9)
        fit_run = math.floor(((limit - start) / job.partitions - SLOT_ALLOWANCE) * 100 + 1e-6) / 100
        ways = []
        if fit_k >= 1:
            ways.append(f"at most {fit_k} partitions with run_seconds={job.run_seconds:g}")
        if fit_run >= MIN_RUN_SECONDS:
            ways.append(f"run_seconds at most {fit_run:g} with {job.partitions} partitions")
        raise BadRequest(
            f"this job's timetable lasts {plan.seconds:g} s ({start} s to start, then "
            f"{job.partitions} partitions × (run_seconds {job.run_seconds:g} + "
            f"{SLOT_ALLOWANCE:g}) s), longer than this node lets one job run "
            f"(job_max_seconds = {limit} s); "
            + (
                "ask for " + ", or ".join(ways)
                if ways
                else "ask for fewer partitions and a shorter run_seconds"
            ),
            {"seconds": plan.seconds, "job_max_seconds": limit},
        )

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
            self.run_later(job.id, job.user)
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
        """The server starts: queue the jobs left waiting, oldest first; settle dead ones.

        Jobs left running by a process that died are settled by :meth:`sweep`, now and (with
        ``background=True``) every ``job_stale_seconds / 2`` until :meth:`close`. The owner
        is told now, in the log, if code jobs cannot run on this host.
        """
        if self._background and self.settings.sandbox != "off":
            try:
                check_available(self.sandbox)
            except PermissionDenied as exc:
                log.error("code jobs will be refused: %s", exc.message)
        waiting = self.store.list(statuses=["queued", "submitted", "approved"], limit=1000)
        for job in reversed(waiting):
            self.run_later(job.id, job.user)
        self.sweep()
        with self._lock:
            if self._background and self._sweeper is None and not self._closed:
                stale = self.settings.job_stale_seconds
                self._sweeper = Ticker(stale / 2, self.sweep, name="rds-job-sweeper")

    def sweep(self) -> None:
        """Settle the jobs whose heartbeat stopped ``job_stale_seconds`` ago: their process died.

        As ``jobs_dp`` and ``jobs_steps`` say: a DP job is never run again (its answer
        recorded: done; only its reservation: failed and charged; neither: failed, uncharged);
        a reviewed job's private run goes to output review with a failing check, as any
        failure of it does; a mock run (public data) is queued again, once.
        """
        stale = self.settings.job_stale_seconds
        before = utcnow() - timedelta(seconds=stale)
        mine = self._heartbeat.running()
        for job in self.store.stale(before):
            if job.id in mine or self._closed:
                continue  # a job of this process is alive, whatever its heartbeat says
            why = f"interrupted: no heartbeat for {stale} s (the node process running it died)"
            log.error("job %s: %s", job.id, why)
            try:
                self._settle(job, why)
            except Exception:
                log.exception("job %s: could not settle it", job.id)

    def _settle(self, job: Job, why: str) -> None:
        if job.kind == "dp":
            self.steps.dp_jobs.settle(job, why)
        elif job.status == "running":
            self.steps.review_output(job, None, why, STOPPED)
        elif _REQUEUED in (job.owner_log or ""):
            self.store.move(
                job.id,
                ["mock_running"],
                "failed",
                action="job.fail",
                detail={"reason": "interrupted"},
                error=FAILED,
                error_code=InternalError.code,
                owner_log=f"{job.owner_log}\n{why}, again: failed",
            )
        elif self.store.move(
            job.id,
            ["mock_running"],
            "submitted",
            action="job.requeue",
            detail={"reason": "interrupted"},
            owner_log=f"{why}; {_REQUEUED}",
        ):
            self.run_later(job.id, job.user)

    def run_later(self, job_id: str, user: str | None = None) -> None:
        """Do the job's next step in the queue (the server), or now (the CLI)."""
        if not self._background:
            self.run(job_id)
            return
        with self._lock:
            if self._closed:
                return
        if user is None:
            user = self.store.get(job_id).user
        assert self._queue is not None
        self._queue.put(user, job_id)

    def _run_logged(self, job_id: str) -> None:
        try:
            self.run(job_id)
        except Exception:
            log.exception("job %s crashed", job_id)

    def run(self, job_id: str) -> None:
        """Do the job's next step, if it has one (each step claims the job first)."""
        with self._heartbeat.beating(job_id):
            self.steps.run(job_id)


STOPPED = "the node stopped while it ran"
_REQUEUED = "queued again (mock data is public)"


def _changed(job_id: str) -> BadRequest:
    return BadRequest(f"job {job_id} changed while you looked at it; show it again and retry")
