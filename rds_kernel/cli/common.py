"""What every ``rds`` command shares: the node directory, the node's services and typed input.

The node's modules are imported inside the functions that need them, so ``rds --help`` stays
fast. Every command of the node opens the directory given by ``rds --dir DIR`` (or
``$RDS_NODE_DIR``) with :func:`node_service` or :func:`job_service`.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rds_kernel.node.jobs.service import JobService
    from rds_kernel.node.service import NodeService

__all__ = [
    "BUDGET",
    "Root",
    "job_service",
    "node_directory",
    "node_service",
    "rds_command",
]


@dataclass
class Root:
    """What the root command parsed: the node directory (None when neither --dir nor
    ``$RDS_NODE_DIR`` gave one)."""

    directory: Path | None


class NonNegative(click.ParamType[float]):
    """A finite number ≥ 0: an ε or δ."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        try:
            number = float(value)
        except ValueError:
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number < 0:
            self.fail(f"{value!r} must be a finite number ≥ 0", param, ctx)
        return number


BUDGET = NonNegative()


def node_directory() -> Path:
    """The node directory of the running command: ``rds --dir DIR`` or ``$RDS_NODE_DIR``."""
    ctx = click.get_current_context()
    root = ctx.find_object(Root)
    if root is None or root.directory is None:
        raise click.UsageError(
            "no node directory: give `rds --dir DIR ...` or set RDS_NODE_DIR", ctx.find_root()
        )
    return root.directory


def rds_command(*words: str) -> str:
    """An ``rds`` command line for the node directory of this command, ready to copy."""
    return shlex.join(["rds", "--dir", str(node_directory()), *words])


@contextmanager
def node_service() -> Iterator[NodeService]:
    """The node service of the node directory, closed when the command is done."""
    from rds_kernel.node.service import NodeService
    from rds_kernel.node.settings import load_settings

    service = NodeService(load_settings(node_directory()))
    try:
        yield service
    finally:
        service.close()


@contextmanager
def job_service() -> Iterator[JobService]:
    """The job service of the node directory (no background workers), closed when done."""
    from rds_kernel.node.jobs.service import JobService

    with node_service() as node:
        jobs = JobService(node, background=False)
        try:
            yield jobs
        finally:
            jobs.close()
