"""Watermarks are the state of one online store: kept in it, on SQLite and a real Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import count

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from online_helpers import PROJECT, T0, write

from almanac.config import RepoConfig
from almanac.online import OnlineStore, open_online_store
from almanac.ports.online import ViewRead, Watermark

L1 = "layout-1"  # a view definition's values fingerprint


def test_watermarks_are_set_read_and_never_move_backwards(
    online: OnlineStore, config: RepoConfig
) -> None:
    other = open_online_store(config)  # another process's view of the same store
    try:
        assert online.watermarks(PROJECT) == {}
        t1 = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
        online.set_watermark(PROJECT, "user_stats", t1, L1)
        assert online.watermarks(PROJECT) == {"user_stats": Watermark(t1, L1)}
        assert other.watermarks(PROJECT) == {"user_stats": Watermark(t1, L1)}
        online.set_watermark(PROJECT, "user_stats", t1 - timedelta(days=1), L1)
        assert other.watermarks(PROJECT)["user_stats"].time == t1
        t2 = t1 + timedelta(microseconds=1)
        other.set_watermark(PROJECT, "user_stats", t2, L1)
        online.set_watermark(PROJECT, "user_profile", t1, L1)
        assert online.watermarks(PROJECT) == {
            "user_stats": Watermark(t2, L1),
            "user_profile": Watermark(t1, L1),
        }
        assert online.watermarks(PROJECT)["user_stats"].time.tzinfo is not None
        assert online.watermarks("another_project") == {}
    finally:
        other.close()


def test_watermarks_compare_instants_across_time_zones(online: OnlineStore) -> None:
    online.set_watermark(PROJECT, "v", datetime(2026, 3, 1, 12, 0), L1)  # naive: UTC
    assert online.watermarks(PROJECT)["v"].time == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    # 13:00 in UTC+2 is 11:00 UTC: earlier, so ignored; 10:00 in UTC-5 is 15:00 UTC: later.
    online.set_watermark(
        PROJECT, "v", datetime(2026, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=2))), L1
    )
    assert online.watermarks(PROJECT)["v"].time == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    online.set_watermark(
        PROJECT, "v", datetime(2026, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=-5))), L1
    )
    assert online.watermarks(PROJECT)["v"].time == datetime(2026, 3, 1, 15, 0, tzinfo=UTC)


def test_deleting_a_view_forgets_its_watermark_and_only_its(online: OnlineStore) -> None:
    rows = [{"user_id": 1, "event_timestamp": T0, "clicks": 3}]
    write(online, "user_stats", {"user_id": pa.int64()}, {"clicks": pa.int64()}, rows)
    online.set_watermark(PROJECT, "user_stats", T0, L1)
    online.set_watermark(PROJECT, "user_profile", T0, L1)
    online.delete_view(PROJECT, "user_stats")
    assert online.watermarks(PROJECT) == {"user_profile": Watermark(T0, L1)}


def test_a_read_with_watermarks_is_the_read_and_the_watermarks(online: OnlineStore) -> None:
    """One round trip on one Redis node, two calls elsewhere: the same answers."""
    rows = [{"user_id": i, "event_timestamp": T0 + timedelta(seconds=i), "clicks": i} for i in (1, 2)]  # fmt: skip
    write(online, "user_stats", {"user_id": pa.int64()}, {"clicks": pa.int64()}, rows)
    requests = [ViewRead("user_stats", ["user_id"], [[2, 3, 1]], ["clicks"], ["int64"])]
    assert online.read_with_watermarks(PROJECT, requests) == (online.read(PROJECT, requests), {})
    online.set_watermark(PROJECT, "user_stats", T0, L1)
    online.set_watermark(PROJECT, "user_profile", None, L1)
    read, marks = online.read_with_watermarks(PROJECT, requests)
    assert read == online.read(PROJECT, requests)
    assert read[0].event_times[1] is None and read[0].columns[0][0] == 2
    assert marks == online.watermarks(PROJECT) == {
        "user_stats": Watermark(T0, L1), "user_profile": Watermark(None, L1),
    }  # fmt: skip


_views = count()


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    marks=st.lists(
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
        min_size=1,
        max_size=6,
    )
)
def test_the_watermark_is_the_latest_ever_set(online: OnlineStore, marks: list[datetime]) -> None:
    view = f"view_{next(_views)}"
    for mark in marks:
        online.set_watermark(PROJECT, view, mark, L1)
    assert online.watermarks(PROJECT)[view] == Watermark(max(marks).replace(tzinfo=UTC), L1)


def test_a_watermark_of_another_definition_is_replaced_even_by_an_earlier_time(
    online: OnlineStore,
) -> None:
    late, early = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
    online.set_watermark(PROJECT, "v", late, L1)
    online.set_watermark(PROJECT, "v", early, "layout-2")  # the view was redefined
    assert online.watermarks(PROJECT)["v"] == Watermark(early, "layout-2")
    online.set_watermark(PROJECT, "v", early - timedelta(hours=1), "layout-2")
    assert online.watermarks(PROJECT)["v"] == Watermark(early, "layout-2")
