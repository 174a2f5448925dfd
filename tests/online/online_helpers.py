"""Shared helpers of the online-store tests: a catalog, configs, row writers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from almanac.config import RepoConfig
from almanac.definitions import (
    Array,
    Bool,
    Bytes,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    Float32,
    Float64,
    Int32,
    Int64,
    PushSource,
    String,
    Timestamp,
)
from almanac.online import OnlineStore
from almanac.registry.catalog import Catalog

PROJECT = "t"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

ALL_DTYPES = {
    "flag": Bool,
    "small": Int32,
    "count": Int64,
    "ratio": Float32,
    "score": Float64,
    "label": String,
    "blob": Bytes,
    "seen_at": Timestamp,
    "embedding": Array(Float32),
    "weights": Array(Float64),
    "ids": Array(Int64),
    "small_ids": Array(Int32),
    "flags": Array(Bool),
    "tags": Array(String),
    "blobs": Array(Bytes),
    "times": Array(Timestamp),
}


def make_config(url: str, repo: Path, **online: Any) -> RepoConfig:
    return RepoConfig(project=PROJECT, online={"url": url, **online}).model_copy(
        update={"repo_path": repo}
    )


def catalog() -> Catalog:
    user = Entity(name="user", join_keys=["user_id"], dtype=Int64)
    item = Entity(name="item", join_keys=["item_id"], dtype=String)
    source = PushSource(name="events")
    everything = FeatureView(
        name="everything",
        entities=[user],
        source=source,
        schema=[Field(name, dtype) for name, dtype in ALL_DTYPES.items()],
    )
    user_stats = FeatureView(
        name="user_stats",
        entities=[user],
        source=source,
        schema=[Field("clicks", Int64), Field("spend", Float64)],
        ttl="1h",
    )
    item_stats = FeatureView(
        name="item_stats",
        entities=[item],
        source=source,
        schema=[Field("price", Float64), Field("clicks", Int64)],
    )
    user_item = FeatureView(
        name="user_item",
        entities=[user, item],
        source=source,
        schema=[Field("affinity", Float32)],
    )
    offline_only = FeatureView(
        name="offline_only",
        entities=[user],
        source=source,
        schema=[Field("x", Int64)],
        online=False,
    )
    service = FeatureService(name="ranker", features=["user_stats:clicks", "item_stats:price"])
    return Catalog.from_definitions(
        [user, item, source, everything, user_stats, item_stats, user_item, offline_only, service]
    )


@dataclass
class StoreStub:
    """What `get_online_features` needs from a FeatureStore, without a registry."""

    catalog: Catalog
    online: OnlineStore
    config: RepoConfig
    project: str = PROJECT


def rows_table(rows: list[dict[str, Any]], schema: dict[str, pa.DataType]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=pa.schema(list(schema.items())))


def write(
    online: OnlineStore,
    view: str,
    keys: dict[str, pa.DataType],
    features: dict[str, pa.DataType],
    rows: list[dict[str, Any]],
) -> int:
    schema = {**keys, "event_timestamp": pa.timestamp("us", tz="UTC"), **features}
    return online.write_batch(PROJECT, view, list(keys), list(features), rows_table(rows, schema))
