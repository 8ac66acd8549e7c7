"""A job whose node process died is settled within seconds, not at a restart long after.

The bug these pin: a job killed mid-run (``kill -9``) stayed ``running`` after the node came
back, and was settled only at a later restart, 25 minutes on: ``resume()`` settled only jobs
quiet for longer than they could run. Now the process running a job writes an owner-only
heartbeat, and the server sweeps every ``job_stale_seconds / 2`` (here 1 s), settling jobs
whose heartbeat is ``job_stale_seconds`` (here 2 s) old by the rules of ``jobs_dp``: a DP job
with its reservation fails and stays charged; a reviewed job's private run goes to output
review with a failing check; a mock run is queued again. A job another live process runs keeps
its heartbeat and is left alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from rds_kernel.node.api.app import create_app
from rds_kernel.node.datasets import Dataset
from rds_kernel.node.jobs.service import JobService
from rds_kernel.node.store import Store
from rds_kernel.node.store.jobs import Job
from rds_kernel.node.store.tables import make_engine
from rds_kernel.sandbox import SandboxConfig, Session
from tests.node.jobs.helpers import dp, job_node, reviewed
from tests.node.store.legacy_schema import create_legacy

SOURCE = "def f(df):\n    return 0.5\n"
ROOT = Path(__file__).resolve().parents[3]


class Crash(BaseException):
    """Stands for kill -9: nothing after it runs (not even ``except Exception``)."""


def crash_when(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, when: int = 1) -> None:
    """Make the ``when``-th call of ``owner.name`` (and only it) crash the node."""
    original = getattr(owner, name)
    calls = []

    def crashing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == when:
            raise Crash
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, crashing)


def until(jobs: JobService, job_id: str, done: Callable[[Job], bool], seconds: float) -> Job:
    deadline = time.monotonic() + seconds
    while not done(job := jobs.store.get(job_id)):
        assert time.monotonic() < deadline, f"job {job_id} is still {job.status}"
        threading.Event().wait(0.05)
    return job


def test_jobs_whose_process_died_are_settled_by_the_sweep(
    tmp_path: Path, sandbox: SandboxConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three jobs die with their process (a Crash mid-step: nothing after it runs, their
    heartbeat stops): a DP job after its reservation, a reviewed job's private run, a mock
    run. A fourth, a DP job another live process runs for 6.6 s, keeps beating. The server
    (resume, then its sweeper) settles the three within 2 s + 1 s of their last heartbeat and
    leaves the fourth to finish. Before, all three stayed running for minutes.

    Margin: the check allows 15 s for the three, five times the 3 s it takes.
    """
    node = job_node(tmp_path / "node", job_stale_seconds=2)
    node.service.store.set_budget("alice", 10.0, actor="test")
    dead = JobService(node.service, background=False)  # the process that "dies"
    live = JobService(node.service, background=True)  # another process, alive
    server: JobService | None = None
    try:
        alice = node.service.store.get_user("alice")
        with monkeypatch.context() as m:
            crash_when(m, Session, "_dispatch", when=2)  # after the first run started
            with pytest.raises(Crash):
                dead.submit(alice, dp(SOURCE, request_id="dp", epsilon=0.5))
        with monkeypatch.context() as m:
            crash_when(m, Dataset, "scan")  # the private run, reading the data
            private = dead.submit(alice, reviewed(SOURCE, request_id="private"))
            with pytest.raises(Crash):
                dead.approve(private.id, actor="owner")
        with monkeypatch.context() as m:
            crash_when(m, Session, "start")  # the mock run, starting its sandbox
            with pytest.raises(Crash):
                dead.submit(alice, reviewed(SOURCE, request_id="mock"))
        found = {r: dead.store.find(alice, r) for r in ("dp", "private", "mock")}
        assert {r: j.status for r, j in found.items() if j} == {
            "dp": "running",
            "private": "running",
            "mock": "mock_running",
        }
        busy = live.submit(alice, dp(SOURCE, request_id="busy", partitions=4, run_seconds=1.0))

        server = JobService(node.service, background=True)  # the node comes back
        server.resume()
        ids = {r: j.id for r, j in found.items() if j}
        dp_job = until(server, ids["dp"], lambda j: j.final, 15)
        assert dp_job.status == "failed"
        error = dp_job.public()["error"]["message"]
        assert "charged" in error and "nothing was charged" not in error
        assert node.service.store.budget("alice").epsilon_spent >= 0.5
        release = node.service.store.find_release(alice, "dp")
        assert release is not None and release.answer.get("failed") is True

        private_job = until(server, ids["private"], lambda j: j.status != "running", 15)
        assert private_job.status == "output_review" and private_job.output is None
        [check] = private_job.checks or []
        assert not check["ok"] and "the node stopped while it ran" in check["detail"]
        assert "heartbeat" in (private_job.owner_log or "")

        mock_job = until(server, ids["mock"], lambda j: j.status == "pending_review", 15)
        assert mock_job.public()["mock"]["ok"] is True

        # Alive, so left alone: it runs longer than the 2 s staleness, and only its heartbeat
        # keeps the sweep off it. Whether it is still running or already done here depends on
        # how long settling the three took (it was "done" on a loaded machine); a swept job
        # would be "failed".
        assert server.store.get(busy.id).status in {"running", "done"}
        done = until(server, busy.id, lambda j: j.final, 30)
        assert done.status == "done", done.owner_log
    finally:
        for service in (server, live, dead):
            if service is not None:
                service.close()
        node.service.close()


def test_the_heartbeat_is_the_owners_alone(tmp_path: Path, sandbox: SandboxConfig) -> None:
    """While a DP job runs its heartbeat moves (every 2 / 6 s here), in the owner's view
    only: the scientist's view of the job stays one and the same."""
    node = job_node(tmp_path / "node", job_stale_seconds=2)
    jobs = JobService(node.service, background=True)
    try:
        alice = node.service.store.get_user("alice")
        job = jobs.submit(alice, dp(SOURCE, partitions=4, run_seconds=0.5))
        job = until(jobs, job.id, lambda j: j.status == "running", 10)
        views, beats = set(), set()
        while (job := jobs.store.get(job.id)).status == "running":
            views.add(repr(job.public()))
            beats.add(job.owner()["heartbeat_at"])
            threading.Event().wait(0.1)
        assert job.status == "done", job.owner_log
        assert len(views) == 1 and "heartbeat" not in views.pop()
        assert len(beats) >= 3, beats  # 3.6 s of running, a beat every 0.33 s
    finally:
        jobs.close()
        node.service.close()


NODE_PROCESS = textwrap.dedent(
    """
    import sys, time
    from rds_kernel.node.jobs.service import JobService
    from rds_kernel.node.service import NodeService
    from rds_kernel.node.settings import load_settings

    node = NodeService(load_settings(sys.argv[1]))
    jobs = JobService(node, background=True)
    body = {
        "request_id": "doomed", "kind": "dp", "dataset": "patients", "entry": "f",
        "source": "def f(df):\\n    return 0.5\\n",
        "params": {"bounds": [0, 1], "epsilon": 0.5, "partitions": 20, "run_seconds": 0.25},
    }
    print(jobs.submit(node.store.get_user("alice"), body).id, flush=True)
    time.sleep(600)
    """
)


def test_a_node_killed_with_sigkill_settles_its_job_soon_after_it_restarts(
    tmp_path: Path, sandbox: SandboxConfig
) -> None:
    """The reported case, with real processes: a node process takes up a DP job of 14 s and
    is killed with SIGKILL 1.5 s in (its sandbox dies with it: bubblewrap's die-with-parent).
    The node comes back (the app, as `rds node serve` runs it): within seconds the job is
    failed and stays charged. Before, it stayed running until a restart 6 minutes after the
    end of its timetable.

    Margin: settled 2 s after its last heartbeat, at the next sweep (every 1 s); the check
    allows 10 s after the restart.
    """
    node = job_node(tmp_path / "node", job_stale_seconds=2)
    process = subprocess.Popen(
        [sys.executable, "-c", NODE_PROCESS, str(node.directory)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        job_id = process.stdout.readline().strip()
        assert job_id, "the node process did not submit its job"
        jobs = JobService(node.service, background=False)  # only to read the job
        try:
            until(jobs, job_id, lambda j: j.status == "running", 20)
            threading.Event().wait(1.5)  # 1 s to start, then runs
        finally:
            jobs.close()
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
    headers = {"Authorization": f"Bearer {node.tokens['alice']}"}
    try:
        with TestClient(create_app(service=node.service)) as http:  # resume + the sweeper
            restarted = time.monotonic()
            while (job := http.get(f"/v1/jobs/{job_id}", headers=headers).json())[
                "status"
            ] == "running":
                assert time.monotonic() - restarted < 10, "the dead job is still running"
                threading.Event().wait(0.1)
            assert job["status"] == "failed", job
            assert "charged" in job["error"]["message"]
            assert http.get("/v1/budget", headers=headers).json()["epsilon_spent"] == 0.5
    finally:
        node.service.close()


def test_a_jobs_table_from_before_heartbeats_gets_the_column(database_url: str) -> None:
    """An existing node database has ``jobs`` without ``heartbeat_at``: the store's upgrade
    adds it when the node starts (SQLite and PostgreSQL). More in ``test_migrations``."""
    engine = make_engine(database_url)
    store = Store(database_url)
    try:
        create_legacy(engine, heartbeat=False)
        store.create_all()
        store.create_all()  # twice: nothing to do
        columns = {c["name"] for c in sa.inspect(engine).get_columns("jobs")}
        assert "heartbeat_at" in columns
    finally:
        store.close()
        engine.dispose()
