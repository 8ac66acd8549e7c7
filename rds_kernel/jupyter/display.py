"""What the notebook shows: released answers, previews, nodes, datasets and history.

A released answer stays a plain ``pandas.DataFrame`` (``df.attrs`` says where it came from and
what it cost). ``%load_ext rds_kernel`` registers an HTML formatter that recognises such frames
by their attrs and shows each value with its ± accuracy (the half-width of the 95 % interval),
the epsilon spent and the node; any other DataFrame keeps pandas' own HTML. Previews render as
a table of aggregate, mechanism, noise scale, accuracy and threshold.

Nothing here imports pandas: the formatters are registered by type name and only run on
objects that already exist.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rds_kernel.client import Preview

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from IPython.core.interactiveshell import InteractiveShell

    from rds_kernel.client import RemoteDataset

MAX_ROWS = 50
"""Rows of a released answer shown in HTML; the rest are counted, not shown."""

_RESULT_ATTRS = frozenset({"node", "dataset", "epsilon_spent", "delta_spent", "accuracy", "mock"})
_FRAME_TYPES = (("pandas", "DataFrame"), ("pandas.core.frame", "DataFrame"))
_CAPTION = "± is the half-width of the 95 % interval of the noise"


@dataclass(frozen=True)
class Table:
    """A small table of strings with a title and a note, as HTML and as aligned text."""

    columns: Sequence[str]
    rows: Sequence[Sequence[str]]
    title: str = ""
    note: str = ""

    def _repr_html_(self) -> str:
        title = f"<p><b>{_text(self.title)}</b></p>" if self.title else ""
        note = f"<p><small>{_text(self.note)}</small></p>" if self.note else ""
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


def _text(value: str) -> str:
    """``value`` as HTML text content (quotes need no escaping outside attributes)."""
    return html.escape(value, quote=False)


def html_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain HTML table (cells are escaped)."""
    head = "".join(f"<th>{_text(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_text(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --------------------------------------------------------------------------- numbers


def number(value: Any, accuracy: float | None = None) -> str:
    """``value`` for people: with its accuracy, to the accuracy's two significant digits."""
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


# --------------------------------------------------------------------------- results and previews


def is_result(frame: pd.DataFrame) -> bool:
    """Whether ``frame`` is an answer of the client (a release or a mock run)."""
    return frame.attrs.keys() >= _RESULT_ATTRS


def result_html(frame: pd.DataFrame) -> str | None:
    """The HTML of a released (or mock-run) answer; pandas' own HTML for any other frame."""
    if not is_result(frame):
        return frame._repr_html_()  # type: ignore[operator,no-any-return]
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
    notes = [_CAPTION]
    missing = [c for c in columns if c in accuracy and _float(accuracy[c]) is None]
    if missing:
        notes.append(f"no closed-form ± for {', '.join(missing)}")
    if len(frame) > MAX_ROWS:
        notes.append(f"{len(frame) - MAX_ROWS} more rows not shown")
    return Table(columns, rows, title, "; ".join(notes))._repr_html_()


def preview_table(preview: Preview) -> Table:
    """A preview as a table: aggregate, mechanism, scale, ± accuracy (95 %), threshold."""
    rows = [
        [
            str(r.get("aggregate", "")),
            str(r.get("mechanism", "")),
            number(r.get("scale")),
            number(r.get("accuracy")),
            number(r.get("threshold")) if r.get("threshold") is not None else "",
        ]
        for r in preview.rows
    ]
    b = preview.budget
    title = (
        f"Preview of {preview.dataset!r} on {preview.node}: would cost "
        f"{cost(preview.epsilon, preview.delta)}; ε {b.epsilon_remaining:.4g} of "
        f"{b.epsilon_total:.4g} left. Nothing was spent."
    )
    if not preview.affordable:
        title += " More than your remaining budget: the release would be refused."
    notes = [f"{r['aggregate']}: {r['note']}" for r in preview.rows if r.get("note")]
    columns = ("aggregate", "mechanism", "scale", "± accuracy (95 %)", "threshold")
    return Table(columns, rows, title, "; ".join(notes))


def preview_html(preview: Preview) -> str:
    return preview_table(preview)._repr_html_()


def register_formatters(shell: InteractiveShell) -> None:
    """Show released answers and previews as above in this shell (no import of pandas)."""
    formatter = _html_formatter(shell)
    for module, name in _FRAME_TYPES:
        formatter.for_type_by_name(module, name, result_html)
    formatter.for_type(Preview, preview_html)


def unregister_formatters(shell: InteractiveShell) -> None:
    """Undo :func:`register_formatters`."""
    formatter = _html_formatter(shell)
    for module, name in _FRAME_TYPES:
        formatter.pop(f"{module}.{name}", None)
    formatter.pop(Preview, None)


def _html_formatter(shell: InteractiveShell) -> Any:
    assert shell.display_formatter is not None
    return shell.display_formatter.formatters["text/html"]


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetsView:
    """The datasets of some nodes: description, schema and the first rows of the mock data."""

    entries: Sequence[tuple[str, RemoteDataset, pd.DataFrame]]

    def _repr_html_(self) -> str:
        parts = []
        for node, ds, head in self.entries:
            summary = f"<b>{_text(ds.name)}</b> on {_text(node)}"
            if ds.schema.description:
                summary += f" — {_text(ds.schema.description)}"
            mock = head.to_html(index=False, na_rep="", border=0)
            parts.append(
                f"<details{' open' if len(self.entries) == 1 else ''}><summary>{summary}"
                f"</summary>{schema_table(ds)._repr_html_()}"
                f"<p>Mock data (made from the schema, no real rows), first {len(head)} rows "
                f"(<code>{_text(ds.name)}.mock</code> has them all):</p>{mock}</details>"
            )
        return "<div>" + "".join(parts) + "</div>"

    def __repr__(self) -> str:
        return "\n\n".join(repr(schema_table(ds)) for _node, ds, _head in self.entries)


def schema_table(ds: RemoteDataset) -> Table:
    """The public schema of a dataset, one row per column."""
    rows = []
    for c in ds.schema.columns:
        if c.categories is not None:
            public = "{" + ", ".join(map(str, c.categories)) + "}"
        elif c.bounds is not None:
            public = f"[{c.bounds[0]}, {c.bounds[1]}]"
        else:
            public = ""
        rows.append([c.name, c.type, public, "yes" if c.nullable else "", c.description or ""])
    columns = ("column", "type", "public bounds / categories", "nullable", "description")
    return Table(columns, rows, title=f"{ds.name} on {ds.node.name}")


def describe_spec(spec: Any) -> str:
    """A short description of a query spec for the history: ``count, mean_cvd by sex``."""
    if not isinstance(spec, Mapping):
        return ""
    aggs = []
    for agg in spec.get("aggregates") or []:
        op, column = agg.get("op", "?"), agg.get("column")
        aggs.append(str(agg.get("alias") or (f"{op}({column})" if column else op)))
    text = ", ".join(aggs)
    by = (spec.get("group_by") or {}).get("by")
    if by:
        text += " by " + ", ".join(map(str, by))
    if spec.get("filter"):
        text += " (filtered)"
    return text


def history_frame(releases: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Your releases on each node (``node.releases()``), newest first, one table."""
    import pandas as pd

    columns = ["node", "created_at", "dataset", "query", "epsilon", "delta", "request_id"]
    parts = []
    for node, frame in releases.items():
        part = frame.assign(node=node, query=[describe_spec(s) for s in frame["spec"]])
        parts.append(part[columns])
    if not parts or all(p.empty for p in parts):
        return pd.DataFrame(columns=columns)
    table = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    return table.sort_values("created_at", ascending=False, ignore_index=True)
