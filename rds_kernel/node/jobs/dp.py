"""A DP code job on the node: reserve its cost, run it on a fixed timetable, release, settle.

The order is what makes it private, not only its answer:

1. **Reserve** before anything reads the data: the job's exact cost is charged through
   ``Store.charge`` under its ``request_id``, with a placeholder answer. A reservation that
   fails (``BudgetExceeded``, a ``Conflict`` with an earlier release) fails the job at once,
   uncharged: nothing has seen the data, so the failure says nothing about it.
2. **Start the sandbox** (before reading the data too). If it does not start, or cannot isolate
   the job's runs from each other (in any sandbox mode), the reservation is refunded.
3. **Read, partition and serialize** the private rows, then **run** one partition at a time on
   the job's :class:`~rds_kernel.dp.aggregate.Timetable`, fixed when the node took up the job
   (predictable transactions, Haeberlen, Pierce, Narayan, "Differential Privacy Under Fire",
   USENIX Security 2011): run ``i`` starts at ``t0 + i * slot`` whatever earlier runs did, and
   the job ends at the end of the timetable however early its runs ended.
4. **Release**: parse (strictly), default, clamp and noise the outputs — every step total — and
   ``Store.record_answer`` the answer in place of the placeholder; the job is ``done``.

From step 3 on the charge stands whatever happens: a failure there could depend on the data or
on what the scientist's code did with it, and an uncharged failure would tell it for free. The
only refunds are for failures that cannot depend on the data: the sandbox would not start or
isolate the runs (before any data is read), or the node is shutting down (the owner's action).
A node that crashes mid-job leaves the reservation, and the job's heartbeat stops: the
server's sweep (``JobService.sweep``, ``jobs_queue``) settles it as failed and charged once
the heartbeat is ``job_stale_seconds`` old, and never runs it again.

``t0`` is when a worker took the job up, which depends on the jobs before it in the queue. So
no step that reads private data frees its worker at a time that depends on the data: a DP job
holds it to the end of its timetable, a reviewed job's private run to a padded end fixed when
it started (``jobs_steps``). Mock runs, budget refusals and refunds end early, but none of
them depends on private data.

While the job runs its scientist sees no progress and no time that moves with the runs (see
``Job.public``), only the status and the timetable's expected end.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from rds_kernel.dp.aggregate import (
    START_TOLERANCE,
    PreparedAggregate,
    SampleAggregate,
    Timetable,
    clamp_outputs,
    max_output_bytes,
    parse_output,
    prepare_aggregate,
    release_aggregate,
    timetable,
)
from rds_kernel.errors import (
    BudgetExceeded,
    Conflict,
    InternalError,
    NodeUnavailable,
    PermissionDenied,
    RdsError,
)
from rds_kernel.node.jobs.run import (
    RunOutcome,
    Sessions,
    arrow_stream,
    owner_log,
    partition,
    sleep_until,
)
from rds_kernel.node.service import NodeService
from rds_kernel.node.store.jobs import Job, JobStore
from rds_kernel.node.store.records import User
from rds_kernel.sandbox import Limits, RunResult, SandboxConfig, Session

__all__ = ["FAILED", "DpJobs", "job_timetable", "timetable_log"]

log = logging.getLogger("rds_kernel.node.jobs.service")

FAILED = (
    "the job failed on the node and nothing was released or charged; the owner can see why "
    "in the job's log (`rds jobs show`)"
)


def charged_failure(cost: dict[str, Any], why: str) -> str:
    """The scientist's message for a job that failed after its runs could see the data."""
    return (
        f"{why}; nothing was released, but the job's cost (ε={cost['epsilon']:.6g}) was "
        "charged: its runs had started on the private data, and whether a job fails there could "
        "depend on the data, so an uncharged failure would tell it for free. The owner can see "
        "why in the job's log (`rds jobs show`); submit the job again with a new request_id"
    )


def job_timetable(job: Job, start_seconds: int) -> Timetable:
    """The timetable stored with the job at submission (or, for an older job, the node's)."""
    spec = SampleAggregate.from_dict(job.params)
    stored = job.params.get("timetable")
    if isinstance(stored, dict) and isinstance(stored.get("start_seconds"), int | float):
        return Timetable(float(stored["start_seconds"]), spec.run_seconds, spec.partitions)
    return timetable(spec, start_seconds)


class _Refund(Exception):
    """The job stopped for a reason that cannot depend on the data: give the reservation back."""

    def __init__(self, owner: str, error: RdsError) -> None:
        super().__init__(owner)
        self.owner = owner
        self.error = error


class DpJobs:
    """Runs DP code jobs for one node (see the module docstring)."""

    def __init__(
        self,
        node: NodeService,
        store: JobStore,
        sessions: Sessions,
        sandbox: SandboxConfig,
        limits: Limits,
    ) -> None:
        self.node = node
        self.store = store
        self.sessions = sessions
        self.sandbox = sandbox
        self.limits = limits
        self.settings = node.settings

    # ------------------------------------------------------------------ the step

    def run(self, job: Job) -> None:
        """Take up a queued DP job and see it through to ``done`` or ``failed``."""
        if not self.store.move(job.id, ["queued"], "running", action="job.run"):
            return
        anchor = time.monotonic()  # the timetable starts now, before anything reads the data
        spec = SampleAggregate.from_dict(job.params)
        plan = job_timetable(job, self.settings.job_start_seconds)
        try:
            user = self.node.store.get_user(job.user)
            prepared = prepare_aggregate(spec)
            reserved = self.node.store.charge(
                user=user,
                dataset=job.dataset,
                request_id=job.request_id,
                spec_hash=job.spec_hash,
                epsilon=prepared.cost[0],
                delta=prepared.cost[1],
                answer=_answer(job, spec, prepared, reserved=True),
            )
        except Exception as exc:  # nothing has read the data: an uncharged failure
            self._fail(job, exc)
            return
        if reserved.replayed:  # this job's reservation exists already: never run twice
            self.settle(job, "the job was taken up twice")
            return
        text = ""
        try:
            results, text = self._reserved(job, spec, plan, anchor)
            self._release(job, user, spec, prepared, results, text)
        except _Refund as refund:
            refunded = self.node.store.refund(user, job.request_id, reason=refund.owner)
            self._fail(job, refund.error, log_text=refund.owner, refunded=refunded)
        except Exception as exc:
            # The data was read, perhaps runs ran: the charge stands, and the job ends when its
            # timetable does, like any other (unless the node is shutting down).
            sleep_until(self.sessions, anchor + plan.seconds)
            self._fail_charged(job, user, exc, text)

    def _reserved(
        self, job: Job, spec: SampleAggregate, plan: Timetable, anchor: float
    ) -> tuple[list[RunResult], str]:
        """Start the sandbox, read the data, run the timetable: the runs' results, the log.

        Raises ``_Refund`` for what cannot depend on the data; anything else keeps the charge.
        """
        limits = dataclasses.replace(
            self.limits,
            wall_seconds=spec.run_seconds,
            result_bytes=max_output_bytes(spec.outputs),
        )
        try:
            session = Session(self.sandbox, job.source, entry=job.entry, mode="dp", limits=limits)
        except Exception as exc:
            why = f"the sandbox did not start: {type(exc).__name__}: {exc}"
            raise _Refund(why, InternalError(FAILED)) from None
        register = self.sessions.register(job.id)
        register(session)
        try:
            try:
                session.start()
            except Exception as exc:
                why = f"the sandbox did not start: {type(exc).__name__}: {exc}"
                raise _Refund(why, self._not_started(exc)) from None
            if self.sessions.closed:
                raise _Refund("the node shut down before the job read the data", _SHUTDOWN)
            if not session.isolated:
                # runs that can reach each other break the sensitivity (upper - lower) / k
                owner = (
                    f"this host does not let the sandbox ({self.sandbox.mode}) isolate the runs "
                    f"of a job from each other ({session.isolation_error}), which DP code jobs "
                    "need; nothing ran"
                )
                log.error("job %s: %s", job.id, owner)
                raise _Refund(owner, PermissionDenied(_NOT_ISOLATED, {"job": job.id}))
            started = time.monotonic() - anchor
            # From here on the job has the data: the charge stands.
            ds = self.node.datasets.get(job.dataset)
            parts = partition(ds.scan().collect(), spec.partitions, ds.schema.identifier)
            inputs = [arrow_stream(p) for p in parts]  # all serialized before the first run
            del parts
            ready = time.monotonic() - anchor
            results = session.run_timetable(
                inputs,
                start=anchor + plan.start_seconds,
                slot=plan.slot_seconds,
                tolerance=START_TOLERANCE,
            )
            del inputs
            session.kill()  # every run has ended or been given up: nothing to wait for
        finally:
            session.close()
            register(None)
        text = (
            timetable_log(plan, started, ready)
            + "\n"
            + owner_log(RunOutcome(results, session.template_log))
        )
        if self.sessions.closed:
            raise _Refund("the node shut down while the job ran\n" + text, _SHUTDOWN)
        return results, text

    def _not_started(self, exc: BaseException) -> RdsError:
        if self.sessions.closed:  # killed while it started: the node is shutting down
            return _SHUTDOWN
        if isinstance(exc, PermissionDenied):  # sandbox unavailable: the message says why
            return exc
        return InternalError(FAILED)

    def _release(
        self,
        job: Job,
        user: User,
        spec: SampleAggregate,
        prepared: PreparedAggregate,
        results: list[RunResult],
        text: str,
    ) -> None:
        # every run counts: failed ones as the default, so the count of failures (which depends
        # on the data) is never released; parse_output and clamp_outputs never raise
        outputs = [parse_output(r.output, spec) if r.ok else None for r in results]
        values = release_aggregate(prepared, clamp_outputs(spec, outputs))
        answer = _answer(job, spec, prepared, values=values)
        release = self.node.store.record_answer(user, job.request_id, answer)
        self.store.move(job.id, ["running"], "done", output=release.answer, owner_log=text)

    # ------------------------------------------------------------------ endings

    def settle(self, job: Job, why: str) -> None:
        """End a DP job found ``running`` that nobody runs (a crash), from its reservation.

        Recorded answer: ``done``. A reservation without one: failed, and the charge stands
        (its runs may have seen the data). No reservation: failed, nothing was charged.
        """
        user = self.node.store.get_user(job.user)
        release = self.node.store.find_release(user, job.request_id)
        if release is None:
            self.store.move(
                job.id,
                ["running"],
                "failed",
                action="job.fail",
                detail={"reason": "interrupted", "charged": False},
                error=FAILED,
                error_code=InternalError.code,
                owner_log=f"{why}, before its cost was reserved: nothing read, nothing charged",
            )
            return
        answer = release.answer
        if not answer.get("reserved") and not answer.get("failed"):
            self.store.move(job.id, ["running"], "done", output=answer)
            return
        if answer.get("reserved"):
            self.node.store.record_answer(user, job.request_id, _failed(answer))
        self.store.move(
            job.id,
            ["running"],
            "failed",
            action="job.fail",
            detail={"reason": "interrupted", "charged": True},
            error=charged_failure(
                answer["cost"], "the node stopped while this job ran on the private data"
            ),
            error_code=InternalError.code,
            owner_log=f"{why}, after its cost was reserved: failed, and the charge stands",
        )

    def _fail(
        self, job: Job, exc: BaseException, *, log_text: str = "", refunded: bool = False
    ) -> None:
        """Fail a job that charged nothing (or whose reservation was refunded)."""
        log.error("job %s failed: %s", job.id, exc, exc_info=not isinstance(exc, RdsError))
        shown = isinstance(exc, BudgetExceeded | Conflict | PermissionDenied | NodeUnavailable)
        error = exc.message if shown and isinstance(exc, RdsError) else FAILED
        code = exc.code if shown and isinstance(exc, RdsError) else InternalError.code
        self.store.move(
            job.id,
            ["running"],
            "failed",
            action="job.fail",
            detail={"reason": type(exc).__name__, "charged": False, "refunded": refunded},
            error=error,
            error_code=code,
            owner_log=(
                log_text + f"\nfailed (nothing charged): {type(exc).__name__}: {exc}"
            ).strip(),
        )

    def _fail_charged(self, job: Job, user: User, exc: BaseException, text: str) -> None:
        log.error("job %s failed after reading the data (charged): %s", job.id, exc, exc_info=True)
        release = self.node.store.find_release(user, job.request_id)
        cost = job.params["cost"]
        if release is not None and release.answer.get("reserved"):
            self.node.store.record_answer(user, job.request_id, _failed(release.answer))
        self.store.move(
            job.id,
            ["running"],
            "failed",
            action="job.fail",
            detail={"reason": type(exc).__name__, "charged": True},
            error=charged_failure(cost, "the job failed on the node"),
            error_code=InternalError.code,
            owner_log=(text + f"\nfailed (charged): {type(exc).__name__}: {exc}").strip(),
        )


_SHUTDOWN = NodeUnavailable(
    "the node shut down while this job ran; nothing was released and nothing was charged. "
    "Submit it again with a new request_id once the node is back"
)
_NOT_ISOLATED = (
    "this node cannot isolate the runs of a DP job from each other, which sample-and-aggregate "
    "needs; nothing ran and nothing was charged. Tell the node's owner (the job's log says why)"
)


def _answer(
    job: Job,
    spec: SampleAggregate,
    prepared: PreparedAggregate,
    *,
    values: list[float] | None = None,
    reserved: bool = False,
) -> dict[str, Any]:
    epsilon, delta = prepared.cost
    answer: dict[str, Any] = {
        "job": job.id,
        "dataset": job.dataset,
        "value": None if values is None else values[0] if spec.scalar else values,
        "partitions": spec.partitions,
        "bounds": [list(b) for b in spec.bounds],
        "cost": {"epsilon": epsilon, "delta": delta},
        "summary": prepared.summary(),
    }
    if reserved:
        answer["reserved"] = True  # charged in advance; the value comes when the job is done
    return answer


def _failed(answer: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in answer.items() if k != "reserved"}, "failed": True}


def timetable_log(plan: Timetable, started: float, ready: float) -> str:
    note = (
        ""
        if ready <= plan.start_seconds
        else " — LATE: runs whose start had passed did not run; raise job_start_seconds"
    )
    return (
        f"timetable: {plan.runs} run(s) of {plan.run_seconds:g} s, one at a time, in slots of "
        f"{plan.slot_seconds:g} s after {plan.start_seconds:g} s to start "
        f"({plan.seconds:g} s in all); sandbox ready after {started:.2f} s, data after "
        f"{ready:.2f} s{note}"
    )
