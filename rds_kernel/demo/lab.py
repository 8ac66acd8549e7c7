"""JupyterLab for ``rds demo``: started on the course with the demo's connections, then stopped.

JupyterLab runs this Python's ``jupyterlab`` as a child process in its own session (a terminal's
Ctrl-C reaches only ``rds demo``, which stops it with SIGTERM: JupyterLab then shuts its kernels
down). Its environment points ``RDS_CONFIG_DIR`` at the demo's connections, so the sidebar and
every kernel see the demo nodes, and puts this Python's ``bin`` first on ``PATH``, so ``!rds``
in a notebook is this installation's CLI. Its access token is random, passed in the
environment (not on the command line, where other local users could read it), and printed in
the URL, as Jupyter itself does.

JupyterLab keeps its settings and workspaces for the demo in the demo directory (``lab/``), so
the demo neither reads nor changes yours, and a fresh demo opens on the course rather than on
the layout of your last session. The demo's settings answer JupyterLab's "news" question
(never fetch: the demo makes no request to the internet), unless you changed that answer in a
demo kept with ``--dir``.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rds_kernel.errors import BadRequest

__all__ = ["FIRST_NOTEBOOK", "Lab", "course_source", "has_display", "lab_directories", "start_lab"]

FIRST_NOTEBOOK = "01_why_remote_data_science.ipynb"
LAB_PORT = 8888
START_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0
LOG_FILE = "jupyter-lab.log"
LAB_DIR = "lab"
# The demo's answer to JupyterLab's "fetch official Jupyter news?" prompt: never.
NEWS_SETTINGS = Path("@jupyterlab", "apputils-extension", "notification.jupyterlab-settings")


@dataclass
class Lab:
    """A running ``jupyter lab``: its process, the URL to open (with its token), its log."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM (JupyterLab stops its kernels), then SIGKILL its session if it hangs."""
        if not self.running():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def course_source() -> Path | None:
    """The course in the source tree (``notebooks/`` beside the package), if it is there."""
    folder = Path(__file__).resolve().parents[2] / "notebooks"
    return folder if (folder / FIRST_NOTEBOOK).is_file() else None


def has_display() -> bool:
    """Whether a browser can open here: always on macOS and Windows, with X or Wayland else."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def start_lab(root: Path, course: Path, config_dir: Path, browser: bool) -> Lab:
    """Start ``jupyter lab`` on ``course``, opening the first notebook; wait until it answers."""
    port, token = _lab_port(), secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "RDS_CONFIG_DIR": str(config_dir),
        "JUPYTER_TOKEN": token,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    settings, workspaces = lab_directories(root)
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={course}",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={workspaces}",
    ]
    if not browser:
        command.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Containers often run as root; the demo's server is on loopback behind a token.
        command.append("--allow-root")
    if (course / FIRST_NOTEBOOK).is_file():
        command.append(FIRST_NOTEBOOK)
    log = root / LOG_FILE
    with log.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 - our own fixed command line
            command,
            cwd=course,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    page = f"lab/tree/{FIRST_NOTEBOOK}" if (course / FIRST_NOTEBOOK).is_file() else "lab"
    lab = Lab(process, f"http://127.0.0.1:{port}/{page}?token={token}", log)
    try:
        _wait_until_up(lab, port, token)
    except BaseException:
        lab.stop()
        raise
    return lab


def lab_directories(root: Path) -> tuple[Path, Path]:
    """The demo's JupyterLab settings and workspaces directories under ``root``, created, with
    the news prompt answered (an answer already there, from a kept demo, is left as it is)."""
    settings, workspaces = root / LAB_DIR / "settings", root / LAB_DIR / "workspaces"
    workspaces.mkdir(parents=True, exist_ok=True)
    news = settings / NEWS_SETTINGS
    if not news.exists():
        news.parent.mkdir(parents=True, exist_ok=True)
        news.write_text(json.dumps({"fetchNews": "false"}, indent=2) + "\n", encoding="utf-8")
    return settings, workspaces


def _lab_port() -> int:
    """8888 if it is free, else any free port."""
    for port in (LAB_PORT, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            return int(sock.getsockname()[1])
    raise AssertionError("unreachable: port 0 is always free")  # pragma: no cover


def _wait_until_up(lab: Lab, port: int, token: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not lab.running():
            raise BadRequest(f"JupyterLab did not start; the end of its log:\n{_tail(lab.log)}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/api/status", headers={"Authorization": f"token {token}"})
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.2)
    raise BadRequest(
        f"JupyterLab did not answer within {START_TIMEOUT:g} s; the end of its log:\n"
        f"{_tail(lab.log)}"
    )


def _tail(log: Path, lines: int = 15) -> str:
    # The log may be in a temporary demo directory that is deleted when the demo stops.
    text = log.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(f"  {line}" for line in text[-lines:])
