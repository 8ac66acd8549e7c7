"""When code jobs may run at all: bubblewrap present and working, or an explicit weaker mode."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rds_kernel.errors import PermissionDenied
from rds_kernel.sandbox import SandboxConfig, check_available, launch, runtime_paths
from rds_kernel.sandbox.launch import Runtime, bwrap_argv, runtime, scratch_dir
from tests.sandbox.helpers import TEST_UID, run, waive_unreadable_environment


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
def test_rlimits_only_refuses_a_node_directory_others_can_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without bubblewrap the code sees the host's files as its uid: the node must be 0700."""
    node_dir = tmp_path / "node"
    node_dir.mkdir(mode=0o755)
    node_dir.chmod(0o755)
    config = SandboxConfig(mode="rlimits-only", hidden=(node_dir,))
    waive_unreadable_environment(monkeypatch, config)
    with pytest.raises(PermissionDenied, match="chmod 700"):
        check_available(config)
    node_dir.chmod(0o700)
    check_available(config)


@pytest.mark.skipif(os.geteuid() != 0, reason="rlimits-only mode needs the node to run as root")
def test_rlimits_only_runs_code_as_the_sandbox_uid_with_its_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The weaker mode still runs each run as another uid, with rlimits and a wall clock."""
    node_dir = tmp_path / "node"
    node_dir.mkdir(mode=0o700)
    (node_dir / "node.db").write_text("secret")
    config = SandboxConfig(mode="rlimits-only", uid=TEST_UID, gid=TEST_UID, hidden=(node_dir,))
    waive_unreadable_environment(monkeypatch, config)
    source = (
        "def f(df):\n    import os\n    try:\n"
        f"        open({str(node_dir / 'node.db')!r}).read()\n        return -1.0\n"
        "    except OSError:\n        return float(os.getuid())\n"
    )
    [r] = run(config, source)
    assert r.ok, (r.describe(), r.log)
    assert json.loads(r.output or b"") == float(TEST_UID)


@pytest.fixture
def environment() -> Iterator[Path]:
    """A stand-in Python environment, ``/tmp/rds-env-*/home/env/lib/python3/site-packages``,
    whose directories others can enter and read except ``home`` (0700, like ``/root``).

    Made with ``tempfile`` in ``/tmp`` (0755 here) rather than pytest's ``tmp_path``, whose
    own parent directories are 0700 and would be reported first.
    """
    top = Path(tempfile.mkdtemp(prefix="rds-env-", dir="/tmp"))
    top.chmod(0o755)
    tree = top / "home" / "env" / "lib" / "python3"
    (tree / "site-packages" / "pkg").mkdir(parents=True)
    (tree / "site-packages" / "pkg" / "__init__.py").write_text("")
    for d in [tree.parents[2], *reversed(tree.parents[:2]), tree, *tree.rglob("*")]:
        d.chmod(0o755 if d.is_dir() else 0o644)
    (top / "home").chmod(0o700)
    try:
        yield tree
    finally:
        (top / "home").chmod(0o755)
        shutil.rmtree(top)


@pytest.mark.skipif(os.geteuid() != 0, reason="code runs as another uid only under root")
def test_an_environment_the_sandbox_uid_cannot_enter_is_refused(
    environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout (and its venv) under a directory others cannot enter, like /root (0700):
    in rlimits-only mode scientist code, running as the sandbox uid, could not import from it
    (`make test` failed: no module pyarrow.pandas_compat), and nothing said why. Now the node
    refuses code jobs, naming the directory and the fix; after the fix it accepts them."""
    monkeypatch.setattr(launch, "python_trees", lambda: [str(environment)])
    config = SandboxConfig(mode="rlimits-only", uid=TEST_UID, gid=TEST_UID)
    home = environment.parents[2]
    with pytest.raises(PermissionDenied) as info:
        check_available(config)
    message = info.value.message
    assert f"uid {TEST_UID}" in message and f"cannot enter {home}" in message
    assert f"`chmod o+x {home}`" in message and "install the environment" in message
    assert info.value.detail == {"reason": "sandbox_unavailable"}
    home.chmod(0o711)  # the fix it gave: others may pass through, not list
    check_available(config)


@pytest.mark.skipif(os.geteuid() != 0, reason="code runs as another uid only under root")
def test_under_bubblewrap_the_environment_itself_must_be_readable(
    environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bubblewrap binds the environment and recreates the directories above it (so the 0700
    home is no obstacle), but a directory or module inside it that the sandbox uid cannot
    read (a venv made under umask 077) breaks imports: refused, with `chmod -R o+rX`."""
    env = environment.parents[1]
    monkeypatch.setattr(launch, "runtime", lambda _python: Runtime((str(env),), (), ()))
    config = SandboxConfig(mode="bwrap", uid=TEST_UID, gid=TEST_UID)
    assert launch.environment_problem(config, [str(environment)]) is None
    package = environment / "site-packages" / "pkg"
    for path, mode in ((package, 0o700), (package / "__init__.py", 0o600)):
        path.chmod(mode)
        problem = launch.environment_problem(config, [str(environment)])
        assert problem is not None and f"cannot read {path}" in problem
        assert f"`chmod -R o+rX {environment}`" in problem
        path.chmod(0o755 if path.is_dir() else 0o644)
    assert launch.environment_problem(config, [str(environment)]) is None


def test_a_node_that_is_not_root_runs_code_as_itself_and_needs_no_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without root, runs keep the node's uid, which reads the environment it runs from."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    config = SandboxConfig(mode="bwrap", uid=TEST_UID, gid=TEST_UID)
    assert launch.environment_problem(config, ["/root/unreadable/lib/python3"]) is None
