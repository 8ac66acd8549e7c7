"""Scientist code never runs in the node's process (architecture §1, promise 2): only the sandbox
compiles it.

``tests/test_architecture.py`` already refuses calls of eval/exec/compile and pickle imports in
``rds_kernel/node``; this adds the indirect ways: referring to those builtins without calling
them, reaching them through ``builtins``, importing code by name, or loading marshal/pickle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import rds_kernel

PACKAGE = Path(rds_kernel.__file__).parent
DANGEROUS = {"eval", "exec", "compile", "__import__", "execfile"}
MODULES = {"pickle", "cloudpickle", "dill", "marshal", "shelve", "runpy", "code", "codeop"}


def findings(path: Path) -> list[str]:
    found = []
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Name) and n.id in DANGEROUS:
            found.append(f"{n.id} (line {n.lineno})")
        if isinstance(n, ast.Attribute) and n.attr in DANGEROUS - {"compile"}:
            found.append(f".{n.attr} (line {n.lineno})")
        if isinstance(n, ast.Attribute) and n.attr == "compile":
            owner = n.value.id if isinstance(n.value, ast.Name) else ""
            if owner != "re":  # re.compile builds a regular expression, not code
                found.append(f"{owner}.compile (line {n.lineno})")
        if isinstance(n, ast.Import | ast.ImportFrom):
            names = [a.name for a in n.names] + [getattr(n, "module", "") or ""]
            found += [f"import {m}" for m in names if m.split(".")[0] in MODULES | {"builtins"}]
        if isinstance(n, ast.Constant) and n.value in DANGEROUS | {"import_module"}:
            found.append(f"{n.value!r} as a string (line {n.lineno})")
    return found


def test_the_node_package_has_no_way_to_run_code() -> None:
    report = {
        str(p.relative_to(PACKAGE)): findings(p) for p in sorted((PACKAGE / "node").rglob("*.py"))
    }
    assert {k: v for k, v in report.items() if v} == {}


def test_the_sandbox_worker_is_the_one_place_that_compiles_scientist_code() -> None:
    worker = PACKAGE / "sandbox" / "_worker.py"
    assert any("exec" in f for f in findings(worker))
    others = [p for p in (PACKAGE / "sandbox").glob("*.py") if p != worker]
    assert {str(p.name): findings(p) for p in others if findings(p)} == {}
