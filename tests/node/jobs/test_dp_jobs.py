"""DP code jobs through the node's job service, with the real sandbox and the real ledger.

Noise tolerances: a released mean has Laplace noise of scale b (``summary["scale"][j]``), whose
standard deviation is sqrt(2) b; checks allow 6 standard deviations (a false alarm about once
in 5000 runs per check; OpenDP's noise cannot be seeded). Epsilons are chosen so that 6 sigma
is small against the bounds.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import textwrap
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from rds_kernel.errors import BudgetExceeded, Conflict, PermissionDenied
from rds_kernel.node.jobs.run import sandbox_of
from rds_kernel.node.jobs.service import JobService
from rds_kernel.node.store.tables import jobs as jobs_table
from rds_kernel.node.store.tables import releases
from rds_kernel.sandbox import SandboxConfig
from tests.node.jobs.helpers import dp, job_node
from tests.node.nodes import TestNode
from tests.sandbox.helpers import waive_unreadable_environment


def six_sigma(job_result: dict[str, object], output: int = 0) -> float:
    summary = job_result["summary"]
    assert isinstance(summary, dict)
    return 6 * math.sqrt(2) * float(summary["scale"][output])


def charged_releases(node: TestNode) -> int:
    engine = sa.create_engine(node.service.settings.resolved_database_url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(sa.select(sa.func.count()).select_from(releases)) or 0)
    finally:
        engine.dispose()


def test_a_dp_job_releases_a_clamped_noisy_mean_charged_exactly_once(
    tmp_path: Path, database_url: str, sandbox: SandboxConfig
) -> None:
    """The exact cost is charged once, on SQLite and PostgreSQL; a retry returns the same job."""
    node = job_node(tmp_path / "node", database_url)
    jobs = JobService(node.service, background=False)
    try:
        alice = node.service.store.get_user("alice")
        source = "def f(df):\n    return 0.5\n"
        job = jobs.submit(alice, dp(source, epsilon=1.5, partitions=4))
        assert job.status == "done", job.owner_log
        result = job.public()["result"]
        assert result is not None
        cost = result["cost"]["epsilon"]
        assert 1.5 * (1 - 1e-9) <= cost <= 1.5
        assert abs(result["value"] - 0.5) <= six_sigma(result)
        assert result["summary"]["scale"] == pytest.approx([1.0 / (4 * 1.5)], rel=1e-9)
        assert node.service.store.budget("alice").epsilon_spent == cost

        again = jobs.submit(alice, dp(source, epsilon=1.5, partitions=4))
        assert again.id == job.id and again.public()["result"] == result
        assert node.service.store.budget("alice").epsilon_spent == cost
        assert charged_releases(node) == 1
        with pytest.raises(Conflict):
            jobs.submit(alice, dp("def f(df):\n    return 0.25\n", epsilon=1.5, partitions=4))
    finally:
        jobs.close()
        node.service.close()


def test_failed_runs_count_as_the_declared_default(jobs: JobService) -> None:
    """A run that raises contributes the default (0.25); the owner's log says why."""
    alice = jobs.node.store.get_user("alice")
    source = "def f(df):\n    raise ValueError(len(df))\n"
    job = jobs.submit(alice, dp(source, default=0.25, epsilon=1.9))
    result = job.public()["result"]
    assert abs(result["value"] - 0.25) <= six_sigma(result)
    assert "ValueError" in (job.owner_log or "")


def test_runs_killed_at_the_wall_clock_count_as_the_default(
    tmp_path: Path, sandbox: SandboxConfig
) -> None:
    node = job_node(tmp_path / "node", job_wall_seconds=1)
    jobs = JobService(node.service, background=False)
    try:
        alice = node.service.store.get_user("alice")
        source = "def f(df):\n    import time\n    time.sleep(100)\n"
        job = jobs.submit(alice, dp(source, default=0.75, partitions=2, epsilon=1.9))
        result = job.public()["result"]
        assert abs(result["value"] - 0.75) <= six_sigma(result)
        assert "wall-clock" in (job.owner_log or "")
    finally:
        jobs.close()
        node.service.close()


def test_outputs_are_clamped_to_the_bounds(jobs: JobService) -> None:
    """A function that returns a huge number moves the mean no further than the upper bound."""
    alice = jobs.node.store.get_user("alice")
    job = jobs.submit(alice, dp("def f(df):\n    return 1e300\n", bounds=[0, 1], epsilon=1.9))
    result = job.public()["result"]
    assert abs(result["value"] - 1.0) <= six_sigma(result)


def test_vector_outputs_have_one_pair_of_bounds_each(jobs: JobService) -> None:
    """``f`` returns [mean age, share of smokers]: two noisy means, one budget split in two."""
    alice = jobs.node.store.get_user("alice")
    source = "def f(df):\n    return [df['age'].mean(), df['smoker'].mean()]\n"
    job = jobs.submit(alice, dp(source, bounds=[[18, 95], [0, 1]], epsilon=1.9, partitions=4))
    result = job.public()["result"]
    age, smokers = result["value"]
    # epsilon split over the two: scale_j = 2 (upper_j - lower_j) / (4 * 1.9)
    assert result["summary"]["scale"] == pytest.approx([2 * 77 / 7.6, 2 / 7.6], rel=1e-9)
    assert 18 - six_sigma(result) <= age <= 95 + six_sigma(result)
    assert -six_sigma(result, 1) <= smokers <= 1 + six_sigma(result, 1)


def test_nothing_the_code_prints_or_raises_reaches_the_scientist(jobs: JobService) -> None:
    """Raw rows printed, and an exception quoting them, go to the owner's log only."""
    source = textwrap.dedent(
        """
        def f(df):
            print(df.head(3).to_string())
            raise RuntimeError(f"first age {df['age'].iloc[0]}")
        """
    )
    alice = jobs.node.store.get_user("alice")
    job = jobs.submit(alice, dp(source, epsilon=1.9))
    public = job.public()
    assert set(public) == {
        "id", "request_id", "kind", "dataset", "entry", "message", "params", "status",
        "progress", "finishes_at", "mock", "result", "error", "review_note", "created_at",
        "updated_at",
    }  # fmt: skip
    assert public["progress"] is None and public["updated_at"] is None  # see test_timing_attacks
    text = repr(public)
    assert "first age" not in text and "Traceback" not in text and "systolic_bp" not in text
    assert public["result"]["value"] is not None  # the job still released (all defaults)
    owner = job.owner()
    assert "first age" in owner["log"] and "systolic_bp" in owner["log"]


def test_a_job_the_budget_cannot_cover_is_refused_before_it_runs(jobs: JobService) -> None:
    """Nothing runs, nothing is stored, nothing is charged."""
    alice = jobs.node.store.get_user("alice")
    with pytest.raises(BudgetExceeded, match="request_budget"):
        jobs.submit(alice, dp("def f(df):\n    return 0.5\n", epsilon=5.0))
    assert jobs.store.list() == []
    assert jobs.node.store.budget("alice").epsilon_spent == 0


def test_two_jobs_that_together_overspend_release_exactly_one(
    tmp_path: Path, database_url: str, sandbox: SandboxConfig
) -> None:
    """Stored past the early budget check, both run at once; charge() lets exactly one through."""
    node = job_node(tmp_path / "node", database_url, job_workers=2)
    jobs = JobService(node.service, background=True)
    try:
        alice = node.service.store.get_user("alice")
        source = "def f(df):\n    import time\n    time.sleep(0.3)\n    return 0.5\n"
        bodies = [dp(source, request_id=f"r{i}", epsilon=1.5) for i in (1, 2)]
        ids = [jobs.store.create(alice, b["request_id"], jobs._validate(b))[0].id for b in bodies]
        for job_id in ids:
            jobs.run_later(job_id)
        final = [_wait(jobs, i) for i in ids]
        assert sorted(j.status for j in final) == ["done", "failed"]
        failed = next(j for j in final if j.status == "failed")
        assert failed.public()["error"]["code"] == "budget_exceeded"
        spent = node.service.store.budget("alice").epsilon_spent
        assert spent == next(j for j in final if j.status == "done").params["cost"]["epsilon"]
    finally:
        jobs.close()
        node.service.close()


def _wait(jobs: JobService, job_id: str, seconds: float = 60.0):  # type: ignore[no-untyped-def]
    done = threading.Event()
    for _ in range(int(seconds / 0.1)):
        job = jobs.store.get(job_id)
        if job.final:
            return job
        done.wait(0.1)
    raise AssertionError(f"job {job_id} still {jobs.store.get(job_id).status}")


def test_code_jobs_are_refused_when_the_sandbox_is_off(node: TestNode) -> None:
    node.service.settings = node.service.settings.model_copy(update={"sandbox": "off"})
    jobs = JobService(node.service, background=False)
    try:
        with pytest.raises(PermissionDenied, match="does not run code jobs"):
            jobs.submit(node.service.store.get_user("alice"), dp("def f(df):\n    return 1\n"))
    finally:
        jobs.close()


def test_rlimits_only_mode_is_announced_loudly(
    node: TestNode, caplog: pytest.LogCaptureFixture
) -> None:
    node.service.settings = node.service.settings.model_copy(update={"sandbox": "rlimits-only"})
    with caplog.at_level(logging.WARNING, logger="rds_kernel.node.jobs.service"):
        JobService(node.service, background=False).close()
    assert "SANDBOX WEAKENED" in caplog.text


def test_owners_do_not_submit_jobs(jobs: JobService) -> None:
    owner = jobs.node.store.get_user("owner")
    with pytest.raises(PermissionDenied, match="only scientists"):
        jobs.submit(owner, dp("def f(df):\n    return 1\n"))


def test_after_a_crash_resume_settles_interrupted_jobs(jobs: JobService) -> None:
    """Queued jobs start; a job charged before the crash is done; one that was not, failed."""
    alice = jobs.node.store.get_user("alice")
    source = "def f(df):\n    return 0.5\n"
    charged = jobs.submit(alice, dp(source, request_id="charged", epsilon=0.5, partitions=2))
    stored = [
        jobs.store.create(alice, rid, jobs._validate(dp(source, request_id=rid, partitions=2)))[0]
        for rid in ("lost", "waiting")
    ]
    lost, waiting = stored
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    with jobs.store.engine.begin() as conn:  # the node died while these two were running
        conn.execute(
            jobs_table.update()
            .where(jobs_table.c.id.in_([charged.id, lost.id]))
            .values(status="running", output=None, updated_at=long_ago, heartbeat_at=long_ago)
        )
    jobs.resume()
    assert jobs.store.get(charged.id).status == "done"
    assert jobs.store.get(charged.id).public()["result"] == charged.public()["result"]
    assert jobs.store.get(lost.id).status == "failed"
    assert jobs.store.get(waiting.id).status == "done"


@pytest.mark.parametrize("mode", ["bwrap", "rlimits-only"])
def test_without_isolated_runs_a_dp_job_fails_and_charges_nothing(
    tmp_path: Path, sandbox: SandboxConfig, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """On a host that forbids nested namespaces, runs could talk to each other: no release, in
    any sandbox mode (rlimits-only used to run such jobs, its runs sharing /tmp and the
    network). The job fails before any data is read, its reservation refunded, with a 403-style
    error for the scientist and the reason for the owner."""
    from rds_kernel.node.datasets import Dataset
    from rds_kernel.node.jobs import dp as jobs_dp
    from rds_kernel.sandbox import Session

    if mode == "rlimits-only" and os.geteuid() != 0:
        pytest.skip("rlimits-only mode needs the node to run as root")

    class Unisolated(Session):
        def start(self) -> None:
            super().start()
            self.isolated, self.isolation_error = False, "unshare: Operation not permitted"

    scanned: list[object] = []
    scan = Dataset.scan

    def counted_scan(ds: Dataset) -> object:
        scanned.append(ds)
        return scan(ds)

    monkeypatch.setattr(jobs_dp, "Session", Unisolated)
    monkeypatch.setattr(Dataset, "scan", counted_scan)
    node = job_node(tmp_path / "node", sandbox=mode)
    node.directory.chmod(0o700)  # rlimits-only refuses a node directory others can read
    waive_unreadable_environment(monkeypatch, sandbox_of(node.service.settings))
    jobs = JobService(node.service, background=False)
    try:
        alice = node.service.store.get_user("alice")
        job = jobs.submit(alice, dp("def f(df):\n    return 0.5\n"))
        assert job.status == "failed"
        error = job.public()["error"]
        assert error["code"] == "forbidden" and "isolate the runs" in error["message"]
        assert "nothing was charged" in error["message"]
        assert "isolate the runs" in (job.owner_log or "") and mode in (job.owner_log or "")
        assert node.service.store.budget("alice").epsilon_spent == 0
        assert scanned == []
    finally:
        jobs.close()
        node.service.close()
