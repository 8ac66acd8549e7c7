"""The JupyterLab sidebar's server side: a jupyter_server extension serving ``/rds-kernel/``.

Installing ``rds_kernel`` enables it (``etc/jupyter/jupyter_server_config.d``) and installs the
prebuilt labextension ``rds-kernel`` beside it; ``jupyter server extension list`` and
``jupyter labextension list`` show both. The routes are in :mod:`.handlers`, what they return
in :mod:`.catalog`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from jupyter_server.serverapp import ServerApp

LABEXTENSION = "rds-kernel"
"""The npm name of the sidebar (``labextension/package.json``)."""


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    # Used by `jupyter labextension develop`; the build writes to rds_kernel/labextension.
    return [{"src": "../../labextension", "dest": LABEXTENSION}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "rds_kernel.jupyter.server"}]


def _load_jupyter_server_extension(server_app: ServerApp) -> None:
    from rds_kernel.jupyter.server.handlers import setup_handlers

    setup_handlers(server_app.web_app)
    server_app.log.info("rds_kernel: dataset browser routes at /rds-kernel/")
