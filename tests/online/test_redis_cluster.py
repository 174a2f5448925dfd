"""What only a Redis Cluster has (the rest of the online suite runs on it through the
`backend_url` fixture): keys spread over the masters, bad URLs, and a master killed by
PID mid-load: its replica takes over, writes carry on, and no acknowledged write is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
import redis

from almanac.errors import ConfigError, StoreUnavailableError
from almanac.online.redis.cluster import BUCKETS, RedisClusterOnlineStore, _slots_of, crc32
from almanac.ports.online import ViewRead
from servers import RedisClusterServer, start_redis_cluster

pytestmark = pytest.mark.redis
BASE = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def cluster() -> Iterator[RedisClusterServer]:
    """A cluster of its own: these tests kill its nodes."""
    server = start_redis_cluster()
    yield server
    server.stop()


def rows(n: int, version: int) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([f"u{i}" for i in range(n)]),
            "version": pa.array([version] * n, pa.int64()),
            "event_timestamp": pa.array(
                [BASE + timedelta(seconds=version)] * n, pa.timestamp("us", tz="UTC")
            ),
        }
    )


def read_versions(store: RedisClusterOnlineStore, n: int) -> list[int | None]:
    request = ViewRead("v", ["user_id"], [[f"u{i}" for i in range(n)]], ["version"], ["int64"])
    return store.read("p", [request])[0].columns[0]


def test_the_bucket_hash_is_the_same_in_bulk_and_per_key() -> None:
    keys = [b"", b"a", b"user_id=s3:abc", "ü".encode() * 40, bytes(range(256))]
    assert crc32(pa.array(keys, pa.binary())).tolist() == [zlib.crc32(k) for k in keys]
    assert zlib.crc32(b"a") == 0xE8B7BE43  # CRC-32's published value: placement is fixed


def test_entities_spread_over_every_master(redis_cluster_server: RedisClusterServer, redis_cluster_url: str) -> None:  # fmt: skip
    cluster = redis_cluster_server  # the session's (it kills no node), emptied for this test
    store = RedisClusterOnlineStore(redis_cluster_url)
    assert store.write_batch("p", "v", ["user_id"], ["version"], rows(9_000, 1)) == 9_000
    sizes = [redis.Redis(port=node.port).dbsize() for node in cluster.primaries()]
    assert len(sizes) == 3 and sum(sizes) >= 9_000
    assert all(size > 9_000 / 3 * 0.8 for size in sizes), sizes  # within 20% of a third
    assert read_versions(store, 3) == [1, 1, 1]
    assert BUCKETS == 1024
    store.close()


def test_bad_cluster_urls_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not host:port"):
        RedisClusterOnlineStore("redis+cluster://localhost")
    with pytest.raises(ConfigError, match="not a Redis Cluster URL"):
        RedisClusterOnlineStore("redis://localhost:6379")


def test_a_killed_master_is_replaced_and_no_acknowledged_write_is_lost(cluster: RedisClusterServer) -> None:  # fmt: skip
    store = RedisClusterOnlineStore(cluster.url, timeout_seconds=2.0)
    n = 3_000
    acknowledged: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def write() -> None:
        version = 0
        while not stop.is_set():
            version += 1
            started = time.monotonic()
            try:
                store.write_batch("p", "v", ["user_id"], ["version"], rows(n, version))
                acknowledged.append(version)
            except StoreUnavailableError as error:
                errors.append(f"{time.monotonic() - started:.1f}s: {error}")

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while len(acknowledged) < 5:
            time.sleep(0.05)
        victim = cluster.primaries()[0]
        assert victim.process is not None
        victim.process.send_signal(signal.SIGKILL)  # by PID, mid-load
        killed_at = len(acknowledged)
        deadline = time.monotonic() + 60
        while len(acknowledged) < killed_at + 10 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        writer.join(timeout=120)
    assert len(acknowledged) >= killed_at + 10, (acknowledged[-3:], errors)
    # The failover stayed within the retry budget: no write failed, or few did, each
    # reported as StoreUnavailableError (never a wrong reply or a hang).
    assert len(errors) <= 3, errors
    cluster.wait_healthy()
    assert len(cluster.primaries()) == 3  # a replica took the dead master's slots
    # Every entity holds the last acknowledged version (or a later, unacknowledged one).
    versions = read_versions(store, n)
    assert min(v for v in versions if v is not None) >= acknowledged[-1]
    assert None not in versions
    store.close()


def _counter(stored: Any, new: pa.Table) -> pa.Table:
    """A merge that adds the pushed count to the stored one (as tiles add events)."""
    old = stored.columns[0][0] or 0
    return pa.table({"id": new["id"], "event_timestamp": new["event_timestamp"], "n": pa.array([old + new["n"][0].as_py()], pa.int64())})  # fmt: skip


def test_a_merge_whose_replica_stalls_is_never_applied_twice(cluster: RedisClusterServer) -> None:  # fmt: skip
    """The merge runs, but WAIT times out (every replica stopped for longer than the
    timeout): the merge must not be sent again, which would add the events twice."""
    store = RedisClusterOnlineStore(cluster.url, timeout_seconds=0.5)
    ts = pa.array([1_000_000], pa.timestamp("us", "UTC"))
    table = pa.table({"id": pa.array([7], pa.int64()), "event_timestamp": ts, "n": pa.array([1], pa.int64())})  # fmt: skip
    store.write_batch("p", "v", ["id"], ["n"], table)  # n = 1 (retried if the machine is slow)
    deadline = time.monotonic() + 30
    while not all(store._map.has_replica.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
        store._topology(refresh=True)
    assert all(store._map.has_replica.values())
    replicas = [n for n in cluster.nodes if n not in cluster.primaries()]
    for replica in replicas:
        assert replica.process is not None
        os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(StoreUnavailableError, match="no replica"):
            store.merge_batch("p", "v", ["id"], ["n"], table, _counter)
    finally:
        for replica in replicas:
            os.kill(replica.process.pid, signal.SIGCONT)  # type: ignore[union-attr]
    request = ViewRead("v", ["id"], [[7]], ["n"], ["int64"])
    assert store.read("p", [request])[0].columns == [[2]]  # applied once, and reported
    store.close()


def test_reads_follow_ask_while_a_slot_migrates(cluster: RedisClusterServer) -> None:
    store = RedisClusterOnlineStore(cluster.url, timeout_seconds=0.5)
    ts = pa.array([1_000_000], pa.timestamp("us", "UTC"))
    store.write_batch("p", "v", ["id"], ["n"], pa.table({"id": pa.array([7], pa.int64()), "event_timestamp": ts, "n": pa.array([5], pa.int64())}))  # fmt: skip
    key = store._encoder("p", ["id"])([[7]])[0]
    slot = int(_slots_of([key])[0])
    source_port = int(store._map.node_of_slot[slot].rsplit(":", 1)[1])
    target_port = next(n.port for n in cluster.primaries() if n.port != source_port)

    def cli(port: int, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip

    source_id, target_id = cli(source_port, "cluster", "myid"), cli(target_port, "cluster", "myid")
    cli(target_port, "cluster", "setslot", str(slot), "importing", source_id)
    cli(source_port, "cluster", "setslot", str(slot), "migrating", target_id)
    cli(
        source_port, "migrate", "127.0.0.1", str(target_port), "", "0", "5000", "keys", key.decode()
    )
    request = ViewRead("v", ["id"], [[7]], ["n"], ["int64"])
    assert store.read("p", [request])[0].columns == [[5]]  # ASK followed to the new owner
    store.close()
