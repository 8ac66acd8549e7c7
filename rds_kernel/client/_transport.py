"""HTTP to one node: a ``requests.Session``, timeouts, typed answers, errors and retries.

Every answer is validated with its model from :mod:`rds_kernel.wire` (imported with the first
answer, so ``import rds_kernel`` stays light), and every failure becomes an exception of
:mod:`rds_kernel.errors`: an error envelope from the node becomes the class the node raised
(``from_envelope``); anything else is a :class:`NodeUnavailable`, of one of three kinds:

* :class:`NodeUnreachable`: the connection failed or was lost (or a proxy's 502/503 says it
  could not reach the node);
* :class:`NodeTimeout`: no answer within the read timeout (or a proxy's 504);
* :class:`ProtocolError`: an answer that is not the node's protocol (not JSON, no envelope, a
  field missing or of the wrong type).

Retries are decided by that class: a release (and a job submission) is sent again after an
unreachable node or a timeout, always with the same body, so its ``request_id`` makes the node
charge it once; a ``TooManyRequests`` (429: the node ran nothing) is sent again after its
``Retry-After``; a protocol error or any answer of the node is never retried.

Whether a failed request may have reached the node is in the error's ``detail["sent"]``
(:func:`may_have_reached`): ``False`` when no try got further than opening the connection
(refused, no such host, no connection in time), so the node cannot have acted on it; a
timeout, a connection lost after sending, or a gateway's 5xx may have reached it.

The token is sent in the ``Authorization`` header of each request and appears nowhere else: not
in ``repr``, not in messages. It is used without surrounding whitespace (a token read from a
file ends with a newline); one with whitespace or control characters inside is refused
(:func:`clean_token`). ``requests`` is imported on first use.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from rds_kernel.errors import (
    BadRequest,
    NodeTimeout,
    NodeUnreachable,
    ProtocolError,
    RdsError,
    TooManyRequests,
    from_envelope,
)

if TYPE_CHECKING:  # pragma: no cover
    import requests
    from pydantic import BaseModel

    M = TypeVar("M", bound=BaseModel)

Timeout = float | tuple[float, float]

DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 60.0)
"""Seconds to connect, and to wait for an answer once connected."""

RELEASE_RETRIES = 3
"""Retries of a release (or a job submission) after an unreachable node or a timeout (a lost
connection, a proxy's 502/503/504 included), or a 429 (too many of your requests in flight on
the node: retried after its ``Retry-After``)."""

MAX_RETRY_AFTER = 30.0  # seconds: a longer Retry-After is not waited for


def path(*segments: str) -> str:
    """A URL path from segments, each percent-encoded (a dataset name cannot escape its slot)."""
    return "/" + "/".join(quote(s, safe="") for s in segments)


def display_url(url: str) -> str:
    """``url`` without any ``user:password@`` part, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _reason(exc: Exception) -> str:
    """The innermost readable cause of a ``requests`` exception (no pool internals)."""
    inner: object = exc.args[0] if exc.args else exc
    inner = getattr(inner, "reason", inner)
    text = re.sub(r"^<[^>]*>: |^\w+\(host=[^)]*\): ", "", str(inner))
    return text or type(exc).__name__


def clean_token(token: object) -> str:
    """``token`` without surrounding whitespace; BadRequest if it is empty or cannot be one.

    >>> clean_token("rds_abc\\n")
    'rds_abc'
    """
    if not isinstance(token, str) or not token.strip():
        raise BadRequest("a token is needed; the node owner creates one with `rds user add`")
    token = token.strip()
    # Z*: separators (spaces); C*: control, format (zero-width), private-use, unassigned
    if any(c.isspace() or unicodedata.category(c)[0] in "CZ" for c in token):
        raise BadRequest(
            "the token contains whitespace or control characters: copy it again (a token is "
            "one word, as `rds user add` printed it)"
        )
    if not token.isascii():
        raise BadRequest(
            "the token contains characters other than ASCII letters, digits and punctuation: "
            "copy it again (a token is one word, as `rds user add` printed it)"
        )
    return token


def may_have_reached(error: RdsError) -> bool:
    """Whether the request that failed with ``error`` may have reached the node.

    False only when the transport knows nothing was sent (``detail["sent"] is False``): the
    connection was refused, the host name did not resolve, or no connection was made in time.
    """
    return error.detail.get("sent") is not False


def _never_sent(exc: Exception) -> bool:
    """Whether ``requests`` failed before sending anything: no connection was opened."""
    import requests
    from urllib3.exceptions import NewConnectionError  # NameResolutionError is one too

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.InvalidHeader | requests.exceptions.InvalidURL):
        return True  # refused by requests itself, before connecting
    if isinstance(exc, requests.exceptions.ConnectionError) and not isinstance(
        exc, requests.exceptions.ProxyError
    ):
        inner = exc.args[0] if exc.args else None
        return isinstance(getattr(inner, "reason", inner), NewConnectionError)
    return False


def check_answer(model: type[M], raw: Any, where: str) -> M:
    """``raw`` validated as ``model``, or a ProtocolError naming what is missing or wrong."""
    from pydantic import ValidationError

    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for e in exc.errors()[:3]:
            at = ".".join(str(p) for p in e.get("loc", ())) or "the answer"
            problems.append(f"{at}: {e.get('msg', 'invalid')}")
        raise ProtocolError(
            f"the node's answer to {where} is not what this client expects "
            f"({'; '.join(problems)}); the node may run another version of rds_kernel than "
            "this client (see node.info['version'])",
            {"where": where},
        ) from None


class Transport:
    """Sends requests to one node and turns every failure into an rds error."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
    ) -> None:
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            parts = parts._replace(netloc="")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadRequest(
                f"{url!r} is not a node URL; give it as http(s)://host:port, "
                "e.g. http://127.0.0.1:8765"
            )
        token = clean_token(token)
        if parts.username or parts.password:
            raise BadRequest("put the token in token=..., not in the URL")
        import requests

        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retry_backoff = 0.5  # seconds before the first retry; doubled for each next one
        self._sleep: Callable[[float], None] = time.sleep
        self._token = token
        self.session = session if session is not None else requests.Session()

    def __repr__(self) -> str:
        return f"<Transport {display_url(self.url)}>"

    @property
    def _read_timeout(self) -> float:
        return self.timeout[1] if isinstance(self.timeout, tuple) else self.timeout

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------ the public calls

    def get(self, route: str, model: type[M], params: Mapping[str, str | int] | None = None) -> M:
        """GET ``route`` and validate the answer as ``model`` (never retried)."""
        return self._answer(self.request("GET", route, params=params), "GET", route, model)

    def post(
        self,
        route: str,
        body: Any,
        model: type[M],
        *,
        retries: int = 0,
        busy_retries: int = 0,
    ) -> M:
        """POST ``body`` and validate the answer as ``model``.

        ``retries``: on an unreachable node or a timeout (and on a 429), for requests the node
        makes idempotent by their ``request_id``; ``busy_retries``: on a 429 only (the node ran
        nothing, so even a request that is not idempotent may be sent again).
        """
        response = self.request(
            "POST", route, body=body, retries=retries, busy_retries=busy_retries
        )
        return self._answer(response, "POST", route, model)

    def get_bytes(self, route: str, params: Mapping[str, str | int] | None = None) -> bytes:
        return self.request("GET", route, params=params).content

    def request(
        self,
        method: str,
        route: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
        retries: int = 0,
        busy_retries: int = 0,
    ) -> requests.Response:
        """One call, tried up to ``1 + retries`` times (``+ busy_retries`` on a 429).

        What is retried is decided by the error's class (see the module). The request (body
        included) is the same on every try, so a release keeps its ``request_id`` and the
        node charges it once however many tries reach it. The error raised after the last try
        says in ``detail["sent"]`` whether any try may have reached the node
        (:func:`may_have_reached`).
        """
        tries = 0
        busy = 0
        reached = False  # whether an earlier try that failed may have reached the node
        while True:
            try:
                return self._send(method, route, params, body)
            except TooManyRequests as exc:
                if busy < busy_retries:
                    busy += 1
                elif tries < retries:
                    tries += 1
                else:
                    if reached:  # this try ran nothing, but an earlier one may have
                        exc.detail["sent"] = True
                    raise
                retry_after = _seconds(exc.detail.get("retry_after"))
            except (NodeUnreachable, NodeTimeout) as exc:
                reached = reached or may_have_reached(exc)
                if tries >= retries:
                    if reached and not may_have_reached(exc):  # an earlier try may have
                        exc.detail["sent"] = True
                    raise
                tries += 1
                retry_after = 0.0
            wait = self.retry_backoff * 2 ** (tries + busy - 1)
            self._sleep(max(wait, min(retry_after, MAX_RETRY_AFTER)))

    # ------------------------------------------------------------------ internals

    def _send(
        self, method: str, route: str, params: Mapping[str, str | int] | None, body: Any
    ) -> requests.Response:
        import requests

        url = self.url + route
        where = f"{method} {display_url(url)}"
        check = (
            "check the URL and port, that the node is running (`rds --dir DIR node serve`) and "
            "that this machine can reach it"
        )
        detail = {"url": display_url(self.url)}
        try:
            response = self.session.request(
                method,
                url,
                params=params,
                json=body,
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=self.timeout,
            )
        except requests.exceptions.ConnectTimeout as exc:
            raise NodeUnreachable(
                f"could not connect to the node at {display_url(self.url)} ({_reason(exc)}); "
                + check,
                {**detail, "sent": False},
            ) from None
        except requests.exceptions.Timeout:
            raise NodeTimeout(
                f"{where}: no answer within {self._read_timeout:g} s; the node may be "
                "busy — try again, or allow longer with rds.connect(..., timeout=(5, 300))",
                detail,
            ) from None
        except (requests.exceptions.TooManyRedirects, requests.exceptions.ContentDecodingError):
            raise ProtocolError(
                f"{where} answered with something that is not the node's protocol (redirects or "
                "an undecodable body); check the URL points at an rds owner node",
                detail,
            ) from None
        except requests.exceptions.RequestException as exc:
            raise NodeUnreachable(
                f"could not reach the node at {display_url(self.url)} ({_reason(exc)}); " + check,
                {**detail, "sent": not _never_sent(exc)},
            ) from None
        if response.status_code < 400:
            return response
        raise self._error(response, where)

    def _error(self, response: requests.Response, where: str) -> RdsError:
        from rds_kernel.wire import ErrorEnvelope

        status = response.status_code
        retry_after = response.headers.get("Retry-After")
        try:
            body = response.json()
        except ValueError:
            body = None
        try:
            ErrorEnvelope.model_validate(body)
        except ValueError:  # pydantic's ValidationError is a ValueError
            pass
        else:
            error = from_envelope(body, status)
            if isinstance(error, TooManyRequests) and retry_after is not None:
                error.detail["retry_after"] = _seconds(retry_after)
            return error
        detail: dict[str, Any] = {"url": display_url(self.url), "status": status}
        bare = f"{where} answered HTTP {status} without an rds error body"
        if status in (502, 503):
            return NodeUnreachable(
                f"{bare}: a proxy or gateway in front of the node could not reach it (or the "
                "node is overloaded); check that the node is running and try again",
                detail,
            )
        if status == 504:
            return NodeTimeout(
                f"{bare}: a proxy or gateway gave up waiting for the node; try again, or ask "
                "the node's owner to check it",
                detail,
            )
        if status == 429:
            return TooManyRequests(
                f"{bare}: too many requests; wait a moment and try again",
                {**detail, "retry_after": _seconds(retry_after)},
            )
        return ProtocolError(
            f"{bare}; check the URL points at an rds owner node (not a proxy or another service)",
            detail,
        )

    def _answer(self, response: requests.Response, method: str, route: str, model: type[M]) -> M:
        where = f"{method} {route}"
        try:
            raw = response.json()
        except ValueError:
            raise ProtocolError(
                f"{display_url(self.url + route)} answered with something that is not JSON; "
                "check the URL points at an rds owner node",
                {"url": display_url(self.url)},
            ) from None
        return check_answer(model, raw, where)


def _seconds(value: Any) -> float:
    """Seconds from a ``Retry-After`` header or a ``retry_after`` detail (0 if not a number)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return 0.0
    return seconds if seconds > 0 and seconds == seconds else 0.0
