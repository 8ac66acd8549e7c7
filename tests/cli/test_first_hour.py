"""A newcomer's first hour with `rds` (issue 12): `node serve` says where it serves only once
the port is bound, and says plainly when it is taken; `dataset add` tells the owner what will
be clamped or left out and refuses an empty file; the duplicate-user error names commands that
exist; every `rds ...` command a message names exists; every option and argument is documented.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import requests

import rds_kernel
from rds_kernel.cli.main import main
from rds_kernel.cli.main import rds as root
from rds_kernel.cli.users import taken
from rds_kernel.demo import write_demo_dataset

PACKAGE = Path(rds_kernel.__file__).parent


def rds(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _no_node_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("RDS_NODE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def node_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    d = tmp_path / "hospital"
    assert rds(capsys, "--dir", d, "node", "init", "--name", "h")[0] == 0
    return d


def rds_exe() -> list[str]:
    """The installed `rds` script beside this Python, else `python -m rds_kernel.cli.main`."""
    exe = shutil.which("rds", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "rds_kernel.cli.main"]


# ---------------------------------------------------------------- 1. rds node serve

SERVE = ("node", "serve", "--host", "127.0.0.1")


@pytest.mark.server
def test_serve_on_a_port_in_use_says_so_in_one_line(node_dir: Path) -> None:
    """Before, "serving node ..." came first, then uvicorn's raw "address already in use" and
    exit code 3."""
    with socket.socket() as taken_socket:
        taken_socket.bind(("127.0.0.1", 0))
        taken_socket.listen()
        port = taken_socket.getsockname()[1]
        done = subprocess.run(
            [*rds_exe(), "--dir", str(node_dir), *SERVE, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"error: port {port} on 127.0.0.1 is in use (is `rds demo` running?) — use --port N "
        "or --port 0 for a free one\n"
    )
    assert "serving" not in done.stderr


@pytest.fixture
def serving_on_port_0(node_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`rds node serve --port 0`, and the first line it printed; stopped at the end."""
    proc = subprocess.Popen(
        [*rds_exe(), "--dir", str(node_dir), *SERVE, "--port", "0", "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        yield proc, proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.server
def test_serve_on_port_0_prints_the_port_chosen_once_it_is_bound(
    serving_on_port_0: tuple[subprocess.Popen[str], str],
) -> None:
    """Before, the line said `http://127.0.0.1:0`. It comes once the socket is bound and
    listening, so the first request after it is answered, without retrying."""
    _proc, line = serving_on_port_0
    found = re.fullmatch(
        r"serving node 'h' with 0 dataset\(s\) on (http://127\.0\.0\.1:(\d+)) "
        r"\(Ctrl-C stops it\)\n",
        line,
    )
    assert found, line
    assert int(found[2]) != 0
    answer = requests.get(found[1] + "/healthz", timeout=30)
    assert answer.ok


def test_serve_on_an_address_this_machine_lacks_is_one_line(
    node_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = rds(
        capsys, "--dir", node_dir, "node", "serve", "--host", "192.0.2.1", "--port", "0"
    )
    assert (code, out) == (1, "")
    assert err.startswith("error: cannot listen on 192.0.2.1 port 0 (")
    assert err.count("\n") == 1 and "--host" in err


# ---------------------------------------------------------------- 2, 3. rds dataset add


SCHEMA = """
[columns.age]
type = "int"
bounds = [0, 120]

[columns.bmi]
type = "float"
bounds = [15.0, 50.0]

[columns.sex]
type = "category"
categories = ["F", "M"]
"""


@pytest.fixture
def schema(tmp_path: Path) -> Path:
    path = tmp_path / "s.schema.toml"
    path.write_text(SCHEMA)
    return path


def test_dataset_add_notes_clamped_values_and_columns_left_out(
    node_dir: Path, schema: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, values outside the bounds and extra columns went by without a word."""
    data = tmp_path / "d.csv"
    data.write_text("age,bmi,sex,foo,bar\n-3,22,F,1,x\n130,14,M,2,y\n131,22,F,3,z\n40,22,M,4,w\n")
    code, out, err = rds(capsys, "--dir", node_dir, "dataset", "add", "d", data, "--schema", schema)
    assert (code, out) == (0, "")
    assert err.splitlines() == [
        "added dataset 'd': 3 columns, mock data generated from the schema",
        "note: column age: 3 value(s) outside [0, 120] will be clamped to the bounds",
        "note: column bmi: 1 value(s) outside [15.0, 50.0] will be clamped to the bounds",
        "note: columns not in the schema, not added: foo, bar",
    ]
    # the counts are the owner's: not in the audit log, which the owner API serves over HTTP
    _code, audit, _err = rds(capsys, "--dir", node_dir, "audit", "--format", "json")
    assert "clamped" not in audit and "foo" not in audit


def test_dataset_add_of_a_clean_file_has_no_notes(
    node_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, schema = write_demo_dataset(tmp_path / "source", "hospital_b", n=200)
    code, _out, err = rds(
        capsys, "--dir", node_dir, "dataset", "add", "p", data, "--schema", schema
    )
    assert code == 0
    assert "note:" not in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("age,bmi,sex\n", "the file has no rows; a dataset needs at least one row of data"),
        ("", "the file is empty; a dataset needs a header and at least one row of data"),
        (
            "Age,bmi,Sex\n30,22,F\n",
            "the schema's column(s) age, sex are missing; the file has `Age,bmi,Sex`; the "
            "schema names are case-sensitive",
        ),
        ("age;bmi;sex\n30;22;F\n", "one column `age;bmi;sex`: is the delimiter `;`?"),
    ],
    ids=["header only", "empty file", "case", "delimiter"],
)
def test_dataset_add_refuses_with_one_line_and_a_hint(
    node_dir: Path,
    schema: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    message: str,
) -> None:
    """Before, an empty file became a dataset of 0 rows, and a case or delimiter mismatch was
    reported as every column missing, with no word on why."""
    data = tmp_path / "d.csv"
    data.write_text(content)
    code, out, err = rds(capsys, "--dir", node_dir, "dataset", "add", "d", data, "--schema", schema)
    assert (code, out) == (1, "")
    assert err.startswith(f"error: {data}: ")
    assert err.count("\n") == 1
    assert message in err
    assert not (node_dir / "datasets" / "d").exists()


# ---------------------------------------------------------------- 4. rds user add, twice


def test_adding_a_user_twice_names_the_commands_that_manage_it(
    node_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, it said "use `rds user` commands", which is not a command."""
    assert rds(capsys, "--dir", node_dir, "user", "add", "alice")[0] == 0
    code, out, err = rds(capsys, "--dir", node_dir, "user", "add", "alice", "--epsilon", "1")
    assert (code, out) == (1, "")
    assert err == (
        "error: a user named 'alice' already exists; pick another name, or manage that "
        "account: `rds user rotate alice` gives it a new token; `rds budget set alice "
        "--epsilon E` changes its budget\n"
    )
    assert rds(capsys, "--dir", node_dir, "user", "disable", "alice")[0] == 0
    code, _out, err = rds(capsys, "--dir", node_dir, "user", "add", "alice")
    assert code == 1 and err.count("\n") == 1
    assert "already exists (disabled)" in err
    assert "`rds user enable alice` lets its token work again" in err
    code, _out, err = rds(capsys, "--dir", node_dir, "user", "add", "owner")
    assert code == 1 and "`rds user rotate owner`" in err
    assert "budget" not in err  # an owner has no budget to set


# ---------------------------------------------------------------- every `rds ...` named exists


def named_commands() -> Iterator[tuple[str, str]]:
    """Every `rds ...` in backquotes in the package's source: (where, the command line)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for found in re.findall(r"`(rds(?: [^`]*)?)`", line):
                yield f"{path.relative_to(PACKAGE.parent)}:{number}", found
    # the duplicate-user messages, as they are printed
    for role in ("scientist", "owner"):
        for disabled in (False, True):
            for found in re.findall(r"`(rds [^`]*)`", taken("alice", role, disabled)):
                yield f"taken({role}, {disabled})", found


def resolve(line: str) -> str | None:
    """Why ``line`` (e.g. ``rds budget set NAME --epsilon E``) is no command of `rds`, or None.

    ``a|b`` stands for each of its alternatives; ``--a/--b`` for each option; ``...`` for
    anything more; words in capitals or braces are placeholders for values.
    """
    words = line.split()[1:]
    command: click.Command = root
    while words and words[0].startswith("-"):  # the root's options
        option = words.pop(0).split("=")[0]
        param = next((p for p in root.params if option in getattr(p, "opts", ())), None)
        if option not in ("--help", "-h") and param is None:
            return f"rds has no option {option}"
        if isinstance(param, click.Option) and not param.is_flag and words:
            words.pop(0)
    ctx = click.Context(root)
    while isinstance(command, click.Group) and words and words[0] != "...":
        names = words.pop(0).split("|")
        subs = [command.get_command(ctx, name) for name in names]
        if None in subs:
            return f"`{command.name}` has no command {'|'.join(names)}"
        if len(subs) > 1:
            return None if not words else f"{'|'.join(names)} is followed by {words}"
        command = subs[0]  # type: ignore[assignment]
    positional = 0
    while words:
        word = words.pop(0)
        if word == "...":
            return None
        if word.startswith("-"):
            for option in word.split("=")[0].split("/"):
                param = next((p for p in command.params if option in getattr(p, "opts", ())), None)
                if option not in ("--help", "-h") and param is None:
                    return f"`{command.name}` has no option {option}"
                takes_value = isinstance(param, click.Option) and not param.is_flag
                if takes_value and "=" not in word and words and words[0] != "...":
                    words.pop(0)
            continue
        positional += 1
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if positional > len(arguments):
        return f"`{command.name}` takes {len(arguments)} argument(s), given {positional}"
    return None


NAMED = [pytest.param(line, id=f"{where} {line}") for where, line in named_commands()]


def test_the_scan_finds_the_messages() -> None:
    lines = {line for _where, line in named_commands()}
    assert {"rds user rotate alice", "rds budget set alice --epsilon E"} <= lines
    assert "rds user enable alice" in lines


@pytest.mark.parametrize("line", NAMED)
def test_every_rds_command_a_message_names_exists(line: str) -> None:
    assert resolve(line) is None, resolve(line)


@pytest.mark.parametrize(
    "line",
    [
        "rds users add",
        "rds user add|nope",
        "rds budget set NAME --epsilon E --nope",
        "rds node serve DIR",
    ],
)
def test_the_check_catches_a_command_that_does_not_exist(line: str) -> None:
    assert resolve(line) is not None


# ---------------------------------------------------------------- 5. help for everything


def every_command(
    command: click.Command = root, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command and group of `rds`, the root included, with its path."""
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None
            yield from every_command(sub, (*path, name))


EVERY = [pytest.param(path, c, id=" ".join(("rds", *path))) for path, c in every_command()]


@pytest.mark.parametrize(("path", "command"), EVERY)
def test_every_option_and_argument_is_in_the_help_with_its_default(
    path: tuple[str, ...], command: click.Command, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rds ... --help` shows each argument (by name, with its help) and each option with its
    help and its default: `[default: X]`, or in the help's own words when it has none."""
    code, out, _err = rds(capsys, *path, "--help")
    assert code == 0
    text = " ".join(out.split())
    assert command.help and " ".join(command.help.split()[:3]) in text
    for param in command.params:
        help_ = getattr(param, "help", None)
        assert help_, (path, param.name)
        assert " ".join(help_.split()) in text, (path, param.name)
        if isinstance(param, click.Argument):
            assert param.human_readable_name in text, (path, param.name)
        elif isinstance(param, click.Option) and not param.is_flag and not param.required:
            shown = f"{' '.join(help_.split())} [default: " in text
            assert shown or "(default: " in help_, (path, param.name)


def test_rds_alone_and_version_exit_0_from_the_installed_script() -> None:
    alone = subprocess.run(rds_exe(), capture_output=True, text=True, timeout=60)
    assert alone.returncode == 0
    assert alone.stdout.startswith("Usage: rds [OPTIONS] COMMAND")
    version = subprocess.run([*rds_exe(), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0
    assert re.fullmatch(r"rds \d+\.\d+\S*\n", version.stdout), version.stdout
