"""What the audit log records of a refused request: who, what they asked, and why not.

The asked-for values come from untrusted input, so only a few plain fields are kept (the
dataset, ε, δ, the request_id), each checked for type and cut short: the audit log cannot be
made to hold a megabyte or an object.

Authentication failures come from anyone, so they are coalesced: at most one audit row per
client address and :data:`AUTH_WINDOW` seconds, counting the failures since the last row —
a flood of bad tokens costs the database almost nothing and still leaves its trace.

>>> asked({"dataset": "patients", "epsilon": 0.5, "aggregates": ["..."]}, "r-1")
{'request_id': 'r-1', 'dataset': 'patients', 'epsilon': 0.5}
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["AUTH_WINDOW", "AuthFailures", "asked"]

AUTH_WINDOW = 60.0  # seconds
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


class AuthFailures:
    """Coalesces authentication failures per client into one audit row per window."""

    def __init__(
        self,
        write: Callable[[dict[str, Any]], None],
        window: float = AUTH_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._window = window
        self._clock = clock
        self._last: dict[str, float] = {}
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()

    def record(self, client: str, path: str, reason: str) -> None:
        """Count one failure; write an audit row unless one was written for ``client`` lately."""
        now = self._clock()
        with self._lock:
            self._pending[client] = self._pending.get(client, 0) + 1
            if now - self._last.get(client, -math.inf) < self._window:
                return
            count = self._pending.pop(client)
            self._last[client] = now
            if len(self._last) > 10_000:  # forget the oldest clients; the map stays bounded
                for old in sorted(self._last, key=self._last.__getitem__)[:5_000]:
                    self._last.pop(old, None)
                    self._pending.pop(old, None)
        self._write({"client": client[:64], "path": path[:200], "reason": reason, "count": count})
