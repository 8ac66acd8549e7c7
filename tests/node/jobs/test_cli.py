"""The owner's commands: `rds jobs list|show|approve|deny`, `rds budget requests|grant|deny`."""

from __future__ import annotations

import json

import pytest

from rds_kernel.cli.main import main
from rds_kernel.node.jobs.service import JobService
from tests.node.jobs.helpers import reviewed
from tests.node.nodes import TestNode

COUNTS = "def f(df):\n    print('hello owner')\n    return df.groupby('sex').size()\n"


def rds(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_review_a_job_from_the_command_line(
    node: TestNode, jobs: JobService, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = node.service.store.get_user("alice")
    job = jobs.submit(alice, reviewed(COUNTS, message="counts per sex"))
    d = node.directory

    code, out, _err = rds(capsys, "--dir", d, "jobs", "list", "--status", "pending_review")
    assert code == 0 and job.id in out and "alice" in out and "counts per sex" in out
    code, out, _err = rds(capsys, "--dir", d, "jobs", "list", "--format", "json")
    assert [j["id"] for j in json.loads(out)] == [job.id]

    code, out, err = rds(capsys, "--dir", d, "jobs", "show", job.id)
    assert code == 0
    assert "def f(df):" in out and "mock run: table" in out and "hello owner" in out
    assert f"`rds --dir {d} jobs approve {job.id}` to run it" in err

    code, _out, err = rds(capsys, "--dir", d, "jobs", "approve", job.id)
    assert code == 0, err
    assert "running it on the private data" in err and "check min_cell_count: ok" in err
    assert "this takes 4 s, whatever the code does" in err  # 1 + 2 + 1: see test_timing_attacks

    code, out, _err = rds(capsys, "--dir", d, "jobs", "show", job.id, "--format", "json")
    shown = json.loads(out)
    assert shown["status"] == "output_review" and shown["output"]["type"] == "table"

    code, _out, err = rds(capsys, "--dir", d, "jobs", "approve", job.id, "--note", "fine")
    assert code == 0 and f"released the output of job {job.id} to alice" in err
    assert jobs.store.get(job.id).public()["result"] is not None


def test_deny_from_the_command_line_and_errors_are_one_line(
    node: TestNode, jobs: JobService, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = node.service.store.get_user("alice")
    job = jobs.submit(alice, reviewed(COUNTS))
    d = node.directory
    code, _out, err = rds(capsys, "--dir", d, "jobs", "deny", job.id, "--reason", "no")
    assert code == 0 and "denied" in err
    code, _out, err = rds(capsys, "--dir", d, "jobs", "approve", job.id)
    assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    code, _out, err = rds(capsys, "--dir", d, "jobs", "show", "0123456789abcdef")
    assert code == 1 and "no job" in err


def test_budget_requests_from_the_command_line(
    node: TestNode, jobs: JobService, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = node.service.store.get_user("alice")
    first = jobs.requests.ask(alice, 1.0, 0.0, "a second model")
    second = jobs.requests.ask(alice, 9.0, 0.0, "everything")
    d = node.directory
    code, out, _err = rds(capsys, "--dir", d, "budget", "requests", "--status", "pending")
    assert code == 0 and "a second model" in out and "everything" in out
    code, out, _err = rds(capsys, "--dir", d, "budget", "requests", "--format", "json")
    assert {r["reason"] for r in json.loads(out)} == {"a second model", "everything"}
    code, _out, err = rds(capsys, "--dir", d, "budget", "grant", first["id"])
    assert code == 0 and "alice now has ε=3" in err
    code, _out, err = rds(capsys, "--dir", d, "budget", "deny", second["id"], "--note", "no")
    assert code == 0 and "denied request" in err
    code, _out, err = rds(capsys, "--dir", d, "budget", "grant", second["id"])
    assert code == 1 and "not pending" in err
    assert node.service.store.budget("alice").epsilon_total == 3.0
