"""How answers and previews look: each value with its ± accuracy, as HTML and as text.

One rendering for every place a scientist sees them: a released answer displays itself this
way (:class:`rds_kernel.client._frame.ResultFrame`), so does a :class:`Preview`, and
``%load_ext rds_kernel`` (:mod:`rds_kernel.jupyter.display`) shows any answer of the client
the same way. Nothing here imports pandas: it renders frames that already exist.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from rds_kernel.client._results import Preview

MAX_ROWS = 50
"""Rows of a released answer shown in HTML; the rest are counted, not shown."""

CAPTION = "± is the half-width of the 95 % interval of the noise"
ESTIMATED = "*"
"""Marks a preview's ± computed at an assumed row count (see :attr:`Preview.accuracy_note`)."""

_RESULT_ATTRS = frozenset({"node", "dataset", "epsilon_spent", "delta_spent", "accuracy", "mock"})


@dataclass(frozen=True)
class Table:
    """A small table of strings with a title and a note, as HTML and as aligned text."""

    columns: Sequence[str]
    rows: Sequence[Sequence[str]]
    title: str = ""
    note: str = ""

    def _repr_html_(self) -> str:
        title = f"<p><b>{escape_text(self.title)}</b></p>" if self.title else ""
        note = f"<p><small>{escape_text(self.note)}</small></p>" if self.note else ""
        return f"<div>{title}{html_table(self.columns, self.rows)}{note}</div>"

    def __repr__(self) -> str:
        widths = [len(c) for c in self.columns]
        for row in self.rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
        lines = [self.title] if self.title else []
        for row in (self.columns, *self.rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def escape_text(value: str) -> str:
    """``value`` as HTML text content (quotes need no escaping outside attributes)."""
    return html.escape(value, quote=False)


def html_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain HTML table (cells are escaped)."""
    head = "".join(f"<th>{escape_text(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape_text(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --------------------------------------------------------------------------- numbers


def number(value: Any, accuracy: float | None = None) -> str:
    """``value`` for people: with its accuracy, to the accuracy's two significant digits.

    >>> number(57.558935, 1.3447), number(1203, 6.43), number(None)
    ('57.6 ± 1.3', '1203 ± 6.4', '—')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if accuracy is None or not math.isfinite(accuracy) or accuracy <= 0:
        return f"{value:.6g}" if isinstance(value, float) else str(value)
    decimals = min(10, max(0, 1 - math.floor(math.log10(accuracy))))
    shown = str(value) if isinstance(value, int) else f"{value:.{decimals}f}"
    return f"{shown} ± {accuracy:.{decimals}f}"


def cost(epsilon: float, delta: float = 0.0) -> str:
    """``ε=0.5`` or ``ε=0.5, δ=1e-06``."""
    return f"ε={epsilon:.4g}" + (f", δ={delta:.3g}" if delta else "")


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------- results


def is_result(frame: pd.DataFrame) -> bool:
    """Whether ``frame`` is an answer of the client (a release or a mock run)."""
    return frame.attrs.keys() >= _RESULT_ATTRS


def result_table(frame: pd.DataFrame) -> Table:
    """A released (or mock-run) answer as a table: values with their ±, cost and node."""
    a = frame.attrs
    accuracy: Mapping[str, Any] = a.get("accuracy") or {}
    spent = cost(float(a["epsilon_spent"]), float(a["delta_spent"]))
    if a.get("mock"):
        title = (
            f"Mock run on the mock data of {a['dataset']!r} from {a['node']} — not a release; "
            f"on the node it would cost {spent}"
        )
    else:
        title = f"Released by {a['node']} from {a['dataset']!r}: {spent} spent"
        if a.get("replayed"):
            title += " (a stored answer, returned again and not charged again)"
    columns = [str(c) for c in frame.columns]
    rows = [
        [number(v, _float(accuracy.get(c))) for c, v in zip(columns, row, strict=True)]
        for row in frame.head(MAX_ROWS).itertuples(index=False, name=None)
    ]
    notes = [CAPTION]
    missing = [c for c in columns if c in accuracy and _float(accuracy[c]) is None]
    if missing:
        notes.append(f"no closed-form ± for {', '.join(missing)}")
    if len(frame) > MAX_ROWS:
        notes.append(f"{len(frame) - MAX_ROWS} more rows not shown")
    return Table(columns, rows, title, "; ".join(notes))


def result_html(frame: pd.DataFrame) -> str | None:
    """The HTML of a released (or mock-run) answer; pandas' own HTML for any other frame."""
    if not is_result(frame):
        return frame._repr_html_()  # type: ignore[operator,no-any-return]
    return result_table(frame)._repr_html_()


# --------------------------------------------------------------------------- previews


def preview_title(preview: Preview) -> str:
    """What a release would cost, and what is left (nothing is spent by a preview)."""
    price = cost(preview.epsilon, preview.delta)
    b = preview.budget
    if b is None:  # a LocalDataset: no node, no ledger
        return (
            f"Preview of {preview.dataset!r} (local data): a release would cost {price}; "
            "no budget is kept here. Nothing was spent."
        )
    title = (
        f"Preview of {preview.dataset!r} on {preview.node}: would cost {price}; "
        f"ε {b.epsilon_remaining:.4g} of {b.epsilon_total:.4g} left. Nothing was spent."
    )
    if not preview.affordable:
        title += " More than your remaining budget: the release would be refused."
    return title


def preview_table(preview: Preview) -> Table:
    """A preview as a table: aggregate, mechanism, scale, ± accuracy (95 %), threshold.

    A mean's or variance's ± depends on the row count, which is private: where the node could
    not give it, it is shown at the row count :attr:`Preview.accuracy_note` names, marked
    ``*``; the formula the node gave stays in the notes.
    """
    rows = []
    for r in preview.rows:
        accuracy = number(r.get("accuracy"))
        if r.get("accuracy_n") is not None and r.get("accuracy") is not None:
            accuracy += f" {ESTIMATED}"
        rows.append(
            [
                str(r.get("aggregate", "")),
                str(r.get("mechanism", "")),
                number(r.get("scale")),
                accuracy,
                number(r.get("threshold")) if r.get("threshold") is not None else "",
            ]
        )
    notes = []
    if preview.accuracy_note and any(r.get("accuracy_n") is not None for r in preview.rows):
        notes.append(f"{ESTIMATED} {preview.accuracy_note}")
    notes += [f"{r['aggregate']}: {r['note']}" for r in preview.rows if r.get("note")]
    columns = ("aggregate", "mechanism", "scale", "± accuracy (95 %)", "threshold")
    return Table(columns, rows, preview_title(preview), "; ".join(notes))


def preview_html(preview: Preview) -> str:
    return preview_table(preview)._repr_html_()
