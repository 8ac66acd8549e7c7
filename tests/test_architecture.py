"""DESIGN §3: imports point inward. This test fails when a module reaches outward."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rds_kernel

PACKAGE = Path(rds_kernel.__file__).parent
BASE = {"errors", "schema", "spec", "mock"}
# role -> roles (first path component under rds_kernel) it may import
ALLOWED: dict[str, set[str]] = {
    **{b: BASE for b in BASE},
    "dp": BASE | {"dp"},
    "node": BASE | {"dp", "node", "demo", "sandbox"},
    "sandbox": BASE | {"dp", "sandbox"},
    "client": BASE | {"dp", "client"},
    "jupyter": {"client", "errors", "jupyter", "__init__"},
    "demo": BASE | {"demo"},
    # The root only hands `%load_ext rds_kernel` on to jupyter, inside a function.
    "__init__": BASE | {"client", "jupyter"},
}


def role_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def imported_roles(path: Path) -> set[str]:
    roles = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "rds_kernel":
                roles.add(parts[1] if len(parts) > 1 else "__init__")
    return roles


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "labextension" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_inward(path: Path) -> None:
    role = role_of(path)
    allowed = ALLOWED.get(role)
    assert allowed is not None, f"{role!r} is not a role of DESIGN §3; add it there first"
    outward = imported_roles(path) - allowed - {role}
    assert not outward, f"{path.relative_to(PACKAGE)} ({role}) imports {sorted(outward)}"


def test_node_never_evaluates_or_unpickles() -> None:
    """DESIGN §1: scientist input never reaches eval/exec/pickle on the node."""
    for path in (PACKAGE / "node").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
                assert n.func.id not in {"eval", "exec", "compile"}, path
            if isinstance(n, ast.Import | ast.ImportFrom):
                mods = [a.name for a in n.names] + [getattr(n, "module", "") or ""]
                assert not any(m.split(".")[0] in {"pickle", "cloudpickle", "dill"} for m in mods)
