"""Applying a change to a view's layout clears its online values and watermark first, so
values of the old layout are never served; other changes leave them alone."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from almanac.online.response import FeatureStatus
from almanac.registry.diff import values_fingerprint

FEATURES = """
from almanac import Entity, FeatureView, Field, FileSource, {dtype}

user = Entity(name="user", join_keys=["user_id"])
stats = FeatureView(
    name="user_stats",
    entities=[user],
    source=FileSource(name="stats", path="data/stats/"),
    schema=[Field("watch_count", {dtype})],
    description="{description}",
)
"""


def _write_one_value(store) -> None:
    table = pa.table({
        "user_id": ["u1"],
        "watch_count": pa.array([7], pa.int64()),
        "event_timestamp": pa.array([datetime(2026, 1, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
    })  # fmt: skip
    store.online.write_batch(store.project, "user_stats", ["user_id"], ["watch_count"], table)
    store.online.set_watermark(
        store.project,
        "user_stats",
        datetime(2026, 1, 2, tzinfo=UTC),
        values_fingerprint(store.catalog, "user_stats"),
    )


def _status(store) -> FeatureStatus:
    response = store.get_online_features(["user_stats:watch_count"], [{"user_id": "u1"}])
    return response.statuses["watch_count"][0]


def test_a_dtype_change_clears_the_view_online_and_its_watermark(feature_repo) -> None:
    feature_repo.write(FEATURES.format(dtype="Int64", description="v1"))
    store = feature_repo.store()
    store.apply()
    _write_one_value(store)
    assert _status(store) == FeatureStatus.PRESENT

    feature_repo.write(FEATURES.format(dtype="Float64", description="v1"))
    plan = store.plan()
    assert plan.views_with_stale_online_data() == ["user_stats"]
    store.apply(plan)
    assert _status(store) == FeatureStatus.NOT_FOUND
    assert store.online.watermarks(store.project).get("user_stats") is None


def test_a_description_change_keeps_online_values(feature_repo) -> None:
    feature_repo.write(FEATURES.format(dtype="Int64", description="v1"))
    store = feature_repo.store()
    store.apply()
    _write_one_value(store)

    feature_repo.write(FEATURES.format(dtype="Int64", description="v2"))
    plan = store.plan()
    assert plan.views_with_stale_online_data() == []
    store.apply(plan)
    assert _status(store) == FeatureStatus.PRESENT
    assert store.online.watermarks(store.project).get("user_stats").time == datetime(
        2026, 1, 2, tzinfo=UTC
    )


def test_a_source_change_clears_the_views_that_read_it(feature_repo) -> None:
    feature_repo.write(FEATURES.format(dtype="Int64", description="v1"))
    store = feature_repo.store()
    store.apply()
    _write_one_value(store)

    feature_repo.write(
        FEATURES.format(dtype="Int64", description="v1").replace("data/stats/", "data/stats_v2/")
    )
    plan = store.plan()
    assert [(c.kind, c.action) for c in plan.changes] == [("source", "update")]
    assert plan.views_with_stale_online_data() == ["user_stats"]
    store.apply(plan)
    assert _status(store) == FeatureStatus.NOT_FOUND
    assert store.online.watermarks(store.project).get("user_stats") is None


def test_a_field_a_later_version_adds_unset_keeps_every_fingerprint() -> None:
    """Upgrading Almanac must not clear online stores: a spec gaining a field that is
    unset by default (None, [], {}) has the same values fingerprint; a set one differs."""
    from almanac.registry.diff import _view_layout

    spec = {"name": "v", "source": "s", "schema": [{"name": "f", "dtype": "int64"}], "ttl": "1d"}
    grown = {**spec, "new_option": None, "new_list": [], "new_map": {}, "schema": [{**spec["schema"][0], "new": None}]}  # type: ignore[dict-item]  # fmt: skip
    assert _view_layout(grown) == _view_layout(spec)
    assert _view_layout({**spec, "new_option": "set"}) != _view_layout(spec)
    assert _view_layout({**spec, "online": False}) != _view_layout(spec)
