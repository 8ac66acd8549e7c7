"""The public surface of ``import rds_kernel as rds``: its names, and how light the import is."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import rds_kernel
import rds_kernel.client

HEAVY = (
    "pydantic",  # the wire models load with the client's first answer, never at import
    "rds_kernel.wire",
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "starlette",
    "opendp",
    "polars",
    "pandas",
    "numpy",
    "pyarrow",
    "requests",
    "rds_kernel.node",
    "rds_kernel.dp",
)


def test_all_is_pinned() -> None:
    """Adding or removing a public name is a deliberate change to this list."""
    assert rds_kernel.__all__ == [
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
    assert rds_kernel.client.__all__ == [
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


def test_load_ext_is_light_too() -> None:
    """`%load_ext rds_kernel` (the magics, the displays) loads no pydantic either."""
    code = (
        "import json, sys; from IPython.core.interactiveshell import InteractiveShell; "
        "shell = InteractiveShell.instance(); import rds_kernel; "
        "shell.run_line_magic('load_ext', 'rds_kernel'); print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = [m for m in json.loads(out.stdout) if m.split(".")[0] == "pydantic"]
    assert loaded == []
    assert "rds_kernel.wire" not in json.loads(out.stdout)


def test_budget_is_the_wire_record_loaded_on_first_use() -> None:
    """`rds.Budget` is `rds_kernel.wire.Budget`, imported only when first asked for."""
    code = (
        "import json, sys; import rds_kernel as rds; before = 'pydantic' in sys.modules; "
        "from rds_kernel.wire import Budget; "
        "print(json.dumps([before, rds.Budget is Budget, rds.client.Budget is Budget]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == [False, True, True]


def test_every_public_name_exists() -> None:
    for name in rds_kernel.__all__:
        assert getattr(rds_kernel, name) is not None, name
    for name in rds_kernel.client.__all__:
        assert getattr(rds_kernel.client, name) is not None, name
        if name in rds_kernel.__all__:
            assert getattr(rds_kernel.client, name) is getattr(rds_kernel, name)


def test_import_is_light() -> None:
    """`import rds_kernel` loads no server stack, DP engine, dataframe library or HTTP client."""
    code = (
        "import json, sys, time; t = time.perf_counter(); import rds_kernel; "
        "print(json.dumps({'seconds': time.perf_counter() - t, 'modules': sorted(sys.modules)}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    report = json.loads(out.stdout)
    loaded = [m for m in report["modules"] if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert loaded == []
    assert report["seconds"] < 1.0


def _imports(source: pathlib.Path) -> set[str]:
    tree = ast.parse(source.read_text(encoding="utf-8"))
    names: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            names.update(a.name for a in n.names)
        elif isinstance(n, ast.ImportFrom) and n.module:
            names.add(n.module)
            names.update(f"{n.module}.{a.name}" for a in n.names)
    return names


def test_client_never_imports_the_node() -> None:
    """The client runs on scientists' machines; the node's code is not its business."""
    root = pathlib.Path(rds_kernel.client.__file__).parent
    for source in [*root.glob("*.py"), pathlib.Path(rds_kernel.__file__)]:
        node = {m for m in _imports(source) if m.startswith("rds_kernel.node")}
        assert node == set(), source
