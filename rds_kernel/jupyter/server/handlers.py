"""The sidebar's HTTP routes under ``{base_url}/rds-kernel/``, all behind Jupyter's login.

- ``GET /rds-kernel/nodes``: the saved nodes with status, user, datasets and budget;
- ``POST /rds-kernel/nodes`` ``{"name", "url", "token"}``: check the node, save the connection;
- ``DELETE /rds-kernel/nodes/{name}``: forget a connection and its token;
- ``GET /rds-kernel/nodes/{name}/datasets/{dataset}``: schema and first rows of mock data.

Each handler parses, calls one function of :mod:`.catalog` in a worker thread (the client is
blocking) and writes JSON. Errors use the node's envelope ``{"error": {"code", "message",
"detail"}}``; a node's refusal of the saved token is answered 502, not 401/403, because it is
the node's verdict, not Jupyter's. No response ever carries a token.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from rds_kernel.errors import AuthenticationError, BadRequest, PermissionDenied, RdsError
from rds_kernel.jupyter.server import catalog

ROUTE = "rds-kernel"
_NAME = r"[^/]+"


class _Handler(APIHandler):
    def reply(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def fail(self, error: RdsError) -> None:
        status = 502 if isinstance(error, AuthenticationError | PermissionDenied) else error.status
        self.reply(error.envelope(), status)


class NodesHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        try:
            nodes = await asyncio.to_thread(catalog.list_nodes)
        except RdsError as exc:
            return self.fail(exc)
        self.reply({"nodes": nodes})

    @tornado.web.authenticated
    async def post(self) -> None:
        try:
            name, url, token = _connection_fields(self.request.body)
            node = await asyncio.to_thread(catalog.add_node, name, url, token)
        except RdsError as exc:
            return self.fail(exc)
        self.reply(node, 201)


class NodeHandler(_Handler):
    @tornado.web.authenticated
    async def delete(self, name: str) -> None:
        try:
            await asyncio.to_thread(catalog.remove_node, name)
        except RdsError as exc:
            return self.fail(exc)
        self.set_status(204)
        self.finish()


class DatasetHandler(_Handler):
    @tornado.web.authenticated
    async def get(self, name: str, dataset: str) -> None:
        try:
            detail = await asyncio.to_thread(catalog.dataset_detail, name, dataset)
        except RdsError as exc:
            return self.fail(exc)
        self.reply(detail)


def _connection_fields(body: bytes) -> tuple[str, str, str]:
    try:
        raw = json.loads(body or b"null")
    except ValueError:
        raw = None
    fields = [raw.get(k) if isinstance(raw, dict) else None for k in ("name", "url", "token")]
    if not all(isinstance(f, str) and f.strip() for f in fields):
        raise BadRequest('send a JSON object {"name", "url", "token"} with three non-empty strings')
    name, url, token = (str(f).strip() for f in fields)
    return name, url, token


def setup_handlers(web_app: tornado.web.Application) -> None:
    """Register the routes under the server's ``base_url``."""
    base = url_path_join(web_app.settings["base_url"], ROUTE)
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "nodes"), NodesHandler),
            (url_path_join(base, "nodes", f"({_NAME})"), NodeHandler),
            (url_path_join(base, "nodes", f"({_NAME})", "datasets", f"({_NAME})"), DatasetHandler),
        ],
    )
