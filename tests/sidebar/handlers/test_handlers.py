"""The sidebar's server extension (``/rds-kernel/...``), through Jupyter's real HTTP stack.

Each test saves connections the way the magics do, then asks the routes with pytest-jupyter's
``jp_fetch`` (an in-process Jupyter server that refuses unauthenticated access). The owner node
behind them is real (uvicorn on a loopback port).
"""

from __future__ import annotations

import json
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.serverapp import ServerApp
from jupyter_server.utils import JupyterServerAuthWarning
from tornado.httpclient import HTTPResponse

from rds_kernel.client import load_connections, save_connection
from tests.node.nodes import RunningNode

# jupyter_server_terminals' websocket, not ours: test_every_route_requires_login covers ours.
pytestmark = pytest.mark.filterwarnings("ignore:(?s)Extension endpoints without.*TermSocket")

Fetch = Callable[..., Awaitable[HTTPResponse]]


async def fetch_json(jp_fetch: Fetch, *parts: str, **kwargs: Any) -> tuple[int, Any]:
    response = await jp_fetch("rds-kernel", *parts, raise_error=False, **kwargs)
    body = response.body.decode()
    assert_no_token(body)
    return response.code, json.loads(body) if body else None


SECRETS: list[str] = []


def assert_no_token(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, "a token reached the browser"


@pytest.fixture(autouse=True)
def secrets(owner_node: RunningNode) -> None:
    """Every token of the node; no response may contain any of them."""
    SECRETS[:] = [*owner_node.tokens.values(), "not-a-real-token-0123456789"]


async def test_lists_a_saved_node_with_its_datasets_and_budget(
    jp_fetch: Fetch, config_dir: Path, owner_node: RunningNode
) -> None:
    """A saved connection is listed as reachable, with the user, datasets and ε left."""
    save_connection("hospital_a", owner_node.url, owner_node.tokens["alice"])
    code, body = await fetch_json(jp_fetch, "nodes")
    assert code == 200
    [node] = body["nodes"]
    assert node["name"] == "hospital_a"
    assert node["url"] == owner_node.url
    assert node["status"] == "ok"
    assert node["message"] is None
    assert node["user"] == "alice"
    assert node["node_name"] == "test_node"
    assert node["datasets"] == ["patients"]
    assert node["budget"]["epsilon_total"] == pytest.approx(2.0)
    assert 0 <= node["budget"]["epsilon_remaining"] <= 2.0
    assert "token" not in node


async def test_no_saved_connection_lists_no_node(jp_fetch: Fetch, config_dir: Path) -> None:
    code, body = await fetch_json(jp_fetch, "nodes")
    assert (code, body) == (200, {"nodes": []})


async def test_an_unreachable_node_is_listed_as_unreachable_beside_the_others(
    jp_fetch: Fetch, config_dir: Path, owner_node: RunningNode, closed_port_url: str
) -> None:
    """A node that is down does not turn the list into an error; it says what to check."""
    save_connection("down", closed_port_url, "not-a-real-token-0123456789")
    save_connection("hospital_a", owner_node.url, owner_node.tokens["alice"])
    code, body = await fetch_json(jp_fetch, "nodes")
    assert code == 200
    down, up = body["nodes"]
    assert (down["name"], down["status"]) == ("down", "unreachable")
    assert "could not reach" in down["message"] or "could not connect" in down["message"]
    assert down["datasets"] == [] and down["budget"] is None
    assert (up["name"], up["status"]) == ("hospital_a", "ok")


async def test_a_broken_connections_file_is_an_error_saying_what_to_do(
    jp_fetch: Fetch, config_dir: Path
) -> None:
    config_dir.mkdir()
    (config_dir / "connections.json").write_text("{not json")
    code, body = await fetch_json(jp_fetch, "nodes")
    assert (code, body["error"]["code"]) == (400, "bad_request")
    assert "delete it and connect again" in body["error"]["message"]


async def test_a_refused_token_is_listed_as_an_error(
    jp_fetch: Fetch, config_dir: Path, owner_node: RunningNode
) -> None:
    save_connection("hospital_a", owner_node.url, "not-a-real-token-0123456789")
    code, body = await fetch_json(jp_fetch, "nodes")
    [node] = body["nodes"]
    assert (code, node["status"]) == (200, "error")
    assert node["message"].startswith("AuthenticationError: ")


async def test_dataset_detail_has_the_schema_and_mock_rows(
    jp_fetch: Fetch, config_dir: Path, owner_node: RunningNode
) -> None:
    """Schema with types, bounds and categories, and the first 20 mock rows as JSON."""
    save_connection("hospital_a", owner_node.url, owner_node.tokens["alice"])
    code, body = await fetch_json(jp_fetch, "nodes", "hospital_a", "datasets", "patients")
    assert code == 200
    assert (body["node"], body["name"]) == ("hospital_a", "patients")
    columns = {c["name"]: c for c in body["columns"]}
    assert columns["age"]["type"] == "int" and columns["age"]["bounds"] == [18, 95]
    assert columns["sex"]["categories"] == ["F", "M"]
    mock = body["mock"]
    assert mock["columns"] == [c["name"] for c in body["columns"]]
    assert len(mock["rows"]) == 20 and mock["total_rows"] == 200
    assert all(len(row) == len(mock["columns"]) for row in mock["rows"])


async def test_dataset_detail_of_unknown_names_is_not_found(
    jp_fetch: Fetch, config_dir: Path, owner_node: RunningNode
) -> None:
    save_connection("hospital_a", owner_node.url, owner_node.tokens["alice"])
    code, body = await fetch_json(jp_fetch, "nodes", "nowhere", "datasets", "patients")
    assert (code, body["error"]["code"]) == (404, "not_found")
    code, body = await fetch_json(jp_fetch, "nodes", "hospital_a", "datasets", "nothing")
    assert (code, body["error"]["code"]) == (404, "not_found")


async def test_dataset_detail_of_an_unreachable_node_says_so(
    jp_fetch: Fetch, config_dir: Path, closed_port_url: str
) -> None:
    save_connection("down", closed_port_url, "not-a-real-token-0123456789")
    code, body = await fetch_json(jp_fetch, "nodes", "down", "datasets", "patients")
    assert (code, body["error"]["code"]) == (503, "node_unreachable")


async def test_adding_a_node_keeps_its_token_on_the_server(
    jp_fetch: Fetch, config_dir: Path, owner_node: RunningNode
) -> None:
    """The token goes into connections.json (mode 0600) and never comes back."""
    token = owner_node.tokens["bob"]
    request = {"name": "hospital_b", "url": owner_node.url + "/", "token": token}
    code, body = await fetch_json(jp_fetch, "nodes", method="POST", body=json.dumps(request))
    assert code == 201
    assert (body["name"], body["status"], body["user"]) == ("hospital_b", "ok", "bob")
    saved = load_connections()["hospital_b"]
    assert (saved.url, saved.token) == (owner_node.url, token)
    path = config_dir / "connections.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    code, listed = await fetch_json(jp_fetch, "nodes")
    assert [n["name"] for n in listed["nodes"]] == ["hospital_b"]


async def test_adding_a_node_with_a_refused_token_saves_nothing(
    jp_fetch: Fetch, config_dir: Path, owner_node: RunningNode
) -> None:
    request = {"name": "x", "url": owner_node.url, "token": "not-a-real-token-0123456789"}
    code, body = await fetch_json(jp_fetch, "nodes", method="POST", body=json.dumps(request))
    assert (code, body["error"]["code"]) == (502, "unauthenticated")
    assert load_connections() == {}


async def test_adding_an_unreachable_node_saves_nothing(
    jp_fetch: Fetch, config_dir: Path, closed_port_url: str
) -> None:
    request = {"name": "x", "url": closed_port_url, "token": "not-a-real-token-0123456789"}
    code, body = await fetch_json(jp_fetch, "nodes", method="POST", body=json.dumps(request))
    assert (code, body["error"]["code"]) == (503, "node_unreachable")
    assert load_connections() == {}


@pytest.mark.parametrize(
    "request_body",
    [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"name": "x", "url": "http://127.0.0.1:1"}),
        json.dumps({"name": "", "url": "http://127.0.0.1:1", "token": "t"}),
        json.dumps({"name": "x", "url": 5, "token": "t"}),
    ],
)
async def test_adding_a_node_needs_name_url_and_token(
    jp_fetch: Fetch, config_dir: Path, request_body: str
) -> None:
    code, body = await fetch_json(jp_fetch, "nodes", method="POST", body=request_body)
    assert (code, body["error"]["code"]) == (400, "bad_request")
    assert load_connections() == {}


async def test_adding_a_node_under_an_invalid_name_saves_nothing(
    jp_fetch: Fetch, config_dir: Path, owner_node: RunningNode
) -> None:
    request = {"name": "no spaces", "url": owner_node.url, "token": owner_node.tokens["alice"]}
    code, body = await fetch_json(jp_fetch, "nodes", method="POST", body=json.dumps(request))
    assert (code, body["error"]["code"]) == (400, "bad_request")
    assert "not a valid connection name" in body["error"]["message"]
    assert load_connections() == {}


async def test_removing_a_node_forgets_it_and_its_token(
    jp_fetch: Fetch, config_dir: Path, owner_node: RunningNode
) -> None:
    save_connection("hospital_a", owner_node.url, owner_node.tokens["alice"])
    code, _ = await fetch_json(jp_fetch, "nodes", "hospital_a", method="DELETE")
    assert code == 204
    assert load_connections() == {}
    assert owner_node.tokens["alice"] not in (config_dir / "connections.json").read_text()
    code, body = await fetch_json(jp_fetch, "nodes", "hospital_a", method="DELETE")
    assert (code, body["error"]["code"]) == (404, "not_found")


ROUTES = [
    ("GET", ("nodes",)),
    ("POST", ("nodes",)),
    ("DELETE", ("nodes", "hospital_a")),
    ("GET", ("nodes", "hospital_a", "datasets", "patients")),
]


@pytest.mark.parametrize(("method", "parts"), ROUTES)
@pytest.mark.parametrize("authorization", [None, "token wrong-jupyter-token"])
async def test_unauthenticated_requests_are_refused(
    jp_fetch: Fetch,
    config_dir: Path,
    owner_node: RunningNode,
    method: str,
    parts: tuple[str, ...],
    authorization: str | None,
) -> None:
    """Without Jupyter's token (or with a wrong one) every verb of every route is refused."""
    save_connection("hospital_a", owner_node.url, owner_node.tokens["alice"])
    headers = {"Authorization": authorization} if authorization else {"Authorization": ""}
    body = json.dumps({"name": "x", "url": owner_node.url, "token": owner_node.tokens["bob"]})
    response = await jp_fetch(
        "rds-kernel",
        *parts,
        method=method,
        headers=headers,
        body=body if method == "POST" else None,
        raise_error=False,
    )
    assert response.code in (401, 403)
    text = response.body.decode()
    assert "patients" not in text and "alice" not in text
    assert_no_token(text)
    assert list(load_connections()) == ["hospital_a"]


def test_every_route_requires_login(
    recwarn: pytest.WarningsRecorder, jp_serverapp: ServerApp
) -> None:
    """jupyter_server warns about any handler verb without an auth decorator; none is ours."""
    ours = [
        str(w.message)
        for w in recwarn
        if issubclass(w.category, JupyterServerAuthWarning) and "rds-kernel" in str(w.message)
    ]
    assert ours == []
    assert len(our_routes(jp_serverapp.web_app.default_router)) == 3


def our_routes(router: Any) -> list[str]:
    """The path patterns under /rds-kernel/ in tornado's (nested) routers."""
    found: list[str] = []
    for rule in getattr(router, "rules", []):
        pattern = getattr(rule.matcher, "regex", None)
        if pattern is not None and "rds-kernel" in pattern.pattern:
            found.append(pattern.pattern)
        found.extend(our_routes(rule.target))
    return found


def test_the_package_root_points_jupyter_at_the_built_sidebar() -> None:
    """`jupyter labextension develop .` looks the paths up on the root package."""
    import rds_kernel

    (entry,) = rds_kernel._jupyter_labextension_paths()
    built = Path(rds_kernel.__file__).parent / entry["src"] / "package.json"
    assert built.is_file()
    assert entry["dest"] == "rds-kernel"
