"""Materialization throughput: offline → online, entity-rows/s, into SQLite and Redis.

On the benchmark repo of `datagen.py` (medium: 100k + 10k entities from 2.1M rows;
large: 1M + 100k entities from 10.7M rows), a full `materialize` of both views into a
fresh online store, timed end to end (the DuckDB latest-row query, encoding and writes).
The Redis server is started on a free port for the run.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from almanac.config import load_config
from almanac.store import FeatureStore
from datagen import SIZES, make_repo
from servers import start_redis, start_redis_cluster

END = datetime(2024, 6, 1, tzinfo=UTC)  # after the generated history


def _materialize(repo: Path, online_url: str) -> tuple[int, float]:
    config = load_config(repo, {**os.environ, "ALMANAC_ONLINE_URL": online_url})
    with FeatureStore(config=config) as store:
        store.apply()
        started = time.perf_counter()
        result = store.materialize(None, END)
        return result.rows, time.perf_counter() - started


def run(sizes: list[str]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    redis = start_redis()
    cluster = start_redis_cluster()  # 3 masters + 3 replicas, beside single-node Redis
    try:
        for size in sizes:
            spec = SIZES[size]
            repo = make_repo(size)
            entities = spec.users + spec.merchants
            folder = Path(tempfile.mkdtemp(prefix="almanac-bench-"))
            backends = {"sqlite": f"sqlite:///{folder / 'online.db'}", "redis": redis.url, "redis_cluster": cluster.url}  # fmt: skip
            for backend, url in backends.items():
                rows, seconds = _materialize(repo, url)
                assert rows == entities, (rows, entities)
                note = f"{entities:,} entities from {spec.rows + spec.merchant_rows:,} rows, 2 views, 6 features"
                records.append({
                    "benchmark": "materialize", "size": size, "backend": backend, "case": "full",
                    "metric": "entity_rows_per_s", "value": round(rows / seconds), "unit": "rows/s",
                    "note": f"{note}; {seconds:.2f} s",
                })  # fmt: skip
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        redis.stop()
        cluster.stop()
    return records


if __name__ == "__main__":
    for record in run(sys.argv[1:] or ["small"]):
        print(record)
