"""The embedded online store: one SQLite file in WAL mode.

Layout: one table per (project, view), named ``"<project>:<view>"`` (':' cannot occur
in a name, so two pairs never share a table), with the join keys as a composite
primary key (``WITHOUT ROWID``: the row lives in the key's B-tree, so a point lookup is
one index descent), an ``@ts`` column (event time, int microseconds), an ``@created``
column (created time, null when the row has none) and one column per feature. A table per view rather than one table of encoded values because SQLite then
stores numbers and text natively (no decoding on the hot path for most dtypes), a
lookup reads one row for all of a view's features, and deleting a view is DROP TABLE.
Watermarks live in the same file, in ``almanac_watermarks`` (a name without ':', so no
view's table can take it).

Monotonic writes (rule 3) are one statement per row, run by SQLite itself:
``INSERT ... ON CONFLICT (keys) DO UPDATE ... WHERE (excluded."@ts", excluded."@created")
>= ("@ts", "@created")`` (a null created time compares as the oldest). SQLite
serializes writers, so the rule holds across threads and processes; each batch is one
transaction, so a failed batch writes nothing.

Connections are per thread (sqlite3 objects must not be shared across threads while in
use); readers never wait for writers in WAL mode.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from almanac.config import RepoConfig
from almanac.errors import ConfigError, InputError, StoreUnavailableError
from almanac.online.batch import NULL_DTYPE, KeyColumn, PreparedBatch, numbers, prepare_batch
from almanac.online.codec import (
    sqlite_decoder,
    sqlite_values,
)
from almanac.ports.online import Merge, OnlineStore, ViewRead, ViewRows, Watermark
from almanac.semantics.times import datetime_to_micros, micros_to_datetime

TS_COLUMN = '"@ts"'
CREATED_COLUMN = '"@created"'
_RESERVED = ("@ts", "@created")
_OLDEST = -(2**63)  # a null created time in comparisons: older than any
# Column affinities, so SQLite keeps each value's natural storage class.
_AFFINITY = {
    "bool": "INTEGER",
    "int32": "INTEGER",
    "int64": "INTEGER",
    "timestamp": "INTEGER",
    "float32": "REAL",
    "float64": "REAL",
    "string": "TEXT",
    "bytes": "BLOB",
}
_KEY_AFFINITY = {"int64": "INTEGER", "string": "TEXT"}
# Keys per SELECT ... IN (...): well below SQLite's limit on bound parameters.
_KEYS_PER_QUERY = 500
# How long a read keeps believing that a table or column is missing.
_RECHECK_SECONDS = 1.0
# Writers may wait this long for another writer's transaction to finish.
_WRITE_BUSY_SECONDS = 60.0
# `read_async` reads up to this many (entity, view) rows inline on the event loop and
# hands bigger reads to a thread. A warm WAL read is CPU work that holds the GIL (point
# lookup of 10 columns: 8-20 µs; 100 entities: 0.3-0.5 ms), so a thread buys no
# parallelism and costs a hop plus GIL hand-overs: measured through the HTTP server
# (benchmarks/bench_server.py, uvloop), 100 entities x 10 features gave 1,156 req/s
# inline against 610 req/s in a thread. Above the limit the read may take tens of ms;
# in a thread, the GIL's switch interval lets the loop answer small requests meanwhile.
# Readers never wait for writers in WAL mode, so an inline read cannot block on a lock.
INLINE_READ_ROWS = 1000


_WATERMARKS = "almanac_watermarks"


def _table(project: str, view: str) -> str:
    return f'"{project}:{view}"'


def _quote(name: str) -> str:
    return f'"{name}"'


class SqliteOnlineStore(OnlineStore):
    @classmethod
    def from_config(cls, config: RepoConfig) -> SqliteOnlineStore:
        url = config.resolve_url(config.online.url)
        path = url.removeprefix("sqlite:///")
        if not url.startswith("sqlite:///") or not path:
            raise ConfigError(f"online.url: expected sqlite:///path/to/file.db, got {url!r}")
        online = config.online
        return cls(path, timeout_seconds=online.timeout_seconds, batch_size=online.batch_size)

    def __init__(self, path: str | Path, *, timeout_seconds: float = 2.0, batch_size: int = 50_000):
        self.path = Path(path)
        self.timeout_seconds = timeout_seconds
        self.batch_size = batch_size
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Per (project, view, features, dtypes): how to read them (see `_layout`).
        self._layouts: dict[tuple[Any, ...], _Layout] = {}
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connection()
        except (OSError, sqlite3.Error) as error:
            raise StoreUnavailableError(
                f"cannot open the SQLite online store at {self.path}: {error}"
            ) from None

    # ---- connections ----------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "pid", None) == os.getpid():  # not a new thread nor a forked child
            current: sqlite3.Connection = local.connection
            return current
        if self._closed:
            raise StoreUnavailableError("the SQLite online store is closed")
        connection = sqlite3.connect(
            self.path,
            timeout=max(self.timeout_seconds, _WRITE_BUSY_SECONDS),
            isolation_level=None,  # autocommit; write_batch opens its own transaction
            check_same_thread=False,  # only so that close() may close it from any thread
            cached_statements=256,
        )
        connection.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across application crashes in WAL mode; a power loss may
        # lose the last transactions, which the next materialization rewrites anyway.
        connection.execute("PRAGMA synchronous=NORMAL")
        local.connection, local.pid = connection, os.getpid()
        with self._lock:
            self._connections.append(connection)
        return connection

    def close(self) -> None:
        self._closed = True
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local = threading.local()

    def ping(self) -> None:
        try:
            self._connection().execute("SELECT 1").fetchone()
        except sqlite3.Error as error:
            raise StoreUnavailableError(f"SQLite online store at {self.path}: {error}") from None

    # ---- schema ---------------------------------------------------------------------

    def _table_columns(self, table: str) -> set[str] | None:
        """Feature columns of a table (None when it does not exist)."""
        rows = self._connection().execute(f"PRAGMA table_info({table})").fetchall()
        return {row[1] for row in rows if row[5] == 0 and row[1] not in _RESERVED} if rows else None

    def _ensure_table(
        self, connection: sqlite3.Connection, table: str, batch: PreparedBatch
    ) -> None:
        """Create the view's table, or add columns for features it does not have yet.
        Runs inside the write transaction, so concurrent writers agree on the schema."""
        rows = connection.execute(f"PRAGMA table_info({table})").fetchall()
        if not rows:
            columns = [f"{_quote(k.name)} {_KEY_AFFINITY[k.dtype]} NOT NULL" for k in batch.keys]
            columns.append(f"{TS_COLUMN} INTEGER NOT NULL")
            columns.append(f"{CREATED_COLUMN} INTEGER")
            columns += [
                f"{_quote(f.name)} {_AFFINITY.get(f.dtype, 'BLOB')}"
                if f.dtype != NULL_DTYPE
                else _quote(f.name)
                for f in batch.features
            ]
            primary = ", ".join(_quote(k.name) for k in batch.keys)
            connection.execute(
                f"CREATE TABLE {table} ({', '.join(columns)}, PRIMARY KEY ({primary})) "
                "WITHOUT ROWID"
            )
        else:
            # SQLite would quietly turn a text key '1' into 1 in an INTEGER column.
            stored = [(r[1], r[2]) for r in sorted(rows, key=lambda r: r[5]) if r[5] > 0]
            given = [(k.name, _KEY_AFFINITY[k.dtype]) for k in batch.keys]
            if stored != given:
                raise InputError(
                    f"view '{batch.view}' is stored with join keys {stored}, not {given}; "
                    "delete the view's online data first"
                )
            existing = {row[1] for row in rows}
            if "@created" not in existing:  # a table made before created times were kept
                connection.execute(f"ALTER TABLE {table} ADD COLUMN {CREATED_COLUMN} INTEGER")
            missing = [f for f in batch.features if f.name not in existing]
            if not missing:
                return
            for feature in missing:
                affinity = _AFFINITY.get(feature.dtype, "BLOB")
                connection.execute(
                    f"ALTER TABLE {table} ADD COLUMN {_quote(feature.name)} {affinity}"
                )
        self._layouts.clear()

    # ---- writes ---------------------------------------------------------------------

    def write_batch(
        self, project: str, view: str, join_keys: list[str], features: list[str], table: pa.Table
    ) -> int:
        batch = prepare_batch(view, table, join_keys, features)
        if batch.num_rows == 0:
            return 0
        with self._write_transaction() as connection:
            return self._upsert(connection, project, batch)

    def merge_batch(
        self,
        project: str,
        view: str,
        join_keys: list[str],
        features: list[str],
        table: pa.Table,
        merge: Merge,
    ) -> int:
        batch = prepare_batch(view, table, join_keys, features)
        if batch.num_rows == 0:
            return 0
        # The transaction holds SQLite's write lock from the read to the write, so no
        # other writer (thread or process) can change these entities in between.
        with self._write_transaction() as connection:
            self._ensure_table(connection, _table(project, view), batch)
            dtypes = [f.dtype for f in batch.features]
            keys = [_python_keys(k) for k in batch.keys]
            request = ViewRead(view, join_keys, keys, features, dtypes)
            stored = self._read_view(connection, project, request)
            merged = prepare_batch(view, merge(stored, table), join_keys, features)
            return self._upsert(connection, project, merged)

    @contextmanager
    def _write_transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the write lock from the start)."""
        connection = self._connection()
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as error:
            raise StoreUnavailableError(f"SQLite online store at {self.path}: {error}") from None

    def _upsert(self, connection: sqlite3.Connection, project: str, batch: PreparedBatch) -> int:
        """Write a batch inside a transaction; returns the rows that changed the store."""
        name = _table(project, batch.view)
        self._ensure_table(connection, name, batch)
        keys = [_quote(k.name) for k in batch.keys]
        # Without created times the column is left out of the INSERT: `excluded` then holds
        # its default (null), and each row binds one parameter fewer.
        created = [CREATED_COLUMN] if batch.created_times is not None else []
        features = [_quote(f.name) for f in batch.features]
        columns = [*keys, TS_COLUMN, *created, *features]
        updates = ", ".join(f"{c} = excluded.{c}" for c in [TS_COLUMN, CREATED_COLUMN, *features])
        sql = (
            f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates} "
            f"WHERE (excluded.{TS_COLUMN}, coalesce(excluded.{CREATED_COLUMN}, {_OLDEST})) "
            f">= ({name}.{TS_COLUMN}, coalesce({name}.{CREATED_COLUMN}, {_OLDEST}))"
        )
        before = connection.total_changes
        for part in batch.slices(self.batch_size):
            python_columns = [_python_keys(k) for k in part.keys]
            python_columns.append(numbers(part.event_times).tolist())
            if part.created_times is not None:
                python_columns.append(part.created_times.to_pylist())
            python_columns += [sqlite_values(f) for f in part.features]
            connection.executemany(sql, zip(*python_columns, strict=True))
        return connection.total_changes - before

    def delete_view(self, project: str, view: str) -> None:
        with self._write_transaction() as connection:  # data and watermark together
            connection.execute(f"DROP TABLE IF EXISTS {_table(project, view)}")
            if self._table_columns(_WATERMARKS) is not None:
                connection.execute(
                    f"DELETE FROM {_WATERMARKS} WHERE project = ? AND view = ?", (project, view)
                )
        self._layouts.clear()

    def watermarks(self, project: str) -> dict[str, Watermark]:
        if self._table_columns(_WATERMARKS) is None:
            return {}
        rows = self._connection().execute(
            f"SELECT view, micros, layout FROM {_WATERMARKS} WHERE project = ?", (project,)
        )
        return {
            view: Watermark(None if micros is None else micros_to_datetime(micros), layout)
            for view, micros, layout in rows
        }

    def set_watermark(
        self, project: str, view: str, watermark: datetime | None, layout: str
    ) -> None:
        with self._write_transaction() as connection:
            connection.execute(
                f"CREATE TABLE IF NOT EXISTS {_WATERMARKS} (project TEXT NOT NULL, "
                "view TEXT NOT NULL, micros INTEGER, layout TEXT NOT NULL, "
                "PRIMARY KEY (project, view)) WITHOUT ROWID"
            )
            table = _WATERMARKS
            connection.execute(
                f"INSERT INTO {table} VALUES (?, ?, ?, ?) ON CONFLICT (project, view) "
                "DO UPDATE SET micros = excluded.micros, layout = excluded.layout "
                f"WHERE excluded.layout != {table}.layout OR (excluded.micros IS NOT NULL "
                f"AND ({table}.micros IS NULL OR excluded.micros > {table}.micros))",
                (
                    project,
                    view,
                    None if watermark is None else datetime_to_micros(watermark),
                    layout,
                ),
            )

    # ---- reads ----------------------------------------------------------------------

    def read(self, project: str, requests: list[ViewRead]) -> list[ViewRows]:
        connection = self._connection()
        out = []
        for request in requests:
            try:
                out.append(self._read_view(connection, project, request))
            except sqlite3.OperationalError as error:
                # A table or column dropped by another process since we last looked.
                if "no such" not in str(error):
                    raise StoreUnavailableError(f"SQLite online store: {error}") from None
                self._layouts.clear()
                out.append(self._read_view(connection, project, request))
        return out

    async def read_async(self, project: str, requests: list[ViewRead]) -> list[ViewRows]:
        rows = sum(len(r.key_columns[0]) if r.key_columns else 0 for r in requests)
        if rows <= INLINE_READ_ROWS:
            return self.read(project, requests)
        return await asyncio.to_thread(self.read, project, requests)

    async def ping_async(self) -> None:
        self.ping()  # SELECT 1 on an open connection: microseconds

    @property
    def backend(self) -> str:
        return "sqlite"

    def _layout(self, project: str, request: ViewRead) -> _Layout:
        """How to read a view: its table, the feature columns that exist, where each
        requested feature sits in a selected row (-1: no such column yet, read as null),
        and the decoders. A layout that misses the table or a column is looked at again
        after a second, as another process may create them."""
        cache_key = (project, request.view, tuple(request.features), tuple(request.dtypes))
        layout = self._layouts.get(cache_key)
        if layout is not None and (layout.complete or time.monotonic() < layout.recheck_at):
            return layout
        table = _table(project, request.view)
        existing = self._table_columns(table)
        present = [f for f in request.features if existing is not None and f in existing]
        positions = [present.index(f) if f in present else -1 for f in request.features]
        layout = _Layout(
            table=table,
            exists=existing is not None,
            complete=existing is not None and len(present) == len(request.features),
            recheck_at=time.monotonic() + _RECHECK_SECONDS,
            keys=[_quote(k) for k in request.join_keys],
            selected=", ".join([TS_COLUMN, *(_quote(f) for f in present)]),
            positions=positions,
            decoders=[sqlite_decoder(d) for d in request.dtypes],
            statements={},
        )
        self._layouts[cache_key] = layout
        return layout

    def _read_view(
        self, connection: sqlite3.Connection, project: str, request: ViewRead
    ) -> ViewRows:
        columns = request.key_columns
        count = len(columns[0]) if columns else 0
        layout = self._layout(project, request)
        if not layout.exists:
            return ViewRows([None] * count, [[None] * count for _ in request.features])
        key_width = len(columns)
        entity_keys = list(zip(*columns, strict=True)) if key_width > 1 else columns[0]
        unique = list(dict.fromkeys(entity_keys)) if count > 1 else entity_keys
        if len(unique) == 1:  # one entity (maybe asked for several times): a point lookup
            found = connection.execute(layout.sql(1), [column[0] for column in columns]).fetchone()
            return _to_view_rows([found] * count, 0, layout)
        # Many entities: SELECT ... IN (...) per chunk of distinct keys, then put rows
        # back in request order (duplicates in the request get the same row). Chunks are
        # padded to a power of two so that few distinct statements get prepared.
        by_key: dict[Any, tuple[Any, ...]] = {}
        for start in range(0, len(unique), _KEYS_PER_QUERY):
            chunk = unique[start : start + _KEYS_PER_QUERY]
            size = min(1 << (len(chunk) - 1).bit_length(), _KEYS_PER_QUERY)
            chunk += [chunk[-1]] * (size - len(chunk))
            params = chunk if key_width == 1 else [v for key in chunk for v in key]
            cursor = connection.execute(layout.sql(size), params)
            if key_width == 1:
                by_key.update((row[0], row) for row in cursor)
            else:
                by_key.update((row[:key_width], row) for row in cursor)
        get = by_key.get
        return _to_view_rows([get(key) for key in entity_keys], key_width, layout)


def _python_keys(key: KeyColumn) -> list[Any]:
    keys: list[Any] = (
        numbers(key.values).tolist() if key.dtype == "int64" else key.values.to_pylist()
    )
    return keys


def _to_view_rows(rows: list[tuple[Any, ...] | None], start: int, layout: _Layout) -> ViewRows:
    """Selected rows (None: not found), each `start` key columns, then the event time
    and the present features, as decoded columns."""
    times = [None if row is None else row[start] for row in rows]
    columns = []
    for position, decode in zip(layout.positions, layout.decoders, strict=True):
        if position < 0:
            columns.append([None] * len(rows))
            continue
        at = start + 1 + position
        column = [None if row is None else row[at] for row in rows]
        columns.append(column if decode is None else decode(column))
    return ViewRows(times, columns)


@dataclass
class _Layout:
    table: str
    exists: bool
    complete: bool
    recheck_at: float
    keys: list[str]
    selected: str
    positions: list[int]
    decoders: list[Any]
    statements: dict[int, str]

    def sql(self, key_count: int) -> str:
        """The SELECT for `key_count` entities (with the keys first when more than one)."""
        statement = self.statements.get(key_count)
        if statement is None:
            keys = self.keys
            if key_count == 1:
                where = " AND ".join(f"{k} = ?" for k in keys)
                statement = f"SELECT {self.selected} FROM {self.table} WHERE {where}"
            else:
                if len(keys) == 1:
                    where = f"{keys[0]} IN ({', '.join('?' * key_count)})"
                else:
                    row = "(" + ", ".join("?" * len(keys)) + ")"
                    where = f"({', '.join(keys)}) IN (VALUES {', '.join([row] * key_count)})"
                selected = ", ".join([*keys, self.selected])
                statement = f"SELECT {selected} FROM {self.table} WHERE {where}"
            self.statements[key_count] = statement
        return statement
