"""The OpenAPI schema types every body: each route's answer, each request, each error.

``/openapi.json`` (and ``/docs``) is the contract a scientist's client, or anyone's, can read:
it must show the shape of every answer, not just its status. The shapes are the models of
``rds_kernel.wire``; the fuzz test (``test_fuzz.py``) checks that real answers match them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rds_kernel import wire
from rds_kernel.node.api.app import create_app
from tests.node.nodes import TestNode, build_node

METHODS = {"get", "post", "put", "patch", "delete"}
BINARY = {"type": "string", "format": "binary"}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    node: TestNode = build_node(Path(tmp_path_factory.mktemp("openapi")) / "node")
    try:
        with TestClient(create_app(service=node.service)) as http:
            response = http.get("/openapi.json")
            assert response.status_code == 200
            yield response.json()
    finally:
        node.service.close()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    assert ref.startswith("#/components/schemas/"), ref
    found: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return found


def test_every_route_has_a_typed_2xx_response(document: dict[str, Any]) -> None:
    """Each operation declares a success answer whose shape is a model (an object with its
    properties) — or, for the mock data, a file."""
    ops = operations(document)
    assert len(ops) >= 30
    for method, path, op in ops:
        ok = {status: r for status, r in op["responses"].items() if status.startswith("2")}
        assert ok, f"{method} {path} declares no 2xx response"
        for status, response in ok.items():
            content = response.get("content") or {}
            assert content, f"{method} {path} {status}: no content, so no shape"
            for media, body in content.items():
                schema = body.get("schema") or {}
                if media == "application/json":
                    model = resolve(document, schema)
                    assert model.get("type") == "object" and model.get("properties"), (
                        f"{method} {path} {status}: {schema} is not a typed object"
                    )
                else:
                    assert schema == BINARY, f"{method} {path} {status} {media}: {schema}"


def test_every_error_response_is_the_envelope(document: dict[str, Any]) -> None:
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    for method, path, op in operations(document):
        errors = {s: r for s, r in op["responses"].items() if s[0] in "45"}
        assert errors, f"{method} {path} declares no error answer"
        for status, response in errors.items():
            assert response["content"]["application/json"]["schema"] == envelope, (
                f"{method} {path} {status}"
            )


def test_every_request_body_is_typed(document: dict[str, Any]) -> None:
    """POST and PUT bodies are models too, the two read inside the admission slot included."""
    bodies = {}
    for method, path, op in operations(document):
        if "requestBody" in op:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            assert resolve(document, schema).get("properties"), f"{method} {path}"
            bodies[(method, path)] = schema
    assert bodies[("POST", "/v1/queries")] == {"$ref": "#/components/schemas/ReleaseRequest"}
    assert bodies[("POST", "/v1/queries/preview")] == {"$ref": "#/components/schemas/QuerySpecBody"}
    assert ("POST", "/v1/jobs") in bodies and ("PUT", "/v1/admin/budgets/{name}") in bodies


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    """No dangling ``$ref`` (a model's own ``$defs`` are lifted into the components)."""
    refs: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("$ref"), str):
                refs.append(value["$ref"])
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(document)
    assert refs
    components = document["components"]["schemas"]
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in components, ref


@pytest.mark.parametrize(
    ("method", "path", "model"),
    [
        ("GET", "/v1/node", wire.NodeInfo),
        ("GET", "/v1/datasets", wire.DatasetList),
        ("GET", "/v1/datasets/{name}", wire.DatasetSchema),
        ("POST", "/v1/queries/preview", wire.Preview),
        ("POST", "/v1/queries", wire.ReleaseAnswer),
        ("GET", "/v1/budget", wire.Budget),
        ("GET", "/v1/releases", wire.Releases),
        ("GET", "/v1/admin/users", wire.Users),
        ("POST", "/v1/admin/users/{name}/rotate", wire.UserToken),
        ("GET", "/v1/admin/caps", wire.Caps),
        ("GET", "/v1/admin/audit", wire.AuditLog),
        ("GET", "/v1/jobs/{job_id}", wire.JobView),
        ("GET", "/v1/admin/jobs/{job_id}", wire.OwnerJobView),
        ("GET", "/v1/budget/requests", wire.BudgetRequests),
    ],
)
def test_answers_are_the_wire_models(
    document: dict[str, Any], method: str, path: str, model: type[wire.Wire]
) -> None:
    op = document["paths"][path][method.lower()]
    ok = next(r for s, r in op["responses"].items() if s.startswith("2"))
    schema = ok["content"]["application/json"]["schema"]
    assert schema == {"$ref": f"#/components/schemas/{model.__name__}"}
    shown = resolve(document, schema)
    assert set(shown["properties"]) == set(model.model_json_schema(by_alias=True)["properties"])
