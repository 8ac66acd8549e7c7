"""Dataset schemas: the public contract between a data owner and the scientists.

A schema is read from a TOML file beside the data (see architecture §4) and travels as JSON.
It holds only what the owner declares public: column types, bounds, category lists, nullability,
descriptions, an optional public row count and an optional identifier column for user-level
privacy. Nothing here ever looks at private rows.

>>> s = Schema.from_dict({"columns": {"age": {"type": "int", "bounds": [0, 120]}}})
>>> s.column("age").bounds
(0, 120)
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal, cast

from rds_kernel.errors import SchemaError

__all__ = ["COLUMN_TYPES", "Column", "ColumnType", "Schema", "load_schema"]

ColumnType = Literal["int", "float", "bool", "category", "string", "date"]
COLUMN_TYPES: tuple[ColumnType, ...] = ("int", "float", "bool", "category", "string", "date")
NUMERIC_TYPES = ("int", "float")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # fullmatch: "$" would allow a final "\n"
_COLUMN_KEYS = {"type", "bounds", "categories", "nullable", "description", "null_rate"}
_SCHEMA_KEYS = {
    "name",
    "description",
    "public_row_count",
    "identifier",
    "max_contributions",
    "columns",
}
MAX_COLUMNS = 512
MAX_CATEGORIES = 10_000

Bound = int | float | str


@dataclass(frozen=True)
class Column:
    """One column: its type and what the owner declares public about it.

    ``bounds`` are inclusive public bounds (numbers; ISO dates for ``date`` columns) used to
    clamp values in aggregates and to generate mock data. ``categories`` are the public keys of
    a ``category`` column. ``null_rate`` is only a hint for mock data.
    """

    name: str
    type: ColumnType
    bounds: tuple[Bound, Bound] | None = None
    categories: tuple[str, ...] | None = None
    nullable: bool = False
    description: str = ""
    null_rate: float | None = None

    def __post_init__(self) -> None:
        # categories are public group keys: a repeated key would come back equal exactly when
        # it is in the data, so no Column may hold one, however it is built
        if self.categories is not None and len(set(self.categories)) != len(self.categories):
            raise SchemaError(
                f"column {self.name!r}: categories must not repeat; list each category once",
                {"where": f"column {self.name!r}"},
            )

    @property
    def is_numeric(self) -> bool:
        return self.type in NUMERIC_TYPES

    @property
    def public_keys(self) -> tuple[Any, ...] | None:
        """The public group-by keys of this column, if it has any."""
        if self.type == "bool":
            return (False, True)
        if self.type == "category":
            return self.categories
        return None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "nullable": self.nullable}
        if self.bounds is not None:
            out["bounds"] = list(self.bounds)
        if self.categories is not None:
            out["categories"] = list(self.categories)
        if self.description:
            out["description"] = self.description
        if self.null_rate is not None:
            out["null_rate"] = self.null_rate
        return out


@dataclass(frozen=True)
class Schema:
    """A dataset's public schema. Build it with :meth:`from_dict` or :func:`load_schema`."""

    columns: tuple[Column, ...]
    description: str = ""
    name: str = ""
    public_row_count: int | None = None
    identifier: str | None = None
    max_contributions: int = 1
    _index: dict[str, Column] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({c.name: c for c in self.columns})

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def column(self, name: str) -> Column:
        """The column called ``name``; ``KeyError`` if there is none."""
        return self._index[name]

    def with_name(self, name: str) -> Schema:
        return Schema(
            columns=self.columns,
            description=self.description,
            name=name,
            public_row_count=self.public_row_count,
            identifier=self.identifier,
            max_contributions=self.max_contributions,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form served by the node and read back by :meth:`from_dict`."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "columns": {c.name: c.to_dict() for c in self.columns},
        }
        if self.public_row_count is not None:
            out["public_row_count"] = self.public_row_count
        if self.identifier is not None:
            out["identifier"] = self.identifier
            out["max_contributions"] = self.max_contributions
        return out

    @classmethod
    def from_dict(cls, raw: Any, source: str = "schema") -> Schema:
        """Validate a schema given as a mapping (parsed TOML or JSON).

        ``source`` names the file in error messages, so an owner knows what to edit.
        """
        return _parse_schema(raw, source)


def load_schema(path: str | Path) -> Schema:
    """Read and validate a TOML schema file."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SchemaError(
            f"{p}: schema file not found; write one beside the data (see README, 'Schema file')",
            {"file": str(p)},
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise SchemaError(f"{p}: not valid TOML ({exc})", {"file": str(p)}) from None
    return _parse_schema(raw, str(p))


def _fail(source: str, where: str, problem: str) -> SchemaError:
    return SchemaError(f"{source}: {where}: {problem}", {"file": source, "where": where})


def _parse_schema(raw: Any, source: str) -> Schema:
    if not isinstance(raw, dict):
        raise _fail(source, "top level", "expected a table of settings")
    unknown = set(raw) - _SCHEMA_KEYS
    if unknown:
        raise _fail(
            source,
            "top level",
            f"unknown key(s) {sorted(unknown)}; allowed keys are {sorted(_SCHEMA_KEYS)}",
        )
    cols_raw = raw.get("columns")
    if not isinstance(cols_raw, dict) or not cols_raw:
        raise _fail(source, "columns", "declare at least one column as [columns.NAME]")
    if len(cols_raw) > MAX_COLUMNS:
        raise _fail(source, "columns", f"at most {MAX_COLUMNS} columns are supported")
    columns = tuple(_parse_column(source, name, spec) for name, spec in cols_raw.items())
    names = {c.name for c in columns}

    description = raw.get("description", "")
    if not isinstance(description, str):
        raise _fail(source, "description", "must be a string")
    name = raw.get("name", "")
    if not isinstance(name, str) or (name and not _NAME.fullmatch(name)):
        raise _fail(source, "name", "must be a simple name such as 'patients'")

    prc = raw.get("public_row_count")
    if prc is not None and (isinstance(prc, bool) or not isinstance(prc, int) or prc < 0):
        raise _fail(source, "public_row_count", "must be a non-negative integer, or left out")

    identifier = raw.get("identifier")
    if identifier is not None and (not isinstance(identifier, str) or identifier not in names):
        raise _fail(
            source,
            "identifier",
            f"{identifier!r} is not a declared column; name one of {sorted(names)}",
        )
    max_contrib = raw.get("max_contributions", 1)
    if isinstance(max_contrib, bool) or not isinstance(max_contrib, int) or max_contrib < 1:
        raise _fail(source, "max_contributions", "must be a positive integer (rows per person)")
    if "max_contributions" in raw and identifier is None:
        raise _fail(
            source, "max_contributions", "only applies with an identifier column; add identifier"
        )
    return Schema(
        columns=columns,
        description=description,
        name=name,
        public_row_count=prc,
        identifier=identifier,
        max_contributions=max_contrib,
    )


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _parse_column(source: str, name: Any, spec: Any) -> Column:
    where = f"column {name!r}"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _fail(
            source, where, "column names must be letters, digits and _ (not starting with a digit)"
        )
    if not isinstance(spec, dict):
        raise _fail(source, where, 'expected a table such as [columns.age] type = "int"')
    unknown = set(spec) - _COLUMN_KEYS
    if unknown:
        raise _fail(
            source, where, f"unknown key(s) {sorted(unknown)}; allowed are {sorted(_COLUMN_KEYS)}"
        )
    ctype = spec.get("type")
    if ctype not in COLUMN_TYPES:
        raise _fail(source, where, f"type {ctype!r} is not one of {', '.join(COLUMN_TYPES)}")

    bounds: tuple[Bound, Bound] | None = None
    if "bounds" in spec:
        bounds = _parse_bounds(source, where, ctype, spec["bounds"])
    categories: tuple[str, ...] | None = None
    if ctype == "category":
        cats = spec.get("categories")
        if (
            not isinstance(cats, list)
            or not cats
            or not all(isinstance(c, str) and c for c in cats)
        ):
            raise _fail(
                source,
                where,
                'a category column needs categories = ["A", "B", ...] (non-empty strings)',
            )
        if len(set(cats)) != len(cats):
            raise _fail(source, where, "categories must not repeat")
        if len(cats) > MAX_CATEGORIES:
            raise _fail(source, where, f"at most {MAX_CATEGORIES} categories")
        categories = tuple(cats)
    elif "categories" in spec:
        raise _fail(source, where, f"categories only apply to type 'category', not {ctype!r}")

    nullable = spec.get("nullable", False)
    if not isinstance(nullable, bool):
        raise _fail(source, where, "nullable must be true or false")
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise _fail(source, where, "description must be a string")
    null_rate = spec.get("null_rate")
    if null_rate is not None:
        if not _is_number(null_rate) or not 0 <= null_rate <= 1:
            raise _fail(source, where, "null_rate must be a number between 0 and 1")
        if not nullable:
            raise _fail(source, where, "null_rate needs nullable = true")
    return Column(
        name=name,
        type=cast(ColumnType, ctype),
        bounds=bounds,
        categories=categories,
        nullable=nullable,
        description=description,
        null_rate=float(null_rate) if null_rate is not None else None,
    )


def _parse_bounds(source: str, where: str, ctype: str, raw: Any) -> tuple[Bound, Bound]:
    if ctype not in ("int", "float", "date"):
        raise _fail(source, where, f"bounds only apply to int, float and date, not {ctype!r}")
    if not isinstance(raw, list) or len(raw) != 2:
        raise _fail(source, where, "bounds must be a pair [lower, upper]")
    lo, hi = raw
    if ctype == "date":
        try:
            dlo, dhi = date.fromisoformat(str(lo)), date.fromisoformat(str(hi))
        except ValueError:
            raise _fail(
                source, where, 'date bounds must be ISO dates, e.g. ["2019-01-01", "2024-12-31"]'
            ) from None
        if dlo >= dhi:
            raise _fail(source, where, "the lower bound must be below the upper bound")
        return (dlo.isoformat(), dhi.isoformat())
    if not (_is_number(lo) and _is_number(hi)):
        raise _fail(source, where, "bounds must be finite numbers")
    if ctype == "int" and not (isinstance(lo, int) and isinstance(hi, int)):
        raise _fail(source, where, "an int column needs integer bounds, e.g. [0, 120]")
    if ctype == "int" and not (lo >= -(2**63) and hi <= 2**63 - 1):
        raise _fail(source, where, "int bounds must fit in 64 bits")
    if lo >= hi:
        raise _fail(source, where, f"the lower bound {lo} must be below the upper bound {hi}")
    if ctype == "float":
        return (float(lo), float(hi))
    return (int(lo), int(hi))
