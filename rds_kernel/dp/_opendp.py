"""The one place OpenDP is imported and its features are enabled, with typed DP expressions.

Only ``contrib`` is enabled. ``honest-but-curious`` and ``idealized-numerics`` stay off: the
first trusts the caller's arguments, the second assumes real arithmetic and underestimates the
privacy loss of floating-point code (architecture §5).

The ``dp_*`` functions are OpenDP's ``pl.Expr.dp`` namespace with types. Without a ``scale``
``make_private_lazyframe`` derives each one's noise from ``global_scale``; a given ``scale`` is
multiplied by ``global_scale`` (see :mod:`.compile` for why every component gets its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import opendp.prelude as dp
import polars as pl
from opendp.extras.polars import DPExpr, Margin, dp_len
from opendp.mod import OpenDPException

dp.enable_features("contrib")

__all__ = [
    "Margin",
    "OpenDPException",
    "dp",
    "dp_count",
    "dp_len",
    "dp_quantile",
    "dp_row_count",
    "dp_sum",
]


def dp_row_count(scale: float | None = None) -> pl.Expr:
    """Noisy number of rows (of the frame, or of each group). Signed: noise is not clamped."""
    return cast(pl.Expr, dp_len(scale=scale, signed=True))


def dp_count(x: pl.Expr, scale: float | None = None) -> pl.Expr:
    """Noisy number of non-null values of ``x``."""
    return cast(pl.Expr, DPExpr(x).count(scale=scale, signed=True))  # type: ignore[no-untyped-call]


def dp_sum(x: pl.Expr, bounds: tuple[int, int], scale: float | None = None) -> pl.Expr:
    """Noisy sum of ``x`` clamped into ``bounds``."""
    return cast(pl.Expr, DPExpr(x).sum(bounds, scale=scale))  # type: ignore[no-untyped-call]


def dp_quantile(
    x: pl.Expr, alpha: float, candidates: Sequence[float], scale: float | None = None
) -> pl.Expr:
    """The ``alpha``-quantile of ``x`` chosen among ``candidates`` (exponential mechanism)."""
    expr = DPExpr(x).quantile(alpha, list(candidates), scale=scale)  # type: ignore[no-untyped-call]
    return cast(pl.Expr, expr)
