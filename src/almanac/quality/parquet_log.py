"""An append-only log of records, written to a folder of Parquet files off the caller's
path: what the serving log and the recorded expectation results share.

Callers append plain dicts (no I/O); a background thread, started by the first append,
takes the whole pending list once per `flush_seconds` and writes it as one new file
(`almanac.offline.writer.stage_parquet`, atomic). Past `capacity` pending weight,
records are dropped and counted rather than slow the caller. `flush()` writes now (a
reader in the same process calls it first); pending records are also written when the
process exits.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401 - see _flush_at_exit
import logging
import threading
import time
import weakref
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

# Imported now, not at the first write: that may be at exit, when no module that starts
# threads can be imported any more.
from almanac.offline.writer import stage_parquet

log = logging.getLogger("almanac.quality")
_OPEN: weakref.WeakSet[ParquetLog] = weakref.WeakSet()


class ParquetLog:
    def __init__(
        self,
        folder: Path,
        schema: pa.Schema,
        flush_seconds: float = 1.0,
        capacity: int = 100_000,
        what: str = "log",
        retention: timedelta | None = None,
    ) -> None:
        self.folder = folder
        self.retention = retention
        self._pruned = 0.0
        self.schema = schema
        self.flush_seconds = flush_seconds
        self.capacity = capacity
        self.what = what
        self.dropped = 0
        # Appends do not wake the writer: it takes the whole list once per
        # `flush_seconds` (a thread woken per call would take the GIL from the event loop
        # that many times).
        self._pending: list[dict[str, Any]] = []
        self._weight = 0
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        _OPEN.add(self)

    def append(self, record: dict[str, Any], weight: int = 1) -> bool:
        """Keep `record` for the next write; False if it was dropped (the log is full)."""
        with self._lock:
            if self._weight + weight > self.capacity:
                self.dropped += weight
                return False
            self._weight += weight
            self._pending.append(record)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name=f"almanac-{self.what}", daemon=True)  # fmt: skip
                self._thread.start()
        return True

    def flush(self) -> None:
        """Write what is pending now."""
        with self._lock:
            taken, self._pending, self._weight = self._pending, [], 0
        if taken:
            with self._write_lock:  # files appear in the order records were taken
                self._write(taken)

    def close(self) -> None:
        """Write what is pending and stop the writer."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()
            if self.retention is not None and time.monotonic() - self._pruned > _PRUNE_EVERY:
                self._pruned = time.monotonic()
                prune(self.folder, self.retention)

    def _write(self, records: list[dict[str, Any]]) -> None:
        try:
            stage_parquet(pa.Table.from_pylist(records, self.schema), self.folder).commit()
        except Exception as error:  # a log never fails its caller; it says so
            self.dropped += len(records)
            log.warning("%s: %d records not written: %s", self.what, len(records), error)


@atexit.register
def _flush_at_exit() -> None:
    # At exit no module that registers an exit hook of its own can be imported any
    # more; writing Parquet may import pandas (pyarrow checks for it), which imports
    # concurrent.futures.thread: imported above, before that point.
    for open_log in list(_OPEN):
        open_log.flush()


_PRUNE_EVERY = 60.0  # seconds between two looks for expired files


def prune(folder: Path, retention: timedelta) -> int:
    """Remove the log's files written more than `retention` ago (their names carry the
    time they were written); returns how many."""
    cutoff = time.time_ns() - int(retention.total_seconds() * 1e9)
    removed = 0
    for path in folder.glob("part-*.parquet") if folder.is_dir() else []:
        stamp = path.name.split("-")[1]
        if stamp.isdigit() and int(stamp) < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def retention_of(days: int) -> timedelta | None:
    return timedelta(days=days) if days > 0 else None


def flush_open(folder: Path) -> None:
    """Write now what this process's logs into `folder` hold (a reader's first step)."""
    for open_log in list(_OPEN):
        if open_log.folder == folder:
            open_log.flush()
