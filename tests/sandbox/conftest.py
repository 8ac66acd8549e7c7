"""Every sandbox test uses the real sandbox, and leaves no process behind."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from rds_kernel.sandbox import SandboxConfig
from tests.sandbox.helpers import TEST_UID, processes_of, sandbox_or_skip, zombie_children


@pytest.fixture(scope="session")
def config() -> SandboxConfig:
    """The node's default sandbox (bubblewrap), running scientist code as ``TEST_UID``."""
    return sandbox_or_skip(SandboxConfig(uid=TEST_UID, gid=TEST_UID))


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """After each test: no process of the sandbox uid, no unreaped child of this process."""
    yield
    deadline = time.monotonic() + 5.0
    while True:
        left = processes_of(TEST_UID) if os.geteuid() == 0 else []
        zombies = zombie_children()
        if not left and not zombies:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"left behind: sandbox processes {left}, zombie children {zombies}")
        time.sleep(0.05)
