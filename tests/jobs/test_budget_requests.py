"""Budget top-up requests on SQLite and PostgreSQL: asked with a reason, granted once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from rds_kernel.errors import BadRequest, Conflict, NotFound
from rds_kernel.node.jobs import JobService
from rds_kernel.sandbox import SandboxConfig
from tests.jobs.conftest import job_node


@pytest.fixture
def jobs(tmp_path: Path, database_url: str, sandbox: SandboxConfig):  # type: ignore[no-untyped-def]
    node = job_node(tmp_path / "node", database_url)
    service = JobService(node.service, background=False)
    yield service
    service.close()
    node.service.close()


def test_a_grant_raises_the_total_once_even_when_two_owners_click(jobs: JobService) -> None:
    alice = jobs.node.store.get_user("alice")
    request = jobs.requests.ask(alice, 1.5, 1e-6, "the second analysis of the plan")
    assert request["status"] == "pending" and request["user"] == "alice"
    outcomes: list[str] = []

    def grant() -> None:
        try:
            jobs.requests.grant(request["id"], actor="owner")
            outcomes.append("granted")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=grant) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict", "granted"]
    view = jobs.node.store.budget("alice")
    assert view.epsilon_total == 3.5 and view.delta_total == pytest.approx(1e-5 + 1e-6)
    audit = [e.action for e in jobs.node.store.audit_log(limit=20)]
    assert audit[:3] == ["budget.request.grant", "budget.set", "budget.request"]


def test_a_denied_request_changes_nothing(jobs: JobService) -> None:
    bob = jobs.node.store.get_user("bob")
    request = jobs.requests.ask(bob, 5, 0, "please")
    denied = jobs.requests.deny(request["id"], actor="owner", note="not this month")
    assert denied["status"] == "denied" and denied["note"] == "not this month"
    assert jobs.node.store.budget("bob").epsilon_total == 1.0
    with pytest.raises(Conflict):
        jobs.requests.grant(request["id"], actor="owner")


def test_requests_are_private_to_their_scientist(jobs: JobService) -> None:
    alice, bob = (jobs.node.store.get_user(n) for n in ("alice", "bob"))
    request = jobs.requests.ask(alice, 1, 0, "mine")
    assert jobs.requests.list(user=bob) == []
    with pytest.raises(NotFound):
        jobs.requests.get(request["id"], bob)


@pytest.mark.parametrize(
    ("epsilon", "delta", "reason", "message"),
    [
        (0, 0, "why", "some budget"),
        (-1, 0, "why", "≥ 0"),
        (1, 1.5, "why", "below 1"),
        (1, 0, "  ", "say why"),
        (float("nan"), 0, "why", "finite"),
    ],
)
def test_bad_requests_say_what_to_fix(
    jobs: JobService, epsilon: float, delta: float, reason: str, message: str
) -> None:
    alice = jobs.node.store.get_user("alice")
    with pytest.raises(BadRequest, match=message):
        jobs.requests.ask(alice, epsilon, delta, reason)
