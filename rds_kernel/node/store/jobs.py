"""Reading and writing job rows: idempotent creation, guarded status changes, two views.

Every status change is a guarded ``UPDATE ... WHERE status IN (...)``: of two processes or
threads trying to claim a job (to run it, approve it, deny it), exactly one succeeds, and the
change and its audit row commit together.

A job has two views. :meth:`Job.public` is what its scientist may see: status, progress, the
declared parameters, the mock output (public data), and the result only once it was released
(charged to the ledger, or approved by the owner). For a DP job it shows no progress and no
time that moves with the runs (``progress`` and ``updated_at`` are null): only the status and,
while it runs, ``finishes_at``, the end of its timetable, known before any data was read.
:meth:`Job.owner` adds the source, the private output, the output checks, the log of the runs,
the real ``updated_at`` and ``heartbeat_at``.

While a job runs, the node process running it writes ``heartbeat_at`` every few seconds
(:meth:`JobStore.beat`): the only column that moves while a DP job runs, and never in a
scientist's view. A job whose heartbeat stopped (:meth:`JobStore.stale`) was left by a process
that died, and is settled by the node (``jobs_queue``).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from rds_kernel import wire
from rds_kernel.errors import Conflict, NotFound
from rds_kernel.node.store.records import User
from rds_kernel.node.store.tables import append_audit, jobs, json_safe, reading, utcnow

__all__ = ["Job", "JobStore", "NewJob"]

FINAL = ("done", "released", "denied", "failed")
RUNNING = ("running", "mock_running")  # a node process is running the job's code
_JOB_ID = re.compile(r"^[0-9a-f]{16}$")
RELEASED = ("done", "released")


@dataclass(frozen=True)
class NewJob:
    """A job as submitted, before it has an id or a status."""

    kind: str
    dataset: str
    source: str
    entry: str
    message: str
    params: dict[str, Any]
    spec_hash: str
    status: str
    progress_total: int


@dataclass(frozen=True)
class Job:
    """One row of ``jobs``, detached from the database."""

    id: str
    user: str
    request_id: str
    kind: str
    dataset: str
    source: str
    entry: str
    message: str
    params: dict[str, Any]
    spec_hash: str
    status: str
    progress_done: int
    progress_total: int
    mock: dict[str, Any] | None
    output: dict[str, Any] | None
    checks: list[dict[str, Any]] | None
    owner_log: str | None
    error: str | None
    error_code: str | None
    reviewer: str | None
    review_note: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    heartbeat_at: dt.datetime | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def public_view(self) -> wire.JobView:
        """What the scientist who submitted the job may see.

        A DP job's runs must not be timed from outside: no progress, no ``updated_at`` (a DP
        job writes nothing while it runs, but its status changes are all the scientist needs),
        and ``finishes_at`` from its timetable, which no run can move.
        """
        dp = self.kind == "dp"
        return wire.JobView(
            id=self.id,
            request_id=self.request_id,
            kind="dp" if dp else "reviewed",
            dataset=self.dataset,
            entry=self.entry,
            message=self.message,
            params=self.params,
            status=self.status,
            progress=None
            if dp
            else wire.JobProgress(done=self.progress_done, total=self.progress_total),
            finishes_at=self._finishes_at(),
            mock=None if self.mock is None else wire.JobMock.model_validate(self.mock),
            result=self.output if self.status in RELEASED else None,
            error=None
            if self.error is None
            else wire.JobError(code=self.error_code, message=self.error),
            review_note=self.review_note,
            created_at=self.created_at.isoformat(),
            updated_at=None if dp else self.updated_at.isoformat(),
        )

    def public(self) -> dict[str, Any]:
        """:meth:`public_view` as JSON."""
        return self.public_view().to_dict()

    def _finishes_at(self) -> str | None:
        """A running DP job's end: when it started (it writes nothing since) plus its timetable."""
        plan = self.params.get("timetable") if self.kind == "dp" else None
        if self.status != "running" or not isinstance(plan, dict):
            return None
        seconds = plan.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            return None
        return (self.updated_at + dt.timedelta(seconds=float(seconds))).isoformat()

    def owner_view(self) -> wire.OwnerJobView:
        """Everything, for the data owner: the scientist's view, and what only the owner sees."""
        public = self.public_view()
        fields: dict[str, Any] = {name: getattr(public, name) for name in wire.JobView.model_fields}
        fields.update(
            updated_at=self.updated_at.isoformat(),
            heartbeat_at=None if self.heartbeat_at is None else self.heartbeat_at.isoformat(),
            user=self.user,
            source=self.source,
            output=self.output,
            checks=self.checks,
            log=self.owner_log,
            reviewer=self.reviewer,
            spec_hash=self.spec_hash,
        )
        return wire.OwnerJobView.model_validate(fields)

    def owner(self) -> dict[str, Any]:
        """:meth:`owner_view` as JSON."""
        return self.owner_view().to_dict()


Jobs = list[Job]  # (inside JobStore, ``list`` is its method)


class JobStore:
    """The ``jobs`` table of one node database, on the engine of its ``Store`` (``Store.engine``).

    It owns no engine: the ``Store`` creates the tables (``Store.create_all``) and disposes
    of the engine (``Store.close``).
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def create(self, user: User, request_id: str, new: NewJob) -> tuple[Job, bool]:
        """Insert a job, or return the one already stored under ``request_id`` (False).

        The same ``request_id`` with a different job is a ``Conflict``.
        """
        existing = self.find(user, request_id)
        if existing is None:
            now = utcnow()
            job_id = secrets.token_hex(8)
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        jobs.insert().values(
                            id=job_id,
                            user_id=user.id,
                            user_name=user.name,
                            request_id=request_id,
                            kind=new.kind,
                            dataset=new.dataset,
                            source=new.source,
                            entry=new.entry,
                            message=new.message,
                            params=json_safe(new.params, "the job parameters"),
                            spec_hash=new.spec_hash,
                            status=new.status,
                            progress_done=0,
                            progress_total=new.progress_total,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                    append_audit(
                        conn,
                        user.name,
                        "job.submit",
                        {
                            "job": job_id,
                            "kind": new.kind,
                            "dataset": new.dataset,
                            "request_id": request_id,
                            "spec_hash": new.spec_hash,
                            "params": new.params,
                        },
                    )
                return self.get(job_id), True
            except sa.exc.IntegrityError:
                existing = self.find(user, request_id)
                if existing is None:
                    raise
        if existing.spec_hash != new.spec_hash:
            raise Conflict(
                f"request_id {request_id!r} was already used for a different job or query; "
                "use a new request_id for a new job",
                {"request_id": request_id, "job": existing.id},
            )
        return existing, False

    def find(self, user: User, request_id: str) -> Job | None:
        with reading(self.engine) as conn:
            row = conn.execute(
                sa.select(jobs).where(jobs.c.user_id == user.id, jobs.c.request_id == request_id)
            ).one_or_none()
        return None if row is None else _job(row)

    def get(self, job_id: str, user: User | None = None) -> Job:
        """The job ``job_id``; with ``user``, only if it is theirs (else ``NotFound`` too)."""
        if not _JOB_ID.fullmatch(str(job_id)):
            raise NotFound(f"no job {str(job_id)[:40]!r} on this node", {"job": str(job_id)[:40]})
        query = sa.select(jobs).where(jobs.c.id == job_id)
        if user is not None:
            query = query.where(jobs.c.user_id == user.id)
        with reading(self.engine) as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            raise NotFound(
                f"no job {str(job_id)[:40]!r} on this node"
                + ("" if user is None else " among yours; list yours with GET /v1/jobs"),
                {"job": str(job_id)[:40]},
            )
        return _job(row)

    def list(
        self, *, user: User | None = None, statuses: Iterable[str] = (), limit: int = 100
    ) -> list[Job]:
        """Jobs newest first, of one user or all, optionally only in some statuses."""
        query = sa.select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit)
        if user is not None:
            query = query.where(jobs.c.user_id == user.id)
        wanted = list(statuses)
        if wanted:
            query = query.where(jobs.c.status.in_(wanted))
        with reading(self.engine) as conn:
            return [_job(row) for row in conn.execute(query).all()]

    def move(
        self,
        job_id: str,
        from_statuses: Iterable[str],
        to: str,
        *,
        actor: str | None = None,
        action: str | None = None,
        detail: dict[str, Any] | None = None,
        **values: Any,
    ) -> bool:
        """Change the status if it is one of ``from_statuses``; audit it. False if it was not.

        A job that starts running starts with a fresh heartbeat.
        """
        now = utcnow()
        if to in RUNNING:
            values = {"heartbeat_at": now, **values}
        with self.engine.begin() as conn:
            result = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status.in_(list(from_statuses)))
                .values(status=to, updated_at=now, **values)
            )
            if result.rowcount != 1:
                return False
            if action is not None:
                append_audit(
                    conn, actor or "node", action, {"job": job_id, "status": to, **(detail or {})}
                )
        return True

    def note(self, job_id: str, statuses: Iterable[str], **values: Any) -> bool:
        """Write owner-only columns of a job in one of ``statuses``, leaving its status and its
        ``updated_at`` (which its scientist sees) as they are. False if it was not."""
        with self.engine.begin() as conn:
            result = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status.in_(list(statuses)))
                .values(**values)
            )
        return result.rowcount == 1

    def beat(self, job_ids: Iterable[str]) -> None:
        """The heartbeat of the jobs this process runs: they are alive now."""
        ids = sorted(job_ids)
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.id.in_(ids), jobs.c.status.in_(RUNNING))
                .values(heartbeat_at=utcnow())
            )

    def stale(self, before: dt.datetime, limit: int = 1000) -> Jobs:
        """Running jobs with no heartbeat since ``before`` (a job from before heartbeats: no
        status change since then), oldest first."""
        last = sa.func.coalesce(jobs.c.heartbeat_at, jobs.c.updated_at)
        query = (
            sa.select(jobs)
            .where(jobs.c.status.in_(RUNNING), last < before)
            .order_by(jobs.c.created_at, jobs.c.id)
            .limit(limit)
        )
        with reading(self.engine) as conn:
            return [_job(row) for row in conn.execute(query).all()]


def _job(row: sa.Row[Any]) -> Job:
    return Job(
        id=row.id,
        user=row.user_name,
        request_id=row.request_id,
        kind=row.kind,
        dataset=row.dataset,
        source=row.source,
        entry=row.entry,
        message=row.message,
        params=row.params,
        spec_hash=row.spec_hash,
        status=row.status,
        progress_done=row.progress_done,
        progress_total=row.progress_total,
        mock=row.mock,
        output=row.output,
        checks=row.checks,
        owner_log=row.owner_log,
        error=row.error,
        error_code=row.error_code,
        reviewer=row.reviewer,
        review_note=row.review_note,
        created_at=row.created_at,
        updated_at=row.updated_at,
        heartbeat_at=row.heartbeat_at,
    )
