"""A feature repo for the aggregation tests, and a brute-force reference in plain Python.

The repo declares two aggregation views over one Parquet file of events: `spend`
(exact windows, every function) and `spend_tiled` (``tile="1h"``), plus an ordinary
feature view on the same source, so that one call mixes them.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from almanac.store import FeatureStore

BASE = datetime(2024, 3, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

FEATURES_PY = """
from almanac import (Aggregation, AggregationView, Entity, FeatureView, Field, FileSource,
                     Float64, Int64, String)

customer = Entity(name="customer", join_keys=["customer_id"], dtype=Int64)
events = FileSource(path="data/events.parquet", timestamp_field="ts")
COLUMNS = [Field("amount", Float64), Field("qty", Int64), Field("merchant", String)]

spend = AggregationView(
    name="spend", entities=[customer], source=events, columns=COLUMNS,
    aggregations=[
        Aggregation(function="count", windows=["1h", "1d"]),
        Aggregation(column="amount", function="count", windows=["1d"]),
        Aggregation(column="amount", function="sum", windows=["1h", "1d"]),
        Aggregation(column="amount", function="mean", windows=["1d"]),
        Aggregation(column="amount", function="min", windows=["1h"]),
        Aggregation(column="amount", function="max", windows=["1d"]),
        Aggregation(column="amount", function="stddev", windows=["1d"]),
        Aggregation(column="amount", function="variance", windows=["1h"]),
        Aggregation(column="amount", function="last", windows=["1d"]),
        Aggregation(column="qty", function="sum", windows=["1d"]),
        Aggregation(column="merchant", function="count_distinct", windows=["1h", "1d"]),
        Aggregation(column="merchant", function="last", windows=["1h"]),
        Aggregation(column="merchant", function="max", windows=["1d"]),
    ],
)

spend_tiled = AggregationView(
    name="spend_tiled", entities=[customer], source=events, columns=COLUMNS, tile="1h",
    aggregations=[
        Aggregation(function="count", windows=["2h", "1d"]),
        Aggregation(column="amount", function="sum", windows=["2h"]),
        Aggregation(column="amount", function="stddev", windows=["1d"]),
        Aggregation(column="merchant", function="count_distinct", windows=["1d"]),
        Aggregation(column="amount", function="last", windows=["2h"]),
    ],
)

latest = FeatureView(name="latest", entities=[customer], source=events,
                     schema=[Field("amount", Float64)])
"""

VIEWS = ("spend", "spend_tiled")


@dataclass
class AggRepo:
    path: Path
    store: FeatureStore

    def write_events(self, rows: list[dict[str, Any]], tz: str = "UTC") -> None:
        table = pa.table(
            {
                "customer_id": pa.array([r["customer_id"] for r in rows], pa.int64()),
                "ts": pa.array([r["ts"] for r in rows], pa.timestamp("us", tz=tz)),
                "amount": pa.array([r["amount"] for r in rows], pa.float64()),
                "qty": pa.array([r["qty"] for r in rows], pa.int64()),
                "merchant": pa.array([r["merchant"] for r in rows], pa.string()),
            }
        )
        pq.write_table(table, self.path / "data" / "events.parquet")

    def reset_online(self) -> None:
        for view in VIEWS:
            self.store.online.delete_view(self.store.project, view)


ENGINES = ["duckdb", "spark"]
# One small local Spark per test process (the engine shares its session).
SPARK = {
    "master": "local[2]",
    "buckets": 3,
    "conf": {
        "spark.sql.shuffle.partitions": "3",
        "spark.default.parallelism": "2",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.adaptive.enabled": "false",
        # The JIT's first tier only: these jobs are small and many, and C2's compiling
        # costs a third of the JVM's CPU time on them (the results are the same).
        "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
    },
}


def offline_yaml(engine: str) -> str:
    """The `offline:` line of almanac.yaml for `engine` (YAML reads JSON)."""
    section = {"engine": "spark", "spark": SPARK} if engine == "spark" else {"engine": engine}
    return f"offline: {json.dumps(section)}\n"


def make_repo(path: Path, online_url: str, engine: str = "duckdb") -> AggRepo:
    (path / "data").mkdir(parents=True, exist_ok=True)
    (path / "almanac.yaml").write_text(
        f"project: agg\nonline:\n  url: {online_url}\n" + offline_yaml(engine)
    )
    (path / "features.py").write_text(FEATURES_PY)
    made = AggRepo(path, FeatureStore(path))
    made.write_events([])
    made.store.apply()
    return made


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def reference(
    events: list[dict[str, Any]], key: int, at: datetime, function: str, column: str | None,
    window: timedelta, tile: timedelta | None,
) -> Any:  # fmt: skip
    """The aggregate by definition: the key's events with lower < t <= at."""
    now = micros(at)
    lower = now - micros(EPOCH + window)
    if tile is not None:
        g = micros(EPOCH + tile)
        lower -= lower % g
    chosen = [e for e in events if e["customer_id"] == key and lower < micros(e["ts"]) <= now]
    if column is None:
        return len(chosen)
    values = [e[column] for e in chosen if e[column] is not None]
    if function == "count":
        return len(values)
    if function == "count_distinct":
        return len(set(values))
    if not values:
        return None
    if function == "sum":
        return math.fsum(values) if isinstance(values[0], float) else sum(values)
    if function == "mean":
        return math.fsum(values) / len(values)
    if function == "min":
        return min(values)
    if function == "max":
        return max(values)
    if function in ("stddev", "variance"):
        if len(values) < 2:
            return None
        variance = statistics.variance(values)
        return math.sqrt(variance) if function == "stddev" else variance
    if function == "last":
        pairs = [(micros(e["ts"]), e[column]) for e in chosen if e[column] is not None]
        return max(pairs)[1]
    raise AssertionError(function)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b
