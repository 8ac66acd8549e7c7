"""Saved connections: the per-user JSON file the magics, the sidebar and `rds demo` share."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

import rds_kernel as rds
from rds_kernel.client import (
    Connection,
    check_connection_name,
    connections_path,
    load_connections,
    remove_connection,
    save_connection,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_file_lives_in_rds_config_dir_or_the_home_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RDS_CONFIG_DIR", str(tmp_path / "cfg"))
    assert connections_path() == tmp_path / "cfg" / "connections.json"
    monkeypatch.delenv("RDS_CONFIG_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert connections_path() == tmp_path / ".config" / "rds_kernel" / "connections.json"


def test_save_load_and_remove(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "connections.json"
    assert load_connections(path) == {}
    saved = save_connection("hospital_a", "http://127.0.0.1:8765/", "rds_secret", path)
    save_connection("hospital_b", "http://127.0.0.1:8766", "rds_other", path)
    assert saved == Connection("hospital_a", "http://127.0.0.1:8765", "rds_secret")
    assert json.loads(path.read_text()) == {
        "hospital_a": {"url": "http://127.0.0.1:8765", "token": "rds_secret"},
        "hospital_b": {"url": "http://127.0.0.1:8766", "token": "rds_other"},
    }
    assert set(load_connections(path)) == {"hospital_a", "hospital_b"}
    assert remove_connection("hospital_a", path) is True
    assert remove_connection("hospital_a", path) is False
    assert list(load_connections(path)) == ["hospital_b"]


def test_only_the_user_can_read_it(tmp_path: Path) -> None:
    """The file is 0600 in a 0700 directory, also when it was readable by others before."""
    path = tmp_path / "cfg" / "connections.json"
    save_connection("a", "http://h:1", "rds_secret", path)
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    path.chmod(0o644)
    save_connection("b", "http://h:2", "rds_secret2", path)
    assert mode(path) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["connections.json"]  # no leftovers


def test_the_token_is_not_in_the_repr() -> None:
    connection = Connection("a", "http://h:1", "rds_secret")
    assert "rds_secret" not in repr(connection)


@pytest.mark.parametrize("name", ["", "a,b", "has space", "-dash", "x" * 65, "é"])
def test_names_must_be_simple(name: str, tmp_path: Path) -> None:
    with pytest.raises(rds.BadRequest, match="not a valid connection name"):
        save_connection(name, "http://h:1", "t", tmp_path / "c.json")
    with pytest.raises(rds.BadRequest):
        check_connection_name(name)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("not json", "cannot read"),
        ("[1, 2]", "not a JSON object"),
        ('{"a": {"url": "http://h:1"}}', "entry 'a' needs a 'url' and a 'token'"),
    ],
)
def test_a_malformed_file_says_how_to_fix_it(content: str, says: str, tmp_path: Path) -> None:
    path = tmp_path / "connections.json"
    path.write_text(content)
    with pytest.raises(rds.BadRequest, match=says) as info:
        load_connections(path)
    assert "delete it" in info.value.message
