"""A connection to one owner node: :func:`connect` and :class:`Node`."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from rds_kernel.client._dataset import RemoteDataset
from rds_kernel.client._events import notify_budget
from rds_kernel.client._results import Budget, releases_frame, require
from rds_kernel.client._transport import DEFAULT_TIMEOUT, Timeout, Transport, display_url, path
from rds_kernel.schema import Schema

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import requests


class Node:
    """One owner node, reached over HTTP with your token.

    Creating it calls ``GET /v1/node``, so a wrong URL or token fails here, not later.
    ``name`` is how results and messages refer to the node (default: the node's own name).
    ``timeout`` is seconds to connect and to wait for an answer, as one number or a pair.
    ``session`` lets you pass a configured ``requests.Session`` (proxies, certificates); the
    node closes it in :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        name: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
    ) -> None:
        self._transport = Transport(url, token, timeout=timeout, session=session)
        try:
            info = self._transport.get_json("/v1/node")
            own_name = str(require(info, "name", "GET /v1/node"))
        except BaseException:
            self._transport.close()
            raise
        self._info: dict[str, Any] = dict(info)
        self.name = name or own_name

    @property
    def url(self) -> str:
        return self._transport.url

    def __repr__(self) -> str:
        user = self._info.get("user") or {}
        who = f" as {user.get('name')} ({user.get('role')})" if isinstance(user, dict) else ""
        return f"<Node {self.name} at {display_url(self.url)}{who}>"

    def close(self) -> None:
        """Close the HTTP connections (the node and its dataset handles stop working)."""
        self._transport.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ what the node offers

    @property
    def info(self) -> dict[str, Any]:
        """What ``GET /v1/node`` said at connect: name, versions, and who you are on it."""
        return dict(self._info)

    @property
    def datasets(self) -> list[str]:
        """The names of the datasets on the node (asked afresh each time)."""
        raw = self._transport.get_json("/v1/datasets")
        where = "GET /v1/datasets"
        return [str(require(d, "name", where)) for d in require(raw, "datasets", where)]

    def dataset(self, name: str) -> RemoteDataset:
        """A handle on dataset ``name`` with its public schema. Raises ``NotFound`` if absent."""
        raw = self._transport.get_json(path("v1", "datasets", name))
        schema = Schema.from_dict(require(raw, "schema", "GET /v1/datasets/{name}"), source=name)
        return RemoteDataset(self, name, schema)

    def budget(self) -> Budget:
        """Your privacy budget on this node now: total, spent and remaining epsilon and delta."""
        budget = Budget.from_dict(self._transport.get_json("/v1/budget"))
        notify_budget(self.name, budget)
        return budget

    def releases(self, limit: int = 100) -> pd.DataFrame:
        """Your most recent releases on this node (request_id, dataset, cost, time, spec)."""
        return releases_frame(self._transport.get_json("/v1/releases", params={"limit": limit}))


def connect(
    url: str,
    token: str,
    *,
    name: str | None = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    session: requests.Session | None = None,
) -> Node:
    """Connect to an owner node and check the URL and token (``GET /v1/node``).

    ``rds.connect("http://127.0.0.1:8765", token=token, name="hospital_a")``; the keyword
    arguments are those of :class:`Node`.
    """
    return Node(url, token, name=name, timeout=timeout, session=session)
