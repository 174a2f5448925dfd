"""Fixtures of the Spark engine's own tests: the starter repo on `offline: {engine: spark}`
(one local Spark per test process, shared by every engine the tests open)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from almanac import FeatureStore
from almanac.starter import create_starter_repo

END = datetime(2024, 6, 1, tzinfo=UTC)
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


def starter_on_spark(
    path: Path, online_url: str = "sqlite:///.almanac/online.db", spark: dict[str, object] = SPARK
) -> Path:
    """The starter repo with the Spark engine (`spark`: its settings): its SQL source
    rewritten in Spark SQL (the same rows), and `online.url` set."""
    create_starter_repo(path, users=300, events=20_000, end=END)
    config = (path / "almanac.yaml").read_text()
    config = re.sub(r"(?m)^  engine: duckdb.*$", "  engine: spark\n  spark: " + json.dumps(spark), config)  # fmt: skip
    config = re.sub(r"(?m)^  url: sqlite:///\.almanac/online\.db.*$", f"  url: {online_url}", config)  # fmt: skip
    (path / "almanac.yaml").write_text(config)
    features = (path / "features.py").read_text()
    events = (path / "data" / "watch_events.parquet").resolve()
    duckdb_sql = "FROM read_parquet('data/watch_events.parquet')\""
    assert duckdb_sql in features
    features = features.replace(duckdb_sql, f'FROM parquet.`{events}`", dialect="spark"')
    (path / "features.py").write_text(features)
    return path


@pytest.fixture
def spark_store(tmp_path: Path) -> Iterator[FeatureStore]:
    with FeatureStore(starter_on_spark(tmp_path / "repo")) as store:
        store.apply()
        yield store


@pytest.fixture
def duckdb_store(tmp_path: Path) -> Iterator[FeatureStore]:
    """The same starter repo (same data) on the DuckDB engine."""
    create_starter_repo(tmp_path / "duckdb_repo", users=300, events=20_000, end=END)
    with FeatureStore(tmp_path / "duckdb_repo") as store:
        store.apply()
        yield store
