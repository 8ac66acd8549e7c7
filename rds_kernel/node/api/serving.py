"""How a node is served: uvicorn, with the timeouts it lacks against slow clients.

uvicorn closes an idle keep-alive connection after ``KEEP_ALIVE_SECONDS``, but it waits for a
request's headers for ever: a client that sends one header byte a minute holds a connection
(and its memory) indefinitely, and a few thousand such clients exhaust the node ("slowloris").
:class:`GuardedH11Protocol` arms a deadline whenever a connection waits for a new request and
closes it if the headers are not complete by then. Slow bodies are bounded by the body reader
in :mod:`rds_kernel.node.api.app`. ``LIMIT_CONCURRENCY`` caps connections and tasks (uvicorn
answers 503 beyond it).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "HEADER_SECONDS",
    "KEEP_ALIVE_SECONDS",
    "LIMIT_CONCURRENCY",
    "GuardedH11Protocol",
    "bind_socket",
    "server_config",
]

HEADER_SECONDS = 10.0
KEEP_ALIVE_SECONDS = 5
LIMIT_CONCURRENCY = 1000


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline on receiving each request's headers."""

    header_seconds = HEADER_SECONDS

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._header_deadline: asyncio.TimerHandle | None = None
        self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # a request is in: its headers are complete

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # waiting for the next request on this connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_seconds, self._too_slow)

    def _disarm(self) -> None:
        deadline = getattr(self, "_header_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._header_deadline = None

    def _too_slow(self) -> None:
        self._header_deadline = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered: its body has a deadline of its own
        if not self.transport.is_closing():
            self.logger.info("closing a connection whose request headers did not arrive in time")
            self.transport.close()


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host`` and ``port`` (0: a free one) as uvicorn binds its own
    (IPv6 for an address with ``:``, ``SO_REUSEADDR``), not yet listening; ``OSError`` (the
    socket closed) when the bind fails. Binding first lets a caller say "serving" only once the
    port is really its own, and learn the port 0 chose."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def server_config(app: Any, *, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn configuration every node server uses (``rds node serve``, ``rds demo``)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=GuardedH11Protocol,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        limit_concurrency=LIMIT_CONCURRENCY,
    )
