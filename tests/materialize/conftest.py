"""A small feature repo whose source file the tests rewrite, on SQLite or a real Redis."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from almanac.store import FeatureStore

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


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def online_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'online.db'}"
    return request.getfixturevalue("redis_url")


@pytest.fixture
def skew_store(tmp_path: Path, online_url: str) -> Iterator[FeatureStore]:
    store = FeatureStore(write_repo(tmp_path / "repo", online_url))
    yield store
    store.close()
