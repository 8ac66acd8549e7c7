"""``rds jobs list|show|approve|deny``: review scientists' code jobs.

``rds jobs approve JOB`` on a job pending review approves its code and runs it on the private
data right away, in this process (in the sandbox), for the fixed time every private run takes
(``job_start_seconds + job_wall_seconds + 1`` s, see ``rds_kernel.node.jobs.steps``); on a job
in output review it releases the output. ``rds jobs show JOB`` prints everything the owner
needs to decide: the scientist's message, the source, the mock and private outputs, the checks
and the log.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import click

from rds_kernel.cli.common import job_service, rds_command
from rds_kernel.cli.output import (
    check_lines,
    format_option,
    job_lines,
    job_lines_full,
    say,
    show,
)

__all__ = ["jobs"]

JOB = click.argument("job", help="The job's id (see `rds jobs list`).")


@click.group()
def jobs() -> None:
    """Review, approve and deny scientists' code jobs."""


@jobs.command("list")
@click.option(
    "--status", help="Only jobs in this status, e.g. pending_review (default: every status)."
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many."
)
@format_option
def list_(status: str | None, limit: int, fmt: str) -> int:
    """List code jobs, newest first; a DP job shows its duration instead of progress."""
    with job_service() as service:
        found = [
            j.owner() for j in service.store.list(statuses=[status] if status else [], limit=limit)
        ]
    show(found, fmt, job_lines)
    return 0


@jobs.command("show")
@JOB
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write the job's private output to this file (default: do not).",
)
@format_option
def show_(job: str, output: Path | None, fmt: str) -> int:
    """Show a job: message, source, mock and private outputs, checks, the runs' log."""
    with job_service() as service:
        found = service.store.get(job).owner()
    if output:
        _save_output(found, output)
    show(found, fmt, job_lines_full)
    if fmt == "text":
        say(_next_step(found))
    return 0


@jobs.command()
@JOB
@click.option("--note", help="A note for the scientist and the audit log (default: none).")
def approve(job: str, note: str | None) -> int:
    """Approve a job's code (it runs on the private data now) or its output (it is released).

    Exits with 1 when the job ends neither released nor in output review.
    """
    from rds_kernel.node.jobs.steps import private_seconds

    with job_service() as service:
        before = service.store.get(job)
        if before.status == "pending_review":
            say(
                f"approved job {before.id}; running it on the private data in the sandbox "
                f"(this takes {private_seconds(service.settings):g} s, whatever the code does) ..."
            )
        after = service.approve(job, actor="cli", note=note).owner()
    if after["status"] == "released":
        say(f"released the output of job {after['id']} to {after['user']}")
    else:
        for line in check_lines(after):
            say(line)
        say(_next_step(after))
    return 0 if after["status"] in ("released", "output_review") else 1


@jobs.command()
@JOB
@click.option("--reason", help="Why, for the scientist and the audit log (default: none).")
def deny(job: str, reason: str | None) -> int:
    """Deny a job, at either review: nothing of it is ever released."""
    with job_service() as service:
        denied = service.deny(job, actor="cli", reason=reason)
    say(f"denied job {denied.id}; nothing of it will be released")
    return 0


def _save_output(job: dict[str, Any], path: Path) -> None:
    output = job["output"]
    if output is None:
        say("this job has no private output yet")
    elif output.get("type") == "bytes":
        path.write_bytes(base64.b64decode(output["base64"]))
        say(f"wrote the output's bytes to {path}")
    else:
        path.write_text(json.dumps(output, indent=2))
        say(f"wrote the output to {path}")


def _next_step(job: dict[str, Any]) -> str:
    approve, deny = (
        rds_command("jobs", "approve", job["id"]),
        rds_command("jobs", "deny", job["id"]),
    )
    return {
        "pending_review": f"next: read the code, then `{approve}` to run it on the private data, "
        f"or `{deny} --reason ...`",
        "output_review": f"next: check the output, then `{approve}` to release it, "
        f"or `{deny} --reason ...`",
    }.get(job["status"], f"status: {job['status']}")
