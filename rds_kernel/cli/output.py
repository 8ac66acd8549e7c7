"""What the ``rds`` commands print, and where.

- Messages for people go to stderr (:func:`say`); an error is one line, ``error: ...``.
- A secret (a token) goes alone on stdout (:func:`secret`), so ``TOKEN=$(rds user add ...)``
  captures it and nothing else.
- What a listing or showing command shows goes to stdout in the ``--format`` asked for
  (:func:`format_option`, :func:`show`): ``text`` (the default, for people) or ``json`` (one
  JSON document: an array for a listing, an object for one thing, for programs).

The text renderings of every listing are here, one function each, from the same dictionaries
that ``--format json`` prints.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import click

__all__ = [
    "FORMATS",
    "audit_lines",
    "brief_output",
    "budget_lines",
    "check_lines",
    "dataset_lines",
    "error",
    "format_option",
    "job_lines",
    "job_lines_full",
    "request_lines",
    "say",
    "secret",
    "show",
    "user_lines",
]

FORMATS = ("text", "json")
F = TypeVar("F", bound=Callable[..., Any])


def say(message: str) -> None:
    """A message for the person at the terminal, on stderr."""
    click.echo(message, err=True)


def error(message: str) -> None:
    """An error: one line on stderr."""
    click.echo(f"error: {message}", err=True)


def secret(value: str) -> None:
    """A secret, alone on stdout (shown once: say so on stderr)."""
    click.echo(value)


def format_option(function: F) -> F:
    """The ``--format text|json`` option of a listing or showing command."""
    option = click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="text",
        show_default=True,
        help="Text for people, or json for programs (one JSON document).",
    )
    return option(function)


def show(data: Any, fmt: str, text: Callable[[Any], Iterable[str]]) -> None:
    """Print ``data`` (JSON-ready dictionaries and lists) on stdout as ``fmt``."""
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    for line in text(data):
        click.echo(line)


# ---------------------------------------------------------------- text renderings


def dataset_lines(datasets: list[dict[str, Any]]) -> Iterator[str]:
    for ds in datasets:
        yield f"{ds['name']}\t{ds['columns']} columns\t{ds['description']}"


def user_lines(users: list[dict[str, Any]]) -> Iterator[str]:
    for u in users:
        state = "disabled" if u["disabled"] else "active"
        yield f"{u['name']}\t{u['role']}\t{state}\t{u['created_at']}"


def budget_lines(view: dict[str, Any]) -> Iterator[str]:
    """A budget (or a dataset's cap) and its per-dataset lines."""

    def line(label: str, v: dict[str, Any]) -> str:
        return (
            f"{label:<24} ε {v['epsilon_spent']:.6g} spent of {v['epsilon_total']:.6g} "
            f"({v['epsilon_remaining']:.6g} left)   δ {v['delta_spent']:.3g} of "
            f"{v['delta_total']:.3g}"
        )

    yield line(view.get("user", "cap"), view)
    for name, per in view.get("per_dataset", {}).items():
        yield line(f"  dataset {name}", per)


def request_lines(requests: list[dict[str, Any]]) -> Iterator[str]:
    for r in requests:
        yield (
            f"{r['id']:>5}  {r['created_at'][:16]}  {r['user']:<12} ε+{r['epsilon']:g} "
            f"δ+{r['delta']:g}  {r['status']:<8} {r['reason'][:80]!r}"
        )


def audit_lines(entries: list[dict[str, Any]]) -> Iterator[str]:
    for e in entries:
        detail = json.dumps(e["detail"], sort_keys=True)
        yield f"{e['created_at']}  {e['actor']:<12} {e['action']:<18} {detail}"


def job_lines(jobs: list[dict[str, Any]]) -> Iterator[str]:
    """One line per job; a DP job shows its duration (its runs follow a timetable)."""
    for job in jobs:
        progress = job.get("progress")
        done = f"{progress['done']}/{progress['total']}" if progress else "-"
        if job["kind"] == "dp":
            seconds = (job["params"].get("timetable") or {}).get("seconds")
            done = f"{seconds:.0f} s" if isinstance(seconds, int | float) else "-"
        created = job["created_at"][:16].replace("T", " ")
        yield (
            f"{job['id']}  {created}  {job['user']:<12} {job['kind']:<8} "
            f"{job['status']:<15} {done:>9}  {job['dataset']}  {job['message'][:60]!r}"
        )


def job_lines_full(job: dict[str, Any]) -> Iterator[str]:
    """Everything the owner needs to decide on a job: message, source, outputs, checks, log."""
    yield f"job {job['id']} by {job['user']} on {job['dataset']}: {job['kind']}, {job['status']}"
    yield f"submitted {job['created_at']}, updated {job['updated_at']}"
    if job["message"]:
        yield f"\nmessage:\n  {job['message']}"
    if job["params"]:
        yield f"\nparameters: {json.dumps(job['params'])}"
    if job["kind"] == "dp" and job.get("finishes_at"):
        yield f"runs on its timetable until {job['finishes_at']}"
    yield f"\nsource (entry {job['entry']!r}):\n{job['source'].rstrip()}"
    if job["mock"] is not None:
        yield f"\nmock run: {brief_output(job['mock'].get('output')) or job['mock'].get('error')}"
    if job["output"] is not None:
        yield f"\noutput: {brief_output(job['output'])}"
    yield from check_lines(job)
    if job["review_note"]:
        yield f"\nreview note ({job['reviewer']}): {job['review_note']}"
    if job["error"]:
        yield f"\nerror shown to the scientist: {job['error']}"
    if job["log"]:
        yield f"\nlog (owner only):\n{job['log']}"


def check_lines(job: dict[str, Any]) -> Iterator[str]:
    for check in job["checks"] or []:
        yield f"check {check['check']}: {'ok' if check['ok'] else 'FAILED'} — {check['detail']}"


def brief_output(output: Any) -> str:
    """A job's output, shortened for the terminal."""
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
