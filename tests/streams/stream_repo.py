"""A repo with stream-fed views (a plain last-value view and an aggregation view over
one stream source), the brute-force reference they must agree with, and the checks that
each event is in the offline log exactly once and counted online exactly once."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from almanac import FeatureStore
from almanac.ingest.exactly_once import OFFSET, PARTITION
from almanac.offline.files import list_files

NOW = datetime.now(UTC).replace(microsecond=0)

FEATURES = """
from almanac import Aggregation, AggregationView, Entity, FeatureView, Field, Float64, Int64, String
from almanac import {source_class}

customer = Entity(name="customer", join_keys=["customer_id"], dtype="int64")
txns = {source_class}(name="txns", timestamp_field="ts", {source_args})
last_txn = FeatureView(
    name="last_txn", entities=[customer], source=txns, ttl="7d",
    schema=[Field("amount", Float64), Field("merchant", String)],
)
spend = AggregationView(
    name="spend", entities=[customer], source=txns, columns=[Field("amount", Float64)],
    aggregations=[
        Aggregation(column="amount", function="sum", windows=["1h", "1d"]),
        Aggregation(column="amount", function="count", windows=["1d"]),
    ],
)
"""


def make_repo(root: Path, online_url: str, source_class: str, source_args: str) -> FeatureStore:
    root.mkdir(parents=True, exist_ok=True)
    (root / "almanac.yaml").write_text(f"project: streams\nonline:\n  url: {online_url}\n")
    (root / "features.py").write_text(FEATURES.format(source_class=source_class, source_args=source_args))  # fmt: skip
    store = FeatureStore(root)
    store.apply()
    return store


def event(i: int, customer: int, minutes_ago: float, amount: float) -> dict[str, Any]:
    return {
        "customer_id": customer,
        # Distinct times (the i-th microsecond): "the latest event" is one event.
        "ts": (NOW - timedelta(minutes=minutes_ago) + timedelta(microseconds=i)).isoformat(),
        "amount": amount,
        "merchant": f"m{i % 3}",
    }


def expected(events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per customer, from the events alone: the 1h and 1d sums, the 1d count, and the
    amount of the latest event (the last one sent among equal times)."""
    out: dict[int, dict[str, Any]] = defaultdict(lambda: {"sum_1h": 0.0, "sum_1d": 0.0, "count_1d": 0})  # fmt: skip
    latest: dict[int, tuple[datetime, int]] = {}
    for i, e in enumerate(events):
        ts = datetime.fromisoformat(e["ts"])
        row = out[e["customer_id"]]
        if ts > NOW - timedelta(hours=1):
            row["sum_1h"] += e["amount"]
        if ts > NOW - timedelta(days=1):
            row["sum_1d"] += e["amount"]
            row["count_1d"] += 1
        if e["customer_id"] not in latest or (ts, i) >= latest[e["customer_id"]]:
            latest[e["customer_id"]] = (ts, i)
            row["amount"] = e["amount"]
    return dict(out)


def served(store: FeatureStore, customers: list[int]) -> dict[int, dict[str, Any]]:
    answer = store.get_online_features(
        ["spend:amount_sum_1h", "spend:amount_sum_1d", "spend:amount_count_1d", "last_txn:amount"],
        {"customer_id": customers}, now=NOW,
    ).to_dict()  # fmt: skip
    return {
        c: {"sum_1h": answer["amount_sum_1h"][i] or 0.0, "sum_1d": answer["amount_sum_1d"][i] or 0.0,
            "count_1d": answer["amount_count_1d"][i] or 0, "amount": answer["amount"][i]}
        for i, c in enumerate(customers)
    }  # fmt: skip


def offline_log(store: FeatureStore) -> pa.Table:
    """Every event in the stream source's offline log, with its origin."""
    files = [str(p) for p in list_files(store.config, store.catalog.sources["txns"])[0]]  # type: ignore[arg-type]
    return ds.dataset(files, format="parquet").to_table() if files else pa.table({PARTITION: [], OFFSET: []})  # fmt: skip


def assert_exactly_once(store: FeatureStore, events: list[dict[str, Any]]) -> None:
    """The offline log holds each event once; online values equal the reference, and so
    does a training set read from the log at the same time."""
    log = offline_log(store)
    origins = list(zip(log.column(PARTITION).to_pylist(), log.column(OFFSET).to_pylist(), strict=True))  # fmt: skip
    assert len(origins) == len(set(origins)) == len(events), (len(origins), len(set(origins)), len(events))  # fmt: skip
    want = expected(events)
    got = served(store, sorted(want))
    for customer, row in want.items():
        assert got[customer]["count_1d"] == row["count_1d"], (customer, got[customer], row)
        assert abs(got[customer]["sum_1d"] - row["sum_1d"]) < 1e-6, (customer, got[customer], row)
        assert abs(got[customer]["sum_1h"] - row["sum_1h"]) < 1e-6, (customer, got[customer], row)
        assert got[customer]["amount"] == row["amount"], (customer, got[customer], row)
    spine = pa.table({"customer_id": sorted(want), "event_timestamp": [NOW] * len(want)})
    training = store.get_historical_features(spine, ["spend:amount_sum_1d", "spend:amount_count_1d"]).to_arrow().to_pydict()  # fmt: skip
    for i, customer in enumerate(sorted(want)):
        assert training["amount_count_1d"][i] == want[customer]["count_1d"]
        assert abs((training["amount_sum_1d"][i] or 0.0) - want[customer]["sum_1d"]) < 1e-6
