"""The one place OpenDP is imported and its features are enabled, with typed DP expressions.

Only ``contrib`` is enabled. ``honest-but-curious`` and ``idealized-numerics`` stay off: the
first trusts the caller's arguments, the second assumes real arithmetic and underestimates the
privacy loss of floating-point code (DESIGN §5).

The ``dp_*`` functions are OpenDP's ``pl.Expr.dp`` namespace with types; their noise scale is
left unset, so ``make_private_lazyframe`` fills it from ``global_scale``.
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


def dp_row_count() -> pl.Expr:
    """Noisy number of rows (of the frame, or of each group). Signed: noise is not clamped."""
    return cast(pl.Expr, dp_len(signed=True))


def dp_count(x: pl.Expr) -> pl.Expr:
    """Noisy number of non-null values of ``x``."""
    return cast(pl.Expr, DPExpr(x).count(signed=True))  # type: ignore[no-untyped-call]


def dp_sum(x: pl.Expr, bounds: tuple[int, int]) -> pl.Expr:
    """Noisy sum of ``x`` clamped into ``bounds``."""
    return cast(pl.Expr, DPExpr(x).sum(bounds))  # type: ignore[no-untyped-call]


def dp_quantile(x: pl.Expr, alpha: float, candidates: Sequence[float]) -> pl.Expr:
    """The ``alpha``-quantile of ``x`` chosen among ``candidates`` (exponential mechanism)."""
    return cast(pl.Expr, DPExpr(x).quantile(alpha, list(candidates)))  # type: ignore[no-untyped-call]
