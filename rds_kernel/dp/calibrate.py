"""Analytic noise calibration: the scale (and threshold) that spend exactly the requested loss.

OpenDP's ``Context`` finds the noise scale by binary search, rebuilding the measurement some
fifty times (~0.45 s). Every mechanism a query uses here (integer Laplace, the exponential
mechanism of quantiles) has a pure-DP loss inversely proportional to its scale, and all take
their scale from one ``global_scale`` ``s``, so ``epsilon(s) = epsilon(1) / s``. We build once
at ``s = 1``, solve, rebuild and verify ``m.map(d_in)`` against the target; if rounding in
OpenDP's map lands a hair above it, the scale is nudged up (bounded loop). The charged cost is
always the verified map, never the request.

With unknown group keys the noisy row count also carries a threshold; its delta falls off
about geometrically in the threshold (a Laplace tail), so the smallest admissible integer
threshold is extrapolated from two evaluations and confirmed by its neighbour (4 builds for
row-level privacy), with a safeguarded search when the tail is not yet geometric.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rds_kernel.dp._opendp import OpenDPException
from rds_kernel.errors import InternalError, SpecError

__all__ = ["NO_THRESHOLD", "Builder", "Calibration", "calibrate", "privacy_loss"]

Builder = Callable[[float, int | None], Any]
"""Makes the measurement for a ``global_scale`` and a ``threshold`` (``None``: none)."""

NO_THRESHOLD = 2**32 - 1  # the largest u32: a threshold that releases no key in practice
_NUDGES = 40


@dataclass(frozen=True)
class Calibration:
    """A measurement whose verified cost ``(epsilon, delta)`` is within the target."""

    measurement: Any
    scale: float
    threshold: int | None
    cost: tuple[float, float]


def privacy_loss(measurement: Any, d_in: Any) -> tuple[float, float]:
    """``measurement.map(d_in)`` as ``(epsilon, delta)``, for pure and approximate DP alike."""
    loss = measurement.map(d_in)
    if isinstance(loss, tuple):
        return float(loss[0]), float(loss[1])
    return float(loss), 0.0


def calibrate(
    build: Builder,
    d_in: Any,
    epsilon: float,
    delta: float,
    *,
    thresholded: bool,
    min_threshold: int = 2,
) -> Calibration:
    """The measurement with the smallest noise whose privacy loss is at most the target.

    ``thresholded`` says the query releases unknown group keys and needs a threshold (and
    ``delta > 0``); OpenDP accepts thresholds above the rows one privacy unit may contribute
    to a group, so the search starts at ``min_threshold`` (that bound plus one).

    Raises :class:`SpecError` when no scale or threshold can meet the target, and
    :class:`InternalError` if OpenDP's map stops behaving as ``1 / scale``.
    """
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise SpecError(f"epsilon must be a positive number, got {epsilon}")
    t_ref = NO_THRESHOLD if thresholded else None
    ref_eps, _ = privacy_loss(build(1.0, t_ref), d_in)
    if not math.isfinite(ref_eps):
        raise SpecError("OpenDP reports an unbounded privacy loss for this query")
    if ref_eps == 0.0:
        # every query we compile has noise that costs something; a free one means the plan
        # or OpenDP's analysis is not what we think, so release nothing
        raise InternalError("OpenDP reports no privacy loss for this query; refusing to run it")
    scale, m = _solve_scale(build, d_in, epsilon, ref_eps, t_ref)
    threshold = None
    if thresholded:
        known = {NO_THRESHOLD: privacy_loss(m, d_in)[1]}

        def delta_at(t: int) -> float:
            try:
                return privacy_loss(build(scale, t), d_in)[1]
            except OpenDPException as exc:
                if "threshold must be greater than" in str(exc.message):
                    return math.inf
                raise

        threshold = _solve_threshold(delta_at, delta, known, min_threshold)
        m = build(scale, threshold)
    cost = privacy_loss(m, d_in)
    if cost[0] > epsilon or cost[1] > delta:
        raise InternalError(
            f"calibration failed to verify: cost {cost} exceeds the target ({epsilon}, {delta})"
        )
    return Calibration(m, scale, threshold, cost)


def _solve_scale(
    build: Builder, d_in: Any, epsilon: float, ref_eps: float, t_ref: int | None
) -> tuple[float, Any]:
    scale = ref_eps / epsilon
    step = 4 * math.ulp(scale)
    for _ in range(_NUDGES):
        m = build(scale, t_ref)
        eps = privacy_loss(m, d_in)[0]
        if eps <= epsilon:
            return scale, m
        # eps(s) = ref_eps / s, so the gap says how far to go; the floor keeps the loop moving
        scale = max(scale * eps / epsilon, scale + step)
        step *= 2
    raise InternalError(
        f"could not calibrate the noise scale for epsilon={epsilon}: OpenDP's privacy map "
        "does not scale as 1/scale for this query"
    )


def _solve_threshold(
    delta_at: Callable[[int], float], delta: float, known: dict[int, float], start: int
) -> int:
    """The smallest threshold whose delta is at most ``delta``; ``delta_at`` is monotone.

    ``known`` holds deltas already evaluated, by threshold. OpenDP refuses thresholds up to
    the contribution bound (``start - 1``); ``delta_at`` reports those as an infinite delta.
    The tail is close to geometric in the threshold, so the search jumps to where two
    neighbouring thresholds extrapolate it to meet ``delta`` (usually the answer), and
    otherwise brackets by doubling and interpolates ``log(delta)`` inside the bracket,
    bisecting whenever an interpolation fails to halve it.
    """
    if delta <= 0:
        raise SpecError(
            "grouping with unknown keys needs delta > 0, e.g. delta=1e-6, "
            "or give the group keys publicly"
        )
    memo = dict(known)

    def at(t: int) -> float:
        if t not in memo:
            memo[t] = delta_at(t)
        return memo[t]

    def ok(t: int) -> bool:
        return at(t) <= delta

    if not ok(NO_THRESHOLD):
        raise SpecError(
            f"delta={delta:g} is too small for grouping with unknown keys: OpenDP cannot "
            "reach it at any threshold; use a larger delta, e.g. delta=1e-6"
        )
    lo, hi = start - 1, NO_THRESHOLD  # invariant: ok(lo) is False, ok(hi) is True
    # gallop up from the start, doubling, to bracket the answer within a factor of two; the
    # first time the tail is measurable, jump to where it extrapolates to instead
    t, extrapolated = start, False
    while t < hi:
        if ok(t):
            hi = t
            if extrapolated and t - 1 > lo and not ok(t - 1):
                return t
            break
        lo, t = t, 2 * t
        if not extrapolated and 0 < at(lo) < 1:
            extrapolated = True
            if ok(lo + 1):
                return lo + 1
            guess = _extrapolate(at(lo), at(lo + 1), lo + 1, delta)
            lo += 1
            if guess is not None and lo < guess:
                t = guess
    bisect = False
    while hi - lo > 1:
        guess = None if bisect else _interpolate(lo, at(lo), hi, at(hi), delta)
        probe = guess if guess is not None and lo < guess < hi else (lo + hi) // 2
        width = hi - lo
        if ok(probe):
            hi = probe
        else:
            lo = probe
        bisect = hi - lo > width // 2
    return hi


def _extrapolate(d_prev: float, d_last: float, t_last: int, target: float) -> int | None:
    """Where a geometric tail through ``(t_last - 1, d_prev)``, ``(t_last, d_last)`` meets
    ``target``."""
    if not (0 < d_last < d_prev) or not (0 < target < d_last):
        return None
    steps = math.log(target / d_last) / math.log(d_last / d_prev)
    return t_last + math.ceil(steps) if math.isfinite(steps) else None


def _interpolate(lo: int, d_lo: float, hi: int, d_hi: float, target: float) -> int | None:
    """Where the line through ``(lo, log d_lo)``, ``(hi, log d_hi)`` meets ``log target``."""
    if not (0 < d_hi <= target < d_lo < math.inf):
        return None
    frac = math.log(d_lo / target) / math.log(d_lo / d_hi)
    return lo + math.ceil(frac * (hi - lo))
