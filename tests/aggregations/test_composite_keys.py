"""An aggregation view over an entity with two join keys (text and integer): training
sets, materialized tiles and pushes keep the keys apart, on SQLite and a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from agg_repo import offline_yaml

from almanac import FeatureStore

T0 = datetime(2024, 3, 1, tzinfo=UTC)
FEATURES_PY = """
from almanac import (Aggregation, AggregationView, Entity, Field, FileSource, Float64, Int64,
                     PushSource, String)

shop = Entity(name="shop", join_keys={"shop_id": String, "region": Int64})
sales = FileSource(path="data/sales.parquet", timestamp_field="ts")
shop_sales = AggregationView(
    name="shop_sales", entities=[shop], source=sales,
    aggregations=[Aggregation(function="count", windows=["1d"]),
                  Aggregation(column="amount", function="sum", windows=["1d"])],
)
live = PushSource(name="live", timestamp_field="ts")
shop_live = AggregationView(
    name="shop_live", entities=[shop], source=live, columns=[Field("amount", Float64)],
    aggregations=[Aggregation(column="amount", function="sum", windows=["1d"])],
)
"""
KEYS = [("a&b", 1), ("a&b", 2), ("a", 1)]  # the same text with two regions; a prefix


@pytest.fixture
def store(tmp_path: Path, online_url: str, engine_name: str) -> Iterator[FeatureStore]:
    (tmp_path / "data").mkdir()
    (tmp_path / "almanac.yaml").write_text(
        f"project: shops\nonline:\n  url: {online_url}\n" + offline_yaml(engine_name)
    )
    (tmp_path / "features.py").write_text(FEATURES_PY)
    rows = [("a&b", 1, 1.0), ("a&b", 1, 2.0), ("a&b", 2, 10.0), ("a", 1, 100.0)]
    pq.write_table(
        pa.table({
            "shop_id": [r[0] for r in rows], "region": pa.array([r[1] for r in rows], pa.int64()),
            "ts": pa.array([T0 - timedelta(hours=i + 1) for i in range(len(rows))],
                           pa.timestamp("us", tz="UTC")),
            "amount": [r[2] for r in rows],
        }),
        tmp_path / "data" / "sales.parquet",
    )  # fmt: skip
    with FeatureStore(tmp_path) as made:
        made.apply()
        yield made


def test_two_key_aggregations_agree_offline_and_online(store: FeatureStore) -> None:
    store.materialize(None, T0, ["shop_sales"])
    entities = [{"shop_id": s, "region": r} for s, r in KEYS]
    features = ["shop_sales:count_1d", "shop_sales:amount_sum_1d"]
    online = store.get_online_features(features, entities, now=T0).to_dict()
    spine = pa.table({"shop_id": [s for s, _ in KEYS], "region": [r for _, r in KEYS],
                      "event_timestamp": pa.array([T0] * 3, pa.timestamp("us", tz="UTC"))})  # fmt: skip
    offline = store.get_historical_features(spine, features).to_arrow().to_pydict()
    assert online["count_1d"] == offline["count_1d"] == [2, 1, 1]
    assert online["amount_sum_1d"] == offline["amount_sum_1d"] == [3.0, 10.0, 100.0]


def test_pushes_to_two_key_entities_stay_apart(store: FeatureStore) -> None:
    store.push("live", {"shop_id": ["a&b", "a&b", "a"], "region": [1, 2, 1],
                        "ts": [T0, T0, T0], "amount": [1.0, 2.0, 4.0]})  # fmt: skip
    store.push("live", {"shop_id": ["a&b"], "region": [1], "ts": [T0], "amount": [8.0]})
    entities = [{"shop_id": s, "region": r} for s, r in KEYS]
    online = store.get_online_features(["shop_live:amount_sum_1d"], entities, now=T0)
    assert online.to_dict()["amount_sum_1d"] == [9.0, 2.0, 4.0]
