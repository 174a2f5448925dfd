"""The registry's operational state, beside the definitions: leases, run history and the
status that long-running processes publish.

Definitions are versioned and applied through plans; this state is not. It is what
processes of one project share through the one database they all reach (the SQLite file
on one machine, PostgreSQL for a team):

- **leases**: a named right held by one process until it expires or is released, so two
  schedulers never run the same view at once, and a crashed holder's lease lapses;
- **runs**: an append-only history (every materialization, its window, rows, outcome);
- **status**: the latest value per (kind, key), written by its publisher (a stream
  worker's lag and rates), read by others (the feature server's `/metrics`).

Both SQL backends share this code through `SqlRegistry` (`almanac.registry.store`).
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta
from typing import Any

STATE_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS almanac_leases (
        project TEXT NOT NULL, name TEXT NOT NULL, holder TEXT NOT NULL,
        expires_at TEXT NOT NULL, PRIMARY KEY (project, name))""",
    """CREATE TABLE IF NOT EXISTS almanac_runs (
        project TEXT NOT NULL, kind TEXT NOT NULL, started_at TEXT NOT NULL,
        subject TEXT NOT NULL, outcome TEXT NOT NULL, record TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS almanac_runs_by_time
        ON almanac_runs (project, kind, started_at)""",
    """CREATE TABLE IF NOT EXISTS almanac_status (
        project TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        updated_at TEXT NOT NULL, PRIMARY KEY (project, kind, key))""",
]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class OperationalState(ABC):
    """Leases, runs and status on a `SqlRegistry` (its connection, lock and dialect)."""

    project: str
    _lock: threading.RLock

    # Provided by SqlRegistry (`almanac.registry.store`).
    @abstractmethod
    def _open(self, create: bool) -> bool: ...
    @abstractmethod
    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any: ...
    @abstractmethod
    def _begin_write(self) -> None: ...
    @abstractmethod
    def _commit(self) -> None: ...
    @abstractmethod
    def _rollback(self) -> None: ...
    @abstractmethod
    def _read_all(self, sql: str, params: tuple[Any, ...]) -> list[Any]: ...
    @abstractmethod
    def _lock_schema(self) -> None: ...
    @abstractmethod
    def _table_exists(self, table: str) -> bool: ...
    @abstractmethod
    def _end_read(self) -> None: ...

    def _write(self, statements: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Run statements in one write transaction; the rows of each (or None)."""
        with self._lock:
            self._open(create=True)
            self._ensure_state()
            self._begin_write()
            try:
                out = []
                for sql, params in statements:
                    cursor = self._execute(sql, params)
                    out.append(cursor.fetchall() if cursor.description else None)
                self._commit()
                return out
            except BaseException:
                self._rollback()
                raise

    # ---- leases -----------------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, ttl: timedelta) -> bool:
        """Take or renew the lease `name` for `holder` for `ttl`: True if `holder` holds
        it now (it was free, expired, or already its own), False if another does."""
        now = datetime.now(UTC)
        [_, rows] = self._write([
            ("DELETE FROM almanac_leases WHERE project = ? AND name = ? AND expires_at < ?",
             (self.project, name, _iso(now))),
            ("INSERT INTO almanac_leases (project, name, holder, expires_at) VALUES (?, ?, ?, ?) "
             "ON CONFLICT (project, name) DO UPDATE SET expires_at = excluded.expires_at "
             "WHERE almanac_leases.holder = excluded.holder RETURNING holder",
             (self.project, name, holder, _iso(now + ttl))),
        ])  # fmt: skip
        return bool(rows)

    def release_lease(self, name: str, holder: str) -> None:
        self._write([
            ("DELETE FROM almanac_leases WHERE project = ? AND name = ? AND holder = ?",
             (self.project, name, holder)),
        ])  # fmt: skip

    def leases(self) -> dict[str, tuple[str, datetime]]:
        """Unexpired leases: name → (holder, expires at)."""
        with self._lock:
            if not self._open(create=False) or not self._has("almanac_leases"):
                return {}
            rows = self._read_all(
                "SELECT name, holder, expires_at FROM almanac_leases WHERE project = ? AND expires_at >= ?",
                (self.project, _iso(datetime.now(UTC))),
            )  # fmt: skip
        return {name: (holder, datetime.fromisoformat(at)) for name, holder, at in rows}

    # ---- runs -------------------------------------------------------------------------------

    def record_run(self, kind: str, subject: str, started_at: datetime, outcome: str, record: dict[str, Any]) -> None:  # fmt: skip
        self._write([
            ("INSERT INTO almanac_runs (project, kind, started_at, subject, outcome, record) "
             "VALUES (?, ?, ?, ?, ?, ?)",
             (self.project, kind, _iso(started_at), subject, outcome, json.dumps(record, default=str))),
        ])  # fmt: skip

    def run_summary(self, kind: str) -> list[tuple[str, str, int, datetime]]:
        """Per subject and outcome: how many runs, and when the latest started."""
        with self._lock:
            if not self._open(create=False) or not self._has("almanac_runs"):
                return []
            rows = self._read_all(
                "SELECT subject, outcome, COUNT(*), MAX(started_at) FROM almanac_runs "
                "WHERE project = ? AND kind = ? GROUP BY subject, outcome",
                (self.project, kind),
            )
        return [(s, o, int(n), datetime.fromisoformat(at)) for s, o, n, at in rows]

    def prune_runs(self, kind: str, before: datetime) -> None:
        self._write([
            ("DELETE FROM almanac_runs WHERE project = ? AND kind = ? AND started_at < ?",
             (self.project, kind, _iso(before))),
        ])  # fmt: skip

    def runs(
        self, kind: str, subject: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The newest runs first (at most `limit`)."""
        sql = "SELECT record FROM almanac_runs WHERE project = ? AND kind = ?"
        params: tuple[Any, ...] = (self.project, kind)
        if subject is not None:
            sql, params = sql + " AND subject = ?", (*params, subject)
        if since is not None:
            sql, params = sql + " AND started_at >= ?", (*params, _iso(since))
        with self._lock:
            if not self._open(create=False) or not self._has("almanac_runs"):
                return []
            rows = self._read_all(sql + " ORDER BY started_at DESC LIMIT ?", (*params, int(limit)))
        return [json.loads(row[0]) for row in rows]

    # ---- status -----------------------------------------------------------------------------

    def put_status(self, kind: str, key: str, value: dict[str, Any]) -> None:
        self._write([
            ("INSERT INTO almanac_status (project, kind, key, value, updated_at) VALUES (?, ?, ?, ?, ?) "
             "ON CONFLICT (project, kind, key) DO UPDATE SET value = excluded.value, "
             "updated_at = excluded.updated_at",
             (self.project, kind, key, json.dumps(value, default=str), _iso(datetime.now(UTC)))),
        ])  # fmt: skip

    def status(self, kind: str) -> dict[str, tuple[datetime, dict[str, Any]]]:
        """key → (updated at, value) for every status of `kind`."""
        with self._lock:
            if not self._open(create=False) or not self._has("almanac_status"):
                return {}
            rows = self._read_all(
                "SELECT key, updated_at, value FROM almanac_status WHERE project = ? AND kind = ?",
                (self.project, kind),
            )
        return {key: (datetime.fromisoformat(at), json.loads(value)) for key, at, value in rows}

    def _has(self, table: str) -> bool:
        """Whether a state table exists (a registry made by an earlier version lacks them
        until this process first writes state); reads never create it."""
        if getattr(self, "_state_ready", False):
            return True
        found = self._table_exists(table)
        self._end_read()
        return found

    def _ensure_state(self) -> None:
        if getattr(self, "_state_ready", False):
            return
        self._begin_write()
        try:
            self._lock_schema()
            for statement in STATE_SCHEMA:
                self._execute(statement)
            self._commit()
        except BaseException:
            self._rollback()
            raise
        self._state_ready = True
