"""Rule 5, no skew: after materializing up to N, every online value equals
`get_historical_features` at (entity, N) — on generated data with ties, out-of-order and
late rows, nulls and TTL boundaries, on SQLite and on a real Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from almanac.online.retrieval import get_online_features
from almanac.store import FeatureStore
from conftest import TTLS

BASE = datetime(2025, 3, 1, tzinfo=UTC)
# Few distinct times, so that ties, exact TTL boundaries (30m, 2h) and rows after N are common.
OFFSETS = st.sampled_from([0, 10, 30, 60, 90, 120, 150, 180, 240])
ACCOUNTS = [1, 2, 3, 4]
FEATURES = [f"{view}:{f}" for view in TTLS for f in ("score", "label", "count", "embedding")]

row = st.fixed_dictionaries({
    "account_id": st.sampled_from(ACCOUNTS[:-1]),  # the last account never has a row
    "minute": OFFSETS,
    "created_minute": st.one_of(st.none(), st.sampled_from([0, 1, 2])),
    "score": st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
    "label": st.one_of(st.none(), st.text("abc", max_size=3)),
    "count": st.one_of(st.none(), st.integers(-(2**40), 2**40)),
    "embedding": st.one_of(st.none(), st.lists(st.sampled_from([0.5, -1.25, 3.0]), max_size=3)),
})  # fmt: skip


def write_events(store: FeatureStore, rows: list[dict[str, Any]]) -> None:
    at = [BASE + timedelta(minutes=r["minute"]) for r in rows]
    created = [
        None if r["created_minute"] is None else BASE + timedelta(minutes=r["created_minute"])
        for r in rows
    ]
    table = pa.table({
        "account_id": pa.array([r["account_id"] for r in rows], pa.int64()),
        "event_timestamp": pa.array(at, pa.timestamp("us", tz="UTC")),
        "created": pa.array(created, pa.timestamp("us", tz="UTC")),
        "score": pa.array([r["score"] for r in rows], pa.float64()),
        "label": pa.array([r["label"] for r in rows], pa.string()),
        "count": pa.array([r["count"] for r in rows], pa.int64()),
        "embedding": pa.array([r["embedding"] for r in rows], pa.list_(pa.float32())),
    })  # fmt: skip
    pq.write_table(table, store.repo_path / "data" / "events.parquet")


def reset(store: FeatureStore) -> None:
    for view in TTLS:
        store.online.delete_view(store.project, view)


def historical_at(store: FeatureStore, when: datetime) -> dict[str, list[Any]]:
    spine = pa.table({
        "account_id": pa.array(ACCOUNTS, pa.int64()),
        "event_timestamp": pa.array([when] * len(ACCOUNTS), pa.timestamp("us", tz="UTC")),
    })  # fmt: skip
    job = store.get_historical_features(spine, FEATURES, full_feature_names=True)
    return job.to_arrow().to_pydict()


def online_at(store: FeatureStore, when: datetime) -> dict[str, list[Any]]:
    response = get_online_features(
        store, FEATURES, {"account_id": ACCOUNTS}, full_feature_names=True, now=when
    )
    return response.to_dict()


def assert_no_skew(store: FeatureStore, when: datetime) -> None:
    offline, online = historical_at(store, when), online_at(store, when)
    for name in (f.replace(":", "__") for f in FEATURES):
        assert online[name] == offline[name], (name, when)


SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(rows=st.lists(row, min_size=1, max_size=25), n_minute=OFFSETS)
def test_online_equals_historical_after_materialize(
    skew_store: FeatureStore, rows: list[dict[str, Any]], n_minute: int
) -> None:
    store = skew_store
    if not store.catalog.views:
        store.apply()
    reset(store)
    write_events(store, rows)
    end = BASE + timedelta(minutes=n_minute)
    store.materialize(None, end)
    assert_no_skew(store, end)


@SETTINGS
@given(
    rows=st.lists(row, min_size=1, max_size=25),
    first=OFFSETS,
    extra=st.sampled_from([0, 15, 60, 300]),
)
def test_incremental_runs_end_where_one_full_run_does(
    skew_store: FeatureStore, rows: list[dict[str, Any]], first: int, extra: int
) -> None:
    store = skew_store
    if not store.catalog.views:
        store.apply()
    reset(store)
    write_events(store, rows)
    first_end = BASE + timedelta(minutes=first)
    second_end = first_end + timedelta(minutes=extra)
    store.materialize_incremental(first_end)
    store.materialize_incremental(second_end)
    # Re-running a window already written changes nothing (writes are idempotent).
    store.materialize(BASE, second_end)
    assert_no_skew(store, second_end)
    assert store.online.watermarks(store.project).get("no_ttl").time == second_end
