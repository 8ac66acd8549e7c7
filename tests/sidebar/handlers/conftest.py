"""pytest-jupyter's in-process Jupyter server (``jp_fetch`` …) with the sidebar's extension.

Unauthenticated access is refused, as the extension template's hardening does, so a route
that forgot its ``@tornado.web.authenticated`` would fail the tests.
"""

from __future__ import annotations

from typing import Any

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403 - jp_fetch and its fixtures and hooks


@pytest.fixture  # type: ignore[no-redef]
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {
            "jpserver_extensions": {"rds_kernel.jupyter.server": True},
            "allow_unauthenticated_access": False,
        }
    }
