"""The bundled demo data: deterministic synthetic patients that fit their schema and look real.

The course teaches with these rows, so the tests pin what a lesson relies on: the same data on
every machine, the schema contract, the expected direction of each risk factor, and two
hospitals that differ the way the course says they do.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pytest

from rds_kernel.demo import HOSPITALS, generate_patients, patients_schema, write_demo_dataset
from rds_kernel.mock import check_frame, frame_polars_schema, generate_mock
from rds_kernel.schema import load_schema

COLUMNS = [
    "age",
    "sex",
    "region",
    "bmi",
    "systolic_bp",
    "smoker",
    "cholesterol",
    "diabetes",
    "cvd",
]


@pytest.fixture(scope="module")
def a() -> pl.DataFrame:
    return generate_patients("hospital_a")


@pytest.fixture(scope="module")
def b() -> pl.DataFrame:
    return generate_patients("hospital_b")


def test_bundled_schema_declares_every_column_with_a_description() -> None:
    schema = patients_schema()
    assert schema.name == "patients"
    assert schema.names == COLUMNS
    assert schema.identifier is None  # row-level privacy in the demo
    assert all(c.description for c in schema.columns)
    assert schema.column("age").bounds == (18, 95)
    assert schema.column("cvd").bounds == (0, 1)
    assert schema.column("sex").categories == ("F", "M")
    assert schema.column("region").categories is not None
    assert len(schema.column("region").categories or ()) == 5
    assert [c.name for c in schema.columns if c.nullable] == ["bmi"]


def test_hospitals_and_default_sizes(a: pl.DataFrame, b: pl.DataFrame) -> None:
    assert HOSPITALS == ("hospital_a", "hospital_b")
    assert (a.height, b.height) == (12_000, 8_000)


def test_default_data_is_the_same_on_every_call(a: pl.DataFrame) -> None:
    """Without a seed each hospital has a fixed seed, so demo nodes always hold the same rows."""
    assert generate_patients("hospital_a").equals(a)
    assert generate_patients("hospital_a", n=500, seed=3).equals(
        generate_patients("hospital_a", n=500, seed=3)
    )


def test_different_seeds_differ() -> None:
    one = generate_patients("hospital_b", n=500, seed=1)
    two = generate_patients("hospital_b", n=500, seed=2)
    assert not one.equals(two)


@pytest.mark.parametrize("hospital", HOSPITALS)
def test_data_fits_the_bundled_schema(hospital: str) -> None:
    """The private data passes the check a node runs, even the strict one for published data."""
    df = generate_patients(hospital)
    schema = patients_schema()
    assert dict(df.schema) == frame_polars_schema(schema)
    assert check_frame(df, schema, hospital, strict=True).equals(df)


def test_a_few_percent_of_bmi_is_missing(a: pl.DataFrame, b: pl.DataFrame) -> None:
    for df in (a, b):
        assert 0.01 < df["bmi"].null_count() / df.height < 0.08
        assert df.drop("bmi").null_count().sum_horizontal().item() == 0


def test_values_are_recorded_like_a_clinic_would(a: pl.DataFrame) -> None:
    """One decimal for BMI and cholesterol; cvd is 0/1 so its mean is the event rate."""
    for name in ("bmi", "cholesterol"):
        values = a[name].drop_nulls()
        assert values.equals(values.round(1)), name
    assert set(a["cvd"]) == {0, 1}


def test_risk_factors_have_the_expected_direction(a: pl.DataFrame) -> None:
    """Blood pressure rises with age and BMI; cvd is more common with each risk factor."""
    corr = a.select(
        age_bp=pl.corr("age", "systolic_bp"),
        bmi_bp=pl.corr("bmi", "systolic_bp"),
        age_chol=pl.corr("age", "cholesterol"),
    ).row(0, named=True)
    assert corr["age_bp"] > 0.3
    assert corr["bmi_bp"] > 0.15
    assert corr["age_chol"] > 0

    def cvd_rate(condition: pl.Expr) -> float:
        return float(a.filter(condition)["cvd"].mean())  # type: ignore[arg-type]

    assert cvd_rate(pl.col("smoker")) > cvd_rate(~pl.col("smoker"))
    assert cvd_rate(pl.col("diabetes")) > 1.5 * cvd_rate(~pl.col("diabetes"))
    assert cvd_rate(pl.col("sex") == "M") > cvd_rate(pl.col("sex") == "F")
    assert cvd_rate(pl.col("age") >= 65) > 2 * cvd_rate(pl.col("age") < 50)
    assert cvd_rate(pl.col("systolic_bp") >= 150) > cvd_rate(pl.col("systolic_bp") < 120)
    assert cvd_rate(pl.col("cholesterol") >= 6.5) > cvd_rate(pl.col("cholesterol") < 4.5)
    diabetic_bmi = a.group_by("diabetes").agg(pl.col("bmi").mean()).sort("diabetes")["bmi"]
    assert diabetic_bmi[1] > diabetic_bmi[0]
    assert 0.03 < float(a["cvd"].mean()) < 0.2  # type: ignore[arg-type]


def test_the_two_hospitals_differ(a: pl.DataFrame, b: pl.DataFrame) -> None:
    """A is older and urban; B is younger, rural, smokes more."""

    def share(df: pl.DataFrame, condition: pl.Expr) -> float:
        return df.filter(condition).height / df.height

    urban = pl.col("region").is_in(["city", "suburbs"])
    assert float(a["age"].mean()) > float(b["age"].mean()) + 5  # type: ignore[arg-type]
    assert share(a, urban) > 0.6 > share(b, urban) + 0.2
    assert share(b, pl.col("smoker")) > share(a, pl.col("smoker")) + 0.05
    assert (
        set(a["region"])
        == set(b["region"])
        == set(patients_schema().column("region").categories or ())
    )


def test_unknown_hospital_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="hospital_a, hospital_b"):
        generate_patients("hospital_c")
    with pytest.raises(ValueError, match="non-negative"):
        generate_patients("hospital_a", n=-5)


def test_write_demo_dataset(tmp_path: Path) -> None:
    """It writes the two files `rds dataset add` takes; they read back to the same data."""
    parquet_path, schema_path = write_demo_dataset(tmp_path / "node_a", "hospital_a", n=300)
    assert parquet_path == tmp_path / "node_a" / "hospital_a_patients.parquet"
    assert schema_path == tmp_path / "node_a" / "patients.schema.toml"
    assert pl.read_parquet(parquet_path).equals(generate_patients("hospital_a", n=300))
    assert load_schema(schema_path).to_dict() == patients_schema().to_dict()


def test_mock_of_the_demo_schema_is_valid() -> None:
    schema = patients_schema()
    check_frame(generate_mock(schema, n=2_000), schema, "mock", strict=True)


def test_a_million_rows_are_fast() -> None:
    """Benchmarks and scale demos generate big hospitals on the fly."""
    generate_patients("hospital_a", n=1_000)  # warm-up: imports and first-call setup
    start = time.perf_counter()
    df = generate_patients("hospital_a", n=1_000_000)
    elapsed = time.perf_counter() - start
    assert df.height == 1_000_000
    assert elapsed < 2.0, f"{elapsed:.2f} s"
