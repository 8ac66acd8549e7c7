"""The scientist's side: connect to owner nodes, look at their datasets, query them with DP::

    import rds_kernel as rds

    node = rds.connect("http://127.0.0.1:8765", token=token)
    patients = node.dataset("patients")
    q = patients.group_by("sex").agg(rds.count(), rds.mean("cvd", bounds=(0, 1)))
    q.preview(epsilon=0.5)        # cost and ± accuracy; spends nothing
    df = q.release(epsilon=0.5)   # noisy answer; df.attrs["epsilon_spent"]
    q.run_on_mock(epsilon=0.5)    # the same query, locally, on the mock data

Saved connections (``connections.json``, shared with the notebook magics and the JupyterLab
sidebar) are in :mod:`rds_kernel.client._connections`; budget listeners, which the notebook's
budget meter uses to follow every release, in :mod:`rds_kernel.client._events`.
:class:`LocalDataset` runs queries on a frame you hold, through the same DP layer, for learning
what a node's answers look like (:mod:`rds_kernel.client._local`).

This package never imports the node (``rds_kernel.node``); pandas, polars, opendp and requests
are imported when first needed, so ``import rds_kernel`` stays fast.
"""

from rds_kernel.client._connections import (
    Connection,
    check_connection_name,
    connections_path,
    load_connections,
    remove_connection,
    save_connection,
)
from rds_kernel.client._dataset import RemoteDataset
from rds_kernel.client._events import BudgetListener, add_budget_listener, remove_budget_listener
from rds_kernel.client._jobs import (
    Job,
    JobDraft,
    budget_requests,
    job,
    jobs,
    request_budget,
    submit,
)
from rds_kernel.client._local import LocalDataset
from rds_kernel.client._node import Node, connect
from rds_kernel.client._results import Budget, Preview

__all__ = [
    "Budget",
    "BudgetListener",
    "Connection",
    "Job",
    "JobDraft",
    "LocalDataset",
    "Node",
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
