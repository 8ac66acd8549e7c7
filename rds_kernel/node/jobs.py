"""Code jobs: the node's service for DP code jobs and reviewed jobs (DESIGN §2, rows 2 and 3).

The scientist sends a function's **source text** and its parameters; the node stores it as data
and never compiles or runs it: only the sandbox does (``rds_kernel.sandbox``).

**DP job** (``kind="dp"``): ``queued`` → ``running`` → ``done`` | ``failed``. Sample-and-
aggregate (``rds_kernel.dp.aggregate``): the private rows go to ``k`` disjoint random
partitions, the function runs on each in the sandbox, failures and timeouts become the declared
default, outputs are clamped, averaged and noised by OpenDP; the exact cost
(``measurement.map``) is charged through ``Store.charge`` under the job's ``request_id``
before the answer is stored, so a job is charged once, however often it is fetched or retried.
Nothing a run prints, raises or returns reaches the scientist except through that release —
not even how many runs failed (that count depends on the data); the owner sees it all.

**Reviewed job** (``kind="reviewed"``): ``submitted`` → ``mock_running`` → ``pending_review``
(the mock output, computed on public mock data, is shown to the scientist) → the owner approves
the code → ``approved`` → ``running`` (private data, in the sandbox) → ``output_review`` (the
automatic output checks run) → the owner approves the output → ``released``; the owner may deny
at either review (``denied``: nothing is released). Every step is in the audit log.
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

from rds_kernel.dp.aggregate import SampleAggregate, prepare_aggregate
from rds_kernel.errors import BadRequest, BudgetExceeded, InternalError, PermissionDenied
from rds_kernel.node.jobs_budget import BudgetRequests
from rds_kernel.node.jobs_steps import FAILED, Sessions, Steps
from rds_kernel.node.jobs_store import Job, JobStore, NewJob
from rds_kernel.node.records import BudgetLine, User
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
        if not isinstance(request_id, str) or not _REQUEST_ID.match(request_id):
            raise BadRequest(
                "request_id must be 1-128 letters, digits or '_.:-'; the client picks a fresh "
                "one per job and reuses it only to retry"
            )
        new = self._validate(body)
        if self.store.find(user, request_id) is None:
            # a retry gets its stored job back even if the budget or the sandbox changed since
            check_available(self.sandbox)
            if new.kind == "dp":
                self._precheck(user, new.dataset, new.params["cost"]["epsilon"])
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
        if kind == "dp":
            job = SampleAggregate.from_dict(body.get("params"))
            if job.partitions > self.settings.job_max_partitions:
                raise BadRequest(
                    f"partitions={job.partitions} is more than this node allows "
                    f"({self.settings.job_max_partitions}); ask for fewer"
                )
            epsilon, delta = prepare_aggregate(job).cost
            params = {**job.to_dict(), "cost": {"epsilon": epsilon, "delta": delta}}
            total = job.partitions
        elif not message.strip():
            raise BadRequest("a reviewed job needs a message for the owner: what it does and why")
        spec = {"kind": kind, "dataset": ds.name, "source": source, "entry": entry}
        spec.update(message=message, params=params)
        spec_hash = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        status = "queued" if kind == "dp" else "submitted"
        return NewJob(kind, ds.name, source, entry, message, params, spec_hash, status, total)

    def _precheck(self, user: User, dataset: str, epsilon: float) -> None:
        """Refuse early when the budget clearly cannot cover the job (charge() re-checks)."""
        view = self.node.store.budget_of(user)
        lines: list[tuple[str, BudgetLine]] = [("this node", view)]
        if dataset in view.per_dataset:
            lines.append((f"dataset {dataset!r}", view.per_dataset[dataset]))
        for where, line in lines:
            if epsilon > line.epsilon_remaining:
                raise BudgetExceeded(
                    f"the job needs ε={epsilon:.6g}, {line.epsilon_remaining:.6g} left on {where};"
                    " nothing was charged — ask for less epsilon, or ask the owner for more with "
                    "rds.request_budget(node, epsilon=..., reason=...)",
                    {"needed": {"epsilon": epsilon}, "remaining": line.to_dict()},
                )

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
        """Start jobs left waiting (after a restart); settle DP jobs charged before a crash."""
        for job in self.store.list(statuses=["queued", "submitted", "approved"], limit=1000):
            self.run_later(job.id)
        now = utcnow()
        for job in self.store.list(statuses=["running", "mock_running"], limit=1000):
            # progress refreshes updated_at; a job quiet for longer than it may run is lost
            if now - job.updated_at < timedelta(seconds=self._job_seconds(job.progress_total)):
                continue  # perhaps another node process is running it
            release = None
            if job.kind == "dp":
                release = self.node.store.find_release(
                    self.node.store.get_user(job.user), job.request_id
                )
            if release is not None:
                self.store.move(job.id, ["running"], "done", output=release.answer)
            else:
                self.store.move(
                    job.id,
                    ["running", "mock_running"],
                    "failed",
                    action="job.fail",
                    detail={"reason": "interrupted"},
                    error=FAILED,
                    error_code=InternalError.code,
                    owner_log="interrupted: the node stopped while the job ran",
                )

    def _job_seconds(self, runs: int) -> float:
        """Longer than a job of ``runs`` runs can take (start-up, rounds of runs, margin)."""
        rounds = -(-max(1, runs) // max(1, self.settings.job_parallel))
        return 360.0 + rounds * (self.settings.job_wall_seconds + 2.0)

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
