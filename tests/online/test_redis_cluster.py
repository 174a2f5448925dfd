"""What only a Redis Cluster has (the rest of the online suite runs on it through the
`backend_url` fixture): keys spread over the masters, bad URLs, and a master killed by
PID mid-load: its replica takes over, writes carry on, and no acknowledged write is lost."""

from __future__ import annotations

import signal
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
import redis

from almanac.errors import ConfigError, StoreUnavailableError
from almanac.online.redis.cluster import BUCKETS, RedisClusterOnlineStore, crc32
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


def test_entities_spread_over_every_master(cluster: RedisClusterServer) -> None:
    store = RedisClusterOnlineStore(cluster.url)
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
