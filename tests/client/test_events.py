"""Budget listeners: the client reports your budget after releases, previews and budget()."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import rds_kernel as rds
from rds_kernel.client import Budget, add_budget_listener, remove_budget_listener
from tests.client.fakes import BUDGET, PREVIEW, FakeNode, Reply, release_answer


@pytest.fixture
def heard() -> Iterator[list[tuple[str, Budget]]]:
    events: list[tuple[str, Budget]] = []
    remove = add_budget_listener(lambda node, budget: events.append((node, budget)))
    yield events
    remove()


def test_budget_preview_and_release_are_heard(
    node: rds.Node, fake: FakeNode, heard: list[tuple[str, Budget]]
) -> None:
    expected = Budget.model_validate(BUDGET)
    node.budget.get()
    q = node.dataset("patients").agg(rds.count())
    fake.on("POST", "/v1/queries/preview", Reply(body=PREVIEW))
    q.preview(epsilon=0.5)
    fake.on("POST", "/v1/queries", Reply(body=release_answer("r-1")))
    q.release(epsilon=0.5)
    assert heard == [(node.name, expected)] * 3


def test_a_refused_release_is_not_heard(
    node: rds.Node, fake: FakeNode, heard: list[tuple[str, Budget]]
) -> None:
    refusal = {"error": {"code": "budget_exceeded", "message": "needs more", "detail": {}}}
    fake.on("POST", "/v1/queries", Reply(status=403, body=refusal))
    with pytest.raises(rds.BudgetExceeded):
        node.dataset("patients").agg(rds.count()).release(epsilon=0.5)
    assert heard == []


def test_a_failing_listener_warns_and_the_release_still_returns(
    node: rds.Node, fake: FakeNode
) -> None:
    def broken(_node: str, _budget: Budget) -> None:
        raise KeyError("oops")

    remove = add_budget_listener(broken)
    try:
        fake.on("POST", "/v1/queries", Reply(body=release_answer("r-2")))
        with pytest.warns(RuntimeWarning, match="budget listener .* failed"):
            df = node.dataset("patients").agg(rds.count()).release(epsilon=0.5)
        assert df.attrs["request_id"] == "r-2"
    finally:
        remove()


def test_removed_listeners_are_not_called(node: rds.Node) -> None:
    events: list[str] = []

    def listener(name: str, _budget: Budget) -> None:
        events.append(name)

    add_budget_listener(listener)
    remove_budget_listener(listener)
    remove_budget_listener(listener)  # removing twice is harmless
    node.budget.get()
    assert events == []
