"""Online store figures: bulk write throughput and SDK read latency, beside the floors.

`run(["small"])` or `run(["medium"])` returns one record per figure. It starts its own
redis-server on a free port (tests/servers.py) and an SQLite file in a temp folder.
Cases: 1 entity x 10 features (p50/p99 over >= 10k calls) and 100 entities x 10
features, through `get_online_features`; the raw redis-py HMGET / pipeline and raw
sqlite3 SELECT of the same data are measured in the same run as floors.

    .venv/bin/python benchmarks/bench_online.py small
"""

from __future__ import annotations

import gc
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from almanac.config import RepoConfig
from almanac.definitions import Entity, FeatureView, Field, PushSource
from almanac.online import OnlineStore, open_online_store
from almanac.online.redis.wire import feature_field, key_encoder, ts_field
from almanac.online.retrieval import get_online_features
from almanac.registry.catalog import Catalog
from servers import start_redis, start_redis_cluster

ROWS = {"small": 100_000, "medium": 1_000_000, "large": 5_000_000}
SINGLE_CALLS = {"small": 10_000, "medium": 20_000, "large": 20_000}
BATCH_CALLS = {"small": 1_000, "medium": 3_000, "large": 3_000}
FEATURES = {f"f{i}": "float64" for i in range(4)} | {f"c{i}": "int64" for i in range(3)}
FEATURES |= {"r0": "float32", "segment": "string", "active": "bool"}
PROJECT = "bench"
VIEW = "stats"


@dataclass
class _Store:
    catalog: Catalog
    online: OnlineStore
    config: RepoConfig
    project: str = PROJECT


def _table(rows: int) -> pa.Table:
    rng = np.random.default_rng(0)
    stamp = np.datetime64(int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1e6), "us")
    columns: dict[str, Any] = {
        "user_id": pa.array(np.arange(rows, dtype=np.int64)),
        "event_timestamp": pa.array(
            stamp + rng.integers(0, 86_400_000_000, rows).astype("timedelta64[us]"),
            pa.timestamp("us", tz="UTC"),
        ),
    }
    for name, dtype in FEATURES.items():
        if dtype == "float64":
            columns[name] = pa.array(rng.random(rows))
        elif dtype == "float32":
            columns[name] = pa.array(rng.random(rows, dtype=np.float32))
        elif dtype == "int64":
            columns[name] = pa.array(rng.integers(0, 10_000, rows))
        elif dtype == "bool":
            columns[name] = pa.array(rng.random(rows) < 0.5)
        else:
            segments = pa.array([f"segment_{i}" for i in range(16)])
            columns[name] = segments.take(pa.array(rng.integers(0, 16, rows)))
    return pa.table(columns)


def _catalog() -> Catalog:
    user = Entity(name="user", join_keys=["user_id"], dtype="int64")
    view = FeatureView(
        name=VIEW,
        entities=[user],
        source=PushSource(name="events"),
        schema=[Field(name, dtype) for name, dtype in FEATURES.items()],
        ttl="3650d",
    )
    return Catalog.from_definitions([user, view])


def _latencies(call: Callable[[], Any], count: int) -> list[float]:
    for _ in range(min(200, count)):  # warm caches and connections
        call()
    gc.collect()
    gc.disable()  # a GC pause is not the store's latency; reported figures are steady state
    try:
        out = []
        clock = time.perf_counter
        for _ in range(count):
            start = clock()
            call()
            out.append(clock() - start)
    finally:
        gc.enable()
    out.sort()
    return out


def _record(benchmark: str, backend: str, case: str, metric: str, value: float, unit: str,
            note: str = "") -> dict[str, Any]:  # fmt: skip
    return {"benchmark": benchmark, "backend": backend, "case": case, "metric": metric,
            "value": round(value, 4), "unit": unit, "note": note}  # fmt: skip


def _read_records(backend: str, case: str, samples: list[float], note: str) -> list[dict]:
    p50 = samples[len(samples) // 2] * 1e3
    p99 = samples[int(len(samples) * 0.99)] * 1e3
    return [
        _record("online_read", backend, case, "p50_ms", p50, "ms", note),
        _record("online_read", backend, case, "p99_ms", p99, "ms", note),
    ]


def _bench_backend(
    backend: str, url: str, folder: Path, table: pa.Table, size: str
) -> tuple[list[dict], OnlineStore]:
    config = RepoConfig(project=PROJECT, online={"url": url}).model_copy(
        update={"repo_path": folder}
    )
    online = open_online_store(config)
    rows = table.num_rows
    start = time.perf_counter()
    written = online.write_batch(PROJECT, VIEW, ["user_id"], list(FEATURES), table)
    seconds = time.perf_counter() - start
    assert written == rows, (written, rows)
    records = [_record("online_write", backend, f"{rows:,} rows x {len(FEATURES)} features",
                       "rows_per_s", rows / seconds, "rows/s",
                       f"{seconds:.2f} s, monotonic (event-time checked per row)")]  # fmt: skip
    store = _Store(_catalog(), online, config)
    features = [f"{VIEW}:{name}" for name in FEATURES]
    rng = random.Random(1)
    single = [[{"user_id": rng.randrange(rows)}] for _ in range(1000)]
    hundred = [{"user_id": [rng.randrange(rows) for _ in range(100)]} for _ in range(100)]
    position = iter(range(10**9))

    def one() -> Any:
        return get_online_features(store, features, single[next(position) % 1000]).to_dict()

    def many() -> Any:
        return get_online_features(store, features, hundred[next(position) % 100]).to_dict()

    response = get_online_features(store, features, hundred[0])
    assert all(s == "PRESENT" for s in response.statuses["f0"])
    records += _read_records(backend, "1 entity x 10 features",
                             _latencies(one, SINGLE_CALLS[size]), "SDK get_online_features")  # fmt: skip
    records += _read_records(backend, "100 entities x 10 features",
                             _latencies(many, BATCH_CALLS[size]), "SDK get_online_features")  # fmt: skip
    return records, online


def _redis_floor(url: str, rows: int, size: str) -> list[dict]:
    import redis

    client = redis.Redis.from_url(url)
    fields = [ts_field(VIEW)] + [feature_field(VIEW, f) for f in FEATURES]
    encode = key_encoder(PROJECT, ["user_id"])
    rng = random.Random(2)
    keys = encode([[rng.randrange(rows) for _ in range(1000)]])
    position = iter(range(10**9))
    single = _latencies(
        lambda: client.hmget(keys[next(position) % 1000], fields), SINGLE_CALLS[size]
    )

    def pipelined() -> Any:
        pipe = client.pipeline(transaction=False)
        base = next(position) % 900
        for key in keys[base : base + 100]:
            pipe.hmget(key, fields)
        return pipe.execute()

    batch = _latencies(pipelined, BATCH_CALLS[size])
    client.close()
    note = "raw redis-py + hiredis, same data (floor)"
    return (_read_records("redis", "floor: HMGET 11 fields", single, note)
            + _read_records("redis", "floor: pipeline of 100 HMGETs", batch, note))  # fmt: skip


def _redis_write_floor(url: str, table: pa.Table) -> list[dict]:
    """Plain HSETs of the same rows as one raw protocol stream, without the monotonic
    check: what the server takes when nothing is compared (the write floor)."""
    import redis

    from almanac.online.batch import prepare_batch
    from almanac.online.codec import redis_values
    from almanac.online.redis.wire import Pieces, bulk, entity_keys

    client = redis.Redis.from_url(url)
    client.flushall()
    connection = client.connection_pool.get_connection()
    rows = table.num_rows
    batch = prepare_batch(VIEW, table, ["user_id"], list(FEATURES))
    streams = []
    for part in batch.slices(50_000):
        pieces = Pieces()
        pieces.add(b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (len(FEATURES) + 1)))
        pieces.bulk(entity_keys(PROJECT, part.keys))
        pieces.add(bulk(ts_field(VIEW)))
        pieces.bulk(part.event_times.cast(pa.string()).cast(pa.binary()))
        for feature in part.features:
            pieces.add(bulk(feature_field(VIEW, feature.name)))
            pieces.bulk(*redis_values(feature))
        streams.append((pieces.join().buffers()[2], part.num_rows))
    start = time.perf_counter()  # the server's intake only: payloads are built beforehand
    for stream, count in streams:
        connection.send_packed_command([stream], check_health=False)
        for _ in range(count):
            connection.read_response()
    seconds = time.perf_counter() - start
    client.connection_pool.release(connection)
    client.close()
    return [_record("online_write", "redis", f"floor: raw HSET stream, {rows:,} rows",
                    "rows_per_s", rows / seconds, "rows/s",
                    f"{seconds:.2f} s, same encoding, no event-time check (floor)")]  # fmt: skip


def _sqlite_floor(path: Path, rows: int, size: str) -> list[dict]:
    connection = sqlite3.connect(path)
    columns = ", ".join(['"@ts"', *(f'"{f}"' for f in FEATURES)])
    sql = f'SELECT {columns} FROM "{PROJECT}:{VIEW}" WHERE "user_id" = ?'
    rng = random.Random(3)
    ids = [rng.randrange(rows) for _ in range(1000)]
    position = iter(range(10**9))
    samples = _latencies(
        lambda: connection.execute(sql, (ids[next(position) % 1000],)).fetchone(),
        SINGLE_CALLS[size],
    )
    connection.close()
    return _read_records(
        "sqlite", "floor: SELECT by key, 11 columns", samples, "raw sqlite3 (floor)"
    )


def run(sizes: list[str]) -> list[dict]:
    records: list[dict] = []
    for size in sizes:
        rows = ROWS[size]
        table = _table(rows)
        server = start_redis()
        cluster = start_redis_cluster()  # 3 masters + 3 replicas, beside single-node Redis
        try:
            with tempfile.TemporaryDirectory(prefix="almanac-bench-online-") as folder:
                stores = (("redis", server.url), ("redis_cluster", cluster.url), ("sqlite", "sqlite:///online.db"))  # fmt: skip
                for backend, url in stores:
                    found, online = _bench_backend(backend, url, Path(folder), table, size)
                    records += found
                    online.close()
                records += _redis_floor(server.url, rows, size)
                records += _redis_write_floor(server.url, table)
                records += _sqlite_floor(Path(folder) / "online.db", rows, size)
        finally:
            server.stop()
            cluster.stop()
        for record in records:
            record.setdefault("size", size)
    return records


if __name__ == "__main__":
    for item in run(sys.argv[1:] or ["small"]):
        print(f"{item['backend']:7} {item['benchmark']:13} {item['case']:36} {item['metric']:10} "
              f"{item['value']:>12,.4f} {item['unit']:6} {item['note']}")  # fmt: skip
