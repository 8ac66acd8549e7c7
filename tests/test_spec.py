"""The query spec: the fluent builder, the strict wire parser, and validation against a schema."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest

import rds_kernel.spec as rs
from rds_kernel.errors import SpecError
from rds_kernel.schema import Schema
from rds_kernel.spec import Query, QuerySpec, col, count, mean, median, quantile, validate

SCHEMA = Schema.from_dict(
    {
        "name": "patients",
        "columns": {
            "age": {"type": "int", "bounds": [18, 95]},
            "sex": {"type": "category", "categories": ["F", "M"]},
            "region": {"type": "category", "categories": ["north", "south"]},
            "bmi": {"type": "float", "bounds": [15.0, 50.0], "nullable": True},
            "smoker": {"type": "bool"},
            "income": {"type": "float"},
            "note": {"type": "string"},
            "seen": {"type": "date", "bounds": ["2019-01-01", "2024-12-31"]},
        },
    }
)


def base() -> dict[str, Any]:
    return Query("patients").agg(count()).spec(epsilon=0.5).to_dict()


def test_builder_produces_the_wire_form_and_it_round_trips() -> None:
    """The fluent API and the JSON form are two views of one spec; hashing is canonical."""
    q = (
        Query("patients")
        .with_columns(band=col("age").bin([40, 65]))
        .filter((col("age") >= 50) & ~(col("sex") == "M"), col("region").is_in(["north"]))
        .group_by("band", "smoker")
        .agg(count(), mean("bmi", fill_null=25.0), median("age"))
    )
    spec = q.spec(epsilon=0.5)
    again = QuerySpec.from_json(spec.to_json())
    assert again == spec
    assert again.hash() == spec.hash()
    assert spec.filter is not None and spec.filter["op"] == "and"
    assert [a.alias for a in spec.aggregates] == ["count", "mean_bmi", "median_age"]
    v = validate(spec, SCHEMA)
    assert v.keys == {"band": ("<40", "[40, 65)", ">=65"), "smoker": (False, True)}
    med = v.aggregates[2]
    assert med.candidates is not None and med.candidates[0] == 18 and med.candidates[-1] == 95


def test_expressions_refuse_python_truthiness() -> None:
    """`a and b` would silently drop a condition; the builder refuses it."""
    with pytest.raises(TypeError, match="combine conditions with &"):
        bool(col("age") > 3)


def test_histogram_is_a_binned_public_key_group_by() -> None:
    spec = Query("patients").histogram("age", [30, 60]).spec(epsilon=1.0)
    v = validate(spec, SCHEMA)
    assert v.group_by == ("age_bin",)
    assert v.keys == {"age_bin": ("<30", "[30, 60)", ">=60")}


def test_interval_arithmetic_gives_derived_bounds() -> None:
    spec = Query("patients").with_columns(x=col("age") * 2 - 10).agg(rs.sum("x")).spec(1.0)
    v = validate(spec, SCHEMA)
    assert v.columns["x"].bounds == (26, 180)
    assert v.aggregates[0].bounds == (26.0, 180.0)


def test_filter_may_use_a_derived_column() -> None:
    spec = Query("patients").with_columns(old=col("age") > 70).filter(col("old")).spec(1.0)
    validate(spec, SCHEMA)


def mutate(**changes: Any) -> dict[str, Any]:
    raw = base()
    raw.update(changes)
    return raw


def deep(n: int) -> dict[str, Any]:
    node: dict[str, Any] = {"col": "age"}
    for _ in range(n):
        node = {"op": "neg", "args": [node]}
    return {"op": "gt", "args": [node, {"lit": 0}]}


PARSE_ERRORS = [
    (mutate(epsilon=0), "greater than 0"),
    (mutate(epsilon=-1.0), "greater than 0"),
    (mutate(epsilon="1"), "must be a number"),
    (mutate(epsilon=True), "must be a number"),
    (mutate(epsilon=float("inf")), "finite"),
    (mutate(epsilon=1e9), "protects nothing"),
    (mutate(delta=1.0), "delta must be in"),
    (mutate(version=2), "not supported"),
    (mutate(aggregates=[]), "at least one aggregate"),
    (mutate(aggregates=[{"op": "max", "column": "age"}]), "not supported"),
    (mutate(aggregates=[{"op": "sum"}]), "needs a column"),
    (mutate(aggregates=[{"op": "mean", "column": "age", "bounds": [5, 1]}]), "below the upper"),
    (mutate(aggregates=[{"op": "quantile", "column": "age"}]), "alpha between 0 and 1"),
    (mutate(aggregates=[{"op": "count", "code": "import os"}]), "unknown field"),
    (mutate(pickle="gASV"), "unknown field"),
    (mutate(filter={"op": "eval", "args": []}), "unknown operation"),
    (mutate(filter={"col": "age", "lit": 1}), "only the key 'col'"),
    (mutate(filter={"op": "gt", "args": [{"col": "age"}]}), "takes 2 argument"),
    (mutate(filter={"op": "and", "args": [{"col": "smoker"}]}), "at least 2"),
    (mutate(filter={"op": "clip", "args": [{"col": "age"}], "low": 5, "high": 1}), "low < high"),
    (mutate(filter={"op": "is_in", "args": [{"col": "age"}], "values": []}), "1 to"),
    (mutate(filter={"op": "bin", "args": [{"col": "age"}], "edges": [3, 2]}), "increasing"),
    (mutate(filter={"op": "gt", "args": [{"col": "age"}, {"lit": [1]}]}), "must be a number"),
    (mutate(filter=deep(40)), "nest deeper"),
    (mutate(group_by={"by": []}), "1 to 4"),
    (mutate(group_by={"by": ["sex"], "keys": "some"}), "'public', 'unknown'"),
    (mutate(group_by={"by": ["sex"], "keys": {"age": [1]}}), "not grouped by"),
    (mutate(with_columns=[{"name": "x"}]), "exactly 'name' and 'expr'"),
    ([1, 2], "JSON object"),
]


@pytest.mark.parametrize(("raw", "message"), PARSE_ERRORS)
def test_parser_rejects_malformed_specs_with_an_actionable_message(raw: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        QuerySpec.from_dict(raw)


def test_nan_and_oversized_json_are_refused_before_parsing() -> None:
    text = json.dumps(base()).replace("0.5", "NaN")
    with pytest.raises(SpecError, match="NaN is not allowed"):
        QuerySpec.from_json(text)
    huge = json.dumps(
        mutate(filter={"op": "is_in", "args": [{"col": "note"}], "values": ["x" * 200] * 400})
    )
    with pytest.raises(SpecError, match="limit is"):
        QuerySpec.from_json(huge)


def test_too_many_nodes_is_refused() -> None:
    wide = {
        "op": "or",
        "args": [{"op": "gt", "args": [{"col": "age"}, {"lit": i}]} for i in range(400)],
    }
    with pytest.raises(SpecError, match="expression nodes"):
        QuerySpec.from_dict(mutate(filter=wide))


VALIDATION_ERRORS = [
    (Query("patients").filter(col("nope") > 1), "unknown column 'nope'"),
    (Query("patients").filter(col("age") > "old"), "cannot be compared with a int"),
    (Query("patients").filter(col("sex") == "X"), "not a category"),
    (Query("patients").filter(col("seen") > "yesterday"), "not a date written YYYY-MM-DD"),
    (Query("patients").filter(col("age") + 1), "must be a condition"),
    (Query("patients").filter(col("age") & col("smoker")), "combines conditions"),
    (Query("patients").agg(rs.sum("income")), "no public bounds"),
    (Query("patients").agg(mean("sex")), "needs a number column"),
    (Query("patients").agg(mean("bmi")), "may contain nulls"),
    (Query("patients").group_by("age").agg(count()), "has no public keys"),
    (Query("patients").group_by("sex", keys="unknown").agg(count()), "needs delta > 0"),
    (Query("patients").group_by("sex", keys={"sex": ["F", "X"]}), "not a category"),
    (Query("patients").with_columns(age=col("age") + 1), "already exists"),
    (Query("patients").agg(count(), count()), "used twice"),
    (Query("patients").group_by("sex").agg(count(alias="sex")), "used twice"),
    (Query("patients").agg(quantile("income", 0.5)), "no public bounds"),
    (Query("other").agg(count()), "not 'patients'"),
]


@pytest.mark.parametrize(("query", "message"), VALIDATION_ERRORS)
def test_validation_rejects_what_does_not_fit_the_schema(query: Query, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        validate(query.spec(epsilon=1.0), SCHEMA)


def test_unknown_keys_are_allowed_with_delta() -> None:
    spec = Query("patients").group_by("note", keys="unknown").agg(count()).spec(1.0, 1e-6)
    assert validate(spec, SCHEMA).keys is None


def test_group_key_product_is_capped() -> None:
    edges = list(range(0, 200))
    q = Query("patients").with_columns(a=col("age").bin(edges), b=col("bmi").bin(edges))
    with pytest.raises(SpecError, match="key combinations"):
        validate(q.group_by("a", "b").agg(count()).spec(1.0), SCHEMA)


def test_quantile_candidates_from_bounds_or_given() -> None:
    spec = Query("patients").agg(quantile("bmi", 0.9, fill_null=20.0)).spec(1.0)
    cands = validate(spec, SCHEMA).aggregates[0].candidates
    assert cands is not None and len(cands) == 101 and cands[0] == 15.0 and cands[-1] == 50.0
    spec = Query("patients").agg(quantile("income", 0.5, [0, 10, 20])).spec(1.0)
    assert validate(spec, SCHEMA).aggregates[0].candidates == (0, 10, 20)


def test_parsing_never_mutates_its_input() -> None:
    raw = base()
    before = copy.deepcopy(raw)
    QuerySpec.from_dict(raw)
    assert raw == before


def test_public_api_is_pinned() -> None:
    assert sorted(rs.__all__) == sorted(
        [
            "AGGREGATE_OPS",
            "Aggregate",
            "ColumnInfo",
            "Expr",
            "Query",
            "QueryRunner",
            "QuerySpec",
            "ResolvedAggregate",
            "ValidatedQuery",
            "bin_labels",
            "col",
            "count",
            "expr_info",
            "lit",
            "MAX_BOUND",
            "MAX_EPSILON",
            "MAX_GROUPS",
            "MIN_EPSILON",
            "MIN_WIDTH",
            "mean",
            "median",
            "number",
            "quantile",
            "sum",
            "validate",
            "variance",
        ]
    )


# --------------------------------------------------------------------------- typed literals


def keys_of(column: str, keys: list[Any]) -> tuple[Any, ...]:
    spec = Query("patients").group_by(column, keys={column: keys}).agg(count()).spec(1.0)
    v = validate(spec, SCHEMA)
    assert v.keys is not None
    return v.keys[column]


def test_validated_keys_carry_typed_values() -> None:
    """Keys are parsed against the column type: ints, floats without -0.0, dates as dates, so
    the DP layer never guesses a type (and two spellings of one key cannot both reach it)."""
    from datetime import date

    assert keys_of("age", [30.0, 40]) == (30, 40)
    assert all(type(k) is int for k in keys_of("age", [30.0, 40]))
    assert keys_of("bmi", [-0.0, 1]) == (0.0, 1.0)
    assert math.copysign(1.0, keys_of("bmi", [-0.0])[0]) == 1.0
    assert keys_of("seen", ["2020-01-31"]) == (date(2020, 1, 31),)
    assert keys_of("smoker", [True]) == (True,)
    assert keys_of("sex", ["M", "F"]) == ("M", "F")


KEY_ERRORS = [
    ("age", [12345.0, 12345.4], "12345.4 is not a whole number"),
    ("age", [12345, 12345.0], r"12345 and 12345\.0 are the same int key"),
    ("age", [True], "True is a bool"),
    ("age", ["30"], "'30' cannot be compared with a int"),
    ("age", [2.0**63], "64-bit"),
    ("bmi", [0.0, -0.0], r"0\.0 and -0\.0 are the same float key"),
    ("bmi", [1, 1.0], r"1 and 1\.0 are the same float key"),
    ("bmi", [False], "False is a bool"),
    ("seen", ["19500304"], r"'19500304' is not a date written YYYY-MM-DD"),
    ("seen", ["2020-W01-1"], "YYYY-MM-DD"),
    ("seen", ["2020-01-01T00:00"], "YYYY-MM-DD"),
    ("seen", ["2020-02-30"], "YYYY-MM-DD"),
    ("seen", ["２０２０-01-01"], "YYYY-MM-DD"),  # full-width digits
    ("seen", [20200101], "cannot be compared with a date"),
    ("smoker", [1], "cannot be compared with a bool"),
    ("bmi", [float("nan")], "must be finite"),
    ("bmi", [float("-inf")], "must be finite"),
]


@pytest.mark.parametrize(("column", "keys", "message"), KEY_ERRORS)
def test_keys_are_parsed_strictly_and_must_be_unique_in_their_type(
    column: str, keys: list[Any], message: str
) -> None:
    """A key is refused unless it is exactly a value of the column type, and a key list is
    refused when two of its values are one key of that type (the message names both)."""
    with pytest.raises(SpecError, match=message):
        keys_of(column, keys)


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (col("age") > 17.5, "17.5 is not a whole number"),
        (col("age").is_in([18, 18.5]), "18.5 is not a whole number"),
        (col("age").between(18, 64.5), "64.5 is not a whole number"),
        (col("age").fill_null(1.5) > 3, "1.5 is not a whole number"),
        (col("seen") >= "20210601", "YYYY-MM-DD"),
        (col("seen").between("2020-01-01", "2020-W05-1"), "YYYY-MM-DD"),
    ],
)
def test_filter_literals_are_parsed_against_the_column_type(condition: Any, message: str) -> None:
    """Comparisons, is_in, between and fill_null values follow the same strict parsing."""
    with pytest.raises(SpecError, match=message):
        validate(Query("patients").filter(condition).agg(count()).spec(1.0), SCHEMA)


def test_integral_floats_compare_with_int_columns() -> None:
    """30.0 is the whole number 30, so it may be compared with an int column."""
    validate(Query("patients").filter(col("age") >= 30.0).agg(count()).spec(1.0), SCHEMA)


def test_integers_beyond_64_bits_are_refused_by_the_parser() -> None:
    """A JSON integer too large for float conversion used to crash the parser (a 500)."""
    raw = mutate(filter={"op": "gt", "args": [{"col": "age"}, {"lit": 10**400}]})
    with pytest.raises(SpecError, match="64 bits"):
        QuerySpec.from_dict(raw)
    with pytest.raises(SpecError, match="64 bits"):
        QuerySpec.from_dict(mutate(epsilon=10**400))


@pytest.mark.parametrize("epsilon", [5e-324, 1e-320, 1e-9])
def test_an_epsilon_too_small_to_mean_anything_is_refused_clearly(epsilon: float) -> None:
    """ε = 5e-324 reached OpenDP, whose refusal ('(1).inf_mul(inf) is not finite') said
    nothing the scientist could act on."""
    raw = {"dataset": "p", "aggregates": [{"op": "count"}], "epsilon": epsilon}
    with pytest.raises(SpecError, match="is below 1e-06: the answer would be only noise"):
        QuerySpec.from_dict(raw)


@pytest.mark.parametrize(
    "expr",
    [
        {"op": [], "args": []},
        {"op": {"x": 1}, "args": []},
    ],
)
def test_an_unhashable_operation_is_a_spec_error(expr: dict[str, Any]) -> None:
    """{"op": []} made `op not in PARAMS` raise TypeError: a 500 instead of a 422."""
    raw = {"dataset": "p", "aggregates": [{"op": "count"}], "epsilon": 1.0, "filter": expr}
    with pytest.raises(SpecError, match="unknown operation"):
        QuerySpec.from_dict(raw)
    raw = {"dataset": "p", "aggregates": [{"op": []}], "epsilon": 1.0}
    with pytest.raises(SpecError, match="not supported"):
        QuerySpec.from_dict(raw)


def test_bin_edges_must_differ_as_floats() -> None:
    """2**53 and 2**53 + 1 are increasing as Python ints but one edge as floats: polars then
    failed at run time, after the mechanism (a charged 500)."""
    edges = [9007199254740992.0, 9007199254740993]
    raw = {
        "dataset": "p",
        "aggregates": [{"op": "count"}],
        "epsilon": 1.0,
        "group_by": {"by": ["b"]},
        "with_columns": [
            {"name": "b", "expr": {"op": "bin", "args": [{"col": "age"}], "edges": edges}}
        ],
    }
    with pytest.raises(SpecError, match="strictly increasing"):
        QuerySpec.from_dict(raw)


def test_the_size_limit_applies_to_a_spec_sent_as_an_object() -> None:
    """MAX_SPEC_BYTES was only checked on JSON text; over HTTP the spec arrives parsed."""
    keys = [f"k{i:04d}" + "x" * 60 for i in range(1000)]
    raw = {
        "dataset": "p",
        "aggregates": [{"op": "count"}],
        "epsilon": 1.0,
        "group_by": {"by": ["s"], "keys": {"s": keys}},
    }
    with pytest.raises(SpecError, match="the limit is"):
        QuerySpec.from_dict(raw)
