"""Spec expressions compile to polars with the spec's meaning, including the rewrites of
operations OpenDP does not accept directly (is_in, between, neg, abs, dates, null tests)."""

from __future__ import annotations

from datetime import date
from typing import Any

import polars as pl
import pytest

from rds_kernel.dp.expr import compile_expr
from rds_kernel.spec import Expr, Query, col, count, validate
from tests.dp.queries import SCHEMA

DATA = pl.DataFrame(
    {
        "age": [5, 17, 18, 40, 64, 65, 90, None],
        "income": [-3.5, 0.0, 1.5, 2.0, 1e6, 7.0, None, 3.0],
        "bmi": [None, 20.0, 30.0, None, 25.0, 26.0, 27.0, 28.0],
        "sex": ["F", "M", "X", "F", None, "M", "F", "X"],
        "smoker": [True, False, True, None, False, True, False, True],
        "seen": [
            date(2019, 5, 1),
            date(2020, 1, 1),
            date(2021, 6, 1),
            None,
            date(2022, 1, 1),
            date(2023, 1, 1),
            date(2024, 1, 1),
            date(2019, 1, 1),
        ],
    }
)


def run(e: Expr) -> list[Any]:
    """Compile ``e`` against the test schema and evaluate it with plain polars."""
    columns = validate(Query("patients").agg(count()).spec(epsilon=1.0), SCHEMA).columns
    return DATA.select(compile_expr(e.to_dict(), columns).alias("out"))["out"].to_list()


CASES: list[tuple[str, Expr, pl.Expr]] = [
    ("is_in", col("sex").is_in(["F", "X"]), pl.col("sex").is_in(["F", "X"])),
    (
        "is_in null",
        col("sex").is_in(["F", None]),
        pl.col("sex").is_in(["F"]) | pl.col("sex").is_null(),
    ),
    ("between", col("age").between(18, 64), pl.col("age").is_between(18, 64)),
    ("neg", -col("income"), -pl.col("income")),
    ("abs int", abs(col("age") - 40), (pl.col("age") - 40).abs()),
    ("abs float", abs(col("income")), pl.col("income").abs()),
    ("date", col("seen") >= "2021-06-01", pl.col("seen") >= date(2021, 6, 1)),
    (
        "date between",
        col("seen").between("2020-01-01", "2022-01-01"),
        pl.col("seen").is_between(date(2020, 1, 1), date(2022, 1, 1)),
    ),
    ("eq null", col("bmi") == None, pl.col("bmi").is_null()),  # noqa: E711
    ("ne null", col("bmi") != None, pl.col("bmi").is_not_null()),  # noqa: E711
    (
        "and/or/not",
        ((col("age") > 18) & ~col("smoker")) | (col("sex") == "X"),
        ((pl.col("age") > 18) & ~pl.col("smoker")) | (pl.col("sex") == "X"),
    ),
    (
        "arithmetic",
        (col("age") * 2 + 1) / 4 - col("income"),
        (pl.col("age") * 2 + 1) / 4 - pl.col("income"),
    ),
    ("clip", col("income").clip(0, 10), pl.col("income").clip(0, 10)),
    ("fill_null", col("bmi").fill_null(22.5), pl.col("bmi").fill_null(22.5)),
]


@pytest.mark.parametrize(("name", "spec", "reference"), CASES, ids=[c[0] for c in CASES])
def test_compiled_expression_means_what_the_spec_says(
    name: str, spec: Expr, reference: pl.Expr
) -> None:
    assert run(spec) == DATA.select(reference.alias("out"))["out"].to_list()


def test_bin_uses_left_closed_intervals_labelled_like_the_spec() -> None:
    """bin([18, 65]) gives "<18", "[18, 65)", ">=65" (and null for null), as spec.bin_labels."""
    assert run(col("age").bin([18, 65])) == [
        "<18",
        "<18",
        "[18, 65)",
        "[18, 65)",
        "[18, 65)",
        ">=65",
        ">=65",
        None,
    ]
