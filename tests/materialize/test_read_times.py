"""Online reads at a read time R other than N (issue 11, item 3). After materializing to
N data whose event times are all <= N, a read at any R >= N equals
`get_historical_features` at R: TTLs run out (OUTSIDE_MAX_AGE) and aggregation windows
decay exactly as offline. A read at R < N cannot be answered from the latest values
and is refused, naming the view and pointing to `get_historical_features`; so is a read
before the event time of a pushed value. On SQLite and on a real Redis."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_no_skew import BASE, OFFSETS, row, write_events

from almanac.errors import InputError
from almanac.online.response import FeatureStatus
from almanac.online.retrieval import get_online_features_async
from almanac.store import FeatureStore
from conftest import assert_online_equals_historical, write_mixed_repo, write_push_repo

ACCOUNTS = [1, 2, 3, 4]  # account 4 never has a row
KEYS = {"account_id": ACCOUNTS}
TTL = {"no_ttl": None, "ttl_2h": timedelta(hours=2), "ttl_30m": timedelta(minutes=30)}
US = timedelta(microseconds=1)
# Read times after N: at N, just after, on and just past each TTL, past every window.
AFTER_N = [
    timedelta(0), US, timedelta(minutes=29), timedelta(minutes=30), timedelta(minutes=30) + US,
    timedelta(hours=1), timedelta(hours=2), timedelta(hours=2) + US, timedelta(hours=5),
    timedelta(days=1), timedelta(days=1) + US, timedelta(days=3),
]  # fmt: skip

_projects = itertools.count()


def make_store(folder: Path, online_url: str) -> FeatureStore:
    project = f"reads_{next(_projects)}"
    return FeatureStore(write_mixed_repo(folder / project, online_url, project))


@pytest.fixture
def store(tmp_path: Path, online_url: str) -> Iterator[FeatureStore]:
    made = make_store(tmp_path, online_url)
    yield made
    made.close()


def assert_statuses(store: FeatureStore, rows: list[dict[str, Any]], at: datetime) -> None:
    """OUTSIDE_MAX_AGE exactly where an entity's latest row is older than the TTL at
    `at`; no value served has an event time after `at`."""
    features = [f"{view}:score" for view in TTL]
    response = store.get_online_features(features, KEYS, now=at, full_feature_names=True)
    latest = {
        a: max(BASE + timedelta(minutes=r["minute"]) for r in rows if r["account_id"] == a)
        for a in {r["account_id"] for r in rows}
    }
    for view, ttl in TTL.items():
        name = f"{view}__score"
        for account, status, stamp in zip(
            ACCOUNTS, response.statuses[name], response.event_timestamps[name], strict=True
        ):
            if account not in latest:
                assert status == FeatureStatus.NOT_FOUND, (name, account)
                continue
            assert stamp == latest[account] and stamp <= at, (name, account, stamp)
            stale = ttl is not None and latest[account] < at - ttl
            assert (status == FeatureStatus.OUTSIDE_MAX_AGE) == stale, (name, account, status, at)
            if stale:
                assert response.values[name][ACCOUNTS.index(account)] is None


SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(
    rows=st.lists(row, min_size=1, max_size=20),
    n_minute=OFFSETS,
    extra=st.lists(st.integers(0, 3 * 86_400_000_000), max_size=3),
)
def test_reads_after_n_equal_historical_at_the_read_time(
    tmp_path: Path, online_url: str, rows: list[dict[str, Any]], n_minute: int, extra: list[int]
) -> None:
    rows = [{**r, "minute": min(r["minute"], n_minute)} for r in rows]  # every event <= N
    with make_store(tmp_path, online_url) as store:
        write_events(store, rows)
        store.apply()
        end = BASE + timedelta(minutes=n_minute)
        store.materialize_incremental(end)
        times = [end + after for after in AFTER_N] + [end + US * us for us in extra]
        assert_online_equals_historical(store, times, KEYS, f"N = {end.isoformat()}")
        for at in times:
            assert_statuses(store, rows, at)
        # Past the longest window every count has decayed to 0 (no re-materialization).
        late = store.get_online_features(
            ["activity:count_2h", "activity:label_count_distinct_1d"], KEYS,
            now=end + timedelta(days=1) + US,
        )  # fmt: skip
        assert late.values["count_2h"] == [0, 0, 0, 0]
        assert late.values["label_count_distinct_1d"] == [0, 0, 0, 0]


# ---- before N: refused ------------------------------------------------------------------

ROWS = [
    {"account_id": a, "minute": m, "created_minute": None, "score": float(a * m),
     "label": f"l{m}", "count": a + m, "embedding": None}
    for a, m in [(1, 0), (1, 60), (2, 30), (3, 90)]
]  # fmt: skip


def _refusal(view: str) -> str:
    return rf"view '{view}'.*get_historical_features"


@pytest.mark.parametrize("view", ["no_ttl", "ttl_30m", "activity"])
@pytest.mark.parametrize(
    "before",
    [US, timedelta(minutes=30), timedelta(minutes=150), timedelta(days=30)],
    ids=["1us", "30m", "at-the-last-event", "before-every-event"],
)
def test_reads_before_n_are_refused(store: FeatureStore, view: str, before: timedelta) -> None:
    write_events(store, ROWS)
    store.apply()
    end = BASE + timedelta(minutes=240)  # the last event is at 90 minutes
    store.materialize_incremental(end)
    feature = f"{view}:{store.catalog.view(view).feature_names[0]}"
    for keys in (KEYS, {"account_id": [4]}):  # an entity without a row too: N bounds all
        with pytest.raises(InputError, match=_refusal(view)):
            store.get_online_features([feature], keys, now=end - before)
        with pytest.raises(InputError, match=_refusal(view)):  # the asyncio API alike
            asyncio.run(get_online_features_async(store, [feature], keys, now=end - before))
    # At N itself the same read is answered, and it is exact.
    response = store.get_online_features([feature], KEYS, now=end)
    answer = asyncio.run(get_online_features_async(store, [feature], KEYS, now=end))
    assert answer.values == response.values
    spine = pa.table({"account_id": ACCOUNTS, "event_timestamp": [end] * len(ACCOUNTS)})
    offline = store.get_historical_features(spine, [feature]).to_arrow().to_pydict()
    name = feature.split(":")[1]
    assert response.values[name] == offline[name]


def test_a_refusal_names_the_view_that_cannot_answer(store: FeatureStore) -> None:
    """One request over several views, one of them materialized to a later N."""
    write_events(store, ROWS)
    store.apply()
    early, late = BASE + timedelta(minutes=100), BASE + timedelta(minutes=200)
    store.materialize_incremental(early)
    store.materialize_incremental(late, views=["activity"])
    features = ["no_ttl:score", "activity:count_2h"]
    with pytest.raises(InputError, match=_refusal("activity")) as refused:
        store.get_online_features(features, KEYS, now=early)
    assert "no_ttl" not in str(refused.value)
    assert_online_equals_historical(store, late, KEYS)


# ---- pushed values ----------------------------------------------------------------------

PUSH_FEATURES = """
from almanac import (Aggregation, AggregationView, Entity, FeatureView, Field, Float64, Int64,
                     PushSource, String)

account = Entity(name="account", join_keys=["account_id"], dtype=Int64)
clicks = PushSource(name="clicks")
last_click = FeatureView(
    name="last_click", entities=[account], source=clicks, ttl="1h",
    schema=[Field("page", String), Field("value", Float64)],
)
click_stats = AggregationView(
    name="click_stats", entities=[account], source=clicks,
    aggregations=[
        Aggregation(function="count", windows=["30m", "2h"]),
        Aggregation(column="value", function="sum", windows=["1h"]),
        Aggregation(column="page", function="last", windows=["2h"]),
    ],
    columns=[Field("value", Float64), Field("page", String)],
)
"""
PUSH_VIEWS = ("last_click", "click_stats")
PUSH_MINUTES = [0, 10, 30, 60, 90, 120, 150, 180, 240]


def make_push_store(folder: Path, online_url: str) -> FeatureStore:
    project = f"pushed_{next(_projects)}"
    store = FeatureStore(write_push_repo(folder / project, online_url, project, PUSH_FEATURES))
    store.apply()
    return store


def _push(store: FeatureStore, events: list[tuple[int, int, float]]) -> None:
    store.push(
        "clicks",
        {
            "account_id": [a for a, _, _ in events],
            "event_timestamp": [BASE + timedelta(minutes=m) for _, m, _ in events],
            "page": [f"/p{m}" for _, m, _ in events],
            "value": [v for _, _, v in events],
        },
    )


pushed = st.lists(
    st.tuples(
        st.sampled_from([1, 2, 3]), st.sampled_from(PUSH_MINUTES), st.sampled_from([0.5, 2.0])
    ),
    min_size=1,
    max_size=4,
)
# Pushes (late ones included), now and then a materialization of the pushed rows to N.
steps = st.lists(
    st.one_of(
        pushed.map(lambda batch: ("push", batch)),
        st.sampled_from(PUSH_MINUTES).map(lambda minute: ("materialize", minute)),
    ),
    min_size=1,
    max_size=5,
)


@SETTINGS
@given(steps=steps)
def test_a_pushed_value_is_refused_before_its_event_time_and_exact_after(
    tmp_path: Path, online_url: str, steps: list[tuple[str, Any]]
) -> None:
    with make_push_store(tmp_path, online_url) as store:
        stored: dict[int, datetime] = {}  # account → latest pushed event time
        watermark: datetime | None = None
        for action, arg in steps:
            if action == "push":
                _push(store, arg)
                for account, minute, _ in arg:
                    at = BASE + timedelta(minutes=minute)
                    stored[account] = max(stored.get(account, at), at)
            else:
                end = BASE + timedelta(minutes=arg)
                store.materialize_incremental(end)
                watermark = max(watermark or end, end)
            _check_reads(store, stored, watermark)


def _check_reads(
    store: FeatureStore, stored: dict[int, datetime], watermark: datetime | None
) -> None:
    for view in PUSH_VIEWS:
        feature = f"{view}:{store.catalog.view(view).feature_names[0]}"
        for account in ACCOUNTS:
            pushed_at = stored.get(account)
            bounds = [t for t in (pushed_at, watermark) if t is not None]
            if not bounds:
                continue
            keys = {"account_id": [account]}
            with pytest.raises(InputError, match=_refusal(view)) as refused:
                store.get_online_features([feature], keys, now=max(bounds) - US)
            if pushed_at is not None and (watermark is None or watermark < pushed_at):
                # Refused because of the value itself: the message says which one.
                assert f"event time {pushed_at.isoformat()}" in str(refused.value)
    latest = max([*stored.values(), *([watermark] if watermark else [])], default=None)
    if latest is None:
        return
    afters = (timedelta(0), US, timedelta(hours=1), timedelta(hours=1) + US)
    assert_online_equals_historical(store, [latest + a for a in afters], KEYS, "after the pushes")
