"""A materialization that loses its Redis half-way fails with a clear error, leaves the
watermark where it was, and a re-run after Redis is back yields exactly the right values."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from almanac.errors import StoreUnavailableError
from almanac.online.retrieval import get_online_features
from almanac.store import FeatureStore
from conftest import TTLS, write_repo
from servers import RedisServer, start_redis

pytestmark = pytest.mark.redis

ACCOUNTS = list(range(1, 301))
END = datetime(2025, 3, 2, tzinfo=UTC)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = start_redis()  # its own server: this test kills it
    yield server
    server.stop()


def write_events(repo: Path) -> None:
    # Two rows per account: the later one must win.
    times = [END - timedelta(hours=3), END - timedelta(hours=1)]
    table = pa.table({
        "account_id": pa.array([a for a in ACCOUNTS for _ in times], pa.int64()),
        "event_timestamp": pa.array([t for _ in ACCOUNTS for t in times], pa.timestamp("us", tz="UTC")),
        "created": pa.array([None] * (2 * len(ACCOUNTS)), pa.timestamp("us", tz="UTC")),
        "score": pa.array([a * 10.0 + i for a in ACCOUNTS for i in range(2)], pa.float64()),
        "label": pa.array([f"{a}-{i}" for a in ACCOUNTS for i in range(2)], pa.string()),
        "count": pa.array([a + i for a in ACCOUNTS for i in range(2)], pa.int64()),
        "embedding": pa.array([[float(a), float(i)] for a in ACCOUNTS for i in range(2)], pa.list_(pa.float32())),
    })  # fmt: skip
    pq.write_table(table, repo / "data" / "events.parquet")


def test_redis_killed_mid_materialization_then_rerun(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    repo = write_repo(tmp_path / "repo", own_redis.url)  # batch_size 7: many small writes
    write_events(repo)
    store = FeatureStore(repo)
    store.apply()
    written: list[int] = []

    def kill_after_a_few_batches(view: str, rows: int) -> None:
        written.append(rows)
        if len(written) == 5:
            own_redis.stop()

    with pytest.raises(StoreUnavailableError) as failure:
        store.materialize_incremental(END, views=["no_ttl"], progress=kill_after_a_few_batches)
    assert "redis" in str(failure.value).lower()
    assert sum(written) < len(ACCOUNTS)  # it really died half-way

    own_redis.start()  # an empty Redis on the same port: everything must be written again
    assert store.online.watermarks(store.project) == {}  # gone with the data it described
    result = store.materialize_incremental(END, views=["no_ttl"])
    assert result.rows == len(ACCOUNTS)
    assert store.online.watermarks(store.project).get("no_ttl").time == END

    response = get_online_features(
        store, ["no_ttl:score", "no_ttl:label"], {"account_id": ACCOUNTS}, now=END
    )
    assert response.values["score"] == [a * 10.0 + 1 for a in ACCOUNTS]
    assert response.values["label"] == [f"{a}-1" for a in ACCOUNTS]
    assert set(map(str, response.statuses["score"])) == {"PRESENT"}
    store.close()


def test_unreachable_redis_fails_fast_and_moves_nothing(tmp_path: Path) -> None:
    from servers import free_port

    repo = write_repo(tmp_path / "repo", f"redis://127.0.0.1:{free_port()}/0")
    write_events(repo)
    store = FeatureStore(repo)
    store.apply()
    with pytest.raises(StoreUnavailableError):
        store.materialize_incremental(END)
    assert set(TTLS) == set(store.catalog.views)
    store.close()


def test_a_window_that_starts_after_the_watermark_keeps_it(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", f"sqlite:///{tmp_path / 'online.db'}")
    write_events(repo)
    with FeatureStore(repo) as store:
        store.apply()
        early = END - timedelta(hours=2)
        store.materialize_incremental(early, views=["no_ttl"])
        assert store.online.watermarks(store.project).get("no_ttl").time == early
        # [early + 30m, END] skips [early, early + 30m): the watermark must not jump over it.
        run = store.materialize(early + timedelta(minutes=30), END, views=["no_ttl"]).runs[0]
        assert "watermark kept" in run.skipped
        assert store.online.watermarks(store.project).get("no_ttl").time == early
        store.materialize(early, END, views=["no_ttl"])
        assert store.online.watermarks(store.project).get("no_ttl").time == END
