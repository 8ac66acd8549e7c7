"""Node settings are declared data: documented, validated, and round-tripped through node.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from rds_kernel.errors import BadRequest
from rds_kernel.node.settings import SETTINGS, Setting, load_settings, write_settings

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_documented(setting: Setting) -> None:
    name = setting.name
    assert setting.help, f"{name} has no help text"
    assert f"| `{name}` |" in README.read_text(), f"README's settings table lacks {name}"


def test_round_trip_and_relative_sqlite_path(tmp_path: Path) -> None:
    s = write_settings(tmp_path, name="hospital_a", port=9000)
    again = load_settings(tmp_path)
    assert again == s
    assert again.port == 9000
    assert again.resolved_database_url == f"sqlite:///{(tmp_path / 'node.db').resolve()}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prot = 1\n", "unknown setting 'prot'"),
        ("port = 70000\n", "TCP port"),
        ('port = "80"\n', "must be a int"),
        ('name = "bad name!"\n', "letters, digits"),
        ("mock_rows = 0\n", "positive"),
        ("name = [\n", "not valid TOML"),
    ],
)
def test_bad_settings_name_the_file_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "node.toml").write_text(text)
    with pytest.raises(BadRequest, match=message) as info:
        load_settings(tmp_path)
    assert "node.toml" in str(info.value)


def test_a_directory_without_node_toml_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="rds node init"):
        load_settings(tmp_path)
