"""The one exception tree of rds_kernel.

Every error has a stable ``code`` (used on the wire) and an HTTP ``status``. The node turns an
error into the envelope ``{"error": {"code", "message", "detail"}}``; the client turns the
envelope back into the same class with :func:`from_envelope`, so ``except BudgetExceeded``
works the same in-process and over HTTP.

::

    RdsError                    base class; never raised itself
    ├── SchemaError             an owner's schema file or dataset does not fit the schema contract
    ├── SpecError               a query spec is malformed, oversized or does not fit the schema
    ├── BadRequest              a request is malformed in a way that is not about the spec
    ├── ConfigError             the node's settings, files or command-line input are wrong
    ├── AuthenticationError     no token, or a token the node does not know
    ├── PermissionDenied        the token is valid but its role may not do this
    ├── NotFound                the dataset, user or route does not exist
    ├── Conflict                a request_id reused with a different query, or a duplicate name
    ├── BudgetExceeded          the privacy loss would exceed a budget; nothing was charged
    ├── TooManyRequests         too many of your requests are in flight on the node; retry later
    ├── NodeUnavailable         (client side) no usable answer from the node; catch this one
    │   ├── NodeUnreachable     the connection failed (wrong URL or port, node down, network)
    │   ├── NodeTimeout         connected, but no answer in time (or a proxy's 504)
    │   └── ProtocolError       an answer that is not the node's protocol (a proxy's page,
    │                           a field missing: another service, or another version)
    └── InternalError           a bug on the node; the message never carries private values

Messages say what happened, why, and what to do next.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AuthenticationError",
    "BadRequest",
    "BudgetExceeded",
    "ConfigError",
    "Conflict",
    "InternalError",
    "NodeTimeout",
    "NodeUnavailable",
    "NodeUnreachable",
    "NotFound",
    "PermissionDenied",
    "ProtocolError",
    "RdsError",
    "SchemaError",
    "SpecError",
    "TooManyRequests",
    "error_class",
    "from_envelope",
]


class RdsError(Exception):
    """Base class of every rds_kernel error."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 500

    def __init__(self, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail: dict[str, Any] = dict(detail or {})

    def envelope(self) -> dict[str, Any]:
        """The JSON error body the node sends for this error."""
        return {"error": {"code": self.code, "message": self.message, "detail": self.detail}}

    def __str__(self) -> str:
        return self.message


class SchemaError(RdsError):
    """Raised when a schema file, or data checked against it, breaks the schema contract."""

    code = "schema_error"
    status = 400


class SpecError(RdsError):
    """Raised when a query spec is malformed, too large, or does not fit the dataset schema."""

    code = "invalid_query"
    status = 422


class BadRequest(RdsError):
    """Raised when a request is malformed in a way unrelated to the query spec."""

    code = "bad_request"
    status = 400


class ConfigError(RdsError):
    """Raised when the node's settings, files or command-line input are wrong (not a request).

    The owner sees it at the command line, or when a node directory is loaded: the message names
    the file, setting or option and says how to fix it.
    """

    code = "config_error"
    status = 400


class AuthenticationError(RdsError):
    """Raised when a request carries no token or a token the node does not recognise."""

    code = "unauthenticated"
    status = 401


class PermissionDenied(RdsError):
    """Raised when an authenticated user's role does not allow the operation."""

    code = "forbidden"
    status = 403


class NotFound(RdsError):
    """Raised when a dataset, user, release or route does not exist (or is not yours)."""

    code = "not_found"
    status = 404


class Conflict(RdsError):
    """Raised when a request_id is reused for a different query, or a name is taken."""

    code = "conflict"
    status = 409


class BudgetExceeded(RdsError):
    """Raised when a release would exceed a privacy budget. Nothing was charged or released."""

    code = "budget_exceeded"
    status = 403


class TooManyRequests(RdsError):
    """Raised when a user already has as many releases or previews in flight as the node allows.

    ``detail["retry_after"]`` (and the ``Retry-After`` header) says how many seconds to wait.
    Nothing ran and nothing was charged.
    """

    code = "too_many_requests"
    status = 429


class NodeUnavailable(RdsError):
    """Raised by the client when it gets no usable answer from a node (base of three kinds).

    Catch this one; the subclasses say which: :class:`NodeUnreachable`, :class:`NodeTimeout`
    or :class:`ProtocolError`. The client retries a release (with the same ``request_id``) on
    the first two, never on the third.
    """

    code = "node_unavailable"
    status = 503


class NodeUnreachable(NodeUnavailable):
    """Raised when the connection to a node failed: wrong URL or port, node down, no route.

    Also for a proxy in front of the node that says it could not reach it (HTTP 502 or 503
    without the node's error body). Worth retrying.
    """

    code = "node_unreachable"
    status = 503


class NodeTimeout(NodeUnavailable):
    """Raised when a node accepted the connection but did not answer in time (or a proxy's 504).

    Worth retrying; a release may have been charged, so retry it with the same request_id.
    """

    code = "node_timeout"
    status = 504


class ProtocolError(NodeUnavailable):
    """Raised when an answer is not the node's protocol: not JSON, not an rds error body, or
    without a field this client needs (another service at that URL, or another version of
    rds_kernel). Not retried: asking again gets the same answer.
    """

    code = "protocol_error"
    status = 502


class InternalError(RdsError):
    """Raised for an unexpected failure on the node; carries no private values."""

    code = "internal_error"
    status = 500


_BY_CODE: dict[str, type[RdsError]] = {
    cls.code: cls
    for cls in (
        SchemaError,
        SpecError,
        BadRequest,
        ConfigError,
        AuthenticationError,
        PermissionDenied,
        NotFound,
        Conflict,
        BudgetExceeded,
        TooManyRequests,
        NodeUnavailable,
        NodeUnreachable,
        NodeTimeout,
        ProtocolError,
        InternalError,
    )
}


def error_class(code: str) -> type[RdsError]:
    """The exception class for a wire ``code`` (``InternalError`` for unknown codes)."""
    return _BY_CODE.get(code, InternalError)


def from_envelope(body: Any, status: int) -> RdsError:
    """Rebuild the exception a node sent as an error envelope.

    A body that is not an envelope (a proxy's HTML page, say) becomes ``ProtocolError``.
    """
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict) or not isinstance(err.get("code"), str):
        return ProtocolError(
            f"the node answered HTTP {status} without an rds error body; "
            "check the URL points at an rds owner node"
        )
    detail = err.get("detail")
    return error_class(err["code"])(
        str(err.get("message", "")), detail if isinstance(detail, dict) else None
    )
