"""The schema contract: what owners may declare, and how errors point them at the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from rds_kernel.errors import SchemaError
from rds_kernel.schema import Schema, load_schema

GOOD = """
description = "Patients of hospital A"
public_row_count = 12000
identifier = "patient_id"
max_contributions = 3

[columns.patient_id]
type = "string"

[columns.age]
type = "int"
bounds = [0, 120]
description = "Age in years"

[columns.sex]
type = "category"
categories = ["F", "M"]

[columns.bmi]
type = "float"
bounds = [10.0, 70.0]
nullable = true
null_rate = 0.05

[columns.smoker]
type = "bool"

[columns.admitted]
type = "date"
bounds = ["2019-01-01", "2024-12-31"]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "patients.schema.toml"
    p.write_text(text)
    return p


def test_reads_every_declared_field(tmp_path: Path) -> None:
    """A full schema file round-trips through TOML and the JSON wire form."""
    s = load_schema(write(tmp_path, GOOD))
    assert s.names == ["patient_id", "age", "sex", "bmi", "smoker", "admitted"]
    assert s.public_row_count == 12000
    assert s.identifier == "patient_id" and s.max_contributions == 3
    assert s.column("age").bounds == (0, 120)
    assert s.column("bmi").bounds == (10.0, 70.0) and s.column("bmi").nullable
    assert s.column("sex").public_keys == ("F", "M")
    assert s.column("smoker").public_keys == (False, True)
    assert s.column("admitted").bounds == ("2019-01-01", "2024-12-31")
    again = Schema.from_dict(s.to_dict())
    assert again.to_dict() == s.to_dict()


@pytest.mark.parametrize(
    ("snippet", "must_mention"),
    [
        ('[columns.age]\ntype = "integer"', ["column 'age'", "int, float"]),
        ('[columns.age]\ntype = "int"\nbounds = [10, 5]', ["column 'age'", "below"]),
        ('[columns.age]\ntype = "int"\nbounds = [0.5, 5]', ["integer bounds"]),
        ('[columns.age]\ntype = "int"\nbounds = [0, 99999999999999999999]', ["64 bits"]),
        ('[columns.age]\ntype = "float"\nbounds = [0, nan]', ["finite"]),
        ('[columns.sex]\ntype = "category"', ["column 'sex'", "categories = ["]),
        ('[columns.sex]\ntype = "category"\ncategories = ["F", "F"]', ["repeat"]),
        ('[columns.age]\ntype = "int"\nbound = [0, 1]', ["unknown key", "bound"]),
        ('[columns.name]\ntype = "string"\nbounds = [0, 1]', ["bounds only apply"]),
        ('identifier = "pid"\n[columns.age]\ntype = "int"', ["identifier", "not a declared"]),
        ('public_row_count = -3\n[columns.age]\ntype = "int"', ["public_row_count"]),
        ("description = 'x'", ["declare at least one column"]),
        ('[columns."1st"]\ntype = "int"', ["letters, digits"]),
        ('[columns.x]\ntype = "float"\nnull_rate = 0.2', ["nullable = true"]),
        ('[columns.d]\ntype = "date"\nbounds = ["2020-13-01", "2021-01-01"]', ["ISO dates"]),
        ("this is not toml", ["not valid TOML"]),
    ],
)
def test_errors_name_file_column_and_fix(
    tmp_path: Path, snippet: str, must_mention: list[str]
) -> None:
    """Each mistake an owner can make is refused with the file, the place and the fix."""
    path = write(tmp_path, snippet)
    with pytest.raises(SchemaError) as info:
        load_schema(path)
    message = str(info.value)
    assert str(path) in message
    for text in must_mention:
        assert text in message


def test_missing_file_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="schema file not found"):
        load_schema(tmp_path / "nope.toml")


def test_a_name_with_a_trailing_newline_is_refused() -> None:
    """Names are matched in full: ``$`` in ``re.match`` also matches before a final newline."""
    with pytest.raises(SchemaError, match="letters, digits"):
        Schema.from_dict({"columns": {"age\n": {"type": "int"}}})
    with pytest.raises(SchemaError, match="simple name"):
        Schema.from_dict({"name": "patients\n", "columns": {"age": {"type": "int"}}})


def test_categories_are_unique_however_a_column_is_built() -> None:
    """Categories are public group keys; a repeated one would be a repeated key (the copies of
    a present key are released equal), so a Column cannot hold one, even built directly."""
    from rds_kernel.schema import Column

    with pytest.raises(SchemaError, match="repeat"):
        Column(name="sex", type="category", categories=("F", "M", "F"))
