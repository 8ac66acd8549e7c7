"""Mock data from a schema alone, and the check that fits any frame to a schema.

Mock data is public (architecture §1, promise 1), so :func:`generate_mock` takes a
:class:`~rds_kernel.schema.Schema` and nothing else: it cannot look at private rows because it is
never given any. Values are drawn uniformly inside the public bounds, from the declared
categories, with nulls at the declared ``null_rate``. Each column has its own random stream,
seeded by ``seed`` and the column name, so adding a column or changing one column's declaration
leaves the others' values unchanged. A node seeds a dataset's mock with :func:`mock_seed` of
its own name and the dataset's, so two nodes sharing a schema show different mock rows, and one
node shows the same rows each time it regenerates them.

Defaults where the schema is silent (documented here because scientists will see them):

* rows: ``schema.public_row_count`` capped at :data:`MAX_DEFAULT_ROWS`, else :data:`DEFAULT_ROWS`;
* an ``int``/``float`` column without bounds: :data:`DEFAULT_NUMERIC_BOUNDS` (0 to 100);
* a ``date`` column without bounds: :data:`DEFAULT_DATE_BOUNDS` (2000-01-01 to 2024-12-31);
* a nullable column without ``null_rate``: :data:`DEFAULT_NULL_RATE` (5%) of nulls;
* a ``string`` column: synthetic tokens ``s_000123``;
* the identifier column (``int`` or ``string``): one id per synthetic person, each person on 1 to
  ``max_contributions`` rows, in shuffled order, never null.

:func:`check_frame` is the one place where a frame (private data on the node, an owner's mock
file, generated mock data) is checked against a schema and cast to :func:`frame_polars_schema`.
Messages about private data count the offending rows but never quote their values, because an
error may travel further than the owner's terminal.

>>> from rds_kernel.schema import Schema
>>> s = Schema.from_dict({"columns": {"age": {"type": "int", "bounds": [18, 95]}}})
>>> df = generate_mock(s, n=3, seed=1)
>>> df.schema
Schema([('age', Int64)])
>>> check_frame(df, s, "mock", strict=True).equals(df)
True
"""

from __future__ import annotations

import hashlib
import io
import zlib
from datetime import date
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl

from rds_kernel.errors import SchemaError
from rds_kernel.schema import Column, ColumnType, Schema

__all__ = [
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

DEFAULT_ROWS: Final = 1_000
MAX_DEFAULT_ROWS: Final = 100_000
DEFAULT_NULL_RATE: Final = 0.05
DEFAULT_NUMERIC_BOUNDS: Final = (0, 100)
DEFAULT_DATE_BOUNDS: Final = (date(2000, 1, 1), date(2024, 12, 31))

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EPOCH = date(1970, 1, 1)
_MAX_LISTED = 20  # problems listed in one SchemaError; the rest are counted


def frame_polars_schema(schema: Schema) -> dict[str, pl.DataType]:
    """The polars dtype of every column, in schema order: what :func:`check_frame` returns."""
    return {c.name: _dtype(c.type) for c in schema.columns}


def _dtype(ctype: ColumnType) -> pl.DataType:
    if ctype == "int":
        return pl.Int64()
    if ctype == "float":
        return pl.Float64()
    if ctype == "bool":
        return pl.Boolean()
    if ctype == "date":
        return pl.Date()
    return pl.String()


# --- generation ---------------------------------------------------------------------------------


def mock_seed(node: str, dataset: str) -> int:
    """The seed of ``dataset``'s mock data on the node called ``node``: a stable hash of the two
    public names (SHA-256, the same in every process and on every machine; never of any data).

    >>> mock_seed("hospital_a", "patients") == mock_seed("hospital_a", "patients")
    True
    >>> mock_seed("hospital_a", "patients") != mock_seed("hospital_b", "patients")
    True
    """
    digest = hashlib.sha256(f"rds_kernel mock\0{node}\0{dataset}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def generate_mock(schema: Schema, n: int | None = None, seed: int = 0) -> pl.DataFrame:
    """``n`` rows of mock data that honour ``schema``; the same arguments give the same frame.

    The result has the dtypes of :func:`frame_polars_schema` and passes
    ``check_frame(..., strict=True)``. See the module docstring for the defaults used where
    the schema is silent.
    """
    if n is None:
        prc = schema.public_row_count
        n = DEFAULT_ROWS if prc is None else min(prc, MAX_DEFAULT_ROWS)
    if n < 0:
        raise ValueError(f"n must be a non-negative number of rows, not {n}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed}")
    columns = []
    for col in schema.columns:
        key = zlib.crc32(col.name.encode())
        values = np.random.default_rng([seed, key, 0])
        if col.name == schema.identifier and col.type in ("int", "string"):
            columns.append(_identifier(col, n, schema.max_contributions, values))
            continue
        series = _values(col, n, values)
        if col.nullable:
            rate = DEFAULT_NULL_RATE if col.null_rate is None else col.null_rate
            mask = np.random.default_rng([seed, key, 1]).random(n) < rate
            series = series.scatter(np.flatnonzero(mask), None)
        columns.append(series)
    return pl.DataFrame(columns, schema=frame_polars_schema(schema))


def _values(col: Column, n: int, rng: np.random.Generator) -> pl.Series:
    if col.type == "int":
        lo, hi = _int_bounds(col)
        return pl.Series(col.name, rng.integers(lo, hi, size=n, endpoint=True, dtype=np.int64))
    if col.type == "float":
        flo, fhi = _float_bounds(col)
        u = rng.random(n)
        # Mixing the bounds (not lo + (hi - lo) * u) cannot overflow for huge finite bounds.
        return pl.Series(col.name, np.clip(flo * (1.0 - u) + fhi * u, flo, fhi))
    if col.type == "bool":
        return pl.Series(col.name, rng.random(n) < 0.5)
    if col.type == "category":
        cats = pl.Series(col.name, col.categories or (), dtype=pl.String)
        return cats.gather(rng.integers(0, len(cats), size=n))
    if col.type == "date":
        dlo, dhi = _date_bounds(col)
        days = rng.integers((dlo - _EPOCH).days, (dhi - _EPOCH).days, size=n, endpoint=True)
        return pl.Series(col.name, days.astype(np.int32)).cast(pl.Date)
    return _tokens(col.name, rng.integers(0, 1_000_000, size=n))


def _identifier(col: Column, n: int, max_contributions: int, rng: np.random.Generator) -> pl.Series:
    """One id per synthetic person, each person on 1..max_contributions rows, shuffled."""
    rows_per_person = rng.integers(1, max_contributions, size=max(n, 1), endpoint=True)
    persons = int(np.searchsorted(np.cumsum(rows_per_person), n)) + 1
    ids = rng.permutation(np.repeat(np.arange(persons), rows_per_person[:persons])[:n])
    if col.type == "string":
        return _tokens(col.name, ids)
    lo, hi = _int_bounds(col) if col.bounds is not None else (1, _INT64_MAX)
    span = hi - lo + 1
    # Bounds too narrow for one id per person wrap around: unique as far as the bounds allow.
    return pl.Series(col.name, lo + (ids if span > persons else ids % span), dtype=pl.Int64)


def _tokens(name: str, numbers: np.ndarray) -> pl.Series:
    digits = pl.Series(numbers).cast(pl.String).str.zfill(6)
    return pl.select(pl.format("s_{}", pl.lit(digits)).alias(name)).to_series()


def _int_bounds(col: Column) -> tuple[int, int]:
    lo, hi = col.bounds if col.bounds is not None else DEFAULT_NUMERIC_BOUNDS
    return int(lo), int(hi)


def _float_bounds(col: Column) -> tuple[float, float]:
    lo, hi = col.bounds if col.bounds is not None else DEFAULT_NUMERIC_BOUNDS
    return float(lo), float(hi)


def _date_bounds(col: Column) -> tuple[date, date]:
    if col.bounds is None:
        return DEFAULT_DATE_BOUNDS
    return date.fromisoformat(str(col.bounds[0])), date.fromisoformat(str(col.bounds[1]))


# --- files --------------------------------------------------------------------------------------


def mock_to_csv_bytes(df: pl.DataFrame) -> bytes:
    """``df`` as UTF-8 CSV with a header; nulls are empty fields, dates ISO 8601."""
    buf = io.BytesIO()
    df.write_csv(buf)
    return buf.getvalue()


def mock_to_parquet_bytes(df: pl.DataFrame) -> bytes:
    """``df`` as a Parquet file in memory; it keeps the dtypes exactly."""
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


def load_mock_file(path: str | Path, schema: Schema) -> pl.DataFrame:
    """Read an owner-supplied mock file (``.csv`` or ``.parquet``) and check it strictly.

    The file will be published, so it must hold exactly the schema's columns with values inside
    the public bounds and categories (``check_frame(..., strict=True)``). CSV is read as text
    and parsed per the schema, so a category such as ``"007"`` keeps its leading zeros.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise SchemaError(
            f"{p}: a mock file must be CSV (.csv) or Parquet (.parquet), not "
            f"{suffix or 'a file without suffix'!r}; convert it or rename it",
            {"file": str(p)},
        )
    try:
        df = pl.read_csv(p, infer_schema=False) if suffix == ".csv" else pl.read_parquet(p)
    except FileNotFoundError:
        raise SchemaError(f"{p}: mock file not found; check the path", {"file": str(p)}) from None
    except (pl.exceptions.PolarsError, OSError) as exc:
        kind = "CSV" if suffix == ".csv" else "Parquet"
        raise SchemaError(
            f"{p}: could not be read as {kind} ({exc}); re-export the file as {kind}",
            {"file": str(p)},
        ) from None
    return check_frame(df, schema, str(p), strict=True)


# --- checking -----------------------------------------------------------------------------------


def check_frame(
    df: pl.DataFrame, schema: Schema, source: str, *, strict: bool = False
) -> pl.DataFrame:
    """Check ``df`` against ``schema`` and return its schema columns cast to their dtypes.

    Values are converted where the meaning is unambiguous (integral floats to int, ``"true"``
    and 0/1 to bool, ISO text and datetimes to date, category codes to text); float NaN becomes
    null. Every problem found is reported in one :class:`SchemaError` naming ``source`` (a file
    or dataset, used verbatim), the column and the fix: a missing column, a type that cannot
    hold the column's values, values that do not convert, nulls in a non-nullable column,
    values outside the declared categories.

    Private data (``strict=False``) may hold extra columns, which are dropped, and values
    outside the bounds, which the DP layer clamps. Mock data (``strict=True``) is published
    as-is, so extra columns and values outside the bounds (or not finite) are errors too.
    """
    problems: list[tuple[str, str]] = []
    for name in schema.names:
        if name not in df.columns:
            problems.append(
                (name, f"is missing; add it to the data or remove [columns.{name}] from the schema")
            )
    if strict:
        for name in df.columns:
            if name not in schema:
                problems.append(
                    (
                        name,
                        "is not in the schema; mock data may hold only declared columns, "
                        "so remove it from the file (or declare it in the schema)",
                    )
                )
    out: list[pl.Series] = []
    for col in schema.columns:
        if col.name in df.columns:
            series, found = _check_column(df.get_column(col.name), col, strict)
            out.append(series)
            problems.extend((col.name, p) for p in found)
    if problems:
        raise _problems_error(source, problems)
    return pl.DataFrame(out, schema=frame_polars_schema(schema))


def _problems_error(source: str, problems: list[tuple[str, str]]) -> SchemaError:
    lines = [f"column {name!r} {problem}" for name, problem in problems]
    detail = {
        "file": source,
        "column": problems[0][0],
        "problems": [{"column": n, "problem": p} for n, p in problems],
    }
    if len(lines) == 1:
        return SchemaError(f"{source}: {lines[0]}", detail)
    shown = lines[:_MAX_LISTED]
    if len(lines) > _MAX_LISTED:
        shown.append(f"... and {len(lines) - _MAX_LISTED} more")
    body = "\n".join(f"  - {line}" for line in shown)
    return SchemaError(f"{source}: {len(lines)} problems with the data:\n{body}", detail)


_HOW_TO_STORE: dict[ColumnType, str] = {
    "int": "whole numbers",
    "float": "numbers",
    "bool": "true/false (or 1/0)",
    "date": "dates (a date type or ISO text such as 2024-01-31)",
    "category": "text",
    "string": "text",
}


def _check_column(s: pl.Series, col: Column, strict: bool) -> tuple[pl.Series, list[str]]:
    converted = _convert(s, col.type)
    if converted is None:
        return s, [
            f"has type {s.dtype}, which cannot hold {col.type} values; store "
            f"{_HOW_TO_STORE[col.type]}, or change the column's type in the schema"
        ]
    problems: list[str] = []
    # Missing before conversion: null, NaN, or blank text where the column is not text.
    missing_before = s.is_null()
    if s.dtype.is_float():
        missing_before |= s.is_nan().fill_null(False)
    if s.dtype == pl.String and col.type not in ("category", "string"):
        missing_before |= (s.str.strip_chars() == "").fill_null(False)
    if converted.dtype == pl.Float64:
        missing_before |= converted.is_nan().fill_null(False)
        converted = converted.fill_nan(None)
    unconverted = ~missing_before & converted.is_null()
    if unconverted.any():
        problems.append(
            f"has {_rows(unconverted)} not readable as {_HOW_TO_STORE[col.type]}"
            f"{_examples(s.filter(unconverted), strict)}; fix them, or change the column's "
            "type in the schema"
        )
    nulls = int(missing_before.sum())
    if nulls and not col.nullable:
        problems.append(
            f"has {_plural(nulls, 'missing value')} but is not nullable; fill them in, or add "
            f"nullable = true to [columns.{col.name}]"
        )
    if col.categories is not None:
        unknown = converted.is_not_null() & ~converted.is_in(col.categories)
        if unknown.any():
            problems.append(
                f"has {_rows(unknown)} outside the declared categories"
                f"{_examples(converted.filter(unknown), strict)}; add them to categories in "
                f"[columns.{col.name}], or fix the data"
            )
    if strict:
        outside = _outside_bounds(converted, col)
        if outside is not None and outside.any():
            bounds = "finite numbers" if col.bounds is None else f"bounds {list(col.bounds)}"
            problems.append(
                f"has {_rows(outside)} outside its {bounds}"
                f"{_examples(converted.filter(outside), strict)}; mock data is published and "
                "must stay inside the public bounds, so fix the file (or widen the bounds)"
            )
    return converted.alias(col.name), problems


def _convert(s: pl.Series, ctype: ColumnType) -> pl.Series | None:
    """``s`` cast to ``ctype``'s dtype (unconvertible values null), or None if its dtype can't."""
    dt = s.dtype
    target = _dtype(ctype)
    if dt == pl.Null or dt == target:
        return s.cast(target)
    is_text = dt == pl.String
    is_number = dt.is_numeric() or dt == pl.Boolean
    if ctype == "int":
        if dt.is_integer() or dt == pl.Boolean:
            return s.cast(pl.Int64, strict=False)
        if is_text:
            as_int = s.str.strip_chars().cast(pl.Int64, strict=False)
            return _apply(pl.coalesce(pl.lit(as_int), _integral(pl.lit(_to_float(s)))), as_int)
        if is_number:
            return _apply(_integral(pl.lit(s.cast(pl.Float64))), s)
        return None
    if ctype == "float":
        if is_number:
            return s.cast(pl.Float64)
        return _to_float(s) if is_text else None
    if ctype == "bool":
        if is_number:
            v = pl.lit(s)
            return _apply(pl.when(v == 1).then(True).when(v == 0).then(False), s)
        if is_text:
            v = pl.lit(s.str.strip_chars().str.to_lowercase())
            truthy = v.is_in(["true", "1"])
            return _apply(pl.when(truthy).then(True).when(v.is_in(["false", "0"])).then(False), s)
        return None
    if ctype == "date":
        if isinstance(dt, pl.Datetime):
            return s.dt.date()
        if is_text:
            return s.str.strip_chars().str.to_date("%Y-%m-%d", strict=False)
        return None
    if is_text or is_number or dt.is_temporal() or isinstance(dt, pl.Categorical | pl.Enum):
        return s.cast(pl.String)
    return None


def _to_float(s: pl.Series) -> pl.Series:
    return s.str.strip_chars().cast(pl.Float64, strict=False)


def _integral(v: pl.Expr) -> pl.Expr:
    """Whole, finite float values as Int64; anything else (3.5, inf, 1e30) null."""
    return pl.when(v.is_finite() & (v.floor() == v)).then(v).cast(pl.Int64, strict=False)


def _apply(expr: pl.Expr, like: pl.Series) -> pl.Series:
    return pl.select(expr.alias(like.name)).to_series()


def _outside_bounds(s: pl.Series, col: Column) -> pl.Series | None:
    if col.type == "float":
        lo, hi = _float_bounds(col) if col.bounds is not None else (-np.inf, np.inf)
        return s.is_not_null() & ~(s.is_finite() & (s >= lo) & (s <= hi))
    if col.type == "int" and col.bounds is not None:
        ilo, ihi = _int_bounds(col)
        return (s < ilo) | (s > ihi)
    if col.type == "date" and col.bounds is not None:
        dlo, dhi = _date_bounds(col)
        return (s < dlo) | (s > dhi)
    return None


def _plural(k: int, noun: str) -> str:
    return f"{k:,} {noun}{'s' if k != 1 else ''}"


def _rows(mask: pl.Series) -> str:
    return _plural(int(mask.sum()), "value")


def _examples(values: pl.Series, strict: bool) -> str:
    """A few offending values, for mock data only: private values never go into a message."""
    if not strict:
        return ""
    shown = values.unique(maintain_order=True).head(5).cast(pl.String).to_list()
    quote = repr if values.dtype == pl.String else str
    return f" (e.g. {', '.join(quote(v) for v in shown)})"
