"""Compaction of Almanac's own offline logs: the files of push and stream sources.

Every push and every stream micro-batch appends one small Parquet file (atomic, so
nothing is half written), and a worker that commits every second makes 3,600 of them an
hour; opening that many footers is soon most of a training query. `compact` merges a run
of them into one file, **in their order** (file by file, row by row), so rule 2's
tie-breaker ("later file, then later row") picks the same row afterwards and training
sets are unchanged, for every view over the source whatever its keys.

Readers list files while a compaction runs, so the swap is atomic without a lock:

1. the merged file is written under a hidden name, with the names of the files it
   replaces (and the idempotency keys they carried) in its Parquet metadata;
2. it is renamed into place. From then on `almanac.offline.files.list_files` leaves the
   replaced files out (a reader sees either the old files or the merged one, never both);
3. the replaced files are deleted by a later compaction, once the merged file is older
   than `grace` (a query that listed the old files before the swap may still read them).

The merged file is named after the last file it replaces (``part-<its time>-zc<random>``),
so it sorts where that file did: after the files it replaces, before every newer one.
Only a contiguous run of files older than `min_age` is merged (a push stages its file
before it commits it, so a file named earlier may appear a moment later), and two
compactions of one folder never run at once (a lock file). Files already at
`TARGET_ROWS` stay as they are.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from almanac.config import RepoConfig
from almanac.definitions.sources import PushSource
from almanac.errors import InputError
from almanac.offline.files import (
    COMPACTED_MARK,
    KEYS_META,
    REPLACES_META,
    compaction_of,
    file_time_ns,
    key_of_name,
    list_files,
    push_folder,
)

TARGET_ROWS = 4_000_000  # a file this large is not merged again
ROW_GROUP_ROWS = 128 * 1024
MIN_AGE = timedelta(minutes=1)
GRACE = timedelta(minutes=10)
STALE_STAGED = timedelta(hours=1)  # a push's staged file this old belongs to a dead process
# How long a compacted file remembers the idempotency keys of the pushes it holds: a
# retry with the same key within this time is still recognised (Stripe keeps 24 h).
KEY_RETENTION = timedelta(days=7)
_LOCK = "_compaction.lock"


@dataclass
class Compaction:
    """What one compaction of a source did."""

    source: str
    merged_files: int = 0
    rows: int = 0
    written: str = ""  # the new file's name ('' when nothing was merged)
    deleted_files: int = 0
    files_before: int = 0
    files_after: int = 0
    seconds: float = 0.0
    skipped: str = ""
    replaced: list[str] = field(default_factory=list)


def compact(
    config: RepoConfig,
    source: PushSource,
    *,
    min_age: timedelta = MIN_AGE,
    grace: timedelta = GRACE,
) -> Compaction:
    """Merge the source's small log files older than `min_age` into one (see the module
    docstring), after deleting the files that compactions longer than `grace` ago replaced."""
    started = time.perf_counter()
    result = Compaction(source=str(source.name))
    folder = push_folder(config, source)
    if not folder.is_dir():
        result.skipped = "no files yet"
        return result
    with _locked(folder) as held:
        if not held:
            result.skipped = "another compaction of this source is running"
            return result
        result.deleted_files = _delete_replaced(folder, grace)
        files, _ = list_files(config, source)
        result.files_before = len(files)
        cutoff = time.time_ns() - int(min_age.total_seconds() * 1e9)
        # A push stages its file, writes online, then commits: a file staged before the
        # cutoff may still appear. Merge nothing named after the oldest one in flight.
        fresh = time.time_ns() - int(STALE_STAGED.total_seconds() * 1e9)
        staged = [file_time_ns(p.name[1:-4]) for p in folder.glob(".part-*.parquet.tmp")]
        cutoff = min([cutoff, *(t for t in staged if t is not None and t >= fresh)])
        run = _run(files, cutoff)
        if len(run) < 2:
            result.skipped = "fewer than two small files older than the minimum age"
        else:
            result.written, result.rows = _merge(folder, run)
            result.merged_files = len(run)
            result.replaced = [p.name for p in run]
        result.files_after = len(list_files(config, source)[0])
    result.seconds = time.perf_counter() - started
    return result


def _run(files: list[Path], cutoff_ns: int) -> list[Path]:
    """The first contiguous run of at least two small files named before `cutoff_ns`:
    a file too large (or a file not named by Almanac) ends a run, and one that is still
    a single file is passed over with it; a file too young ends the search."""
    run: list[Path] = []
    for path in files:
        stamp = file_time_ns(path.name)
        if stamp is not None and stamp >= cutoff_ns:
            break
        if stamp is None or pq.read_metadata(path).num_rows >= TARGET_ROWS:
            if len(run) >= 2:
                break
            run = []
            continue
        run.append(path)
    return run if len(run) >= 2 else []


def _merge(folder: Path, run: list[Path]) -> tuple[str, int]:
    """Write the rows of `run`, in order, as one file named after the last of them."""
    schemas = [pq.read_schema(path) for path in run]
    try:
        schema = pa.unify_schemas([s.remove_metadata() for s in schemas])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise InputError(f"cannot compact {folder}: its files disagree on a column's type ({error})") from None  # fmt: skip
    replaces, keys = _lineage(folder, run)
    metadata = {REPLACES_META: json.dumps(replaces), KEYS_META: json.dumps(keys)}
    stamp = file_time_ns(run[-1].name)
    name = f"part-{stamp:020d}-{COMPACTED_MARK}{uuid.uuid4().hex[:8]}.parquet"
    temp = folder / f".{name}.tmp"
    rows = 0
    try:
        with pq.ParquetWriter(temp, schema.with_metadata(metadata)) as writer:
            pending: list[pa.Table] = []
            pending_rows = 0
            for path in run:
                table = _conform(pq.read_table(path), schema)
                pending.append(table)
                pending_rows += table.num_rows
                if pending_rows >= ROW_GROUP_ROWS:
                    writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                    rows += pending_rows
                    pending, pending_rows = [], 0
            if pending:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                rows += pending_rows
        _fsync(temp)  # durable before it replaces anything: a torn merge must not list
        os.replace(temp, folder / name)
        _fsync(folder)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return name, rows


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with `schema`'s columns in its order (nulls where a file lacked one)."""
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema.remove_metadata())


def _lineage(folder: Path, run: list[Path]) -> tuple[list[str], dict[str, list[int]]]:
    """The names a merged file replaces (the run, and what the run's compacted files
    replaced that is still on disk) and the idempotency keys it carries ({tag: [rows,
    pushed at ns]}, younger than `KEY_RETENTION`)."""
    oldest = time.time_ns() - int(KEY_RETENTION.total_seconds() * 1e9)
    replaces: list[str] = []
    keys: dict[str, list[int]] = {}
    for path in run:
        replaces.append(path.name)
        earlier = compaction_of(path)
        if earlier is not None:
            replaces += [name for name in earlier.replaces if (folder / name).exists()]
            keys.update(earlier.keys)
        tag = key_of_name(path.name)
        if tag is not None:
            keys[tag] = [pq.read_metadata(path).num_rows, file_time_ns(path.name) or 0]
    return replaces, {tag: v for tag, v in keys.items() if v[1] >= oldest}


def _delete_replaced(folder: Path, grace: timedelta) -> int:
    """Delete the files that compacted files older than `grace` replaced, and temporary
    files of compactions that died (older than `grace` too)."""
    cutoff = time.time() - grace.total_seconds()
    deleted = 0
    for path in sorted(folder.glob(f"part-*-{COMPACTED_MARK}*.parquet")):
        compacted = compaction_of(path)
        if compacted is None or path.stat().st_mtime > cutoff:
            continue
        for name in compacted.replaces:
            target = folder / name
            if target.exists():
                target.unlink()
                deleted += 1
    for temp in folder.glob(f".part-*-{COMPACTED_MARK}*.parquet.tmp"):
        if temp.stat().st_mtime < cutoff:
            temp.unlink(missing_ok=True)
    stale = time.time() - STALE_STAGED.total_seconds()
    for temp in folder.glob(".part-*.parquet.tmp"):  # pushes whose process died
        with contextlib.suppress(FileNotFoundError):
            if temp.stat().st_mtime < stale:
                temp.unlink()
    return deleted


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def _locked(folder: Path) -> Iterator[bool]:
    """An exclusive, non-blocking lock on the folder's lock file (released at exit, and
    by the kernel if the process dies)."""
    with open(folder / _LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
