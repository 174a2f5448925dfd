"""A materialization never overwrites tiles that a push merged after it read its
snapshot: a late event pushed mid-run is still counted online, and the run still
refills the entities no push touched (a store that lost its data); on both stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from almanac import FeatureStore

FEATURES = """
from almanac import Aggregation, AggregationView, Entity, Field, Float64, PushSource

user = Entity(name="user", join_keys=["user_id"])
clicks = PushSource(name="clicks")
counts = AggregationView(name="counts", entities=[user], source=clicks, columns=[Field("amount", Float64)],
                         aggregations=[Aggregation(function="count", windows=["1d"]),
                                       Aggregation(column="amount", function="sum", windows=["1d"])])
"""
NOW = datetime.now(UTC) - timedelta(seconds=10)


def rows(users: list[str], minutes_ago: float) -> dict[str, Any]:
    return {"user_id": users, "event_timestamp": [NOW - timedelta(minutes=minutes_ago)] * len(users), "amount": [1.0] * len(users)}  # fmt: skip


def test_a_late_push_during_a_materialization_is_kept(tmp_path: Path, online_url: str) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "almanac.yaml").write_text(f"project: race\nonline:\n  url: {online_url}\n")
    (repo / "features.py").write_text(FEATURES)
    store = FeatureStore(repo)
    store.apply()
    store.push("clicks", rows(["a", "b", "c"], minutes_ago=5))
    store.push("clicks", rows(["a"], minutes_ago=1))  # a's newest event
    real = store.offline.aggregation_tiles

    def snapshot_then_push(*args: Any, **kwargs: Any) -> pa.RecordBatchReader:
        snapshot = real(*args, **kwargs).read_all()  # the run has read its rows...
        store.push("clicks", rows(["a", "b"], minutes_ago=3))  # ...then late events arrive
        return pa.RecordBatchReader.from_batches(snapshot.schema, snapshot.to_batches())

    store.offline.aggregation_tiles = snapshot_then_push  # type: ignore[method-assign]
    try:
        store.materialize(None, datetime.now(UTC))
    finally:
        del store.offline.aggregation_tiles
    served = store.get_online_features(["counts:count_1d"], {"user_id": ["a", "b", "c"]}).to_dict()
    # The late events pushed after the snapshot are still counted online.
    assert served["count_1d"] == [3, 2, 1]
    offline = store.get_historical_features(
        pa.table({"user_id": ["a", "b", "c"], "event_timestamp": [datetime.now(UTC)] * 3}), ["counts:count_1d"]
    ).to_arrow().column("count_1d").to_pylist()  # fmt: skip
    assert offline == [3, 2, 1]
    # A store that lost its data is refilled by the next run (once the grace has passed).
    from almanac.materialize import jobs

    store.online.delete_view(store.project, "counts")
    grace, jobs.PUSH_GRACE = jobs.PUSH_GRACE, timedelta(0)
    try:
        store.materialize(None, datetime.now(UTC))
    finally:
        jobs.PUSH_GRACE = grace
    served = store.get_online_features(["counts:count_1d"], {"user_id": ["a", "b", "c"]}).to_dict()
    assert served["count_1d"] == offline
    store.close()
