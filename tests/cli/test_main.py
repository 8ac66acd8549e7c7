"""The `rds` owner CLI: secrets alone on stdout, one-line errors, non-zero exit codes, a global
--dir (or $RDS_NODE_DIR), --format text|json on every listing, every command documented."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import requests

from rds_kernel.cli.main import main
from rds_kernel.cli.main import rds as root
from rds_kernel.cli.node import DEFAULT_HOST, DEFAULT_PORT
from rds_kernel.demo import write_demo_dataset
from rds_kernel.node.settings import SETTINGS
from rds_kernel.spec import Query, count

README = Path(__file__).resolve().parents[2] / "README.md"


def rds(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def at(capsys: pytest.CaptureFixture[str], d: Path, *args: object) -> tuple[int, str, str]:
    """`rds --dir d ARGS`."""
    return rds(capsys, "--dir", d, *args)


@pytest.fixture(autouse=True)
def _no_node_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shell running the tests must not choose the node directory or its settings."""
    for name in list(os.environ):
        if name.upper().startswith("RDS_NODE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, Path]:
    return write_demo_dataset(tmp_path / "source", "hospital_b", n=500)


@pytest.fixture
def node_dir(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    source: tuple[Path, Path],
) -> Path:
    d = tmp_path / "hospital"
    code, out, _err = at(capsys, d, "node", "init", "--name", "hospital_b")
    assert code == 0
    assert out.strip().startswith("rds_")
    data, schema = source
    assert at(capsys, d, "dataset", "add", "patients", data, "--schema", schema)[0] == 0
    return d


def test_user_add_prints_only_the_token(node_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = at(
        capsys, node_dir, "user", "add", "alice", "--epsilon", "5", "--delta", "1e-6"
    )
    assert code == 0
    assert out.count("\n") == 1
    assert out.startswith("rds_")
    assert "alice" in err
    code, out, _ = at(capsys, node_dir, "budget", "show", "alice", "--format", "json")
    assert json.loads(out)["epsilon_total"] == 5.0


def test_the_node_directory_can_come_from_the_environment(
    node_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RDS_NODE_DIR", str(node_dir))
    code, out, _err = rds(capsys, "dataset", "list")
    assert code == 0 and out.startswith("patients\t")
    # --dir wins over the environment
    monkeypatch.setenv("RDS_NODE_DIR", "/nonexistent-node")
    assert at(capsys, node_dir, "dataset", "list")[0] == 0
    code, _out, err = rds(capsys, "dataset", "list")
    assert code == 1 and "/nonexistent-node is not a node directory" in err


def test_budgets_caps_and_audit(node_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    at(capsys, node_dir, "user", "add", "alice")
    assert at(capsys, node_dir, "budget", "set", "alice", "--epsilon", "2")[0] == 0
    code, _out, _err = at(
        capsys, node_dir, "budget", "set", "alice", "--epsilon", "1", "--dataset", "patients"
    )
    assert code == 0
    _code, out, _ = at(capsys, node_dir, "budget", "show", "alice", "--format", "json")
    view = json.loads(out)
    assert view["epsilon_total"] == 2.0
    assert view["per_dataset"]["patients"]["epsilon_total"] == 1.0
    _code, out, _ = at(capsys, node_dir, "budget", "show", "alice")
    assert out.startswith("alice ") and "dataset patients" in out
    assert at(capsys, node_dir, "budget", "cap", "patients", "--epsilon", "10")[0] == 0
    _code, out, _ = at(capsys, node_dir, "audit", "--format", "json")
    actions = [entry["action"] for entry in json.loads(out)]
    assert "dataset.add" in actions
    assert len(actions) >= 5
    _code, out, _ = at(capsys, node_dir, "audit", "--limit", "2")
    assert len(out.splitlines()) == 2


@pytest.mark.parametrize(
    ("args", "keys"),
    [
        (["dataset", "list"], {"name", "columns", "description"}),
        (["user", "list"], {"name", "role", "disabled", "created_at"}),
        (["budget", "requests"], None),
        (["jobs", "list"], None),
        (["audit"], {"action", "actor", "detail", "created_at"}),
        (["node", "settings"], {"name", "value", "source"}),
    ],
)
def test_every_listing_prints_one_json_array(
    node_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str], keys: set[str] | None
) -> None:
    code, out, _err = at(capsys, node_dir, *args, "--format", "json")
    assert code == 0
    listed = json.loads(out)
    assert isinstance(listed, list)
    if keys is not None:
        assert listed and keys <= set(listed[0])
    code, text, _err = at(capsys, node_dir, *args)
    assert code == 0
    assert len(text.splitlines()) >= len(listed)


def test_node_settings_says_where_each_setting_comes_from(
    node_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RDS_NODE_PORT", "9000")
    _code, out, _ = at(capsys, node_dir, "node", "settings", "--format", "json")
    shown = {row["name"]: row for row in json.loads(out)}
    assert list(shown) == list(SETTINGS)
    assert shown["port"] == {"name": "port", "value": 9000, "source": "$RDS_NODE_PORT"}
    assert shown["name"]["value"] == "hospital_b"
    assert shown["name"]["source"].endswith("node.toml")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["budget", "show", "nobody"], "nobody"),
        (["budget", "set", "nobody", "--epsilon", "1"], "nobody"),
        (["budget", "cap", "nodata", "--epsilon", "1"], "no dataset 'nodata'"),
        (["dataset", "add", "patients", "{data}", "--schema", "{schema}"], "already exists"),
        (
            ["dataset", "add", "x", "/nonexistent.parquet", "--schema", "{schema}"],
            "not found",
        ),
        (
            ["dataset", "add", "x", "{data}", "--schema", "/nonexistent.toml"],
            "schema file not found",
        ),
        (["node", "init"], "already a node directory"),
    ],
)
def test_errors_are_one_line_with_exit_code_1(
    node_dir: Path,
    source: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    data, schema = source
    filled = [a.format(data=data, schema=schema) for a in args]
    code, out, err = at(capsys, node_dir, *filled)
    assert code == 1
    assert out == ""
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert message in err


def test_a_directory_that_is_no_node_says_how_to_make_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = at(capsys, "/nonexistent-node", "audit")
    assert (code, out) == (1, "")
    assert err == (
        "error: /nonexistent-node is not a node directory (no node.toml); "
        "run `rds --dir /nonexistent-node node init`\n"
    )


def test_a_bad_schema_names_the_file_and_leaves_the_node_unchanged(
    node_dir: Path,
    source: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, _schema = source
    bad = tmp_path / "bad.toml"
    bad.write_text('[columns.age]\ntype = "int"\n[columns.sex]\ntype = "category"\n')
    code, _out, err = at(capsys, node_dir, "dataset", "add", "other", data, "--schema", bad)
    assert code == 1
    assert str(bad) in err
    assert "sex" in err
    assert not (node_dir / "datasets" / "other").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dir", "d", "user", "add"], "Missing argument 'NAME'"),
        (["--dir", "d", "budget", "set", "u", "--epsilon", "-1"], "finite number ≥ 0"),
        (["--dir", "d", "budget", "set", "u", "--epsilon", "nan"], "finite number ≥ 0"),
        (["--dir", "d", "audit", "--format", "xml"], "'xml' is not one of 'text', 'json'"),
        (["--dir", "d", "node", "serve", "--port", "70000"], "70000 is not in the range"),
        (["user", "list"], "no node directory: give `rds --dir DIR ...` or set RDS_NODE_DIR"),
        (["--dir", "d", "demo", "--no-lab"], "put --dir after the command"),
        (["nonsense"], "No such command 'nonsense'"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = rds(capsys, *args)
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message in err
    assert "--help`)" in err


def test_rds_alone_prints_the_help_and_version_prints_the_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _err = rds(capsys)
    assert code == 0
    assert out.startswith("Usage: rds [OPTIONS] COMMAND")
    assert "RDS_NODE_DIR" in out
    code, out, _err = rds(capsys, "node")
    assert code == 0 and "init" in out and "serve" in out
    code, out, _err = rds(capsys, "--version")
    assert code == 0 and out.startswith("rds ")


def commands(
    group: click.Group = root, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command of `rds` with its path, e.g. (("budget", "set"), <Command set>)."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


COMMANDS = [pytest.param(path, command, id=" ".join(path)) for path, command in commands()]


@pytest.mark.parametrize(("path", "command"), COMMANDS)
def test_every_command_is_documented_in_the_readme(
    path: tuple[str, ...], command: click.Command
) -> None:
    """The README's command table has a row for it, naming each of its options."""
    prefix = f"| `rds {' '.join(path)}"
    rows = [line for line in README.read_text().splitlines() if line.startswith(prefix)]
    assert rows, f"README's table of commands lacks `rds {' '.join(path)}`"
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "help":
            assert any(param.opts[0] in row for row in rows), (path, param.opts[0])


@pytest.mark.parametrize(("path", "command"), COMMANDS)
def test_every_argument_and_option_has_help_and_says_its_default(
    path: tuple[str, ...], command: click.Command
) -> None:
    assert command.help, path
    for param in command.params:
        assert getattr(param, "help", None), (path, param.name)
        if isinstance(param, click.Option) and not param.is_flag and not param.required:
            shown = param.default is not None and param.show_default
            assert shown or "default" in (param.help or ""), (path, param.name)


@pytest.mark.parametrize(
    ("code", "absent"),
    [
        ("import rds_kernel", ("click", "pydantic_settings", "tomlkit", "rds_kernel.cli")),
        (  # `rds --help` and usage errors answer without loading the node
            "from rds_kernel.cli.main import main; main(['--help']); main(['user', 'add'])",
            ("pydantic_settings", "tomlkit", "sqlalchemy", "fastapi", "uvicorn", "opendp"),
        ),
    ],
)
def test_what_is_not_imported(code: str, absent: tuple[str, ...]) -> None:
    report = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()[-1]
    loaded = [m for m in json.loads(report) if any(m == a or m.startswith(a + ".") for a in absent)]
    assert loaded == []


def test_the_help_of_node_init_gives_the_settings_defaults() -> None:
    assert SETTINGS["host"].default == DEFAULT_HOST
    assert SETTINGS["port"].default == DEFAULT_PORT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(node_dir: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    exe = shutil.which("rds", path=str(Path(sys.executable).parent)) or "rds"
    proc = subprocess.Popen(
        [
            exe,
            "--dir",
            str(node_dir),
            "node",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if requests.get(url + "/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.05)
        else:
            pytest.fail(
                "rds node serve did not start: " + (proc.stderr.read() if proc.stderr else "")
            )
        yield url, node_dir
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.server
def test_init_add_user_serve_then_query_over_http(served: tuple[str, Path]) -> None:
    """The owner's whole CLI path gives a node that answers a scientist's DP query."""
    url, node_dir = served
    cli = [sys.executable, "-m", "rds_kernel.cli.main"]
    env = {**os.environ, "RDS_NODE_DIR": str(node_dir)}
    token = subprocess.run(
        [*cli, "user", "add", "sam", "--epsilon", "1"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    spec = Query("patients").agg(count()).spec(0.5).to_dict()
    r = requests.post(
        url + "/v1/queries",
        json={"request_id": "cli-1", "spec": spec},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    noisy = r.json()["result"]["rows"][0][0]
    assert abs(noisy - 500) < 60  # Laplace scale 2 at ε=0.5: 60 is > 25 scales away
    shown = subprocess.run(
        [*cli, "--dir", str(node_dir), "budget", "show", "sam", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 0 < json.loads(shown)["epsilon_spent"] <= 0.5


@pytest.mark.server
def test_serve_takes_its_port_from_the_environment_over_node_toml(
    node_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """RDS_NODE_PORT wins over node.toml's port; `--port` wins over both."""
    port = free_port()
    env = {**os.environ, "RDS_NODE_DIR": str(node_dir), "RDS_NODE_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rds_kernel.cli.main", "node", "serve", "--log-level", "warning"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        while line and not line.startswith("serving node"):
            line = proc.stderr.readline()
        assert f"on http://127.0.0.1:{port} " in line
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def test_a_new_node_is_readable_by_its_owner_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rds node init` under the usual umask 022 used to make the directory 0755 and node.db
    0644: any local user — the sandbox's uid `nobody` included — could read unreleased job
    outputs from the database. Now the directory is 0700 and the files 0600, even the WAL."""
    old = os.umask(0o022)
    try:
        d = tmp_path / "hospital"
        assert at(capsys, d, "node", "init", "--name", "h")[0] == 0
        assert at(capsys, d, "user", "add", "sam", "--epsilon", "1")[0] == 0
    finally:
        os.umask(old)
    assert d.stat().st_mode & 0o777 == 0o700
    files = [p for p in d.iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"node.toml", "node.db"}
    for path in files:
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is {path.stat().st_mode:o}"


def test_init_writes_its_options_to_node_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "clinic"
    code, _out, err = at(capsys, d, "node", "init", "--port", "9001", "--host", "0.0.0.0")
    assert code == 0
    assert "initialised node 'clinic'" in err  # the directory's name
    text = (d / "node.toml").read_text()
    assert "\nport = 9001\n" in text and '\nhost = "0.0.0.0"\n' in text


def test_serve_refuses_a_directory_others_can_read(
    node_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A node directory others can read is refused at `rds node serve`, with the chmod to run."""
    node_dir.chmod(0o755)
    code, _out, err = at(capsys, node_dir, "node", "serve", "--port", "0")
    assert code == 1
    assert f"chmod 700 {node_dir}" in err
    assert err.count("\n") == 1


def test_tokens_are_rotated_disabled_and_enabled_from_the_cli(
    node_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rds user rotate` prints only the new token; disable and enable take effect at once."""
    from rds_kernel.node.settings import load_settings
    from rds_kernel.node.store import Store

    code, old, _ = at(capsys, node_dir, "user", "add", "sam", "--epsilon", "1")
    store = Store(load_settings(node_dir).resolved_database_url)
    try:
        code, new, err = at(capsys, node_dir, "user", "rotate", "sam")
        assert code == 0 and new.strip().startswith("rds_") and "shown once" in err
        assert store.authenticate(old.strip()) is None
        assert store.authenticate(new.strip()) is not None
        assert at(capsys, node_dir, "user", "disable", "sam")[0] == 0
        assert store.authenticate(new.strip()) is None
        _code, out, _ = at(capsys, node_dir, "user", "list")
        assert "sam\tscientist\tdisabled\t" in out
        assert at(capsys, node_dir, "user", "enable", "sam")[0] == 0
        assert store.authenticate(new.strip()) is not None
        code, _out, err = at(capsys, node_dir, "user", "disable", "nobody")
        assert code == 1 and "no user named 'nobody'" in err
    finally:
        store.close()


def test_budget_set_without_delta_keeps_the_delta(
    node_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rds budget set --epsilon` alone used to reset δ to 0."""
    at(capsys, node_dir, "user", "add", "sam", "--epsilon", "1", "--delta", "1e-6")
    code, out, _err = at(
        capsys, node_dir, "budget", "set", "sam", "--epsilon", "2", "--format", "json"
    )
    assert code == 0
    assert json.loads(out)["delta_total"] == 1e-6
