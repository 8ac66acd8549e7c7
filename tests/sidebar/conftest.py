"""Fixtures for the sidebar tests: a real owner node and a saved-connections file.

The node (``tests/node/nodes.py``: dataset ``patients``, scientists alice and bob) runs under
uvicorn on a loopback port for the whole session. ``config_dir`` points a test at its own
empty connections file through ``RDS_CONFIG_DIR``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from rds_kernel.node.api.app import create_app
from tests.node.nodes import RunningNode, build_node, serve


@pytest.fixture(scope="session")
def owner_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    """A real owner node at http://127.0.0.1:PORT for the session (alice has ε 2)."""
    node = build_node(tmp_path_factory.mktemp("owner_node"))
    try:
        with serve(create_app(service=node.service)) as url:
            yield RunningNode(url, node.tokens)
    finally:
        node.service.close()


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory for ``connections.json``, used by the server extension."""
    directory = tmp_path / "rds_config"
    monkeypatch.setenv("RDS_CONFIG_DIR", str(directory))
    return directory


@pytest.fixture(scope="session")
def closed_port_url() -> Iterator[str]:
    """A loopback URL that refuses connections: its port is bound, and never listened on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"
