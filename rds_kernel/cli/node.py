"""``rds node init|serve|settings``: create a node directory, serve it, show its settings."""

from __future__ import annotations

import errno
import socket

import click

from rds_kernel.cli.common import node_directory
from rds_kernel.cli.output import format_option, say, secret, show
from rds_kernel.errors import ConfigError

__all__ = ["listen", "node", "url"]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
# The defaults of the host and port settings (tests/cli checks they agree with the settings);
# not imported from rds_kernel.node.settings so that `rds --help` does not load pydantic.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


@click.group()
def node() -> None:
    """Create and serve an owner node."""


@node.command()
@click.option(
    "--name", help="The node's name, shown to scientists (default: the directory's name)."
)
@click.option(
    "--database-url",
    metavar="URL",
    help="SQLAlchemy URL of the ledger (default: SQLite node.db in the node directory).",
)
@click.option("--host", help=f"Address `rds node serve` listens on (default: {DEFAULT_HOST}).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help=f"Port `rds node serve` listens on; 0 picks a free one (default: {DEFAULT_PORT}).",
)
@click.option("--owner", default="owner", show_default=True, help="Name of the owner account.")
def init(
    name: str | None, database_url: str | None, host: str | None, port: int | None, owner: str
) -> int:
    """Create the node directory: node.toml, the ledger and the owner account.

    node.toml gets every setting with its help text. The owner's token follows alone on stdout,
    shown once.
    """
    from rds_kernel.node.settings import NODE_FILE, make_private_directory, write_settings
    from rds_kernel.node.store import Store

    d = node_directory()
    if (d / NODE_FILE).exists():
        raise ConfigError(f"{d} is already a node directory ({NODE_FILE} exists)")
    make_private_directory(d)
    given = {"database_url": database_url, "host": host, "port": port}
    values = {"name": name or d.resolve().name, **{k: v for k, v in given.items() if v is not None}}
    settings = write_settings(d, **values)
    store = Store(settings.resolved_database_url)
    try:
        store.create_all()
        _user, token = store.add_user(owner, "owner", actor="cli")
    finally:
        store.close()
    say(f"initialised node {settings.name!r} in {d} (database: {_safe_url(settings.database_url)})")
    say(f"owner account {owner!r} created; its token follows on stdout (shown once)")
    secret(token)
    return 0


@node.command()
@click.option("--host", help="Address to listen on (default: the host setting).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="Port to listen on; 0 picks a free one (default: the port setting).",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS),
    default="info",
    show_default=True,
    help="How much the server logs.",
)
def serve(host: str | None, port: int | None, log_level: str) -> int:
    """Serve the node's HTTP API until Ctrl-C.

    The "serving node ... on http://HOST:PORT" line comes once the port is bound, with the
    port actually chosen (--port 0 picks a free one). Refuses a port in use, and a node
    directory that other users can read (run `chmod 700` on it).
    """
    import uvicorn

    from rds_kernel.node.api.app import create_app
    from rds_kernel.node.api.serving import server_config
    from rds_kernel.node.runtime import tune_allocator
    from rds_kernel.node.service import NodeService
    from rds_kernel.node.settings import check_private_directory, load_settings

    tune_allocator()
    given = {"host": host, "port": port}
    settings = load_settings(node_directory(), **{k: v for k, v in given.items() if v is not None})
    check_private_directory(settings.directory)
    sock = listen(settings.host, settings.port)
    try:
        service = NodeService(settings)
        service.store.create_all()
        app = create_app(service=service)
        config = server_config(app, host=settings.host, port=settings.port, log_level=log_level)
        sock.listen(config.backlog)  # connections wait in the backlog until uvicorn accepts
        say(
            f"serving node {settings.name!r} with {len(service.datasets.names())} dataset(s) "
            f"on {url(settings.host, sock.getsockname()[1])} (Ctrl-C stops it)"
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host`` and ``port`` (0: a free one), as uvicorn binds its own.

    A port in use, an address this machine does not have or a port it may not use is a
    :class:`ConfigError` that says which option to change.
    """
    from rds_kernel.node.api.serving import bind_socket

    try:
        return bind_socket(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is in use (is `rds demo` running?) — use --port N or "
                "--port 0 for a free one"
            ) from None
        if exc.errno == errno.EACCES:
            raise ConfigError(
                f"port {port} on {host} needs privileges this user does not have; use a port "
                "above 1023 with --port N, or --port 0 for a free one"
            ) from None
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"cannot listen on {host} port {port} ({reason}); check --host (an address of "
            "this machine, e.g. 127.0.0.1 or 0.0.0.0)"
        ) from None


def url(host: str, port: int) -> str:
    """The http URL of ``host`` and ``port`` (an IPv6 address in brackets).

    >>> url("127.0.0.1", 8765), url("::1", 8765)
    ('http://127.0.0.1:8765', 'http://[::1]:8765')
    """
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@node.command("settings")
@format_option
def show_settings(fmt: str) -> int:
    """Show the settings the node runs with, and where each comes from.

    A setting comes from an RDS_NODE_<NAME> environment variable, else from node.toml, else
    from its default.
    """
    from rds_kernel.node.settings import SETTINGS, load_settings, setting_sources

    d = node_directory()
    loaded = load_settings(d)
    sources = setting_sources(d)
    rows = [
        {"name": name, "value": getattr(loaded, name), "source": sources[name]} for name in SETTINGS
    ]
    for row in rows:
        if row["name"] == "database_url":
            row["value"] = _safe_url(row["value"])
    show(rows, fmt, lambda rs: (f"{r['name']:<22} {r['value']!s:<24} {r['source']}" for r in rs))
    return 0


def _safe_url(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url
