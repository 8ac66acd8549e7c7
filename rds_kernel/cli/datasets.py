"""``rds dataset add|list``: put a private dataset on the node, and list them."""

from __future__ import annotations

from pathlib import Path

import click

from rds_kernel.cli.common import node_service
from rds_kernel.cli.output import dataset_lines, format_option, say, show

__all__ = ["dataset"]

FILE = click.Path(dir_okay=False, path_type=Path)


@click.group()
def dataset() -> None:
    """Add and list datasets."""


@dataset.command()
@click.argument("name", help="The dataset's name, as scientists will use it.")
@click.argument("file", type=FILE, help="The private data (.parquet or .csv).")
@click.option(
    "--schema", required=True, type=FILE, help="The schema file (TOML): the public contract."
)
@click.option(
    "--mock",
    type=FILE,
    help="Your own mock data instead of mock data generated from the schema (default: generated).",
)
@click.option("--replace", is_flag=True, help="Replace an existing dataset of this name.")
def add(name: str, file: Path, schema: Path, mock: Path | None, replace: bool) -> int:
    """Check a data file against its schema and add it to the node.

    The mock data is generated from the schema alone unless --mock gives your own. Notes on
    stderr, for you only, count the values outside the declared bounds (queries clamp them to
    the bounds) and name the file's columns the schema lacks (they are not added). A file with
    no rows is refused.
    """
    with node_service() as svc:
        ds, notes = svc.add_dataset("cli", name, file, schema, mock_file=mock, replace=replace)
    made = f"from {mock}" if mock else "generated from the schema"
    say(f"added dataset {ds.name!r}: {len(ds.schema.columns)} columns, mock data {made}")
    for line in notes.lines():
        say(f"note: {line}")
    return 0


@dataset.command("list")
@format_option
def list_(fmt: str) -> int:
    """List the node's datasets."""
    with node_service() as svc:
        datasets = svc.list_datasets()
    show(datasets, fmt, dataset_lines)
    return 0
