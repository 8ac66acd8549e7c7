"""Node settings are one declaration: documented, validated, read from node.toml with
RDS_NODE_* environment overrides, and written back with their help as comments."""

from __future__ import annotations

import logging
import os
import textwrap
import tomllib
from pathlib import Path

import pytest
import tomlkit

from rds_kernel.errors import ConfigError
from rds_kernel.node.settings import (
    SETTINGS,
    NodeSettings,
    load_settings,
    setting_sources,
    write_settings,
)

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(autouse=True)
def _no_node_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shell running the tests must not change the settings under test."""
    for name in list(os.environ):
        if name.upper().startswith("RDS_NODE_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("name", SETTINGS)
def test_every_setting_is_documented(name: str) -> None:
    """The README's settings table has a row for it, with its default."""
    field = SETTINGS[name]
    assert field.description, f"{name} has no help text"
    row = f"| `{name}` | `{field.default}`"
    assert row in README.read_text(), f"README's settings table lacks {row} ..."


def test_the_settings_are_the_model_fields_but_the_directory() -> None:
    assert list(SETTINGS) == [n for n in NodeSettings.model_fields if n != "directory"]
    assert len(SETTINGS) == 25


def test_round_trip_and_relative_sqlite_path(tmp_path: Path) -> None:
    s = write_settings(tmp_path, name="hospital_a", port=9000)
    again = load_settings(tmp_path)
    assert again == s
    assert again.port == 9000
    assert again.directory == tmp_path.resolve()
    assert again.resolved_database_url == f"sqlite:///{(tmp_path / 'node.db').resolve()}"
    assert (tmp_path / "node.toml").stat().st_mode & 0o777 == 0o600


def test_node_toml_has_every_setting_under_its_help(tmp_path: Path) -> None:
    write_settings(tmp_path, name="hospital_a", release_padding=2)
    text = (tmp_path / "node.toml").read_text()
    assert tomllib.loads(text) == {
        **{name: field.default for name, field in SETTINGS.items()},
        "name": "hospital_a",
        "release_padding": 2.0,
    }
    doc = tomlkit.parse(text)
    assert list(doc) == list(SETTINGS)
    lines = text.splitlines()
    for name, field in SETTINGS.items():
        (at,) = [i for i, line in enumerate(lines) if line.startswith(f"{name} = ")]
        help_lines = textwrap.wrap(field.description or "", width=98)
        assert lines[at - len(help_lines) : at] == [f"# {h}" for h in help_lines], name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prot = 1\n", "unknown setting 'prot'; known settings are ['database_url', "),
        ("directory = '/'\n", "unknown setting 'directory'"),
        ("port = 70000\n", "port must be less than or equal to 65535"),
        ('port = "80"\n', "port must be a valid integer"),
        ("port = true\n", "port must be a valid integer"),
        ("mock_rows = 1.5\n", "mock_rows must be a valid integer"),
        ('name = "bad name!"\n', "name must be 1-64 letters, digits"),
        ("mock_rows = 0\n", "mock_rows must be greater than 0"),
        ("job_stale_seconds = 1\n", "job_stale_seconds must be greater than or equal to 2"),
        ("release_padding = nan\n", "release_padding must be a finite number"),
        ('sandbox = "docker"\n', "sandbox must be 'bwrap', 'rlimits-only' or 'off'"),
        ("job_wall_seconds = 600\n", "job_start_seconds + job_wall_seconds + 1 = 603 s"),
        ("name = [\n", "not valid TOML"),
    ],
)
def test_bad_settings_name_the_file_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "node.toml").write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("+", r"\+")) as info:
        load_settings(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'node.toml'}: ")
    assert info.value.code == "config_error" and info.value.status == 400


def test_defaults_fill_what_node_toml_leaves_out(tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_text("release_padding = 2\n")
    s = load_settings(tmp_path)
    assert s.release_padding == 2.0 and isinstance(s.release_padding, float)
    assert s.port == SETTINGS["port"].default


def test_a_directory_without_node_toml_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"run `rds --dir {tmp_path} node init`"):
        load_settings(tmp_path)


def test_removed_settings_load_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "node.toml").write_text("job_parallel = 2\nport = 9000\n")
    with caplog.at_level(logging.WARNING, logger="rds_kernel.node"):
        s = load_settings(tmp_path)
    assert s.port == 9000
    assert "job_parallel is ignored" in caplog.text


# ---------------------------------------------------------------- precedence


def test_the_environment_wins_over_node_toml_and_overrides_win_over_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_settings(tmp_path, port=9000, mock_rows=10)
    monkeypatch.setenv("RDS_NODE_PORT", "9100")
    monkeypatch.setenv("rds_node_release_padding", "2.5")  # any case
    s = load_settings(tmp_path)
    assert (s.port, s.release_padding, s.mock_rows) == (9100, 2.5, 10)
    assert load_settings(tmp_path, port=9200).port == 9200
    sources = setting_sources(tmp_path)
    assert sources["port"] == "$RDS_NODE_PORT"
    assert sources["release_padding"] == "$rds_node_release_padding"
    assert sources["mock_rows"] == str(tmp_path / "node.toml")
    # write_settings writes what it is given, not the environment, and returns what loads
    assert write_settings(tmp_path, port=9300).port == 9100
    assert tomllib.loads((tmp_path / "node.toml").read_text())["port"] == 9300


def test_a_bad_environment_variable_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_settings(tmp_path)
    monkeypatch.setenv("RDS_NODE_PORT", "eighty")
    with pytest.raises(ConfigError, match=r"^\$RDS_NODE_PORT \(overrides .*node.toml\): port must"):
        load_settings(tmp_path)
    monkeypatch.setenv("RDS_NODE_PORT", "80")
    monkeypatch.setenv("RDS_NODE_JOB_WALL_SECONDS", "1000")
    with pytest.raises(ConfigError, match=r"node\.toml with RDS_NODE_JOB_WALL_SECONDS"):
        load_settings(tmp_path)


def test_other_rds_node_variables_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's RDS_NODE_DIR and a scientist's RDS_NODE_URL/RDS_NODE_TOKEN are no settings."""
    write_settings(tmp_path, name="h")
    for name in ("RDS_NODE_DIR", "RDS_NODE_URL", "RDS_NODE_TOKEN", "RDS_NODE_DIRECTORY"):
        monkeypatch.setenv(name, "/elsewhere")
    s = load_settings(tmp_path)
    assert s.name == "h" and s.directory == tmp_path.resolve()


def test_write_settings_refuses_what_node_toml_would(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        write_settings(tmp_path, prot=1)
    with pytest.raises(ConfigError, match="port must be a valid integer"):
        write_settings(tmp_path, port="80")
    with pytest.raises(ConfigError, match="job_max_seconds"):
        write_settings(tmp_path, job_start_seconds=2, job_wall_seconds=30, job_max_seconds=32)
    assert not (tmp_path / "node.toml").exists()
