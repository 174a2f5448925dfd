"""A small feature repo for the offline tests: one int64-keyed view over a Parquet folder,
one string-keyed push view, each with a few rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from almanac.config import RepoConfig
from almanac.definitions import (
    Entity,
    FeatureView,
    Field,
    FileSource,
    Float64,
    Int64,
    PushSource,
    String,
)
from almanac.offline import open_offline_engine
from almanac.ports.offline import OfflineEngine
from almanac.registry.catalog import Catalog

T0 = datetime(2024, 5, 1, tzinfo=UTC)
ENGINES = ["duckdb", "spark"]
# One small local Spark per test process (the engine shares its session): two cores,
# few shuffle partitions and buckets, no UI.
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


def offline_section(engine: str, **duckdb: object) -> dict[str, object]:
    """`offline:` of almanac.yaml for a test on `engine`."""
    if engine == "spark":
        return {"engine": "spark", "spark": SPARK}
    return {"engine": "duckdb", "duckdb": duckdb}


def engine_config(engine: str, path: Path, **duckdb: object) -> RepoConfig:
    return RepoConfig(project="t", offline=offline_section(engine, **duckdb)).model_copy(
        update={"repo_path": path}
    )


def ts(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@dataclass
class Repo:
    path: Path
    config: RepoConfig
    catalog: Catalog
    engine: OfflineEngine

    def view(self, name: str) -> FeatureView:
        return self.catalog.view(name)


user = Entity(name="user", join_keys=["user_id"], dtype=Int64)
device = Entity(name="device", join_keys=["device_id"], dtype=String)
stats = FeatureView(
    name="stats",
    entities=[user],
    source=FileSource(name="stats_src", path="data/stats/", created_timestamp_field="created"),
    schema=[Field("clicks", Int64), Field("score", Float64)],
    ttl=timedelta(hours=10),
)
device_view = FeatureView(
    name="device_info",
    entities=[device],
    source=PushSource(name="device_push"),
    schema=[Field("os", String)],
)


def stats_rows() -> pa.Table:
    times = pa.array([ts(0), ts(1), ts(1), ts(5)], pa.timestamp("us", tz="UTC"))
    created = pa.array([ts(0), ts(3), ts(2), ts(5)], pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            "user_id": pa.array([1, 1, 1, 2], pa.int64()),
            "event_timestamp": times,
            "created": created,
            "clicks": pa.array([10, 11, 12, None], pa.int64()),
            "score": pa.array([0.5, 0.6, 0.7, 0.8]),
        }
    )


def make_repo(path: Path, engine: str = "duckdb", **offline: object) -> Repo:
    config = engine_config(engine, path, **offline)
    (path / "data" / "stats").mkdir(parents=True)
    pq.write_table(stats_rows(), path / "data" / "stats" / "part-0.parquet")
    catalog = Catalog.from_definitions([stats, device_view])
    opened = open_offline_engine(config)
    assert type(opened).__name__ == ("SparkEngine" if engine == "spark" else "DuckDBEngine")
    return Repo(path, config, catalog, opened)
