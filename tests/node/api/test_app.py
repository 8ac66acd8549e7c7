"""The node's HTTP API, in-process: auth, the release path, budgets, errors, admin."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

import rds_kernel.node.admission as admission_module
import rds_kernel.node.service as service_module
from rds_kernel.node.api.app import create_app
from rds_kernel.spec import Query, col, count, mean
from rds_kernel.spec import sum as sum_
from tests.node.nodes import TestNode, build_node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[TestNode]:
    n = build_node(tmp_path / "node")
    yield n
    n.service.close()


@pytest.fixture
def http(node: TestNode) -> Iterator[TestClient]:
    with TestClient(create_app(service=node.service), raise_server_exceptions=False) as c:
        yield c


def auth(node: TestNode, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.tokens[who]}"}


def spec(epsilon: float = 0.5, **kw: Any) -> dict[str, Any]:
    q = Query("patients").filter(col("age") >= 50).group_by("sex")
    return q.agg(count(), mean("cvd", bounds=(0, 1))).spec(epsilon, **kw).to_dict()


def spent(http: TestClient, node: TestNode, who: str = "alice") -> float:
    body = http.get("/v1/budget", headers=auth(node, who)).json()
    return float(body["epsilon_spent"])


def release(http: TestClient, node: TestNode, rid: str, who: str = "alice", **kw: Any) -> Any:
    return http.post(
        "/v1/queries", json={"request_id": rid, "spec": spec(**kw)}, headers=auth(node, who)
    )


def test_healthz_needs_no_token(http: TestClient) -> None:
    r = http.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_release_charges_the_exact_cost_and_returns_noisy_groups(
    http: TestClient, node: TestNode
) -> None:
    """A release returns every public key, its accuracy and cost; the ledger moves by it."""
    r = release(http, node, "r1")
    assert r.status_code == 200, r.text
    body = r.json()
    cost = body["cost"]["epsilon"]
    assert 0 < cost <= 0.5
    assert body["result"]["columns"][:1] == ["sex"]
    assert sorted(row[0] for row in body["result"]["rows"]) == ["F", "M"]
    assert body["node"] == "test_node"
    assert body["replayed"] is False
    assert spent(http, node) == pytest.approx(cost, abs=0)
    history = http.get("/v1/releases", headers=auth(node, "alice")).json()["releases"]
    assert [h["request_id"] for h in history] == ["r1"]
    assert history[0]["spec"]["dataset"] == "patients"


def test_preview_is_free_and_reports_accuracy(http: TestClient, node: TestNode) -> None:
    r = http.post("/v1/queries/preview", json=spec(), headers=auth(node, "alice"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0 < body["cost"]["epsilon"] <= body["requested"]["epsilon"] == 0.5
    assert {row["aggregate"] for row in body["summary"]} >= {"count", "mean_cvd"}
    assert spent(http, node) == 0


def test_retry_with_the_same_request_id_charges_once(http: TestClient, node: TestNode) -> None:
    first = release(http, node, "same").json()
    second = release(http, node, "same").json()
    assert second["replayed"] is True
    assert second["result"] == first["result"]
    assert spent(http, node) == pytest.approx(first["cost"]["epsilon"], abs=0)


def test_request_id_reused_for_another_query_is_a_conflict(
    http: TestClient, node: TestNode
) -> None:
    release(http, node, "rid")
    before = spent(http, node)
    r = release(http, node, "rid", epsilon=0.25)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conflict"
    assert spent(http, node) == before


def test_running_out_of_budget_refuses_and_charges_nothing(
    http: TestClient, node: TestNode
) -> None:
    """bob has ε=1: two releases at 0.5 fit, the third is refused with the numbers."""
    assert release(http, node, "b1", who="bob").status_code == 200
    assert release(http, node, "b2", who="bob").status_code == 200
    before = spent(http, node, "bob")
    r = release(http, node, "b3", who="bob")
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["code"] == "budget_exceeded"
    assert re.match(
        r"needs ε=0.5, ε=[0-9.e-]+ left on this node; nothing was charged", err["message"]
    )
    assert "ask the owner" in err["message"]
    assert err["detail"]["needed"]["epsilon"] == pytest.approx(0.5)
    assert spent(http, node, "bob") == before <= 1.0
    history = http.get("/v1/releases", headers=auth(node, "bob")).json()["releases"]
    assert {h["request_id"] for h in history} == {"b1", "b2"}
    audit = http.get("/v1/admin/audit", headers=auth(node, "owner")).json()["audit"]
    assert any(e["action"] == "release.refused" and e["actor"] == "bob" for e in audit)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"request_id": "x", "spec": {**spec(), "epsilon": -1}}, 422, "invalid_query"),
        ({"request_id": "x", "spec": {**spec(), "dataset": "nope"}}, 404, "not_found"),
        ({"request_id": "x", "spec": {**spec(), "filter": {"col": "ssn"}}}, 422, "invalid_query"),
        ({"request_id": "x" * 500, "spec": spec()}, 400, "bad_request"),
        ({"request_id": "x"}, 400, "bad_request"),
        ({"spec": spec()}, 400, "bad_request"),
    ],
)
def test_bad_requests_are_4xx_and_charge_nothing(
    http: TestClient, node: TestNode, body: Any, status: int, code: str
) -> None:
    r = http.post("/v1/queries", json=body, headers=auth(node, "alice"))
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert spent(http, node) == 0


def test_malformed_and_oversized_bodies_get_the_envelope(http: TestClient, node: TestNode) -> None:
    h = {**auth(node, "alice"), "Content-Type": "application/json"}
    r = http.post("/v1/queries", content=b"{not json", headers=h)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "bad_request"
    big = json.dumps({"request_id": "x", "spec": {"pad": "x" * 300_000}}).encode()
    r = http.post("/v1/queries", content=big, headers=h)
    assert r.status_code == 400
    assert "limit" in r.json()["error"]["message"]
    r = http.get("/v1/nothing-here", headers=h)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_internal_errors_leak_nothing_and_a_failed_release_is_charged(
    http: TestClient, node: TestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash while the mechanism runs on the private data becomes a generic 500 with no
    traceback and no value — and it is charged, like an answer: whether a query fails there
    may depend on the data, so an uncharged failure would be a free bit. A retry under the
    same request_id gets the same refusal and is not charged again."""

    def boom(*_a: Any) -> Any:
        raise RuntimeError("private value 4242 in row 17")

    monkeypatch.setattr(service_module, "execute", boom)
    for _ in range(2):
        r = release(http, node, "crash")
        assert r.status_code == 500
        text = r.text
        assert "4242" not in text
        assert "Traceback" not in text
        assert r.json()["error"]["code"] == "internal_error"
        assert "was charged" in r.json()["error"]["message"]
        assert spent(http, node) == pytest.approx(0.5)


def test_a_query_the_budget_cannot_cover_never_touches_the_data(
    http: TestClient, node: TestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The precheck covers every scope, the dataset's global cap included: a release the
    global cap refuses is refused before the mechanism runs (it used to run in full first)."""
    node.service.store.set_dataset_cap("patients", 0.25, actor="test")
    ran: list[Any] = []
    monkeypatch.setattr(service_module, "execute", lambda *a: ran.append(a))
    r = release(http, node, "capped")
    assert r.status_code == 403
    assert "for all scientists together" in r.json()["error"]["message"]
    assert ran == []
    assert spent(http, node) == 0


@pytest.mark.parametrize("rid", ["abc\n", "abc\nX", " abc", "abc "])
def test_a_request_id_must_match_whole(
    http: TestClient, node: TestNode, monkeypatch: pytest.MonkeyPatch, rid: str
) -> None:
    """request_id is matched whole: "abc\\n" passed a prefix match and the query ran on the
    private data before the ledger refused it."""
    ran: list[Any] = []
    monkeypatch.setattr(service_module, "execute", lambda *a: ran.append(a))
    r = release(http, node, rid)
    assert ran == []
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "bad_request"
    assert spent(http, node) == 0


def test_datasets_schema_and_mock(http: TestClient, node: TestNode) -> None:
    h = auth(node, "alice")
    listing = http.get("/v1/datasets", headers=h).json()["datasets"]
    assert [d["name"] for d in listing] == ["patients"]
    schema = http.get("/v1/datasets/patients", headers=h).json()["schema"]
    assert schema["columns"]["age"]["type"] == "int"
    pq = http.get("/v1/datasets/patients/mock", headers=h)
    assert pq.status_code == 200
    mock = pl.read_parquet(io.BytesIO(pq.content))
    assert mock.columns == list(schema["columns"])
    assert mock.height == 200
    csv = http.get("/v1/datasets/patients/mock?format=csv", headers=h)
    assert csv.headers["content-type"].startswith("text/csv")
    assert pl.read_csv(io.BytesIO(csv.content)).height == 200
    missing = http.get("/v1/datasets/secret", headers=h)
    assert missing.status_code == 404
    assert "patients" in missing.json()["error"]["message"]


def test_owner_administers_users_and_budgets_over_http(http: TestClient, node: TestNode) -> None:
    h = auth(node, "owner")
    r = http.post("/v1/admin/users", json={"name": "carol", "epsilon": 0.7}, headers=h)
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    me = http.get("/v1/node", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["user"] == {"name": "carol", "role": "scientist"}
    r = http.put("/v1/admin/budgets/carol", json={"epsilon": 3.0, "delta": 1e-6}, headers=h)
    assert r.json()["epsilon_total"] == 3.0
    r = http.put("/v1/admin/caps/patients", json={"epsilon": 5.0}, headers=h)
    assert r.json()["epsilon_total"] == 5.0
    actions = [e["action"] for e in http.get("/v1/admin/audit", headers=h).json()["audit"]]
    assert len(actions) >= 3
    users = [u["name"] for u in http.get("/v1/admin/users", headers=h).json()["users"]]
    assert "carol" in users
    dup = http.post("/v1/admin/users", json={"name": "carol"}, headers=h)
    assert dup.status_code == 409


# ----------------------------------------------------------------- the authorization matrix

ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", "/v1/node", None),
    ("GET", "/v1/datasets", None),
    ("GET", "/v1/datasets/patients", None),
    ("GET", "/v1/datasets/patients/mock", None),
    ("POST", "/v1/queries/preview", "spec"),
    ("POST", "/v1/queries", "release"),
    ("GET", "/v1/budget", None),
    ("GET", "/v1/releases", None),
    ("GET", "/v1/admin/users", None),
    ("POST", "/v1/admin/users", {"name": "dave"}),
    ("GET", "/v1/admin/budgets/alice", None),
    ("PUT", "/v1/admin/budgets/alice", {"epsilon": 2.5}),
    ("GET", "/v1/admin/caps", None),
    ("PUT", "/v1/admin/caps/patients", {"epsilon": 9.0}),
    ("GET", "/v1/admin/audit", None),
    ("POST", "/v1/admin/users/bob/enable", None),
]
ADMIN = "/v1/admin/"


@pytest.mark.parametrize(("method", "path", "payload"), ENDPOINTS)
@pytest.mark.parametrize("who", ["none", "bad", "alice", "bob", "owner"])
def test_authorization_matrix(
    http: TestClient, node: TestNode, method: str, path: str, payload: Any, who: str
) -> None:
    """Every endpoint × every caller: 401 without a valid token, 403 for scientists on admin
    routes, success otherwise; owners have no budget, so their releases are refused."""
    headers = {"none": {}, "bad": {"Authorization": "Bearer rds_not-a-real-token"}}.get(who)
    if headers is None:
        headers = auth(node, who)
    body = (
        {"spec": spec(), "release": {"request_id": f"m-{who}", "spec": spec()}}.get(
            payload, payload
        )
        if isinstance(payload, str | type(None))
        else payload
    )
    r = http.request(method, path, json=body, headers=headers)
    if who in ("none", "bad"):
        expected = 401
    elif path.startswith(ADMIN) and who != "owner":
        expected = 403
    elif path == "/v1/queries" and who == "owner":
        expected = 403  # owners hold no budget unless they grant themselves one
    else:
        expected = 201 if (method, path) == ("POST", "/v1/admin/users") else 200
    assert r.status_code == expected, r.text
    if expected >= 400:
        assert set(r.json()) == {"error"}
        assert set(r.json()["error"]) == {"code", "message", "detail"}


def test_scientists_see_only_their_own_releases(http: TestClient, node: TestNode) -> None:
    release(http, node, "alice-1")
    bob = http.get("/v1/releases", headers=auth(node, "bob")).json()["releases"]
    assert bob == []
    # bob reusing alice's request_id is simply a new release of his own
    r = release(http, node, "alice-1", who="bob")
    assert r.json()["replayed"] is False


def test_a_replaced_dataset_is_served_with_its_new_schema(
    http: TestClient, node: TestNode, tmp_path: Path
) -> None:
    """`rds dataset add --replace` while the node runs: the next request sees the new schema."""
    h = auth(node, "alice")
    assert http.post("/v1/queries/preview", json=spec(), headers=h).status_code == 200
    data = tmp_path / "small.csv"
    data.write_text("age,sex\n30,F\n40,M\n")
    schema = tmp_path / "small.toml"
    schema.write_text(
        '[columns.age]\ntype = "int"\nbounds = [0, 120]\n'
        '[columns.sex]\ntype = "category"\ncategories = ["F", "M"]\n'
    )
    node.service.datasets.add("patients", data, schema, replace=True)
    cols = http.get("/v1/datasets/patients", headers=h).json()["schema"]["columns"]
    assert list(cols) == ["age", "sex"]
    r = http.post("/v1/queries/preview", json=spec(), headers=h)
    assert r.status_code == 422
    assert "cvd" in r.json()["error"]["message"]


def test_a_replaced_dataset_never_reuses_what_was_cached_for_the_old_one(
    http: TestClient, node: TestNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Versions are a token written at add time, not the directory's inode: an inode freed by a
    replace can come back two replaces later (simulated here: every inode is the same), and
    then the schema and the prepared measurements of the old data were paired with the new."""
    real_stat = Path.stat

    def same_inode(self: Path, *args: Any, **kwargs: Any) -> os.stat_result:
        st = real_stat(self, *args, **kwargs)
        return os.stat_result((st.st_mode, 42, *tuple(st)[2:]))

    monkeypatch.setattr(Path, "stat", same_inode)
    h = auth(node, "alice")
    query = Query("patients").agg(sum_("age")).spec(1.0).to_dict()

    def scale() -> float:
        r = http.post("/v1/queries/preview", json=query, headers=h)
        assert r.status_code == 200, r.text
        return float(r.json()["summary"][0]["scale"])

    before = scale()
    data = tmp_path / "small.csv"
    data.write_text("age\n30\n40\n")
    for upper in (1000, 10):  # the second replace puts back a schema unlike the first one
        schema = tmp_path / f"small-{upper}.toml"
        schema.write_text(f'[columns.age]\ntype = "int"\nbounds = [0, {upper}]\n')
        node.service.datasets.add("patients", data, schema, replace=True)
        assert scale() != before
        assert http.get("/v1/datasets/patients", headers=h).json()["schema"]["columns"]["age"][
            "bounds"
        ] == [0, upper]


def test_a_budget_update_without_delta_keeps_the_delta(http: TestClient, node: TestNode) -> None:
    """PUT of ε alone used to zero the δ total (and a cap's δ), after which every unknown-keys
    query was refused; an omitted δ now keeps the one already set."""
    owner = auth(node, "owner")
    r = http.put("/v1/admin/budgets/alice", json={"epsilon": 3.0}, headers=owner)
    assert r.status_code == 200, r.text
    assert (r.json()["epsilon_total"], r.json()["delta_total"]) == (3.0, 1e-5)
    r = http.put("/v1/admin/budgets/alice", json={"epsilon": 3.0, "delta": 0}, headers=owner)
    assert r.json()["delta_total"] == 0.0
    http.put("/v1/admin/caps/patients", json={"epsilon": 5.0, "delta": 1e-6}, headers=owner)
    r = http.put("/v1/admin/caps/patients", json={"epsilon": 4.0}, headers=owner)
    assert (r.json()["epsilon_total"], r.json()["delta_total"]) == (4.0, 1e-6)
    body = {"epsilon": 1.0, "dataset": "patients"}
    r = http.put("/v1/admin/budgets/alice", json=body, headers=owner)
    assert r.json()["per_dataset"]["patients"]["delta_total"] == 0.0  # no cap had a δ yet


@pytest.mark.parametrize("dataset", ["nope", "../x"])
def test_a_cap_for_a_dataset_that_does_not_exist_is_refused(
    http: TestClient, node: TestNode, dataset: str
) -> None:
    """A per-scientist cap on a dataset the node does not hold was stored with a 200."""
    body = {"epsilon": 1.0, "dataset": dataset}
    r = http.put("/v1/admin/budgets/alice", json=body, headers=auth(node, "owner"))
    assert r.status_code == 404, r.text
    assert "no dataset" in r.json()["error"]["message"]
    assert node.service.store.budget("alice").per_dataset == {}


def test_the_owner_rotates_disables_and_enables_tokens(http: TestClient, node: TestNode) -> None:
    """Tokens can be revoked over HTTP (the owner's own too), and every change is audited."""
    owner = auth(node, "owner")
    old_alice = auth(node, "alice")
    r = http.post("/v1/admin/users/alice/rotate", headers=owner)
    assert r.status_code == 200, r.text
    new_alice = {"Authorization": f"Bearer {r.json()['token']}"}
    assert http.get("/v1/budget", headers=old_alice).status_code == 401
    assert http.get("/v1/budget", headers=new_alice).status_code == 200

    assert http.post("/v1/admin/users/bob/disable", headers=owner).json()["user"]["disabled"]
    assert http.get("/v1/budget", headers=auth(node, "bob")).status_code == 401
    assert http.post("/v1/admin/users/bob/enable", headers=owner).status_code == 200
    assert http.get("/v1/budget", headers=auth(node, "bob")).status_code == 200

    r = http.post("/v1/admin/users/owner/disable", headers=owner)
    assert r.status_code == 400 and "rds user disable" in r.json()["error"]["message"]
    r = http.post("/v1/admin/users/owner/rotate", headers=owner)
    new_owner = {"Authorization": f"Bearer {r.json()['token']}"}
    assert http.get("/v1/admin/users", headers=owner).status_code == 401
    audit = http.get("/v1/admin/audit", headers=new_owner).json()["audit"]
    actions = [e["action"] for e in audit]
    for action in ("user.rotate_token", "user.disable", "user.enable"):
        assert action in actions
    assert http.post("/v1/admin/users/nobody/rotate", headers=new_owner).status_code == 404


def test_a_result_that_cannot_be_stored_is_charged_and_a_summary_is_checked_first(
    http: TestClient, node: TestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stored answer used to be checked for plain JSON only inside the charge, after the
    mechanism had run (a preview summary with an infinite scale did that): a failure there
    charged nothing. Now the parts known without the data are checked before it is touched,
    and a result that cannot be stored is a charged failure."""

    class Weird:
        def to_dict(self) -> dict[str, Any]:
            return {"rows": [[float("nan")]]}

    monkeypatch.setattr(service_module, "execute", lambda *a: Weird())
    r = release(http, node, "nan-result")
    assert r.status_code == 500 and "was charged" in r.json()["error"]["message"]
    assert spent(http, node) == pytest.approx(0.5)

    ran: list[Any] = []
    monkeypatch.setattr(service_module, "execute", lambda *a: ran.append(a))
    real = service_module.NodeService._prepared_query

    def infinite_summary(self: Any, raw: Any) -> Any:
        spec_, ds, prepared = real(self, raw)
        summary = [{**row, "scale": float("inf")} for row in prepared.summary]
        return spec_, ds, dataclasses.replace(prepared, summary=summary)

    monkeypatch.setattr(service_module.NodeService, "_prepared_query", infinite_summary)
    r = release(http, node, "inf-summary")
    assert r.status_code == 500 and "was charged" not in r.json()["error"]["message"]
    assert ran == [] and spent(http, node) == pytest.approx(0.5)


def test_every_response_says_no_store_and_nosniff(http: TestClient, node: TestNode) -> None:
    """Answers are per-user and cost budget: no cache may keep them, errors included."""
    for r in (
        http.get("/healthz"),
        http.get("/v1/budget", headers=auth(node, "alice")),
        http.get("/v1/budget"),
        http.get("/v1/nothing-here"),
    ):
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-content-type-options"] == "nosniff"


def test_a_405_says_what_is_allowed(http: TestClient, node: TestNode) -> None:
    r = http.delete("/v1/budget", headers=auth(node, "alice"))
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"
    assert set(r.json()) == {"error"}


def test_an_oversized_chunked_body_gets_the_size_limit_message(
    http: TestClient, node: TestNode
) -> None:
    """Without Content-Length the limit used to surface as a JSON parse error."""

    def chunks() -> Iterator[bytes]:
        yield b'{"request_id": "x", "spec": {"pad": "'
        for _ in range(40):
            yield b"x" * 10_000
        yield b'"}}'

    h = {**auth(node, "alice"), "Content-Type": "application/json"}
    r = http.post("/v1/queries", content=chunks(), headers=h)
    assert r.status_code == 400
    assert "larger than the node's limit" in r.json()["error"]["message"]
    assert spent(http, node) == 0


def test_the_api_docs_work_offline(http: TestClient) -> None:
    """/docs used to load Swagger UI from a CDN: an offline node showed a blank page."""
    page = http.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    scripts = re.findall(r'src="([^"]+\.js)"', page.text)
    assert scripts and all(s.startswith("/") for s in scripts)
    for src in scripts:
        asset = http.get(src)
        assert asset.status_code == 200 and len(asset.content) > 100_000


def test_every_refusal_is_audited_once_with_what_was_asked(
    http: TestClient, node: TestNode
) -> None:
    """Invalid specs (422), refused releases, scientists on admin routes (403) and bad tokens
    (401) were not audited, and a refused release recorded neither the dataset nor the ε."""
    bad = {**spec(), "filter": {"col": "ssn"}}
    assert (
        http.post(
            "/v1/queries", json={"request_id": "bad", "spec": bad}, headers=auth(node, "alice")
        ).status_code
        == 422
    )
    assert release(http, node, "big", who="bob", epsilon=5.0).status_code == 403
    assert http.get("/v1/admin/users", headers=auth(node, "bob")).status_code == 403
    for _ in range(3):
        r = http.get("/v1/budget", headers={"Authorization": "Bearer rds_wrong"})
        assert r.status_code == 401
    entries = http.get("/v1/admin/audit", headers=auth(node, "owner")).json()["audit"]
    refused = [e for e in entries if e["action"].endswith((".refused", ".failed"))]
    by_action = {}
    for e in refused:
        by_action.setdefault(e["action"], []).append(e)
    [invalid, budget] = sorted(by_action["release.refused"], key=lambda e: e["actor"])
    assert invalid["actor"] == "alice" and invalid["detail"]["code"] == "invalid_query"
    assert invalid["detail"]["dataset"] == "patients" and invalid["detail"]["epsilon"] == 0.5
    assert invalid["detail"]["request_id"] == "bad" and "ssn" in invalid["detail"]["reason"]
    assert budget["actor"] == "bob" and budget["detail"]["code"] == "budget_exceeded"
    assert budget["detail"]["epsilon"] == 5.0 and budget["detail"]["dataset"] == "patients"
    [admin] = by_action["admin.refused"]
    assert admin["actor"] == "bob" and admin["detail"]["request"] == "GET /v1/admin/users"
    [auth_failure] = by_action["auth.failed"]  # three failures, one row: coalesced per client
    assert auth_failure["detail"]["path"] == "/v1/budget"
    assert auth_failure["detail"]["reason"] == "bad token"
    assert "rds_wrong" not in json.dumps(entries)


def test_authentication_failures_are_coalesced_per_client_and_window() -> None:
    """A flood of bad tokens writes one audit row per client and minute, with the count."""
    from rds_kernel.node.refusals import AuthFailures

    rows: list[dict[str, Any]] = []
    now = [0.0]
    failures = AuthFailures(rows.append, window=60.0, clock=lambda: now[0])
    for _ in range(1000):
        failures.record("10.0.0.1", "/v1/budget", "bad token")
    failures.record("10.0.0.2", "/v1/budget", "no token")
    now[0] = 61.0
    failures.record("10.0.0.1", "/v1/node", "bad token")
    assert [(r["client"], r.get("unrecorded", 0)) for r in rows] == [
        ("10.0.0.1", 0),
        ("10.0.0.2", 0),
        ("10.0.0.1", 999),
    ]


def test_one_scientists_refusals_cannot_grow_the_audit_log_without_limit(
    http: TestClient, node: TestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every refused release wrote one row: a scientist could fill the database. Now up to 30
    a minute are recorded in full and the rest counted in the next row."""
    monkeypatch.setattr(admission_module, "REFUSAL_HOLD", 0.0)  # refusals back to back
    bad = {**spec(), "filter": {"col": "ssn"}}
    for i in range(40):
        body = {"request_id": f"bad-{i}", "spec": bad}
        assert http.post("/v1/queries", json=body, headers=auth(node, "alice")).status_code == 422
    entries = http.get("/v1/admin/audit?limit=1000", headers=auth(node, "owner")).json()["audit"]
    refused = [e for e in entries if e["action"] == "release.refused" and e["actor"] == "alice"]
    assert len(refused) == 30


def test_a_release_in_flight_keeps_reading_the_version_it_began_on(
    node: TestNode, tmp_path: Path
) -> None:
    """A replace between preparing a release and scanning its rows ran the old version's
    measurement on the new file (an owner-side race). Each version now has a directory of its
    own: the dataset handle keeps reading its version; the previous one is kept for such
    readers and older ones are deleted."""
    registry = node.service.datasets
    before = registry.get("patients")
    rows_before = before.scan().select(pl.len()).collect().item()
    data = tmp_path / "small.csv"
    data.write_text("age,sex\n30,F\n40,M\n")
    schema = tmp_path / "small.toml"
    schema.write_text(
        '[columns.age]\ntype = "int"\nbounds = [0, 120]\n'
        '[columns.sex]\ntype = "category"\ncategories = ["F", "M"]\n'
    )
    registry.add("patients", data, schema, replace=True)
    assert before.scan().select(pl.len()).collect().item() == rows_before
    assert registry.get("patients").scan().select(pl.len()).collect().item() == 2
    registry.add("patients", data, schema, replace=True)
    registry.add("patients", data, schema, replace=True)
    versions = sorted(p.name for p in registry.root.glob(".patients.*"))
    assert len(versions) == 2  # the current one and the one before it
    assert not before.directory.exists()
    assert registry.names() == ["patients"]


def test_a_dataset_stored_before_versions_had_directories_is_replaced(
    node: TestNode, tmp_path: Path
) -> None:
    """A node directory from before: datasets/NAME is a plain directory without a version."""
    registry = node.service.datasets
    current = registry.get("patients").directory
    legacy = registry.root / "patients"
    legacy.unlink()
    current.rename(legacy)
    (legacy / "version").unlink()
    old = registry.get("patients")
    assert old.version.startswith("legacy-") and old.directory == legacy.resolve()
    # (a handle on a plain directory follows its path: the first replace moves it aside)
    data = tmp_path / "small.csv"
    data.write_text("age\n30\n")
    schema = tmp_path / "small.toml"
    schema.write_text('[columns.age]\ntype = "int"\nbounds = [0, 120]\n')
    new = registry.add("patients", data, schema, replace=True)
    assert registry.root.joinpath("patients").is_symlink()
    assert new.scan().select(pl.len()).collect().item() == 1
    [kept] = [p for p in registry.root.glob(".patients.*") if p.resolve() != new.directory]
    assert (kept / "data.parquet").is_file()  # the old rows, kept as the previous version


def test_a_refusal_keeps_the_scientists_slot_a_moment(http: TestClient, node: TestNode) -> None:
    """Refusals are cheap to send and not free to make: a refused request holds its slot for
    REFUSAL_HOLD after the answer, so a flood of them gets 429s (no parsing) in between."""
    bad = {**spec(), "filter": {"col": "ssn"}}
    h = auth(node, "alice")
    assert (
        http.post("/v1/queries", json={"request_id": "b1", "spec": bad}, headers=h).status_code
        == 422
    )
    r = http.post("/v1/queries", json={"request_id": "b2", "spec": spec()}, headers=h)
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert http.get("/v1/budget", headers=auth(node, "bob")).status_code == 200  # others: fine
    time.sleep(admission_module.REFUSAL_HOLD + 0.1)
    assert release(http, node, "b3").status_code == 200
