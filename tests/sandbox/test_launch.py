"""When code jobs may run at all: bubblewrap present and working, or an explicit weaker mode."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from rds_kernel.errors import PermissionDenied
from rds_kernel.sandbox import SandboxConfig, check_available, runtime_paths
from rds_kernel.sandbox.launch import bwrap_argv, runtime, scratch_dir
from tests.sandbox.helpers import TEST_UID, run


def test_without_bwrap_code_jobs_are_refused_saying_how_to_fix_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No silent fallback: the owner must install bubblewrap or opt into rlimits-only."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PermissionDenied) as info:
        check_available(SandboxConfig(mode="bwrap"))
    assert "apt-get install bubblewrap" in info.value.message
    assert "rlimits-only" in info.value.message
    assert info.value.detail == {"reason": "sandbox_unavailable"}


def test_sandbox_off_refuses_code_jobs() -> None:
    with pytest.raises(PermissionDenied, match="does not run code jobs"):
        check_available(SandboxConfig(mode="off"))


def test_a_node_directory_inside_the_environment_is_refused() -> None:
    """The sandbox sees the Python environment, so the node directory must not be in it."""
    inside = Path(sys.prefix) / "node"
    with pytest.raises(PermissionDenied, match="move the node directory"):
        bwrap_argv(SandboxConfig(hidden=(inside,)), 0, ["python"], {})


def test_the_sandbox_sees_only_the_runtime() -> None:
    """What is mounted: the interpreter, its environment, system libraries; never /etc or /home."""
    paths = runtime_paths()
    assert any(sys.prefix == p or sys.prefix.startswith(p + "/") for p in paths)
    for forbidden in ("/etc", "/home", "/root", "/var", "/tmp", "/", "/usr", "/usr/bin"):
        assert forbidden not in paths
    argv = bwrap_argv(SandboxConfig(), 9, ["python"], {"HOME": "/tmp"})
    assert "--unshare-net" in argv and "--clearenv" in argv and "--die-with-parent" in argv
    assert argv[argv.index("--remount-ro") + 1] == "/"


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no system python3 here")
def test_a_system_python_brings_its_libraries_not_usr_bin(monkeypatch: pytest.MonkeyPatch) -> None:
    """A venv on /usr/bin/python3: /usr/lib and the interpreter file, never /usr or /usr/bin."""
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    monkeypatch.setattr(sys, "base_exec_prefix", "/usr")
    needed = runtime("/usr/bin/python3")
    assert "/usr" not in needed.dirs and "/usr/bin" not in needed.dirs
    assert "/usr/lib" in needed.dirs
    real = os.path.realpath("/usr/bin/python3")
    assert needed.files == (real,)
    assert all(link.startswith("/usr/bin/") for link, _target in needed.links)


def test_a_checkout_under_tmp_moves_the_scratch_directory() -> None:
    """Each run's tmpfs must not hide the environment: /tmp unless the venv is in it."""
    assert scratch_dir(["/root/.pyenv/versions/3.11.7", "/usr/lib"]) == "/tmp"
    assert scratch_dir(["/tmp/clone/.venv", "/usr/lib"]) == "/var/tmp"


@pytest.mark.skipif(os.geteuid() != 0, reason="rlimits-only mode needs the node to run as root")
def test_rlimits_only_refuses_a_node_directory_others_can_read(tmp_path: Path) -> None:
    """Without bubblewrap the code sees the host's files as its uid: the node must be 0700."""
    node_dir = tmp_path / "node"
    node_dir.mkdir(mode=0o755)
    node_dir.chmod(0o755)
    config = SandboxConfig(mode="rlimits-only", hidden=(node_dir,))
    with pytest.raises(PermissionDenied, match="chmod 700"):
        check_available(config)
    node_dir.chmod(0o700)
    check_available(config)


@pytest.mark.skipif(os.geteuid() != 0, reason="rlimits-only mode needs the node to run as root")
def test_rlimits_only_runs_code_as_the_sandbox_uid_with_its_limits(tmp_path: Path) -> None:
    """The weaker mode still runs each run as another uid, with rlimits and a wall clock."""
    node_dir = tmp_path / "node"
    node_dir.mkdir(mode=0o700)
    (node_dir / "node.db").write_text("secret")
    config = SandboxConfig(mode="rlimits-only", uid=TEST_UID, gid=TEST_UID, hidden=(node_dir,))
    source = (
        "def f(df):\n    import os\n    try:\n"
        f"        open({str(node_dir / 'node.db')!r}).read()\n        return -1.0\n"
        "    except OSError:\n        return float(os.getuid())\n"
    )
    [r] = run(config, source)
    assert r.ok, (r.describe(), r.log)
    assert json.loads(r.output or b"") == float(TEST_UID)
