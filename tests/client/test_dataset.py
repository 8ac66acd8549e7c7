"""A dataset handle: its schema, its cached mock data, and queries bound to it."""

from __future__ import annotations

import re

import pandas as pd
import polars as pl
import pytest

import rds_kernel as rds
from rds_kernel.mock import generate_mock, mock_to_parquet_bytes
from rds_kernel.schema import Schema
from tests.client.fakes import SCHEMA, FakeNode, Reply

MOCK_PATH = "/v1/datasets/patients/mock"


@pytest.fixture
def patients(node: rds.Node, fake: FakeNode) -> rds.RemoteDataset:
    mock = generate_mock(Schema.from_dict(SCHEMA), n=500, seed=1)
    fake.on("GET", MOCK_PATH, Reply(200, content=mock_to_parquet_bytes(mock)))
    return node.dataset("patients")


def test_schema_is_the_nodes_schema(patients: rds.RemoteDataset) -> None:
    assert patients.schema == Schema.from_dict(SCHEMA)
    assert patients.schema.column("age").bounds == (18, 95)
    assert repr(patients) == "<RemoteDataset 'patients' on hospital_a: 3 columns>"


def test_unknown_dataset_is_not_found(node: rds.Node) -> None:
    with pytest.raises(rds.NotFound):
        node.dataset("nope")


def test_mock_is_downloaded_once_as_parquet(patients: rds.RemoteDataset, fake: FakeNode) -> None:
    first = patients.mock
    second = patients.mock
    frame = patients.mock_frame()
    assert len(fake.calls("GET", MOCK_PATH)) == 1
    assert fake.calls("GET", MOCK_PATH)[0].path_url == f"{MOCK_PATH}?format=parquet"
    assert isinstance(first, pd.DataFrame) and isinstance(frame, pl.DataFrame)
    assert list(first.columns) == ["age", "sex", "cvd"] and len(first) == 500
    assert frame.schema == {"age": pl.Int64, "sex": pl.String, "cvd": pl.Int64}
    first.loc[0, "age"] = -1  # a scientist's edit does not leak into the cache
    assert second.loc[0, "age"] != -1 and patients.mock.loc[0, "age"] != -1


def test_mock_that_is_not_parquet_is_node_unavailable(node: rds.Node, fake: FakeNode) -> None:
    fake.on("GET", MOCK_PATH, Reply(200, content=b"<html>"))
    with pytest.raises(rds.NodeUnavailable, match="not a Parquet"):
        node.dataset("patients").mock_frame()


def test_builders_return_queries_bound_to_the_dataset(patients: rds.RemoteDataset) -> None:
    """filter / with_columns / group_by / agg / histogram start a query on this dataset."""
    queries = [
        patients.filter(rds.col("age") >= 50),
        patients.with_columns(old=rds.col("age") >= 65),
        patients.group_by("sex"),
        patients.agg(rds.count()),
        patients.histogram("age", [40, 65]),
        patients.query(),
    ]
    for q in queries:
        assert isinstance(q, rds.Query)
        assert q.dataset == "patients" and q.runner is patients
    spec = patients.histogram("age", [40, 65]).spec(epsilon=1.0).to_dict()
    assert spec["group_by"] == {"by": ["age_bin"], "keys": "public"}
    assert spec["with_columns"] == [
        {"name": "age_bin", "expr": {"op": "bin", "args": [{"col": "age"}], "edges": [40, 65]}}
    ]


def test_a_spec_for_another_dataset_is_refused(patients: rds.RemoteDataset) -> None:
    other = rds.Query("visits").agg(rds.count()).spec(epsilon=1.0)
    with pytest.raises(rds.SpecError, match=re.escape("node.dataset('visits')")):
        patients.release(other)


def test_unbound_query_cannot_run() -> None:
    with pytest.raises(rds.SpecError, match="not bound to a dataset"):
        rds.Query("patients").agg(rds.count()).release(epsilon=0.5)


def test_run_on_mock_is_local_and_shaped_like_a_release(
    patients: rds.RemoteDataset, fake: FakeNode
) -> None:
    """The same spec, compiled by the same DP layer, on the mock data; no query is sent."""
    from rds_kernel import dp
    from rds_kernel.spec import validate

    q = patients.group_by("sex").agg(rds.count(), rds.mean("cvd", bounds=(0, 1)))
    df = q.run_on_mock(epsilon=0.5)
    exact = dp.prepare(validate(q.spec(0.5), patients.schema), patients.schema).cost
    assert [r.path_url for r in fake.seen if r.method == "POST"] == []
    assert list(df.columns) == ["sex", "count", "mean_cvd"]
    assert sorted(df["sex"]) == ["F", "M"]
    assert df.attrs["mock"] is True
    assert (df.attrs["epsilon_spent"], df.attrs["delta_spent"]) == exact
    assert df.attrs["request_id"] is None and df.attrs["replayed"] is False
    assert set(df.attrs["accuracy"]) == {"count", "mean_cvd"}
    assert [s["aggregate"] for s in df.attrs["summary"]][:1] == ["count"]


def test_run_on_mock_checks_the_spec_locally(patients: rds.RemoteDataset, fake: FakeNode) -> None:
    with pytest.raises(rds.SpecError, match="weight"):
        patients.agg(rds.mean("weight", bounds=(0, 200))).run_on_mock(epsilon=0.5)
    assert [r.path_url for r in fake.seen if r.method == "POST"] == []
