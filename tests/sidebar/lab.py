"""A real ``jupyter lab`` for the browser tests: started on a loopback port, always stopped.

It runs this venv's JupyterLab (with the installed labextension and server extension) in its
own process group, with a known token, a temporary root directory, temporary Jupyter
config/settings/workspace directories and ``RDS_CONFIG_DIR`` pointing at the test's saved
connections. The "Jupyter news" question is answered once in the settings so it never covers
the page.

The sidebar served is the one built in this source tree (``rds_kernel/labextension``, which
``jlpm run build:prod`` writes), put first on ``JUPYTER_PATH``: an editable install copies the
built extension into the venv's ``share/jupyter`` once, and the tests would otherwise run the
copy made at install time, not the TypeScript just rebuilt.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import rds_kernel

START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Lab:
    url: str
    token: str
    root: Path
    log: Path
    settings: Path
    """JupyterLab's user settings (``@jupyterlab/<plugin>/<name>.jupyterlab-settings``)."""

    def page_url(self, path: str = "lab") -> str:
        return f"{self.url}/{path}{'&' if '?' in path else '?'}token={self.token}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def jupyter_lab(work: Path, rds_config_dir: Path) -> Iterator[Lab]:
    """Start ``jupyter lab`` under ``work`` and stop it (and its kernels) on the way out."""
    root, home = work / "root", work / "jupyter"
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    for directory in (root, settings, home / "workspaces", home / "config", home / "ipython"):
        directory.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        **_source_tree_labextension(home / "data"),
        "RDS_CONFIG_DIR": str(rds_config_dir),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "IPYTHONDIR": str(home / "ipython"),
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--ServerApp.allow_unauthenticated_access=False",
    ]
    log = work / "jupyter-lab.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    lab = Lab(f"http://127.0.0.1:{port}", token, root, log, home / "settings")
    try:
        _wait_until_ready(lab, process)
        yield lab
    finally:
        _stop(process)


def _source_tree_labextension(data: Path) -> dict[str, str]:
    """``JUPYTER_PATH`` with ``data`` first, where ``labextensions/rds-kernel`` links to the
    source tree's build; nothing when there is no build there (an installed wheel)."""
    build = Path(rds_kernel.__file__).resolve().parent / "labextension"
    if not (build / "package.json").is_file():
        return {}
    extensions = data / "labextensions"
    extensions.mkdir(parents=True, exist_ok=True)
    (extensions / "rds-kernel").symlink_to(build, target_is_directory=True)
    rest = os.environ.get("JUPYTER_PATH")
    return {"JUPYTER_PATH": os.pathsep.join([str(data), *([rest] if rest else [])])}


def _wait_until_ready(lab: Lab, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited ({process.returncode}):\n{lab.log.read_text()}")
        with suppress(OSError):
            request = urllib.request.Request(
                f"{lab.url}/api/status", headers={"Authorization": f"token {lab.token}"}
            )
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        if time.monotonic() > deadline:
            raise RuntimeError(f"jupyter lab did not start in {START_TIMEOUT:g} s")
        time.sleep(0.2)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM lets Jupyter shut its kernels down; then the whole group goes, whatever is left."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    # The group is the one start_new_session made for this process: its kernels, nothing else.
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
