"""The input space of every measurement: the dataset's domain, metric and privacy unit.

Built from the owner's public schema alone, never from data, the way OpenDP's ``Context``
builds it from a frame: every column is nullable and floats may hold NaN (the broadest domain,
so a file that breaks its schema cannot break the privacy analysis), and one margin bounds the
row count. The query plan starts from :func:`empty_frame`, a schema-only ``LazyFrame``.

``MAX_LENGTH`` is the largest ``max_length`` OpenDP accepts (it is a ``u32``), which is also
the most rows polars' 32-bit runtime can index, so it holds for any file the node can scan.
It does not cost accuracy: sums are taken over integers (see :mod:`.encode`), where it is only
used to rule out overflow. (A float sum would pay for it in noise: OpenDP widens the float-sum
sensitivity quadratically in ``max_length`` to cover rounding, e.g. a ``[0, 1]`` sum's noise
scale grows from 1.0 to about 2,049 at ``2**31 - 1`` rows.) ``public_row_count`` is not used
as a bound, so a stale declaration cannot weaken the guarantee, and not as an invariant either:
OpenDP would then treat one row changing, not one added or removed, as the unit.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import polars as pl

from rds_kernel.dp._opendp import Margin, dp
from rds_kernel.schema import ColumnType, Schema

__all__ = ["MAX_LENGTH", "InputSpace", "conform", "empty_frame", "input_space", "polars_dtype"]

MAX_LENGTH = 2**32 - 1

_POLARS: dict[ColumnType, Any] = {
    "int": pl.Int64,
    "float": pl.Float64,
    "bool": pl.Boolean,
    "category": pl.String,
    "string": pl.String,
    "date": pl.Date,
}
_OPENDP: dict[ColumnType, str] = {
    "int": "i64",
    "float": "f64",
    "bool": "bool",
    "category": "String",
    "string": "String",
    "date": "NaiveDate",
}


def polars_dtype(ctype: str) -> Any:
    """The polars dtype the node stores a column of schema type ``ctype`` as."""
    return _POLARS[ctype]  # type: ignore[index]


@dataclass(frozen=True)
class InputSpace:
    """Domain, metric and ``d_in`` of the private frame, plus the contribution bound.

    Row-level privacy: ``d_in = 1`` row under the symmetric distance. User-level privacy
    (``identifier`` in the schema): ``d_in = 1`` identifier, and the plan must keep at most
    ``truncate`` rows per identifier (:meth:`truncation`), as OpenDP requires.
    """

    domain: Any
    metric: Any
    d_in: int
    identifier: str | None
    truncate: int | None

    def truncation(self) -> pl.Expr | None:
        """A filter keeping a random ``truncate`` rows per identifier, or ``None``."""
        if self.identifier is None or self.truncate is None:
            return None
        rank = pl.int_range(pl.len()).shuffle().over(self.identifier)
        return rank < self.truncate


def input_space(schema: Schema) -> InputSpace:
    """The input space of measurements on a dataset with this schema."""
    domain = dp.lazyframe_domain(
        [
            dp.series_domain(c.name, dp.option_domain(dp.atom_domain(T=_OPENDP[c.type])))
            for c in schema.columns
        ]
    )
    domain = dp.with_margin(domain, Margin(by=[], max_length=MAX_LENGTH))
    if schema.identifier is None:
        return InputSpace(domain, dp.symmetric_distance(), 1, None, None)
    metric, _ = dp.unit_of(contributions=1, identifier=schema.identifier)
    return InputSpace(domain, metric, 1, schema.identifier, schema.max_contributions)


def empty_frame(schema: Schema) -> pl.LazyFrame:
    """A frame with the schema's columns and no rows: the root of every query plan."""
    return pl.LazyFrame(schema={c.name: _POLARS[c.type] for c in schema.columns})


def conform(data: pl.LazyFrame, schema: Schema, used: Collection[str]) -> pl.LazyFrame:
    """The private frame as the measurement expects it: the schema's columns, in order.

    Columns in ``used`` are cast to their declared types: OpenDP swaps its plan's root for this
    frame without checking dtypes, and its overflow analysis assumes the declared ones (an
    ``Int32`` file would be summed as ``Int32``). The others become typed nulls, which the
    domain allows, so the scan reads only what the query needs (OpenDP's plan does not push
    projections down: a count over four columns reads all four, about 7x slower).
    """
    return data.select(
        pl.col(c.name).cast(_POLARS[c.type])
        if c.name in used
        else pl.lit(None, dtype=_POLARS[c.type]).alias(c.name)
        for c in schema.columns
    )
