"""HTTP to one node: a ``requests.Session``, timeouts, the error envelope and release retries.

Every failure becomes an exception of :mod:`rds_kernel.errors`: an error envelope from the node
becomes the class the node raised (``from_envelope``); an unreachable node, a timeout or an
answer that is not the node's protocol becomes :class:`NodeUnavailable` saying what to check.

The token is sent in the ``Authorization`` header of each request and appears nowhere else: not
in ``repr``, not in messages. ``requests`` is imported on first use so that
``import rds_kernel`` stays fast.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from rds_kernel.errors import BadRequest, NodeUnavailable, RdsError, from_envelope

if TYPE_CHECKING:  # pragma: no cover
    import requests

Timeout = float | tuple[float, float]

DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 60.0)
"""Seconds to connect, and to wait for an answer once connected."""

RELEASE_RETRIES = 3
"""Retries of a release after a lost connection, a timeout, a 502/503/504 from a proxy, or a
429 (too many of your requests in flight on the node: retried after its ``Retry-After``)."""

RETRY_STATUSES = frozenset({429, 502, 503, 504})
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


def _is_envelope(body: Any) -> bool:
    err = body.get("error") if isinstance(body, dict) else None
    return isinstance(err, dict) and isinstance(err.get("code"), str)


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
        if not isinstance(token, str) or not token.strip():
            raise BadRequest("a token is needed; the node owner creates one with `rds user add`")
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

    def get_json(self, route: str, params: Mapping[str, str | int] | None = None) -> Any:
        return self._json(self.request("GET", route, params=params), route)

    def post_json(self, route: str, body: Any, *, retries: int = 0, busy_retries: int = 0) -> Any:
        """POST ``body``; ``retries`` on any transient failure, ``busy_retries`` on a 429 only
        (the node ran nothing, so even a request that is not idempotent may be sent again)."""
        response = self.request(
            "POST", route, body=body, retries=retries, busy_retries=busy_retries
        )
        return self._json(response, route)

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
        """One call, tried up to ``1 + retries`` times on transient failures.

        The request (body included) is the same on every try, so a release keeps its
        ``request_id`` and the node charges it once however many tries reach it.
        """
        failure: _Transient | None = None
        tries = 0
        busy = 0
        while True:
            try:
                return self._send(method, route, params, body)
            except _Transient as exc:
                failure = exc
            if failure.status == 429 and busy < busy_retries:
                busy += 1
            elif tries < retries:
                tries += 1
            else:
                raise failure.error
            wait = self.retry_backoff * 2 ** (tries + busy - 1)
            self._sleep(max(wait, min(failure.retry_after, MAX_RETRY_AFTER)))

    # ------------------------------------------------------------------ internals

    def _send(
        self, method: str, route: str, params: Mapping[str, str | int] | None, body: Any
    ) -> requests.Response:
        import requests

        url = self.url + route
        where = f"{method} {display_url(url)}"
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
            raise _Transient(
                NodeUnavailable(
                    f"could not connect to the node at {display_url(self.url)} "
                    f"({_reason(exc)}); check the URL and port, that the node is running "
                    "(`rds node serve DIR`) and that this machine can reach it",
                    {"url": display_url(self.url)},
                )
            ) from None
        except requests.exceptions.Timeout:
            raise _Transient(
                NodeUnavailable(
                    f"{where}: no answer within {self._read_timeout:g} s; the node may be "
                    "busy — try again, or allow longer with rds.connect(..., timeout=(5, 300))",
                    {"url": display_url(self.url)},
                )
            ) from None
        except requests.exceptions.RequestException as exc:
            raise _Transient(
                NodeUnavailable(
                    f"could not reach the node at {display_url(self.url)} ({_reason(exc)}); "
                    "check the URL and port, that the node is running (`rds node serve DIR`) "
                    "and that this machine can reach it",
                    {"url": display_url(self.url)},
                )
            ) from None
        if response.status_code < 400:
            return response
        error = self._error(response, where)
        if response.status_code in RETRY_STATUSES:
            raise _Transient(error, _retry_after(response), response.status_code)
        raise error

    def _error(self, response: requests.Response, where: str) -> RdsError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if _is_envelope(body):
            return from_envelope(body, response.status_code)
        return NodeUnavailable(
            f"{where} answered HTTP {response.status_code} without an rds error body; "
            "check the URL points at an rds owner node (not a proxy or another service)",
            {"url": display_url(self.url), "status": response.status_code},
        )

    def _json(self, response: requests.Response, route: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise NodeUnavailable(
                f"{display_url(self.url + route)} answered with something that is not JSON; "
                "check the URL points at an rds owner node",
                {"url": display_url(self.url)},
            ) from None


def _retry_after(response: requests.Response) -> float:
    """The seconds a ``Retry-After`` header asks for (0 if absent or not a number)."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", 0)))
    except ValueError:
        return 0.0


class _Transient(Exception):
    """Carries an error worth retrying (lost connection, timeout, 429, 502/503/504) to the loop."""

    def __init__(self, error: RdsError, retry_after: float = 0.0, status: int = 0) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after
        self.status = status
