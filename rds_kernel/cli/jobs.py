"""The owner's ``rds jobs`` commands and ``rds budget requests|grant|deny``.

``rds jobs approve DIR JOB`` on a job pending review approves its code and runs it on the
private data right away, in this process (in the sandbox), for the fixed time every private
run takes (``job_start_seconds + job_wall_seconds + 1`` s, see ``jobs_steps``); on a job in
output review it releases the output. ``rds jobs show DIR JOB`` prints everything the owner
needs to decide: the scientist's message, the source, the mock and private outputs, the checks
and the log.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["register"]

Command = Callable[[Any, str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def _say(message: str) -> None:
    print(message, file=sys.stderr)


@contextmanager
def _jobs(directory: str) -> Iterator[Any]:
    """The job service of ``directory`` (no background workers), closed when done."""
    from rds_kernel.node.jobs.service import JobService
    from rds_kernel.node.service import NodeService
    from rds_kernel.node.settings import load_settings

    jobs = JobService(NodeService(load_settings(directory)), background=False)
    try:
        yield jobs
    finally:
        jobs.close()
        jobs.node.close()


def cmd_jobs_list(a: argparse.Namespace) -> int:
    with _jobs(a.dir) as jobs:
        found = jobs.store.list(statuses=[a.status] if a.status else [], limit=a.limit)
    for job in found:
        if a.json:
            print(json.dumps(job.owner()))
            continue
        done = f"{job.progress_done}/{job.progress_total}"
        if job.kind == "dp":  # no progress: its runs follow a timetable (see `rds jobs show`)
            seconds = (job.params.get("timetable") or {}).get("seconds")
            done = f"{seconds:.0f} s" if isinstance(seconds, int | float) else "-"
        print(
            f"{job.id}  {job.created_at:%Y-%m-%d %H:%M}  {job.user:<12} {job.kind:<8} "
            f"{job.status:<15} {done:>9}  {job.dataset}  {job.message[:60]!r}"
        )
    return 0


def cmd_jobs_show(a: argparse.Namespace) -> int:
    with _jobs(a.dir) as jobs:
        job = jobs.store.get(a.job).owner()
    if a.output:
        _save_output(job, Path(a.output))
    if a.json:
        print(json.dumps(job, indent=2))
        return 0
    print(f"job {job['id']} by {job['user']} on {job['dataset']}: {job['kind']}, {job['status']}")
    print(f"submitted {job['created_at']}, updated {job['updated_at']}")
    if job["message"]:
        print(f"\nmessage:\n  {job['message']}")
    if job["params"]:
        print(f"\nparameters: {json.dumps(job['params'])}")
    if job["kind"] == "dp" and job.get("finishes_at"):
        print(f"runs on its timetable until {job['finishes_at']}")
    print(f"\nsource (entry {job['entry']!r}):\n{job['source'].rstrip()}")
    if job["mock"] is not None:
        print(f"\nmock run: {_brief(job['mock'].get('output')) or job['mock'].get('error')}")
    if job["output"] is not None:
        print(f"\noutput: {_brief(job['output'])}")
    for check in job["checks"] or []:
        print(f"check {check['check']}: {'ok' if check['ok'] else 'FAILED'} — {check['detail']}")
    if job["review_note"]:
        print(f"\nreview note ({job['reviewer']}): {job['review_note']}")
    if job["error"]:
        print(f"\nerror shown to the scientist: {job['error']}")
    if job["log"]:
        print(f"\nlog (owner only):\n{job['log']}")
    _say(_next_step(job, a.dir))
    return 0


def _brief(output: Any) -> str:
    if not isinstance(output, dict):
        return "" if output is None else json.dumps(output)[:2000]
    if output.get("type") == "table":
        head = ["\t".join(output["columns"])]
        head += ["\t".join(map(str, row)) for row in output["rows"][:20]]
        more = len(output["rows"]) - 20
        return "table\n" + "\n".join(head) + (f"\n... {more} more rows" if more > 0 else "")
    if output.get("type") == "bytes":
        size = len(base64.b64decode(output["base64"]))
        return f"{size} bytes of binary data (save them with --output FILE to look at them)"
    return json.dumps(output.get("value", output))[:2000]


def _save_output(job: dict[str, Any], path: Path) -> None:
    output = job["output"]
    if output is None:
        _say("this job has no private output yet")
    elif output.get("type") == "bytes":
        path.write_bytes(base64.b64decode(output["base64"]))
        _say(f"wrote the output's bytes to {path}")
    else:
        path.write_text(json.dumps(output, indent=2))
        _say(f"wrote the output to {path}")


def _next_step(job: dict[str, Any], directory: str) -> str:
    ref = f"{directory} {job['id']}"
    return {
        "pending_review": f"next: read the code, then `rds jobs approve {ref}` to run it on the "
        f"private data, or `rds jobs deny {ref} --reason ...`",
        "output_review": f"next: check the output, then `rds jobs approve {ref}` to release "
        f"it, or `rds jobs deny {ref} --reason ...`",
    }.get(job["status"], f"status: {job['status']}")


def cmd_jobs_approve(a: argparse.Namespace) -> int:
    from rds_kernel.node.jobs.steps import private_seconds

    with _jobs(a.dir) as jobs:
        before = jobs.store.get(a.job)
        if before.status == "pending_review":
            _say(
                f"approved job {before.id}; running it on the private data in the sandbox "
                f"(this takes {private_seconds(jobs.settings):g} s, whatever the code does) ..."
            )
        job = jobs.approve(a.job, actor="cli", note=a.note).owner()
    if job["status"] == "released":
        _say(f"released the output of job {job['id']} to {job['user']}")
    else:
        for check in job["checks"] or []:
            _say(f"check {check['check']}: {'ok' if check['ok'] else 'FAILED'} — {check['detail']}")
        _say(_next_step(job, a.dir))
    return 0 if job["status"] in ("released", "output_review") else 1


def cmd_jobs_deny(a: argparse.Namespace) -> int:
    with _jobs(a.dir) as jobs:
        job = jobs.deny(a.job, actor="cli", reason=a.reason)
    _say(f"denied job {job.id}; nothing of it will be released")
    return 0


def cmd_budget_requests(a: argparse.Namespace) -> int:
    with _jobs(a.dir) as jobs:
        found = jobs.requests.list(status=a.status, limit=a.limit)
    for r in found:
        if a.json:
            print(json.dumps(r))
        else:
            print(
                f"{r['id']:>5}  {r['created_at'][:16]}  {r['user']:<12} ε+{r['epsilon']:g} "
                f"δ+{r['delta']:g}  {r['status']:<8} {r['reason'][:80]!r}"
            )
    return 0


def cmd_budget_grant(a: argparse.Namespace) -> int:
    with _jobs(a.dir) as jobs:
        r = jobs.requests.grant(a.request, actor="cli", note=a.note)
        view = jobs.node.store.budget(r["user"])
    _say(
        f"granted request {r['id']}: {r['user']} now has ε={view.epsilon_total:g}, "
        f"δ={view.delta_total:g} in total ({view.epsilon_remaining:g} ε left)"
    )
    return 0


def cmd_budget_deny(a: argparse.Namespace) -> int:
    with _jobs(a.dir) as jobs:
        r = jobs.requests.deny(a.request, actor="cli", note=a.note)
    _say(f"denied request {r['id']} of {r['user']}")
    return 0


def register(sub: Any, budget: Any, command: Command, group: Callable[[str, str], Any]) -> None:
    """Add ``rds jobs ...`` and ``rds budget requests|grant|deny`` to the ``rds`` parser."""
    jobs = group("jobs", "review, approve and deny scientists' code jobs")
    sp = command(jobs, "list", cmd_jobs_list, "list code jobs, newest first")
    sp.add_argument("dir")
    sp.add_argument("--status", help="only jobs in this status, e.g. pending_review")
    sp.add_argument("--limit", type=int, default=100)
    sp.add_argument("--json", action="store_true", help="one JSON object per line")
    sp = command(jobs, "show", cmd_jobs_show, "show a job: message, code, outputs, checks, log")
    sp.add_argument("dir")
    sp.add_argument("job")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--output", help="write the private output to this file")
    sp = command(
        jobs, "approve", cmd_jobs_approve, "approve a job's code (runs it) or its output (releases)"
    )
    sp.add_argument("dir")
    sp.add_argument("job")
    sp.add_argument("--note", help="a note for the scientist and the audit log")
    sp = command(jobs, "deny", cmd_jobs_deny, "deny a job: nothing of it is released")
    sp.add_argument("dir")
    sp.add_argument("job")
    sp.add_argument("--reason", help="why, for the scientist and the audit log")

    sp = command(budget, "requests", cmd_budget_requests, "list scientists' budget requests")
    sp.add_argument("dir")
    sp.add_argument("--status", choices=["pending", "granted", "denied"])
    sp.add_argument("--limit", type=int, default=100)
    sp.add_argument("--json", action="store_true")
    sp = command(budget, "grant", cmd_budget_grant, "grant a budget request (raises the total)")
    sp.add_argument("dir")
    sp.add_argument("request", type=int)
    sp.add_argument("--note")
    sp = command(budget, "deny", cmd_budget_deny, "deny a budget request")
    sp.add_argument("dir")
    sp.add_argument("request", type=int)
    sp.add_argument("--note")
