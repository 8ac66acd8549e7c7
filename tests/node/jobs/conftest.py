"""Fixtures for code-job tests: a node with the demo patients whose jobs run in the real sandbox.

The node's scientist code runs as the test uid (``TEST_UID``), and like the sandbox tests each
test must leave no process of it behind. ``database_url`` (SQLite, and PostgreSQL where the
ledger is touched) is the suite's plugin fixture; the builders are in ``helpers.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rds_kernel.node.jobs.service import JobService
from rds_kernel.sandbox import SandboxConfig
from tests.node.jobs.helpers import job_node
from tests.node.nodes import TestNode
from tests.sandbox.helpers import TEST_UID, sandbox_or_skip


@pytest.fixture(autouse=True)
def _no_leftovers(nothing_left_behind: None) -> None:
    """Every job test leaves no process of the sandbox uid behind."""


@pytest.fixture(scope="session")
def sandbox() -> SandboxConfig:
    return sandbox_or_skip(SandboxConfig(uid=TEST_UID, gid=TEST_UID))


@pytest.fixture
def node(tmp_path: Path, sandbox: SandboxConfig) -> Iterator[TestNode]:
    n = job_node(tmp_path / "node")
    yield n
    n.service.close()


@pytest.fixture
def jobs(node: TestNode) -> Iterator[JobService]:
    """The node's job service, running each job to its next stop in the calling thread."""
    service = JobService(node.service, background=False)
    yield service
    service.close()
