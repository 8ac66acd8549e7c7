"""The scientist's side: connect to owner nodes, look at their datasets, query them with DP::

    import rds_kernel as rds

    node = rds.connect("http://127.0.0.1:8765", token=token)
    patients = node.dataset("patients")
    q = patients.group_by("sex").agg(rds.count(), rds.mean("cvd", bounds=(0, 1)))
    q.preview(epsilon=0.5)        # cost and ± accuracy; spends nothing
    df = q.release(epsilon=0.5)   # noisy answer; df.attrs["epsilon_spent"]
    q.run_on_mock(epsilon=0.5)    # the same query, locally, on the mock data

This package never imports the node (``rds_kernel.node``); pandas, polars, opendp and requests
are imported when first needed, so ``import rds_kernel`` stays fast.
"""

from rds_kernel.client._dataset import RemoteDataset
from rds_kernel.client._node import Node, connect
from rds_kernel.client._results import Budget, Preview

__all__ = ["Budget", "Node", "Preview", "RemoteDataset", "connect"]
