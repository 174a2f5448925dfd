"""Rule 5 when the online store is not the one that was materialized (issue 11, item 2):
a watermark is the state of one online store, so a new store (another `online.url`,
e.g. `ALMANAC_ONLINE_URL`), a flushed Redis or a Redis restarted without persistence is
materialized from the start by the next `materialize_incremental`, and then serves
what training sets see at N — plain views and aggregation views alike."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_no_skew import BASE, OFFSETS, row, write_events

from almanac.materialize.jobs import views_to_materialize
from almanac.online.response import FeatureStatus
from almanac.store import FeatureStore
from conftest import MIXED_VIEWS, assert_online_equals_historical, write_mixed_repo, write_push_repo
from servers import RedisServer

ACCOUNTS = {"account_id": [1, 2, 3, 4]}  # account 4 never has a row
VIEWS = MIXED_VIEWS
_projects = itertools.count()


def make_repo(folder: Path, online_url: str) -> Path:
    project = f"swap_{next(_projects)}"
    return write_mixed_repo(folder / project, online_url, project)


def open_store(repo: Path, online_url: str, monkeypatch: pytest.MonkeyPatch) -> FeatureStore:
    """The repo on another online store, as docs/configuration.md documents the switch."""
    monkeypatch.setenv("ALMANAC_ONLINE_URL", online_url)
    return FeatureStore(repo)


def marks(store: FeatureStore) -> dict[str, datetime]:
    """How far each view is materialized into the store's online store."""
    return {view: mark.time for view, mark in store.online.watermarks(store.project).items()}


def lacking(store: FeatureStore) -> dict[str, str]:
    """The views `/health` reports this online store lacks, with the reason."""
    return views_to_materialize(store.catalog, store.online, store.project)


def flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()


@pytest.fixture(
    params=[
        pytest.param("sqlite-to-redis", marks=pytest.mark.redis),
        pytest.param("redis-to-sqlite", marks=pytest.mark.redis),
        "sqlite-to-sqlite",
    ]
)
def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """The online URLs of two different stores: the first materialized, then the other."""
    urls: dict[str, Callable[[], str]] = {
        "sqlite": lambda: f"sqlite:///{tmp_path / 'first.db'}",
        "redis": lambda: request.getfixturevalue("redis_url"),
    }
    first, second = request.param.split("-to-")
    second_url = f"sqlite:///{tmp_path / 'second.db'}" if second == first else urls[second]()
    return urls[first](), second_url


def assert_written_from_the_start(result: Any, end: datetime) -> None:
    runs = {run.view: run for run in result.runs}
    assert set(runs) == VIEWS
    for run in runs.values():
        assert run.start is None and run.end == end and not run.skipped, run
        assert run.rows > 0, run  # every view has rows before `end`


SETTINGS = settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Row times 0..240 minutes; the first run ends at or after 0, so every view has a row.
events = st.lists(row, min_size=1, max_size=20).map(
    lambda rows: [{**rows[0], "minute": 0}, *rows[1:]]
)


@SETTINGS
@given(rows=events, first=OFFSETS, later=st.sampled_from([0, 30, 120]))
def test_a_new_online_store_is_materialized_from_the_start(
    tmp_path: Path,
    two_stores: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    rows: list[dict[str, Any]],
    first: int,
    later: int,
) -> None:
    first_url, second_url = two_stores
    repo = make_repo(tmp_path, first_url)
    first_end = BASE + timedelta(minutes=first)
    second_end = first_end + timedelta(minutes=later)
    with open_store(repo, first_url, monkeypatch) as store:
        write_events(store, rows)
        store.apply()
        store.materialize_incremental(first_end)
        assert_online_equals_historical(store, first_end, ACCOUNTS, "first store")

    with open_store(repo, second_url, monkeypatch) as swapped:
        # The other store was never materialized: the first store's watermarks say nothing.
        assert marks(swapped) == {}
        assert set(lacking(swapped)) == VIEWS
        result = swapped.materialize_incremental(second_end)
        assert_written_from_the_start(result, second_end)
        assert_online_equals_historical(swapped, second_end, ACCOUNTS, "second store")
        assert marks(swapped) == dict.fromkeys(VIEWS, second_end)
        assert lacking(swapped) == {}

    with open_store(repo, first_url, monkeypatch) as store:
        # Back on the first store: it kept its own watermarks, and goes on from them.
        assert marks(store) == dict.fromkeys(VIEWS, first_end)
        result = store.materialize_incremental(second_end)
        assert all(run.start == first_end for run in result.runs), result.runs
        assert_online_equals_historical(store, second_end, ACCOUNTS, "first store again")


@pytest.mark.redis
@SETTINGS
@given(rows=events, first=OFFSETS, later=st.sampled_from([0, 30, 120]))
def test_a_flushed_redis_is_refilled_by_the_next_incremental_run(
    tmp_path: Path, redis_url: str, rows: list[dict[str, Any]], first: int, later: int
) -> None:
    with FeatureStore(make_repo(tmp_path, redis_url)) as store:
        write_events(store, rows)
        store.apply()
        first_end = BASE + timedelta(minutes=first)
        store.materialize_incremental(first_end)
        assert set(marks(store)) == VIEWS
        flush(redis_url)  # the cache lost everything, its watermarks with its data
        assert marks(store) == {}
        assert set(lacking(store)) == VIEWS  # what /health reports until the refill
        second_end = first_end + timedelta(minutes=later)
        result = store.materialize_incremental(second_end)
        assert_written_from_the_start(result, second_end)
        assert_online_equals_historical(store, second_end, ACCOUNTS, "after the flush")


@pytest.mark.redis
def test_a_redis_restarted_without_persistence_is_refilled(
    tmp_path: Path, redis_url: str, redis_server: RedisServer
) -> None:
    """The session's Redis (no RDB, no AOF) restarted under a running process: the
    same FeatureStore refills it at the next incremental run."""
    rows = [
        {"account_id": a, "minute": m, "created_minute": None, "score": a * 1.5 + m,
         "label": f"l{m}", "count": a + m, "embedding": [0.5] * a}
        for a, m in [(1, 0), (1, 60), (2, 30), (2, 180), (3, 90), (3, 240)]
    ]  # fmt: skip
    end = BASE + timedelta(minutes=240)
    with FeatureStore(make_repo(tmp_path, redis_url)) as store:
        write_events(store, rows)
        store.apply()
        store.materialize_incremental(end)
        assert_online_equals_historical(store, end, ACCOUNTS, "before the restart")
        redis_server.restart()
        assert marks(store) == {}
        assert set(lacking(store)) == VIEWS
        result = store.materialize_incremental(end)
        assert_written_from_the_start(result, end)
        assert_online_equals_historical(store, end, ACCOUNTS, "after the restart")


# ---- a definition edit applied while the other store was configured -------------------

V2_SOURCE = """
events_v2 = FileSource(
    name="events_v2", path="data/events_v2.parquet", created_timestamp_field="created"
)
"""


@pytest.fixture
def repo_on_two_stores(
    tmp_path: Path, two_stores: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, str, str]]:
    first_url, second_url = two_stores
    repo = make_repo(tmp_path, first_url)
    rows = [
        {"account_id": a, "minute": m, "created_minute": None, "score": float(a + m),
         "label": f"l{m}", "count": a * m, "embedding": None}
        for a, m in [(1, 0), (1, 60), (2, 30), (3, 90)]
    ]  # fmt: skip
    with open_store(repo, first_url, monkeypatch) as store:
        write_events(store, [{**r, "score": -r["score"], "label": "v2"} for r in rows])
        (repo / "data" / "events.parquet").rename(repo / "data" / "events_v2.parquet")
        write_events(store, rows)
    yield repo, first_url, second_url


def _point_no_ttl_at_events_v2(text: str) -> str:
    text = text.replace("\nno_ttl = ", V2_SOURCE + "\nno_ttl = ", 1)
    return text.replace("source=events,", "source=events_v2,", 1)


def _retype_count(text: str) -> str:
    return text.replace('Field("count", Int64)', 'Field("count", String)', 1)


@pytest.mark.parametrize(
    "edit", [_point_no_ttl_at_events_v2, _retype_count], ids=["source", "dtype"]
)
def test_an_edit_applied_against_one_store_is_not_served_stale_by_the_other(
    repo_on_two_stores: tuple[Path, str, str],
    monkeypatch: pytest.MonkeyPatch,
    edit: Callable[[str], str],
) -> None:
    """Two online stores of one project (staging and production, or a laptop's SQLite
    file and the team's Redis) are both materialized to N; a view is edited (pointed at
    another source, or a feature retyped) while the first store is configured. The
    second store, materialized again to N, must serve the edited view's values — not
    what it holds for the old definition."""
    repo, first_url, second_url = repo_on_two_stores
    end = BASE + timedelta(minutes=120)
    for url in (first_url, second_url):
        with open_store(repo, url, monkeypatch) as store:
            store.apply()
            store.materialize_incremental(end)
            assert_online_equals_historical(store, end, ACCOUNTS, url)

    features = repo / "features.py"
    features.write_text(edit(features.read_text()))
    with open_store(repo, first_url, monkeypatch) as store:
        assert store.plan().views_with_stale_online_data() == ["no_ttl"]
        store.apply()
        store.materialize_incremental(end)
        assert_online_equals_historical(store, end, ACCOUNTS, "the store configured at apply")

    with open_store(repo, second_url, monkeypatch) as other:
        assert lacking(other) == {"no_ttl": "its values were written under an earlier definition"}
        result = other.materialize_incremental(end)
        assert {run.view: run.start for run in result.runs}["no_ttl"] is None
        assert_online_equals_historical(other, end, ACCOUNTS, "the other store")
        assert lacking(other) == {}


# ---- push-fed views ---------------------------------------------------------------------

PUSH_FEATURES = """
from almanac import (Aggregation, AggregationView, Entity, FeatureView, Field, Float64, Int64,
                     PushSource, String)

account = Entity(name="account", join_keys=["account_id"], dtype=Int64)
clicks = PushSource(name="clicks")
last_click = FeatureView(
    name="last_click", entities=[account], source=clicks,
    schema=[Field("value", Float64), Field("n", Int64)],
)
click_stats = AggregationView(
    name="click_stats", entities=[account], source=clicks,
    aggregations=[Aggregation(function="count", windows=["1h", "1d"]),
                  Aggregation(column="value", function="sum", windows=["1d"])],
    columns=[Field("value", Float64)],
)
"""


def make_push_repo(folder: Path, online_url: str) -> Path:
    project = f"swap_{next(_projects)}"
    return write_push_repo(folder / project, online_url, project, PUSH_FEATURES)


def push(store: FeatureStore, events: list[tuple[int, int, float, Any]]) -> None:
    store.push(
        "clicks",
        {
            "account_id": [a for a, _, _, _ in events],
            "event_timestamp": [BASE + timedelta(minutes=m) for _, m, _, _ in events],
            "value": [v for _, _, v, _ in events],
            "n": [n for _, _, _, n in events],
        },
    )


@pytest.mark.redis
def test_a_flushed_redis_is_refilled_for_push_fed_views(tmp_path: Path, redis_url: str) -> None:
    """Pushed values live in the offline log too: after a flush, the next incremental
    run writes them back, for a plain and an aggregation view over the push source."""
    end = BASE + timedelta(minutes=120)
    with FeatureStore(make_push_repo(tmp_path, redis_url)) as store:
        store.apply()
        push(store, [(1, 0, 1.5, 7), (2, 30, 2.5, 8), (1, 60, 0.5, 9)])
        assert_online_equals_historical(store, end, ACCOUNTS, "pushed")
        flush(redis_url)
        result = store.materialize_incremental(end)
        assert {run.view: run.start for run in result.runs} == {
            "last_click": None,
            "click_stats": None,
        }
        assert_online_equals_historical(store, end, ACCOUNTS, "after the flush")


def test_a_push_fed_view_edited_against_another_store_never_serves_old_values(
    tmp_path: Path, two_stores: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The serving store takes the pushes; a feature of the push-fed view is retyped
    (Int64 → String) while another store is configured. Pushes go on into the serving
    store: what it serves for an entity not pushed since is the retyped view's value
    or NOT_FOUND, never the bytes of the old type; a materialization makes it exact."""
    other_url, serving_url = two_stores
    repo = make_push_repo(tmp_path, other_url)
    end = BASE + timedelta(minutes=120)
    with open_store(repo, serving_url, monkeypatch) as serving:
        serving.apply()
        push(serving, [(1, 0, 1.5, 7), (2, 30, 2.5, 8)])
        assert_online_equals_historical(serving, end, ACCOUNTS, "pushed")

    features = repo / "features.py"
    features.write_text(features.read_text().replace('Field("n", Int64)', 'Field("n", String)'))
    with open_store(repo, other_url, monkeypatch) as store:
        assert store.plan().views_with_stale_online_data() == ["last_click"]
        store.apply()

    with open_store(repo, serving_url, monkeypatch) as serving:
        push(serving, [(1, 60, 0.5, "9")])
        keys = {"account_id": [1, 2]}
        served = serving.get_online_features(["last_click:n"], keys, now=end)
        spine = pa.table({"account_id": [1, 2], "event_timestamp": [end, end]})
        expected = serving.get_historical_features(spine, ["last_click:n"]).to_arrow()
        for value, status, truth in zip(
            served.values["n"], served.statuses["n"], expected["n"].to_pylist(), strict=True
        ):
            assert value == truth or (value is None and status == FeatureStatus.NOT_FOUND), (
                f"served {value!r} ({status}), the retyped view's value is {truth!r}"
            )
        serving.materialize_incremental(end)
        assert_online_equals_historical(serving, end, ACCOUNTS, "materialized after the edit")
