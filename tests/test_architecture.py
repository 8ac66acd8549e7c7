"""Imports point inward (docs/architecture.md, "Parts"). This test fails when a module reaches
outward, between the roles of the package and between the layers inside the node."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rds_kernel

PACKAGE = Path(rds_kernel.__file__).parent
# `wire` (the HTTP API's typed bodies) is a leaf both sides share: see test_wire_is_a_leaf
BASE = {"errors", "schema", "spec", "mock", "wire"}
# role -> roles (first path component under rds_kernel) it may import
ALLOWED: dict[str, set[str]] = {
    **{b: BASE for b in BASE},
    "dp": BASE | {"dp"},
    "node": BASE | {"dp", "node", "sandbox"},
    "sandbox": BASE | {"dp", "sandbox"},
    "client": BASE | {"dp", "client"},
    "jupyter": {"client", "errors", "jupyter", "wire", "__init__"},
    # the demo launcher stands up nodes; nothing but the CLI imports the CLI
    "demo": BASE | {"demo", "dp", "node"},
    "cli": BASE | {"cli", "demo", "node"},
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
            if node.module == "rds_kernel":  # `from rds_kernel import wire`: a module, not the root
                names = [
                    f"rds_kernel.{a.name}" if _is_module(a.name) else "rds_kernel"
                    for a in node.names
                ]
        for name in names:
            parts = name.split(".")
            if parts[0] == "rds_kernel":
                roles.add(parts[1] if len(parts) > 1 else "__init__")
    return roles


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name / "__init__.py").is_file()


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "labextension" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_inward(path: Path) -> None:
    role = role_of(path)
    allowed = ALLOWED.get(role)
    assert allowed is not None, f"{role!r} is not a role in docs/architecture.md; add it first"
    outward = imported_roles(path) - allowed - {role}
    assert not outward, f"{path.relative_to(PACKAGE)} ({role}) imports {sorted(outward)}"


# Layers inside the node: the store knows nothing of the rest; the services (the node's root
# modules) use the store; jobs use both; the HTTP API uses everything and nothing uses it.
NODE = PACKAGE / "node"
NODE_LAYERS: dict[str, set[str]] = {
    "store": {"store"},
    "core": {"core", "store"},
    "jobs": {"jobs", "core", "store"},
    "api": {"api", "jobs", "core", "store"},
}


def node_layer(module: str) -> str:
    """The layer of ``rds_kernel.node.X...`` (or of a file under node/)."""
    first = module.split(".")[0]
    return first if first in ("store", "jobs", "api") else "core"


NODE_MODULES = sorted(NODE.rglob("*.py"))


@pytest.mark.parametrize("path", NODE_MODULES, ids=lambda p: str(p.relative_to(NODE)))
def test_layers_inside_the_node_point_inward(path: Path) -> None:
    layer = node_layer(".".join(path.relative_to(NODE).with_suffix("").parts))
    used = set()
    for n in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(n, ast.Import):
            names = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            names = [n.module]
        for name in names:
            if name.startswith("rds_kernel.node."):
                used.add(node_layer(name.removeprefix("rds_kernel.node.")))
    outward = used - NODE_LAYERS[layer]
    assert not outward, f"node/{path.relative_to(NODE)} ({layer}) imports {sorted(outward)}"
    if layer == "store":
        roles = imported_roles(path) - {"node"}
        assert roles <= {"errors", "wire"}, (
            f"the store imports {sorted(roles)}: only errors, wire and itself"
        )


def test_wire_is_a_leaf() -> None:
    """The wire models import no other part of rds_kernel: node and client both use them."""
    assert imported_roles(PACKAGE / "wire.py") == set()


def test_nothing_imports_the_cli() -> None:
    for path in MODULES:
        if role_of(path) != "cli":
            assert "cli" not in imported_roles(path), path


def test_node_never_evaluates_or_unpickles() -> None:
    """Scientist input never reaches eval/exec/pickle on the node."""
    for path in (PACKAGE / "node").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
                assert n.func.id not in {"eval", "exec", "compile"}, path
            if isinstance(n, ast.Import | ast.ImportFrom):
                mods = [a.name for a in n.names] + [getattr(n, "module", "") or ""]
                assert not any(m.split(".")[0] in {"pickle", "cloudpickle", "dill"} for m in mods)


def test_tests_import_helpers_not_conftests() -> None:
    """Shared fixtures live in the plugin (tests/plugin.py); a conftest is never imported."""
    tests = Path(__file__).parent
    for path in tests.rglob("*.py"):
        for n in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(n, ast.ImportFrom) and n.module:
                assert not n.module.endswith("conftest"), f"{path} imports {n.module}"
