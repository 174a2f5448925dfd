"""Appending a batch to a view's offline dataset (`write_to_offline_store`, pushes).

A batch is checked completely before anything touches the disk — join keys (present,
declared type, no nulls), event time (present, parseable, no nulls), created time, every
feature (present, castable to its declared type) — then written as one new Parquet file:
first to a hidden temporary name in the same folder, then renamed. Readers never see a
partial file and a rejected batch leaves nothing behind (rule 7).

New files are named `part-<nanoseconds>-<random>.parquet`, so they sort after earlier
appends: for rows tied on event and created time, the later append wins.
"""

from __future__ import annotations

import fnmatch
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from almanac.config import RepoConfig
from almanac.definitions.feature_view import FeatureView
from almanac.definitions.sources import FileSource, PushSource, SqlSource
from almanac.definitions.types import arrow_type
from almanac.errors import InputError
from almanac.offline.frames import UTC_US, key_column, utc_timestamps
from almanac.offline.sources import CSV_SUFFIXES, glob_root, has_glob, push_folder

Source = FileSource | SqlSource | PushSource


def target_folder(config: RepoConfig, view: FeatureView, source: Source) -> tuple[Path, str]:
    """The folder a new file goes to, and the glob pattern it must match ('' = any)."""
    label = f"feature view '{view.name}'"
    if isinstance(source, PushSource):
        return push_folder(config, source), ""
    if isinstance(source, SqlSource):
        raise InputError(
            f"{label} reads SQL source '{source.name}'; Almanac cannot append to a query's "
            "result. Write to the tables the query reads, or use a push source."
        )
    if source.format == "csv":
        raise InputError(
            f"{label} reads CSV source '{source.name}'; appends are written as Parquet. "
            "Use a Parquet folder or a push source."
        )
    path = config.resolve_path(source.path)
    if has_glob(source.path):
        return Path(glob_root(str(path))), str(path)
    if path.is_file() or path.name.lower().endswith((".parquet", ".pq", ".parq", *CSV_SUFFIXES)):
        raise InputError(
            f"{label} reads the single file {path}; Almanac appends new files, so point "
            f"source '{source.name}' at a folder (e.g. '{Path(source.path).parent}/') "
            "or a glob to make it writable"
        )
    return path, ""


def prepare_batch(
    data: pa.Table,
    view: FeatureView,
    keys: dict[str, str],
    source: Source,
    con: duckdb.DuckDBPyConnection,
) -> pa.Table:
    """The batch with exactly the view's columns in their declared types, or InputError."""
    what = f"batch for feature view '{view.name}'"
    columns: dict[str, pa.ChunkedArray] = {}
    for key, dtype in keys.items():
        column = key_column(data, key, dtype, what, f"feature view '{view.name}'")
        if column.null_count:
            raise InputError(f"{what}: join key column '{key}' has {column.null_count} null(s)")
        columns[key] = column
    ts = source.timestamp_field
    columns[ts] = _times(data, ts, con, what, required=True)
    created = source.created_timestamp_field
    if created is not None:
        if created in data.column_names:
            columns[created] = _times(data, created, con, what, required=False)
        else:
            # No created time given: the write time, so a later write wins ties.
            now = pa.scalar(datetime.now(UTC), UTC_US)
            columns[created] = pa.chunked_array([pa.repeat(now, data.num_rows)], UTC_US)
    missing = [f.name for f in view.features if f.name not in data.column_names]
    if missing:
        raise InputError(f"{what}: missing feature column(s) {', '.join(map(repr, missing))}")
    for field in view.features:
        want = arrow_type(field.dtype)
        column = data.column(field.name)
        try:
            columns[field.name] = column.cast(want)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
            raise InputError(
                f"{what}: column '{field.name}' has type {column.type}, which does not "
                f"convert to the declared {field.dtype}: {str(error).splitlines()[0]}"
            ) from None
    return pa.table(columns)


def _times(
    data: pa.Table, column: str, con: duckdb.DuckDBPyConnection, what: str, required: bool
) -> pa.ChunkedArray:
    values = utc_timestamps(data, column, con, what).cast(UTC_US, safe=False)
    if required and values.null_count:
        raise InputError(f"{what}: timestamp column '{column}' has {values.null_count} null(s)")
    return values


def write_parquet(table: pa.Table, folder: Path, pattern: str = "") -> Path:
    """Write `table` as a new file in `folder`, atomically (temp file + rename)."""
    name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    final = folder / name
    if pattern and not fnmatch.fnmatch(str(final), pattern):
        raise InputError(
            f"a new file '{name}' in {folder} would not match the source's pattern "
            f"'{pattern}', so it would never be read; use a folder or a broader glob"
        )
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".{name}.tmp"
    try:
        pq.write_table(table, temp)
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)
    return final
