"""/health finds out an online store that lacks a view's values — a Redis that lost its
data, a new store, values of an earlier definition — instead of the server silently
answering NOT_FOUND; `materialize-incremental` refills it and /health is ok again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from almanac import FeatureStore
from almanac.serving.app import create_app
from almanac.starter import create_starter_repo

BATCH_VIEWS = {"user_profile", "user_stats", "user_last_genre"}


@pytest.fixture
def store(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FeatureStore]:
    repo = create_starter_repo(tmp_path / "repo", users=20, events=400)
    monkeypatch.setenv("ALMANAC_ONLINE_URL", redis_url)
    with FeatureStore(repo) as store:
        store.apply()
        yield store


def online_health(client: TestClient) -> tuple[str, dict]:
    body = client.get("/health").json()
    return body["status"], body["online_store"]


@pytest.mark.redis
def test_health_reports_a_flushed_redis_until_it_is_materialized_again(
    store: FeatureStore, redis_url: str
) -> None:
    with TestClient(create_app(store)) as client:
        status, online = online_health(client)
        assert status == "degraded" and online["status"] == "stale"
        assert set(online["views"]) == BATCH_VIEWS  # nothing materialized yet
        assert "materialize-incremental" in online["detail"]

        store.materialize_incremental(datetime.now(UTC))
        assert online_health(client) == ("ok", {"status": "ok"})

        redis.Redis.from_url(redis_url).flushall()  # a restart without persistence
        status, online = online_health(client)
        assert status == "degraded" and set(online["views"]) == BATCH_VIEWS
        assert all("emptied" in why for why in online["views"].values())

        result = store.materialize_incremental(datetime.now(UTC))
        assert result.rows > 0  # refilled from the first row, not from the old watermark
        assert online_health(client) == ("ok", {"status": "ok"})
