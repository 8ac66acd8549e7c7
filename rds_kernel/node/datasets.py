"""The datasets of a node, kept on disk inside the node directory.

Each dataset lives in ``DIR/datasets/NAME/`` as ``data.parquet`` (the private rows, checked
against the schema and cast to its types when added), ``schema.toml`` (the owner's public
contract, copied verbatim), ``mock.parquet`` (generated from the schema alone, or the
owner's own mock file, checked strictly) and ``version`` (a random token written when the
dataset is added). The directory is the registry: no database rows.

Each version has a directory of its own and ``NAME`` links to the current one: a replace
swaps the link in one atomic rename, so a reader sees one version or the other, and a release
that began on a version reads that version to its end. Everything cached about a dataset (its
schema here, prepared measurements in the node) is keyed on the version token: an inode or a
timestamp can come back after two replaces and pair an old schema with new data; a 128-bit
random token does not.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Final

import polars as pl

from rds_kernel.errors import BadRequest, ConfigError, Conflict, NotFound, SchemaError
from rds_kernel.mock import check_frame, generate_mock, load_mock_file, mock_seed
from rds_kernel.node.settings import load_settings
from rds_kernel.schema import Bound, Column, Schema, load_schema

__all__ = ["AddNotes", "Clamped", "Dataset", "DatasetRegistry"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
DATA_FILE = "data.parquet"
SCHEMA_FILE = "schema.toml"
MOCK_FILE = "mock.parquet"
VERSION_FILE = "version"
# Every release scans the private file, so it is stored for reading speed: LZ4 decodes float
# columns 2-3x faster than polars' default zstd (1M floats: 3.3 ms vs 7.8 ms) at ~1.6x the size.
PRIVATE_COMPRESSION: Final = "lz4"


@dataclass(frozen=True)
class Dataset:
    """One dataset: its public schema and where its private and mock rows are."""

    name: str
    schema: Schema
    directory: Path
    version: str = ""  # the token written at add time: `dataset add --replace` writes anew
    rows: int = 0  # the private rows stored (never shown; a bound on it pads release times)

    @property
    def rows_bound(self) -> int:
        """A bound on the rows that releases may use in public ways (their padded time):
        ``public_row_count`` if the owner published it, else the stored rows rounded up to a
        power of two — so the time of a release says no more than that power of two."""
        if self.schema.public_row_count is not None:
            return max(self.schema.public_row_count, 1)
        return 1 << max(self.rows - 1, 0).bit_length()

    @property
    def data_path(self) -> Path:
        return self.directory / DATA_FILE

    @property
    def mock_path(self) -> Path:
        return self.directory / MOCK_FILE

    def scan(self) -> pl.LazyFrame:
        """The private rows, scanned lazily (nothing is read until a measurement runs)."""
        return pl.scan_parquet(self.data_path)

    def summary(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.schema.description,
            "columns": len(self.schema.columns),
            "public_row_count": self.schema.public_row_count,
        }


@dataclass(frozen=True)
class Clamped:
    """A column with ``values`` private values outside its declared ``bounds``."""

    column: str
    values: int
    bounds: tuple[Bound, Bound]


@dataclass(frozen=True)
class AddNotes:
    """What the owner should know about the data file of a dataset just added.

    The counts describe private rows: they are for the owner at their terminal (``rds dataset
    add``) and are never stored, audited or sent over HTTP.

    >>> AddNotes((Clamped("age", 3, (0, 120)),), ("foo", "bar")).lines()
    ['column age: 3 value(s) outside [0, 120] will be clamped to the bounds', \
'columns not in the schema, not added: foo, bar']
    """

    clamped: tuple[Clamped, ...] = ()
    not_in_schema: tuple[str, ...] = ()  # the file's columns the schema does not declare

    def lines(self) -> list[str]:
        """One line per note, for the terminal."""
        out = [
            f"column {c.column}: {c.values} value(s) outside [{c.bounds[0]}, {c.bounds[1]}] "
            "will be clamped to the bounds"
            for c in self.clamped
        ]
        if self.not_in_schema:
            out.append(f"columns not in the schema, not added: {', '.join(self.not_in_schema)}")
        return out


def _outside(series: pl.Series, col: Column) -> int:
    """How many values of ``series`` (checked and cast to ``col``'s type) are outside its
    declared bounds; 0 without bounds. Infinite floats are outside; nulls are not."""
    if col.bounds is None:
        return 0
    lo, hi = col.bounds
    if col.type == "float":
        inside = (series >= float(lo)) & (series <= float(hi))
    elif col.type == "int":
        inside = (series >= int(lo)) & (series <= int(hi))
    elif col.type == "date":
        inside = (series >= date.fromisoformat(str(lo))) & (series <= date.fromisoformat(str(hi)))
    else:
        return 0
    return int((series.is_not_null() & ~inside.fill_null(True)).sum())


def _notes(raw: pl.DataFrame, frame: pl.DataFrame, schema: Schema) -> AddNotes:
    clamped = []
    for col in schema.columns:
        outside = _outside(frame.get_column(col.name), col)
        if outside and col.bounds is not None:
            clamped.append(Clamped(col.name, outside, col.bounds))
    extra = tuple(name for name in raw.columns if name not in schema)
    return AddNotes(tuple(clamped), extra)


_DELIMITERS = {";": "`;`", "\t": "a tab", "|": "`|`"}
_LISTED = 20


def _check_columns(raw: pl.DataFrame, schema: Schema, path: Path) -> None:
    """Refuse a file with no rows, and one whose columns miss the schema's only by case or by
    a CSV delimiter other than ``,``, with a hint; other problems are left to ``check_frame``."""
    missing = [name for name in schema.names if name not in raw.columns]
    if missing:
        detail = {"file": str(path), "missing": missing}
        found = raw.columns
        if len(found) == 1 and path.suffix.lower() == ".csv":
            seen = [d for d in _DELIMITERS if d in found[0]]
            if seen:
                raise SchemaError(
                    f"{path}: one column `{found[0][:200]}`: is the delimiter "
                    f"{_DELIMITERS[seen[0]]}? The schema's columns are separated by commas in a "
                    "CSV file: save the file with , as the delimiter, or as Parquet",
                    detail,
                )
        lower = {name.lower() for name in found}
        if any(name.lower() in lower for name in missing):
            shown = ",".join(found[:_LISTED]) + (",..." if len(found) > _LISTED else "")
            raise SchemaError(
                f"{path}: the schema's column(s) {', '.join(missing)} are missing; the file has "
                f"`{shown}`; the schema names are case-sensitive: rename the file's columns or "
                "the schema's",
                detail,
            )
    if raw.height == 0:
        raise ConfigError(
            f"{path}: the file has no rows; a dataset needs at least one row of data",
            {"file": str(path)},
        )


def _version(directory: Path) -> str | None:
    """The dataset's version token, or None if there is no dataset in ``directory``."""
    try:
        return (directory / VERSION_FILE).read_text().strip()
    except FileNotFoundError:
        pass
    try:  # a dataset added before versions were written: its data file's identity
        stat = (directory / DATA_FILE).stat()
    except FileNotFoundError:
        return None
    return f"legacy-{stat.st_ino}-{stat.st_mtime_ns}-{stat.st_size}"


def _read_table(path: Path) -> pl.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path)
        if suffix == ".csv":
            return pl.read_csv(path, infer_schema=False)
    except FileNotFoundError:
        raise BadRequest(f"{path}: file not found") from None
    except pl.exceptions.NoDataError:
        raise ConfigError(
            f"{path}: the file is empty; a dataset needs a header and at least one row of data",
            {"file": str(path)},
        ) from None
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise BadRequest(f"{path}: cannot be read as {suffix[1:]} ({type(exc).__name__})") from None
    raise BadRequest(f"{path}: unsupported file type {suffix!r}; use .parquet or .csv")


class DatasetRegistry:
    """The datasets of one node directory. Schemas are read once and cached.

    ``node_name`` is the node's public name, which seeds the mock data it generates
    (:func:`~rds_kernel.mock.mock_seed`); when not given it is read from the node's settings.
    """

    def __init__(self, node_dir: Path, node_name: str | None = None) -> None:
        self.root = node_dir / "datasets"
        self._node_dir = node_dir
        self._node_name = node_name
        self._cache: dict[str, Dataset] = {}

    @property
    def node_name(self) -> str:
        if self._node_name is None:
            self._node_name = load_settings(self._node_dir).name
        return self._node_name

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if not p.name.startswith(".") and (p / DATA_FILE).is_file()
        )

    def get(self, name: str) -> Dataset:
        """The dataset called ``name``; :class:`NotFound` (listing the others) if absent.

        Its ``directory`` is the version's own (the link resolved), so a release that started
        on this version reads this version's rows to the end, even if the owner replaces the
        dataset meanwhile.
        """
        directory = (self.root / name).resolve() if _NAME.fullmatch(name) else None
        version = _version(directory) if directory is not None else None
        cached = self._cache.get(name)
        if cached is not None and cached.version == version:
            return cached
        if directory is None or version is None or not (directory / DATA_FILE).is_file():
            raise NotFound(
                f"no dataset {name!r} on this node; available: {', '.join(self.names()) or 'none'}",
                {"dataset": name},
            )
        schema = load_schema(directory / SCHEMA_FILE).with_name(name)
        rows = pl.scan_parquet(directory / DATA_FILE).select(pl.len()).collect().item()
        ds = Dataset(name=name, schema=schema, directory=directory, version=version, rows=rows)
        self._cache[name] = ds
        return ds

    def all(self) -> list[Dataset]:
        return [self.get(n) for n in self.names()]

    def add(
        self,
        name: str,
        data_file: Path,
        schema_file: Path,
        *,
        mock_file: Path | None = None,
        mock_rows: int = 1000,
        replace: bool = False,
    ) -> Dataset:
        """Validate and store a dataset; :meth:`add_with_notes` without the notes."""
        return self.add_with_notes(
            name, data_file, schema_file, mock_file=mock_file, mock_rows=mock_rows, replace=replace
        )[0]

    def add_with_notes(
        self,
        name: str,
        data_file: Path,
        schema_file: Path,
        *,
        mock_file: Path | None = None,
        mock_rows: int = 1000,
        replace: bool = False,
    ) -> tuple[Dataset, AddNotes]:
        """Validate and store a dataset: the schema, the private rows as Parquet, the mock.

        The data is checked against the schema (missing columns, types, nulls, categories, at
        least one row) before anything is written; a failed add leaves the node unchanged. The
        notes returned count the values outside the declared bounds (the DP layer clamps them)
        and name the file's columns the schema lacks (not stored): for the owner only.

        Each version lives in a directory of its own, ``.NAME.TOKEN``; ``NAME`` is a link to the
        current one, swapped in one atomic rename. The previous version is kept (a release may
        still be reading it) and older ones are deleted.
        """
        if not _NAME.fullmatch(name):
            raise BadRequest(
                f"dataset name {name!r} must start with a letter and use letters, digits, _ or -"
            )
        target = self.root / name
        if (target.exists() or target.is_symlink()) and not replace:
            raise Conflict(f"dataset {name!r} already exists; pass --replace to overwrite it")
        schema = load_schema(schema_file).with_name(name)
        raw = _read_table(data_file)
        _check_columns(raw, schema, data_file)
        frame = check_frame(raw, schema, str(data_file))
        notes = _notes(raw, frame, schema)
        del raw
        if mock_file is not None:
            mock = load_mock_file(mock_file, schema)
        else:
            rows = min(mock_rows, schema.public_row_count or mock_rows) or mock_rows
            mock = generate_mock(schema, n=rows, seed=mock_seed(self.node_name, name))
        self.root.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(16)
        version_dir = self.root / f".{name}.{token}"
        link = self.root / f".{name}.link-{token}"
        previous = target.resolve() if target.is_symlink() else None
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.root))
        try:
            shutil.copyfile(schema_file, staging / SCHEMA_FILE)
            frame.write_parquet(staging / DATA_FILE, compression=PRIVATE_COMPRESSION)
            mock.write_parquet(staging / MOCK_FILE)
            (staging / VERSION_FILE).write_text(token + "\n")
            staging.rename(version_dir)
            link.symlink_to(version_dir.name)
            if target.exists() and not target.is_symlink():
                # a dataset stored before versions had directories of their own
                previous = self.root / f".{name}.{secrets.token_hex(16)}"
                target.rename(previous)
            os.replace(link, target)  # the one atomic step: readers see one version or the other
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            link.unlink(missing_ok=True)
            if not (target.exists() or target.is_symlink()) and previous is not None:
                previous.rename(target)  # a failed replace leaves the old version serving
            if not target.is_symlink() or target.resolve() != version_dir:
                shutil.rmtree(version_dir, ignore_errors=True)
            raise
        self._prune(name, keep={version_dir, previous})
        self._cache.pop(name, None)
        return self.get(name), notes

    def _prune(self, name: str, keep: set[Path | None]) -> None:
        """Delete versions of ``name`` other than ``keep`` (the current and the previous)."""
        kept = {p.resolve() for p in keep if p is not None}
        for path in self.root.glob(f".{name}.*"):
            if path.resolve() not in kept and not path.name.startswith(f".{name}.link-"):
                shutil.rmtree(path, ignore_errors=True)
