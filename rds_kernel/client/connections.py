"""Saved node connections: one small JSON file per user, readable by that user only.

A public module (``rds_kernel.client.connections``; ``rds_kernel.client`` re-exports its
functions). The notebook magics (``%rds connect``), the JupyterLab sidebar and ``rds demo``
share the file, so a node connected once is known to later notebooks without its token ever
being typed into one.
The file is ``$RDS_CONFIG_DIR/connections.json`` (default
``~/.config/rds_kernel/connections.json``), mode 0600, and maps a connection name to the node's
URL and your token on it::

    {"hospital_a": {"url": "http://127.0.0.1:8765", "token": "rds_..."}}

Names are 1-64 letters, digits, ``_``, ``.`` or ``-`` (they are used in ``%%rds --on a,b``).
Tokens are kept without surrounding whitespace (a token read from a file ends with a newline).
Every write replaces the file atomically with a new one created with mode 0600::

    save_connection("hospital_a", "http://127.0.0.1:8765", token)
    node = load_connections()["hospital_a"].connect()
    remove_connection("hospital_a")

A name that is not saved is an :class:`UnknownConnection` (a ``KeyError``) that lists the saved
ones and says how to add one; ``name in load_connections()`` and ``.get(name)`` work as usual.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rds_kernel.errors import BadRequest

if TYPE_CHECKING:  # pragma: no cover
    from rds_kernel.client._node import Node

CONFIG_DIR_ENV = "RDS_CONFIG_DIR"
"""Environment variable naming the directory of ``connections.json``."""

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Connection:
    """A saved connection: a name, the node's URL and your token there (never in ``repr``)."""

    name: str
    url: str
    token: str = field(repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.token, str):  # "rds_...\n" read from a file is the token
            object.__setattr__(self, "token", self.token.strip())

    def connect(self) -> Node:
        """Connect to the node with the saved URL and token, under the saved name."""
        from rds_kernel.client._node import Node

        return Node(self.url, self.token, name=self.name)


class UnknownConnection(KeyError):
    """A connection name that is not saved; the message lists the saved ones."""

    def __str__(self) -> str:  # a KeyError shows its message quoted; this one is a sentence
        return str(self.args[0]) if self.args else ""


class SavedConnections(dict[str, Connection]):
    """The saved connections by name: a dict whose missing names say what is saved instead."""

    def __init__(self, path: Path, connections: dict[str, Connection] | None = None) -> None:
        super().__init__(connections or {})
        self.path = path

    def __missing__(self, name: str) -> Connection:
        saved = f"saved: {', '.join(sorted(self))}" if self else "none is saved"
        shown = name if isinstance(name, str) and NAME_PATTERN.fullmatch(name) else "NAME"
        raise UnknownConnection(
            f"no saved connection {name!r}; {saved} (in {self.path}). Add one with "
            f"%rds connect URL --name {shown} in a notebook, or "
            f"rds_kernel.client.connections.save_connection({shown!r}, URL, token)"
        )


def connections_path() -> Path:
    """Where the saved connections live: ``$RDS_CONFIG_DIR`` or ``~/.config/rds_kernel``."""
    directory = os.environ.get(CONFIG_DIR_ENV) or Path.home() / ".config" / "rds_kernel"
    return Path(directory) / "connections.json"


def check_connection_name(name: str) -> str:
    """``name`` if it is a valid connection name, else BadRequest saying what is allowed."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise BadRequest(
            f"{name!r} is not a valid connection name; use 1-64 letters, digits, '_', '.' or "
            "'-', starting with a letter or digit (e.g. hospital_a)"
        )
    return name


def load_connections(path: Path | None = None) -> SavedConnections:
    """The saved connections by name (empty when the file does not exist).

    A dict; looking up a name that is not saved raises :class:`UnknownConnection` (a
    ``KeyError``) naming the saved ones and how to add one.
    """
    path = path or connections_path()
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return SavedConnections(path)
    except (OSError, ValueError) as exc:
        raise BadRequest(
            f"cannot read the saved connections in {path} ({type(exc).__name__}); "
            "fix the file or delete it and connect again"
        ) from None
    if not isinstance(raw, dict):
        raise _malformed(path, "it is not a JSON object")
    out = SavedConnections(path)
    for name, entry in raw.items():
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) for k in ("url", "token")
        ):
            raise _malformed(path, f"entry {name!r} needs a 'url' and a 'token' string")
        out[name] = Connection(name, entry["url"], entry["token"])
    return out


def save_connection(name: str, url: str, token: str, path: Path | None = None) -> Connection:
    """Save (or replace) connection ``name``; the file is created with mode 0600."""
    check_connection_name(name)
    path = path or connections_path()
    saved = load_connections(path)
    saved[name] = Connection(name, url.rstrip("/"), token)
    _write(path, saved)
    return saved[name]


def remove_connection(name: str, path: Path | None = None) -> bool:
    """Forget connection ``name`` and its token. Returns whether it was saved."""
    path = path or connections_path()
    saved = load_connections(path)
    if saved.pop(name, None) is None:
        return False
    _write(path, saved)
    return True


def _write(path: Path, connections: dict[str, Connection]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = {c.name: {"url": c.url, "token": c.token} for c in connections.values()}
    # mkstemp creates the file with mode 0600, so the token is never readable by others.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".connections-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _malformed(path: Path, why: str) -> BadRequest:
    return BadRequest(
        f"the saved connections in {path} are malformed ({why}); fix the file or delete it "
        "and connect again"
    )
