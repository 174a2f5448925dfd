"""Deterministic sample data for the starter repo: users' segments, watch events, and
labels to train on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

GENRES = ["drama", "comedy", "documentary", "thriller", "animation", "sci-fi", "romance", "horror"]
SEGMENTS = ["casual", "binger", "family", "cinephile", "new"]
DAYS = 90


def default_end() -> datetime:
    """Today, 00:00 UTC: the data ends just before now, so online values are fresh."""
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def generate(
    folder: Path,
    users: int = 3000,
    events: int = 300_000,
    seed: int = 7,
    end: datetime | None = None,
) -> None:
    """Write users' segments (daily snapshots), watch events and training labels over the
    `DAYS` days before `end`. The same seed and end give the same data."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    end = end or default_end()
    start = end - timedelta(days=DAYS)
    ids = np.array([f"{i:04x}" for i in rng.choice(16**4, size=users, replace=False)])

    # Watch events: heavy users watch a lot, each has a favourite genre.
    activity = rng.pareto(1.5, size=users) + 0.1
    who = rng.choice(users, size=events, p=activity / activity.sum())
    favourite = rng.integers(0, len(GENRES), size=users)
    genre = np.where(rng.random(events) < 0.6, favourite[who], rng.integers(0, len(GENRES), events))
    seconds = rng.integers(0, DAYS * 86400, size=events)
    start_us = int(start.timestamp() * 1_000_000)
    events_table = pa.table({
        "user_id": ids[who],
        "event_timestamp": pa.array(start_us + seconds.astype(np.int64) * 1_000_000, pa.timestamp("us", tz="UTC")),
        "title_id": rng.integers(1, 5000, size=events).astype(np.int64),
        "genre": np.array(GENRES)[genre],
        "watch_seconds": rng.integers(60, 7200, size=events).astype(np.int64),
    })  # fmt: skip
    pq.write_table(events_table.sort_by("event_timestamp"), folder / "watch_events.parquet")

    # Segments: a daily snapshot per user; a user's segment changes now and then.
    days = np.arange(DAYS)
    base_segment = rng.integers(0, len(SEGMENTS), size=users)
    changes = rng.random((users, DAYS)) < 0.03
    segment = (base_segment[:, None] + np.cumsum(changes, axis=1)) % len(SEGMENTS)
    day_us = start_us + days * 86400 * 1_000_000
    pq.write_table(pa.table({
        "user_id": np.repeat(ids, DAYS),
        "event_timestamp": pa.array(np.tile(day_us, users), pa.timestamp("us", tz="UTC")),
        "user_segment": np.array(SEGMENTS)[segment.ravel()],
    }), folder / "user_segments.parquet")  # fmt: skip

    con = duckdb.connect()
    con.register("events", events_table)

    # Labels for a training set: did the user watch anything in the week after T?
    label_who = rng.integers(0, users, size=5000)
    label_seconds = rng.integers(30 * 86400, (DAYS - 7) * 86400, size=5000)
    labels = pa.table({
        "user_id": ids[label_who],
        "event_timestamp": pa.array(start_us + label_seconds.astype(np.int64) * 1_000_000, pa.timestamp("us", tz="UTC")),
    })  # fmt: skip
    con.register("labels", labels)
    labelled = con.sql("""
        SELECT l.user_id, l.event_timestamp,
               EXISTS (SELECT 1 FROM events e WHERE e.user_id = l.user_id
                        AND e.event_timestamp > l.event_timestamp
                        AND e.event_timestamp <= l.event_timestamp + INTERVAL 7 DAY) AS watched_next_week
        FROM labels l ORDER BY l.event_timestamp, l.user_id
    """).arrow()
    pq.write_table(_table(labelled), folder / "labels.parquet")


def _table(result: pa.Table | pa.RecordBatchReader) -> pa.Table:
    # DuckDB 2 returns a RecordBatchReader from .arrow(); older versions a Table.
    return result.read_all() if isinstance(result, pa.RecordBatchReader) else result
