"""The sidebar's budget type is the node's budget record, field for field.

``labextension/src/api.ts`` declares ``IBudgetLine`` and ``IBudget`` by hand (TypeScript cannot
import a pydantic model); this test reads them and compares their fields, and the fields'
types, with the JSON schema of ``rds_kernel.wire.BudgetLine`` and ``rds_kernel.wire.Budget``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from rds_kernel import wire
from rds_kernel.jupyter.server.catalog import summarise_budget

API_TS = Path(__file__).resolve().parents[2] / "labextension" / "src" / "api.ts"
INTERFACE = re.compile(
    r"^export interface (?P<name>\w+)(?: extends (?P<bases>[\w, ]+))? \{\n(?P<body>.*?)^\}",
    re.MULTILINE | re.DOTALL,
)
FIELD = re.compile(r"^\s*(?P<name>\w+)(?P<optional>\??): (?P<type>[^;]+);", re.MULTILINE)


def interfaces(source: str) -> dict[str, dict[str, str]]:
    """Every exported interface's fields and their TypeScript types, inherited ones included."""
    found: dict[str, tuple[list[str], dict[str, str]]] = {}
    for m in INTERFACE.finditer(source):
        body = re.sub(r"/\*.*?\*/|//[^\n]*", "", m["body"], flags=re.DOTALL)
        fields = {f["name"]: f["type"].strip() for f in FIELD.finditer(body)}
        bases = [b.strip() for b in (m["bases"] or "").split(",") if b.strip()]
        found[m["name"]] = (bases, fields)

    def flat(name: str) -> dict[str, str]:
        bases, fields = found[name]
        out: dict[str, str] = {}
        for base in bases:
            out.update(flat(base))
        return {**out, **fields}

    return {name: flat(name) for name in found}


def ts_type(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    """The TypeScript type a JSON schema property maps to (for the types used here)."""
    if "$ref" in schema:
        return "I" + schema["$ref"].rsplit("/", 1)[1]
    kind = schema.get("type")
    if kind in ("number", "integer"):
        return "number"
    if kind == "string":
        return "string"
    if kind == "boolean":
        return "boolean"
    if kind == "object" and "additionalProperties" in schema:
        return f"Record<string, {ts_type(schema['additionalProperties'], defs)}>"
    raise AssertionError(f"no TypeScript type for {schema}")


@pytest.mark.parametrize(
    ("interface", "model"), [("IBudgetLine", wire.BudgetLine), ("IBudget", wire.Budget)]
)
def test_the_sidebars_budget_is_the_wire_budget(interface: str, model: type[wire.Wire]) -> None:
    declared = interfaces(API_TS.read_text(encoding="utf-8"))
    assert interface in declared, f"{API_TS} has no `export interface {interface}`"
    schema = model.model_json_schema(mode="serialization")
    defs = schema.get("$defs", {})
    expected = {name: ts_type(p, defs) for name, p in schema["properties"].items()}
    assert declared[interface] == expected


def test_the_sidebar_is_sent_the_wire_budget() -> None:
    """What the server extension sends as a node's budget is the wire budget's JSON."""
    line = wire.BudgetLine.of(2.0, 0.0, 0.5, 0.0)
    budget = wire.Budget(user="alice", per_dataset={"patients": line}, **vars(line))
    sent = summarise_budget(budget)
    assert sent is not None
    fields = interfaces(API_TS.read_text(encoding="utf-8"))["IBudget"]
    assert set(sent) == set(fields)
    assert set(sent["per_dataset"]["patients"]) == set(
        interfaces(API_TS.read_text(encoding="utf-8"))["IBudgetLine"]
    )
