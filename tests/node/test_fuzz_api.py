"""Schemathesis over the node's OpenAPI schema: no 5xx, and invalid requests charge nothing.

Every generated request (valid and deliberately invalid, for every operation) is sent with a
scientist's token and with the owner's. After each call the ledger is read back: a 4xx answer
must leave the scientist's spent epsilon and delta exactly as they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from rds_kernel.node.app import create_app
from tests.node.nodes import TestNode, build_node


@pytest.fixture
def fuzz_node(tmp_path: Path) -> Iterator[TestNode]:
    n = build_node(tmp_path / "node", alice_epsilon=50.0)
    yield n
    n.service.close()


def ledger(node: TestNode, who: str) -> tuple[float, float]:
    view = node.service.store.budget(who)
    return view.epsilon_spent, view.delta_spent


def call_and_check(case: Any, node: TestNode, who: str) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {node.tokens[who]}"}
    before = {u: ledger(node, u) for u in ("alice", "bob")}
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.path}: {response.text}"
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}
        after = {u: ledger(node, u) for u in ("alice", "bob")}
        assert after == before, f"{case.method} {case.path} -> {response.status_code} charged"


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("who", ["alice", "owner"])
def test_no_5xx_and_invalid_requests_charge_nothing(
    fuzz_node: TestNode, who: str, mode: GenerationMode
) -> None:
    app = create_app(service=fuzz_node.service)
    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [op.ok() for op in api.get_all_operations()]
    assert len(operations) >= 15
    fuzzed = 0
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=15,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            call_and_check(case, fuzz_node, who)

        try:
            run()
            fuzzed += 1
        except Unsatisfiable:
            # Operations without parameters or body have no invalid form to generate.
            assert mode is GenerationMode.NEGATIVE
    assert fuzzed >= (15 if mode is GenerationMode.POSITIVE else 8)
