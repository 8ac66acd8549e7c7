"""The client by resource: ``node.datasets``, ``node.budget`` and ``node.jobs``.

Their attributes never ask the node; their methods do, each one request, and what comes back
is typed (the models of ``rds_kernel.wire``). The module-level forms (``rds.submit``,
``rds.request_budget``, ``rds.client.budget_requests``, ``rds.client.jobs``) delegate to them.
"""

from __future__ import annotations

from typing import Any

import pytest

import rds_kernel as rds
from rds_kernel import wire
from tests.client.fakes import SCHEMA, TOKEN, URL, FakeNode, Reply, session_with

SOURCE = "def share(df):\n    return float(df['cvd'].mean())\n"

REQUEST = {
    "id": 7,
    "user": "alice",
    "epsilon": 2.0,
    "delta": 0.0,
    "reason": "a second cohort",
    "status": "pending",
    "decided_by": None,
    "note": None,
    "created_at": "2025-01-02T03:04:05+00:00",
    "decided_at": None,
}


def job_view(job_id: str = "0123456789abcdef", status: str = "pending_review") -> dict[str, Any]:
    return {
        "id": job_id,
        "request_id": "rid-1",
        "kind": "reviewed",
        "dataset": "patients",
        "entry": "share",
        "message": "the share with CVD",
        "params": {},
        "status": status,
        "progress": {"done": 1, "total": 1},
        "finishes_at": None,
        "mock": {"ok": True, "output": {"type": "json", "value": 0.2}, "log": "", "error": None},
        "result": None,
        "error": None,
        "review_note": None,
        "created_at": "2025-01-02T03:04:05+00:00",
        "updated_at": "2025-01-02T03:04:06+00:00",
    }


def test_resources_ask_nothing_until_a_method_is_called(node: rds.Node, fake: FakeNode) -> None:
    before = len(fake.seen)
    for resource in (node.datasets, node.budget, node.jobs):
        repr(resource)
    assert node.info["user"] == {"name": "alice", "role": "scientist"}
    assert len(fake.seen) == before


def test_datasets_list_and_get(node: rds.Node, fake: FakeNode) -> None:
    listing = {"datasets": [{"name": "patients", "description": "", "columns": 3}]}
    fake.on("GET", "/v1/datasets", Reply(200, listing))
    assert node.datasets.list() == ["patients"]
    patients = node.datasets.get("patients")
    assert patients.schema.names == list(SCHEMA["columns"])
    assert node.dataset("patients").schema == patients.schema


def test_budget_request_and_requests(node: rds.Node, fake: FakeNode) -> None:
    fake.on("POST", "/v1/budget/requests", Reply(201, REQUEST))
    fake.on("GET", "/v1/budget/requests", Reply(200, {"requests": [REQUEST]}))
    asked = node.budget.request(epsilon=2, reason="a second cohort")
    assert isinstance(asked, wire.BudgetRequest) and asked.status == "pending"
    assert fake.bodies("POST", "/v1/budget/requests") == [
        {"epsilon": 2, "delta": 0.0, "reason": "a second cohort"}
    ]
    assert node.budget.requests() == [asked]
    assert fake.seen[-1].path_url == "/v1/budget/requests?limit=100"
    # the module-level forms give dicts, as they always did
    assert rds.request_budget(node, epsilon=2, reason="a second cohort") == REQUEST
    assert rds.client.budget_requests(node) == [REQUEST]


def test_jobs_list_get_and_submit(node: rds.Node, fake: FakeNode) -> None:
    fake.on("GET", "/v1/jobs", Reply(200, {"jobs": [job_view()]}))
    fake.on("GET", "/v1/jobs/0123456789abcdef", Reply(200, job_view(status="output_review")))
    fake.on("POST", "/v1/jobs", Reply(200, job_view()))
    listed = node.jobs.list()
    assert [j.id for j in listed] == ["0123456789abcdef"]
    assert listed[0].view.status == "pending_review"  # as listed: asks nothing
    assert fake.seen[-1].path_url == "/v1/jobs?limit=100"
    assert node.jobs.get("0123456789abcdef").view.status == "output_review"
    assert [j.id for j in rds.client.jobs(node)] == ["0123456789abcdef"]

    job = node.jobs.submit(SOURCE, dataset="patients", message="the share with CVD")
    assert job.id == "0123456789abcdef" and job.view.mock is not None
    (sent,) = fake.bodies("POST", "/v1/jobs")
    assert (sent["kind"], sent["dataset"], sent["entry"]) == ("reviewed", "patients", "share")
    assert len(sent["request_id"]) == 32

    rds.submit(SOURCE, dataset=node.dataset("patients"), message="again")
    assert len(fake.calls("POST", "/v1/jobs")) == 2


def test_a_job_is_submitted_to_its_datasets_node(node: rds.Node, fake: FakeNode) -> None:
    other = rds.connect(URL, token=TOKEN, session=session_with(fake), name="other")
    with pytest.raises(rds.BadRequest, match="not other's"):
        other.jobs.submit(SOURCE, dataset=node.dataset("patients"), message="m")
    assert fake.calls("POST", "/v1/jobs") == []


def test_a_job_answer_that_is_not_a_job_is_a_protocol_error(node: rds.Node, fake: FakeNode) -> None:
    fake.on("GET", "/v1/jobs/0123456789abcdef", Reply(200, {"id": "0123456789abcdef"}))
    with pytest.raises(rds.ProtocolError, match="GET /v1/jobs/0123456789abcdef"):
        node.jobs.get("0123456789abcdef")
