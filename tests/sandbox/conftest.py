"""Every sandbox test uses the real sandbox, and leaves no process behind."""

from __future__ import annotations

import pytest

from rds_kernel.sandbox import SandboxConfig
from tests.sandbox.helpers import TEST_UID, sandbox_or_skip


@pytest.fixture(scope="session")
def config() -> SandboxConfig:
    """The node's default sandbox (bubblewrap), running scientist code as ``TEST_UID``."""
    return sandbox_or_skip(SandboxConfig(uid=TEST_UID, gid=TEST_UID))


@pytest.fixture(autouse=True)
def _no_leftovers(nothing_left_behind: None) -> None:
    """Every sandbox test leaves no process behind (the plugin's check, on every test)."""
