"""Feast's write bodies, as its clients send them (recorded from Feast 0.67's remote
online store and feature server; test_feast_client.py drives the real client):
`POST /write-to-online-store` writes one view's rows to the online store, validated as
a push; `POST /push` takes Feast's flags and pandas' `to_dict()` columns. On SQLite and
on a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from almanac import FeatureStore

FEATURES_PY = """
from almanac import (Aggregation, AggregationView, Entity, FeatureView, Field, FileSource,
                     Float64, Int64, PushSource, String, Timestamp)

user = Entity(name="user", join_keys=["user_id"])
events = PushSource(name="events", timestamp_field="ts", created_timestamp_field="created_at")
user_stats = FeatureView(name="user_stats", entities=[user], source=events,
                         schema=[Field("clicks", Int64), Field("seen_at", Timestamp)])
user_pages = FeatureView(name="user_pages", entities=[user], source=events,
                         schema=[Field("page", String)])
user_counts = AggregationView(name="user_counts", entities=[user], source=events,
                              aggregations=[Aggregation(function="count", windows=["1d"])])
user_batch = FeatureView(name="user_batch", entities=[user],
                         source=FileSource(name="batch", path="data/batch.parquet", timestamp_field="ts"),
                         schema=[Field("score", Float64)])
"""
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)


@pytest.fixture
def store(tmp_path: Path, online_url: str) -> Iterator[FeatureStore]:
    (tmp_path / "almanac.yaml").write_text(f"project: wire\nonline:\n  url: {online_url}\n")
    (tmp_path / "features.py").write_text(FEATURES_PY)
    (tmp_path / "data").mkdir()
    pq.write_table(
        pa.table({"user_id": ["b"], "ts": pa.array([NOW], pa.timestamp("us", tz="UTC")),
                  "score": [1.0]}),
        tmp_path / "data" / "batch.parquet",
    )  # fmt: skip
    with FeatureStore(tmp_path) as store:
        store.apply()
        yield store


def feast_write(view: str, df: dict[str, Any]) -> dict[str, Any]:
    """The body of Feast's RemoteOnlineStore.online_write_batch: naive UTC ISO times under
    `event_timestamp`, `created` (null without one), timestamps as epoch seconds."""
    return {"feature_view_name": view, "df": df, "allow_registry_cache": False}


def online(store: FeatureStore, refs: list[str], users: list[str]) -> dict[str, list[Any]]:
    rows = [{"user_id": u} for u in users]
    return store.get_online_features(refs, rows).to_dict(include_statuses=True)


def test_write_to_online_store_writes_the_view_from_feasts_body(
    client: TestClient, store: FeatureStore
) -> None:
    naive = NOW.replace(tzinfo=None).isoformat()
    body = feast_write("user_stats", {
        "user_id": ["w1", "w2"], "clicks": [3, 4], "seen_at": [1_700_000_000, None],
        "event_timestamp": [naive, naive], "created": [None, None],
    })  # fmt: skip
    answer = client.post("/write-to-online-store", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"feature_view_name": "user_stats", "rows": 2}
    values = online(store, ["user_stats:clicks", "user_stats:seen_at", "user_pages:page",
                            "user_counts:count_1d"], ["w1", "w2"])  # fmt: skip
    assert values["clicks"] == [3, 4]
    assert values["seen_at"] == [datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), None]
    # That view only: not the others reading the source, and not the offline store.
    assert values["page__status"] == ["NOT_FOUND"] * 2
    assert values["count_1d"] == [0, 0]
    offline = store.config.resolve_path(store.config.offline.data_path)
    assert not offline.exists() or not any(offline.rglob("*.parquet"))


def test_write_to_online_store_counts_an_aggregation_once(
    client: TestClient, store: FeatureStore
) -> None:
    stamp = NOW.isoformat()
    body = feast_write("user_counts", {"user_id": ["a", "a"], "event_timestamp": [stamp] * 2})
    answer = client.post("/write-to-online-store", json=body)
    assert answer.status_code == 200, answer.text
    assert online(store, ["user_counts:count_1d"], ["a"])["count_1d"] == [2]


STAMP = "2024-01-01"
REFUSALS = [
    (feast_write("user_stat", {"user_id": ["x"]}), 404, "'user_stats'"),
    (feast_write("user_batch", {"user_id": ["x"], "event_timestamp": [STAMP], "score": [1.0]}),
     422, "materialization"),
    (feast_write("user_stats", {"user_id": ["x"], "event_timestamp": [STAMP], "clicks": ["many"],
                                "seen_at": [None]}), 422, "clicks"),
    (feast_write("user_stats", {"user_id": ["x"], "event_timestamp": [STAMP], "clicks": [1]}),
     422, "seen_at"),
    (feast_write("user_stats", {"user_id": {"0": "x"}, "event_timestamp": {"1": STAMP},
                                "clicks": [1], "seen_at": [None]}), 422, "row labels"),
    ({"feature_view_name": "user_stats"}, 422, "df"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "named"), REFUSALS)
def test_write_to_online_store_refusals_name_the_problem_and_write_nothing(
    client: TestClient, store: FeatureStore, body: dict, status: int, named: str
) -> None:
    answer = client.post("/write-to-online-store", json=body)
    assert answer.status_code == status, answer.text
    assert named in answer.text
    assert online(store, ["user_stats:clicks"], ["x"])["clicks__status"] == ["NOT_FOUND"]


def test_push_takes_feasts_body(client: TestClient, store: FeatureStore) -> None:
    # Feast's flags, and columns as pandas' DataFrame.to_dict() writes them.
    stamp = NOW.isoformat(sep=" ")
    body = {
        "push_source_name": "events",
        "df": {
            "user_id": {"0": "p1", "1": "p2"},
            "ts": {"0": stamp, "1": stamp},
            "clicks": {"0": 7, "1": 8},
            "seen_at": {"0": None, "1": stamp},
            "page": {"0": "/a", "1": "/b"},
        },
        "to": "online",
        "allow_registry_cache": True,
        "transform_on_write": True,
    }
    answer = client.post("/push", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["rows"] == 2
    values = online(store, ["user_stats:clicks", "user_pages:page", "user_counts:count_1d"],
                    ["p1", "p2"])  # fmt: skip
    assert (values["clicks"], values["page"], values["count_1d"]) == ([7, 8], ["/a", "/b"], [1, 1])
