"""The `rds` owner CLI: secrets alone on stdout, one-line errors, non-zero exit codes."""

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

import pytest
import requests

from rds_kernel.cli.main import main
from rds_kernel.demo import write_demo_dataset
from rds_kernel.spec import Query, count


def rds(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


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
    code, out, _err = rds(capsys, "node", "init", d, "--name", "hospital_b")
    assert code == 0
    assert out.strip().startswith("rds_")
    data, schema = source
    assert rds(capsys, "dataset", "add", d, "patients", data, "--schema", schema)[0] == 0
    return d


def test_user_add_prints_only_the_token(node_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = rds(
        capsys, "user", "add", node_dir, "alice", "--epsilon", "5", "--delta", "1e-6"
    )
    assert code == 0
    assert out.count("\n") == 1
    assert out.startswith("rds_")
    assert "alice" in err
    code, out, _ = rds(capsys, "budget", "show", node_dir, "alice", "--json")
    assert json.loads(out)["epsilon_total"] == 5.0


def test_budgets_caps_and_audit(node_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rds(capsys, "user", "add", node_dir, "alice")
    assert rds(capsys, "budget", "set", node_dir, "alice", "--epsilon", "2")[0] == 0
    assert (
        rds(capsys, "budget", "set", node_dir, "alice", "--epsilon", "1", "--dataset", "patients")[
            0
        ]
        == 0
    )
    _code, out, _ = rds(capsys, "budget", "show", node_dir, "alice", "--json")
    view = json.loads(out)
    assert view["epsilon_total"] == 2.0
    assert view["per_dataset"]["patients"]["epsilon_total"] == 1.0
    assert rds(capsys, "budget", "cap", node_dir, "patients", "--epsilon", "10")[0] == 0
    _code, out, _ = rds(capsys, "audit", node_dir, "--json")
    actions = [json.loads(line)["action"] for line in out.splitlines()]
    assert "dataset.add" in actions
    assert len(actions) >= 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["budget", "show", "{dir}", "nobody"], "nobody"),
        (["budget", "set", "{dir}", "nobody", "--epsilon", "1"], "nobody"),
        (["budget", "cap", "{dir}", "nodata", "--epsilon", "1"], "no dataset 'nodata'"),
        (
            ["dataset", "add", "{dir}", "patients", "{data}", "--schema", "{schema}"],
            "already exists",
        ),
        (
            ["dataset", "add", "{dir}", "x", "/nonexistent.parquet", "--schema", "{schema}"],
            "not found",
        ),
        (
            ["dataset", "add", "{dir}", "x", "{data}", "--schema", "/nonexistent.toml"],
            "schema file not found",
        ),
        (["node", "init", "{dir}"], "already a node directory"),
        (["audit", "/nonexistent-node"], "not a node directory"),
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
    filled = [a.format(dir=node_dir, data=data, schema=schema) for a in args]
    code, out, err = rds(capsys, *filled)
    assert code == 1
    assert out == ""
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert message in err


def test_a_bad_schema_names_the_file_and_leaves_the_node_unchanged(
    node_dir: Path,
    source: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, _schema = source
    bad = tmp_path / "bad.toml"
    bad.write_text('[columns.age]\ntype = "int"\n[columns.sex]\ntype = "category"\n')
    code, _out, err = rds(capsys, "dataset", "add", node_dir, "other", data, "--schema", bad)
    assert code == 1
    assert str(bad) in err
    assert "sex" in err
    assert not (node_dir / "datasets" / "other").exists()


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["user", "add"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["budget", "set", "d", "u", "--epsilon", "-1"])
    assert info.value.code == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(node_dir: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    exe = shutil.which("rds", path=str(Path(sys.executable).parent)) or "rds"
    proc = subprocess.Popen(
        [exe, "node", "serve", str(node_dir), "--port", str(port), "--log-level", "warning"],
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


@pytest.mark.server
def test_init_add_user_serve_then_query_over_http(served: tuple[str, Path]) -> None:
    """The owner's whole CLI path gives a node that answers a scientist's DP query."""
    url, node_dir = served
    token = subprocess.run(
        [
            sys.executable,
            "-m",
            "rds_kernel.cli.main",
            "user",
            "add",
            str(node_dir),
            "sam",
            "--epsilon",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
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
        [
            sys.executable,
            "-m",
            "rds_kernel.cli.main",
            "budget",
            "show",
            str(node_dir),
            "sam",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 0 < json.loads(shown)["epsilon_spent"] <= 0.5


def test_a_new_node_is_readable_by_its_owner_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rds node init` under the usual umask 022 used to make the directory 0755 and node.db
    0644: any local user — the sandbox's uid `nobody` included — could read unreleased job
    outputs from the database. Now the directory is 0700 and the files 0600, even the WAL."""
    old = os.umask(0o022)
    try:
        d = tmp_path / "hospital"
        assert rds(capsys, "node", "init", d, "--name", "h")[0] == 0
        assert rds(capsys, "user", "add", d, "sam", "--epsilon", "1")[0] == 0
    finally:
        os.umask(old)
    assert d.stat().st_mode & 0o777 == 0o700
    files = [p for p in d.iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"node.toml", "node.db"}
    for path in files:
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is {path.stat().st_mode:o}"


def test_serve_refuses_a_directory_others_can_read(
    node_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A node directory others can read is refused at `rds node serve`, with the chmod to run."""
    node_dir.chmod(0o755)
    code, _out, err = rds(capsys, "node", "serve", node_dir, "--port", "0")
    assert code == 1
    assert f"chmod 700 {node_dir}" in err
    assert err.count("\n") == 1


def test_tokens_are_rotated_disabled_and_enabled_from_the_cli(
    node_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rds user rotate` prints only the new token; disable and enable take effect at once."""
    from rds_kernel.node.settings import load_settings
    from rds_kernel.node.store import Store

    code, old, _ = rds(capsys, "user", "add", node_dir, "sam", "--epsilon", "1")
    store = Store(load_settings(node_dir).resolved_database_url)
    try:
        code, new, err = rds(capsys, "user", "rotate", node_dir, "sam")
        assert code == 0 and new.strip().startswith("rds_") and "shown once" in err
        assert store.authenticate(old.strip()) is None
        assert store.authenticate(new.strip()) is not None
        assert rds(capsys, "user", "disable", node_dir, "sam")[0] == 0
        assert store.authenticate(new.strip()) is None
        assert rds(capsys, "user", "enable", node_dir, "sam")[0] == 0
        assert store.authenticate(new.strip()) is not None
        code, _out, err = rds(capsys, "user", "disable", node_dir, "nobody")
        assert code == 1 and "no user named 'nobody'" in err
    finally:
        store.close()


def test_budget_set_without_delta_keeps_the_delta(
    node_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rds budget set --epsilon` alone used to reset δ to 0."""
    rds(capsys, "user", "add", node_dir, "sam", "--epsilon", "1", "--delta", "1e-6")
    code, out, _err = rds(capsys, "budget", "set", node_dir, "sam", "--epsilon", "2", "--json")
    assert code == 0
    assert json.loads(out)["delta_total"] == 1e-6
