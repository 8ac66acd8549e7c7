"""Fixtures for the notebook side: a real node on a loopback port, scientists, an IPython shell.

One node serves the whole folder (uvicorn in a thread, stopped at the end). Each test that
spends budget makes its own scientist, so no test depends on another's spending.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import rds_kernel as rds
from rds_kernel.node.api.app import create_app
from rds_kernel.node.service import NodeService
from tests.node.nodes import build_node, serve

TOKEN_ENV = "RDS_TEST_TOKEN"


@dataclass
class Served:
    """The running node, and its service to add scientists to the same database."""

    url: str
    service: NodeService

    def scientist(self, epsilon: float = 3.0, delta: float = 0.0) -> str:
        """A new scientist with this budget; returns the token."""
        name = f"sci_{uuid.uuid4().hex[:10]}"
        _user, token = self.service.store.add_user(name, "scientist", actor="test")
        self.service.store.set_budget(name, epsilon, delta, actor="test")
        return token

    def node(self, token: str, name: str = "hospital_a") -> rds.Node:
        """A Python-API connection as the scientist of ``token``."""
        return rds.connect(self.url, token=token, name=name)


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    test_node = build_node(tmp_path_factory.mktemp("jupyter_node") / "node")
    try:
        with serve(create_app(test_node.directory)) as url:
            yield Served(url, test_node.service)
    finally:
        test_node.service.close()


@dataclass
class Ran:
    """What one cell did: its value, its error, everything it printed, its rich outputs."""

    value: object
    error: BaseException | None
    text: str
    outputs: list[dict[str, object]]

    @property
    def html(self) -> str:
        return "\n".join(str(o.get("text/html", "")) for o in self.outputs)


class Shell:
    """An IPython shell with ``%load_ext rds_kernel`` and a helper to run cells."""

    def __init__(self, ip: InteractiveShell) -> None:
        self.ip = ip

    def run(self, source: str) -> Ran:
        with capture_output() as cap:
            result = self.ip.run_cell(source)
        outputs = [dict(o.data) for o in cap.outputs]
        error = result.error_in_exec or result.error_before_exec
        return Ran(result.result, error, cap.stdout + cap.stderr, outputs)

    def html_of(self, value: object) -> str:
        """The HTML the notebook would show for ``value`` (as ``Out[n]`` or ``display``)."""
        formatter = self.ip.display_formatter
        assert formatter is not None
        data, _metadata = formatter.format(value)
        return str(data.get("text/html", ""))

    @property
    def ns(self) -> dict[str, object]:
        return self.ip.user_ns


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private connections directory for the test (``$RDS_CONFIG_DIR``)."""
    directory = tmp_path / "config"
    monkeypatch.setenv("RDS_CONFIG_DIR", str(directory))
    return directory


@pytest.fixture
def shell(config_dir: Path) -> Iterator[Shell]:
    """The test IPython shell with the extension loaded; unloaded and reset afterwards."""
    ip = InteractiveShell.instance()
    ip.extension_manager.load_extension("rds_kernel")
    try:
        yield Shell(ip)
    finally:
        ip.extension_manager.unload_extension("rds_kernel")
        ip.reset(new_session=False)


@pytest.fixture
def connected(shell: Shell, served: Served, monkeypatch: pytest.MonkeyPatch) -> tuple[Shell, str]:
    """A shell connected to the node as ``hospital_a`` with a fresh scientist's token."""
    token = served.scientist()
    monkeypatch.setenv(TOKEN_ENV, token)
    shell.ns["url"] = served.url
    ran = shell.run(f"%rds connect {{url}} --name hospital_a --token-env {TOKEN_ENV}")
    assert ran.error is None, ran.text
    shell.run("import rds_kernel as rds")
    return shell, token
