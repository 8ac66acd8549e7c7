"""What the client returns: result DataFrames and their attrs, Preview, Budget, releases."""

from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError

import rds_kernel as rds
from rds_kernel import wire
from tests.client.fakes import BUDGET, PREVIEW, FakeNode, Reply, release_answer


def _query(node: rds.Node) -> rds.Query:
    return node.dataset("patients").group_by("sex").agg(rds.count(), rds.mean("cvd", (0, 1)))


def test_release_is_a_dataframe_of_group_keys_and_aggregates(
    node: rds.Node, fake: FakeNode
) -> None:
    fake.on("POST", "/v1/queries", Reply(200, release_answer("rid-1")))
    df = _query(node).release(epsilon=0.5, request_id="rid-1")
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["sex", "count", "mean_cvd"]
    assert df["sex"].tolist() == ["F", "M"]
    assert df["count"].tolist() == [1203, 1187]
    assert df.attrs == {
        "node": "hospital_a",
        "dataset": "patients",
        "epsilon_spent": 0.5,
        "delta_spent": 0.0,
        "accuracy": {"count": 12.0, "mean_cvd": 0.05},
        "summary": PREVIEW["summary"],
        "request_id": "rid-1",
        "replayed": False,
        "mock": False,
        "created_at": "2025-01-02T03:04:05+00:00",
    }


def test_release_sends_the_spec_of_the_query(node: rds.Node, fake: FakeNode) -> None:
    fake.on("POST", "/v1/queries", Reply(200, release_answer("rid-1")))
    q = _query(node)
    q.release(epsilon=0.5, delta=1e-7, request_id="rid-1")
    (body,) = fake.bodies("POST", "/v1/queries")
    assert body == {"request_id": "rid-1", "spec": q.spec(0.5, 1e-7).to_dict()}


def test_replayed_release_is_marked(node: rds.Node, fake: FakeNode) -> None:
    fake.on("POST", "/v1/queries", Reply(200, release_answer("rid-1", replayed=True)))
    assert _query(node).release(epsilon=0.5, request_id="rid-1").attrs["replayed"] is True


def test_node_name_given_at_connect_labels_results(fake: FakeNode) -> None:
    from tests.client.fakes import TOKEN, URL, session_with

    named = rds.connect(URL, token=TOKEN, name="north", session=session_with(fake))
    fake.on("POST", "/v1/queries", Reply(200, release_answer("rid-1")))
    assert named.name == "north"
    assert named.info["name"] == "hospital_a"
    assert _query(named).release(epsilon=0.5).attrs["node"] == "north"


def test_preview_has_cost_summary_and_budget(node: rds.Node, fake: FakeNode) -> None:
    fake.on("POST", "/v1/queries/preview", Reply(200, PREVIEW))
    p = _query(node).preview(epsilon=0.5)
    assert isinstance(p, rds.Preview)
    assert (p.epsilon, p.delta) == (0.5, 0.0)
    assert (p.requested_epsilon, p.requested_delta) == (0.5, 0.0)
    assert list(p.summary.columns) == [
        "aggregate",
        "statistic",
        "mechanism",
        "scale",
        "accuracy",
        "threshold",
    ]
    assert p.summary["aggregate"].tolist() == ["count", "mean_cvd"]
    assert p.budget.epsilon_remaining == 4.0
    assert p.affordable


def test_preview_reads_well(node: rds.Node, fake: FakeNode) -> None:
    fake.on("POST", "/v1/queries/preview", Reply(200, PREVIEW))
    p = _query(node).preview(epsilon=0.5)
    text = repr(p)  # the card, as text
    assert text.splitlines()[0] == (
        "Preview of 'patients' on hospital_a: would cost ε=0.5; ε 4 of 5 left. Nothing was spent."
    )
    assert "mean_cvd" in text and "geometric" in text and "± accuracy (95 %)" in text
    html = p._repr_html_()  # the same card as the %%rds magic shows
    assert html.startswith("<div><p><b>Preview of 'patients' on hospital_a: would cost ε=0.5")
    assert "<table" in html and "mean_cvd" in html and "<th>± accuracy (95 %)</th>" in html


def test_preview_warns_when_over_budget(node: rds.Node, fake: FakeNode) -> None:
    poor = {**BUDGET, "epsilon_remaining": 0.1}
    fake.on("POST", "/v1/queries/preview", Reply(200, {**PREVIEW, "budget": poor}))
    p = _query(node).preview(epsilon=0.5)
    assert not p.affordable
    assert "More than your remaining budget: the release would be refused" in repr(p)


def test_budget_round_trips_the_wire_form(node: rds.Node) -> None:
    """rds.Budget is the node's own record (rds_kernel.wire.Budget): the same JSON back."""
    b = node.budget.get()
    assert isinstance(b, rds.Budget) and rds.Budget is wire.Budget
    assert b.epsilon_remaining == 4.0 and b.delta_total == 1e-5
    assert b.per_dataset["patients"].epsilon_remaining == 1.0
    assert b.to_dict() == BUDGET
    assert str(b) == "alice: ε 4 left of 5 (spent 1), δ 1e-05 left of 1e-05"
    with pytest.raises(ValidationError, match="frozen"):
        b.epsilon_total = 10  # type: ignore[misc]


def test_calling_the_budget_resource_is_get(node: rds.Node, fake: FakeNode) -> None:
    """`node.budget()` (older notebooks) is `node.budget.get()`; the resource itself asks
    nothing until a method is called."""
    before = len(fake.seen)
    repr((node.budget, node.jobs, node.datasets, node.info))
    assert len(fake.seen) == before
    assert node.budget() == node.budget.get()
    assert len(fake.calls("GET", "/v1/budget")) == 2


def test_releases_is_a_dataframe(node: rds.Node, fake: FakeNode) -> None:
    row = {
        "request_id": "rid-1",
        "dataset": "patients",
        "epsilon": 0.5,
        "delta": 0.0,
        "created_at": "2025-01-02T03:04:05.123456+00:00",
        "spec": {"dataset": "patients"},
    }
    fake.on("GET", "/v1/releases", Reply(200, {"releases": [row]}))
    df = node.releases(limit=5)
    assert fake.seen[-1].path_url == "/v1/releases?limit=5"
    assert df["request_id"].tolist() == ["rid-1"]
    assert df["created_at"].iloc[0] == pd.Timestamp("2025-01-02T03:04:05.123456", tz="UTC")


def test_no_releases_is_an_empty_frame_with_the_columns(node: rds.Node, fake: FakeNode) -> None:
    fake.on("GET", "/v1/releases", Reply(200, {"releases": []}))
    df = node.releases()
    assert df.empty
    assert list(df.columns) == ["request_id", "dataset", "epsilon", "delta", "created_at", "spec"]


def test_datasets_lists_names(node: rds.Node, fake: FakeNode) -> None:
    listing = {
        "datasets": [
            {"name": "patients", "description": "", "columns": 3, "public_row_count": None},
            {"name": "visits", "description": "", "columns": 7, "public_row_count": 100},
        ]
    }
    fake.on("GET", "/v1/datasets", Reply(200, listing))
    assert node.datasets.list() == ["patients", "visits"]
