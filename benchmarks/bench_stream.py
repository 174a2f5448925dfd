"""Stream ingestion (`almanac.ingest.stream`): Redis Streams and Kafka (librdkafka's mock
cluster) into a Redis online store, beside the raw consume rate of the same client.

- `plain`: one FeatureView (2 features) over the stream;
- `aggregation`: one AggregationView, 4 functions × 3 windows;
- `consume`: the reader alone (poll + commit, no decoding or writes): the floor.
Events per second over a backlog of N events (small 50k, medium 200k), batches of 10,000.

    .venv/bin/python benchmarks/bench_stream.py small
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from almanac import FeatureStore
from almanac.ingest.stream import StreamWorker, open_reader
from servers import start_redis

EVENTS = {"small": 50_000, "medium": 200_000, "large": 1_000_000}
# librdkafka's mock cluster keeps about 5 MB per partition (4 partitions per topic) and
# drops older messages past that: a backlog of 200k of these events lost more than half
# (the consumer then waited for messages that no longer existed). Kafka's backlog is
# capped below that; its rate is per event, so the sizes stay comparable.
KAFKA_EVENTS_MAX = 50_000
DRAIN_DEADLINE = 180.0  # seconds: a drain that has not finished by then is an error
VIEWS = {
    "plain": """
last_txn = FeatureView(name="last_txn", entities=[customer], source=txns, ttl="7d",
                       schema=[Field("amount", Float64), Field("merchant", String)])
""",
    "aggregation": """
spend = AggregationView(name="spend", entities=[customer], source=txns, columns=[Field("amount", Float64)],
    aggregations=[Aggregation(column="amount", function=f, windows=["1h", "1d", "7d"])
                  for f in ("sum", "count", "mean", "max")])
""",
}
HEADER = """
from almanac import Aggregation, AggregationView, Entity, FeatureView, Field, Float64, String
from almanac import {cls}
customer = Entity(name="customer", join_keys=["customer_id"], dtype="int64")
txns = {cls}(name="txns", timestamp_field="ts", {args})
"""


def _events(n: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC) - timedelta(minutes=1)
    return [
        {"customer_id": i % 20_000, "ts": (now - timedelta(seconds=i % 86_400)).isoformat(),
         "amount": float(i % 500), "merchant": f"m{i % 40}"}
        for i in range(n)
    ]  # fmt: skip


def _repo(folder: Path, redis_url: str, cls: str, args: str, view: str) -> FeatureStore:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "almanac.yaml").write_text(f"project: bench\nonline:\n  url: {redis_url}\n")
    (folder / "features.py").write_text(HEADER.format(cls=cls, args=args) + VIEWS[view])
    store = FeatureStore(folder)
    store.apply()
    return store


def _drain(worker: StreamWorker, n: int) -> float:
    """Seconds from the first message read to the n-th one written (a Kafka group's
    join, a few seconds, is not ingestion)."""
    deadline = time.perf_counter() + DRAIN_DEADLINE
    while worker.totals.messages == 0 and time.perf_counter() < deadline:
        worker.step()
    started = time.perf_counter()
    first = worker.totals.messages
    while worker.totals.messages < n and time.perf_counter() < deadline:
        worker.step()
    _check_drained(worker.totals.messages, n)
    return (time.perf_counter() - started) * n / max(n - first, 1)


def _check_drained(read: int, n: int) -> None:
    if read < n:
        raise RuntimeError(f"the stream gave {read:,} of {n:,} events in {DRAIN_DEADLINE:.0f} s")


def _consume(reader: Any, n: int) -> float:
    """The reader alone: poll and commit, nothing decoded or written (the floor); timed
    like `_drain`, from the first batch."""
    read, first, started = 0, 0, 0.0
    deadline = time.perf_counter() + DRAIN_DEADLINE
    while read < n and time.perf_counter() < deadline:
        batch = reader.poll(10_000, 0.5)
        if batch and not read:
            started, first = time.perf_counter(), len(batch)
        reader.commit(batch)
        read += len(batch)
    _check_drained(read, n)
    return (time.perf_counter() - started) * n / max(n - first, 1)


def _measure(store: FeatureStore, case: str, group: str, n: int) -> float:
    """Seconds to take `n` events: by the reader alone (`consume`) or the worker."""
    reader = open_reader(store, "txns", group, "b1")
    try:
        if case == "consume":
            return _consume(reader, n)
        return _drain(StreamWorker(store, "txns", reader, 10_000, 0.5), n)
    finally:
        reader.close()
        store.close()


def _redis(size: str, folder: Path) -> list[dict[str, Any]]:
    import redis

    n = EVENTS[size]
    server = start_redis()
    out = []
    try:
        client = redis.Redis.from_url(server.url)
        events = _events(n)
        for case in ("consume", "plain", "aggregation"):
            client.flushall()
            pipe = client.pipeline(transaction=False)
            for i, e in enumerate(events):
                pipe.xadd("txns", {"json": orjson.dumps(e)})
                if i % 10_000 == 9_999:
                    pipe.execute()
            pipe.execute()
            store = _repo(folder / case, server.url, "RedisStreamSource", f'stream="txns", url="{server.url}", format="json", extra_columns="ignore"', "plain" if case == "consume" else case)  # fmt: skip
            out.append(_record(size, "redis_stream", case, n / _measure(store, case, "bench", n)))
    finally:
        server.stop()
    return out


def _kafka(size: str, folder: Path) -> list[dict[str, Any]]:
    from confluent_kafka import Producer

    n = min(EVENTS[size], KAFKA_EVENTS_MAX)
    owner = Producer({"test.mock.num.brokers": 3, "log_level": 3})
    brokers = ",".join(f"{b.host}:{b.port}" for b in owner.list_topics(timeout=10).brokers.values())  # fmt: skip
    server = start_redis()
    out = []
    try:
        for case in ("consume", "plain", "aggregation"):
            topic = f"txns-{case}"
            producer = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "log_level": 3})
            for e in _events(n):
                producer.produce(topic, value=orjson.dumps(e))
                producer.poll(0)
            producer.flush(60)
            args = f'topic="{topic}", bootstrap_servers="{brokers}", extra_columns="ignore"'
            store = _repo(folder / f"k-{case}", server.url, "KafkaSource", args, "plain" if case == "consume" else case)  # fmt: skip
            seconds = _measure(store, case, f"bench-{case}", n)
            record = _record(size, "kafka (mock cluster, 3 brokers)", case, n / seconds)
            record["note"] += f"; a backlog of {n:,} events (the mock cluster's retention)"
            out.append(record)
    finally:
        server.stop()
        owner.flush(5)
    return out


def _freshness(size: str, folder: Path, rate: int = 5_000, seconds: float = 8.0) -> list[dict[str, Any]]:  # fmt: skip
    """Events appended to a Redis stream at `rate`/s while the worker runs (batches of
    at most 50 ms): per event, from its append (the entry id's time) to the end of the
    batch that made it servable online (the online write precedes the commit)."""
    import threading

    import redis

    server = start_redis()
    try:
        client = redis.Redis.from_url(server.url)
        store = _repo(folder / "fresh", server.url, "RedisStreamSource", f'stream="txns", url="{server.url}", format="json", extra_columns="ignore"', "plain")  # fmt: skip
        reader = open_reader(store, "txns", "fresh", "f1")
        stop, latencies = threading.Event(), []

        def produce() -> None:
            sent, started = 0, time.perf_counter()
            while not stop.is_set() and time.perf_counter() - started < seconds:
                due = int((time.perf_counter() - started) * rate)
                pipe = client.pipeline(transaction=False)
                for i in range(sent, due):
                    now = datetime.now(UTC) - timedelta(seconds=1)
                    pipe.xadd("txns", {"json": orjson.dumps({"customer_id": i, "ts": now.isoformat(), "amount": 1.0, "merchant": "m"})})  # fmt: skip
                pipe.execute()
                sent = due
                time.sleep(0.002)

        real_poll = reader.poll
        polled: list[Any] = []

        def poll(max_messages: int, timeout: float) -> Any:
            polled[:] = real_poll(max_messages, timeout)
            return polled

        reader.poll = poll  # type: ignore[method-assign]
        worker = StreamWorker(store, "txns", reader, 10_000, 0.05)
        producer = threading.Thread(target=produce)
        producer.start()
        while producer.is_alive() or polled:
            worker.step()
            done = time.time()
            latencies += [done - m.timestamp_ms / 1000 for m in polled if m.timestamp_ms]
        producer.join()
        reader.close()
        store.close()
    finally:
        server.stop()
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    note = f"{len(latencies):,} events at {rate:,}/s into a plain view on Redis; batches of at most 50 ms"  # fmt: skip
    return [
        {"benchmark": "stream", "size": size, "backend": "redis_stream", "case": "freshness",
         "metric": metric, "value": round(value * 1000, 1), "unit": "ms", "note": note}
        for metric, value in (("append_to_servable_p50", p50), ("append_to_servable_p99", p99))
    ]  # fmt: skip


def _record(size: str, backend: str, case: str, rate: float) -> dict[str, Any]:
    return {"benchmark": "stream", "size": size, "backend": backend, "case": case,
            "metric": "events_per_s", "value": round(rate), "unit": "events/s",
            "note": "a backlog drained in batches of 10,000, online: Redis, 2 cores"}  # fmt: skip


def run(sizes: list[str]) -> list[dict[str, Any]]:
    records = []
    folder = Path(tempfile.mkdtemp(prefix="almanac-bench-stream-"))
    try:
        for size in sizes:
            records += _redis(size, folder)
            records += _kafka(size, folder)
            records += _freshness(size, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return records


if __name__ == "__main__":
    for record in run(sys.argv[1:] or ["small"]):
        print(json.dumps(record))
