"""Budget top-up requests on SQLite and PostgreSQL: asked with a reason, granted once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from rds_kernel.errors import BadRequest, Conflict, NotFound
from rds_kernel.node.jobs.service import JobService
from rds_kernel.sandbox import SandboxConfig
from tests.node.jobs.helpers import job_node


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


@contextmanager
def after_statement(matches: Callable[[str], bool], action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` once, in the calling thread, right after its first SQL statement that
    ``matches`` (on any engine): a point inside whatever transaction that statement is in."""
    thread = threading.get_ident()
    fired = threading.Event()

    def hook(*args: Any) -> None:
        statement = args[2]
        if threading.get_ident() == thread and not fired.is_set() and matches(statement):
            fired.set()
            action()

    event.listen(sa.engine.Engine, "after_cursor_execute", hook)
    try:
        yield
    finally:
        event.remove(sa.engine.Engine, "after_cursor_execute", hook)
    assert fired.is_set(), "the statement never ran"


def reads_budget(statement: str) -> bool:
    return statement.lstrip().upper().startswith("SELECT") and "FROM user_budgets" in statement


def writes_budget(statement: str) -> bool:
    return statement.lstrip().upper().startswith("UPDATE USER_BUDGETS")


def totals_set(jobs: JobService) -> list[tuple[float | None, float]]:
    """Each change of alice's node-wide total, oldest first: (previous, new)."""
    entries = reversed(jobs.node.store.audit_log(limit=100))
    return [
        ((e.detail["previous"] or {}).get("epsilon"), e.detail["epsilon"])
        for e in entries
        if e.action == "budget.set" and e.detail["user"] == "alice" and not e.detail["dataset"]
    ]


def in_thread(work: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_a_set_during_a_grant_is_not_lost(jobs: JobService) -> None:
    """The owner runs `rds budget set alice 7` while a grant of 1.5 is under way. The grant
    used to read the total (2), let the set commit (7), then write 2 + 1.5 = 3.5: the set was
    lost. Now the grant reads the total under its lock, so the set waits and applies after
    it: 2 → 3.5 (the grant) → 7 (the set), each from the total the other committed.

    The set gets 1 s to sneak in; when the grant holds the lock it waits for the grant
    however long that takes, so the outcome does not depend on the timing.
    """
    alice = jobs.node.store.get_user("alice")
    request = jobs.requests.ask(alice, 1.5, 0.0, "one more model")
    setter: list[threading.Thread] = []

    def set_meanwhile() -> None:
        setter.append(in_thread(lambda: jobs.node.store.set_budget("alice", 7.0, actor="cli")))
        setter[0].join(1.0)

    with after_statement(reads_budget, set_meanwhile):
        granted = jobs.requests.grant(request["id"], actor="owner")
    setter[0].join()
    assert granted["status"] == "granted"
    assert jobs.node.store.budget("alice").epsilon_total == 7.0
    assert totals_set(jobs)[-2:] == [(2.0, 3.5), (3.5, 7.0)]


def test_a_grant_during_a_set_is_not_lost(jobs: JobService) -> None:
    """The other order: a grant of 1.5 arrives while `rds budget set alice 7` is writing.
    The grant used to read the old total (2) and write 3.5 after the set committed, undoing
    it. Now it reads the total under the lock, after the set: 2 → 7 → 8.5."""
    alice = jobs.node.store.get_user("alice")
    request = jobs.requests.ask(alice, 1.5, 0.0, "one more model")
    granter: list[threading.Thread] = []

    def grant_meanwhile() -> None:
        granter.append(in_thread(lambda: jobs.requests.grant(request["id"], actor="owner")))
        granter[0].join(1.0)

    with after_statement(writes_budget, grant_meanwhile):
        jobs.node.store.set_budget("alice", 7.0, actor="cli")
    granter[0].join()
    assert jobs.requests.get(request["id"])["status"] == "granted"
    assert jobs.node.store.budget("alice").epsilon_total == 8.5
    assert totals_set(jobs)[-2:] == [(2.0, 7.0), (7.0, 8.5)]


class Crash(BaseException):
    """Stands for kill -9: raised at one SQL statement, and at every one after it."""


def test_a_crash_at_any_point_of_a_grant_leaves_nothing_or_everything(jobs: JobService) -> None:
    """The node dies before the 1st, 2nd, ... SQL statement of a grant (from then on no
    statement of it runs, as after kill -9). Every time, the request is pending with the
    total as it was, or granted with the total raised. Before, a crash between its three
    transactions left the request `granting` with the budget already raised (or, the other
    way round, the request claimed for good with nothing raised)."""
    alice = jobs.node.store.get_user("alice")
    thread = threading.get_ident()
    state = {"count": 0, "at": 0}

    def hook(*_args: Any) -> None:
        if threading.get_ident() != thread or not state["at"]:
            return
        state["count"] += 1
        if state["count"] >= state["at"]:
            raise Crash

    outcomes = set()
    event.listen(sa.engine.Engine, "before_cursor_execute", hook)
    try:
        for at in range(1, 100):
            request = jobs.requests.ask(alice, 1.5, 0.0, f"crash at statement {at}")
            before = jobs.node.store.budget("alice").epsilon_total
            state.update(count=0, at=at)
            try:
                jobs.requests.grant(request["id"], actor="owner")
                crashed = False
            except Crash:
                crashed = True
            finally:
                state["at"] = 0
            status = jobs.requests.get(request["id"])["status"]
            total = jobs.node.store.budget("alice").epsilon_total
            assert (status, total) in {("pending", before), ("granted", before + 1.5)}, at
            outcomes.add((crashed, status))
            if status == "pending":
                jobs.requests.deny(request["id"], actor="owner")
            if not crashed:
                break
    finally:
        event.remove(sa.engine.Engine, "before_cursor_execute", hook)
    assert outcomes >= {(True, "pending"), (False, "granted")}, outcomes
