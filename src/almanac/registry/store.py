"""Where the registry lives: a SQLite file (embedded) or PostgreSQL (for teams).

Both backends share one SQL implementation; they differ only in how they connect, how
they spell a placeholder and how they lock for an apply. Every object is stored as JSON
(never pickle) with its full version history; `apply` is a compare-and-swap on the
registry's version number, so two concurrent applies can never lose an update: the
second one fails with a message telling the user to re-plan.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from almanac.errors import ConcurrentApplyError, ConfigError, StoreUnavailableError
from almanac.registry.catalog import Catalog
from almanac.registry.diff import Plan
from almanac.registry.state import OperationalState

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS almanac_registry (
        project TEXT PRIMARY KEY, version BIGINT NOT NULL, updated_at TEXT NOT NULL,
        author TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS almanac_objects (
        project TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, spec TEXT NOT NULL,
        version BIGINT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (project, kind, name))""",
    """CREATE TABLE IF NOT EXISTS almanac_object_versions (
        project TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, version BIGINT NOT NULL,
        registry_version BIGINT NOT NULL, action TEXT NOT NULL, spec TEXT, diff TEXT NOT NULL,
        author TEXT NOT NULL, applied_at TEXT NOT NULL, PRIMARY KEY (project, kind, name, version))""",
]


@dataclass(frozen=True)
class VersionRecord:
    """One recorded change of one object."""

    kind: str
    name: str
    version: int
    registry_version: int
    action: str
    spec: dict[str, Any] | None
    diff: list[dict[str, Any]]
    author: str
    applied_at: datetime


def current_author() -> str:
    return os.environ.get("ALMANAC_AUTHOR") or os.environ.get("USER") or getpass.getuser()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class SqlRegistry(OperationalState, ABC):
    """The registry of one project in a SQL database (and its operational state:
    `almanac.registry.state`)."""

    placeholder = "?"

    def __init__(self, project: str) -> None:
        self.project = project
        self._lock = threading.RLock()
        self._conn: Any = None  # connected on first use
        self._exists = False  # the tables are known to be there
        self._created = False  # ... and this project's row

    def _open(self, create: bool) -> bool:
        """Whether the registry exists, connecting on first use. Only `apply` creates
        it (`create`): a read of a registry that is not there (a typo'd path, nothing
        applied yet) reads as empty and leaves no file, folder or table behind."""
        if create and not self._created:
            self._conn = self._conn or self._connect()
            self._create()
            self._exists = self._created = True
        elif not self._exists:
            self._exists = self._found()
        return self._exists

    def _create(self) -> None:
        self._begin_write()
        try:
            self._lock_schema()
            for statement in _SCHEMA:
                self._execute(statement)
            self._execute(
                "INSERT INTO almanac_registry (project, version, updated_at, author) "
                "VALUES (?, 0, ?, ?) ON CONFLICT (project) DO NOTHING",
                (self.project, _now(), current_author()),
            )
            self._commit()
        except BaseException:
            self._rollback()
            raise

    # ---- dialect hooks ------------------------------------------------------------------

    @abstractmethod
    def _connect(self) -> Any:
        """A DB-API connection in autocommit mode (transactions are explicit)."""

    @abstractmethod
    def _found(self) -> bool:
        """Whether the registry's tables exist, creating nothing to find out."""

    def _begin_write(self) -> None:
        self._execute("BEGIN")

    def _lock_registry_row(self) -> None:
        """Serialize applies of this project (the SQLite backend locks at BEGIN)."""

    def _lock_schema(self) -> None:
        """Serialize creating the tables (the SQLite backend locks at BEGIN)."""

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        if self.placeholder != "?":
            sql = sql.replace("?", self.placeholder)
        return self._conn.execute(sql, params)

    def _commit(self) -> None:
        self._conn.execute("COMMIT")

    def _rollback(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.execute("ROLLBACK")

    # ---- reads ----------------------------------------------------------------------------

    def version(self) -> int:
        with self._lock:
            if not self._open(create=False):
                return 0
            row = self._read_one(
                "SELECT version FROM almanac_registry WHERE project = ?", (self.project,)
            )
        return int(row[0]) if row else 0

    def load(self) -> Catalog:
        """The applied catalog, read in one transaction so it is consistent."""
        with self._lock:
            if not self._open(create=False):
                return Catalog.from_specs({}, version=0)
            self._execute("BEGIN")
            try:
                version = self._execute(
                    "SELECT version FROM almanac_registry WHERE project = ?", (self.project,)
                ).fetchone()
                rows = self._execute(
                    "SELECT kind, name, spec FROM almanac_objects WHERE project = ?",
                    (self.project,),
                ).fetchall()
            finally:
                self._commit()
        specs: dict[str, dict[str, dict[str, Any]]] = {}
        for kind, name, spec in rows:
            specs.setdefault(kind, {})[name] = json.loads(spec)
        return Catalog.from_specs(specs, version=int(version[0]) if version else 0)

    def history(self, name: str, kind: str | None = None) -> list[VersionRecord]:
        sql = (
            "SELECT kind, name, version, registry_version, action, spec, diff, author, applied_at "
            "FROM almanac_object_versions WHERE project = ? AND name = ?"
        )
        params: tuple[Any, ...] = (self.project, name)
        if kind is not None:
            sql += " AND kind = ?"
            params += (kind,)
        with self._lock:
            if not self._open(create=False):
                return []
            rows = self._read_all(sql + " ORDER BY kind, version", params)
        return [
            VersionRecord(
                kind=r[0],
                name=r[1],
                version=int(r[2]),
                registry_version=int(r[3]),
                action=r[4],
                spec=json.loads(r[5]) if r[5] else None,
                diff=json.loads(r[6]),
                author=r[7],
                applied_at=datetime.fromisoformat(r[8]),
            )
            for r in rows
        ]

    def _read_one(self, sql: str, params: tuple[Any, ...]) -> Any:
        row = self._execute(sql, params).fetchone()
        self._end_read()
        return row

    def _read_all(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        rows: list[Any] = self._execute(sql, params).fetchall()
        self._end_read()
        return rows

    def _end_read(self) -> None:
        """PostgreSQL opens a transaction for every read; close it."""

    # ---- apply ----------------------------------------------------------------------------

    def apply(self, plan: Plan, author: str | None = None) -> int:
        """Write the plan's changes atomically; returns the new registry version.

        Fails with ConcurrentApplyError if another apply landed since the plan was made.
        """
        if plan.empty:
            return plan.base_version
        author = author or current_author()
        applied_at = _now()
        with self._lock:
            self._open(create=True)
            self._begin_write()
            try:
                self._lock_registry_row()
                row = self._execute(
                    "SELECT version, author, updated_at FROM almanac_registry WHERE project = ?",
                    (self.project,),
                ).fetchone()
                if int(row[0]) != plan.base_version:
                    raise ConcurrentApplyError(
                        f"the registry changed while this apply was prepared (version "
                        f"{plan.base_version} → {row[0]}, applied by {row[1]} at {row[2]}); "
                        "run `almanac plan` again and re-apply"
                    )
                new_version = plan.base_version + 1
                for change in plan.changes:
                    self._write_change(change, new_version, author, applied_at)
                self._execute(
                    "UPDATE almanac_registry SET version = ?, updated_at = ?, author = ? "
                    "WHERE project = ?",
                    (new_version, applied_at, author, self.project),
                )
                self._commit()
            except BaseException:
                self._rollback()
                raise
        return new_version

    def _write_change(self, change: Any, registry_version: int, author: str, at: str) -> None:
        key = (self.project, change.kind, change.name)
        last = self._execute(
            "SELECT COALESCE(MAX(version), 0) FROM almanac_object_versions "
            "WHERE project = ? AND kind = ? AND name = ?",
            key,
        ).fetchone()
        version = int(last[0]) + 1
        spec = json.dumps(change.after, sort_keys=True) if change.after is not None else None
        diff = json.dumps([f.to_json() for f in change.fields])
        self._execute(
            "INSERT INTO almanac_object_versions (project, kind, name, version, registry_version, "
            "action, spec, diff, author, applied_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*key, version, registry_version, change.action, spec, diff, author, at),
        )
        if change.action == "delete":
            self._execute(
                "DELETE FROM almanac_objects WHERE project = ? AND kind = ? AND name = ?", key
            )
        else:
            self._execute(
                "INSERT INTO almanac_objects (project, kind, name, spec, version, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (project, kind, name) DO UPDATE SET "
                "spec = excluded.spec, version = excluded.version, updated_at = excluded.updated_at",
                (*key, spec, version, at),
            )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()


class SqliteRegistry(SqlRegistry):
    """The embedded default: one SQLite file, safe across processes."""

    def __init__(self, path: str | Path, project: str) -> None:
        self.path = Path(path)
        super().__init__(project)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _found(self) -> bool:
        if not self.path.is_file():
            return False
        self._conn = self._conn or self._connect()
        found = self._execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'almanac_registry'"
        ).fetchone()
        return found is not None

    def _table_exists(self, table: str) -> bool:
        found = self._execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        return found is not None

    def _begin_write(self) -> None:
        # IMMEDIATE takes the write lock now, so the version check and the writes that
        # follow cannot interleave with another process's apply.
        self._execute("BEGIN IMMEDIATE")


class PostgresRegistry(SqlRegistry):
    """A registry shared by a team: PostgreSQL, one row lock per project for applies."""

    placeholder = "%s"

    def __init__(self, url: str, project: str, connect_timeout: float = 10) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        super().__init__(project)
        self._conn = self._connect()  # an unreachable database is reported at once

    def _connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(
                self.url, connect_timeout=int(self.connect_timeout), autocommit=True
            )
        except psycopg.OperationalError as error:
            raise StoreUnavailableError(f"cannot reach the registry database: {error}") from None

    def _found(self) -> bool:
        self._conn = self._conn or self._connect()
        row = self._execute("SELECT to_regclass('almanac_registry') IS NOT NULL").fetchone()
        return bool(row[0])

    def _table_exists(self, table: str) -> bool:
        return bool(self._execute("SELECT to_regclass(?) IS NOT NULL", (table,)).fetchone()[0])

    def _lock_registry_row(self) -> None:
        self._execute(
            "SELECT version FROM almanac_registry WHERE project = ? FOR UPDATE", (self.project,)
        )

    def _lock_schema(self) -> None:
        # CREATE TABLE IF NOT EXISTS is not safe against a concurrent CREATE in PostgreSQL:
        # two processes opening a new registry at once would fail on a unique violation.
        self._execute("SELECT pg_advisory_xact_lock(hashtext('almanac_registry_schema'))")

    def _begin_write(self) -> None:
        self._execute("BEGIN")

    def _end_read(self) -> None:
        pass  # autocommit: a plain read holds no transaction


def open_registry(url: str, project: str) -> SqlRegistry:
    """A registry backend from its URL: sqlite:///path or postgresql://..."""
    if url.startswith("sqlite:///"):
        return SqliteRegistry(url.removeprefix("sqlite:///"), project)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresRegistry(url, project)
    raise ConfigError(
        f"registry.url: unsupported URL '{url}' (use sqlite:///path or postgresql://...)"
    )


class CachedRegistry:
    """What readers hold: the catalog in memory, reloaded when an apply lands.

    A read never waits on the database for longer than one cheap version check every
    `refresh_seconds`; a long-running server calls `refresh()` from a background task and
    reads with `catalog(check=False)`.
    """

    def __init__(self, backend: SqlRegistry, refresh_seconds: float = 1.0) -> None:
        self.backend = backend
        self.refresh_seconds = refresh_seconds
        self._catalog: Catalog | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()

    def catalog(self, fresh: bool = False, check: bool = True) -> Catalog:
        cached = self._catalog
        if cached is None or fresh:
            return self.refresh(force=True)
        if check and time.monotonic() - self._checked_at >= self.refresh_seconds:
            return self.refresh()
        return cached

    def refresh(self, force: bool = False) -> Catalog:
        """Reload the catalog if the registry's version moved (or when forced)."""
        with self._lock:
            self._checked_at = time.monotonic()
            if force or self._catalog is None or self.backend.version() != self._catalog.version:
                self._catalog = self.backend.load()
            return self._catalog

    def apply(self, plan: Plan, author: str | None = None) -> int:
        version = self.backend.apply(plan, author)
        self.refresh(force=True)
        return version

    def history(self, name: str, kind: str | None = None) -> list[VersionRecord]:
        return self.backend.history(name, kind)

    @property
    def state(self) -> OperationalState:
        """Leases, run history and published status (`almanac.registry.state`)."""
        return self.backend

    def close(self) -> None:
        self.backend.close()
