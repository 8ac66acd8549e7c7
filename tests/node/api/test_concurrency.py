"""Concurrent releases over real HTTP never overspend, on SQLite and on PostgreSQL.

64 clients fire releases at once against a scientist whose budget allows 10 of them. The
ledger must charge at most the budget, every success must have exactly one release row, and
every refusal must be a clean 403 — never a 5xx.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from rds_kernel.node.api.app import create_app
from rds_kernel.spec import Query, count
from tests.node.nodes import TestNode, build_node, serve

pytestmark = pytest.mark.server

CLIENTS = 64


@pytest.fixture
def node(tmp_path: Path, database_url: str) -> Iterator[TestNode]:
    # 10 × 0.125 = 1.25 exactly (the ledger adds exactly; ten float 0.1s exceed 1.0 by 6e-17)
    # one scientist, 64 requests at once: lift the per-user limit to test the ledger alone
    n = build_node(tmp_path / "node", database_url, bob_epsilon=1.25, max_requests_per_user=64)
    yield n
    n.service.close()


def fire(url: str, token: str, bodies: list[dict[str, Any]]) -> list[requests.Response]:
    barrier = threading.Barrier(len(bodies))
    results: list[requests.Response | None] = [None] * len(bodies)

    def one(i: int) -> None:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {token}"
        barrier.wait()
        results[i] = s.post(url + "/v1/queries", json=bodies[i], timeout=120)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def test_64_concurrent_releases_against_a_budget_for_10(node: TestNode) -> None:
    spec = Query("patients").agg(count()).spec(0.125).to_dict()
    bodies = [{"request_id": uuid.uuid4().hex, "spec": spec} for _ in range(CLIENTS)]
    with serve(create_app(service=node.service)) as url:
        responses = fire(url, node.tokens["bob"], bodies)
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert all(r.status_code == 403 for r in refused), {r.status_code for r in refused}
    assert all(r.json()["error"]["code"] == "budget_exceeded" for r in refused)
    cost = ok[0].json()["cost"]["epsilon"]
    assert 0.125 * (1 - 1e-9) <= cost <= 0.125
    assert len(ok) == 10
    view = node.service.store.budget("bob")
    assert view.epsilon_spent <= 1.25
    assert view.epsilon_spent == pytest.approx(sum(r.json()["cost"]["epsilon"] for r in ok))
    bob = node.service.store.get_user("bob")
    rows = node.service.store.releases(bob, limit=1000)
    assert sorted(r.request_id for r in rows) == sorted(r.json()["request_id"] for r in ok)


def test_64_concurrent_retries_of_one_request_charge_once(node: TestNode) -> None:
    spec = Query("patients").agg(count()).spec(0.1).to_dict()
    body = {"request_id": "the-one", "spec": spec}
    with serve(create_app(service=node.service)) as url:
        responses = fire(url, node.tokens["bob"], [body] * CLIENTS)
    assert {r.status_code for r in responses} == {200}
    answers = {str(r.json()["result"]) for r in responses}
    assert len(answers) == 1, "every retry must see the one stored answer"
    assert sum(not r.json()["replayed"] for r in responses) == 1
    view = node.service.store.budget("bob")
    assert view.epsilon_spent == pytest.approx(responses[0].json()["cost"]["epsilon"])
