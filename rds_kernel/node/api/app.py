"""The owner node's HTTP API (FastAPI). Routes only parse, call one service method and render.

Every body is a model of :mod:`rds_kernel.wire`: routes declare them (their return annotations
are their response models, so ``/openapi.json`` and ``/docs`` show every answer's shape) and
FastAPI sends only what they declare. Every error leaves as one envelope,
``{"error": {"code", "message", "detail"}}`` (:class:`rds_kernel.wire.ErrorEnvelope`), built by
:func:`error_response`; nothing else (no traceback, no private value) is ever in an error body.
"""

# No `from __future__ import annotations`: FastAPI must see the real annotations of routes
# defined inside create_app (they use local Annotated aliases).

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rds_kernel import wire
from rds_kernel.errors import (
    AuthenticationError,
    BadRequest,
    InternalError,
    NotFound,
    RdsError,
    TooManyRequests,
)
from rds_kernel.node.api.jobs import jobs_router
from rds_kernel.node.service import NodeService
from rds_kernel.node.settings import load_settings
from rds_kernel.node.store.records import User

__all__ = ["create_app", "error_response"]

log = logging.getLogger("rds_kernel.node")

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "model": wire.ErrorEnvelope}
    for status, text in (
        (400, "Bad request"),
        (401, "Missing or unknown token"),
        (403, "Not allowed, or not enough privacy budget"),
        (404, "No such dataset, user or route"),
        (409, "request_id reused for another query, or name taken"),
        (422, "The query spec is invalid"),
        (429, "Too many of your requests in flight; see Retry-After"),
        (500, "An error of the node (a release that failed is charged; see the message)"),
    )
}

MOCK_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The mock rows, as a file (Parquet by default, or CSV).",
        "content": {
            media: {"schema": {"type": "string", "format": "binary"}}
            for media in ("application/vnd.apache.parquet", "text/csv")
        },
    }
}


def error_response(
    err: RdsError, status: int | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The one place where error bodies are built (``status``: other than the error's own)."""
    if isinstance(err, TooManyRequests):
        headers = {**(headers or {}), "Retry-After": str(err.detail.get("retry_after", 1))}
    body = wire.ErrorEnvelope(
        error=wire.ErrorBody(code=err.code, message=err.message, detail=err.detail)
    )
    return JSONResponse(body.to_dict(), status_code=status or err.status, headers=headers)


# ---------------------------------------------------------------- request bodies read in the slot

# The preview and release routes read their body themselves, inside the admission slot (see
# create_app); these are their bodies in the OpenAPI schema, as components of their own.
BODIES: tuple[type[BaseModel], ...] = (wire.QuerySpecBody, wire.ReleaseRequest)


def _body_of(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its body itself."""
    assert model in BODIES, model
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _with_bodies(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi``, with the components of :data:`BODIES` added."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in BODIES:
                own = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(own.pop("$defs", {}))
                components[model.__name__] = own
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    """A request body as a JSON object, or a ``BadRequest`` that says what is wrong."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the {what} is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"the {what} must be a JSON object")
    return value


# ---------------------------------------------------------------- ASGI middleware


def _crash() -> InternalError:
    return InternalError(
        "the node hit an internal error; retrying with the same request_id is safe (it is "
        "never charged twice). The owner can find details in the node's log"
    )


BODY_SECONDS = 10.0  # the longest wait for the next piece of a request body
# Every answer is per-user and may be an answer that cost privacy budget: no cache may keep it.
_HEADERS = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]


class Hardening:
    """Body size limit and response headers, as plain ASGI (no per-request task overhead).

    The body is read in full (up to ``limit`` bytes, with or without Content-Length, chunked
    too) before the app sees it, so an oversized body always gets the size-limit message and
    never a half-parsed one; a body that trickles in (a pause over ``BODY_SECONDS``) gets a
    408. Every response carries ``Cache-Control: no-store`` and ``X-Content-Type-Options:
    nosniff``.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in _HEADERS if k not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        too_big = BadRequest(
            f"the request body is larger than the node's limit of "
            f"{self.limit} bytes; send a smaller query"
        )
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await error_response(too_big)(scope, receive, send_with_headers)
            return
        body = bytearray()
        while True:
            try:
                message = await asyncio.wait_for(receive(), BODY_SECONDS)
            except TimeoutError:
                slow = BadRequest(
                    f"the request body did not arrive within {BODY_SECONDS:g} s; send it at once"
                )
                await error_response(slow, 408)(scope, receive, send_with_headers)
                return
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await error_response(too_big)(scope, receive, send_with_headers)
                return
            if not message.get("more_body", False):
                break
        replayed = False
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send_with_headers(message)

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as ASGI does

        try:
            await self.app(scope, replay, send_tracked)
        except Exception as exc:
            # Answered here, not re-raised: Starlette's outermost handler would answer and then
            # re-raise, and uvicorn then drops the connection (the client's keep-alive with it).
            log.exception("unexpected error", exc_info=exc)
            if started:
                return
            await error_response(_crash())(scope, receive, send_with_headers)


# ---------------------------------------------------------------- the app


def create_app(
    node_dir: str | Path | None = None,
    *,
    service: NodeService | None = None,
) -> FastAPI:
    """The ASGI app of a node directory (or of a ready-made service, for tests)."""
    if service is None:
        if node_dir is None:
            raise ValueError("create_app needs a node directory or a service")
        service = NodeService(load_settings(node_dir))
    svc = service

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        svc.close()

    app = FastAPIOffline(
        title=f"rds owner node {svc.settings.name}",
        version=version("rds_kernel"),
        description="Differentially private queries on an owner's datasets (rds_kernel).",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.service = svc
    app.add_middleware(Hardening, limit=svc.settings.max_request_bytes)
    _install_error_handlers(app)

    bearer = HTTPBearer(auto_error=False, description="The API token from `rds user add`.")

    def current_user(
        request: Request,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> User:
        user = None if creds is None else svc.store.authenticate(creds.credentials)
        if user is not None:
            return user
        client = request.client.host if request.client else "unknown"
        svc.auth_failed(client, request.url.path, "no token" if creds is None else "bad token")
        if creds is None:
            raise AuthenticationError(
                "this endpoint needs a token: send 'Authorization: Bearer <token>' "
                "(rds.connect(url, token=...) does it for you)"
            )
        raise AuthenticationError(
            "the token is not valid on this node (unknown, rotated or disabled); "
            "ask the owner for a new one"
        )

    def owner(request: Request, user: Annotated[User, Depends(current_user)]) -> User:
        svc.require_owner(user, f"{request.method} {request.url.path}")
        return user

    Who = Annotated[User, Depends(current_user)]
    Owner = Annotated[User, Depends(owner)]
    Limit = Annotated[int, Query(ge=1, le=1000)]

    @app.get("/healthz", tags=["public"])
    async def healthz() -> wire.Health:
        # async: answered on the event loop, never queued behind any thread pool
        return wire.Health()

    @app.get("/v1/node", tags=["datasets"])
    def node_info(user: Who) -> wire.NodeInfo:
        return svc.node_info(user)

    @app.get("/v1/datasets", tags=["datasets"])
    def datasets(user: Who) -> wire.DatasetList:
        return svc.dataset_list()

    # absent schema keys are left out of the answer (as in the schema file), never null
    @app.get("/v1/datasets/{name}", tags=["datasets"], response_model_exclude_none=True)
    def dataset(name: str, user: Who) -> wire.DatasetSchema:
        return svc.dataset(name)

    @app.get(
        "/v1/datasets/{name}/mock",
        tags=["datasets"],
        response_class=Response,
        responses=MOCK_RESPONSE,
    )
    def mock(name: str, user: Who, format: Literal["parquet", "csv"] = "parquet") -> Response:
        m = svc.mock(name, format)
        return Response(
            m.content,
            media_type=m.media_type,
            headers={"Content-Disposition": f'attachment; filename="{m.filename}"'},
        )

    # DP work runs on the admission pool (its own threads, a limit per user); these routes are
    # async so that waiting for it holds no thread of the server's own pool.
    # Their bodies are parsed inside the admission slot (not by FastAPI before it), so that a
    # request beyond the scientist's limit costs the node no parsing at all; the OpenAPI schema
    # still shows them (_body_of).
    @app.post("/v1/queries/preview", tags=["queries"], openapi_extra=_body_of(wire.QuerySpecBody))
    async def preview(user: Who, request: Request) -> wire.Preview:
        raw = await request.body()
        answer: wire.Preview = await svc.admission.run(
            user.name,
            lambda stop: svc.preview(user, _json_object(raw, "query spec"), stop),
            request.is_disconnected,
        )
        return answer

    @app.post("/v1/queries", tags=["queries"], openapi_extra=_body_of(wire.ReleaseRequest))
    async def release(user: Who, request: Request) -> wire.ReleaseAnswer:
        raw = await request.body()

        def work(stop: threading.Event) -> wire.ReleaseAnswer:
            body = _json_object(raw, "release request")
            if "spec" not in body:
                raise BadRequest("invalid request — spec: Field required")
            return svc.release(user, body.get("request_id"), body["spec"], stop)

        answer: wire.ReleaseAnswer = await svc.admission.run(
            user.name, work, request.is_disconnected
        )
        return answer

    @app.get("/v1/budget", tags=["budget"])
    def budget(user: Who) -> wire.Budget:
        return svc.budget(user)

    @app.get("/v1/releases", tags=["budget"])
    def releases(user: Who, limit: Limit = 100) -> wire.Releases:
        return svc.releases(user, limit)

    @app.get("/v1/admin/users", tags=["admin"])
    def users(user: Owner) -> wire.Users:
        return svc.users()

    @app.post("/v1/admin/users", tags=["admin"], status_code=201)
    def add_user(body: wire.NewUser, user: Owner) -> wire.UserToken:
        """A new account and its token (shown once), with a budget if ``epsilon`` is given."""
        new, token = svc.add_user(
            user.name, body.name, body.role, epsilon=body.epsilon, delta=body.delta
        )
        return wire.UserToken(user=new.to_wire(), token=token)

    @app.post("/v1/admin/users/{name}/rotate", tags=["admin"])
    def rotate(name: str, user: Owner) -> wire.UserToken:
        """A new token for ``name`` (shown once); the old one stops working at once."""
        return svc.rotate_token(user.name, name)

    @app.post("/v1/admin/users/{name}/disable", tags=["admin"])
    def disable(name: str, user: Owner) -> wire.UserChange:
        """Stop ``name``'s token from working; their history and budget stay."""
        return svc.disable_user(user.name, name)

    @app.post("/v1/admin/users/{name}/enable", tags=["admin"])
    def enable(name: str, user: Owner) -> wire.UserChange:
        return svc.enable_user(user.name, name)

    @app.get("/v1/admin/budgets/{name}", tags=["admin"])
    def user_budget(name: str, user: Owner) -> wire.Budget:
        return svc.user_budget(name)

    @app.put("/v1/admin/budgets/{name}", tags=["admin"])
    def set_budget(name: str, body: wire.BudgetUpdate, user: Owner) -> wire.Budget:
        return svc.set_budget(user.name, name, body.epsilon, body.delta, dataset=body.dataset)

    @app.get("/v1/admin/caps", tags=["admin"])
    def caps(user: Owner) -> wire.Caps:
        return svc.caps()

    @app.put("/v1/admin/caps/{dataset}", tags=["admin"])
    def set_cap(dataset: str, body: wire.CapUpdate, user: Owner) -> wire.BudgetLine:
        return svc.set_cap(user.name, dataset, body.epsilon, body.delta)

    @app.get("/v1/admin/audit", tags=["admin"])
    def audit(user: Owner, limit: Limit = 100) -> wire.AuditLog:
        return svc.audit_log(limit)

    app.include_router(jobs_router(svc, current_user, owner))
    app.openapi = _with_bodies(app)  # type: ignore[method-assign]
    return app


def _install_error_handlers(app: FastAPI) -> None:
    Handler = Callable[[Request, Any], Awaitable[Response]]

    async def rds_error(_r: Request, exc: RdsError) -> Response:
        return error_response(exc)

    async def invalid(_r: Request, exc: RequestValidationError) -> Response:
        problems = []
        for e in exc.errors()[:5]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {e.get('msg', 'invalid')}")
        return error_response(BadRequest("invalid request — " + "; ".join(problems)))

    async def http_error(_r: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error_response(NotFound("no such endpoint; see /docs for the API"))
        # keeps the exception's headers: a 405 must say what is Allowed
        return error_response(BadRequest(str(exc.detail)), exc.status_code, exc.headers)

    handlers: list[tuple[type[Exception], Handler]] = [
        (RdsError, rds_error),
        (RequestValidationError, invalid),
        (StarletteHTTPException, http_error),
    ]
    for exc_class, handler in handlers:
        app.add_exception_handler(exc_class, handler)
