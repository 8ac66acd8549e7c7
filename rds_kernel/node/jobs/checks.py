"""Automatic output checks for reviewed jobs, run before the owner decides on a release.

Modelled on DataSHIELD's disclosure filters and OpenSAFELY's output rules (see the project's
reference notes): thresholds are easy to get around, which is why a reviewed output also needs
the owner's approval, and why DP jobs exist. An output that fails a check cannot be released;
the owner can only deny it.

- ``size``: the output is at most ``max_bytes`` of JSON.
- ``min_cell_count``: no integer in the output (a table's integer columns, or any integer in a
  JSON value) lies strictly between 0 and ``min_cell_count``: small counts identify people.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

__all__ = ["check_output", "parse_output"]

_SHOWN = 5


def parse_output(raw: Any, max_bytes: int) -> dict[str, Any] | None:
    """A reviewed run's result bytes as ``{"type": "table"|"bytes"|"json", ...}``, or None.

    Total: whatever bytes a run sends (its code can write anything to its result pipe), this
    returns and never raises; more than ``max_bytes``, or JSON nested too deep to parse, is
    None like any other unreadable result.
    """
    try:
        return _parse_output(raw, max_bytes)
    except Exception:  # RecursionError, MemoryError, ...: unreadable, never a crash
        return None


def _parse_output(raw: Any, max_bytes: int) -> dict[str, Any] | None:
    if not isinstance(raw, bytes | bytearray) or len(raw) > max_bytes:
        return None
    value = json.loads(raw)
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    if kind == "json" and set(value) == {"type", "value"}:
        return value
    if kind == "bytes" and set(value) == {"type", "base64"} and isinstance(value["base64"], str):
        return value
    if kind == "table" and set(value) == {"type", "columns", "kinds", "rows"}:
        columns, kinds, rows = value["columns"], value["kinds"], value["rows"]
        if (
            isinstance(columns, list)
            and all(isinstance(c, str) for c in columns)
            and isinstance(kinds, list)
            and len(kinds) == len(columns)
            and all(isinstance(k, str) for k in kinds)
            and isinstance(rows, list)
            and all(isinstance(r, list) and len(r) == len(columns) for r in rows)
        ):
            return value
    return None


def check_output(
    output: dict[str, Any], *, min_cell_count: int, max_bytes: int
) -> list[dict[str, Any]]:
    """Each check's name, whether it passed, and what it found.

    Total: an output the checks cannot go through (nested too deep, say) fails a check.
    """
    try:
        return _check_output(output, min_cell_count=min_cell_count, max_bytes=max_bytes)
    except Exception as exc:
        detail = f"the checks could not read this output ({type(exc).__name__}); deny it"
        return [{"check": "readable", "ok": False, "detail": detail}]


def _check_output(
    output: dict[str, Any], *, min_cell_count: int, max_bytes: int
) -> list[dict[str, Any]]:
    size = len(json.dumps(output))
    checks = [
        {
            "check": "size",
            "ok": size <= max_bytes,
            "detail": f"{size} bytes (limit {max_bytes})",
        }
    ]
    if output["type"] == "bytes":
        checks.append(
            {
                "check": "min_cell_count",
                "ok": True,
                "detail": "binary output (e.g. an image): not checked; look at it before approving",
            }
        )
        return checks
    small = [f"{where} = {v}" for where, v in _integers(output) if 0 < abs(v) < min_cell_count]
    detail = (
        f"no integer between 0 and {min_cell_count}"
        if not small
        else f"{len(small)} value(s) between 0 and {min_cell_count}: "
        + ", ".join(small[:_SHOWN])
        + (" ..." if len(small) > _SHOWN else "")
    )
    checks.append({"check": "min_cell_count", "ok": not small, "detail": detail})
    return checks


def _integers(output: dict[str, Any]) -> Iterator[tuple[str, int]]:
    if output["type"] == "table":
        for j, (name, kind) in enumerate(zip(output["columns"], output["kinds"], strict=True)):
            if kind != "int":
                continue
            for i, row in enumerate(output["rows"]):
                v = row[j]
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    yield f"row {i} column {name!r}", int(v)
        return
    yield from _walk(output.get("value"), "value")


def _walk(value: Any, where: str) -> Iterator[tuple[str, int]]:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield where, value
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{where}[{k!r}]")
