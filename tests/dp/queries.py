"""Shared schemas, frames and a one-call release helper for the DP layer tests."""

from __future__ import annotations

from typing import Any

import polars as pl

from rds_kernel.dp import PreparedQuery, ReleaseResult, execute, prepare
from rds_kernel.schema import Schema
from rds_kernel.spec import Query, validate

SCHEMA = Schema.from_dict(
    {
        "name": "patients",
        "columns": {
            "age": {"type": "int", "bounds": [0, 120]},
            "income": {"type": "float", "bounds": [0.0, 500000.0]},
            "bmi": {"type": "float", "bounds": [10.0, 70.0], "nullable": True},
            "sex": {"type": "category", "categories": ["F", "M", "X"]},
            "smoker": {"type": "bool"},
            "seen": {"type": "date", "bounds": ["2019-01-01", "2024-12-31"]},
        },
    }
)


def frame(rows: int, **columns: Any) -> pl.LazyFrame:
    """A frame with ``SCHEMA``'s columns; given columns override the defaults."""
    base: dict[str, Any] = {
        "age": [40] * rows,
        "income": [30000.0] * rows,
        "bmi": [25.0] * rows,
        "sex": ["F"] * rows,
        "smoker": [False] * rows,
        "seen": pl.Series([None] * rows, dtype=pl.Date).fill_null(pl.date(2020, 1, 1)),
    }
    base.update(columns)
    return pl.DataFrame(base).lazy()


def prepared(query: Query, epsilon: float, delta: float = 0.0, schema: Schema = SCHEMA) -> Any:
    return prepare(validate(query.spec(epsilon=epsilon, delta=delta), schema), schema)


def release(
    query: Query,
    data: pl.LazyFrame,
    epsilon: float,
    delta: float = 0.0,
    schema: Schema = SCHEMA,
) -> tuple[PreparedQuery, ReleaseResult]:
    p = prepared(query, epsilon, delta, schema)
    return p, execute(p, data)


def column(result: ReleaseResult, name: str) -> list[Any]:
    i = result.columns.index(name)
    return [row[i] for row in result.rows]
