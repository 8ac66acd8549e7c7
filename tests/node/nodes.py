"""Building real node directories for tests: settings, ledger, demo dataset, accounts."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from rds_kernel.demo.patients import write_demo_dataset
from rds_kernel.node.api.serving import server_config
from rds_kernel.node.service import NodeService
from rds_kernel.node.settings import write_settings

ROWS = 3_000


@dataclass
class TestNode:
    """A node directory with an owner, two scientists (alice, bob) and ``patients``."""

    __test__ = False

    service: NodeService
    tokens: dict[str, str]

    @property
    def directory(self) -> Path:
        return self.service.settings.directory


def build_node(
    directory: Path,
    database_url: str | None = None,
    *,
    alice_epsilon: float = 2.0,
    bob_epsilon: float = 1.0,
    **settings_values: Any,
) -> TestNode:
    directory.mkdir(parents=True, exist_ok=True)
    extra = {"database_url": database_url} if database_url else {}
    settings = write_settings(directory, name="test_node", **extra, **settings_values)
    service = NodeService(settings)
    service.store.create_all()
    data, schema = write_demo_dataset(directory / "source", "hospital_a", n=ROWS)
    service.datasets.add("patients", data, schema, mock_rows=200)
    tokens = {}
    _owner, tokens["owner"] = service.store.add_user("owner", "owner", actor="test")
    _a, tokens["alice"] = service.store.add_user("alice", "scientist", actor="test")
    _b, tokens["bob"] = service.store.add_user("bob", "scientist", actor="test")
    service.store.set_budget("alice", alice_epsilon, 1e-5, actor="test")
    service.store.set_budget("bob", bob_epsilon, 0.0, actor="test")
    return TestNode(service=service, tokens=tokens)


@dataclass(frozen=True)
class RunningNode:
    """A node serving on a loopback URL, and its users' tokens."""

    url: str
    tokens: dict[str, str]


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run an ASGI app under a real uvicorn server on an ephemeral loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(server_config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
