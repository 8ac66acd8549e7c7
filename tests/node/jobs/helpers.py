"""Building blocks of the code-job tests: a job node, and the bodies of job submissions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rds_kernel.node.settings import write_settings
from tests.node.nodes import TestNode, build_node
from tests.sandbox.helpers import TEST_UID

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


def job_node(directory: Path, database_url: str | None = None, **settings: Any) -> TestNode:
    """``build_node`` (owner, alice with ε=2, bob with ε=1, 3000 patients) with job settings."""
    node = build_node(directory, database_url)
    extra = {"database_url": database_url} if database_url else {}
    # in node.toml too, so that `rds jobs ...` in the same directory uses them
    node.service.settings = write_settings(
        directory, name="test_node", **extra, **{**JOB_SETTINGS, **settings}
    )
    return node


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
