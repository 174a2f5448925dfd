"""Materialization throughput: offline → online, entity-rows/s, into SQLite and Redis.

On the benchmark repo of `datagen.py` (medium: 100k + 10k entities from 2.1M rows;
large: 1M + 100k entities from 10.7M rows), a full `materialize` of both views into a
fresh online store, timed end to end (the DuckDB latest-row query, encoding and writes).
The Redis server is started on a free port for the run.

Redis is also measured as a user runs it (`cold`): `store.materialize` in a fresh
process with `PYTHONDONTWRITEBYTECODE=1`, into an emptied Redis, `RUNS` times; the
figure counts from the process's first import of Almanac (the interpreter's own start,
≈15 ms, is not Almanac's), and the process's wall time is in the note. Beside it, from
the same run: the floor (the same rows, as plain HSETs without the monotonic check,
streamed raw into the same Redis: what Redis itself takes) and Feast's figure (measured
when `.tools/feast-venv` has Feast; else the figure of docs/performance.md, said so).
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import pyarrow as pa
import redis as redis_py

from almanac.config import load_config
from almanac.online.batch import prepare_batch
from almanac.online.codec import redis_values
from almanac.online.redis.wire import Pieces, created_field, entity_keys, feature_field, ts_field
from almanac.store import FeatureStore
from datagen import SIZES, make_repo
from servers import start_redis, start_redis_cluster

END = datetime(2024, 6, 1, tzinfo=UTC)  # after the generated history
RUNS = 3
FEAST_VENV = Path(__file__).resolve().parents[1] / ".tools" / "feast-venv"
FEAST_DOCUMENTED = 10_900  # rows/s, Feast 0.67 on this kind of machine (docs/performance.md)

# What a user's process runs; prints rows, seconds since importing Almanac, peak RSS (KiB).
COLD = f"""
import resource, time
started = time.perf_counter()
from almanac.store import FeatureStore
with FeatureStore(".") as store:
    rows = store.materialize(None, "{END.isoformat()}").rows
print(rows, time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _materialize(repo: Path, online_url: str) -> tuple[int, float]:
    config = load_config(repo, {**os.environ, "ALMANAC_ONLINE_URL": online_url})
    with FeatureStore(config=config) as store:
        store.apply()
        started = time.perf_counter()
        result = store.materialize(None, END)
        return result.rows, time.perf_counter() - started


def _cold(repo: Path, url: str) -> list[tuple[int, float, float, int]]:
    """`RUNS` fresh-process materializations into an emptied Redis: (rows, seconds from
    importing Almanac, process wall seconds, peak RSS KiB) each."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALMANAC_")}
    env |= {"PYTHONDONTWRITEBYTECODE": "1", "ALMANAC_ONLINE_URL": url}
    client = redis_py.Redis.from_url(url)
    samples = []
    for _ in range(RUNS):
        client.flushall()
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", COLD], cwd=repo, env=env, capture_output=True, text=True, check=False)  # fmt: skip
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"cold materialize failed:\n{done.stderr}")
        rows, seconds, rss = done.stdout.split()
        samples.append((int(rows), float(seconds), wall, int(rss)))
    client.close()
    return samples


def _hset_stream(repo: Path, url: str) -> tuple[bytes, int]:
    """The rows `materialize` writes, as one raw RESP stream of plain HSETs (the same
    keys, fields and encoded values; no monotonic check), built in bulk."""
    config = load_config(repo, {**os.environ, "ALMANAC_ONLINE_URL": url})
    streams, count = [], 0
    with FeatureStore(config=config) as store:
        catalog = store.catalog
        for view in catalog.all_views().values():
            keys = list(catalog.join_keys(view))
            table = store.offline.latest_rows(catalog, view, None, END).read_all()
            batch = prepare_batch(view.name, table, keys, view.feature_names)
            pieces = Pieces()
            width = 2 + 2 * (len(batch.features) + 1 + (batch.created_times is not None))
            pieces.add(b"*%d\r\n$4\r\nHSET\r\n" % width)
            pieces.bulk(entity_keys(store.project, batch.keys))
            stamps = [(ts_field(view.name), batch.event_times)]
            if batch.created_times is not None:
                stamps.append((created_field(view.name), batch.created_times))
            for field, times in stamps:
                pieces.add(b"$%d\r\n%s\r\n" % (len(field), field))
                pieces.bulk(times.cast(pa.string()).cast(pa.binary()).fill_null(""))
            for feature in batch.features:
                field = feature_field(view.name, feature.name)
                pieces.add(b"$%d\r\n%s\r\n" % (len(field), field))
                pieces.bulk(redis_values(feature)[0])
            streams.append(pieces.join().buffers()[2].to_pybytes())
            count += batch.num_rows
    return b"".join(streams), count


def _floor(url: str, payload: bytes, count: int) -> float:
    """Seconds for Redis to take `payload` (`count` commands) on a raw socket: one thread
    writes, this one counts the replies (one line each)."""
    redis_py.Redis.from_url(url).flushall()
    kwargs = redis_py.ConnectionPool.from_url(url).connection_kwargs
    with socket.create_connection((kwargs["host"], kwargs["port"])) as sock:
        started = time.perf_counter()
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        lines = 0
        while lines < count:
            lines += sock.recv(1 << 20).count(b"\n")
        sender.join()
        return time.perf_counter() - started


def _feast() -> tuple[float, str]:
    """Feast's figure. Not measured in this run: that needs Feast with its Redis extra in
    `.tools/feast-venv` (`make test` installs the bare client there) and a Feast repo of
    this data, which this benchmark does not generate yet; the note says which is missing."""
    python = FEAST_VENV / "bin" / "python"
    probe = "import feast, redis; print(feast.__version__)"
    found = python.exists() and subprocess.run([python, "-I", "-c", probe], capture_output=True, check=False).returncode == 0  # fmt: skip
    why = "no Feast repo of this data yet" if found else "no Feast with Redis in .tools/feast-venv"
    return FEAST_DOCUMENTED, f"not measured here ({why}): Feast 0.67 from docs/performance.md, same kind of machine"  # fmt: skip


def _cold_records(size: str, repo: Path, url: str) -> list[dict[str, Any]]:
    samples = _cold(repo, url)
    rows = samples[0][0]
    rates = sorted(rows / s[1] for s in samples)
    walls = sorted(s[2] for s in samples)
    rss = max(s[3] for s in samples) / 1024
    payload, count = _hset_stream(repo, url)
    assert count == rows, (count, rows)
    floors = sorted(count / _floor(url, payload, count) for _ in range(RUNS))
    feast, feast_note = _feast()
    base = {"benchmark": "materialize", "size": size, "backend": "redis", "metric": "entity_rows_per_s", "unit": "rows/s"}  # fmt: skip
    return [
        base | {"case": "cold (fresh process)", "value": round(statistics.median(rates)),
                "note": f"{RUNS} fresh processes: {rates[0]:,.0f}-{rates[-1]:,.0f} rows/s from importing Almanac; process wall {walls[0]:.2f}-{walls[-1]:.2f} s ({rows / walls[-1]:,.0f}-{rows / walls[0]:,.0f} rows/s); peak RSS {rss:,.0f} MiB"},
        base | {"case": "floor: raw HSET stream", "value": round(statistics.median(floors)),
                "note": f"the same {count:,} rows as plain HSETs on a raw socket, no check: {floors[0]:,.0f}-{floors[-1]:,.0f} rows/s"},
        base | {"case": "Feast", "value": feast, "note": feast_note},
    ]  # fmt: skip


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
            records += _cold_records(size, repo, redis.url)
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        redis.stop()
        cluster.stop()
    return records


if __name__ == "__main__":
    for record in run(sys.argv[1:] or ["small"]):
        print(record)
