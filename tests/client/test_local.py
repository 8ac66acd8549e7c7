"""``rds.LocalDataset``: a frame you hold, queried through the node's DP layer (for the course)."""

from __future__ import annotations

import pandas as pd
import polars as pl
import pytest

import rds_kernel as rds
from rds_kernel.errors import SchemaError, SpecError

SCHEMA = {
    "columns": {
        "name": {"type": "string"},
        "cvd": {"type": "int", "bounds": [0, 1]},
        "age": {"type": "int", "bounds": [18, 90]},
    }
}


@pytest.fixture
def staff() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "name": [f"e{i}" for i in range(200)],
            "cvd": [i % 4 == 0 for i in range(200)],  # 50 of 200; bools convert to 0/1
            "age": [18 + i % 60 for i in range(200)],
        }
    )


def test_a_release_is_shaped_like_a_nodes_answer(staff: pd.DataFrame) -> None:
    data = rds.LocalDataset(staff, SCHEMA, name="staff")
    q = data.filter(rds.col("cvd") == 1).agg(rds.count(), rds.mean("age"))
    answer = q.release(epsilon=50.0)
    assert list(answer.columns) == ["count", "mean_age"]
    assert abs(answer["count"].item() - 50) <= 3
    assert answer.attrs["node"] == "local"
    assert answer.attrs["dataset"] == "staff"
    assert answer.attrs["epsilon_spent"] == pytest.approx(50.0)
    assert answer.attrs["mock"] is False
    assert set(answer.attrs["accuracy"]) == {"count", "mean_age"}


def test_preview_gives_the_mechanism_scale_and_cost(staff: pd.DataFrame) -> None:
    data = rds.LocalDataset(pl.from_pandas(staff), SCHEMA)
    preview = data.agg(rds.count()).preview(epsilon=1.0)
    assert isinstance(preview, rds.Preview)
    row = preview.summary.iloc[0]
    assert (row["mechanism"], row["scale"]) == ("Integer Laplace", 1.0)
    assert (preview.epsilon, preview.delta) == (1.0, 0.0)
    assert preview.budget is None and preview.affordable


def test_each_release_draws_fresh_noise_from_one_prepared_query(staff: pd.DataFrame) -> None:
    """Repeating a query reuses its measurement (fast), but never its noise."""
    data = rds.LocalDataset(staff, SCHEMA)
    q = data.agg(rds.count())
    answers = {q.release(epsilon=0.1)["count"].item() for _ in range(20)}
    assert len(answers) > 1
    assert len(data._prepared) == 1
    assert q.run_on_mock(epsilon=0.1).attrs["node"] == "local"


def test_the_frame_is_checked_against_the_schema(staff: pd.DataFrame) -> None:
    with pytest.raises(SchemaError, match=r"'age'.*missing"):
        rds.LocalDataset(staff.drop(columns="age"), SCHEMA, name="staff")


def test_a_query_for_another_dataset_is_refused(staff: pd.DataFrame) -> None:
    data = rds.LocalDataset(staff, SCHEMA, name="staff")
    with pytest.raises(SpecError, match="not 'staff'"):
        data.release(rds.Query("other").agg(rds.count()).spec(epsilon=1.0))
