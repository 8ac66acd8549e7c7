"""``rds audit``: the node's append-only audit log, newest first."""

from __future__ import annotations

import click

from rds_kernel.cli.common import node_service
from rds_kernel.cli.output import audit_lines, format_option, show

__all__ = ["audit"]


@click.command()
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many."
)
@format_option
def audit(limit: int, fmt: str) -> int:
    """Print the audit log, newest first: every release, refusal and administrative action."""
    with node_service() as svc:
        entries = [e.to_dict() for e in svc.store.audit_log(limit=limit)]
    show(entries, fmt, audit_lines)
    return 0
