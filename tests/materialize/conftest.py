"""A small feature repo whose source file the tests rewrite, on SQLite or a real Redis."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from almanac.store import FeatureStore
from online_stores import ONLINE_STORES, online_store_url

FEATURES = textwrap.dedent(
    """
    from almanac import Array, Entity, FeatureView, Field, FileSource, Float32, Float64, Int64, String

    account = Entity(name="account", join_keys=["account_id"], dtype=Int64)
    events = FileSource(
        name="events", path="data/events.parquet", created_timestamp_field="created"
    )
    {views}
    """
)
VIEW = """
{name} = FeatureView(
    name="{name}",
    entities=[account],
    source=events,
    schema=[
        Field("score", Float64),
        Field("label", String),
        Field("count", Int64),
        Field("embedding", Array(Float32)),
    ],
    ttl={ttl},
)
"""
# Views over one source with different TTLs: none, exactly hit by generated times, short.
TTLS = {"no_ttl": "None", "ttl_2h": '"2h"', "ttl_30m": '"30m"'}


def write_repo(path: Path, online_url: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "data").mkdir(exist_ok=True)
    (path / "almanac.yaml").write_text(
        f"project: skew\nregistry:\n  refresh_seconds: 0\nonline:\n  url: {online_url}\n  batch_size: 7\n"
    )
    views = "".join(VIEW.format(name=name, ttl=ttl) for name, ttl in TTLS.items())
    (path / "features.py").write_text(FEATURES.format(views=views))
    return path


@pytest.fixture(params=ONLINE_STORES)
def online_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return online_store_url(request, f"sqlite:///{tmp_path / 'online.db'}")


@pytest.fixture
def skew_store(tmp_path: Path, online_url: str) -> Iterator[FeatureStore]:
    store = FeatureStore(write_repo(tmp_path / "repo", online_url))
    yield store
    store.close()


# ---- rule 5 over every online view (tests of definition edits, store swaps, read times) ----


def same_value(a: object, b: object) -> bool:
    """One feature value online and offline: same type, same value (floats up to the
    rounding of merging aggregation tiles)."""
    if type(a) is not type(b):  # 3 and 3.0 are not the same value of a feature
        return False
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def assert_online_equals_historical(
    store: FeatureStore,
    when: datetime | list[datetime],
    keys: dict[str, list[Any]],
    context: str = "",
) -> None:
    """Every feature of every online view, for every entity of `keys` (join key → values)
    and every read time of `when`: `get_online_features(now=t)` equals
    `get_historical_features` at t (one training set for all the times)."""
    times = when if isinstance(when, list) else [when]
    views = [v for v in store.catalog.all_views().values() if v.online]
    features = [f"{v.name}:{f}" for v in views for f in v.feature_names]
    if not features:  # every view is switched off: nothing is served
        return
    rows = len(next(iter(keys.values())))
    spine = pa.table({
        **{key: [v for _ in times for v in values] for key, values in keys.items()},
        "event_timestamp": pa.array(
            [t for t in times for _ in range(rows)], pa.timestamp("us", tz="UTC")
        ),
    })  # fmt: skip
    historical = store.get_historical_features(spine, features, full_feature_names=True)
    expected = historical.to_arrow().to_pydict()
    for i, at in enumerate(times):
        online = store.get_online_features(features, keys, full_feature_names=True, now=at)
        got = online.to_dict()
        for feature in features:
            name = feature.replace(":", "__")
            offline = expected[name][i * rows : (i + 1) * rows]
            assert all(map(same_value, got[name], offline)), (
                f"{name} at {at.isoformat()} {context}: online {got[name]} != historical {offline}"
            )


# The repo above plus an aggregation view over the same source.
AGGREGATION_VIEW = """
from almanac import Aggregation, AggregationView

activity = AggregationView(
    name="activity",
    entities=[account],
    source=events,
    aggregations=[
        Aggregation(function="count", windows=["30m", "2h"]),
        Aggregation(column="count", function="sum", windows=["1h"]),
        Aggregation(column="score", function="max", windows=["2h"]),
        Aggregation(column="label", function="count_distinct", windows=["1d"]),
        Aggregation(column="label", function="last", windows=["1h"]),
    ],
    columns=[Field("score", Float64), Field("label", String), Field("count", Int64)],
)
"""
MIXED_VIEWS = {*TTLS, "activity"}


def write_mixed_repo(path: Path, online_url: str, project: str) -> Path:
    """`write_repo`'s three plain views (TTLs none, 2h, 30m) and the aggregation view
    `activity`, under a project name of its own (a Redis shared by tests keeps them apart)."""
    repo = write_repo(path, online_url)
    config = repo / "almanac.yaml"
    config.write_text(config.read_text().replace("project: skew", f"project: {project}"))
    features = repo / "features.py"
    features.write_text(features.read_text() + AGGREGATION_VIEW)
    return repo


def write_push_repo(path: Path, online_url: str, project: str, features: str) -> Path:
    """A repo of `features` (views over push sources) under its own project name."""
    path.mkdir(parents=True)
    (path / "almanac.yaml").write_text(
        f"project: {project}\nregistry:\n  refresh_seconds: 0\nonline:\n  url: {online_url}\n"
    )
    (path / "features.py").write_text(features)
    return path
