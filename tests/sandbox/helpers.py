"""Running code in the real sandbox from tests, and checking that nothing of it is left behind."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc
import pytest

from rds_kernel.errors import PermissionDenied
from rds_kernel.sandbox import Limits, RunResult, SandboxConfig, Session, check_available, launch

# A uid nothing else on the machine uses, so a process left running as it is one of ours.
TEST_UID = 61234
# Small limits keep the attack suite quick; a test that needs other limits says so.
QUICK = Limits(cpu_seconds=2, wall_seconds=3.0, memory_bytes=1536 * 1024 * 1024)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"true", "1", "yes"}


def sandbox_or_skip(config: SandboxConfig) -> SandboxConfig:
    """``config`` if sandboxes can start here; otherwise skip (fail in CI), saying why."""
    try:
        check_available(config)
    except PermissionDenied as exc:
        if in_ci():
            pytest.fail(f"CI needs a working sandbox: {exc.message}")
        pytest.skip(f"no sandbox here: {exc.message}")
    return config


def arrow(columns: dict[str, list[object]]) -> bytes:
    table = pa.table(columns)
    buffer = io.BytesIO()
    with pa.ipc.new_stream(buffer, table.schema) as writer:
        writer.write_table(table)
    return buffer.getvalue()


def run(
    config: SandboxConfig,
    source: str,
    *,
    inputs: list[bytes] | None = None,
    limits: Limits = QUICK,
    mode: str = "dp",
    parallel: int = 2,
) -> list[RunResult]:
    """Run ``f`` from ``source`` once per input (one input of three rows by default)."""
    inputs = inputs if inputs is not None else [arrow({"x": [1.0, 2.0, 3.0]})]
    with Session(config, source, entry="f", mode=mode, limits=limits) as session:  # type: ignore[arg-type]
        return session.run_all(inputs, parallel=parallel)


def processes_of(uid: int) -> list[int]:
    """Live processes running as ``uid`` (zombies included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) == uid:
                found.append(int(entry.name))
    return found


def zombie_children() -> list[int]:
    """Children of this process that exited and were never reaped."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            found.append(int(entry.name))
    return found


def waive_unreadable_environment(monkeypatch: pytest.MonkeyPatch, config: SandboxConfig) -> None:
    """Let ``config`` start even where its uid cannot read the Python environment.

    For rlimits-only tests, whose sandbox sees the host's directories as they are: from a
    checkout (or a pyenv) under a directory others cannot enter, such as ``/root`` (0700), the
    node refuses such a sandbox (``launch.environment_problem``, tested on purpose-made
    directories in test_launch). These tests' functions import nothing the template has not
    imported as root before it dropped to the uid (numpy, pandas, pyarrow, the input
    conversion and the output encoding), so their runs never read the environment and work
    from any checkout; only the check is waived, the sandbox is the real one.
    """
    if launch.environment_problem(config) is not None:
        monkeypatch.setattr(launch, "_check_readable", lambda _config: None)
