"""The serving log: feature vectors as they were served, for the skew report.

Sampling is by entity: an entity row is logged when a hash of its join-key values falls
under `sample_rate` (`sampled`), so an entity is logged on every request or on none (its history is
whole, as Chronon does it). A request only keeps a reference to its answer (no I/O, no
encoding on its path); a background thread encodes and writes what was kept every
`flush_seconds`, as one Parquet file under `<data_path>/.serving_log/` (a hidden folder:
no source scans it). Past `capacity` rows waiting, rows are dropped and counted rather
than slow a request.

One row per answer: the read time, what was asked (`features` as JSON or
`feature_service`, and `full_feature_names`), and the sampled entity rows as JSON
objects of columns — the join keys (`entity`), the served values and their statuses,
each keyed by column name with one list entry per logged entity row.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from almanac.config import RepoConfig
from almanac.online.response import OnlineResponse
from almanac.semantics.validate import UTC_US

log = logging.getLogger("almanac.quality")
SCHEMA = pa.schema([
    ("read_time", UTC_US),
    ("features", pa.string()),
    ("feature_service", pa.string()),
    ("full_feature_names", pa.bool_()),
    ("entity", pa.string()),
    ("values", pa.string()),
    ("statuses", pa.string()),
])  # fmt: skip


def log_folder(config: RepoConfig) -> Path:
    return config.resolve_path(config.offline.data_path) / ".serving_log"


def sampled(join_keys: dict[str, list[Any]], rate: float) -> list[int]:
    """The rows (indices) whose entities are logged: those whose join-key hash falls
    under `rate`. The hash is of the values, not Python's `hash`, so every process and
    every run logs the same entities (a multiplicative hash of integer keys, CRC-32 of
    text); large batches are hashed vectorized."""
    columns = list(join_keys.values())
    rows = len(columns[0]) if columns else 0
    if rate >= 1.0:
        return list(range(rows))
    limit = int(rate * (1 << 20))
    if rows <= _SMALL:  # NumPy's fixed cost would dominate: plain integers
        out = []
        for i in range(rows):
            mixed = 0
            for column in columns:
                mixed = (mixed * _MIX + _key_hash(column[i])) & _MASK
            if (mixed * _MIX & _MASK) >> 44 < limit:
                out.append(i)
        return out
    total = np.zeros(rows, np.uint64)
    with np.errstate(over="ignore"):
        for column in columns:
            total = total * np.uint64(_MIX) + _key_hashes(column)
        buckets = (total * np.uint64(_MIX)) >> np.uint64(44)
    return np.flatnonzero(buckets < np.uint64(limit)).tolist()


_SMALL = 32
_MIX = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1


def _key_hash(value: Any) -> int:
    if type(value) is int:
        return (value * _MIX) & _MASK
    return (zlib.crc32(str(value).encode()) * _MIX) & _MASK


def _key_hashes(values: list[Any]) -> np.ndarray:
    with np.errstate(over="ignore"):
        if all(type(v) is int for v in values):
            return np.asarray(values, dtype=np.int64).view(np.uint64) * np.uint64(_MIX)
        crcs = np.fromiter((zlib.crc32(str(v).encode()) for v in values), np.uint64, len(values))
        return crcs * np.uint64(_MIX)


class ServingLog:
    def __init__(
        self,
        folder: Path,
        sample_rate: float,
        flush_seconds: float = 1.0,
        capacity: int = 100_000,
    ) -> None:
        self.folder = folder
        self.sample_rate = sample_rate
        self.flush_seconds = flush_seconds
        self.capacity = capacity
        self.dropped = 0
        # Requests append here and nothing wakes the writer: it takes the whole list once
        # per `flush_seconds` (a thread woken per request would take the GIL from the
        # event loop that many times).
        self._pending: list[dict[str, Any]] = []
        self._queued = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="almanac-serving-log", daemon=True)
        self._thread.start()

    def record(
        self,
        response: OnlineResponse,
        read_time: datetime,
        features: Sequence[str] | None,
        feature_service: str | None,
        full_feature_names: bool,
    ) -> None:
        """Keep the sampled entity rows of one answer (never blocks on I/O; the writer
        thread encodes them, off the request's path)."""
        if self.sample_rate <= 0:
            return
        rows = sampled(response.join_keys, self.sample_rate)
        if not rows:
            return
        total = len(next(iter(response.join_keys.values()), []))
        parts: tuple[dict[str, list[Any]], ...] = (
            response.join_keys, response.values, response.statuses,
        )  # fmt: skip
        if len(rows) < total:
            parts = tuple({name: [column[i] for i in rows] for name, column in part.items()} for part in parts)  # fmt: skip
        # One record per answer, its columns encoded now in one call each (C speed):
        # nothing the garbage collector scans is kept, and the writer only writes.
        keys, values, statuses = parts
        record = {
            "read_time": read_time,
            "features": None if features is None else encode(list(features)),
            "feature_service": feature_service,
            "full_feature_names": full_feature_names,
            "entity": encode(keys),
            "values": encode(values),
            "statuses": encode(statuses),
        }
        with self._lock:
            if self._queued + len(rows) > self.capacity:
                self.dropped += len(rows)
                return
            self._queued += len(rows)
            self._pending.append(record)

    def close(self) -> None:
        """Write what is kept and stop."""
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self._flush()
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            taken, self._pending, self._queued = self._pending, [], 0
        if taken:
            self._write(taken)

    def _write(self, items: list[dict[str, Any]]) -> None:
        if not items:
            return
        from almanac.offline.writer import stage_parquet

        try:
            table = pa.Table.from_pylist(items, SCHEMA)
            stage_parquet(table, self.folder).commit()
        except Exception as error:  # the log never fails a request; it says so
            self.dropped += len(items)
            log.warning("serving log: %d records not written: %s", len(items), error)


def encode(value: Any) -> str:
    """JSON as the log keeps it (keys sorted; times in ISO 8601): the skew report
    encodes offline values the same way to compare them."""
    return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS).decode()
