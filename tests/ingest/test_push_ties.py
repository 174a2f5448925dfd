"""Pushes that tie on event time: the online store keeps the row that rule 2 picks
offline (the later created time; without one, the later push), whatever order the
pushes arrive in — on SQLite and on a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from almanac import FeatureStore

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
FEATURES_PY = """
from almanac import Entity, FeatureView, Field, Int64, PushSource

user = Entity(name="user", join_keys=["user_id"], dtype=Int64)
scores = PushSource(name="scores", created_timestamp_field="created")
score = FeatureView(name="score", entities=[user], source=scores, schema=[Field("points", Int64)])
plain = PushSource(name="plain")
plain_score = FeatureView(name="plain_score", entities=[user], source=plain,
                          schema=[Field("points", Int64)])
"""


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeatureStore]:
    url = "sqlite:///online.db" if request.param == "sqlite" else request.getfixturevalue("redis_url")  # fmt: skip
    (tmp_path / "almanac.yaml").write_text(f"project: ties\nonline:\n  url: {url}\n")
    (tmp_path / "features.py").write_text(FEATURES_PY)
    with FeatureStore(tmp_path) as made:
        made.apply()
        yield made


def _online_and_offline(store: FeatureStore, view: str, at: datetime) -> tuple[Any, Any]:
    online = store.get_online_features([f"{view}:points"], [{"user_id": 1}], now=at)
    spine = pa.table({"user_id": [1], "event_timestamp": pa.array([at], pa.timestamp("us", tz="UTC"))})  # fmt: skip
    offline = store.get_historical_features(spine, [f"{view}:points"]).to_arrow()
    return online.to_dict()["points"][0], offline.column("points")[0].as_py()


row = st.fixed_dictionaries(
    {
        "event": st.integers(0, 2),  # few event times: ties are common
        "created": st.one_of(st.none(), st.integers(0, 3)),
        "points": st.integers(-100, 100),
    }
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pushes=st.lists(st.lists(row, min_size=1, max_size=3), min_size=1, max_size=5))
def test_online_keeps_the_row_rule_2_picks_whatever_the_push_order(
    store: FeatureStore, pushes: list[list[dict[str, Any]]]
) -> None:
    store.online.delete_view(store.project, "score")
    for path in store.config.resolve_path(store.config.offline.data_path).glob("scores/*"):
        path.unlink()
    for batch in pushes:
        store.push("scores", {
            "user_id": [1] * len(batch),
            "event_timestamp": [T0 + timedelta(seconds=r["event"]) for r in batch],
            "created": [None if r["created"] is None else T0 + timedelta(minutes=r["created"])
                        for r in batch],
            "points": [r["points"] for r in batch],
        })  # fmt: skip
    at = T0 + timedelta(seconds=2)
    online, offline = _online_and_offline(store, "score", at)
    assert online == offline


def test_without_created_times_the_later_push_wins_in_both_stores(store: FeatureStore) -> None:
    for points in (1, 2):
        store.push("plain", {"user_id": [1], "event_timestamp": [T0], "points": [points]})
    assert _online_and_offline(store, "plain_score", T0) == (2, 2)


def test_a_push_without_its_sources_created_time_gets_the_push_time(store: FeatureStore) -> None:
    """The source declares a created time, the rows carry none: each push is stamped with
    its own time, in both stores, so the later push wins the tie."""
    for points in (1, 2):
        store.push("scores", {"user_id": [1], "event_timestamp": [T0], "points": [points]})
    assert _online_and_offline(store, "score", T0) == (2, 2)
