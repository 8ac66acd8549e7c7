"""The scientist's side: connect to owner nodes, look at their datasets, query them with DP::

    import rds_kernel as rds

    node = rds.connect("http://127.0.0.1:8765", token=token)
    node.datasets.list()          # ["patients", ...]
    patients = node.dataset("patients")
    q = patients.group_by("sex").agg(rds.count(), rds.mean("cvd", bounds=(0, 1)))
    q.preview(epsilon=0.5)        # cost and ± accuracy; spends nothing
    df = q.release(epsilon=0.5)   # noisy answer; df.attrs["epsilon_spent"]
    q.run_on_mock(epsilon=0.5)    # the same query, locally, on the mock data
    node.budget.get()             # your budget there (node.budget() works too)

A :class:`Node` has its resources as attributes, which ask the node only when their methods
are called: ``node.datasets`` (:class:`NodeDatasets`), ``node.budget`` (:class:`NodeBudget`)
and ``node.jobs`` (:class:`NodeJobs`).

Saved connections (``connections.json``, shared with the notebook magics and the JupyterLab
sidebar) are in :mod:`rds_kernel.client.connections`; budget listeners, which the notebook's
budget meter uses to follow every release, in :mod:`rds_kernel.client._events`.
:class:`LocalDataset` runs queries on a frame you hold, through the same DP layer, for learning
what a node's answers look like (:mod:`rds_kernel.client._local`).

Every answer of a node is checked against its model in :mod:`rds_kernel.wire`; ``Budget`` is
that module's :class:`~rds_kernel.wire.Budget`, the node's own record.

This package never imports the node (``rds_kernel.node``); pandas, polars, opendp, pydantic and
requests are imported when first needed, so ``import rds_kernel`` stays fast.
"""

from typing import TYPE_CHECKING, Any

from rds_kernel.client._budget import NodeBudget, budget_requests, request_budget
from rds_kernel.client._dataset import RemoteDataset
from rds_kernel.client._events import BudgetListener, add_budget_listener, remove_budget_listener
from rds_kernel.client._jobs import Job, JobDraft, NodeJobs, job, jobs, submit
from rds_kernel.client._local import LocalDataset
from rds_kernel.client._node import Node, NodeDatasets, connect
from rds_kernel.client._results import Preview
from rds_kernel.client.connections import (
    Connection,
    check_connection_name,
    connections_path,
    load_connections,
    remove_connection,
    save_connection,
)

if TYPE_CHECKING:  # pragma: no cover
    from rds_kernel.wire import Budget

__all__ = [
    "Budget",
    "BudgetListener",
    "Connection",
    "Job",
    "JobDraft",
    "LocalDataset",
    "Node",
    "NodeBudget",
    "NodeDatasets",
    "NodeJobs",
    "Preview",
    "RemoteDataset",
    "add_budget_listener",
    "budget_requests",
    "check_connection_name",
    "connect",
    "connections_path",
    "job",
    "jobs",
    "load_connections",
    "remove_budget_listener",
    "remove_connection",
    "request_budget",
    "save_connection",
    "submit",
]


def __getattr__(name: str) -> Any:
    # `Budget` is a pydantic model: imported on first use, never by `import rds_kernel`.
    if name == "Budget":
        from rds_kernel.wire import Budget

        return Budget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
