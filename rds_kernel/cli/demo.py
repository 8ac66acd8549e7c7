"""``rds demo``: two demo owner nodes and JupyterLab on the tutorial course."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

__all__ = ["demo"]


@click.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the demo here: nodes, ledgers, your copy of the course (default: a temporary "
    "directory, deleted when the demo stops).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="Port of hospital_a; hospital_b gets the next one (default: 8765, or free ports when "
    "it is taken; 0 picks free ports).",
)
@click.option("--no-lab", is_flag=True, help="Start only the nodes.")
@click.option(
    "--no-browser",
    is_flag=True,
    help="Do not open a browser (the default when there is no display).",
)
@click.pass_context
def demo(
    ctx: click.Context, directory: Path | None, port: int | None, no_lab: bool, no_browser: bool
) -> int:
    """Start two demo owner nodes with the bundled synthetic patients, and JupyterLab on the
    tutorial course (Ctrl-C stops everything).

    The demo makes its own node directories: `rds --dir` and RDS_NODE_DIR do not apply; its
    own --dir (after `demo`) keeps them.
    """
    root = ctx.parent
    if root is not None and root.get_parameter_source("directory") == ParameterSource.COMMANDLINE:
        raise click.UsageError(
            "rds demo makes its own node directories; to keep them, put --dir after the "
            "command: rds demo --dir DIR",
            ctx,
        )
    from rds_kernel.demo.launcher import run_demo

    browser = False if no_browser else None
    return run_demo(directory, port, lab=not no_lab, browser=browser)
