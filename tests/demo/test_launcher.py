"""``rds demo``: two live nodes, the scientist's saved connections, JupyterLab on the course.

The pieces are tested in-process; the command itself runs as a real child process, as
``make demo`` runs it, and must stop cleanly on SIGINT and SIGTERM.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import stat
import sys
from pathlib import Path

import pytest

import rds_kernel as rds
from rds_kernel.cli.main import main
from rds_kernel.client import load_connections
from rds_kernel.demo import launcher as demo
from rds_kernel.demo.lab import FIRST_NOTEBOOK, course_source, lab_directories
from rds_kernel.demo.launcher import (
    DemoNode,
    bind_ports,
    copy_course,
    prepare_demo,
    rds_command,
    write_connections,
)
from rds_kernel.errors import AuthenticationError, BadRequest
from rds_kernel.node.api.app import create_app
from tests.demo_process import demo_process
from tests.node.nodes import serve


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def refuses_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) != 0


# --------------------------------------------------------------------------- the pieces


def test_bind_ports_takes_the_asked_ports_or_says_why_not() -> None:
    """--port N means N and N+1 exactly; without --port a taken default falls back to free ports."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with pytest.raises(BadRequest, match=f"port {busy} or {busy + 1} is taken"):
            bind_ports(busy, 2)

        free, note = bind_ports(0, 2)
        assert note == ""
        assert len({s.getsockname()[1] for s in free}) == 2
        for s in free:
            s.close()

        original = demo.DEFAULT_PORT
        demo.DEFAULT_PORT = busy
        try:
            fallback, note = bind_ports(None, 2)
        finally:
            demo.DEFAULT_PORT = original
        assert f"ports {busy}-{busy + 1} are taken" in note
        assert busy not in {s.getsockname()[1] for s in fallback}
        for s in fallback:
            s.close()


def test_the_connections_file_is_the_clients_and_private(tmp_path: Path) -> None:
    """The demo writes the format rds_kernel.client reads, mode 0600 in a 0700 directory."""
    nodes = [
        DemoNode("hospital_a", tmp_path / "a", 8765, "rds_token_a"),
        DemoNode("hospital_b", tmp_path / "b", 8766, "rds_token_b"),
    ]
    path = write_connections(tmp_path / "config", nodes)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    saved = load_connections(path)
    assert {n: (c.url, c.token) for n, c in saved.items()} == {
        "hospital_a": ("http://127.0.0.1:8765", "rds_token_a"),
        "hospital_b": ("http://127.0.0.1:8766", "rds_token_b"),
    }
    assert [p.name for p in path.parent.iterdir()] == ["connections.json"]


def test_the_course_is_copied_without_overwriting_your_edits(tmp_path: Path) -> None:
    source = course_source()
    assert source is not None, "notebooks/ is beside the package in a source checkout"
    course = tmp_path / "course"
    copy_course(source, course)
    first = course / FIRST_NOTEBOOK
    assert sorted(p.name for p in course.glob("*.ipynb")) == sorted(
        p.name for p in source.glob("*.ipynb")
    )
    first.write_text("my edits", encoding="utf-8")
    (course / "02_connect_and_explore.ipynb").unlink()
    copy_course(source, course)
    assert first.read_text(encoding="utf-8") == "my edits"
    assert (course / "02_connect_and_explore.ipynb").is_file()


def test_a_reused_demo_directory_rotates_the_scientists_tokens(tmp_path: Path) -> None:
    """Restarting on a kept --dir reuses the nodes, moves their ports, and expires old tokens."""
    first = prepare_demo(tmp_path, [8765, 8766])
    again = prepare_demo(tmp_path, [9000, 9001])
    assert [(n.name, n.port) for n in again] == [("hospital_a", 9000), ("hospital_b", 9001)]
    assert again[0].budget == "ε 10 of 10 left, δ 1e-05 of 1e-05"
    assert "port = 9000" in (tmp_path / "hospital_a" / "node.toml").read_text()
    with serve(create_app(tmp_path / "hospital_a")) as url:
        with pytest.raises(AuthenticationError):
            rds.connect(url, token=first[0].token)
        with rds.connect(url, token=again[0].token) as node:
            assert node.datasets.list() == ["patients"]


# --------------------------------------------------------------------------- the command


@pytest.mark.server
def test_demo_without_lab_serves_both_nodes_and_stops_on_sigint(tmp_path: Path) -> None:
    """`rds demo --no-lab`: two live nodes, the tokens only in the 0600 file, a clean Ctrl-C."""
    with demo_process(tmp_path, "--no-lab", "--port", "0") as running:
        root = Path(running.field("demo directory"))
        assert root.parent == tmp_path  # a fresh temporary directory
        path = running.config_dir / "connections.json"
        assert mode(path) == 0o600
        saved = running.connections()
        assert sorted(saved) == ["hospital_a", "hospital_b"]
        for name, connection in saved.items():
            assert connection.url in running.stderr
            assert connection.token not in running.stderr
            with connection.connect() as node:
                assert node.info["name"] == name
                assert node.datasets.list() == ["patients"]
                budget = node.budget()
                assert (budget.epsilon_total, budget.delta_total) == (10.0, 1e-5)
        assert running.stop(signal.SIGINT) == 0
    assert running.stderr.rstrip().endswith("rds demo: stopped")
    assert f"deleting the demo directory {root}" in running.stderr  # said, not silent
    assert all(refuses_connections(c.url) for c in saved.values())
    assert not root.exists()  # the temporary demo directory is deleted


def test_demo_refuses_a_taken_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An explicit --port that is taken is an error (exit 1), not a silent move."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        assert main(["demo", "--no-lab", "--dir", str(tmp_path), "--port", str(busy)]) == 1
    assert f"error: port {busy} or {busy + 1} is taken" in capsys.readouterr().err


@pytest.mark.server
def test_demo_opens_jupyterlab_on_the_course_with_the_demo_connections(tmp_path: Path) -> None:
    """`rds demo` (what `make demo` runs): JupyterLab on a copy of the course, the sidebar
    sees the demo nodes, and SIGTERM stops JupyterLab and the nodes."""
    root = tmp_path / "demo"
    with demo_process(tmp_path, "--dir", str(root), "--port", "0", "--no-browser") as running:
        match = re.search(
            r"(http://127\.0\.0\.1:(\d+))/lab/tree/(\S+)\?token=(\S+)", running.stderr
        )
        assert match, running.stderr
        base, port, notebook, token = match[1], int(match[2]), match[3], match[4]
        assert notebook == FIRST_NOTEBOOK
        assert (root / "course" / FIRST_NOTEBOOK).is_file()

        def get(path: str) -> tuple[int, object]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                connection.request("GET", path, headers={"Authorization": f"token {token}"})
                response = connection.getresponse()
                return response.status, json.loads(response.read() or b"null")
            finally:
                connection.close()

        def put(path: str, body: object) -> tuple[int, bytes]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                connection.request(
                    "PUT",
                    path,
                    body=json.dumps(body),
                    headers={"Authorization": f"token {token}"},
                )
                response = connection.getresponse()
                return response.status, response.read()
            finally:
                connection.close()

        status, listing = get("/api/contents")
        assert status == 200
        assert FIRST_NOTEBOOK in {item["name"] for item in listing["content"]}  # type: ignore[index]
        status, sidebar = get("/rds-kernel/nodes")
        assert status == 200
        nodes = sidebar["nodes"]  # type: ignore[index]
        assert [(n["name"], n["status"]) for n in nodes] == [
            ("hospital_a", "ok"),
            ("hospital_b", "ok"),
        ]
        # The demo's own JupyterLab settings and workspaces, with the news prompt answered.
        status, news = get("/lab/api/settings/@jupyterlab/apputils-extension:notification")
        assert status == 200
        assert news["settings"]["fetchNews"] == "false"  # type: ignore[index]
        assert (root / "lab" / "settings").is_dir()
        status, _ = put(
            "/lab/api/workspaces/rds-demo-check",
            {"data": {}, "metadata": {"id": "rds-demo-check"}},
        )
        assert status == 204
        assert any((root / "lab" / "workspaces").iterdir())
        assert '"RDS datasets"' in running.stderr  # points at the dataset browser
        assert "edits are deleted" not in running.stderr  # --dir keeps them
        saved = running.connections()
        assert all(c.token not in running.stderr for c in saved.values())
        assert running.stop(signal.SIGTERM) == 0
    assert refuses_connections(base)
    assert all(refuses_connections(c.url) for c in saved.values())
    assert (root / "hospital_a" / "node.toml").is_file()  # --dir is kept


def test_the_lab_settings_answer_the_news_prompt_once(tmp_path: Path) -> None:
    settings, workspaces = lab_directories(tmp_path)
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    assert json.loads(news.read_text()) == {"fetchNews": "false"}
    assert workspaces.is_dir() and settings.parent == workspaces.parent == tmp_path / "lab"
    news.write_text('{"fetchNews": "true"}')  # the user's own answer, in a kept demo
    lab_directories(tmp_path)
    assert json.loads(news.read_text()) == {"fetchNews": "true"}


def test_the_hints_name_an_rds_the_users_shell_can_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make demo` runs .venv/bin/rds without activating the venv: the printed commands must
    say .venv/bin/rds then, and plain `rds` only when PATH finds this installation's."""
    bindir = Path(sys.executable).parent
    monkeypatch.setenv("PATH", str(tmp_path))  # no rds on PATH
    monkeypatch.chdir(bindir.parent.parent)
    assert rds_command() == str(Path(bindir.parent.name, bindir.name, "rds"))
    monkeypatch.chdir(tmp_path)
    assert rds_command() == str(bindir / "rds")
    monkeypatch.setenv("PATH", str(bindir))
    assert rds_command() == "rds"
