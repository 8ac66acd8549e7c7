"""Accuracy: the ± at 95% of each released value, and the preview summary.

A count or sum has integer Laplace noise, whose 95% bound comes from OpenDP
(``discrete_laplacian_scale_to_accuracy``; a sum's is in units of the fixed-point integers and
scaled back). A quantile's error is not a ± (the exponential mechanism picks a candidate), so
it has none, as in OpenDP's ``summarize``.

Means and variances are ratios of noisy sums to the noisy row count ``n``, so their ± depends
on ``n``, which is private until released. Their bound is approximate: each of the ``k`` noisy
parts is bounded at level ``alpha / k`` (a union bound, so all hold together with 95%
probability), and with sum error ``a_s`` and count error ``a_n`` the mean of the centred
values ``m`` is off by at most ``(a_s + |m| a_n) / (n - a_n)``; a variance adds the error of
the mean of squares and ``2 |m| e + e**2`` from squaring the mean. The rounding of the
fixed-point encoding (at most ``resolution`` per value) is not included. Values are clamped
to their public range afterwards, so the ± never exceeds the range's width.

Everything here is total: a ± that cannot be computed, or is not finite, is ``None`` (the
preview is JSON, and the release's ± is computed after the mechanism ran, where nothing may
fail).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rds_kernel.dp._opendp import OpenDPException, dp
from rds_kernel.dp.compile import CompiledQuery, Output

__all__ = ["ALPHA", "Noise", "derived_accuracy", "noise_accuracy", "summarize"]

ALPHA = 0.05


@dataclass(frozen=True)
class Noise:
    """The noise on one component, as OpenDP's ``summarize_polars_measurement`` reports it."""

    distribution: str
    scale: float


def _finite(x: float | None) -> float | None:
    """``x`` if it is a finite number, else ``None`` (JSON has no inf or NaN)."""
    return x if x is not None and math.isfinite(x) else None


def noise_accuracy(noise: Noise, alpha: float = ALPHA) -> float | None:
    """The ± at level ``alpha`` of one component (``None`` for non-additive noise, or if
    OpenDP cannot compute it). Never raises: it is also used after a release."""
    if noise.distribution != "Integer Laplace":
        return None
    if noise.scale == 0:
        return 0.0
    try:
        acc = float(dp.discrete_laplacian_scale_to_accuracy(noise.scale, alpha))
    except (OpenDPException, ArithmeticError, ValueError):
        return None
    return max(acc, 0.0) if math.isfinite(acc) else None


def derived_accuracy(
    out: Output, values: Sequence[float], noise: Mapping[str, Noise]
) -> float | None:
    """The approximate ± at 95% of a mean or variance, from its released parts.

    ``values`` are the noisy sums and count in the order of ``out.parts``. Never raises (it
    runs after a release); ``None`` when the ± is unknown.
    """
    enc = out.encoding
    assert enc is not None
    k = len(out.parts)
    accs = [noise_accuracy(noise[p], ALPHA / k) for p in out.parts]
    if any(a is None for a in accs):
        return None
    *a_sums, a_n = (float(a) for a in accs if a is not None)
    *sums, n = values
    width = enc.hi - enc.lo
    most = width if out.op == "mean" else (width / 2) * (width / 2)
    denominator = n - a_n
    if not denominator > 1:  # also when n is NaN
        return _finite(most)
    errs = [(a + abs(s / n) * a_n) / denominator for a, s in zip(a_sums, sums, strict=True)]
    if out.op == "mean":
        return _finite(min(errs[0] * enc.unit, most))
    m1 = sums[0] / n
    e1, e2 = errs
    return _finite(min((e2 + 2 * abs(m1) * e1 + e1 * e1) * enc.unit * enc.unit, most))


def _preview_accuracy(
    out: Output, noise: Mapping[str, Noise], public_rows: int | None
) -> float | None:
    """A mean's or variance's ± before release, if the row count is public (else ``None``)."""
    if public_rows is None:
        return None
    enc = out.encoding
    assert enc is not None
    # the worst case over the data: the centred mean (and mean square) as large as possible
    top = max(abs(enc.bounds[0]), abs(enc.bounds[1]))
    values: list[float] = [top * public_rows]
    if out.op == "variance":
        assert enc.square_bounds is not None
        values.append(max(abs(enc.square_bounds[0]), abs(enc.square_bounds[1])) * public_rows)
    return derived_accuracy(out, [*values, float(public_rows)], noise)


def summarize(
    compiled: CompiledQuery,
    noise: Mapping[str, Noise],
    threshold: int | None,
    public_rows: int | None,
) -> list[dict[str, Any]]:
    """One preview row per requested aggregate: mechanism, scale, ± at 95%, threshold.

    ``scale`` is in the aggregate's own units (for a mean or variance: of its sum).
    ``public_rows`` is the public row count, when the query neither filters nor groups.
    """
    rows = []
    for out in compiled.outputs:
        first = noise[out.parts[0]]
        unit = out.encoding.unit if out.encoding is not None else 1.0
        note = None
        if out.op in ("count", "sum", "quantile"):
            acc = noise_accuracy(first)
            accuracy = acc * unit if acc is not None else None
        else:
            accuracy = _preview_accuracy(out, noise, public_rows)
            a_s, a_n = noise_accuracy(first), noise_accuracy(noise[out.parts[-1]])
            if out.op == "mean":
                note = (
                    f"noisy sum / noisy row count n: about ± ({(a_s or 0) * unit:.4g} + "
                    f"|mean - midpoint of the bounds| × {a_n or 0:.4g}) / n at 95%; "
                    "the release reports it for the released n"
                )
            else:
                note = (
                    "from noisy sums of values and squares over the noisy row count n: the ± "
                    "shrinks as 1/n and the release reports it for the released n"
                )
        if out.encoding is not None and not out.encoding.exact:
            extra = f"values are rounded to steps of {out.encoding.resolution:.3g} before summing"
            note = f"{note}; {extra}" if note else extra
        rows.append(
            {
                "aggregate": out.alias,
                "statistic": out.op,
                "mechanism": first.distribution,
                "scale": _finite(first.scale * unit),
                "accuracy": _finite(accuracy),
                "threshold": threshold,
                "note": note,
            }
        )
    return rows
