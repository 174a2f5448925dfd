"""The serving log: feature vectors as they were served, for the skew report.

Sampling is by entity: an entity row is logged when a hash of its join-key values falls
under `sample_rate`, so an entity is logged on every request or on none (its history is
whole, as Chronon does it). Records are queued by the request (no I/O on its path) and a
background thread writes them every `flush_seconds`, or every `flush_rows` records, as
one Parquet file each under `<data_path>/.serving_log/` (a hidden folder: no source
scans it). A full queue drops records and counts them, rather than slow a request.

One row per (request, entity row): the read time, what was asked (`features` as JSON
or `feature_service`, and `full_feature_names`), the entity's join keys, and the served
values and statuses, as JSON objects keyed by output column.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import zlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

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
_BUCKETS = 1_000_000


def log_folder(config: RepoConfig) -> Path:
    return config.resolve_path(config.offline.data_path) / ".serving_log"


def sampled(keys: dict[str, Any], rate: float) -> bool:
    """Whether the entity with these join-key values is logged (stable across processes)."""
    text = json.dumps(keys, sort_keys=True, default=str).encode()
    return zlib.crc32(text) % _BUCKETS < rate * _BUCKETS


class ServingLog:
    def __init__(
        self,
        folder: Path,
        sample_rate: float,
        flush_seconds: float = 1.0,
        flush_rows: int = 10_000,
        capacity: int = 100_000,
    ) -> None:
        self.folder = folder
        self.sample_rate = sample_rate
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self.dropped = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(capacity)
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
        """Queue the sampled entity rows of one answer (never blocks)."""
        if self.sample_rate <= 0:
            return
        names = list(response.join_keys)
        rows = len(next(iter(response.join_keys.values()), []))
        asked = None if features is None else json.dumps(list(features))
        for i in range(rows):
            keys = {name: response.join_keys[name][i] for name in names}
            if not sampled(keys, self.sample_rate):
                continue
            item = {
                "read_time": read_time,
                "features": asked,
                "feature_service": feature_service,
                "full_feature_names": full_feature_names,
                "entity": json.dumps(keys, sort_keys=True, default=str),
                "values": json.dumps({f: v[i] for f, v in response.values.items()}, default=str),
                "statuses": json.dumps({f: str(s[i]) for f, s in response.statuses.items()}),
            }
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.dropped += 1

    def close(self) -> None:
        """Write what is queued and stop."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        """Write a file when `flush_rows` records are pending or the oldest pending one
        has waited `flush_seconds`."""
        pending: list[dict[str, Any]] = []
        deadline = float("inf")
        while True:
            try:
                wait = None if not pending else max(0.0, deadline - time.monotonic())
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = {}
            if item is None:
                self._write(pending)
                return
            if item:
                if not pending:
                    deadline = time.monotonic() + self.flush_seconds
                pending.append(item)
            if pending and (len(pending) >= self.flush_rows or time.monotonic() >= deadline):
                self._write(pending)
                pending = []

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
