"""``rds demo``: two owner nodes with the bundled synthetic patients, and JupyterLab on the course.

The demo directory (a fresh temporary one, deleted when the demo stops, or ``--dir``, kept)
holds::

    hospital_a/, hospital_b/    node directories: node.toml, SQLite ledger, the patients dataset
    config/connections.json     the scientist's saved connections (mode 0600), $RDS_CONFIG_DIR
    course/                     a copy of the course (notebooks/), so your edits stay out of git
    jupyter-lab.log             JupyterLab's log

Each node gets a ``scientist`` account with a starting budget. Its tokens go only into
``config/connections.json``, never to the terminal: JupyterLab (the sidebar) and its kernels
(``%rds connect --name hospital_a``) find them there through ``RDS_CONFIG_DIR``, so your own
saved connections are untouched. The nodes run in this process (uvicorn in threads); JupyterLab
runs as a child process in its own session, so Ctrl-C reaches only this process, which then
stops JupyterLab (and its kernels) and the nodes. SIGTERM does the same.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from signal import SIGINT, SIGTERM

import uvicorn

from rds_kernel.demo import HOSPITALS, write_demo_dataset
from rds_kernel.demo.lab import Lab, course_source, has_display, start_lab
from rds_kernel.errors import BadRequest
from rds_kernel.node.api.app import create_app
from rds_kernel.node.api.serving import bind_socket, server_config
from rds_kernel.node.runtime import tune_allocator
from rds_kernel.node.service import NodeService
from rds_kernel.node.settings import make_private_directory, write_settings

__all__ = ["DemoNode", "bind_ports", "prepare_demo", "rds_command", "run_demo", "write_connections"]

SCIENTIST = "scientist"
START_EPSILON = 10.0
START_DELTA = 1e-5
DEFAULT_PORT = 8765
CONFIG_DIR = "config"
CONNECTIONS_FILE = "connections.json"
COURSE_DIR = "course"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class DemoNode:
    name: str
    directory: Path
    port: int
    token: str
    budget: str = ""
    """The scientist's budget there, for people (a reused --dir keeps what was spent)."""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def bind_ports(port: int | None, count: int) -> tuple[list[socket.socket], str]:
    """Listening loopback sockets for the nodes, and a note when they are not the asked ones.

    ``port`` N asks for N, N+1, ... exactly (BadRequest when one is taken); 0 asks for free
    ports; None asks for the default ports, or free ones when one of those is taken.
    """
    first = DEFAULT_PORT if port is None else port
    try:
        return [_listen(first + i if first else 0) for i in range(count)], ""
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        if port is not None:
            raise BadRequest(
                f"port {port} or {port + count - 1} is taken; pick others with --port, "
                "or --port 0 for free ones"
            ) from None
    ports = f"{first}-{first + count - 1}"
    return [_listen(0) for _ in range(count)], f"ports {ports} are taken, so free ports were used"


def _listen(port: int) -> socket.socket:
    sock = bind_socket(HOST, port)
    sock.listen(128)
    return sock


def prepare_demo(root: Path, ports: Sequence[int]) -> list[DemoNode]:
    """Create (or reuse) the demo node directories; give the scientist a new token on each.

    A reused node keeps its ledger, so a scientist's spending carries over between runs.
    """
    nodes = []
    for hospital, port in zip(HOSPITALS, ports, strict=True):
        directory = make_private_directory(root / hospital)
        settings = write_settings(directory, name=hospital, host=HOST, port=port)
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
            b = service.store.budget(SCIENTIST)
        finally:
            service.close()
        budget = (
            f"ε {b.epsilon_remaining:.4g} of {b.epsilon_total:.4g} left, "
            f"δ {b.delta_remaining:.3g} of {b.delta_total:.3g}"
        )
        nodes.append(DemoNode(hospital, directory, port, token, budget))
    return nodes


def write_connections(config_dir: Path, nodes: Sequence[DemoNode]) -> Path:
    """Write the scientist's connections where ``$RDS_CONFIG_DIR=config_dir`` finds them.

    The format is that of :mod:`rds_kernel.client.connections` (which the node may not
    import); the file is replaced atomically and is created with mode 0600.
    """
    config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = {n.name: {"token": n.token, "url": n.url} for n in nodes}
    fd, tmp = tempfile.mkstemp(dir=config_dir, prefix=".connections-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, indent=2, sort_keys=True)
            f.write("\n")
        path = config_dir / CONNECTIONS_FILE
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def copy_course(source: Path, dest: Path) -> None:
    """Copy the course into ``dest``; files already there (your edits) are kept."""
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if path.is_dir() or any(p.startswith(".") or p == "__pycache__" for p in rel.parts):
            continue
        target = dest / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


@contextmanager
def serving(
    nodes: Sequence[DemoNode], sockets: Sequence[socket.socket]
) -> Iterator[Callable[[], bool]]:
    """Serve each node on its socket in a thread; yields a function saying all are alive."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []
    try:
        for node, sock in zip(nodes, sockets, strict=True):
            config = server_config(
                create_app(node.directory), host=HOST, port=node.port, log_level="warning"
            )
            server = uvicorn.Server(config)
            thread = threading.Thread(
                target=server.run, kwargs={"sockets": [sock]}, name=node.name, daemon=True
            )
            thread.start()
            servers.append((server, thread))

        def alive() -> bool:
            return all(t.is_alive() for _s, t in servers)

        while not all(s.started for s, _t in servers):
            if not alive():
                raise BadRequest("a demo node could not start; its error is printed above")
            time.sleep(0.02)
        yield alive
    finally:
        for server, _t in servers:
            server.should_exit = True
        for _s, thread in servers:
            thread.join(timeout=10)


def run_demo(
    root: Path | None,
    port: int | None = None,
    *,
    lab: bool = True,
    browser: bool | None = None,
) -> int:
    """Start the demo nodes (and JupyterLab on the course) and run until Ctrl-C or SIGTERM.

    ``root`` None is a fresh temporary directory, deleted at the end; ``browser`` None opens
    one when there is a display. Returns the exit code.
    """
    tune_allocator()
    code = 0
    with ExitStack() as stack:
        stack.enter_context(_signals_interrupt())
        temporary = root is None
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="rds-demo-"))
            stack.callback(shutil.rmtree, root, ignore_errors=True)
        try:
            code = _run(stack, root.resolve(), port, lab, browser, temporary)
        except KeyboardInterrupt:
            _say("\nstopping the demo...")
        finally:
            # The cleanup (the stack, unwound next) must not be cut short by a second Ctrl-C,
            # which would leave JupyterLab running.
            for sig in (SIGINT, SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
            if temporary:
                _say(
                    f"deleting the demo directory {root} (with any edits to its copy of the "
                    "course; `rds demo --dir DIR` keeps them next time)"
                )
    _say("rds demo: stopped")
    return code


def _run(
    stack: ExitStack,
    root: Path,
    port: int | None,
    lab: bool,
    browser: bool | None,
    temporary: bool,
) -> int:
    sockets, note = bind_ports(port, len(HOSPITALS))
    for sock in sockets:
        stack.callback(sock.close)
    nodes = prepare_demo(root, [s.getsockname()[1] for s in sockets])
    config = root / CONFIG_DIR
    (config / CONNECTIONS_FILE).unlink(missing_ok=True)
    alive = stack.enter_context(serving(nodes, sockets))
    connections = write_connections(config, nodes)
    _say_nodes(root, nodes, connections, temporary, note)
    jupyter: Lab | None = None
    if lab:
        course = root / COURSE_DIR
        course.mkdir(exist_ok=True)
        source = course_source()
        if source is None:
            _say("note: the course (notebooks/ in the source tree) was not found")
        else:
            copy_course(source, course)
        open_browser = has_display() if browser is None else browser
        jupyter = start_lab(root, course, config, open_browser)
        stack.callback(jupyter.stop)
        _say_lab(jupyter, open_browser, course, temporary)
    else:
        _say_no_lab(config)
    _say("Ctrl-C stops everything.")
    while alive() and (jupyter is None or jupyter.running()):
        time.sleep(0.2)
    if not alive():
        _say("a demo node stopped unexpectedly; stopping the demo")
        return 1
    _say("JupyterLab has stopped; stopping the nodes")
    return 0


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt (even if SIGINT was ignored); restored after."""
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (SIGINT, SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------- what it prints


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _say_nodes(
    root: Path, nodes: Sequence[DemoNode], connections: Path, temporary: bool, note: str
) -> None:
    kept = "deleted when the demo stops; --dir DIR keeps it" if temporary else "kept"
    rds = rds_command()
    lines = ["rds demo: two owner nodes with synthetic patients (dataset 'patients')", ""]
    for n in nodes:
        lines.append(f"  {n.name:<11} {n.url:<24} {SCIENTIST}: {n.budget}")
    if note:
        lines.append(f"  ({note})")
    lines += [
        "",
        f"  demo directory  {root} ({kept})",
        f"  connections     {connections} (the scientist's tokens, mode 0600)",
        f"  owner's view    {rds} --dir {nodes[0].directory} audit",
        f"                  {rds} --dir {nodes[0].directory} budget show {SCIENTIST}",
        "",
    ]
    _say("\n".join(lines))


def _say_lab(lab: Lab, browser: bool, course: Path, temporary: bool) -> None:
    where = "opened in your browser" if browser else "open it in a browser"
    edits = (
        "  Your copy of the course is in the temporary demo directory: edits are deleted when\n"
        "  the demo stops; `rds demo --dir DIR` keeps them.\n"
        if temporary
        else ""
    )
    _say(
        f"JupyterLab on the course ({course}), {where}:\n\n"
        f"  {lab.url}\n\n"
        '  The dataset browser: the database icon in JupyterLab\'s left sidebar ("RDS datasets")\n'
        "  lists both nodes, their datasets, schemas and mock rows, and your budget.\n"
        f"{edits}"
        f"  JupyterLab's log: {lab.log}\n"
    )


def rds_command() -> str:
    """How to type this installation's ``rds`` in the user's shell: ``rds`` when that is what
    PATH finds, else its path (relative to the current directory when under it, as
    ``.venv/bin/rds`` after ``make demo``)."""
    mine = Path(sys.executable).parent / "rds"
    found = shutil.which("rds")
    if found is not None and Path(found).resolve() == mine.resolve():
        return "rds"
    try:
        return str(mine.relative_to(Path.cwd()))
    except ValueError:
        return str(mine)


def _say_no_lab(config: Path) -> None:
    _say(
        "Nodes only (--no-lab). To use them, point Jupyter or Python at the saved connections:\n"
        f"  export RDS_CONFIG_DIR={config}\n"
        "then, in a notebook, %rds connect --name hospital_a; in Python,\n"
        'rds_kernel.client.load_connections()["hospital_a"].connect().\n'
    )
