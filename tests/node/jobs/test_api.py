"""The job and budget-request routes, in-process, with jobs running in the background."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rds_kernel.node.api.app import create_app
from tests.node.jobs.helpers import dp, reviewed
from tests.node.nodes import TestNode

SLOW_MEAN = "def f(df):\n    import time\n    time.sleep(0.2)\n    return float(df['cvd'].mean())\n"


@pytest.fixture
def http(node: TestNode) -> Iterator[TestClient]:
    with TestClient(create_app(service=node.service), raise_server_exceptions=False) as c:
        yield c


def auth(node: TestNode, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.tokens[who]}"}


def wait(http: TestClient, node: TestNode, job_id: str, who: str = "alice") -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body: dict[str, Any] = http.get(f"/v1/jobs/{job_id}", headers=auth(node, who)).json()
        if body["status"] in ("done", "failed", "pending_review", "output_review", "released"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_a_dp_job_over_http_runs_in_the_background_on_its_timetable(
    http: TestClient, node: TestNode
) -> None:
    """The scientist sees the timetable (no progress): 1 s to start, 6 slots of 0.25 + 0.4 s."""
    r = http.post("/v1/jobs", json=dp(SLOW_MEAN, partitions=6), headers=auth(node, "alice"))
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] in ("queued", "running") and job["progress"] is None
    assert job["params"]["timetable"]["seconds"] == pytest.approx(1 + 6 * 0.65)
    assert job["params"]["timetable"]["parallel"] == 1
    # the node keeps serving while the job runs
    assert http.get("/healthz").status_code == 200
    done = wait(http, node, job["id"])
    assert done["status"] == "done"
    assert done["progress"] is None and done["finishes_at"] is None
    assert set(done["result"]) >= {"value", "cost", "summary", "partitions", "bounds"}
    budget = http.get("/v1/budget", headers=auth(node, "alice")).json()
    assert budget["epsilon_spent"] == done["result"]["cost"]["epsilon"]
    listed = http.get("/v1/jobs", headers=auth(node, "alice")).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert "source" not in done and "log" not in done and "output" not in done


def test_scientists_see_only_their_own_jobs_and_no_admin_routes(
    http: TestClient, node: TestNode
) -> None:
    job = http.post("/v1/jobs", json=reviewed(SLOW_MEAN), headers=auth(node, "alice")).json()
    assert http.get(f"/v1/jobs/{job['id']}", headers=auth(node, "bob")).status_code == 404
    assert http.get("/v1/jobs", headers=auth(node, "bob")).json() == {"jobs": []}
    for method, route in [
        ("get", "/v1/admin/jobs"),
        ("get", f"/v1/admin/jobs/{job['id']}"),
        ("post", f"/v1/admin/jobs/{job['id']}/approve"),
        ("post", f"/v1/admin/jobs/{job['id']}/deny"),
        ("get", "/v1/admin/budget/requests"),
        ("post", "/v1/admin/budget/requests/1/grant"),
    ]:
        r = getattr(http, method)(route, headers=auth(node, "alice"), **_json(method))
        assert r.status_code == 403, (route, r.text)
        assert r.json()["error"]["code"] == "forbidden"
    wait(http, node, job["id"])


def _json(method: str) -> dict[str, Any]:
    return {"json": {}} if method == "post" else {}


def test_the_owner_reviews_over_http(http: TestClient, node: TestNode) -> None:
    body = reviewed("def f(df):\n    return df.groupby('region').size()\n")
    job = http.post("/v1/jobs", json=body, headers=auth(node, "alice")).json()
    assert wait(http, node, job["id"])["status"] == "pending_review"
    queue = http.get("/v1/admin/jobs?status=pending_review", headers=auth(node, "owner")).json()
    assert [j["id"] for j in queue["jobs"]] == [job["id"]]
    assert "def f(df)" in queue["jobs"][0]["source"]
    r = http.post(f"/v1/admin/jobs/{job['id']}/approve", json={}, headers=auth(node, "owner"))
    assert r.status_code == 200 and r.json()["status"] == "approved"
    assert wait(http, node, job["id"])["status"] == "output_review"
    seen = http.get(f"/v1/jobs/{job['id']}", headers=auth(node, "alice")).json()
    assert seen["result"] is None
    r = http.post(
        f"/v1/admin/jobs/{job['id']}/approve", json={"note": "ok"}, headers=auth(node, "owner")
    )
    assert r.json()["status"] == "released"
    seen = http.get(f"/v1/jobs/{job['id']}", headers=auth(node, "alice")).json()
    assert seen["result"]["type"] == "table" and seen["review_note"] == "ok"


def test_budget_top_up_requests_over_http(http: TestClient, node: TestNode) -> None:
    ask = {"epsilon": 1.5, "reason": "one more regression for the paper"}
    r = http.post("/v1/budget/requests", json=ask, headers=auth(node, "alice"))
    assert r.status_code == 201 and r.json()["status"] == "pending"
    request_id = r.json()["id"]
    mine = http.get("/v1/budget/requests", headers=auth(node, "alice")).json()["requests"]
    assert [m["id"] for m in mine] == [request_id]
    assert http.get("/v1/budget/requests", headers=auth(node, "bob")).json() == {"requests": []}
    queue = http.get("/v1/admin/budget/requests?status=pending", headers=auth(node, "owner"))
    assert [q["reason"] for q in queue.json()["requests"]] == [ask["reason"]]
    grant = f"/v1/admin/budget/requests/{request_id}/grant"
    r = http.post(grant, json={"note": "granted"}, headers=auth(node, "owner"))
    assert r.status_code == 200 and r.json()["status"] == "granted"
    assert http.get("/v1/budget", headers=auth(node, "alice")).json()["epsilon_total"] == 3.5
    again = http.post(grant, json={}, headers=auth(node, "owner"))
    assert again.status_code == 409


def test_bad_submissions_are_refused_with_the_error_envelope(
    http: TestClient, node: TestNode
) -> None:
    cases = [
        ({**dp(SLOW_MEAN), "dataset": "nope"}, 404),
        ({**dp(SLOW_MEAN), "entry": "not a name"}, 400),
        ({**dp(SLOW_MEAN), "entry": "f\n"}, 400),  # matched whole, not up to a newline
        ({**dp(SLOW_MEAN), "params": {"bounds": [1, 0], "epsilon": 1, "partitions": 3}}, 422),
        ({**dp(SLOW_MEAN), "params": {"bounds": [0, 1], "epsilon": 1, "partitions": 5000}}, 400),
        ({**dp(SLOW_MEAN), "params": {"bounds": [0, 1], "epsilon": 50, "partitions": 5}}, 403),
        ({**dp(SLOW_MEAN, run_seconds=6)}, 400),  # more than job_wall_seconds (2)
        ({**dp(SLOW_MEAN, run_seconds=0.01)}, 422),
        ({**dp(SLOW_MEAN), "request_id": "bad id!"}, 400),
        ({**dp(SLOW_MEAN), "kind": "pickle"}, 400),
    ]
    for body, status in cases:
        r = http.post("/v1/jobs", json=body, headers=auth(node, "alice"))
        assert r.status_code == status, (body, r.text)
        assert set(r.json()) == {"error"}
    assert http.get("/v1/jobs", headers=auth(node, "alice")).json() == {"jobs": []}
    assert http.get("/v1/budget", headers=auth(node, "alice")).json()["epsilon_spent"] == 0
    # every refusal is audited once, with what was asked (they were not audited at all)
    audit = http.get("/v1/admin/audit?limit=100", headers=auth(node, "owner")).json()["audit"]
    refused = [e for e in audit if e["action"] == "job.refused"]
    assert len(refused) == len(cases)
    assert all(e["actor"] == "alice" and e["detail"]["kind"] for e in refused[:-1])
    budget = [e for e in refused if e["detail"]["code"] == "budget_exceeded"]
    assert budget[0]["detail"]["epsilon"] == 50 and budget[0]["detail"]["dataset"] == "patients"
