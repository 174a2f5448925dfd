"""On-demand features and fitted transforms on every offline engine: DuckDB (expressions
as SQL over the joined batches) and Spark (the engine-neutral Arrow evaluator) give the
same training set, and it equals what the online store serves for the same rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from offline_repo import offline_section

from almanac import FeatureStore

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
FEATURES_PY = """
from almanac import (Entity, FeatureService, FeatureView, Field, Float64, Int64, OnDemandView,
                     OneHot, PushSource, RequestSource, StandardScaler, String, on_demand_view)

customer = Entity(name="customer", join_keys=["customer_id"], dtype=Int64)
stats = FeatureView(name="stats", entities=[customer], source=PushSource(name="events"), ttl="1d",
                    schema=[Field("avg", Float64), Field("count", Int64), Field("tier", String)])
txn = RequestSource(name="txn", schema=[Field("amount", Float64)])
ratio = OnDemandView(name="ratio", sources=[txn, stats], expressions={
    "r": "amount / nullif(avg, 0)", "many": "coalesce(count, 0) > 2", "cut": "round(amount * 1.5)"})

@on_demand_view(sources=[ratio], schema=[Field("r2", Float64)], mode="arrow")
def squared(table):
    import pyarrow.compute as pc
    return {"r2": pc.multiply(table.column("r"), table.column("r"))}

model = FeatureService(name="model", features=[stats, ratio, squared],
                       transforms=[StandardScaler("stats:avg"), OneHot("stats:tier")])
"""


def test_every_engine_computes_what_is_served(tmp_path: Path, engine_name: str) -> None:
    (tmp_path / "almanac.yaml").write_text(yaml.safe_dump({"project": "od", "offline": offline_section(engine_name)}))  # fmt: skip
    (tmp_path / "features.py").write_text(FEATURES_PY)
    rng = np.random.default_rng(3)
    n = 40
    with FeatureStore(tmp_path) as store:
        store.apply()
        store.push("events", {
            "customer_id": list(range(n)), "event_timestamp": [T0] * n,
            "avg": [None if i % 9 == 0 else 0.0 if i % 7 == 0 else float(v) for i, v in enumerate(rng.normal(50, 20, n))],
            "count": [None if i % 5 == 0 else int(v) for i, v in enumerate(rng.integers(0, 5, n))],
            "tier": [["a", "b", None][i % 3] for i in range(n)],
        })  # fmt: skip
        ids = [int(i) for i in rng.integers(0, n + 3, 60)]  # some nobody pushed
        amounts = [None if i % 11 == 0 else float(v) for i, v in enumerate(rng.normal(80, 40, len(ids)))]  # fmt: skip
        # One row too late for the view's TTL of a day: its stored inputs are null offline.
        times = [T0 + timedelta(hours=1)] * (len(ids) - 1) + [T0 + timedelta(days=2)]
        labels = pa.table({"customer_id": ids, "event_timestamp": times, "amount": amounts})
        training = store.get_historical_features(labels, feature_service="model")
        store.fit_transforms("model", training.to_arrow())
        offline = store.get_historical_features(labels, feature_service="model", transformed=True).to_numpy()  # fmt: skip
        plain = training.to_arrow()
        online = store.get_online_features(
            feature_service="model", entity_rows=[{"customer_id": c} for c in ids[:-1]],
            request_data={"amount": amounts[:-1]}, now=T0 + timedelta(hours=1),
        )  # fmt: skip
        for name in online.columns:
            assert plain.column(name).to_pylist()[:-1] == online.to_dict()[name], name
        assert plain.column("r").to_pylist()[-1] is None  # expired inputs: null, as online
        served = store.get_online_features(
            feature_service="model", entity_rows=[{"customer_id": c} for c in ids[:-1]],
            request_data={"amount": amounts[:-1]}, now=T0 + timedelta(hours=1), transformed=True,
        )  # fmt: skip
        assert np.array_equal(offline[:-1], served.to_numpy(), equal_nan=True)


WRITE_TIME_PY = """
from almanac import Entity, FeatureView, Field, FileSource, Float64, Int64, OnDemandView

customer = Entity(name="customer", join_keys=["customer_id"], dtype=Int64)
stats = FeatureView(name="stats", entities=[customer], ttl="1d",
                    source=FileSource(path="data/stats.parquet", timestamp_field="ts"),
                    schema=[Field("avg", Float64), Field("count", Int64)])
scored = OnDemandView(name="scored", sources=[stats], write_to_online=True, expressions={
    "score": "coalesce(avg, -1) * 2", "seen": "count is not null"})
"""


def test_every_engine_materializes_write_time_views_as_trained(tmp_path: Path, engine_name: str) -> None:  # fmt: skip
    """A write-time view materialized from each engine's latest rows serves what that
    engine's training set computes, an expired entity (its value for no row) included."""
    (tmp_path / "almanac.yaml").write_text(yaml.safe_dump({"project": "wt", "offline": offline_section(engine_name)}))  # fmt: skip
    (tmp_path / "features.py").write_text(WRITE_TIME_PY)
    (tmp_path / "data").mkdir()
    end = T0 + timedelta(days=3)
    rows = pa.table({
        "customer_id": [1, 1, 2, 3, 3], "avg": [1.5, None, 4.0, 2.0, 8.0], "count": [1, 2, None, 5, 6],
        "ts": [end - timedelta(hours=5), end - timedelta(hours=2), end - timedelta(days=2), end, end - timedelta(hours=1)],
    })  # fmt: skip
    pq.write_table(rows, tmp_path / "data" / "stats.parquet")
    with FeatureStore(tmp_path) as store:
        store.apply()
        runs = store.materialize_incremental(end).runs
        assert {run.view: run.rows for run in runs} == {"stats": 3, "scored": 3}
        ids = [1, 2, 3, 4]
        labels = pa.table({"customer_id": ids, "event_timestamp": [end] * 4})
        training = store.get_historical_features(labels, ["scored:score", "scored:seen"]).to_arrow()  # fmt: skip
        online = store.get_online_features(["scored:score", "scored:seen"], [{"customer_id": c} for c in ids], now=end)  # fmt: skip
        assert online.to_dict()["score"] == training.column("score").to_pylist() == [-2.0, -2.0, 4.0, -2.0]  # fmt: skip
        assert online.to_dict()["seen"] == training.column("seen").to_pylist() == [True, False, True, False]  # fmt: skip
