"""Fixtures for code-job tests: a node with the demo patients whose jobs run in the real sandbox.

The node's scientist code runs as the test uid (``TEST_UID``), and like the sandbox tests each
test must leave no process of it behind. ``database_url`` (SQLite, and PostgreSQL where the
ledger is touched) is the store suite's fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rds_kernel.node.jobs.service import JobService
from rds_kernel.node.settings import write_settings
from rds_kernel.sandbox import SandboxConfig
from tests.node.conftest import database_url, postgres_url
from tests.node.nodes import TestNode, build_node
from tests.sandbox.conftest import nothing_left_behind
from tests.sandbox.helpers import TEST_UID, sandbox_or_skip

__all__ = ["database_url", "nothing_left_behind", "postgres_url"]

# DP jobs take their timetable: 1 s to start (the sandbox starts in about 0.35 s here), then
# one slot of run_seconds + 0.4 s per partition; dp() asks for short runs to keep tests quick.
# A reviewed job's private run always takes job_start_seconds + job_wall_seconds + 1 = 4 s.
JOB_SETTINGS = {
    "sandbox_uid": TEST_UID,
    "job_cpu_seconds": 5,
    "job_wall_seconds": 2,
    "job_start_seconds": 1,
}
RUN_SECONDS = 0.25


@pytest.fixture(scope="session")
def sandbox() -> SandboxConfig:
    return sandbox_or_skip(SandboxConfig(uid=TEST_UID, gid=TEST_UID))


def job_node(directory: Path, database_url: str | None = None, **settings: Any) -> TestNode:
    """``build_node`` (owner, alice with ε=2, bob with ε=1, 3000 patients) with job settings."""
    node = build_node(directory, database_url)
    extra = {"database_url": database_url} if database_url else {}
    # in node.toml too, so that `rds jobs ...` in the same directory uses them
    node.service.settings = write_settings(
        directory, name="test_node", **extra, **{**JOB_SETTINGS, **settings}
    )
    return node


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


def dp(source: str, entry: str = "f", request_id: str = "r1", **params: Any) -> dict[str, Any]:
    """The body of a DP job submission."""
    return {
        "request_id": request_id,
        "kind": "dp",
        "dataset": "patients",
        "source": source,
        "entry": entry,
        "params": {
            "bounds": [0, 1],
            "epsilon": 1.0,
            "partitions": 5,
            "run_seconds": RUN_SECONDS,
            **params,
        },
    }


def reviewed(
    source: str, entry: str = "f", request_id: str = "r1", message: str = "why"
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "kind": "reviewed",
        "dataset": "patients",
        "source": source,
        "entry": entry,
        "message": message,
    }
