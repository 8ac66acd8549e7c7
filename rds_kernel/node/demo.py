"""``rds demo``: two owner nodes (hospital_a, hospital_b) with the bundled synthetic patients.

Each node gets its own directory with a SQLite ledger, the ``patients`` dataset and a scientist
account with a starting budget. The scientist's tokens are written to ``connections.json``
(mode 0600) in the demo directory, never printed, so notebooks read them from the file.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from rds_kernel.demo import HOSPITALS, write_demo_dataset
from rds_kernel.node.app import create_app
from rds_kernel.node.runtime import tune_allocator
from rds_kernel.node.service import NodeService
from rds_kernel.node.settings import write_settings

__all__ = ["DemoNode", "prepare_demo", "run_demo"]

SCIENTIST = "scientist"
START_EPSILON = 10.0
START_DELTA = 1e-5
CONNECTIONS_FILE = "connections.json"


@dataclass(frozen=True)
class DemoNode:
    name: str
    directory: Path
    port: int
    token: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def prepare_demo(root: Path, first_port: int) -> list[DemoNode]:
    """Create (or reuse) the demo node directories and the scientist's connection file."""
    nodes = []
    for i, hospital in enumerate(HOSPITALS):
        directory = root / hospital
        directory.mkdir(parents=True, exist_ok=True)
        settings = write_settings(directory, name=hospital, port=first_port + i)
        service = NodeService(settings)
        try:
            service.store.create_all()
            if "patients" not in service.datasets.names():
                data, schema = write_demo_dataset(directory / "source", hospital)
                service.datasets.add("patients", data, schema, mock_rows=settings.mock_rows)
            if SCIENTIST in {u.name for u in service.store.list_users()}:
                token = service.store.rotate_token(SCIENTIST, actor="demo")
            else:
                _user, token = service.store.add_user(SCIENTIST, "scientist", actor="demo")
                service.store.set_budget(SCIENTIST, START_EPSILON, START_DELTA, actor="demo")
        finally:
            service.close()
        nodes.append(DemoNode(hospital, directory, settings.port, token))
    path = root / CONNECTIONS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({n.name: {"url": n.url, "token": n.token} for n in nodes}, f, indent=2)
    return nodes


def run_demo(root: Path | None, port: int = 8765) -> int:
    """Start the demo nodes and serve until Ctrl-C."""
    tune_allocator()
    root = root or Path(tempfile.mkdtemp(prefix="rds-demo-"))
    nodes = prepare_demo(root, port)
    servers = []
    for node in nodes:
        config = uvicorn.Config(
            create_app(node.directory), host="127.0.0.1", port=node.port, log_level="warning"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=node.name, daemon=True)
        thread.start()
        servers.append((server, thread))
    while not all(s.started for s, _t in servers):
        if not all(t.is_alive() for _s, t in servers):
            print(
                "error: a demo node could not start (is the port taken? try --port)",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.05)
    print(f"rds demo: nodes running (data in {root})", file=sys.stderr)
    for node in nodes:
        print(f"  {node.name:<11} {node.url}", file=sys.stderr)
    print(
        f"connect from Python with the tokens in {root / CONNECTIONS_FILE}:\n"
        "  import json, rds_kernel as rds\n"
        f"  c = json.load(open({str(root / CONNECTIONS_FILE)!r}))['hospital_a']\n"
        "  node = rds.connect(c['url'], token=c['token'])\n"
        "Ctrl-C stops everything.",
        file=sys.stderr,
    )
    try:
        while all(t.is_alive() for _s, t in servers):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for server, _t in servers:
            server.should_exit = True
        for _s, thread in servers:
            thread.join(timeout=10)
    print("rds demo: stopped", file=sys.stderr)
    return 0
