"""Fixtures for the notebook side: a real node on a loopback port, scientists, an IPython shell.

One node serves the whole folder (uvicorn in a thread, stopped at the end). Each test that
spends budget makes its own scientist, so no test depends on another's spending.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

from rds_kernel.node.api.app import create_app
from tests.jupyter.shell import TOKEN_ENV, Served, Shell
from tests.node.nodes import build_node, serve


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    test_node = build_node(tmp_path_factory.mktemp("jupyter_node") / "node")
    try:
        with serve(create_app(test_node.directory)) as url:
            yield Served(url, test_node.service)
    finally:
        test_node.service.close()


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
