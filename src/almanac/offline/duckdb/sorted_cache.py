"""A view's rows kept deduplicated and sorted: a cache of its Parquet source.

A training set's ASOF join over the raw files must break rule 2's ties itself (the
struct sort key of `point_in_time`), which costs more than the join. This cache holds,
per feature view, its rows typed as declared, one row per (keys, event time) — the one
rule 2 picks: the latest created time, then the later file, then the later row — sorted
by keys and event time, so the ASOF joins on the bare event time.

Kept under ``<offline.data_path>/.sorted/<view>/`` (hidden: no source scans it), as run
files ``<definition>-<files>.parquet`` and a manifest ``<definition>.json`` listing the
source files they hold. `definition` hashes what the rows are computed from (the source's
kind, path and time columns, the keys, features and their types); `files` is each source
file's path, size, modification and change times and inode (a file restored to its old
mtime still has a new change time). A changed, removed or inserted file invalidates the
cache: it is built again. Files that only sort after every cached one (appends: Almanac's
own push logs, new `part-N` files) become a new run when none of their (keys, event
time) is cached already, so runs never share one and the ASOF reads them together; else,
or beyond `_MAX_RUNS` runs, the runs and the added files are merged into one (the cached
rows stand for earlier files, so the added ones win full ties, as they sort later).
Every file is written under a temporary name and renamed into place; replaced runs are
deleted after `_GRACE_S` (a reader may still have one open).

Parquet sources without a transformation only: a CSV or SQL source has no file order,
a transformation no fingerprint of what it computes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb

from almanac.config import RepoConfig
from almanac.definitions.feature_view import FeatureView, Field
from almanac.definitions.sources import FileSource, PushSource, SqlSource
from almanac.errors import InputError
from almanac.offline.duckdb.point_in_time import CREATED, SORT_KEY, Source, ViewRows, view_rows
from almanac.offline.duckdb.sources import SourceScan, describe, duckdb_type, quote, sql_string
from almanac.offline.files import list_files
from almanac.offline.spine import TS as TS_COLUMN

log = logging.getLogger(__name__)

FOLDER = ".sorted"
_VERSION = 1  # of the cache's layout: a change rebuilds every cache
_GRACE_S = 600
_STALE_S = 86_400  # another definition's cache unused this long is deleted
_PREVIOUS_ORDER = -1  # the old cache's rows lose full ties to rows of added files
_MAX_RUNS = 8  # appended runs before they are merged into one
_Entry = tuple[str, int, int, int, int]  # path, size, mtime_ns, ctime_ns, inode


@dataclass(frozen=True)
class _Manifest:
    files: list[_Entry]  # the source files the runs hold, in order
    runs: list[str]  # run files: no (keys, event time) is in two of them


def cache_folder(config: RepoConfig, view: str) -> Path:
    return config.resolve_path(config.offline.data_path) / FOLDER / view


def fits(source: Source, view: FeatureView) -> bool:
    """Whether the cache can stand for this view's rows."""
    if view.transformation is not None:
        return False
    return isinstance(source, PushSource) or (
        isinstance(source, FileSource) and source.format != "csv"
    )


def cached_rows(
    con: duckdb.DuckDBPyConnection,
    config: RepoConfig,
    source: Source,
    view: FeatureView,
    keys: dict[str, str],
    features: list[Field] | None = None,
    build: bool = True,
) -> ViewRows | None:
    """The rows of `view` (only `features`, default all) from its cache, building or
    extending the cache first when `build`; None when there is no fresh cache to use
    (the caller reads the source). Errors in the data are left to that read, which
    names them; definition errors (a missing column) are raised here as there."""
    if not fits(source, view) or isinstance(source, SqlSource):
        return None
    files, label = list_files(config, source)
    if not files:
        return None
    current = _fingerprint(files)
    folder = cache_folder(config, view.name)
    definition = _definition_key(source, view, keys)
    manifest = _read_manifest(folder / f"{definition}.json")
    runs = _runs(folder, manifest)
    if manifest is None or runs is None or manifest.files != current:
        if not build:
            return None
        # Its own database: an internal DuckDB error invalidates the database it ran in,
        # and must not take the engine's with it.
        builder = None
        try:
            builder = _builder(con)
            runs = _refresh(builder, label, source, view, keys, files, current, folder, definition)
        except (duckdb.Error, OSError) as error:
            # The source read names data errors; a read-only or full disk only costs speed.
            log.debug("no sorted cache for view '%s': %s", view.name, error)
            return None
        finally:
            if builder is not None:
                builder.close()
        if runs is None:
            return None
    return _rows(runs, source, view, keys, features)


def _builder(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A database for building the cache, with the engine's limits."""
    names = ("memory_limit", "threads", "temp_directory")
    values = con.sql(
        "SELECT " + ", ".join(f"current_setting({sql_string(n)})" for n in names)
    ).fetchall()[0]
    settings = {n: v for n, v in zip(names, values, strict=True) if v not in (None, "")}
    settings["autoinstall_known_extensions"] = False
    builder = duckdb.connect(":memory:", config=settings)
    builder.execute("SET TimeZone = 'UTC'")  # naive times are UTC (rule 1), as in the engine
    return builder


def _runs(folder: Path, manifest: _Manifest | None) -> list[Path] | None:
    """The manifest's run files, if they all exist."""
    if manifest is None:
        return None
    runs = [folder / name for name in manifest.runs]
    return runs if runs and all(run.exists() for run in runs) else None


def _rows(
    runs: list[Path],
    source: Source,
    view: FeatureView,
    keys: dict[str, str],
    features: list[Field] | None,
) -> ViewRows:
    wanted = list(features if features is not None else view.features)
    has_created = source.created_timestamp_field is not None
    columns = [quote(k) for k in keys] + [TS_COLUMN] + ([CREATED] if has_created else [])
    columns += [quote(f.name) for f in wanted]
    # One row per (keys, event time) over all runs: the sort key's later fields never
    # decide, and are kept only so that `latest_query` reads these rows like any others.
    created = f"'c': coalesce({CREATED}, '-infinity'::TIMESTAMPTZ), " if has_created else ""
    sort_key = f"{{'t': {TS_COLUMN}, {created}'o': 0::BIGINT}} AS {SORT_KEY}"
    sql = f"SELECT {', '.join(columns)}, {sort_key} FROM {_read(runs)}"
    return ViewRows(sql, keys, wanted, has_created, deduplicated=True)


def _read(runs: list[Path]) -> str:
    return "read_parquet([" + ", ".join(sql_string(str(run)) for run in runs) + "])"


def _refresh(
    con: duckdb.DuckDBPyConnection,
    label: str,
    source: Source,
    view: FeatureView,
    keys: dict[str, str],
    files: list[Path],
    current: list[_Entry],
    folder: Path,
    definition: str,
) -> list[Path] | None:
    """Bring the cache up to `files`: a new run of the added files when files were only
    appended and none of their (keys, event time) is in the cache already; else one run
    merged from the cache and the added files (or built from every file)."""
    manifest = _read_manifest(folder / f"{definition}.json")
    runs = _runs(folder, manifest)
    added = None
    if manifest is not None and runs is not None and current[: len(manifest.files)] == manifest.files:  # fmt: skip
        try:
            added = view_rows(_scan(con, files[len(manifest.files) :], label), source, view, keys)
        except InputError:  # the added files lack a column the earlier ones have
            added = None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{definition}-{_digest(current)}.parquet"
    if added is not None and runs is not None and len(runs) < _MAX_RUNS:
        by = ", ".join([*[quote(k) for k in keys], TS_COLUMN])
        clash = f"SELECT 1 FROM {{new}} AS n SEMI JOIN {_read(runs)} AS o USING ({by}) LIMIT 1"
        if _write(con, _deduplicated(added, []), path, files, current, check=clash):
            return _commit(folder, definition, current, [*runs, path])
    if added is None or runs is None:
        added, runs = view_rows(_scan(con, files, label), source, view, keys), []
    if not _write(con, _deduplicated(added, runs), path, files, current):
        return None
    return _commit(folder, definition, current, [path])


def _deduplicated(rows: ViewRows, runs: list[Path]) -> str:
    """Rule 2 within each (keys, event time) of `rows` and the cached `runs`: the row of
    the greatest sort key (created, then file and row; a cached row loses a full tie, as
    its file sorts before the added ones), sorted by keys and event time."""
    by = [quote(k) for k in rows.keys] + [TS_COLUMN]
    names = ([CREATED] if rows.has_created else []) + [f.name for f in rows.features]
    columns = by + [quote(name) for name in names]
    parts = [f"SELECT {', '.join(columns)}, {SORT_KEY} FROM ({rows.sql})"]
    if runs:
        created = f"'c': coalesce({CREATED}, '-infinity'::TIMESTAMPTZ), " if rows.has_created else ""  # fmt: skip
        old_key = f"{{'t': {TS_COLUMN}, {created}'o': {_PREVIOUS_ORDER}::BIGINT}}"
        parts.append(f"SELECT {', '.join(columns)}, {old_key} AS {SORT_KEY} FROM {_read(runs)}")
    # rank(), not row_number(): DuckDB 2.0 rewrites `row_number() = 1` (its
    # top_n_window_elimination) into a plan that fails on the file_index column (an
    # internal BIGINT/UBIGINT error). The file order `o` is unique in a partition, so
    # exactly one row ranks first. The key's fields, not the struct, for the same reason.
    order = ([f"{SORT_KEY}.c DESC"] if rows.has_created else []) + [f"{SORT_KEY}.o DESC"]
    return (
        f"SELECT {', '.join(columns)} FROM ({' UNION ALL '.join(parts)}) "
        f"QUALIFY rank() OVER (PARTITION BY {', '.join(by)} ORDER BY {', '.join(order)}) = 1 "
        f"ORDER BY {', '.join(by)}"
    )


def _write(
    con: duckdb.DuckDBPyConnection,
    query: str,
    path: Path,
    files: list[Path],
    current: list[_Entry],
    check: str | None = None,
) -> bool:
    """Write `query` to `path` atomically; False (nothing written) when a source file
    changed meanwhile, or when `check` (over the written rows, as `{new}`) finds a row."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        con.execute(f"COPY ({query}) TO {sql_string(str(temp))} (FORMAT parquet)")
        if check is not None:
            found = con.sql(check.format(new=f"read_parquet({sql_string(str(temp))})")).fetchall()
            if found:
                return False
        if _fingerprint(files) != current:  # a file changed while it was read
            return False
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return True


def _commit(folder: Path, definition: str, current: list[_Entry], runs: list[Path]) -> list[Path]:
    _write_manifest(folder / f"{definition}.json", _Manifest(current, [run.name for run in runs]))
    _prune(folder, definition, keep={run.name for run in runs})
    return runs


def _scan(con: duckdb.DuckDBPyConnection, files: list[Path], label: str) -> SourceScan:
    """The Parquet scan of `files` (those of the source, or the ones added since the cache)."""
    paths = "[" + ", ".join(sql_string(str(p)) for p in files) + "]"
    many = ", union_by_name = true" if len(files) > 1 else ""
    relation = f"read_parquet({paths}, file_row_number = true{many})"
    columns = describe(con, relation, label)
    columns.pop("file_row_number", None)
    return SourceScan(relation, columns, True, label=label)


def _fingerprint(files: list[Path]) -> list[_Entry]:
    entries = []
    for path in files:
        stat = path.stat()
        entries.append((str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino))
    return entries


def _digest(entries: list[_Entry]) -> str:
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:24]


def _definition_key(source: Source, view: FeatureView, keys: dict[str, str]) -> str:
    described = {
        "version": _VERSION,
        "source": source.model_dump(mode="json", exclude={"description", "owner", "tags"}),
        "keys": keys,
        "features": [[f.name, duckdb_type(f.dtype)] for f in view.features],
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:24]


def _read_manifest(path: Path) -> _Manifest | None:
    try:
        data = json.loads(path.read_text())
        return _Manifest([tuple(entry) for entry in data["files"]], [str(r) for r in data["runs"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_manifest(path: Path, manifest: _Manifest) -> None:
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    temp.write_text(json.dumps({"files": manifest.files, "runs": manifest.runs}))
    os.replace(temp, path)


def _prune(folder: Path, definition: str, keep: set[str]) -> None:
    """Delete replaced caches of this definition after the grace, and other definitions'
    caches and manifests unused for `_STALE_S`."""
    now = time.time()
    for entry in folder.iterdir():
        if entry.name in keep or entry.name.startswith("."):
            continue
        mine = entry.name.startswith(definition)
        if entry.name == f"{definition}.json":
            continue
        try:
            age = now - entry.stat().st_mtime
            if age > (_GRACE_S if mine else _STALE_S):
                entry.unlink()
        except FileNotFoundError:
            pass
