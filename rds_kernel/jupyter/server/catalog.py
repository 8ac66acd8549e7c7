"""What the sidebar shows, gathered from the saved connections: nodes, datasets, budgets.

Each function asks the nodes through :mod:`rds_kernel.client` with the scientist's saved
tokens and returns plain JSON-ready dicts **without any token**: the tokens stay in the
connections file on the server side (architecture §4, "Magics, meter and sidebar"). A node
that cannot be reached is reported with ``"status": "unreachable"`` and the client's message,
never raised, so one node down does not hide the others. Calls use short timeouts: the
sidebar must stay quick.
"""

from __future__ import annotations

import datetime as dt
import math
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

from rds_kernel.client import Node
from rds_kernel.client.connections import (
    Connection,
    load_connections,
    remove_connection,
    save_connection,
)
from rds_kernel.errors import NodeTimeout, NodeUnreachable, NotFound, RdsError
from rds_kernel.jupyter.failures import one_line

if TYPE_CHECKING:  # pragma: no cover
    from rds_kernel.client import Budget

NODE_TIMEOUT: tuple[float, float] = (2.0, 10.0)
"""Seconds to connect to a node, and to wait for each answer, when the sidebar asks."""

MOCK_PREVIEW_ROWS = 20
"""Rows of mock data shown in a dataset's detail."""

Status = Literal["ok", "unreachable", "error"]


def list_nodes() -> list[dict[str, Any]]:
    """Every saved connection with its status, the user, the datasets and the budget.

    The nodes are asked in parallel, so one slow node costs one timeout, not one per node.
    """
    connections = sorted(load_connections().values(), key=lambda c: c.name)
    if not connections:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(connections))) as pool:
        return list(pool.map(node_summary, connections))


def node_summary(connection: Connection) -> dict[str, Any]:
    """One node as the sidebar lists it; ``status`` says whether it could be asked."""
    out: dict[str, Any] = {
        "name": connection.name,
        "url": connection.url,
        "status": "ok",
        "message": None,
        "node_name": None,
        "user": None,
        "datasets": [],
        "budget": None,
    }
    try:
        with _connect(connection) as node:
            user = node.info.get("user") or {}
            out["node_name"] = node.info.get("name")
            out["user"] = user.get("name") if isinstance(user, dict) else None
            out["datasets"] = sorted(node.datasets.list())
            out["budget"] = summarise_budget(node.budget.get())
    except RdsError as exc:
        out["status"] = _status(exc)
        out["message"] = one_line(exc, connection.name)
    return out


def dataset_detail(connection_name: str, dataset: str) -> dict[str, Any]:
    """A dataset's public schema and the first rows of its mock data.

    Raises ``NotFound`` for an unknown connection or dataset, and the client's error when the
    node cannot be asked.
    """
    with _connect(_saved(connection_name)) as node:
        remote = node.dataset(dataset)
        schema = remote.schema
        mock = remote.mock_frame()
        head = mock.head(MOCK_PREVIEW_ROWS)
        return {
            "node": connection_name,
            "name": dataset,
            "description": schema.description,
            "public_row_count": schema.public_row_count,
            "identifier": schema.identifier,
            "columns": [{"name": c.name, **c.to_dict()} for c in schema.columns],
            "mock": {
                "columns": list(head.columns),
                "rows": [[_json_value(v) for v in row] for row in head.rows()],
                "total_rows": mock.height,
            },
        }


def add_node(name: str, url: str, token: str) -> dict[str, Any]:
    """Check that ``url`` answers with ``token``, then save the connection under ``name``.

    Nothing is saved when the node refuses the token or cannot be reached: the client's
    error says why. Returns the node as :func:`list_nodes` lists it.
    """
    with Node(url, token, name=name, timeout=NODE_TIMEOUT):
        pass
    return node_summary(save_connection(name, url, token))


def remove_node(name: str) -> None:
    """Forget the saved connection ``name`` and its token; ``NotFound`` if there is none."""
    if not remove_connection(name):
        raise NotFound(f"no saved connection is called {name!r}; see the sidebar's node list")


def summarise_budget(budget: Budget | None) -> dict[str, Any] | None:
    """The budget as the node sent it (``rds_kernel.wire.Budget``, the sidebar's ``IBudget``:
    the node-wide line and the per-dataset caps); None stays None."""
    return None if budget is None else budget.to_dict()


def _saved(name: str) -> Connection:
    connection = load_connections().get(name)
    if connection is None:
        raise NotFound(f"no saved connection is called {name!r}; add it in the sidebar first")
    return connection


def _connect(connection: Connection) -> Node:
    return Node(connection.url, connection.token, name=connection.name, timeout=NODE_TIMEOUT)


def _status(exc: RdsError) -> Status:
    # a node that answers something else (ProtocolError) was reached: it is an error
    return "unreachable" if isinstance(exc, NodeUnreachable | NodeTimeout) else "error"


def _json_value(value: Any) -> Any:
    """A mock cell as JSON: dates as ISO strings, NaN and infinities as null."""
    if isinstance(value, dt.date):  # datetimes too
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
