"""Synthetic patients for the two demo hospitals, with believable cardiovascular epidemiology.

The demo and the course need private data whose DP answers are worth looking at, so the rows
follow a small causal model rather than independent noise:

* age, sex, region and smoking differ by hospital: ``hospital_a`` is larger, older and urban;
  ``hospital_b`` is younger, rural and smokes more;
* BMI is log-normal and rises slightly with age; a few percent of values are missing;
* diabetes follows a logistic model of age and BMI;
* systolic blood pressure rises with age and BMI (about 0.5 mmHg a year, 0.8 per BMI unit),
  and is higher in men and in diabetics;
* total cholesterol rises slightly with age and BMI;
* a cardiovascular event (``cvd``, 0/1) follows a logistic model of age, sex, smoking, blood
  pressure, cholesterol and diabetes, so a scientist can rediscover the usual risk factors.

Everything is vectorised numpy, so a million rows take a fraction of a second. Values are rounded
as a clinic would record them and always lie inside the bounds of ``patients.schema.toml``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from rds_kernel.schema import Schema

__all__ = ["HOSPITALS", "generate_patients", "patients_schema", "write_demo_dataset"]

_SCHEMA_FILE = "patients.schema.toml"
_REGIONS = ("city", "suburbs", "coast", "valley", "highlands")


@dataclass(frozen=True)
class _Population:
    """What differs between the hospitals' catchment populations."""

    default_n: int
    default_seed: int
    age_beta: tuple[float, float]  # age = 18 + 77 * Beta(a, b)
    p_female: float
    region_weights: tuple[float, float, float, float, float]  # in _REGIONS order
    smoking_logit: float  # at age 50, female
    bmi_median: float  # at age 50
    bmi_missing: float
    bp_offset: float  # mmHg, e.g. salt intake and access to treatment


_POPULATIONS = {
    "hospital_a": _Population(
        default_n=12_000,
        default_seed=2019_0001,
        age_beta=(2.6, 2.4),  # mean age about 58
        p_female=0.53,
        region_weights=(0.45, 0.30, 0.10, 0.10, 0.05),
        smoking_logit=-1.75,
        bmi_median=26.3,
        bmi_missing=0.03,
        bp_offset=0.0,
    ),
    "hospital_b": _Population(
        default_n=8_000,
        default_seed=2019_0002,
        age_beta=(2.0, 3.3),  # mean age about 47
        p_female=0.50,
        region_weights=(0.08, 0.14, 0.22, 0.30, 0.26),
        smoking_logit=-1.2,
        bmi_median=27.6,
        bmi_missing=0.05,
        bp_offset=3.0,
    ),
}

HOSPITALS: tuple[str, ...] = tuple(_POPULATIONS)


def patients_schema() -> Schema:
    """The public schema of the demo patients data, read from the bundled TOML file."""
    return Schema.from_dict(tomllib.loads(_schema_text()), source=f"rds_kernel/demo/{_SCHEMA_FILE}")


def _schema_text() -> str:
    return files("rds_kernel.demo").joinpath(_SCHEMA_FILE).read_text("utf-8")


def generate_patients(hospital: str, n: int | None = None, seed: int | None = None) -> pl.DataFrame:
    """``n`` synthetic patients of ``hospital`` (one of :data:`HOSPITALS`); deterministic.

    Without ``n`` the hospital's usual size (12,000 for ``hospital_a``, 8,000 for
    ``hospital_b``); without ``seed`` a fixed seed per hospital, so the demo nodes always hold
    the same data. The frame fits :func:`patients_schema` (dtypes of
    :func:`rds_kernel.mock.frame_polars_schema`).
    """
    pop = _population(hospital)
    n = pop.default_n if n is None else n
    if n < 0:
        raise ValueError(f"n must be a non-negative number of rows, not {n}")
    rng = np.random.default_rng(pop.default_seed if seed is None else seed)

    age = np.rint(18 + 77 * rng.beta(*pop.age_beta, size=n))
    decades = (age - 50) / 10
    male = rng.random(n) >= pop.p_female
    region = rng.choice(len(_REGIONS), size=n, p=pop.region_weights)
    smoker = rng.random(n) < _sigmoid(pop.smoking_logit - 0.2 * decades + 0.3 * male)

    bmi = np.exp(rng.normal(np.log(pop.bmi_median) + 0.012 * decades, 0.17, size=n))
    bmi = np.clip(np.round(bmi, 1), 15.0, 50.0)
    diabetes = rng.random(n) < _sigmoid(-2.7 + 0.45 * decades + 0.13 * (bmi - 27))

    sbp = (
        124
        + 5.0 * decades
        + 0.8 * (bmi - 27)
        + 4.0 * male
        + 3.0 * diabetes
        + pop.bp_offset
        + rng.normal(0, 13, size=n)
    )
    sbp = np.clip(np.rint(sbp), 80, 220)
    chol = 5.1 + 0.12 * decades + 0.04 * (bmi - 27) + rng.normal(0, 1.0, size=n)
    chol = np.clip(np.round(chol, 1), 2.0, 12.0)

    cvd_logit = (
        -3.1
        + 0.55 * (age - 60) / 10
        + 0.55 * male
        + 0.75 * smoker
        + 0.018 * (sbp - 130)
        + 0.28 * (chol - 5.2)
        + 0.6 * diabetes
    )
    cvd = rng.random(n) < _sigmoid(cvd_logit)
    # BMI goes missing at random after it has shaped the rest: the truth was there, unrecorded.
    bmi_recorded = np.where(rng.random(n) < pop.bmi_missing, np.nan, bmi)

    return pl.DataFrame(
        {
            "age": age.astype(np.int64),
            "sex": pl.Series(["F", "M"]).gather(male.astype(np.int64)),
            "region": pl.Series(_REGIONS).gather(region),
            "bmi": pl.Series(bmi_recorded).fill_nan(None),
            "systolic_bp": sbp.astype(np.int64),
            "smoker": smoker,
            "cholesterol": chol,
            "diabetes": diabetes,
            "cvd": cvd.astype(np.int64),
        }
    )


def write_demo_dataset(
    directory: str | Path, hospital: str, n: int | None = None
) -> tuple[Path, Path]:
    """Write ``<hospital>_patients.parquet`` and ``patients.schema.toml`` into ``directory``.

    These are the two files ``rds dataset add`` takes; the directory is created if needed.
    Returns ``(parquet_path, schema_path)``.
    """
    frame = generate_patients(hospital, n)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    parquet_path = out / f"{hospital}_patients.parquet"
    schema_path = out / _SCHEMA_FILE
    frame.write_parquet(parquet_path)
    schema_path.write_text(_schema_text(), encoding="utf-8")
    return parquet_path, schema_path


def _population(hospital: str) -> _Population:
    try:
        return _POPULATIONS[hospital]
    except KeyError:
        raise ValueError(
            f"unknown demo hospital {hospital!r}; choose one of {', '.join(HOSPITALS)}"
        ) from None


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-x))
    return out
