"""Sharing the node's workers: one scientist's long jobs cannot hold them all.

The attack these pin: code jobs went to a FIFO thread pool, so two long jobs of one scientist
(costing next to no ε) held both workers and delayed another scientist's trivial job from
1.5 s to 50 s, and with long timetables one job could hold a worker for tens of minutes. Now
at most ``job_running_per_user`` jobs of a scientist run at once, a freed worker goes to the
scientist who has waited longest, and a DP job whose timetable is longer than
``job_max_seconds`` is refused at submission, saying how to fit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rds_kernel.errors import ConfigError
from rds_kernel.node.api.app import create_app
from rds_kernel.node.jobs.queue import JobQueue
from rds_kernel.node.jobs.service import JobService
from rds_kernel.node.settings import write_settings
from rds_kernel.sandbox import SandboxConfig
from tests.node.jobs.helpers import dp, job_node
from tests.node.nodes import TestNode

SOURCE = "def f(df):\n    return 0.5\n"


class FakeSteps:
    """Job steps that run until the test lets them end, recording the order they started."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self._release: dict[str, threading.Event] = {}
        self._lock = threading.Condition()

    def run(self, job_id: str) -> None:
        with self._lock:
            self.started.append(job_id)
            gate = self._release.setdefault(job_id, threading.Event())
            self._lock.notify_all()
        assert gate.wait(30), f"the test never let {job_id} end"

    def finish(self, job_id: str) -> None:
        with self._lock:
            self._release.setdefault(job_id, threading.Event()).set()

    def wait_started(self, count: int) -> list[str]:
        with self._lock:
            assert self._lock.wait_for(lambda: len(self.started) >= count, timeout=30)
            return list(self.started)


@pytest.fixture
def steps() -> Iterator[FakeSteps]:
    fake = FakeSteps()
    yield fake
    for job_id in list(fake._release):
        fake.finish(job_id)


def test_a_freed_worker_goes_to_the_scientist_who_waited_longest(steps: FakeSteps) -> None:
    """One worker; alice queues three jobs, then bob one while alice's first runs. FIFO ran
    all of alice's before bob's; the queue runs bob's next, then alice's others in order."""
    queue = JobQueue(1, 1, steps.run)
    try:
        for job_id in ("a1", "a2", "a3"):
            queue.put("alice", job_id)
        assert steps.wait_started(1) == ["a1"]
        queue.put("bob", "b1")
        for done, expected in (("a1", "b1"), ("b1", "a2"), ("a2", "a3")):
            steps.finish(done)
            assert steps.wait_started(len(steps.started) + 1)[-1] == expected
        steps.finish("a3")
    finally:
        queue.close()
    assert steps.started == ["a1", "b1", "a2", "a3"]


def test_a_scientist_runs_one_job_at_a_time_even_with_workers_free(steps: FakeSteps) -> None:
    """Two workers, job_running_per_user = 1: alice's second job waits for her first although
    a worker is free, and bob's job takes that worker."""
    queue = JobQueue(2, 1, steps.run)
    try:
        queue.put("alice", "a1")
        queue.put("alice", "a2")
        assert steps.wait_started(1) == ["a1"]
        queue.put("bob", "b1")
        assert steps.wait_started(2) == ["a1", "b1"]
        assert queue.waiting() == {"alice": ["a2"]}
        steps.finish("b1")
        threading.Event().wait(0.2)  # a worker is free, but a2 must not start
        assert steps.started == ["a1", "b1"]
        steps.finish("a1")
        assert steps.wait_started(3) == ["a1", "b1", "a2"]
        steps.finish("a2")
    finally:
        queue.close()


def test_a_step_queued_while_its_job_runs_is_kept(steps: FakeSteps) -> None:
    """The owner may approve a reviewed job the moment its mock run has stored its output,
    while that step's worker is still finishing: the next step must be queued, not dropped
    as a duplicate (a step already *waiting* is not queued twice)."""
    queue = JobQueue(1, 1, steps.run)
    try:
        queue.put("alice", "j")
        assert steps.wait_started(1) == ["j"]
        queue.put("alice", "j")  # while it runs
        queue.put("alice", "j")  # already waiting: dropped
        assert queue.waiting() == {"alice": ["j"]}
        steps.finish("j")
        assert steps.wait_started(2) == ["j", "j"]
    finally:
        queue.close()


def test_one_scientists_long_jobs_do_not_delay_anothers(
    tmp_path: Path, sandbox: SandboxConfig
) -> None:
    """The reported attack, on the real node: alice submits two DP jobs of 4 s each (1 s to
    start, 3 slots of 0.6 + 0.4 s), bob a short one right after. With the FIFO pool of two
    workers alice's jobs held both, and bob's started only when her first ended (4 s); now
    bob's starts at once, and alice's second waits for her first.

    Margin: a free worker takes bob's job within tens of milliseconds; the check allows 2 s,
    half of what the FIFO pool made him wait. Statuses are read in one transaction, so "both
    of alice's running" cannot be a mix of two moments.
    """
    node = job_node(tmp_path / "node", job_workers=2)
    jobs = JobService(node.service, background=True)
    try:
        alice = node.service.store.get_user("alice")
        bob = node.service.store.get_user("bob")
        long = {"partitions": 3, "run_seconds": 0.6, "epsilon": 0.5}
        a1 = jobs.submit(alice, dp(SOURCE, request_id="a1", **long))
        a2 = jobs.submit(alice, dp(SOURCE, request_id="a2", **long))
        b = jobs.submit(bob, dp(SOURCE, request_id="b", partitions=1, epsilon=0.5))
        submitted = time.monotonic()
        while jobs.store.get(b.id).status == "queued":
            assert time.monotonic() - submitted < 2.0, "bob's job waited for alice's"
            threading.Event().wait(0.02)
        history = []
        deadline = time.monotonic() + 30
        while True:
            status = {j.id: j.status for j in jobs.store.list()}
            history.append((status[a1.id], status[a2.id]))
            if status[a2.id] != "queued":
                break
            assert time.monotonic() < deadline, "alice's second job never started"
            threading.Event().wait(0.02)
        assert ("running", "queued") in history
        assert all(s1 != "running" for s1, s2 in history if s2 != "queued"), history
        assert jobs.store.get(a1.id).status == "done"
    finally:
        jobs.close()
        node.service.close()


@pytest.fixture
def short_node(tmp_path: Path, sandbox: SandboxConfig) -> Iterator[TestNode]:
    node = job_node(tmp_path / "node", job_max_seconds=20)
    yield node
    node.service.close()


def test_a_dp_job_longer_than_job_max_seconds_is_refused_saying_how_to_fit(
    short_node: TestNode,
) -> None:
    """20 partitions of 1 s take 1 + 20 × 1.4 = 29 s, more than the node's 20: refused with
    400 before anything is stored or charged, naming both ways to fit (13 partitions, or
    run_seconds 0.55). Before, any timetable up to 1000 partitions of job_wall_seconds ran."""
    headers = {"Authorization": f"Bearer {short_node.tokens['alice']}"}
    body = dp(SOURCE, partitions=20, run_seconds=1.0)
    with TestClient(create_app(service=short_node.service)) as http:
        r = http.post("/v1/jobs", json=body, headers=headers)
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert "lasts 29 s" in message and "job_max_seconds = 20 s" in message
        assert "at most 13 partitions with run_seconds=1" in message
        assert "run_seconds at most 0.55 with 20 partitions" in message
        assert http.get("/v1/jobs", headers=headers).json() == {"jobs": []}
        assert http.get("/v1/budget", headers=headers).json()["epsilon_spent"] == 0
        for i, (k, run) in enumerate([(13, 1.0), (20, 0.55)]):  # the two ways it gave
            fits = dp(SOURCE, request_id=f"fits{i}", epsilon=0.5, partitions=k, run_seconds=run)
            r = http.post("/v1/jobs", json=fits, headers=headers)
            assert r.status_code == 200, r.text


def test_a_reviewed_private_run_must_fit_job_max_seconds(tmp_path: Path) -> None:
    """A reviewed job's private run holds its worker job_start_seconds + job_wall_seconds + 1
    s: settings where that exceeds job_max_seconds are refused when the node loads them."""
    with pytest.raises(ConfigError, match="job_max_seconds"):
        write_settings(tmp_path, job_start_seconds=2, job_wall_seconds=30, job_max_seconds=32)
    assert write_settings(tmp_path, job_wall_seconds=30, job_max_seconds=33).job_max_seconds == 33
