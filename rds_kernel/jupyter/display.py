"""What the notebook shows: released answers, previews, nodes, datasets and history.

A released answer is a pandas ``DataFrame`` (a :class:`~rds_kernel.client._frame.ResultFrame`:
``df.attrs`` says where it came from and what it cost) that shows each value with its ±
accuracy (the half-width of the 95 % interval), the epsilon spent and the node, and a preview
shows a table of aggregate, mechanism, noise scale, accuracy and threshold — both through the
client's own rendering (:mod:`rds_kernel.client._html`), so the Python API and the ``%%rds``
magic show the same cards. ``%load_ext rds_kernel`` also registers an HTML formatter that
recognises any frame with an answer's attrs; any other DataFrame keeps pandas' own HTML.

Nothing here imports pandas: the formatters are registered by type name and only run on
objects that already exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rds_kernel.client import Preview
from rds_kernel.client._html import (
    MAX_ROWS,
    Table,
    cost,
    escape_text,
    html_table,
    is_result,
    number,
    preview_html,
    preview_table,
    result_html,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from IPython.core.interactiveshell import InteractiveShell

    from rds_kernel.client import RemoteDataset

__all__ = [
    "MAX_ROWS",
    "DatasetsView",
    "Table",
    "cost",
    "describe_spec",
    "history_frame",
    "html_table",
    "is_result",
    "number",
    "preview_html",
    "preview_table",
    "register_formatters",
    "result_html",
    "schema_table",
    "unregister_formatters",
]

_FRAME_TYPES = (("pandas", "DataFrame"), ("pandas.core.frame", "DataFrame"))


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


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetsView:
    """The datasets of some nodes: description, schema and the first rows of the mock data."""

    entries: Sequence[tuple[str, RemoteDataset, pd.DataFrame]]

    def _repr_html_(self) -> str:
        parts = []
        for node, ds, head in self.entries:
            summary = f"<b>{escape_text(ds.name)}</b> on {escape_text(node)}"
            if ds.schema.description:
                summary += f" — {escape_text(ds.schema.description)}"
            mock = head.to_html(index=False, na_rep="", border=0)
            parts.append(
                f"<details{' open' if len(self.entries) == 1 else ''}><summary>{summary}"
                f"</summary>{schema_table(ds)._repr_html_()}"
                f"<p>Mock data (made from the schema, no real rows), first {len(head)} rows "
                f"(<code>{escape_text(ds.name)}.mock</code> has them all):</p>{mock}</details>"
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
