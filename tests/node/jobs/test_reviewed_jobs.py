"""Reviewed jobs: mock at once; private data only after the owner approved the code; the output
only after the automatic checks passed and the owner approved it; denial releases nothing."""

from __future__ import annotations

import textwrap

import pytest

from rds_kernel.errors import BadRequest
from rds_kernel.node.jobs.service import JobService
from tests.node.jobs.helpers import dp, reviewed

COUNTS = textwrap.dedent(
    """
    def f(df):
        print("rows:", len(df))
        return df.groupby("sex").size().rename("n").reset_index()
    """
)


def actions(jobs: JobService, job_id: str) -> list[str]:
    entries = jobs.node.store.audit_log(limit=1000)
    return [e.action for e in reversed(entries) if e.detail.get("job") == job_id]


def test_the_full_review_releases_only_after_both_approvals(jobs: JobService) -> None:
    alice = jobs.node.store.get_user("alice")
    job = jobs.submit(alice, reviewed(COUNTS, message="patients per sex, for table 1"))
    assert job.status == "pending_review"
    mock = job.public()["mock"]
    assert mock["ok"] and mock["output"]["columns"] == ["sex", "n"]
    assert mock["log"].strip() == "rows: 200"  # the mock run is public: its output too
    assert job.public()["result"] is None

    job = jobs.approve(job.id, actor="owner", note="fine")
    assert job.status == "output_review"
    assert job.public()["result"] is None  # ran on private data; nothing released yet
    assert job.output is not None and sum(r[1] for r in job.output["rows"]) == 3000
    assert all(c["ok"] for c in job.checks or [])
    assert "rows: 3000" in (job.owner_log or "")
    assert "rows: 3000" not in repr(job.public())

    job = jobs.approve(job.id, actor="owner")
    assert job.status == "released"
    assert job.public()["result"] == job.output
    assert actions(jobs, job.id) == [
        "job.submit",
        "job.run_mock",
        "job.approve_code",
        "job.run",
        "job.output_ready",
        "job.release",
    ]


def test_a_job_denied_at_code_review_never_touches_private_data(jobs: JobService) -> None:
    alice = jobs.node.store.get_user("alice")
    job = jobs.submit(alice, reviewed(COUNTS))
    job = jobs.deny(job.id, actor="owner", reason="too detailed")
    assert job.status == "denied" and job.output is None
    assert job.public()["review_note"] == "too detailed"
    assert "job.run" not in actions(jobs, job.id)
    with pytest.raises(BadRequest, match="denied"):
        jobs.approve(job.id, actor="owner")


def test_a_job_denied_at_output_review_releases_nothing(jobs: JobService) -> None:
    alice = jobs.node.store.get_user("alice")
    job = jobs.approve(jobs.submit(alice, reviewed(COUNTS)).id, actor="owner")
    job = jobs.deny(job.id, actor="owner", reason="no")
    assert job.status == "denied"
    assert job.public()["result"] is None
    with pytest.raises(BadRequest):
        jobs.approve(job.id, actor="owner")
    assert jobs.store.get(job.id).public()["result"] is None


def test_small_counts_fail_the_checks_and_cannot_be_released(jobs: JobService) -> None:
    """Counts between 0 and job_min_cell_count (10) identify people: only denial is possible."""
    source = "def f(df):\n    return {'rows': len(df), 'smokers_over_90': 3}\n"
    alice = jobs.node.store.get_user("alice")
    job = jobs.approve(jobs.submit(alice, reviewed(source)).id, actor="owner")
    assert job.status == "output_review"
    failed = [c for c in job.checks or [] if not c["ok"]]
    assert "value['smokers_over_90'] = 3" in failed[0]["detail"]
    assert failed[0]["check"] == "min_cell_count"
    with pytest.raises(BadRequest, match="cannot be released"):
        jobs.approve(job.id, actor="owner")
    assert jobs.deny(job.id, actor="owner").status == "denied"


def test_a_failing_private_run_goes_to_output_review_as_a_failing_check(
    jobs: JobService,
) -> None:
    """A private run that fails used to make the job ``failed`` at once, while one that
    succeeded went to ``output_review``: one bit of the private data, chosen by the code,
    before any review. Now both go to output review; the failure is a failing check the owner
    sees (with the log) and can only deny, and the scientist learns nothing more."""
    source = "def f(df):\n    raise ValueError(df['age'].iloc[0])\n"
    alice = jobs.node.store.get_user("alice")
    job = jobs.submit(alice, reviewed(source))
    assert job.public()["mock"]["error"] == "exited with status 1"
    assert "ValueError" in job.public()["mock"]["log"]  # mock data: fine to show
    job = jobs.approve(job.id, actor="owner")
    assert job.status == "output_review"
    assert job.output is None and job.public()["result"] is None
    assert job.public()["error"] is None
    [check] = job.checks or []
    assert check["check"] == "run" and not check["ok"] and "exited with status 1" in check["detail"]
    assert "ValueError" in (job.owner_log or "")
    private = {k: v for k, v in job.public().items() if k != "mock"}  # the mock run is public
    assert "ValueError" not in repr(private)
    with pytest.raises(BadRequest, match="cannot be released"):
        jobs.approve(job.id, actor="owner")
    assert jobs.deny(job.id, actor="owner", reason="it failed").status == "denied"


def test_dp_jobs_cannot_be_approved_or_denied(jobs: JobService) -> None:
    alice = jobs.node.store.get_user("alice")
    job = jobs.submit(alice, dp("def f(df):\n    return 0.5\n"))
    with pytest.raises(BadRequest, match="DP jobs"):
        jobs.approve(job.id, actor="owner")
    with pytest.raises(BadRequest, match="DP jobs"):
        jobs.deny(job.id, actor="owner")


def test_a_reviewed_job_needs_a_message(jobs: JobService) -> None:
    alice = jobs.node.store.get_user("alice")
    with pytest.raises(BadRequest, match="message"):
        jobs.submit(alice, reviewed(COUNTS, message=" "))


def test_tables_bytes_and_json_come_back_as_such(jobs: JobService) -> None:
    """What a reviewed function may return: a DataFrame, bytes (a PNG, say) or plain JSON."""
    alice = jobs.node.store.get_user("alice")
    for i, body in enumerate(
        ["return b'\\x89PNG'", "return {'a': [1.5, None], 'b': 'text'}", "return df.age.describe()"]
    ):
        job = jobs.submit(alice, reviewed(f"def f(df):\n    {body}\n", request_id=f"r{i}"))
        assert job.public()["mock"]["ok"], job.public()["mock"]
    outputs = [j.public()["mock"]["output"]["type"] for j in jobs.jobs(alice)]
    assert sorted(outputs) == ["bytes", "json", "table"]
