"""Where a view's rows live, as something DuckDB can scan.

`scan_source` turns a source definition into a `SourceScan`: the SQL text of a relation
(`read_parquet([...])`, `read_csv([...])` or a subquery), the columns it has and their
DuckDB types, and how rows are ordered among exact ties (see `point_in_time`). File lists
are built here, sorted, so "file order" is well defined: later path (by string order), then
later row in the file. Paths that do not exist or cannot be read are InputErrors naming
the path.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb

from almanac.config import RepoConfig
from almanac.definitions.sources import FileSource, PushSource, SqlSource
from almanac.errors import InputError

Source = FileSource | SqlSource | PushSource

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
_GLOB_CHARS = ("*", "?", "[")


@dataclass(frozen=True)
class SourceScan:
    """A scannable relation for one source."""

    relation: str  # SQL usable after FROM
    columns: dict[str, str]  # column name → DuckDB type, as the source has them
    file_order: bool  # rows carry `file_index` and `file_row_number` (Parquet files)
    empty: bool = False  # no data yet (an empty folder or push dataset)
    label: str = ""  # for error messages: the source and its path


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def push_folder(config: RepoConfig, source: PushSource) -> Path:
    """The Almanac-managed Parquet dataset of a push source."""
    return config.resolve_path(config.offline.data_path) / str(source.name)


def has_glob(path: str) -> bool:
    return any(char in path for char in _GLOB_CHARS)


def _visible(path: Path, root: Path) -> bool:
    # Temp files being written (".x.tmp") and "_SUCCESS"-style markers are not data.
    parts = path.relative_to(root).parts if path.is_relative_to(root) else (path.name,)
    return not any(part.startswith((".", "_")) for part in parts)


def list_files(config: RepoConfig, source: FileSource | PushSource) -> tuple[list[Path], str]:
    """The data files of a file or push source, sorted, and a label for messages."""
    if isinstance(source, PushSource):
        folder = push_folder(config, source)
        label = f"push source '{source.name}' ({folder})"
        if not folder.is_dir():
            return [], label
        return _files_in(folder, PARQUET_SUFFIXES), label
    path = config.resolve_path(source.path)
    label = f"source '{source.name}' ({path})"
    suffixes = CSV_SUFFIXES if source.format == "csv" else PARQUET_SUFFIXES
    if has_glob(source.path):
        root = Path(glob_root(str(path)))
        files = sorted(
            Path(p)
            for p in glob.glob(str(path), recursive=True)
            if Path(p).is_file() and _visible(Path(p), root)
        )
        if not files:
            raise InputError(f"{label}: no files match this pattern")
        return files, label
    if path.is_dir():
        return _files_in(path, suffixes), label
    if path.is_file():
        return [path], label
    raise InputError(f"{label}: {path} does not exist")


def _files_in(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name.lower().endswith(suffixes) and _visible(p, folder)
    )


def glob_root(pattern: str) -> str:
    """The folder part of a glob before its first wildcard."""
    head = pattern
    while has_glob(head):
        head = os.path.dirname(head)
    return head or "."


def scan_source(con: duckdb.DuckDBPyConnection, config: RepoConfig, source: Source) -> SourceScan:
    """Build the scan of a source and read its schema (file footers only, no data)."""
    if isinstance(source, SqlSource):
        relation = f"({source.query.strip().rstrip(';')})"
        label = f"SQL source '{source.name}'"
        return SourceScan(relation, describe(con, relation, label), False, label=label)
    files, label = list_files(config, source)
    if not files:
        return SourceScan("", {}, True, empty=True, label=label)
    paths = "[" + ", ".join(sql_string(str(p)) for p in files) + "]"
    many = ", union_by_name = true" if len(files) > 1 else ""
    if isinstance(source, FileSource) and source.format == "csv":
        relation = f"read_csv({paths}{many})"
        return SourceScan(relation, describe(con, relation, label), False, label=label)
    relation = f"read_parquet({paths}, file_row_number = true{many})"
    columns = describe(con, relation, label)
    columns.pop("file_row_number", None)
    return SourceScan(relation, columns, True, label=label)


def describe(con: duckdb.DuckDBPyConnection, relation: str, label: str) -> dict[str, str]:
    try:
        rows = con.sql(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    except duckdb.Error as error:
        message = str(error).strip().splitlines()[0]
        if "magic bytes" in message or "not a parquet file" in message.lower():
            message = f"not a Parquet file ({message})"
        raise InputError(f"{label}: cannot be read: {message}") from None
    return {name: dtype for name, dtype, *_ in rows}
