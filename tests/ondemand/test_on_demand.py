"""On-demand views: the same values offline (training set), online (SDK) and over HTTP,
for expressions, pandas and plain-Python functions and a view reading another — whatever
the request values, nulls, zero averages and entities nobody pushed (a property, on the
embedded store and on a real Redis)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from almanac import FeatureStore
from almanac.serving.app import create_app

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
FEATURES_PY = """
from almanac import (Entity, FeatureService, FeatureView, Field, Float64, Int64, OnDemandView,
                     PushSource, RequestSource, String, Timestamp, on_demand_view)

customer = Entity(name="customer", join_keys=["customer_id"], dtype=Int64)
stats = FeatureView(name="customer_stats", entities=[customer], source=PushSource(name="stats_events"),
                    schema=[Field("avg_amount", Float64), Field("txn_count", Int64), Field("tier", String)])
txn = RequestSource(name="txn", schema=[Field("amount", Float64), Field("ts_local", Timestamp)])

ratio = OnDemandView(name="ratio", sources=[txn, stats], expressions={
    "amount_vs_avg": "amount / nullif(avg_amount, 0)",
    "big": "amount > 100 and txn_count >= 2",
    "hour": "hour(ts_local)",
    "label": "case when tier is null then 'none' when tier = 'gold' then 'vip' else tier end",
})

@on_demand_view(sources=[txn, stats], schema=[Field("excess", Float64), Field("weekday", Int64)])
def txn_features(df):
    return {"excess": df["amount"] - df["avg_amount"], "weekday": df["ts_local"].dt.day_of_week}

@on_demand_view(sources=[ratio], schema=[Field("ratio_sq", Float64)], mode="python")
def squared(columns):
    return {"ratio_sq": [None if v is None else v * v for v in columns["amount_vs_avg"]]}

fraud = FeatureService(name="fraud", features=[
    "customer_stats:txn_count", "ratio", txn_features, squared])
"""

customer = st.fixed_dictionaries(
    {
        "avg_amount": st.one_of(st.none(), st.just(0.0), st.floats(-1e6, 1e6, allow_nan=False)),
        "txn_count": st.one_of(st.none(), st.integers(-5, 5)),
        "tier": st.one_of(st.none(), st.sampled_from(["gold", "silver", ""])),
    }
)
request = st.fixed_dictionaries(
    {
        "amount": st.one_of(st.none(), st.just(0.0), st.floats(-1e6, 1e6, allow_nan=False)),
        "ts_local": st.datetimes(
            datetime(2000, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC)
        ),
    }
)


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ondemand")
    (root / "features.py").write_text(FEATURES_PY)
    return root


@pytest.fixture
def store(repo_files: Path, online_url: str) -> Iterator[FeatureStore]:
    (repo_files / "almanac.yaml").write_text(f"project: ondemand\nonline:\n  url: {online_url}\n")
    with FeatureStore(repo_files) as made:
        made.apply()
        yield made


def same(left: Any, right: Any) -> bool:
    if isinstance(left, float) and isinstance(right, float):
        return left == right or (math.isnan(left) and math.isnan(right))
    return bool(left == right) and type(left) is type(right)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    customers=st.lists(customer, min_size=1, max_size=4),
    requests=st.lists(request, min_size=1, max_size=5),
    data=st.data(),
)
def test_training_serving_and_http_agree(
    store: FeatureStore, customers: list[dict[str, Any]], requests: list[dict[str, Any]], data: st.DataObject
) -> None:  # fmt: skip
    store.online.delete_view(store.project, "customer_stats")
    for path in store.config.resolve_path(store.config.offline.data_path).glob("stats_events/*"):
        path.unlink()
    ids = list(range(1, len(customers) + 1))
    store.push("stats_events", {"customer_id": ids, "event_timestamp": [T0] * len(ids), **{
        name: [c[name] for c in customers] for name in ("avg_amount", "txn_count", "tier")}})  # fmt: skip
    # Requests for pushed customers and for one nobody pushed (its features are null).
    asked = [data.draw(st.sampled_from([*ids, 999])) for _ in requests]
    amounts = [r["amount"] for r in requests]
    times = [r["ts_local"] for r in requests]
    labels = {"customer_id": asked, "event_timestamp": [T0 + timedelta(hours=1)] * len(asked),
              "amount": amounts, "ts_local": times}  # fmt: skip
    offline = store.get_historical_features(labels, feature_service="fraud").to_pandas()
    online = store.get_online_features(
        feature_service="fraud", entity_rows=[{"customer_id": c} for c in asked],
        request_data={"amount": amounts, "ts_local": times},
    ).to_dict()  # fmt: skip
    with TestClient(create_app(store.repo_path)) as client:
        answer = client.post("/get-online-features", json={
            "feature_service": "fraud", "entities": {"customer_id": asked},
            "request_data": {"amount": amounts, "ts_local": [t.isoformat() for t in times]}})  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    http = dict(zip(body["metadata"]["feature_names"], (r["values"] for r in body["results"]), strict=True))  # fmt: skip
    features = [
        "txn_count",
        "amount_vs_avg",
        "big",
        "hour",
        "label",
        "excess",
        "weekday",
        "ratio_sq",
    ]
    assert list(online)[1:] == features
    for name in features:
        for row in range(len(asked)):
            expected = _expected(name, customers, asked[row], requests[row])
            value_offline = offline[name].iloc[row]
            value_offline = None if value_offline is None or (isinstance(value_offline, float) and math.isnan(value_offline) and expected is None) else value_offline  # fmt: skip
            if hasattr(value_offline, "item"):
                value_offline = value_offline.item()
            assert same(online[name][row], expected), (name, row, online[name][row], expected)
            assert value_offline == expected or same(value_offline, expected), (name, row, value_offline, expected)  # fmt: skip
            # JSON has no infinity: the server sends null for it (as for any float).
            over_json = None if isinstance(expected, float) and math.isinf(expected) else expected
            assert http[name][row] == over_json, (name, row, http[name][row], expected)


def _expected(name: str, customers: list[dict[str, Any]], customer_id: int, req: dict[str, Any]) -> Any:  # fmt: skip
    """The rules of docs/expressions.md, written out in plain Python."""
    known = customers[customer_id - 1] if customer_id <= len(customers) else {}
    avg, count, tier = known.get("avg_amount"), known.get("txn_count"), known.get("tier")
    amount, ts = req["amount"], req["ts_local"]
    if name == "txn_count":
        return count
    ratio = None if amount is None or avg is None or avg == 0 else amount / avg
    if name == "amount_vs_avg":
        return ratio
    if name == "big":
        left = None if amount is None else amount > 100
        right = None if count is None else count >= 2
        if left is False or right is False:
            return False
        return None if left is None or right is None else True
    if name == "hour":
        return ts.hour
    if name == "label":
        return "none" if tier is None else "vip" if tier == "gold" else tier
    if name == "excess":
        return None if amount is None or avg is None else amount - avg
    if name == "weekday":
        return ts.weekday()
    assert name == "ratio_sq"
    return None if ratio is None else ratio * ratio
