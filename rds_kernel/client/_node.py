"""A connection to one owner node: :func:`connect` and :class:`Node`, by resource.

``node.datasets``, ``node.budget`` and ``node.jobs`` are the node's resources; their methods
ask the node (``node.datasets.list()``, ``node.budget.get()``, ``node.jobs.list()``), and no
attribute or property does any network I/O.
"""

from __future__ import annotations

import builtins
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rds_kernel.client._budget import NodeBudget
from rds_kernel.client._dataset import RemoteDataset
from rds_kernel.client._jobs import NodeJobs
from rds_kernel.client._results import releases_frame
from rds_kernel.client._transport import DEFAULT_TIMEOUT, Timeout, Transport, display_url, path
from rds_kernel.schema import Schema

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import requests

    from rds_kernel.wire import NodeInfo


class Node:
    """One owner node, reached over HTTP with your token.

    Creating it calls ``GET /v1/node``, so a wrong URL or token fails here, not later.
    ``name`` is how results and messages refer to the node (default: the node's own name).
    ``timeout`` is seconds to connect and to wait for an answer, as one number or a pair.
    ``session`` lets you pass a configured ``requests.Session`` (proxies, certificates); the
    node closes it in :meth:`close`.

    Resources: ``node.datasets`` (:class:`NodeDatasets`), ``node.budget``
    (:class:`~rds_kernel.client.NodeBudget`; ``node.budget()`` still works, as
    ``node.budget.get()``) and ``node.jobs`` (:class:`~rds_kernel.client.NodeJobs`).
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
        from rds_kernel.wire import NodeInfo

        self._transport = Transport(url, token, timeout=timeout, session=session)
        try:
            info = self._transport.get("/v1/node", NodeInfo)
        except BaseException:
            self._transport.close()
            raise
        self._info: NodeInfo = info
        self.name = name or info.name
        self.datasets = NodeDatasets(self)
        """The node's datasets: ``node.datasets.list()``, ``node.datasets.get(name)``."""
        self.budget = NodeBudget(self)
        """Your budget here: ``node.budget.get()``, ``.request(...)``, ``.requests()``."""
        self.jobs = NodeJobs(self)
        """Your code jobs here: ``node.jobs.submit(...)``, ``.list()``, ``.get(id)``."""

    @property
    def url(self) -> str:
        return self._transport.url

    def __repr__(self) -> str:
        user = self._info.user
        return f"<Node {self.name} at {display_url(self.url)} as {user.name} ({user.role})>"

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
        """What ``GET /v1/node`` said at connect: name, versions, and who you are on it.

        Read once, when connecting: this asks the node nothing.
        """
        return self._info.to_dict()

    def dataset(self, name: str) -> RemoteDataset:
        """A handle on dataset ``name`` with its public schema. Raises ``NotFound`` if absent."""
        return self.datasets.get(name)

    def releases(self, limit: int = 100) -> pd.DataFrame:
        """Your most recent releases on this node (request_id, dataset, cost, time, spec)."""
        from rds_kernel.wire import Releases

        return releases_frame(self._transport.get("/v1/releases", Releases, {"limit": limit}))


class NodeDatasets:
    """The datasets of a node: :meth:`list` their names, :meth:`get` one (``node.dataset``)."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def __repr__(self) -> str:
        return f"<datasets of {self._node.name}: .list(), .get(name)>"

    def list(self) -> builtins.list[str]:
        """The names of the datasets on the node now (``GET /v1/datasets``)."""
        from rds_kernel.wire import DatasetList

        answer = self._node._transport.get("/v1/datasets", DatasetList)
        return [d.name for d in answer.datasets]

    def get(self, name: str) -> RemoteDataset:
        """A handle on dataset ``name`` with its public schema. Raises ``NotFound`` if absent."""
        from rds_kernel.wire import DatasetSchema

        answer = self._node._transport.get(path("v1", "datasets", name), DatasetSchema)
        raw = answer.schema_.model_dump(mode="json", exclude_none=True)
        return RemoteDataset(self._node, name, Schema.from_dict(raw, source=name))


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
