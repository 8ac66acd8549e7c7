"""What the audit log records of a refused request: who, what they asked, and why not.

The asked-for values come from untrusted input, so only a few plain fields are kept (the
dataset, ε, δ, the request_id), each checked for type and cut short: the audit log cannot be
made to hold a megabyte or an object.

Authentication failures come from anyone, so they are coalesced: at most one audit row per
client address and :data:`AUTH_WINDOW` seconds, with the number left out since — a flood of
bad tokens costs the database almost nothing and still leaves its trace. A user's refused
requests are recorded in full up to :data:`REFUSALS_PER_WINDOW` per window, then counted the
same way.

>>> asked({"dataset": "patients", "epsilon": 0.5, "aggregates": ["..."]}, "r-1")
{'request_id': 'r-1', 'dataset': 'patients', 'epsilon': 0.5}
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["AUTH_WINDOW", "REFUSALS_PER_WINDOW", "AuthFailures", "Coalescer", "asked"]

AUTH_WINDOW = 60.0  # seconds
REFUSALS_PER_WINDOW = 30  # audit rows of refused requests per user and window
_TEXT = 128  # characters kept of an asked-for text


def _text(value: Any) -> str | None:
    return value[:_TEXT] if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def asked(raw: Any, request_id: Any = None) -> dict[str, Any]:
    """The plain fields of an untrusted request worth keeping in the audit log."""
    raw = raw if isinstance(raw, dict) else {}
    fields = {
        "request_id": _text(request_id),
        "dataset": _text(raw.get("dataset")),
        "kind": _text(raw.get("kind")),
        "epsilon": _number(raw.get("epsilon")),
        "delta": _number(raw.get("delta")),
    }
    params = raw.get("params")
    if isinstance(params, dict) and fields["epsilon"] is None:
        fields["epsilon"] = _number(params.get("epsilon"))
    return {k: v for k, v in fields.items() if v is not None}


class Coalescer:
    """Writes at most ``burst`` audit rows per key (a client, a user) and window.

    Beyond that, events are counted, and the next row written for the key says how many were
    left out (``"unrecorded"``): a flood costs the database almost nothing and still leaves its
    trace and its size.
    """

    def __init__(
        self,
        write: Callable[[dict[str, Any]], None],
        *,
        burst: int,
        window: float = AUTH_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._burst = burst
        self._window = window
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window start, rows written)
        self._unrecorded: dict[str, int] = {}
        self._lock = threading.Lock()

    def record(self, key: str, detail: dict[str, Any]) -> None:
        """Write ``detail`` for ``key`` unless the key used up its rows for this window."""
        now = self._clock()
        with self._lock:
            start, written = self._windows.get(key, (now, 0))
            if now - start >= self._window:
                start, written = now, 0
            if written >= self._burst:
                self._unrecorded[key] = self._unrecorded.get(key, 0) + 1
                self._windows[key] = (start, written)
                return
            self._windows[key] = (start, written + 1)
            left_out = self._unrecorded.pop(key, 0)
            if len(self._windows) > 10_000:  # forget the oldest keys; the maps stay bounded
                for old in sorted(self._windows, key=lambda k: self._windows[k][0])[:5_000]:
                    self._windows.pop(old, None)
                    self._unrecorded.pop(old, None)
        self._write({**detail, "unrecorded": left_out} if left_out else detail)


class AuthFailures:
    """Authentication failures: one audit row per client and window, with the count since."""

    def __init__(
        self,
        write: Callable[[dict[str, Any]], None],
        window: float = AUTH_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rows = Coalescer(write, burst=1, window=window, clock=clock)

    def record(self, client: str, path: str, reason: str) -> None:
        """Count one failure; write an audit row unless one was written for ``client`` lately."""
        self._rows.record(client, {"client": client[:64], "path": path[:200], "reason": reason})
