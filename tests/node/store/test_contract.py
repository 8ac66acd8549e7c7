"""The store contract: users and tokens, budgets, the charge path, releases, the audit log.

Every test runs against SQLite and PostgreSQL (the ``store`` fixture is parametrised), so the
two implementations keep one behaviour.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import threading
import uuid
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rds_kernel.errors import (
    AuthenticationError,
    BadRequest,
    BudgetExceeded,
    Conflict,
    NotFound,
)
from rds_kernel.node.store import ChargeResult, Store, User

ANSWER = {"count": 41.0, "accuracy": {"alpha": 0.05, "count": 3.2}}


def charge(
    store: Store,
    user: User,
    epsilon: float,
    *,
    delta: float = 0.0,
    dataset: str = "patients",
    request_id: str | None = None,
    spec_hash: str = "spec-1",
    answer: dict[str, Any] | None = None,
) -> ChargeResult:
    return store.charge(
        user=user,
        dataset=dataset,
        request_id=request_id or uuid.uuid4().hex,
        spec_hash=spec_hash,
        epsilon=epsilon,
        delta=delta,
        answer=ANSWER if answer is None else answer,
    )


def scientist(store: Store, name: str = "alice", epsilon: float | None = None) -> User:
    user, _token = store.add_user(name, "scientist")
    if epsilon is not None:
        store.set_budget(name, epsilon, actor="owner")
    return user


def release_count(raw: sa.Engine) -> int:
    with raw.connect() as conn:
        return int(conn.scalar(sa.text("SELECT count(*) FROM releases")) or 0)


# -- users and tokens ---------------------------------------------------------------------------


def test_token_is_shown_once_and_only_its_hash_is_stored(store: Store, raw: sa.Engine) -> None:
    """add_user returns the token once; the table holds its sha256 and nothing else of it."""
    user, token = store.add_user("alice", "scientist")
    assert token.startswith("rds_") and len(token) >= 40
    assert store.authenticate(token) == user

    with raw.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(sa.text("SELECT * FROM users"))]
    assert len(rows) == 1
    assert rows[0]["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert not any(token in str(value) for value in rows[0].values())
    # Nothing the store hands out afterwards carries the token.
    shown = json.dumps(
        [store.get_user("alice").to_dict(), [u.to_dict() for u in store.list_users()]]
        + [entry.to_dict() for entry in store.audit_log()]
    )
    assert token not in shown and rows[0]["token_hash"] not in shown


def test_wrong_rotated_and_disabled_tokens_do_not_authenticate(store: Store) -> None:
    """Only the current token of an enabled user authenticates."""
    alice, token = store.add_user("alice", "scientist")
    _bob, bob_token = store.add_user("bob", "owner")
    for wrong in ["", "rds_", token[:-1], token + "x", token.removeprefix("rds_"), "x" * 10_000]:
        assert store.authenticate(wrong) is None
    assert store.authenticate(bob_token) is not None

    new_token = store.rotate_token("alice", actor="bob")
    assert new_token != token
    assert store.authenticate(token) is None
    assert store.authenticate(new_token) == alice

    store.disable_user("alice", actor="bob")
    assert store.authenticate(new_token) is None
    assert store.get_user("alice").disabled
    assert store.authenticate(bob_token) is not None


def test_a_disabled_user_cannot_spend(store: Store) -> None:
    """A charge re-checks the user inside its transaction, so a stale User cannot spend."""
    alice = scientist(store, epsilon=1.0)
    store.disable_user("alice", actor="owner")
    with pytest.raises(AuthenticationError, match="disabled"):
        charge(store, alice, 0.1)
    assert store.budget("alice").epsilon_spent == 0.0


def test_user_names_are_unique_and_roles_checked(store: Store) -> None:
    """A taken name is a Conflict; unknown roles and odd names are BadRequest; lookups 404."""
    store.add_user("alice", "scientist")
    with pytest.raises(Conflict, match="already exists"):
        store.add_user("alice", "owner")
    for name, role in [("carol", "admin"), ("", "scientist"), ("a b", "scientist")]:
        with pytest.raises(BadRequest):
            store.add_user(name, role)
    with pytest.raises(NotFound, match="no user named 'nobody'"):
        store.get_user("nobody")
    with pytest.raises(NotFound):
        store.rotate_token("nobody", actor="owner")
    assert [u.name for u in store.list_users()] == ["alice"]


def test_the_store_survives_a_restart(store: Store, database_url: str) -> None:
    """create_all is idempotent and a new Store on the same database sees the same state."""
    alice, token = store.add_user("alice", "scientist")
    store.set_budget("alice", 1.0, actor="owner")
    charge(store, alice, 0.25, request_id="r1")
    store.close()

    reopened = Store(database_url)
    reopened.create_all()
    try:
        assert reopened.authenticate(token) == alice
        assert reopened.budget("alice").epsilon_spent == 0.25
        assert reopened.find_release(alice, "r1") is not None
    finally:
        reopened.close()


# -- budgets and charges ------------------------------------------------------------------------


def test_a_user_without_a_budget_cannot_spend(store: Store, raw: sa.Engine) -> None:
    """No budget row means a budget of zero, for scientists and owners alike."""
    for name, role in [("alice", "scientist"), ("olga", "owner")]:
        user, _ = store.add_user(name, role)
        view = store.budget(name)
        assert (view.epsilon_total, view.epsilon_remaining, view.delta_total) == (0.0, 0.0, 0.0)
        with pytest.raises(BudgetExceeded) as refused:
            charge(store, user, 0.01)
        assert refused.value.detail["limit"] == "user"
    assert release_count(raw) == 0


def test_a_charge_debits_the_budget(store: Store) -> None:
    """Spent grows by the exact cost; remaining is total minus spent; owners may hold budget."""
    olga, _ = store.add_user("olga", "owner")
    store.set_budget("olga", 1.0, 1e-6, actor="cli")
    result = charge(store, olga, 0.25, delta=1e-7)
    assert not result.replayed
    assert result.release.answer == ANSWER
    assert (result.release.epsilon, result.release.delta) == (0.25, 1e-7)
    view = store.budget("olga")
    assert (view.epsilon_total, view.epsilon_spent, view.epsilon_remaining) == (1.0, 0.25, 0.75)
    assert (view.delta_total, view.delta_spent) == (1e-6, 1e-7)
    assert view.delta_remaining == 1e-6 - 1e-7
    assert view.per_dataset == {}
    body = view.to_dict()
    assert json.loads(json.dumps(body)) == body
    assert body["user"] == "olga" and body["epsilon_remaining"] == 0.75


def test_a_refusal_charges_nothing_and_records_nothing(store: Store, raw: sa.Engine) -> None:
    """BudgetExceeded (403) says what was needed and what is left; no debit, no release."""
    alice = scientist(store, epsilon=0.5)
    with pytest.raises(BudgetExceeded) as refused:
        charge(store, alice, 0.6, request_id="r1")
    error = refused.value
    assert error.status == 403
    assert "needs ε=0.6, ε=0.5 left on this node" in error.message
    assert "rds.request_budget(node, epsilon=..., reason=...)" in error.message
    assert error.detail == {
        "needed": {"epsilon": 0.6, "delta": 0.0},
        "remaining": {"epsilon": 0.5, "delta": 0.0},
        "limit": "user",
        "dataset": "patients",
    }
    assert store.budget("alice").epsilon_spent == 0.0
    assert store.find_release(alice, "r1") is None
    assert store.releases(alice) == []
    assert release_count(raw) == 0
    assert "release" not in [entry.action for entry in store.audit_log()]
    # The request_id was not used up: a cheaper query under it goes through.
    assert not charge(store, alice, 0.5, request_id="r1").replayed
    assert store.budget("alice").epsilon_remaining == 0.0


def test_spending_exactly_the_total_is_allowed_and_no_more(store: Store) -> None:
    """spent + cost <= total, checked exactly (floats are binary fractions), no tolerance."""
    alice = scientist(store, epsilon=1.0)
    for _ in range(4):
        charge(store, alice, 0.25)  # exact in binary: the whole budget, to the last bit
    assert store.budget("alice").epsilon_spent == 1.0
    with pytest.raises(BudgetExceeded):
        charge(store, alice, 5e-324)


def test_the_stored_spend_is_never_below_the_true_sum(store: Store) -> None:
    """Each debit rounds up: the float sum of ten 0.1s (0.9999999999999999) is below their true
    sum (1.0000000000000000555), which a float ledger would let a scientist exceed 1.0 by; here
    the tenth 0.1 is refused, and the spend stored is always at least the exact sum."""
    alice = scientist(store, epsilon=1.0)
    exact = Fraction(0)
    for _ in range(9):
        charge(store, alice, 0.1)
        exact += Fraction(0.1)
        assert Fraction(store.budget("alice").epsilon_spent) >= exact
    assert sum(itertools.repeat(0.1, 10)) <= 1.0 < exact + Fraction(0.1)
    with pytest.raises(BudgetExceeded):
        charge(store, alice, 0.1)


def test_a_refund_gives_back_exactly_a_reserved_charge(store: Store, raw: sa.Engine) -> None:
    """refund() undoes one charge in every scope and forgets its release; the audit log keeps
    both. A refund of nothing changes nothing."""
    alice = scientist(store, epsilon=1.0)
    store.set_budget("alice", 0.5, dataset="patients", actor="owner")
    store.set_dataset_cap("patients", 0.7, actor="owner")
    charge(store, alice, 0.3, request_id="job-1")
    assert store.refund(alice, "job-1", reason="the sandbox did not start")
    view = store.budget("alice")
    assert view.epsilon_spent == 0.0 and view.per_dataset["patients"].epsilon_spent == 0.0
    assert store.dataset_caps()["patients"].epsilon_spent == 0.0
    assert store.find_release(alice, "job-1") is None
    assert not store.refund(alice, "job-1", reason="again")
    assert store.budget("alice") == view
    actions = [e.action for e in store.audit_log()]
    assert actions[0] == "release.refund" and "release" in actions


def test_an_answer_recorded_later_keeps_the_charge(store: Store) -> None:
    """A charge taken before its answer exists (a DP job's reservation) gets the answer later;
    the ledger does not move, and a release that does not exist is refused."""
    alice = scientist(store, epsilon=1.0)
    charge(store, alice, 0.3, request_id="job-1", answer={"status": "reserved"})
    release = store.record_answer(alice, "job-1", {"value": 0.5})
    assert release.answer == {"value": 0.5} and release.epsilon == 0.3
    assert store.budget("alice").epsilon_spent == 0.3
    with pytest.raises(BadRequest):
        store.record_answer(alice, "job-2", {"value": 0.5})


def test_precheck_refuses_when_any_scope_is_short(store: Store) -> None:
    """precheck() applies charge()'s rules to every scope, the dataset's global cap included,
    and writes nothing."""
    alice = scientist(store, epsilon=2.0)
    store.precheck(alice, "patients", 1.0)
    store.set_dataset_cap("patients", 0.5, actor="owner")
    with pytest.raises(BudgetExceeded, match="for all scientists together"):
        store.precheck(alice, "patients", 1.0)
    store.set_budget("alice", 0.2, dataset="other", actor="owner")
    with pytest.raises(BudgetExceeded, match="for you on dataset 'other'"):
        store.precheck(alice, "other", 0.3)
    bob = scientist(store, "bob")
    with pytest.raises(BudgetExceeded, match="on this node"):
        store.precheck(bob, "patients", 0.1)
    assert store.budget("alice").epsilon_spent == 0.0


def test_delta_is_limited_like_epsilon(store: Store) -> None:
    """A pure-DP budget (δ total 0) refuses any δ > 0, and says it is δ that ran out."""
    alice = scientist(store, epsilon=10.0)
    with pytest.raises(BudgetExceeded, match="needs δ=1e-06, δ=0 left") as refused:
        charge(store, alice, 0.1, delta=1e-6)
    assert "ε=" not in refused.value.message
    store.set_budget("alice", 10.0, 1e-6, actor="owner")
    charge(store, alice, 0.1, delta=1e-6)
    with pytest.raises(BudgetExceeded, match="δ="):
        charge(store, alice, 0.1, delta=1e-9)


def test_a_per_dataset_cap_limits_one_dataset(store: Store) -> None:
    """A cap for one (user, dataset) binds there; other datasets use the node-wide total."""
    alice = scientist(store, epsilon=2.0)
    store.set_budget("alice", 0.5, dataset="a", actor="owner")
    charge(store, alice, 0.4, dataset="a")
    with pytest.raises(BudgetExceeded, match="for you on dataset 'a'") as refused:
        charge(store, alice, 0.2, dataset="a")
    assert refused.value.detail["limit"] == "dataset"
    assert refused.value.detail["remaining"]["epsilon"] == 0.5 - 0.4
    charge(store, alice, 1.0, dataset="b")
    with pytest.raises(BudgetExceeded) as refused:
        charge(store, alice, 0.7, dataset="b")
    assert refused.value.detail["limit"] == "user"

    view = store.budget("alice")
    assert view.epsilon_spent == pytest.approx(1.4, abs=1e-15)  # 0.4 + 1.0, rounded up
    assert list(view.per_dataset) == ["a"]
    assert view.per_dataset["a"].epsilon_total == 0.5
    assert view.per_dataset["a"].epsilon_spent == 0.4


def test_a_cap_set_later_counts_what_was_spent_before(store: Store) -> None:
    """Spending is tracked per dataset even without a cap, so a new cap cannot be dodged."""
    alice = scientist(store, epsilon=2.0)
    charge(store, alice, 0.4, dataset="a")
    with pytest.raises(BadRequest, match=re.escape("already spent ε=0.4")):
        store.set_budget("alice", 0.3, dataset="a", actor="owner")
    store.set_budget("alice", 0.5, dataset="a", actor="owner")
    assert store.budget("alice").per_dataset["a"].epsilon_remaining == 0.5 - 0.4
    store.set_dataset_cap("a", 0.4, actor="owner")
    assert store.dataset_caps()["a"].epsilon_remaining == 0.0
    with pytest.raises(BudgetExceeded) as refused:
        charge(store, alice, 0.05, dataset="a")
    assert refused.value.detail["limit"] == "global"


def test_a_global_cap_binds_all_scientists_together(store: Store) -> None:
    """The dataset's global cap is shared: what alice spends, bob cannot."""
    alice = scientist(store, "alice", epsilon=5.0)
    bob = scientist(store, "bob", epsilon=5.0)
    store.set_dataset_cap("a", 1.0, actor="owner")
    charge(store, alice, 0.6, dataset="a")
    with pytest.raises(BudgetExceeded, match="for all scientists together") as refused:
        charge(store, bob, 0.6, dataset="a")
    assert refused.value.detail["limit"] == "global"
    # what is left of a shared cap would tell bob what alice spent: it is not said
    assert "remaining" not in refused.value.detail
    assert "0.4" not in refused.value.message and "more than is left" in refused.value.message
    charge(store, bob, 0.4, dataset="a")
    charge(store, bob, 3.0, dataset="b")
    caps = store.dataset_caps()
    assert list(caps) == ["a"]
    assert (caps["a"].epsilon_total, caps["a"].epsilon_spent) == (1.0, 1.0)
    assert caps["a"].to_dict()["epsilon_remaining"] == 0.0
    assert store.budget("bob").epsilon_spent == pytest.approx(3.4, abs=1e-15)  # rounded up
    with pytest.raises(BadRequest, match="all scientists together have already spent"):
        store.set_dataset_cap("a", 0.9, actor="owner")


def test_a_total_below_what_is_spent_is_refused(store: Store) -> None:
    """set_budget sets totals; lowering one below the spent amount is refused with numbers."""
    alice = scientist(store, epsilon=1.0)
    charge(store, alice, 0.7)
    with pytest.raises(BadRequest) as refused:
        store.set_budget("alice", 0.5, actor="owner")
    assert "already spent ε=0.7" in refused.value.message
    assert refused.value.detail == {
        "spent": {"epsilon": 0.7, "delta": 0.0},
        "requested": {"epsilon": 0.5, "delta": 0.0},
    }
    assert store.budget("alice").epsilon_total == 1.0
    store.set_budget("alice", 1.0, 1e-6, actor="owner")
    charge(store, alice, 0.1, delta=1e-7)
    with pytest.raises(BadRequest, match="δ=1e-07"):
        store.set_budget("alice", 1.0, 1e-8, actor="owner")
    assert store.budget("alice").delta_total == 1e-6
    spent = store.budget("alice").epsilon_spent  # 0.7 + 0.1, as floats add
    store.set_budget("alice", spent, 1e-7, actor="owner")
    assert store.budget("alice").epsilon_remaining == 0.0
    assert store.budget("alice").delta_remaining == 0.0
    store.set_budget("alice", 3.0, 1e-7, actor="owner")
    assert store.budget("alice").epsilon_remaining == 3.0 - spent


BAD_NUMBERS = [math.nan, math.inf, -math.inf, -0.1, "1", True, None]


@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=repr)
def test_invalid_numbers_are_refused(store: Store, bad: Any) -> None:
    """NaN, infinities, negatives and non-numbers never reach the ledger."""
    alice = scientist(store, epsilon=1.0)
    audited = len(store.audit_log())
    calls: list[Callable[[], object]] = [
        lambda: store.set_budget("alice", bad, actor="owner"),
        lambda: store.set_budget("alice", 1.0, bad, actor="owner"),
        lambda: store.set_budget("alice", bad, dataset="a", actor="owner"),
        lambda: store.set_dataset_cap("a", bad, actor="owner"),
        lambda: store.set_dataset_cap("a", 1.0, bad, actor="owner"),
        lambda: charge(store, alice, bad),
        lambda: charge(store, alice, 0.1, delta=bad),
    ]
    for call in calls:
        with pytest.raises(BadRequest):
            call()
    assert store.budget("alice").to_dict()["epsilon_total"] == 1.0
    assert store.budget("alice").epsilon_spent == 0.0
    assert store.dataset_caps() == {}
    assert len(store.audit_log()) == audited


def test_meaningless_amounts_are_refused(store: Store) -> None:
    """δ totals must be below 1, and a release must cost something."""
    alice = scientist(store, epsilon=1.0)
    for delta in (1.0, 1.5):
        with pytest.raises(BadRequest, match="below 1"):
            store.set_budget("alice", 1.0, delta, actor="owner")
        with pytest.raises(BadRequest, match="below 1"):
            store.set_dataset_cap("a", 1.0, delta, actor="owner")
    with pytest.raises(BadRequest, match="must cost"):
        charge(store, alice, 0.0)
    with pytest.raises(NotFound):
        store.set_budget("nobody", 1.0, actor="owner")


# -- idempotency ---------------------------------------------------------------------------------


def test_a_retry_returns_the_same_answer_and_charges_once(store: Store, raw: sa.Engine) -> None:
    """The same (user, request_id, spec_hash) replays the stored release for free."""
    alice = scientist(store, epsilon=1.0)
    first = charge(store, alice, 0.3, request_id="r1")
    again = charge(store, alice, 0.3, request_id="r1", answer={"count": 99.0})
    assert (first.replayed, again.replayed) == (False, True)
    assert again.release == first.release
    assert again.release.answer == ANSWER
    assert store.budget("alice").epsilon_spent == 0.3
    assert release_count(raw) == 1
    assert [e.action for e in store.audit_log()].count("release") == 1
    assert store.find_release(alice, "r1") == first.release
    # A retry is answered even when the budget has meanwhile run out.
    charge(store, alice, 0.7)
    assert charge(store, alice, 0.3, request_id="r1").replayed


def test_a_reused_request_id_with_another_query_is_a_conflict(store: Store) -> None:
    """Same request_id, different spec_hash: Conflict (409), nothing charged."""
    alice = scientist(store, "alice", epsilon=1.0)
    bob = scientist(store, "bob", epsilon=1.0)
    charge(store, alice, 0.3, request_id="r1", spec_hash="spec-1")
    with pytest.raises(Conflict, match="request_id 'r1' was already used") as refused:
        charge(store, alice, 0.3, request_id="r1", spec_hash="spec-2")
    assert refused.value.status == 409
    assert store.budget("alice").epsilon_spent == 0.3
    # request_ids belong to one user: bob's r1 is a new release.
    assert not charge(store, bob, 0.3, request_id="r1", spec_hash="spec-2").replayed


def test_releases_are_own_history_newest_first(store: Store) -> None:
    """releases() lists only the caller's releases, newest first, up to ``limit``."""
    alice = scientist(store, "alice", epsilon=1.0)
    bob = scientist(store, "bob", epsilon=1.0)
    for request_id in ("r1", "r2", "r3"):
        charge(store, alice, 0.1, request_id=request_id)
    charge(store, bob, 0.1, request_id="b1")
    assert [r.request_id for r in store.releases(alice)] == ["r3", "r2", "r1"]
    assert [r.request_id for r in store.releases(alice, limit=2)] == ["r3", "r2"]
    assert [r.request_id for r in store.releases(bob)] == ["b1"]
    assert store.find_release(bob, "r1") is None
    body = store.releases(alice)[0].to_dict()
    assert json.loads(json.dumps(body)) == body
    assert body["user"] == "alice" and body["created_at"].endswith("+00:00")
    with pytest.raises(BadRequest):
        store.releases(alice, limit=0)


# -- audit log -----------------------------------------------------------------------------------


def test_every_admin_action_and_release_is_audited(store: Store) -> None:
    """Each admin action and each release adds one audit row naming the actor."""
    alice, token = store.add_user("alice", "scientist", actor="olga")
    store.set_budget("alice", 1.0, actor="olga")
    store.set_budget("alice", 0.5, dataset="a", actor="olga")
    store.set_dataset_cap("a", 2.0, 1e-6, actor="olga")
    charge(store, alice, 0.1, dataset="a", request_id="r1")
    new_token = store.rotate_token("alice", actor="olga")
    store.disable_user("alice", actor="olga")
    store.audit("olga", "job.approve", {"job": "j1"})

    entries = store.audit_log()
    assert [(e.actor, e.action) for e in reversed(entries)] == [
        ("olga", "user.add"),
        ("olga", "budget.set"),
        ("olga", "budget.set"),
        ("olga", "dataset_cap.set"),
        ("alice", "release"),
        ("olga", "user.rotate_token"),
        ("olga", "user.disable"),
        ("olga", "job.approve"),
    ]
    assert entries[-1].detail == {"user": "alice", "role": "scientist"}
    assert entries[-3].detail["dataset"] == "a"
    assert entries[3].detail == {
        "user": "alice",
        "dataset": "a",
        "request_id": "r1",
        "spec_hash": "spec-1",
        "epsilon": 0.1,
        "delta": 0.0,
    }
    assert [e.id for e in store.audit_log(limit=2)] == [e.id for e in entries[:2]]
    text = json.dumps([e.to_dict() for e in entries])
    assert token not in text and new_token not in text


def test_the_database_refuses_to_change_or_delete_audit_rows(
    store: Store, raw: sa.Engine, database_url: str
) -> None:
    """The audit log is append-only in the database itself, not just in the Store's API."""
    store.audit("olga", "job.approve", {"job": "j1"})
    tampering = ["UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"]
    if database_url.startswith("postgresql"):
        tampering.append("TRUNCATE audit_log")
    for statement in tampering:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), raw.begin() as conn:
            conn.execute(sa.text(statement))
    assert [(e.actor, e.action) for e in store.audit_log()] == [("olga", "job.approve")]


# -- concurrency ---------------------------------------------------------------------------------

THREADS = 64


def run_together(work: Callable[[int], ChargeResult]) -> tuple[list[ChargeResult], int]:
    """Run ``work(i)`` on THREADS threads released at once; successes and refusal count."""
    barrier = threading.Barrier(THREADS)
    results: list[ChargeResult] = []
    refused: list[BudgetExceeded] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        barrier.wait()
        try:
            result = work(i)
        except BudgetExceeded as exc:
            with lock:
                refused.append(exc)
        except BaseException as exc:
            with lock:
                failures.append(exc)
        else:
            with lock:
                results.append(result)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    assert len(results) + len(refused) == THREADS
    return results, len(refused)


@pytest.mark.parametrize("limit", ["user", "global"])
def test_concurrent_charges_never_overspend(store: Store, raw: sa.Engine, limit: str) -> None:
    """64 simultaneous ε=0.125 charges against 1.25: exactly 10 succeed, one release each.

    ``user``: one scientist's total binds. ``global``: four scientists with ample budgets share
    a global dataset cap, so their transactions contend on the shared row. (Binary fractions,
    so that ten charges fit exactly: the ledger checks exact sums, see the test above.)
    """
    if limit == "user":
        people = [scientist(store, "alice", epsilon=1.25)]
    else:
        people = [scientist(store, f"s{i}", epsilon=100.0) for i in range(4)]
        store.set_dataset_cap("patients", 1.25, actor="owner")

    results, refused = run_together(
        lambda i: charge(store, people[i % len(people)], 0.125, request_id=f"req-{i}")
    )

    assert len(results) == 10 and refused == THREADS - 10
    assert not any(result.replayed for result in results)
    spent = sum(store.budget(person.name).epsilon_spent for person in people)
    assert spent == sum(result.release.epsilon for result in results) == 1.25
    if limit == "global":
        cap = store.dataset_caps()["patients"]
        assert cap.epsilon_spent == 1.25 == cap.epsilon_total
    with raw.connect() as conn:
        stored = sorted(conn.scalars(sa.text("SELECT request_id FROM releases")))
    assert stored == sorted(result.release.request_id for result in results)


def test_concurrent_duplicates_charge_once(store: Store, raw: sa.Engine) -> None:
    """64 simultaneous charges with the same request_id: one charge, 63 replays."""
    alice = scientist(store, epsilon=1.0)
    results, refused = run_together(lambda i: charge(store, alice, 0.1, request_id="same"))
    assert refused == 0
    assert sum(not result.replayed for result in results) == 1
    assert len({json.dumps(result.release.to_dict()) for result in results}) == 1
    assert store.budget("alice").epsilon_spent == 0.1
    assert release_count(raw) == 1


# -- invariants under random operation sequences -------------------------------------------------

USERS = ("u0", "u1")
DATASETS = ("a", "b")
EPSILONS = [0.05, 0.1, 0.2, 0.3, 0.7]
charges = st.tuples(
    st.just("charge"),
    st.sampled_from(USERS),
    st.sampled_from(DATASETS),
    st.sampled_from(EPSILONS),
    st.sampled_from([0.0, 1e-7]),
)
budgets = st.tuples(
    st.just("budget"),
    st.sampled_from(USERS),
    st.sampled_from([None, *DATASETS]),
    st.sampled_from([0.0, 0.2, 0.5, 1.0, 2.0]),
    st.sampled_from([0.0, 1e-7, 1e-6]),
)
caps = st.tuples(
    st.just("cap"),
    st.just(""),
    st.sampled_from(DATASETS),
    st.sampled_from([0.2, 0.5, 1.0, 1.5]),
    st.sampled_from([0.0, 1e-7, 1e-6]),
)
# Open with node-wide budgets for both users, a cap for u0 on "a" and a global cap on "b" (u1 on
# "a" and everyone's spending on "a" stay uncapped), then mostly charges, so that every kind of
# scope gets driven to its limit.
opening = st.tuples(
    *(
        st.tuples(
            st.just("budget"),
            st.just(u),
            st.none(),
            st.sampled_from([1.0, 2.0, 3.0]),
            st.sampled_from([0.0, 1e-6]),
        )
        for u in USERS
    ),
    st.tuples(
        st.just("budget"),
        st.just("u0"),
        st.just("a"),
        st.sampled_from([0.3, 0.6, 1.0]),
        st.sampled_from([0.0, 1e-6]),
    ),
    st.tuples(
        st.just("cap"),
        st.just(""),
        st.just("b"),
        st.sampled_from([0.5, 1.0, 1.5]),
        st.sampled_from([0.0, 1e-6]),
    ),
)
operations = st.tuples(
    opening,
    st.lists(st.one_of(charges, charges, charges, budgets, caps), min_size=10, max_size=24),
).map(lambda parts: [*parts[0], *parts[1]])


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=operations)
def test_random_sequences_keep_the_ledger_sound(store: Store, ops: list[tuple[Any, ...]]) -> None:
    """Against a model: a charge succeeds iff every scope has room, and spent stays in bounds.

    After every step, in every scope: 0 <= spent <= total, spent never decreases, and spent is
    the running sum of the charges that succeeded rounded up, never below the exact sum.
    """
    run = uuid.uuid4().hex[:8]  # examples share one database; keep their names apart
    names = {u: f"{u}-{run}" for u in USERS}
    datasets = {d: f"{d}-{run}" for d in DATASETS}
    users = {u: store.add_user(names[u], "scientist")[0] for u in USERS}
    # Per scope: [epsilon_total, delta_total, epsilon_spent, delta_spent]; a None total: no cap.
    model: dict[tuple[str, ...], list[Any]] = {("user", u): [0.0, 0.0, 0.0, 0.0] for u in USERS}
    for u in USERS:
        for d in DATASETS:
            model[("dataset", u, d)] = [None, None, 0.0, 0.0]
    for d in DATASETS:
        model[("global", d)] = [None, None, 0.0, 0.0]
    seen_spent: dict[tuple[str, ...], tuple[float, float]] = {}
    exact: dict[tuple[str, ...], tuple[Fraction, Fraction]] = {}

    for step, (kind, u, d, epsilon, delta) in enumerate(ops):
        if kind == "charge":
            scopes = [("user", u), ("dataset", u, d), ("global", d)]
            fits = all(
                model[s][0] is None
                or (
                    Fraction(model[s][2]) + Fraction(epsilon) <= Fraction(model[s][0])
                    and Fraction(model[s][3]) + Fraction(delta) <= Fraction(model[s][1])
                )
                for s in scopes
            )
            try:
                result = charge(
                    store,
                    users[u],
                    epsilon,
                    delta=delta,
                    dataset=datasets[d],
                    request_id=f"r{step}",
                )
            except BudgetExceeded:
                assert not fits
            else:
                assert fits and not result.replayed
                for s in scopes:
                    model[s][2] = _at_least(model[s][2], epsilon, model[s][0])
                    model[s][3] = _at_least(model[s][3], delta, model[s][1])
                    exact[s] = exact.get(s, (Fraction(0), Fraction(0)))
                    exact[s] = (exact[s][0] + Fraction(epsilon), exact[s][1] + Fraction(delta))
        else:
            scope = (
                ("global", d) if kind == "cap" else ("user", u) if d is None else ("dataset", u, d)
            )
            allowed = epsilon >= model[scope][2] and delta >= model[scope][3]
            try:
                if kind == "cap":
                    store.set_dataset_cap(datasets[d], epsilon, delta, actor="owner")
                else:
                    dataset = None if d is None else datasets[d]
                    store.set_budget(names[u], epsilon, delta, dataset=dataset, actor="owner")
            except BadRequest:
                assert not allowed
            else:
                assert allowed
                model[scope][0], model[scope][1] = epsilon, delta

        observed: dict[tuple[str, ...], tuple[Any, ...]] = {}
        for u in USERS:
            view = store.budget(names[u])
            observed[("user", u)] = (
                view.epsilon_total,
                view.delta_total,
                view.epsilon_spent,
                view.delta_spent,
            )
            for d in DATASETS:
                line = view.per_dataset.get(datasets[d])
                if line is not None:
                    observed[("dataset", u, d)] = (
                        line.epsilon_total,
                        line.delta_total,
                        line.epsilon_spent,
                        line.delta_spent,
                    )
        caps = store.dataset_caps()
        for d in DATASETS:
            if datasets[d] in caps:
                line = caps[datasets[d]]
                observed[("global", d)] = (
                    line.epsilon_total,
                    line.delta_total,
                    line.epsilon_spent,
                    line.delta_spent,
                )
        assert observed == {s: tuple(v) for s, v in model.items() if v[0] is not None}
        for s, (eps_total, delta_total, eps_spent, delta_spent) in observed.items():
            assert 0.0 <= eps_spent <= eps_total and 0.0 <= delta_spent <= delta_total
            before = seen_spent.get(s, (0.0, 0.0))
            assert eps_spent >= before[0] and delta_spent >= before[1]
            seen_spent[s] = (eps_spent, delta_spent)
            true_eps, true_delta = exact.get(s, (Fraction(0), Fraction(0)))
            assert Fraction(eps_spent) >= true_eps and Fraction(delta_spent) >= true_delta


def _at_least(spent: float, cost: float, total: float | None) -> float:
    """The smallest float >= spent + cost (exactly), or the total when the sum fits it."""
    true = Fraction(spent) + Fraction(cost)
    value = float(true)
    if Fraction(value) < true:
        value = math.nextafter(value, math.inf)
    return total if total is not None and value > total else value


def test_budget_of_a_user_at_hand_equals_budget_by_name(store: Store) -> None:
    alice = scientist(store, epsilon=2.0)
    store.set_budget("alice", 1.0, dataset="patients", actor="owner")
    charge(store, alice, 0.25)
    assert store.budget_of(alice) == store.budget("alice")
    assert store.budget_of(alice).epsilon_spent == 0.25


def test_a_charge_returns_the_balance_after_it(store: Store) -> None:
    alice = scientist(store, epsilon=2.0)
    result = charge(store, alice, 0.5)
    assert result.budget == store.budget("alice")
    assert result.budget is not None
    assert result.budget.epsilon_remaining == 1.5
