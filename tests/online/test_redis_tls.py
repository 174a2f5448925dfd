"""The Redis online stores over TLS: a redis-server with `--tls-port` only (`rediss://`)
and a TLS Redis Cluster (`rediss+cluster://`, TLS on the cluster bus and replication
too), with certificates from a throwaway CA; writes, reads (blocking and async),
watermarks, and a refused handshake without the CA."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from almanac.errors import StoreUnavailableError
from almanac.online.redis.cluster import RedisClusterOnlineStore
from almanac.online.redis.store import RedisOnlineStore
from almanac.ports.online import OnlineStore, ViewRead
from servers import TlsFiles, make_tls_files, start_redis_cluster, start_redis_tls

pytestmark = pytest.mark.redis
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def round_trip(store: OnlineStore) -> None:
    table = pa.table({
        "user_id": [f"u{i}" for i in range(500)], "score": [float(i) for i in range(500)],
        "event_timestamp": pa.array([NOW] * 500, pa.timestamp("us", tz="UTC")),
    })  # fmt: skip
    assert store.write_batch("p", "v", ["user_id"], ["score"], table) == 500
    request = ViewRead("v", ["user_id"], [["u1", "u499", "nope"]], ["score"], ["float64"])
    assert store.read("p", [request])[0].columns == [[1.0, 499.0, None]]
    assert asyncio.run(store.read_async("p", [request]))[0].columns == [[1.0, 499.0, None]]
    store.set_watermark("p", "v", NOW, "layout")
    assert store.watermarks("p")["v"].time == NOW


def test_a_tls_only_redis(tls: TlsFiles) -> None:
    server = start_redis_tls(tls)
    try:
        store = RedisOnlineStore(f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={tls.ca}")
        round_trip(store)
        store.close()
        untrusted = RedisOnlineStore(f"rediss://127.0.0.1:{server.port}/0", timeout_seconds=1)
        with pytest.raises(StoreUnavailableError, match="unavailable"):
            untrusted.ping()  # the server's certificate is not from a CA the client trusts
    finally:
        server.stop()


@pytest.fixture
def tls_cluster(tls: TlsFiles) -> Iterator[str]:
    cluster = start_redis_cluster(tls=tls)
    yield cluster.url
    cluster.stop()


def test_a_tls_redis_cluster(tls_cluster: str, tmp_path: Path) -> None:
    store = RedisClusterOnlineStore(tls_cluster)
    round_trip(store)
    store.delete_view("p", "v")
    request = ViewRead("v", ["user_id"], [["u1"]], ["score"], ["float64"])
    assert store.read("p", [request])[0].columns == [[None]]
    store.close()
