"""Offline log compaction: a training set over a push/stream log of many small files
(one per micro-batch, as `almanac stream` and pushes append them) before and after
`compact`, and the compaction's own rate.

Data (generated per run in a temporary folder): 100k customers, one file per 10 s of
events; "small" is 200 files × 1,000 rows, "medium" 2,000 files × 1,000 rows (about 5.5
hours of a worker committing every 10 s); a spine of 1M rows (100k for small). Figures
are the best of 3 joins each, in this process.

    .venv/bin/python benchmarks/bench_compaction.py small
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

SIZES = {"small": (200, 1_000, 100_000), "medium": (2_000, 1_000, 1_000_000), "large": (2_000, 1_000, 1_000_000)}  # fmt: skip
ENTITIES = 100_000
FEATURES_PY = """
from almanac import Entity, FeatureView, Field, Float64, Int64, PushSource
customer = Entity(name="customer", join_keys=["customer_id"], dtype=Int64)
events = PushSource(name="events")
latest = FeatureView(name="latest", entities=[customer], source=events,
                     schema=[Field("amount", Float64), Field("n", Int64)])
"""
BASE = datetime(2024, 1, 1, tzinfo=UTC)


def _store(root: Path, files: int, rows: int) -> Any:
    from almanac import FeatureStore
    from almanac.offline.files import push_folder
    from almanac.offline.writer import stage_parquet

    repo = root / "repo"
    repo.mkdir()
    (repo / "almanac.yaml").write_text("project: bench_compaction\n")
    (repo / "features.py").write_text(FEATURES_PY)
    store = FeatureStore(repo)
    store.apply()
    folder = push_folder(store.config, store.catalog.sources["events"])  # type: ignore[arg-type]
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(files):  # each as a push writes it: staged, then renamed into place
        micros = int((BASE - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1e6) + i * 10_000_000  # fmt: skip
        times = micros + rng.integers(0, 10_000_000, rows)
        table = pa.table({
            "customer_id": rng.integers(0, ENTITIES, rows),
            "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
            "amount": rng.random(rows), "n": rng.integers(0, 100, rows),
        })  # fmt: skip
        stage_parquet(table, folder).commit()
    return store


def _join_seconds(store: Any, spine: pa.Table) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        store.get_historical_features(spine, ["latest:amount", "latest:n"]).to_arrow()
        best = min(best, time.perf_counter() - started)
    return best


def _record(size: str, case: str, metric: str, value: float, unit: str, note: str) -> dict[str, Any]:  # fmt: skip
    return {"benchmark": "compaction", "size": size, "backend": "duckdb", "case": case,
            "metric": metric, "value": value, "unit": unit, "note": note}  # fmt: skip


def run(sizes: list[str]) -> list[dict[str, Any]]:
    records = []
    for size in dict.fromkeys(sizes):
        files, rows, spine_rows = SIZES[size]
        root = Path(tempfile.mkdtemp(prefix="almanac-bench-compaction-"))
        try:
            store = _store(root, files, rows)
            rng = np.random.default_rng(1)
            end = BASE + timedelta(seconds=files * 10)
            spine = pa.table({
                "customer_id": rng.integers(0, ENTITIES, spine_rows),
                "event_timestamp": pa.array([end] * spine_rows, pa.timestamp("us", tz="UTC")),
            })  # fmt: skip
            before = _join_seconds(store, spine)
            started = time.perf_counter()
            done = store.compact(min_age="0s")[0]
            seconds = time.perf_counter() - started
            after = _join_seconds(store, spine)
            label = f"{files:,} files × {rows:,} rows, spine {spine_rows:,}"
            records += [
                _record(size, "many small files", "seconds", before, "s", f"training set, {label}"),
                _record(size, "compacted", "seconds", after, "s",
                        f"the same after compact ({(after - before) / before:+.0%})"),
                _record(size, "compact", "rows_per_second", done.rows / seconds, "rows/s",
                        f"{done.merged_files:,} files merged into 1 in {seconds:.2f} s"),
            ]  # fmt: skip
            store.close()
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return records


if __name__ == "__main__":
    for item in run(sys.argv[1:] or ["small"]):
        print(item)
