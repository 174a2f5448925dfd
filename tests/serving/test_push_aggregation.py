"""Through the HTTP API: events pushed to a source of an aggregation view move its
windowed values at once, on SQLite and on a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from almanac import FeatureStore
from almanac.serving.app import create_app

FEATURES_PY = """
from almanac import Aggregation, AggregationView, Entity, Field, Float64, PushSource

user = Entity(name="user", join_keys=["user_id"])
payments = PushSource(name="payments", timestamp_field="paid_at")
user_spend = AggregationView(
    name="user_spend", entities=[user], source=payments, columns=[Field("amount", Float64)],
    aggregations=[Aggregation(function="count", windows=["1h", "1d"]),
                  Aggregation(column="amount", function="sum", windows=["1d"])],
)
"""


@pytest.fixture
def client(tmp_path: Path, online_url: str) -> Iterator[TestClient]:
    (tmp_path / "almanac.yaml").write_text(f"project: pay\nonline:\n  url: {online_url}\n")
    (tmp_path / "features.py").write_text(FEATURES_PY)
    with FeatureStore(tmp_path) as store:
        store.apply()
        with TestClient(create_app(store)) as client:
            yield client


def _spend(client: TestClient) -> dict[str, list[object]]:
    response = client.post(
        "/get-online-features",
        json={"features": ["user_spend:count_1h", "user_spend:count_1d", "user_spend:amount_sum_1d"],
              "entities": {"user_id": ["u1", "u2"]}},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    names = body["metadata"]["feature_names"]
    return {name: result["values"] for name, result in zip(names, body["results"], strict=True)}


def test_each_push_moves_the_windowed_values(client: TestClient) -> None:
    now = datetime.now(UTC)
    two_hours_ago = (now - timedelta(hours=2)).isoformat()
    first = {"user_id": ["u1", "u1"], "paid_at": [now.isoformat(), two_hours_ago],
             "amount": [10.0, 2.5]}  # fmt: skip
    response = client.post("/push", json={"push_source_name": "payments", "df": first})
    assert response.status_code == 200, response.text
    assert _spend(client) == {
        "user_id": ["u1", "u2"], "count_1h": [1, 0], "count_1d": [2, 0],
        "amount_sum_1d": [12.5, None],
    }  # fmt: skip
    second = {"user_id": ["u2", "u1"], "paid_at": [now.isoformat()] * 2, "amount": [1.0, 1.0]}
    assert client.post("/push", json={"push_source_name": "payments", "df": second}).status_code == 200  # fmt: skip
    assert _spend(client)["count_1d"] == [3, 1]
    assert _spend(client)["amount_sum_1d"] == [13.5, 1.0]


def test_a_push_without_the_aggregated_column_is_422_and_writes_nothing(client: TestClient) -> None:
    now = datetime.now(UTC).isoformat()
    bad = {"user_id": ["u1"], "paid_at": [now]}
    response = client.post("/push", json={"push_source_name": "payments", "df": bad})
    assert response.status_code in (400, 422), response.text
    assert "amount" in response.text
    assert _spend(client)["count_1d"] == [0, 0]
