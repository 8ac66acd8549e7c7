"""The client against a real node: uvicorn on a loopback port, a real ledger, real DP.

The node directory is built with the node's own Python API (settings, dataset registry, store),
as `rds node init` / `rds dataset add` / `rds user add` would. Every budget assertion compares
the ledger before and after, so the tests do not depend on each other's spending.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from requests.adapters import HTTPAdapter

import rds_kernel as rds
from rds_kernel.schema import load_schema

pytestmark = pytest.mark.server

ROWS = 2_000
MOCK_ROWS = 150


@dataclass
class Served:
    url: str
    tokens: dict[str, str]
    schema_file: Path

    def connect(self, user: str = "alice", **kwargs: Any) -> rds.Node:
        return rds.connect(self.url, token=self.tokens[user], **kwargs)


def _build_node(directory: Path) -> tuple[dict[str, str], Path]:
    from rds_kernel.demo.patients import write_demo_dataset
    from rds_kernel.node.service import NodeService
    from rds_kernel.node.settings import write_settings

    directory.mkdir(parents=True, exist_ok=True)
    service = NodeService(write_settings(directory, name="hospital_a"))
    try:
        service.store.create_all()
        data, schema = write_demo_dataset(directory / "source", "hospital_a", n=ROWS)
        service.datasets.add("patients", data, schema, mock_rows=MOCK_ROWS)
        tokens = {}
        for name, epsilon in (("alice", 10.0), ("bob", 0.3)):
            _user, tokens[name] = service.store.add_user(name, "scientist", actor="test")
            service.store.set_budget(name, epsilon, 1e-6, actor="test")
    finally:
        service.close()
    return tokens, schema


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A node directory served by uvicorn in a thread on an ephemeral port; always stopped."""
    import uvicorn

    from rds_kernel.node.api.app import create_app

    directory = tmp_path_factory.mktemp("node")
    tokens, schema_file = _build_node(directory)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(directory), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("the uvicorn server did not start")
            time.sleep(0.02)
        yield Served(f"http://127.0.0.1:{port}", tokens, schema_file)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def _query(patients: rds.RemoteDataset) -> rds.Query:
    return (
        patients.filter(rds.col("age") >= 50)
        .group_by("sex")
        .agg(rds.count(), rds.mean("cvd", bounds=(0, 1)))
    )


def test_connect_lists_datasets_schema_and_mock(served: Served) -> None:
    node = served.connect(name="north")
    assert node.name == "north"
    assert node.info["name"] == "hospital_a"
    assert node.info["user"] == {"name": "alice", "role": "scientist"}
    assert node.datasets.list() == ["patients"]
    patients = node.dataset("patients")
    assert patients.schema.columns == load_schema(served.schema_file).columns
    mock = patients.mock
    assert isinstance(mock, pd.DataFrame)
    assert len(mock) == MOCK_ROWS
    assert list(mock.columns) == patients.schema.names


def test_a_wrong_token_fails_at_connect(served: Served) -> None:
    with pytest.raises(rds.AuthenticationError) as info:
        rds.connect(served.url, token="rds_not-a-token")
    assert "not-a-token" not in str(info.value)


def test_unknown_dataset_is_not_found(served: Served) -> None:
    with pytest.raises(rds.NotFound):
        served.connect().dataset("visits")


def test_preview_spends_nothing(served: Served) -> None:
    node = served.connect()
    before = node.budget.get()
    preview = _query(node.dataset("patients")).preview(epsilon=0.5)
    assert 0 < preview.epsilon <= 0.5
    assert preview.summary["aggregate"].tolist()[:1] == ["count"]
    assert node.budget.get() == before


def test_release_spends_exactly_its_cost(served: Served) -> None:
    node = served.connect()
    q = _query(node.dataset("patients"))
    cost = q.preview(epsilon=0.5)
    before = node.budget.get()
    df = q.release(epsilon=0.5)
    after = node.budget.get()
    assert df.attrs["epsilon_spent"] == cost.epsilon
    assert df.attrs["mock"] is False and df.attrs["replayed"] is False
    assert after.epsilon_spent == pytest.approx(before.epsilon_spent + cost.epsilon, abs=1e-12)
    assert list(df.columns) == ["sex", "count", "mean_cvd"]
    assert sorted(df["sex"]) == ["F", "M"]
    assert set(df.attrs["accuracy"]) == {"count", "mean_cvd"}
    listed = node.releases()
    assert df.attrs["request_id"] in listed["request_id"].tolist()


def test_run_on_mock_spends_nothing_and_costs_the_same(served: Served) -> None:
    node = served.connect()
    q = _query(node.dataset("patients"))
    before = node.budget.get()
    df = q.run_on_mock(epsilon=0.5)
    assert node.budget.get() == before
    assert df.attrs["mock"] is True and df.attrs["request_id"] is None
    assert df.attrs["epsilon_spent"] == q.preview(epsilon=0.5).epsilon
    assert list(df.columns) == ["sex", "count", "mean_cvd"]


def test_retry_with_the_same_request_id_is_charged_once(served: Served) -> None:
    node = served.connect()
    q = _query(node.dataset("patients"))
    before = node.budget.get()
    first = q.release(epsilon=0.25, request_id="e2e-retry-1")
    again = q.release(epsilon=0.25, request_id="e2e-retry-1")
    after = node.budget.get()
    assert again.attrs["replayed"] is True
    pd.testing.assert_frame_equal(first, again, check_like=False)
    cost = first.attrs["epsilon_spent"]
    assert after.epsilon_spent == pytest.approx(before.epsilon_spent + cost, abs=1e-12)


class _LoseFirstRelease(HTTPAdapter):
    """Delivers the first release to the node, then loses the node's answer on the way back."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        response = super().send(request, *args, **kwargs)
        if request.method == "POST" and request.path_url == "/v1/queries" and not self.lost:
            self.lost += 1
            raise requests.exceptions.ConnectionError("connection reset by peer")
        return response


def test_a_lost_answer_is_retried_without_a_second_charge(served: Served) -> None:
    """The node charged the first try; the client's retry (same request_id) is a replay."""
    session = requests.Session()
    losing = _LoseFirstRelease()
    session.mount(served.url, losing)
    node = served.connect(session=session)
    node._transport._sleep = lambda _s: None
    before = node.budget.get()
    df = _query(node.dataset("patients")).release(epsilon=0.25)
    after = node.budget.get()
    assert losing.lost == 1
    assert df.attrs["replayed"] is True
    cost = df.attrs["epsilon_spent"]
    assert after.epsilon_spent == pytest.approx(before.epsilon_spent + cost, abs=1e-12)


def test_reusing_a_request_id_for_another_query_is_a_conflict(served: Served) -> None:
    patients = served.connect().dataset("patients")
    patients.agg(rds.count()).release(epsilon=0.1, request_id="e2e-conflict")
    with pytest.raises(rds.Conflict):
        patients.agg(rds.count()).release(epsilon=0.2, request_id="e2e-conflict")


def test_budget_exceeded_surfaces_as_the_same_class(served: Served) -> None:
    node = served.connect("bob")
    before = node.budget.get()
    with pytest.raises(rds.BudgetExceeded) as info:
        _query(node.dataset("patients")).release(epsilon=1.0)
    assert "left" in info.value.message
    assert node.budget.get() == before


def test_an_invalid_query_is_a_spec_error_from_the_node(served: Served) -> None:
    patients = served.connect().dataset("patients")
    with pytest.raises(rds.SpecError, match="weight"):
        patients.agg(rds.mean("weight", bounds=(0, 200))).preview(epsilon=0.5)


def test_every_resource_reads_the_real_nodes_answers(served: Served) -> None:
    """The typed answers of a real node pass the client's checks: budget, requests, jobs."""
    node = served.connect(user="bob")
    assert node.datasets.list() == ["patients"]
    budget = node.budget.get()
    assert isinstance(budget, rds.Budget) and budget.user == "bob"
    asked = node.budget.request(epsilon=0.5, reason="a second model of the plan")
    assert (asked.user, asked.status, asked.epsilon) == ("bob", "pending", 0.5)
    assert [r.id for r in node.budget.requests()] == [asked.id]
    assert node.budget() == node.budget.get()  # older notebooks call it
    assert node.jobs.list() == []
    with pytest.raises(rds.NotFound):
        node.jobs.get("0123456789abcdef")
