"""What `DatasetRegistry.add_with_notes` tells the owner about a data file (issue 12): values
outside the declared bounds, columns the schema lacks, an empty file, and columns that differ
from the schema only by case or by a CSV delimiter."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from rds_kernel.errors import ConfigError, SchemaError
from rds_kernel.node.datasets import AddNotes, Clamped, DatasetRegistry
from rds_kernel.node.settings import make_private_directory, write_settings

SCHEMA = """
[columns.age]
type = "int"
bounds = [0, 120]

[columns.bmi]
type = "float"
bounds = [15.0, 50.0]
nullable = true

[columns.seen]
type = "date"
bounds = ["2020-01-01", "2024-12-31"]

[columns.sex]
type = "category"
categories = ["F", "M"]
"""


@pytest.fixture
def schema(tmp_path: Path) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(SCHEMA)
    return path


@pytest.fixture
def registry(tmp_path: Path) -> DatasetRegistry:
    node = make_private_directory(tmp_path / "node")
    write_settings(node, name="clinic")
    return DatasetRegistry(node)


def test_values_outside_the_bounds_and_extra_columns_are_noted(
    tmp_path: Path, schema: Path, registry: DatasetRegistry
) -> None:
    """Before, they were clamped (bounds) and dropped (columns) without a word."""
    data = tmp_path / "d.parquet"
    pl.DataFrame(
        {
            "age": [-1, 0, 120, 121, 500, 30],
            "bmi": [14.9, float("inf"), None, float("nan"), 50.0, 15.0],
            "seen": [
                date(2019, 12, 31),
                date(2020, 1, 1),
                date(2025, 1, 1),
                *[date(2022, 6, 1)] * 3,
            ],
            "sex": ["F", "M", "F", "M", "F", "M"],
            "foo": [1] * 6,
            "bar": ["x"] * 6,
        }
    ).write_parquet(data)
    ds, notes = registry.add_with_notes("d", data, schema, mock_rows=10)
    assert notes == AddNotes(
        clamped=(
            Clamped("age", 3, (0, 120)),
            Clamped("bmi", 2, (15.0, 50.0)),  # 14.9 and inf; null and NaN are missing, not out
            Clamped("seen", 2, ("2020-01-01", "2024-12-31")),
        ),
        not_in_schema=("foo", "bar"),
    )
    assert notes.lines() == [
        "column age: 3 value(s) outside [0, 120] will be clamped to the bounds",
        "column bmi: 2 value(s) outside [15.0, 50.0] will be clamped to the bounds",
        "column seen: 2 value(s) outside [2020-01-01, 2024-12-31] will be clamped to the bounds",
        "columns not in the schema, not added: foo, bar",
    ]
    assert ds.rows == 6
    assert pl.read_parquet(ds.data_path).columns == ["age", "bmi", "seen", "sex"]


def test_a_clean_file_has_no_notes(tmp_path: Path, schema: Path, registry: DatasetRegistry) -> None:
    data = tmp_path / "d.csv"
    data.write_text("age,bmi,seen,sex\n30,22.5,2021-03-04,F\n")
    _ds, notes = registry.add_with_notes("d", data, schema, mock_rows=10)
    assert notes == AddNotes()
    assert notes.lines() == []


def test_categories_outside_the_list_are_counted_in_the_refusal(
    tmp_path: Path, schema: Path, registry: DatasetRegistry
) -> None:
    data = tmp_path / "d.csv"
    data.write_text("age,bmi,seen,sex\n30,22.5,2021-03-04,X\n31,22.5,2021-03-04,Y\n")
    with pytest.raises(SchemaError, match="has 2 values outside the declared categories"):
        registry.add("d", data, schema, mock_rows=10)
    assert registry.names() == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("age,bmi,seen,sex\n", "the file has no rows; a dataset needs at least one row"),
        ("", "the file is empty; a dataset needs a header and at least one row"),
    ],
)
def test_an_empty_dataset_is_refused(
    tmp_path: Path, schema: Path, registry: DatasetRegistry, content: str, message: str
) -> None:
    """Before, a header-only file was added as a dataset of 0 rows."""
    data = tmp_path / "d.csv"
    data.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        registry.add("d", data, schema, mock_rows=10)
    assert "\n" not in caught.value.message
    assert registry.names() == []
    empty = tmp_path / "e.parquet"
    pl.DataFrame(
        {"age": [], "bmi": [], "seen": [], "sex": []},
        schema={"age": pl.Int64, "bmi": pl.Float64, "seen": pl.Date, "sex": pl.String},
    ).write_parquet(empty)
    with pytest.raises(ConfigError, match="the file has no rows"):
        registry.add("e", empty, schema, mock_rows=10)


def test_columns_that_differ_by_case_get_a_hint(
    tmp_path: Path, schema: Path, registry: DatasetRegistry
) -> None:
    data = tmp_path / "d.csv"
    data.write_text("Age,bmi,seen,Sex\n30,22.5,2021-03-04,F\n")
    with pytest.raises(SchemaError) as caught:
        registry.add("d", data, schema, mock_rows=10)
    message = caught.value.message
    assert "\n" not in message
    assert "the schema's column(s) age, sex are missing" in message
    assert "the file has `Age,bmi,seen,Sex`; the schema names are case-sensitive" in message


@pytest.mark.parametrize(("delimiter", "said"), [(";", "`;`"), ("\t", "a tab"), ("|", "`|`")])
def test_a_csv_read_as_one_column_asks_about_the_delimiter(
    tmp_path: Path, schema: Path, registry: DatasetRegistry, delimiter: str, said: str
) -> None:
    data = tmp_path / "d.csv"
    header = delimiter.join(["age", "bmi", "seen", "sex"])
    data.write_text(f"{header}\n" + delimiter.join(["30", "22.5", "2021-03-04", "F"]) + "\n")
    with pytest.raises(SchemaError) as caught:
        registry.add("d", data, schema, mock_rows=10)
    message = caught.value.message
    assert "\n" not in message
    assert f"one column `{header}`: is the delimiter {said}?" in message


def test_other_missing_columns_keep_the_usual_message(
    tmp_path: Path, schema: Path, registry: DatasetRegistry
) -> None:
    data = tmp_path / "d.csv"
    data.write_text("age,bmi,seen\n30,22.5,2021-03-04\n")
    with pytest.raises(SchemaError, match="column 'sex' is missing; add it to the data") as caught:
        registry.add("d", data, schema, mock_rows=10)
    assert "case-sensitive" not in caught.value.message
