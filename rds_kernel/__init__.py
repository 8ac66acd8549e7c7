"""rds_kernel: differentially private queries against data owners' nodes, from Jupyter.

Scientists need one import::

    import rds_kernel as rds

    node = rds.connect("http://127.0.0.1:8765", token=token)
    patients = node.dataset("patients")
    q = patients.filter(rds.col("age") >= 50).group_by("sex").agg(rds.count())
    q.preview(epsilon=0.5)         # cost and ± accuracy; spends nothing
    df = q.release(epsilon=0.5)    # pandas DataFrame; df.attrs["epsilon_spent"]
    node.budget.get()              # what you have left there

In Jupyter, ``%load_ext rds_kernel`` adds the ``%rds`` magics and the budget meter (see
``%rds?`` and :mod:`rds_kernel.jupyter`).

Importing this package is light: no pandas, polars, opendp, pydantic, requests or server code
until a function needs them (``rds.Budget``, a pydantic model, is imported when first used).
"""

from typing import TYPE_CHECKING, Any

from rds_kernel.client import (
    Job,
    LocalDataset,
    Node,
    Preview,
    RemoteDataset,
    connect,
    job,
    request_budget,
    submit,
)
from rds_kernel.errors import (
    AuthenticationError,
    BadRequest,
    BudgetExceeded,
    Conflict,
    InternalError,
    NodeTimeout,
    NodeUnavailable,
    NodeUnreachable,
    NotFound,
    PermissionDenied,
    ProtocolError,
    RdsError,
    SchemaError,
    SpecError,
    TooManyRequests,
)
from rds_kernel.spec import (
    Query,
    QuerySpec,
    col,
    count,
    lit,
    mean,
    median,
    quantile,
    sum,
    variance,
)

if TYPE_CHECKING:  # pragma: no cover
    from rds_kernel.wire import Budget

__all__ = [
    "AuthenticationError",
    "BadRequest",
    "Budget",
    "BudgetExceeded",
    "Conflict",
    "InternalError",
    "Job",
    "LocalDataset",
    "Node",
    "NodeTimeout",
    "NodeUnavailable",
    "NodeUnreachable",
    "NotFound",
    "PermissionDenied",
    "Preview",
    "ProtocolError",
    "Query",
    "QuerySpec",
    "RdsError",
    "RemoteDataset",
    "SchemaError",
    "SpecError",
    "TooManyRequests",
    "col",
    "connect",
    "count",
    "job",
    "lit",
    "mean",
    "median",
    "quantile",
    "request_budget",
    "submit",
    "sum",
    "variance",
]


def __getattr__(name: str) -> Any:
    # `Budget` is a pydantic model: imported on first use, never by `import rds_kernel`.
    if name == "Budget":
        from rds_kernel.wire import Budget

        return Budget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext rds_kernel``: register the ``%rds`` magics (help: ``%rds?``)."""
    from rds_kernel.jupyter import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext rds_kernel``: remove the magics, the displays and the budget listener."""
    from rds_kernel.jupyter import unload_ipython_extension as unload

    unload(ipython)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the built sidebar is, for ``jupyter labextension develop .`` (run at the root)."""
    return [{"src": "labextension", "dest": "rds-kernel"}]
