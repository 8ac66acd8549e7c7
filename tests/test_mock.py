"""Mock data is generated from a schema alone, and any frame is checked against a schema.

These tests pin the public contract of :mod:`rds_kernel.mock`: determinism, the documented
defaults, that generation never reads private data, and that ``check_frame`` and
``load_mock_file`` fail with messages that name the file, the column and the fix.
"""

from __future__ import annotations

import builtins
import inspect
import math
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rds_kernel import mock
from rds_kernel.demo.patients import write_demo_dataset
from rds_kernel.errors import SchemaError
from rds_kernel.mock import (
    DEFAULT_DATE_BOUNDS,
    DEFAULT_NULL_RATE,
    DEFAULT_NUMERIC_BOUNDS,
    DEFAULT_ROWS,
    MAX_DEFAULT_ROWS,
    check_frame,
    frame_polars_schema,
    generate_mock,
    load_mock_file,
    mock_seed,
    mock_to_csv_bytes,
    mock_to_parquet_bytes,
)
from rds_kernel.node.datasets import DatasetRegistry
from rds_kernel.node.settings import write_settings
from rds_kernel.schema import Schema

ALL_TYPES: dict[str, Any] = {
    "description": "every column type",
    "columns": {
        "age": {"type": "int", "bounds": [18, 95], "description": "years"},
        "score": {"type": "float", "bounds": [-1.5, 2.5], "nullable": True, "null_rate": 0.2},
        "smoker": {"type": "bool"},
        "region": {"type": "category", "categories": ["north", "south", "007"]},
        "note": {"type": "string", "nullable": True},
        "visit": {"type": "date", "bounds": ["2019-01-01", "2024-12-31"]},
    },
}


def schema_of(raw: dict[str, Any]) -> Schema:
    return Schema.from_dict(raw)


ALL = schema_of(ALL_TYPES)


# --- generation ---------------------------------------------------------------------------------


def test_same_seed_gives_the_same_frame() -> None:
    """Mock data is reproducible: scientists and the node see the same rows for a seed."""
    assert generate_mock(ALL, n=500, seed=7).equals(generate_mock(ALL, n=500, seed=7))


def test_different_seeds_give_different_frames() -> None:
    a, b = generate_mock(ALL, n=500, seed=1), generate_mock(ALL, n=500, seed=2)
    for name in ("age", "score", "smoker", "region", "note", "visit"):
        assert not a[name].equals(b[name]), name


def test_each_column_has_its_own_stream() -> None:
    """Declaring another column, or reordering, leaves the other columns' values unchanged."""
    small = schema_of({"columns": {"age": ALL_TYPES["columns"]["age"]}})
    reordered = schema_of({"columns": dict(reversed(ALL_TYPES["columns"].items()))})
    assert generate_mock(small, n=300)["age"].equals(generate_mock(ALL, n=300)["age"])
    assert generate_mock(reordered, n=300).select(ALL.names).equals(generate_mock(ALL, n=300))


def test_mock_seed_is_a_stable_hash_of_the_node_and_dataset_names() -> None:
    """Pinned: a node regenerating a mock (a replace, an upgrade) shows its scientists the same
    rows as before; Python's own ``hash`` of a string changes with every process."""
    assert mock_seed("hospital_a", "patients") == 4529171243728244998
    code = "from rds_kernel.mock import mock_seed; print(mock_seed('hospital_a', 'patients'))"
    other_process = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    assert other_process.stdout.strip() == "4529171243728244998"
    seeds = {mock_seed(node, ds) for node in ("a", "b", "a_b") for ds in ("b_c", "c", "patients")}
    assert len(seeds) == 9
    assert mock_seed("a", "b_c") != mock_seed("a_b", "c")  # the names are kept apart


def test_two_nodes_with_one_schema_show_different_mock_rows(tmp_path: Path) -> None:
    """Issue 12: both demo hospitals showed the same mock rows (one seed for every node). The
    seed now comes from the node's name and the dataset's, never from the private rows: the
    same schema gives different rows on two nodes, and the same rows on one node every time."""
    data, schema = write_demo_dataset(tmp_path / "source", "hospital_a", n=200)

    def mock_of(directory: str, node_name: str) -> pl.DataFrame:
        node_dir = tmp_path / directory
        node_dir.mkdir()
        write_settings(node_dir, name=node_name)
        registry = DatasetRegistry(node_dir)  # the name comes from the node's settings
        assert registry.node_name == node_name
        return pl.read_parquet(registry.add("patients", data, schema, mock_rows=50).mock_path)

    a, b = mock_of("a", "hospital_a"), mock_of("b", "hospital_b")
    assert a.schema == b.schema
    for column in ("age", "sex", "systolic_bp"):
        assert not a[column].equals(b[column]), column
    assert mock_of("a_again", "hospital_a").equals(a)  # another directory, the same node name
    expected = generate_mock(
        DatasetRegistry(tmp_path / "a").get("patients").schema,
        n=50,
        seed=mock_seed("hospital_a", "patients"),
    )
    assert a.equals(expected)
    given = DatasetRegistry(tmp_path / "given", node_name="hospital_b")
    assert given.node_name == "hospital_b"
    assert pl.read_parquet(given.add("patients", data, schema, mock_rows=50).mock_path).equals(b)


def test_frame_polars_schema_maps_every_type() -> None:
    assert frame_polars_schema(ALL) == {
        "age": pl.Int64(),
        "score": pl.Float64(),
        "smoker": pl.Boolean(),
        "region": pl.String(),
        "note": pl.String(),
        "visit": pl.Date(),
    }


def test_values_honour_dtypes_bounds_and_categories() -> None:
    df = generate_mock(ALL, n=5_000, seed=3)
    assert df.columns == ALL.names
    assert dict(df.schema) == frame_polars_schema(ALL)
    assert df["age"].min() == 18 and df["age"].max() == 95  # the whole range is used
    score = df["score"].drop_nulls()
    assert -1.5 <= score.min() <= score.max() <= 2.5  # type: ignore[operator]
    assert set(df["region"]) == {"north", "south", "007"}
    assert set(df["smoker"]) == {True, False}
    visit = df["visit"]
    assert date(2019, 1, 1) <= visit.min() <= visit.max() <= date(2024, 12, 31)  # type: ignore[operator]
    assert df["note"].drop_nulls().str.contains(r"^s_\d{6}$").all()
    for name in ("age", "smoker", "region", "visit"):  # not nullable: never null
        assert df[name].null_count() == 0


def test_documented_defaults_without_bounds() -> None:
    """Numeric columns without bounds fall in 0..100, dates in 2000..2024."""
    raw = {"columns": {"i": {"type": "int"}, "f": {"type": "float"}, "d": {"type": "date"}}}
    df = generate_mock(schema_of(raw), n=2_000)
    lo, hi = DEFAULT_NUMERIC_BOUNDS
    assert lo <= df["i"].min() and df["i"].max() <= hi  # type: ignore[operator]
    assert lo <= df["f"].min() and df["f"].max() <= hi  # type: ignore[operator]
    assert DEFAULT_DATE_BOUNDS[0] <= df["d"].min()  # type: ignore[operator]
    assert df["d"].max() <= DEFAULT_DATE_BOUNDS[1]  # type: ignore[operator]


@pytest.mark.parametrize(("declared", "expected"), [(0.2, 0.2), (None, DEFAULT_NULL_RATE)])
def test_null_rate_is_honoured(declared: float | None, expected: float) -> None:
    """Nulls appear at the declared null_rate, or at the documented default without one."""
    spec: dict[str, Any] = {"type": "float", "nullable": True}
    if declared is not None:
        spec["null_rate"] = declared
    n = 20_000
    nulls = generate_mock(schema_of({"columns": {"x": spec}}), n=n, seed=11)["x"].null_count()
    sd = math.sqrt(n * expected * (1 - expected))
    assert abs(nulls - n * expected) < 5 * sd


def test_null_rate_zero_and_one() -> None:
    raw = {
        "columns": {
            "never": {"type": "int", "nullable": True, "null_rate": 0.0},
            "always": {"type": "string", "nullable": True, "null_rate": 1.0},
        }
    }
    df = generate_mock(schema_of(raw), n=200)
    assert df["never"].null_count() == 0
    assert df["always"].null_count() == 200


@pytest.mark.parametrize("id_type", ["int", "string"])
@pytest.mark.parametrize("max_contributions", [1, 4])
def test_identifier_respects_max_contributions(id_type: str, max_contributions: int) -> None:
    """Each synthetic person holds 1..max_contributions rows; ids are never null."""
    raw = {
        "identifier": "pid",
        "max_contributions": max_contributions,
        "columns": {"pid": {"type": id_type, "nullable": True}, "x": {"type": "bool"}},
    }
    pid = generate_mock(schema_of(raw), n=3_000, seed=5)["pid"]
    assert pid.null_count() == 0
    counts = pid.value_counts()["count"]
    assert counts.max() == max_contributions
    assert pid.n_unique() >= 3_000 / max_contributions
    if id_type == "string":
        assert pid.str.contains(r"^s_\d{6,}$").all()


@pytest.mark.parametrize(
    ("bounds", "unique"),
    [([1000, 9999], 2_000), ([2**63 - 10_000, 2**63 - 1], 2_000), ([5, 9], 5)],
)
def test_int_identifier_stays_inside_its_bounds(bounds: list[int], unique: int) -> None:
    """Ids are unique while the bounds leave room, and wrap around inside them otherwise."""
    raw = {"identifier": "pid", "columns": {"pid": {"type": "int", "bounds": bounds}}}
    pid = generate_mock(schema_of(raw), n=2_000)["pid"]
    assert bounds[0] <= pid.min() and pid.max() <= bounds[1]  # type: ignore[operator]
    assert pid.n_unique() == unique


def test_row_count_defaults() -> None:
    """n, else the public row count (capped), else DEFAULT_ROWS."""
    cols = {"x": {"type": "bool"}}
    assert generate_mock(schema_of({"columns": cols})).height == DEFAULT_ROWS
    assert generate_mock(schema_of({"public_row_count": 1234, "columns": cols})).height == 1234
    huge = schema_of({"public_row_count": 10**9, "columns": cols})
    assert generate_mock(huge).height == MAX_DEFAULT_ROWS
    assert generate_mock(huge, n=17).height == 17


def test_zero_rows_keep_the_dtypes() -> None:
    df = generate_mock(ALL, n=0)
    assert df.height == 0 and dict(df.schema) == frame_polars_schema(ALL)


def test_negative_n_or_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="n must be a non-negative"):
        generate_mock(ALL, n=-1)
    with pytest.raises(ValueError, match="seed must be a non-negative"):
        generate_mock(ALL, seed=-1)


def test_extreme_bounds_stay_inside() -> None:
    raw = {
        "columns": {
            "i": {"type": "int", "bounds": [-(2**63), 2**63 - 1]},
            "f": {"type": "float", "bounds": [-1e308, 1e308]},
            "tiny": {"type": "float", "bounds": [0.0, 5e-324]},
        }
    }
    s = schema_of(raw)
    check_frame(generate_mock(s, n=1_000), s, "mock", strict=True)


def test_int_bounds_beyond_64_bits_are_refused_by_the_schema() -> None:
    """An Int64 column can never hold such bounds, so the schema itself refuses them."""
    with pytest.raises(SchemaError, match=r"'big': int bounds must fit in 64 bits"):
        schema_of({"columns": {"big": {"type": "int", "bounds": [2**64, 2**65]}}})


# --- generation never reads private data ---------------------------------------------------------


def test_generate_mock_takes_only_a_schema() -> None:
    """The signature is the proof: nothing but the public schema, a row count and a seed."""
    params = inspect.signature(generate_mock).parameters
    assert list(params) == ["schema", "n", "seed"]
    assert [p.annotation for p in params.values()] == ["Schema", "int | None", "int"]


def test_output_does_not_depend_on_private_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same schema gives the same mock whatever private data exists, and no file is read."""
    before = generate_mock(ALL, n=300, seed=9)
    private = pl.DataFrame({"age": [99] * 10, "region": ["secret"] * 10})
    private.write_parquet(tmp_path / "private.parquet")
    private.write_csv(tmp_path / "private.csv")
    monkeypatch.chdir(tmp_path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("generate_mock tried to read data")

    for name in ("read_csv", "read_parquet", "scan_csv", "scan_parquet", "read_ipc"):
        monkeypatch.setattr(pl, name, refuse)
    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(Path, "open", refuse)
    assert generate_mock(ALL, n=300, seed=9).equals(before)


@st.composite
def schemas(draw: st.DrawFn) -> Schema:
    """Any valid schema the owner could write (without an identifier)."""
    columns: dict[str, Any] = {}
    for i in range(draw(st.integers(1, 6))):
        ctype = draw(st.sampled_from(["int", "float", "bool", "category", "string", "date"]))
        spec: dict[str, Any] = {"type": ctype}
        if ctype == "int" and draw(st.booleans()):
            # anywhere in the Int64 range (the schema refuses bounds outside it)
            lo = draw(st.integers(-(2**63), 2**63 - 2))
            spec["bounds"] = [lo, draw(st.integers(lo + 1, 2**63 - 1))]
        elif ctype == "float" and draw(st.booleans()):
            a, b = draw(st.lists(st.floats(-1e300, 1e300), min_size=2, max_size=2, unique=True))
            spec["bounds"] = sorted([a, b])
        elif ctype == "date" and draw(st.booleans()):
            days = draw(st.lists(st.dates(), min_size=2, max_size=2, unique=True))
            spec["bounds"] = [d.isoformat() for d in sorted(days)]
        elif ctype == "category":
            spec["categories"] = draw(
                st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=5, unique=True)
            )
        if draw(st.booleans()):
            spec["nullable"] = True
            if draw(st.booleans()):
                spec["null_rate"] = draw(st.floats(0, 1))
        columns[f"c{i}"] = spec
    return Schema.from_dict({"columns": columns})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas(), n=st.integers(0, 300), seed=st.integers(0, 2**32))
def test_any_schema_gives_mock_that_passes_the_strict_check(
    schema: Schema, n: int, seed: int
) -> None:
    df = generate_mock(schema, n=n, seed=seed)
    assert df.height == n
    assert dict(df.schema) == frame_polars_schema(schema)
    assert check_frame(df, schema, "mock", strict=True).equals(df)


# --- bytes and files ----------------------------------------------------------------------------


def test_csv_bytes_round_trip(tmp_path: Path) -> None:
    """CSV keeps every value: nulls, dates, and category codes with leading zeros."""
    df = generate_mock(ALL, n=400, seed=4)
    data = mock_to_csv_bytes(df)
    assert data.startswith(b"age,score,smoker,region,note,visit\n")
    path = tmp_path / "mock.csv"
    path.write_bytes(data)
    assert load_mock_file(path, ALL).equals(df)


def test_parquet_bytes_round_trip(tmp_path: Path) -> None:
    df = generate_mock(ALL, n=400, seed=4)
    path = tmp_path / "mock.parquet"
    path.write_bytes(mock_to_parquet_bytes(df))
    assert pl.read_parquet(path).equals(df)
    assert load_mock_file(path, ALL).equals(df)


def write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "owner_mock.csv"
    path.write_text(text)
    return path


SMALL = schema_of(
    {
        "columns": {
            "age": {"type": "int", "bounds": [18, 95]},
            "sex": {"type": "category", "categories": ["F", "M"]},
        }
    }
)


def test_a_good_owner_mock_file_loads(tmp_path: Path) -> None:
    df = load_mock_file(write_csv(tmp_path, "sex,age\nF,30\nM,41\n"), SMALL)
    assert df.columns == ["age", "sex"]  # schema order, schema dtypes
    assert df["age"].to_list() == [30, 41]


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ("age\n30\n", "sex", ["is missing", "add it to the data"]),
        ("age,sex,ssn\n30,F,123\n", "ssn", ["not in the schema", "remove it from the file"]),
        (
            "age,sex\nthirty,F\n",
            "age",
            ["not readable as whole numbers", "'thirty'", "change the column's type"],
        ),
        ("age,sex\n130,F\n", "age", ["outside its bounds [18, 95]", "130", "widen the bounds"]),
        ("age,sex\n30,X\n", "sex", ["outside the declared categories", "'X'", "add them to categ"]),
        ("age,sex\n,F\n", "age", ["1 missing value", "nullable = true"]),
    ],
)
def test_a_bad_owner_mock_file_names_file_column_and_fix(
    tmp_path: Path, text: str, column: str, words: list[str]
) -> None:
    path = write_csv(tmp_path, text)
    with pytest.raises(SchemaError) as err:
        load_mock_file(path, SMALL)
    message = str(err.value)
    assert message.startswith(f"{path}: column {column!r} ")
    for word in words:
        assert word in message
    assert err.value.detail["file"] == str(path)
    assert err.value.detail["column"] == column


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(SchemaError) as err:
        load_mock_file(write_csv(tmp_path, "age,extra\n200,1\n"), SMALL)
    problems = err.value.detail["problems"]
    assert [p["column"] for p in problems] == ["sex", "extra", "age"]
    assert "3 problems" in str(err.value)


def test_wrong_file_kinds_are_explained(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"must be CSV \(\.csv\) or Parquet"):
        load_mock_file(tmp_path / "mock.xlsx", SMALL)
    with pytest.raises(SchemaError, match="mock file not found"):
        load_mock_file(tmp_path / "absent.csv", SMALL)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(SchemaError, match="could not be read as Parquet"):
        load_mock_file(broken, SMALL)


# --- checking private frames --------------------------------------------------------------------


def test_check_frame_casts_to_the_schema_dtypes() -> None:
    """Unambiguous conversions are made; the result has exactly the schema dtypes."""
    df = pl.DataFrame(
        {
            "age": pl.Series([30, 41], dtype=pl.Int32),
            "score": pl.Series([1.5, float("nan")], dtype=pl.Float32),
            "smoker": [1, 0],
            "region": pl.Series(["north", "007"], dtype=pl.Categorical),
            "note": [12, None],
            "visit": [datetime(2020, 5, 1, 13, 30), datetime(2021, 1, 2)],
            "ignored": ["private", "extra"],
        }
    )
    out = check_frame(df, ALL, "dataset patients")
    assert dict(out.schema) == frame_polars_schema(ALL)
    assert out.to_dicts() == [
        {
            "age": 30,
            "score": 1.5,
            "smoker": True,
            "region": "north",
            "note": "12",
            "visit": date(2020, 5, 1),
        },
        {
            "age": 41,
            "score": None,  # NaN became null
            "smoker": False,
            "region": "007",
            "note": None,
            "visit": date(2021, 1, 2),
        },
    ]


def test_check_frame_parses_text() -> None:
    text = pl.DataFrame(
        {
            "age": ["30", " 41 ", "52.0"],
            "score": ["1.5", "", None],
            "smoker": ["true", "False", "0"],
            "region": ["north", "south", "007"],
            "note": ["a", "b", "c"],
            "visit": ["2020-05-01", "2021-01-02", "2024-12-31"],
        }
    )
    out = check_frame(text, ALL, "x.csv")
    assert out["age"].to_list() == [30, 41, 52]
    assert out["score"].to_list() == [1.5, None, None]
    assert out["smoker"].to_list() == [True, False, False]
    assert out["visit"].to_list() == [date(2020, 5, 1), date(2021, 1, 2), date(2024, 12, 31)]


def test_private_values_outside_bounds_are_allowed_and_kept() -> None:
    """DP clamps private values to the public bounds; checking must not reject or alter them."""
    df = pl.DataFrame({"age": [3, 130], "sex": ["F", "M"]})
    assert check_frame(df, SMALL, "p.parquet")["age"].to_list() == [3, 130]
    with pytest.raises(SchemaError, match="outside its bounds"):
        check_frame(df, SMALL, "mock.parquet", strict=True)


def test_private_values_never_appear_in_messages() -> None:
    df = pl.DataFrame({"age": ["secret-age", "31.5"], "sex": ["F", "SECRET-SEX"]})
    with pytest.raises(SchemaError) as err:
        check_frame(df, SMALL, "patients.parquet")
    text = str(err.value) + repr(err.value.detail)
    assert "secret" not in text.lower() and "31.5" not in text
    assert "2 values not readable as whole numbers" in text
    assert "1 value outside the declared categories" in text


@pytest.mark.parametrize(
    ("values", "ctype"),
    [
        (pl.Series([[1], [2]]), "int"),
        (pl.Series([b"x", b"y"]), "string"),
        (pl.Series([1, 2]), "date"),
        (pl.Series([date(2020, 1, 1)] * 2), "float"),
    ],
)
def test_uncastable_types_are_explained(values: pl.Series, ctype: str) -> None:
    schema = schema_of({"columns": {"c": {"type": ctype}}})
    with pytest.raises(SchemaError) as err:
        check_frame(pl.DataFrame({"c": values}), schema, "data.parquet")
    message = str(err.value)
    assert message.startswith("data.parquet: column 'c' has type ")
    assert f"cannot hold {ctype} values" in message
    assert "change the column's type in the schema" in message


@pytest.mark.parametrize(
    ("values", "ctype"),
    [
        ([1.5, 2.0], "int"),
        ([float("inf"), 1.0], "int"),
        ([2, 1], "bool"),
        (["yes", "true"], "bool"),
        (["2020-13-01", "2020-01-01"], "date"),
        (["1.2.3", "4"], "float"),
    ],
)
def test_values_that_do_not_convert_are_counted(values: list[Any], ctype: str) -> None:
    schema = schema_of({"columns": {"c": {"type": ctype}}})
    with pytest.raises(SchemaError, match=r"column 'c' has 1 value not readable as "):
        check_frame(pl.DataFrame({"c": values}), schema, "data.parquet")


def test_nulls_and_nan_in_a_non_nullable_column() -> None:
    schema = schema_of({"columns": {"x": {"type": "float"}}})
    df = pl.DataFrame({"x": [1.0, None, float("nan")]})
    with pytest.raises(SchemaError, match="has 2 missing values but is not nullable"):
        check_frame(df, schema, "data.parquet")


def test_all_null_column_is_accepted_when_nullable() -> None:
    schema = schema_of({"columns": {"x": {"type": "date", "nullable": True}}})
    out = check_frame(pl.DataFrame({"x": [None, None]}), schema, "data.parquet")
    assert out.schema["x"] == pl.Date and out["x"].null_count() == 2


def test_importing_mock_does_not_import_pandas() -> None:
    """The scientist side imports rds_kernel.mock; pandas there would cost a second of startup."""
    code = "import sys, rds_kernel.mock; assert 'pandas' not in sys.modules, 'pandas imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_module_exports() -> None:
    assert sorted(mock.__all__) == [
        "DEFAULT_DATE_BOUNDS",
        "DEFAULT_NULL_RATE",
        "DEFAULT_NUMERIC_BOUNDS",
        "DEFAULT_ROWS",
        "MAX_DEFAULT_ROWS",
        "check_frame",
        "frame_polars_schema",
        "generate_mock",
        "load_mock_file",
        "mock_seed",
        "mock_to_csv_bytes",
        "mock_to_parquet_bytes",
    ]
