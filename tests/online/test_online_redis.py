"""What only the Redis backend has: its key encoding, expiry, failures and reconnects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import redis
from online_helpers import PROJECT, T0, make_config, write

from almanac.errors import StoreUnavailableError
from almanac.online import ViewRead, open_online_store
from almanac.online.batch import KeyColumn
from almanac.online.redis.store import RedisOnlineStore
from almanac.online.redis.wire import entity_keys, key_encoder
from servers import free_port, start_redis

pytestmark = pytest.mark.redis

KEYS = {"a": ["", "x", "x&b=s1:y", "é", "1", "-", " ", "\x00", "s0:", "x" * 300],
        "b": [0, -1, 2**63 - 1, -(2**63), 1, 10, 100, 7, 42, 5]}  # fmt: skip


def test_bulk_and_per_row_key_encodings_agree() -> None:
    columns = [KeyColumn("b", "int64", pa.array(KEYS["b"], pa.int64())),
               KeyColumn("a", "string", pa.array(KEYS["a"], pa.string()))]  # fmt: skip
    bulk = entity_keys(PROJECT, columns).to_pylist()
    per_row = key_encoder(PROJECT, ["b", "a"])([KEYS["b"], KEYS["a"]])
    assert bulk == per_row
    assert len(set(bulk)) == len(bulk)
    assert bulk[1] == b"alm:t:a=s1:x&b=i-1"
    single = key_encoder(PROJECT, ["a"])([KEYS["a"]])
    assert single == entity_keys(PROJECT, columns[1:]).to_pylist()
    assert key_encoder(PROJECT, ["b"])([[1]]) != key_encoder(PROJECT, ["b"])([["1"]])


def test_a_key_holds_every_view_of_its_entity(redis_url: str, tmp_path: Path) -> None:
    online = open_online_store(make_config(redis_url, tmp_path))
    write(online, "v1", {"user_id": pa.int64()}, {"f": pa.int64()},
          [{"user_id": 7, "event_timestamp": T0, "f": 1}])  # fmt: skip
    write(online, "v2", {"user_id": pa.int64()}, {"g": pa.string()},
          [{"user_id": 7, "event_timestamp": T0, "g": None}])  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    # A null is an absent field; the event time is decimal microseconds.
    assert set(client.hkeys("alm:t:user_id=i7")) == {b"v1:f", b"v1#ts", b"v2#ts"}
    assert client.hget("alm:t:user_id=i7", "v1#ts") == b"1714564800000000"
    online.close()


def test_keys_expire_when_configured(redis_url: str, tmp_path: Path) -> None:
    online = open_online_store(make_config(redis_url, tmp_path, key_ttl_seconds=3600))
    write(online, "v", {"user_id": pa.int64()}, {"f": pa.int64()},
          [{"user_id": 1, "event_timestamp": T0, "f": 1}])  # fmt: skip
    assert 0 < redis.Redis.from_url(redis_url).ttl("alm:t:user_id=i1") <= 3600
    online.close()


def test_unreachable_redis_raises_store_unavailable(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    online = open_online_store(make_config(url, tmp_path, timeout_seconds=0.5))
    request = ViewRead("v", ["user_id"], [[1]], ["f"], ["int64"])
    with pytest.raises(StoreUnavailableError, match=r"Redis online store at 127\.0\.0\.1:\d+"):
        online.read(PROJECT, [request])
    with pytest.raises(StoreUnavailableError):
        online.ping()
    with pytest.raises(StoreUnavailableError):
        write(online, "v", {"user_id": pa.int64()}, {"f": pa.int64()},
              [{"user_id": 1, "event_timestamp": T0, "f": 1}])  # fmt: skip
    online.close()


def test_password_is_not_shown_in_errors(tmp_path: Path) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    online = open_online_store(make_config(url, tmp_path, timeout_seconds=0.5))
    with pytest.raises(StoreUnavailableError) as failure:
        online.ping()
    assert "s3cret" not in str(failure.value)


def test_reconnects_after_redis_restarts_and_loses_its_scripts(tmp_path: Path) -> None:
    server = start_redis()
    try:
        online = open_online_store(make_config(server.url, tmp_path))
        assert isinstance(online, RedisOnlineStore)
        rows = [{"user_id": 1, "event_timestamp": T0, "f": 1}]
        write(online, "v", {"user_id": pa.int64()}, {"f": pa.int64()}, rows)
        server.restart()  # same port, empty memory, no scripts; our sockets are stale
        request = ViewRead("v", ["user_id"], [[1]], ["f"], ["int64"])
        assert online.read(PROJECT, [request])[0].event_times == [None]
        assert write(online, "v", {"user_id": pa.int64()}, {"f": pa.int64()}, rows) == 1
        redis.Redis.from_url(server.url).script_flush()
        assert write(online, "v", {"user_id": pa.int64()}, {"f": pa.int64()}, rows) == 1
        assert online.read(PROJECT, [request])[0].columns == [[1]]
        online.close()
    finally:
        server.stop()


def test_views_read_together_share_one_hmget_per_entity(redis_url: str, tmp_path: Path) -> None:
    online = open_online_store(make_config(redis_url, tmp_path))
    write(online, "v1", {"user_id": pa.int64()}, {"f": pa.int64()},
          [{"user_id": 1, "event_timestamp": T0, "f": 1}])  # fmt: skip
    write(online, "v2", {"user_id": pa.int64()}, {"f": pa.int64()},
          [{"user_id": 2, "event_timestamp": T0, "f": 2}])  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    client.config_resetstat()
    ids = [1, 2, 3]
    rows = online.read(PROJECT, [ViewRead("v1", ["user_id"], [ids], ["f"], ["int64"]),
                                 ViewRead("v2", ["user_id"], [ids], ["f"], ["int64"])])  # fmt: skip
    assert [r.columns for r in rows] == [[[1, None, None]], [[None, 2, None]]]
    assert client.info("commandstats")["cmdstat_hmget"]["calls"] == 3
    online.close()


def test_a_merge_reads_again_when_another_writer_got_in_between(
    redis_url: str, tmp_path: Path
) -> None:
    """The merge's conditional write sees that the entity changed after it was read
    (another writer's write lands during the first merge) and merges again."""
    online = open_online_store(make_config(redis_url, tmp_path))
    write(online, "c", {"user_id": pa.int64()}, {"n": pa.int64()},
          [{"user_id": 1, "event_timestamp": T0, "n": 10}])  # fmt: skip
    seen: list[Any] = []

    def merge(stored: Any, table: pa.Table) -> pa.Table:
        seen.append(stored.columns[0][0])
        if len(seen) == 1:  # another writer, between our read and our write
            write(online, "c", {"user_id": pa.int64()}, {"n": pa.int64()},
                  [{"user_id": 1, "event_timestamp": T0, "n": 100}])  # fmt: skip
        return table.set_column(2, "n", pa.array([stored.columns[0][0] + 1], pa.int64()))

    rows = pa.table({"user_id": pa.array([1], pa.int64()),
                     "event_timestamp": pa.array([T0], pa.timestamp("us", tz="UTC")),
                     "n": pa.array([1], pa.int64())})  # fmt: skip
    assert online.merge_batch(PROJECT, "c", ["user_id"], ["n"], rows, merge) == 1
    assert seen == [10, 100]
    (result,) = online.read(PROJECT, [ViewRead("c", ["user_id"], [[1]], ["n"], ["int64"])])
    assert result.columns == [[101]]
    online.close()
