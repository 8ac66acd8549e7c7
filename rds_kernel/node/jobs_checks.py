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


def parse_output(raw: bytes | None) -> dict[str, Any] | None:
    """A reviewed run's result bytes as ``{"type": "table"|"bytes"|"json", ...}``, or None."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
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
            and isinstance(rows, list)
            and all(isinstance(r, list) and len(r) == len(columns) for r in rows)
        ):
            return value
    return None


def check_output(
    output: dict[str, Any], *, min_cell_count: int, max_bytes: int
) -> list[dict[str, Any]]:
    """Each check's name, whether it passed, and what it found."""
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
