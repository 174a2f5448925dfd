"""The serving log: feature vectors as they were served, for the skew report.

Sampling is by entity: an entity row is logged when a hash of its join-key values falls
under `sample_rate` (`sampled`), so an entity is logged on every request or on none (its history is
whole, as Chronon does it). A request only keeps a reference to its answer (no I/O, no
encoding on its path); a background thread encodes and writes what was kept every
`flush_seconds`, as one Parquet file under `<data_path>/.serving_log/` (a hidden folder:
no source scans it; see `almanac.quality.parquet_log`). Past `capacity` rows waiting,
rows are dropped and counted rather than slow a request.

One row per answer: the read time, what was asked (`features` as JSON or
`feature_service`, and `full_feature_names`), and the sampled entity rows as JSON
objects of columns — the join keys (`entity`), the served values and their statuses,
each keyed by column name with one list entry per logged entity row.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from almanac.config import RepoConfig
from almanac.online.response import OnlineResponse
from almanac.quality.parquet_log import ParquetLog, flush_open
from almanac.semantics.validate import UTC_US

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
    # uint64 arrays wrap on overflow (as `& _MASK` does), silently.
    total = _key_hashes(columns[0])
    for column in columns[1:]:
        total = total * _U_MIX + _key_hashes(column)
    return np.flatnonzero((total * _U_MIX) >> _U_SHIFT < limit).tolist()


_SMALL = 32
_MIX = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1
_U_MIX, _U_SHIFT = np.uint64(_MIX), np.uint64(44)


def _key_hash(value: Any) -> int:
    if type(value) is int:
        return (value * _MIX) & _MASK
    return (zlib.crc32(str(value).encode()) * _MIX) & _MASK


def _key_hashes(values: list[Any]) -> np.ndarray:
    """`_key_hash` of each value (bools are not keys: join keys are int64 or text)."""
    array = np.asarray(values)
    if array.dtype == np.int64:  # every value an integer
        hashed: np.ndarray = array.view(np.uint64) * _U_MIX
        return hashed
    if all(type(v) is int for v in values):  # integers beyond int64 (a uint64 array)
        return np.asarray(values, dtype=object).astype(np.uint64) * _U_MIX
    crcs = np.fromiter((zlib.crc32(str(v).encode()) for v in values), np.uint64, len(values))
    return crcs * _U_MIX


class ServingLog:
    def __init__(
        self,
        folder: Path,
        sample_rate: float,
        flush_seconds: float = 1.0,
        capacity: int = 100_000,
        retention: timedelta | None = None,
    ) -> None:
        self.folder = folder
        self.sample_rate = sample_rate
        self._log = ParquetLog(folder, SCHEMA, flush_seconds, capacity, "serving-log", retention)

    @property
    def dropped(self) -> int:
        """Entity rows not logged: the log was full, or a write failed."""
        return self._log.dropped

    def record(
        self,
        response: OnlineResponse,
        read_time: datetime,
        features: Sequence[str] | None,
        feature_service: str | None,
        full_feature_names: bool,
    ) -> None:
        """Keep the sampled entity rows of one answer (never blocks on I/O; the writer
        thread writes them, off the request's path)."""
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
            if len(rows) == 1:  # the common case at low rates (itemgetter of one is no tuple)
                only = rows[0]
                parts = tuple({name: [column[only]] for name, column in part.items()} for part in parts)  # fmt: skip
            else:
                pick = itemgetter(*rows)
                parts = tuple({name: list(pick(column)) for name, column in part.items()} for part in parts)  # fmt: skip
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
        self._log.append(record, len(rows))

    def flush(self) -> None:
        self._log.flush()

    def close(self) -> None:
        """Write what is kept and stop."""
        self._log.close()


def encode(value: Any) -> str:
    """JSON as the log keeps it (keys sorted; times in ISO 8601): the skew report
    encodes offline values the same way to compare them."""
    return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS).decode()


def read(
    config: RepoConfig,
    low: datetime | None = None,
    high: datetime | None = None,
    feature_service: str | None = None,
) -> pa.Table:
    """The logged answers with read times in [low, high] (of one service, if named),
    what this process still holds included."""
    folder = log_folder(config)
    flush_open(folder)
    files = sorted(folder.glob("*.parquet")) if folder.exists() else []
    if not files:
        return SCHEMA.empty_table()
    table = pa.concat_tables([pq.read_table(path, schema=SCHEMA) for path in files])
    keep = pa.chunked_array([pa.repeat(pa.scalar(True), table.num_rows)])
    if feature_service is not None:
        keep = pc.equal(table["feature_service"], feature_service)
    if low is not None:
        keep = pc.and_(keep, pc.greater_equal(table["read_time"], pa.scalar(low, UTC_US)))
    if high is not None:
        keep = pc.and_(keep, pc.less_equal(table["read_time"], pa.scalar(high, UTC_US)))
    return table.filter(keep.fill_null(False))
