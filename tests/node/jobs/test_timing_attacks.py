"""Timing attacks on DP code jobs, reproduced against the real sandbox and the real ledger.

1. **Runs read the clock.** If run ``i`` started when run ``i - 1`` ended, the partition that
   holds one person could delay every later run, and a function returning 1 when it starts late
   moves ``k - 1`` clamped outputs: the noisy mean reads ~1 against ~0. With the fixed timetable
   (predictable transactions, Haeberlen, Pierce, Narayan, USENIX Security 2011) the target can
   change only its own partition's output.
2. **The job's timing is visible.** Progress, ``updated_at`` and the finish time moved with the
   runs; now the scientist's view does not move while the job runs, and the job ends at the end
   of its timetable, however long its runs took.
3. **Another job's data moves the timetable.** A DP job's timetable starts when a worker takes
   it up; a reviewed job's private run freed its worker when its function returned, so one
   person's data could shift the start of a DP job queued behind it, and every output of it
   with it. Now a private run holds its worker for a fixed time too.

Timing margins are stated at each check; the node runs ``job_start_seconds = 1`` and
``run_seconds`` from 0.2 s, so slots are 0.6 s or more.
"""

from __future__ import annotations

import json
import math
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from rds_kernel.dp.aggregate import SLOT_ALLOWANCE
from rds_kernel.node.jobs import dp as jobs_dp
from rds_kernel.node.jobs.run import partition
from rds_kernel.node.jobs.service import JobService
from rds_kernel.sandbox import SandboxConfig
from tests.node.jobs.helpers import dp, job_node, reviewed
from tests.node.nodes import TestNode

TARGET = (pl.col("age") == 18) & (pl.col("systolic_bp") == 220)  # no demo patient matches


def add_attack_datasets(node: TestNode, tmp_path: Path) -> None:
    """``without``: the demo patients; ``with``: the same and one target patient."""
    service = node.service
    frame = service.datasets.get("patients").scan().collect()
    assert frame.filter(TARGET).height == 0
    target = frame.head(1).with_columns(
        age=pl.lit(18, dtype=pl.Int64), systolic_bp=pl.lit(220, dtype=pl.Int64)
    )
    schema = node.directory / "source" / "patients.schema.toml"
    for name, data in (("without", frame), ("with", pl.concat([frame, target]))):
        path = tmp_path / f"{name}.parquet"
        data.write_parquet(path)
        service.datasets.add(name, path, schema, mock_rows=50)


def target_first(frame: pl.DataFrame, k: int, identifier: str | None) -> list[pl.DataFrame]:
    """The node's partitioning, with the target's partition run first: the attacker's best
    luck (1 in k per job), which the fix must withstand like any other order."""
    parts = partition(frame, k, identifier)
    return sorted(parts, key=lambda p: p.filter(TARGET).height == 0)  # stable sort


@pytest.fixture
def attack_node(tmp_path: Path, sandbox: SandboxConfig) -> Any:
    node = job_node(tmp_path / "node")
    node.service.store.set_budget("alice", 10_000.0, actor="test")
    add_attack_datasets(node, tmp_path)
    yield node
    node.service.close()


def test_one_partition_cannot_move_the_others_through_the_clock(
    attack_node: TestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: the target's run sleeps; every run returns 1.0 if it starts after a moment
    written into the source (1.9 s after submission). Run one after another (as before the
    fix), every run after the target's starts late: the clamped means of the datasets with and
    without the target differed by about 1 (all k outputs moved). On the timetable, runs start
    at the same times on both datasets (1.0, 1.6, 2.2, ... s after the node takes up the job,
    itself some 30 ms after submission; a run's function starts some 25 ms after its time), so
    1.9 s is 0.3 s from either neighbouring start and every run but the target's returns the
    same on both datasets. The target's run is killed at its limit and counts as the default
    0.5 instead of 0.0: a difference of 0.5 / k.

    Noise: epsilon = 1000 gives each mean Laplace noise of scale b = 1 / (k * 1000); the
    difference of two means has standard deviation 2b, and the check allows 6 of them on top of
    the one partition's 1/k (1/k rather than 0.5/k: a default anywhere in [0, 1] is allowed).
    """
    monkeypatch.setattr(jobs_dp, "partition", target_first)
    jobs = JobService(attack_node.service, background=False)
    alice = attack_node.service.store.get_user("alice")
    k, epsilon = 8, 1000.0
    means = {}
    try:
        for dataset in ("without", "with"):
            late = time.time() + 1.9
            source = textwrap.dedent(
                f"""
                def f(df):
                    import time
                    if ((df["age"] == 18) & (df["systolic_bp"] == 220)).any():
                        time.sleep(3)
                    return 1.0 if time.time() > {late!r} else 0.0
                """
            )
            body = {
                **dp(source, request_id=f"attack-{dataset}", epsilon=epsilon, partitions=k),
                "dataset": dataset,
            }
            body["params"]["run_seconds"] = 0.2
            job = jobs.submit(alice, body)
            assert job.status == "done", (job.error, job.owner_log)
            assert "not started" not in (job.owner_log or ""), job.owner_log
            means[dataset] = job.public()["result"]["value"]
            scale = job.public()["result"]["summary"]["scale"][0]
    finally:
        jobs.close()
    assert scale == pytest.approx(1 / (k * epsilon), rel=1e-6)
    assert abs(means["with"] - means["without"]) <= 1 / k + 6 * 2 * scale, means


def test_the_scientist_sees_nothing_move_while_a_dp_job_runs(
    tmp_path: Path, sandbox: SandboxConfig
) -> None:
    """Progress and updated_at used to move with the runs (a run could encode bits in its
    duration). Polled every 50 ms, the scientist's view of a running DP job is one and the
    same: no progress, no updated_at, and the expected end of its timetable."""
    node = job_node(tmp_path / "node")
    jobs = JobService(node.service, background=True)
    try:
        alice = node.service.store.get_user("alice")
        source = "def f(df):\n    import time\n    time.sleep(len(df) % 3 * 0.1)\n    return 0.5\n"
        job = jobs.submit(alice, dp(source, partitions=4))
        seen: set[str] = set()
        while (current := jobs.job(alice, job.id)).status in ("queued", "running"):
            view = current.public()
            if current.status == "running":
                seen.add(
                    json.dumps([view["progress"], view["updated_at"], view.get("finishes_at")])
                )
            threading.Event().wait(0.05)
        assert current.status == "done", current.owner_log
        assert len(seen) == 1, seen
        progress, updated_at, finishes_at = json.loads(seen.pop())
        assert progress is None and updated_at is None and finishes_at is not None
        listed = jobs.jobs(alice)[0].public()
        assert listed["progress"] is None and listed["updated_at"] is None
        assert current.owner()["updated_at"] is not None  # the owner still sees it
    finally:
        jobs.close()
        node.service.close()


def test_a_dp_job_ends_at_the_end_of_its_timetable_whatever_its_runs_do(
    tmp_path: Path, sandbox: SandboxConfig
) -> None:
    """A job whose runs return at once and one whose runs sleep to their limit end at the same
    time: the end of the timetable (1 s to start, then 4 slots of 0.5 + 0.4 s = 4.6 s). Before
    the fix the first took well under a second and the second 4 x 5 s / 2 = 10 s.

    Margin: after the timetable the node kills the sandbox, noises and records the answer in
    tens of milliseconds; the check allows 1.0 s on a loaded machine, and the two durations
    must agree within 0.5 s (the runs' own time, 4 x 0.5 s = 2 s, is what the fix hides).
    """
    node = job_node(tmp_path / "node")
    jobs = JobService(node.service, background=False)
    try:
        alice = node.service.store.get_user("alice")
        durations, timetables = {}, []
        for name, body in (("instant", "return 0.5"), ("sleepy", "time.sleep(100)")):
            source = f"def f(df):\n    import time\n    {body}\n"
            started = time.monotonic()
            job = jobs.submit(
                alice, dp(source, request_id=name, partitions=4, run_seconds=0.5, epsilon=0.5)
            )
            durations[name] = time.monotonic() - started
            assert job.status == "done", job.owner_log
            timetables.append(job.params.get("timetable"))
    finally:
        jobs.close()
        node.service.close()
    assert math.isclose(durations["instant"], durations["sleepy"], abs_tol=0.5), durations
    planned = 1 + 4 * (0.5 + SLOT_ALLOWANCE)
    for name, seconds in durations.items():
        assert planned <= seconds <= planned + 1.0, (name, durations)
    assert [t["seconds"] for t in timetables] == [pytest.approx(planned)] * 2


def test_a_reviewed_private_run_takes_the_same_time_whatever_the_data(
    tmp_path: Path, sandbox: SandboxConfig
) -> None:
    """A reviewed job's private run used to end (freeing its worker, and moving the job to
    output review) when its function returned, so the data could set when the next queued
    job started: a DP job's timetable, which its runs read from the clock, then moved with
    another job's private data. Now a private run holds its worker and its status until
    job_start_seconds + job_wall_seconds + 1 s after it was taken up (here 1 + 2 + 1 = 4 s),
    whatever the function does: one that returns at once and one that sleeps 1.5 s take the
    same time. Before the fix they took about 0.5 s and 2 s.

    Margin: the approval does a few database writes around the run (milliseconds); the check
    allows 1 s past the padded end, and the two must agree within 0.5 s (the 1.5 s the second
    function sleeps is what the padding hides).
    """
    node = job_node(tmp_path / "node", job_wall_seconds=2)
    jobs = JobService(node.service, background=False)
    try:
        alice = node.service.store.get_user("alice")
        durations = {}
        for name, nap in (("instant", 0), ("sleepy", 1.5)):
            source = f"def f(df):\n    import time\n    time.sleep({nap})\n    return 1.0\n"
            job = jobs.submit(alice, reviewed(source, request_id=name))
            assert job.status == "pending_review", job.owner_log
            started = time.monotonic()
            job = jobs.approve(job.id, actor="owner")  # runs the private step here
            durations[name] = time.monotonic() - started
            assert job.status == "output_review"
            assert job.output == {"type": "json", "value": 1.0}, job.owner_log
    finally:
        jobs.close()
        node.service.close()
    assert math.isclose(durations["instant"], durations["sleepy"], abs_tol=0.5), durations
    padded = 1 + 2 + 1
    for name, seconds in durations.items():
        assert padded <= seconds <= padded + 1.0, (name, durations)


def test_a_padded_private_run_holds_its_worker_and_shows_the_owner_its_output_at_once(
    tmp_path: Path, sandbox: SandboxConfig
) -> None:
    """One worker. Alice's approved job returns at once, but holds the worker to its padded
    end (4 s after it was taken up): bob's job, submitted meanwhile, does not start its mock
    run before alice's reaches output review. The owner sees alice's output as soon as it was
    stored; alice's view (status and updated_at) does not change until the padded end.

    Margin: the sandbox starts in about 0.35 s and the run is due 1 s after the job was taken
    up, so the output is stored about 1.1 s in; the first check waits up to 3.5 s for it,
    inside the 4 s padding.
    """
    node = job_node(tmp_path / "node", job_wall_seconds=2, job_workers=1)
    jobs = JobService(node.service, background=True)
    try:
        alice = node.service.store.get_user("alice")
        bob = node.service.store.get_user("bob")
        job = jobs.submit(alice, reviewed("def f(df):\n    return 1.0\n"))
        while (job := jobs.store.get(job.id)).status != "pending_review":
            threading.Event().wait(0.02)
        jobs.approve(job.id, actor="owner")
        while (job := jobs.store.get(job.id)).status != "running":
            threading.Event().wait(0.01)
        taken_up = time.monotonic()
        seen = job.public()
        other = jobs.submit(bob, reviewed("def f(df):\n    return 2.0\n", request_id="bob"))
        while (job := jobs.store.get(job.id)).output is None:
            assert time.monotonic() - taken_up < 3.5, "the output was not stored at once"
            threading.Event().wait(0.02)
        assert job.status == "running" and job.owner()["output"] == {"type": "json", "value": 1.0}
        assert job.public() == seen  # the scientist sees nothing move
        samples = []
        while (statuses := {j.id: j.status for j in jobs.store.list()})[job.id] == "running":
            samples.append(statuses[other.id])
            threading.Event().wait(0.02)
        assert time.monotonic() - taken_up >= 4.0 - 0.1
        assert set(samples) == {"submitted"}, samples  # bob's job waited for the worker
        assert jobs.store.get(job.id).status == "output_review"
        while jobs.store.get(other.id).status in ("submitted", "mock_running"):
            threading.Event().wait(0.02)
        assert jobs.store.get(other.id).status == "pending_review"
    finally:
        jobs.close()
        node.service.close()
