"""A DP job's cost is reserved before anything reads the data, and a failure never comes free.

The attacks these pin: a DP job ran *before* it was charged, so a charge that then failed (a
``request_id`` already used by a query, a dataset's global cap the early check ignored, budget
spent meanwhile by a concurrent query) released the job's timing and outcome for nothing. Now
the reservation (``Store.charge`` with a placeholder answer) comes first; only failures that
cannot depend on the data are refunded (the sandbox did not start, the node shut down), and a
crash mid-job leaves the job failed *and charged*.

Epsilons here are binary fractions (0.5, 1.5, 0.25) so that budgets spend to exactly zero.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rds_kernel.errors import BudgetExceeded
from rds_kernel.node.api.app import create_app
from rds_kernel.node.datasets import Dataset
from rds_kernel.node.jobs.service import JobService
from rds_kernel.node.store.jobs import Job
from rds_kernel.node.store.tables import jobs as jobs_table
from rds_kernel.sandbox import SandboxConfig, Session
from rds_kernel.spec import Query, count
from tests.node.jobs.helpers import dp, job_node
from tests.node.jobs.test_dp_jobs import charged_releases
from tests.node.nodes import TestNode

SOURCE = "def f(df):\n    return 0.5\n"


def wait_for(jobs: JobService, job_id: str, statuses: tuple[str, ...], seconds: float = 60) -> Job:
    deadline = time.monotonic() + seconds
    while (job := jobs.store.get(job_id)).status not in statuses:
        assert time.monotonic() < deadline, f"job {job_id} is still {job.status}"
        threading.Event().wait(0.02)
    return job


@pytest.fixture
def background(node: TestNode) -> Iterator[JobService]:
    """The node's job service as the server runs it: jobs run in a worker thread."""
    service = JobService(node.service, background=True)
    yield service
    service.close()


class Watch:
    """Counts sandbox start-ups and reads of the private data (to prove nothing ran)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started = 0
        self.scanned = 0
        start, scan = Session.start, Dataset.scan

        def counted_start(session: Session) -> None:
            self.started += 1
            start(session)

        def counted_scan(ds: Dataset) -> Any:
            self.scanned += 1
            return scan(ds)

        monkeypatch.setattr(Session, "start", counted_start)
        monkeypatch.setattr(Dataset, "scan", counted_scan)


def test_the_cost_is_reserved_before_the_runs_and_the_answer_recorded_after(
    background: JobService,
) -> None:
    """While the job runs its exact cost is already spent, as a release whose answer is a
    placeholder; when it is done the same release holds the answer (charged once)."""
    node = background.node
    alice = node.store.get_user("alice")
    job = background.submit(alice, dp(SOURCE, partitions=3, epsilon=1.5))
    cost = job.params["cost"]["epsilon"]
    running = wait_for(background, job.id, ("running", "done", "failed"))
    assert running.status == "running"
    # the reservation is written right after the job is taken up, before the sandbox starts
    deadline = time.monotonic() + 10
    while node.store.find_release(alice, job.request_id) is None:
        assert time.monotonic() < deadline
        threading.Event().wait(0.01)
    reserved = node.store.find_release(alice, job.request_id)
    assert reserved is not None and reserved.answer["reserved"] is True
    assert reserved.answer["value"] is None
    assert node.store.budget("alice").epsilon_spent == cost
    assert background.store.get(job.id).status == "running"  # reserved while it runs

    done = wait_for(background, job.id, ("done", "failed"))
    assert done.status == "done", done.owner_log
    release = node.store.find_release(alice, job.request_id)
    assert release is not None and "reserved" not in release.answer
    assert release.answer == done.public()["result"]
    assert node.store.budget("alice").epsilon_spent == cost
    assert len(node.store.releases(alice)) == 1


def test_a_request_id_used_by_a_query_is_a_conflict_and_nothing_runs(
    node: TestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the job ran, then its charge hit the query's release (Conflict) and charged
    nothing. Now the submission is refused with 409 before anything is stored or run."""
    watch = Watch(monkeypatch)
    headers = {"Authorization": f"Bearer {node.tokens['alice']}"}
    query = Query("patients").agg(count()).spec(0.25).to_dict()
    with TestClient(create_app(service=node.service), raise_server_exceptions=False) as http:
        r = http.post("/v1/queries", json={"request_id": "mine", "spec": query}, headers=headers)
        assert r.status_code == 200, r.text
        scanned_by_query = watch.scanned
        r = http.post("/v1/jobs", json=dp(SOURCE, request_id="mine"), headers=headers)
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "conflict"
        assert "request_id" in r.json()["error"]["message"]
        assert http.get("/v1/jobs", headers=headers).json() == {"jobs": []}
        assert http.get("/v1/budget", headers=headers).json()["epsilon_spent"] == 0.25
    assert watch.started == 0 and watch.scanned == scanned_by_query


def test_a_job_the_datasets_global_cap_cannot_cover_is_refused_at_submit(
    jobs: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The early check used to look at the scientist's budgets only; the dataset's global cap
    was checked by the charge, after the job had run. Now every scope is checked at submit."""
    watch = Watch(monkeypatch)
    jobs.node.store.set_dataset_cap("patients", 0.25, actor="owner")
    alice = jobs.node.store.get_user("alice")
    with pytest.raises(BudgetExceeded):
        jobs.submit(alice, dp(SOURCE, epsilon=0.5))
    assert jobs.store.list() == []
    assert jobs.node.store.budget("alice").epsilon_spent == 0
    assert watch.started == 0 and watch.scanned == 0


def test_a_budget_spent_after_submission_fails_the_job_before_anything_runs(
    jobs: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A concurrent release empties the budget between submission and run: the reservation
    fails, so the job fails before the sandbox starts or the data is read, uncharged."""
    alice = jobs.node.store.get_user("alice")
    body = dp(SOURCE, request_id="late", epsilon=0.5)
    job, _created = jobs.store.create(alice, "late", jobs._validate(body))  # stored, not run
    jobs.node.store.charge(  # alice's other release, meanwhile: 1.75 of her 2.0
        user=alice,
        dataset="patients",
        request_id="concurrent",
        spec_hash="concurrent",
        epsilon=1.75,
        delta=0.0,
        answer={"value": 1},
    )
    watch = Watch(monkeypatch)
    jobs.run(job.id)
    job = jobs.store.get(job.id)
    assert job.status == "failed"
    assert job.public()["error"]["code"] == "budget_exceeded"
    assert watch.started == 0 and watch.scanned == 0  # nothing ran, nothing read the data
    assert jobs.node.store.budget("alice").epsilon_spent == 1.75
    assert jobs.node.store.find_release(alice, "late") is None


def test_the_node_shutting_down_mid_job_refunds_it(background: JobService) -> None:
    """Shutting the node down is the owner's act, independent of the data: the runs are
    killed, the reservation is refunded (audited), and the job fails saying so."""
    node = background.node
    alice = node.store.get_user("alice")
    job = background.submit(alice, dp(SOURCE, partitions=4, run_seconds=0.5, epsilon=0.5))
    wait_for(background, job.id, ("running",))
    threading.Event().wait(1.6)  # 1 s to start, then runs: runs 0 and 1 have started
    assert node.store.budget("alice").epsilon_spent == 0.5
    started = time.monotonic()
    background.close()
    assert time.monotonic() - started < 5  # the timetable would run 2 s more
    failed = background.store.get(job.id)
    assert failed.status == "failed", failed.owner_log
    assert failed.public()["error"]["code"] == "node_unavailable"
    assert "nothing was charged" in failed.public()["error"]["message"]
    assert node.store.budget("alice").epsilon_spent == 0
    assert node.store.find_release(alice, job.request_id) is None
    assert "release.refund" in [e.action for e in node.store.audit_log(limit=20)]


class Crash(BaseException):
    """Stands for kill -9: nothing after it runs (not even ``except Exception``)."""


def test_a_crash_mid_job_leaves_it_failed_and_charged(
    node: TestNode, jobs: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node dies after the first run started. On restart the job is failed and stays
    charged (its runs may have seen the data; a refund would tell whether they did), and it
    is not run again."""
    dispatch = Session._dispatch
    calls = []

    def crash_on_the_second_run(session: Session, *args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == 2:
            raise Crash
        return dispatch(session, *args, **kwargs)

    monkeypatch.setattr(Session, "_dispatch", crash_on_the_second_run)
    alice = node.service.store.get_user("alice")
    with pytest.raises(Crash):
        jobs.submit(alice, dp(SOURCE, request_id="crash", epsilon=0.5))
    job = jobs.store.find(alice, "crash")
    assert job is not None and job.status == "running"
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    with jobs.store.engine.begin() as conn:
        conn.execute(
            jobs_table.update()
            .where(jobs_table.c.id == job.id)
            .values(updated_at=long_ago, heartbeat_at=long_ago)
        )

    watch = Watch(monkeypatch)
    restarted = JobService(node.service, background=False)
    try:
        restarted.resume()
    finally:
        restarted.close()
    job = jobs.store.get(job.id)
    assert job.status == "failed"
    error = job.public()["error"]
    assert error["code"] == "internal_error" and "charged" in error["message"]
    assert "nothing was charged" not in error["message"]
    assert node.service.store.budget("alice").epsilon_spent == 0.5
    release = node.service.store.find_release(alice, "crash")
    assert release is not None and release.answer.get("failed") is True
    assert watch.started == 0  # never run again
    assert charged_releases(node) == 1


def test_a_sandbox_that_does_not_start_is_refunded(
    tmp_path: Path, sandbox: SandboxConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sandbox failing to start happens before any data is read: the reservation is given
    back and the job fails with nothing charged."""
    node = job_node(tmp_path / "node")
    jobs = JobService(node.service, background=False)

    def broken(_session: Session) -> None:
        raise OSError("no bwrap today")

    monkeypatch.setattr(Session, "start", broken)
    try:
        alice = node.service.store.get_user("alice")
        job = jobs.submit(alice, dp(SOURCE, epsilon=0.5))
        assert job.status == "failed"
        assert "nothing was released or charged" in job.public()["error"]["message"]
        assert node.service.store.budget("alice").epsilon_spent == 0
        assert "no bwrap today" in (job.owner_log or "")
    finally:
        jobs.close()
        node.service.close()
