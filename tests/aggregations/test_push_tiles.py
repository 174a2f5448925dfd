"""Pushed events update aggregation tiles online: after materializing part of a stream
and pushing the rest in batches (out of order, late events included), the online value
at read time R equals the offline value at R and the brute-force reference, for every
function and window, on SQLite and on a real Redis."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from agg_repo import BASE, FEATURES_PY, VIEWS, reference, same
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_aggregation_properties import KEYS, _events, _read_times, event

from almanac.errors import InputError
from almanac.online.retrieval import get_online_features
from almanac.store import FeatureStore

PUSH_FEATURES_PY = FEATURES_PY.replace(
    'events = FileSource(path="data/events.parquet", timestamp_field="ts")',
    'events = PushSource(name="events", timestamp_field="ts")',
).replace("FileSource,", "FileSource, PushSource,")


@pytest.fixture
def store(tmp_path: Path, online_url: str) -> Iterator[FeatureStore]:
    (tmp_path / "almanac.yaml").write_text(f"project: aggpush\nonline:\n  url: {online_url}\n")
    (tmp_path / "features.py").write_text(PUSH_FEATURES_PY)
    made = FeatureStore(tmp_path)
    made.apply()
    yield made
    made.close()


def _frame(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.table(
        {
            "customer_id": pa.array([r["customer_id"] for r in rows], pa.int64()),
            "ts": pa.array([r["ts"] for r in rows], pa.timestamp("us", tz="UTC")),
            "amount": pa.array([r["amount"] for r in rows], pa.float64()),
            "qty": pa.array([r["qty"] for r in rows], pa.int64()),
            "merchant": pa.array([r["merchant"] for r in rows], pa.string()),
        }
    )


def _assert_agrees(store: FeatureStore, events: list[dict[str, Any]], times: list[Any]) -> None:
    keys = [*KEYS, 99]  # 99 has no events
    refs = list(VIEWS)
    spine = pd.DataFrame(
        {
            "customer_id": [k for _ in times for k in keys],
            "event_timestamp": [t for t in times for _ in keys],
        }
    )
    offline = store.get_historical_features(spine, refs, full_feature_names=True).to_arrow()
    offline_rows = offline.to_pylist()
    catalog = store.catalog
    for i, at in enumerate(times):
        online = get_online_features(
            store, refs, [{"customer_id": k} for k in keys], now=at, full_feature_names=True
        ).to_dict()
        for j, key in enumerate(keys):
            for view_name in VIEWS:
                view = catalog.aggregation_views[view_name]
                for feature in view.aggregate_features:
                    name = f"{view_name}__{feature.name}"
                    expected = reference(
                        events, key, at, feature.function, feature.column, feature.window, view.tile
                    )
                    where = f"{name} key={key} at={at.isoformat()}"
                    got_offline = offline_rows[i * len(keys) + j][name]
                    assert same(got_offline, expected), f"offline {where}: {got_offline} != {expected}"  # fmt: skip
                    assert same(online[name][j], expected), f"online {where}: {online[name][j]} != {expected}"  # fmt: skip


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    drawn=st.lists(event, min_size=2, max_size=25),
    split=st.integers(0, 25),
    batches=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_pushes_after_materialization_equal_offline_and_reference(
    store: FeatureStore, drawn, split, batches, seed
) -> None:
    rng = random.Random(seed)
    events = _events(drawn)
    rng.shuffle(events)
    for view in VIEWS:  # hypothesis reuses the store: start from nothing
        store.online.delete_view(store.project, view)
    for path in store.config.resolve_path(store.config.offline.data_path).glob("events/*"):
        path.unlink()
    materialized, pushed = events[: split % len(events)], events[split % len(events) :]
    if materialized:
        store.push("events", _frame(materialized), to="offline")
        store.materialize(None, max(e["ts"] for e in materialized), list(VIEWS))
    # The rest arrives in batches, out of order: some are older than what was materialized.
    size = max(1, -(-len(pushed) // batches))
    for start in range(0, len(pushed), size):
        store.push("events", _frame(pushed[start : start + size]))
    _assert_agrees(store, events, _read_times(events, rng))


def test_a_7_day_count_moves_with_each_push_and_decays_without_writes(store: FeatureStore) -> None:
    def one(seconds: int, amount: float) -> dict[str, Any]:
        return {"customer_id": 1, "ts": BASE + timedelta(seconds=seconds), "amount": amount,
                "qty": 1, "merchant": "a"}  # fmt: skip

    def count_1d(at: Any) -> Any:
        response = get_online_features(store, ["spend:count_1d"], [{"customer_id": 1}], now=at)
        return response.to_dict()["count_1d"][0]

    store.push("events", _frame([one(0, 1.0)]))
    assert count_1d(BASE) == 1
    store.push("events", _frame([one(3600, 2.0), one(7200, 3.0)]))
    assert count_1d(BASE + timedelta(hours=2)) == 3
    store.push("events", _frame([one(1800, 4.0)]))  # late: older than the latest event
    assert count_1d(BASE + timedelta(hours=2)) == 4
    # A day after the first event it has aged out, with no write in between.
    assert count_1d(BASE + timedelta(days=1)) == 3
    assert count_1d(BASE + timedelta(days=1, hours=2)) == 0


def test_concurrent_pushes_to_one_entity_lose_no_event(store: FeatureStore) -> None:
    """Four threads push 25 single events each to the same customer: the read-modify-
    write of its tiles is atomic, so all 100 are counted."""
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(25):
                seconds = n * 100 + i
                row = {"customer_id": 1, "ts": BASE + timedelta(seconds=seconds),
                       "amount": 1.0, "qty": 1, "merchant": f"m{n}"}  # fmt: skip
                store.push("events", _frame([row]), to="online")
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    response = get_online_features(
        store, ["spend:count_1d", "spend:merchant_count_distinct_1d"], [{"customer_id": 1}],
        now=BASE + timedelta(hours=1),
    ).to_dict()  # fmt: skip
    assert response["count_1d"] == [100]
    assert response["merchant_count_distinct_1d"] == [4]


def test_a_push_missing_an_aggregated_column_is_refused_whole(store: FeatureStore) -> None:
    rows = _frame([{"customer_id": 1, "ts": BASE, "amount": 1.0, "qty": 1, "merchant": "a"}])
    with pytest.raises(InputError, match="merchant"):
        store.push("events", rows.drop_columns(["merchant"]))
    response = get_online_features(store, ["spend:count_1d"], [{"customer_id": 1}], now=BASE)
    assert response.to_dict()["count_1d"] == [0]
    assert store.get_historical_features(
        pd.DataFrame({"customer_id": [1], "event_timestamp": [BASE]}), ["spend:count_1d"]
    ).to_arrow().column("count_1d").to_pylist() == [0]


def test_pushes_of_infinity_or_nan_are_refused_and_leave_the_tiles(store: FeatureStore) -> None:
    """NaN and ±infinity are refused at the door (rule 7; JSON has no such values): the
    tiles keep only the finite events, online as offline."""

    def one(seconds: int, amount: float) -> dict[str, Any]:
        return {"customer_id": 1, "ts": BASE + timedelta(seconds=seconds), "amount": amount,
                "qty": 1, "merchant": "a"}  # fmt: skip

    features = ["spend:amount_sum_1d", "spend:amount_max_1d", "spend:amount_stddev_1d"]
    at = BASE + timedelta(hours=1)
    store.push("events", _frame([one(0, 1.0)]))
    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(InputError, match=r"column 'amount': row 0: .* is not a finite number"):
            store.push("events", _frame([one(60, bad)]))
    store.push("events", _frame([one(120, 2.0)]))
    online = get_online_features(store, features, [{"customer_id": 1}], now=at).to_dict()
    spine = pd.DataFrame({"customer_id": [1], "event_timestamp": [at]})
    offline = store.get_historical_features(spine, features).to_arrow().to_pylist()[0]
    names = ["amount_sum_1d", "amount_max_1d", "amount_stddev_1d"]
    assert [online[name][0] for name in names] == pytest.approx([3.0, 2.0, math.sqrt(0.5)])
    assert [online[name][0] for name in names] == pytest.approx([offline[n] for n in names])


def test_an_event_pushed_with_a_future_time_keeps_the_tiles_reads_need_now(
    store: FeatureStore,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [{"customer_id": 1, "ts": now - timedelta(hours=h), "amount": 1.0, "qty": 1,
             "merchant": "a"} for h in (1, 2, 3)]  # fmt: skip
    store.push("events", _frame(rows))
    # Event times ahead of the clock by more than the skew tolerance are refused (rule 1);
    # one a few seconds ahead (a client's clock) is accepted and counted once it is due.
    with pytest.raises(InputError, match="is in the future"):
        store.push("events", _frame([{**rows[0], "ts": now + timedelta(days=2)}]))
    store.push("events", _frame([{**rows[0], "ts": now + timedelta(seconds=4)}]))

    def count_1d(at: datetime) -> int:
        response = get_online_features(store, ["spend:count_1d"], [{"customer_id": 1}], now=at)
        return response.to_dict()["count_1d"][0]

    assert count_1d(now + timedelta(seconds=5)) == 4
    assert count_1d(now + timedelta(days=1)) == 1


def test_a_blob_of_an_earlier_definition_is_replaced_not_merged(store: FeatureStore) -> None:
    """A blob of another layout (written before the view changed, e.g. by a server with
    a cached catalog) reads as absent and is replaced by the next push, even when its
    event time is later than the pushed event's."""
    stale = b'{"g":1,"b":[1],"n":[5],"c":{"amount":{"n":[5]}}}'
    store.online.write_batch(store.project, "spend", ["customer_id"], ["tiles"], pa.table({
        "customer_id": pa.array([1], pa.int64()),
        "event_timestamp": pa.array([BASE + timedelta(minutes=5)], pa.timestamp("us", tz="UTC")),
        "tiles": pa.array([stale], pa.binary()),
    }))  # fmt: skip
    read = get_online_features(store, ["spend:count_1d", "spend:amount_max_1d"],
                               [{"customer_id": 1}], now=BASE + timedelta(minutes=5)).to_dict()  # fmt: skip
    assert read["count_1d"] == [0] and read["amount_max_1d"] == [None]
    row = {"customer_id": 1, "ts": BASE, "amount": 3.0, "qty": 1, "merchant": "a"}
    store.push("events", _frame([row]), to="online")
    read = get_online_features(store, ["spend:count_1d", "spend:amount_max_1d"],
                               [{"customer_id": 1}], now=BASE + timedelta(minutes=5)).to_dict()  # fmt: skip
    assert read["count_1d"] == [1] and read["amount_max_1d"] == [3.0]
