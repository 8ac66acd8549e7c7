"""The ``rds`` command: the data owner's tool.

One module per command group (``node``, ``dataset``, ``user``, ``budget``, ``jobs``, ``audit``,
``demo``); this one holds the root group, its global ``--dir`` (or ``$RDS_NODE_DIR``), and
:func:`main`, the entry point. Commands parse their input, call the node's services and render
through :mod:`rds_kernel.cli.output`: messages on stderr, a secret alone on stdout, listings in
``--format text|json``. Every failure is one line on stderr, ``error: ...``, and a non-zero
exit code: 1 for a refused operation (an :class:`~rds_kernel.errors.RdsError`), 2 for a usage
error, 130 for Ctrl-C.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from rds_kernel.cli.audit import audit
from rds_kernel.cli.budget import budget
from rds_kernel.cli.common import Root
from rds_kernel.cli.datasets import dataset
from rds_kernel.cli.demo import demo
from rds_kernel.cli.jobs import jobs
from rds_kernel.cli.node import node
from rds_kernel.cli.output import error
from rds_kernel.cli.users import user
from rds_kernel.errors import RdsError

__all__ = ["main", "rds"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100, "show_default": True}
DIR_ENV = "RDS_NODE_DIR"


@click.group(context_settings=CONTEXT)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=DIR_ENV,
    show_envvar=True,
    help="The node directory: node.toml, the ledger, the datasets. Every command but "
    "`rds demo` needs it (default: $RDS_NODE_DIR).",
)
@click.version_option(package_name="rds_kernel", prog_name="rds", message="%(prog)s %(version)s")
@click.pass_context
def rds(ctx: click.Context, directory: Path | None) -> None:
    """Run and administer an rds owner node.

    Give the node directory once per command, `rds --dir ./hospital user list`, or for a whole
    shell, `export RDS_NODE_DIR=./hospital`. Settings come from node.toml, overridden by
    RDS_NODE_<NAME> environment variables (`rds node settings` shows where each comes from).
    """
    ctx.obj = Root(directory)


for _command in (node, dataset, user, budget, jobs, audit, demo):
    rds.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rds`` with ``argv`` (default: the process's arguments); return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = rds.main(args, prog_name="rds", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # `rds` or `rds node` alone
        click.echo(exc.ctx.get_help())
        return 0
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        error(exc.format_message() + hint)
        return exc.exit_code
    except click.ClickException as exc:
        error(exc.format_message())
        return exc.exit_code
    except click.Abort:  # Ctrl-C
        return 130
    except RdsError as exc:
        error(exc.message)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # `python -m rds_kernel.cli.main`, as the tests and benchmarks run it
    sys.exit(main())
