"""Appending a batch to a view's offline dataset (`write_to_offline_store`, pushes).

A batch is checked completely before anything touches the disk, by the rules of
`almanac.semantics.validate` that pushes follow too — join keys (present, declared type, no nulls),
event time (present, parseable, no nulls), created time, every feature (present, of or
castable without loss to its declared type; "12" is not an int64, 12 is not a string) —
then written as one new Parquet file: first to a hidden temporary name in the same
folder, then renamed. Readers never see a partial file and a rejected batch leaves
nothing behind (rule 7). A push stages the file, writes the online store, and only then
renames it (`StagedFile`), so a push that fails leaves neither store changed.

New files are named `part-<nanoseconds>-<random>.parquet`, so they sort after earlier
appends: for rows tied on event and created time, the later append wins.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from almanac.config import RepoConfig
from almanac.definitions.feature_view import FeatureView
from almanac.definitions.sources import FileSource, PushSource, SqlSource
from almanac.errors import InputError, StorageFullError
from almanac.offline.files import CSV_SUFFIXES, glob_root, has_glob, push_folder
from almanac.semantics.validate import UTC_US, Declared, check_batch

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
) -> pa.Table:
    """The batch with exactly the view's columns in their declared types, or InputError.
    The rules are `almanac.semantics.validate`'s, which pushes follow too."""
    owner = f"feature view '{view.name}'"
    created = source.created_timestamp_field
    batch = check_batch(
        data,
        f"batch for {owner}",
        keys={key: Declared(dtype, owner) for key, dtype in keys.items()},
        timestamp_field=source.timestamp_field,
        created_field=created,
        columns={field.name: Declared(field.dtype, owner) for field in view.features},
    )
    if created is not None and created not in batch.column_names:
        # No created time given: the write time, so a later write wins ties.
        now = pa.scalar(datetime.now(UTC), UTC_US)
        column = pa.chunked_array([pa.repeat(now, batch.num_rows)], UTC_US)
        batch = batch.add_column(len(keys) + 1, created, column)
    return batch


@dataclass
class StagedFile:
    """A batch written to a hidden temporary file beside its final name: readers do not
    see it until `commit` renames it into place (atomic); `discard` removes it."""

    temp: Path
    final: Path
    rows: int

    def commit(self) -> None:
        try:
            os.replace(self.temp, self.final)
        except OSError as error:
            self.discard()
            raise _storage_error(error, self.final.parent) from None

    def discard(self) -> None:
        self.temp.unlink(missing_ok=True)


def stage_parquet(table: pa.Table, folder: Path, pattern: str = "") -> StagedFile:
    """Write `table` as a new, not yet visible file in `folder` (see `StagedFile`). The
    expensive part that can fail (a full disk) happens here, before any commit."""
    name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    final = folder / name
    if pattern and not fnmatch.fnmatch(str(final), pattern):
        raise InputError(
            f"a new file '{name}' in {folder} would not match the source's pattern "
            f"'{pattern}', so it would never be read; use a folder or a broader glob"
        )
    temp = folder / f".{name}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, temp)
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise _storage_error(error, folder) from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return StagedFile(temp, final, table.num_rows)


def _storage_error(error: OSError, folder: Path) -> Exception:
    """A full disk (or quota) is the user's to fix: say so; other OS errors stay as they are."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError(
            f"the offline store has no room left in {folder} ({error.strerror}); nothing of "
            "this batch was written: free disk space and retry"
        )
    return error
