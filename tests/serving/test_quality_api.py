"""`/quality/...` over HTTP: the same answers as the SDK, errors as 4xx naming the problem,
behind the API keys like every other route."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from almanac import FeatureStore
from almanac.serving.app import create_app

FEATURES = """
from almanac import Entity, Expect, FeatureView, Field, Float64, PushSource

user = Entity(name="user", join_keys=["user_id"], dtype="int64")
scores = FeatureView(
    name="scores", entities=[user], source=PushSource(name="score_events"),
    schema=[Field("score", Float64)], freshness="1h",
    expectations=[Expect.between("score", 0, 1)], on_violation="warn",
)
"""
T = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "almanac.yaml").write_text("project: q\nserver:\n  api_keys: [k1]\n")
    (repo / "features.py").write_text(FEATURES)
    with FeatureStore(repo) as store:
        store.apply()
        for day, values in ((0, [0.1, 0.2, 0.3, 0.4]), (1, [0.7, 0.8, 0.9, 1.5])):
            times = [T + timedelta(days=day, minutes=i) for i in range(4)]
            store.push("score_events", {"user_id": [1, 2, 3, 4], "event_timestamp": times, "score": values})  # fmt: skip
    return repo


def test_quality_routes_answer_as_the_sdk(repo: Path) -> None:
    key = {"X-API-Key": "k1"}
    with TestClient(create_app(repo)) as client, FeatureStore(repo) as store:
        assert client.get("/quality/stats/scores").status_code == 401
        stats = client.get("/quality/stats/scores", headers=key).json()
        assert stats == [s.to_dict() for s in store.statistics("scores")]
        assert stats[0]["rows"] == 8 and stats[0]["max"] == 1.5
        day, before = (T + timedelta(days=1)).isoformat(), (T + timedelta(hours=23)).isoformat()
        windows = {"reference": f"..{before}", "current": f"{day}.."}  # both ends are inclusive
        drift = client.get("/quality/drift/scores", params=windows, headers=key)
        assert drift.status_code == 200
        assert drift.json()[0]["reference_rows"] == drift.json()[0]["current_rows"] == 4
        report = client.get("/quality/validate/scores", headers=key).json()
        assert report["passed"] is False
        assert report["breaches"] == [{"expectation": "between('score', 0, 1)", "failed": 1, "examples": [1.5]}]  # fmt: skip
        fresh = client.get("/quality/freshness", headers=key).json()
        assert [(f["view"], f["status"]) for f in fresh] == [("scores", "stale")]
        missing = client.get("/quality/stats/nope", headers=key)
        assert (
            missing.status_code == 404 and "unknown feature view 'nope'" in missing.json()["detail"]
        )
        bad = client.get("/quality/drift/scores", params={"reference": "x", "current": ".."}, headers=key)  # fmt: skip
        assert bad.status_code == 422 and "expected START..END" in bad.json()["detail"]
        late = client.get("/quality/stats/scores", params={"start": "2030-01-01", "end": "2020-01-01"}, headers=key)  # fmt: skip
        assert late.status_code == 422 and "after end" in late.json()["detail"]


def test_recorded_results_and_drift_against_a_saved_dataset(repo: Path) -> None:
    key = {"X-API-Key": "k1"}
    with FeatureStore(repo) as store:
        spine = {"user_id": [1, 2, 3, 4], "event_timestamp": [T + timedelta(hours=1)] * 4}
        store.get_historical_features(pa.table(spine), ["scores:score"], save_as="day0")
    with TestClient(create_app(repo)) as client:
        found = client.get("/quality/results", params={"view": "scores"}, headers=key).json()
        assert [(r["entry"], r["passed"], r["observed"]) for r in found] == [
            ("push", False, 1), ("push", True, 0),
        ]  # fmt: skip
        failed = client.get("/quality/results", params={"failed": "true", "limit": 5}, headers=key)
        assert [r["observed"] for r in failed.json()] == [1]
        day = (T + timedelta(days=1)).isoformat()
        drift = client.get("/quality/drift/scores", params={"reference_dataset": "day0", "current": f"{day}.."}, headers=key)  # fmt: skip
        assert drift.status_code == 200 and drift.json()[0]["reference_rows"] == 4
        both = client.get("/quality/drift/scores", params={"reference_dataset": "day0", "reference": "..", "current": ".."}, headers=key)  # fmt: skip
        assert both.status_code == 422 and "give exactly one of them" in both.json()["detail"]
        unknown = client.get("/quality/drift/scores", params={"reference_dataset": "nope", "current": ".."}, headers=key)  # fmt: skip
        assert unknown.status_code == 404 and "dataset 'nope'" in unknown.json()["detail"]
        bad = client.get("/quality/results", params={"since": "yesterday"}, headers=key)
        assert bad.status_code == 422


def test_metrics_count_expectation_results_of_pushes(repo: Path) -> None:
    key = {"X-API-Key": "k1"}
    now = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    with TestClient(create_app(repo)) as client:
        df = {"user_id": [7, 8, 9], "event_timestamp": [now] * 3, "score": [0.5, 2.0, 3.0]}
        answer = client.post("/push", json={"push_source_name": "score_events", "df": df}, headers=key)  # fmt: skip
        assert answer.status_code == 200  # on_violation="warn": written, counted
        text = client.get("/metrics", headers=key).text
    label = "expectation=\"between('score', 0, 1)\""
    assert f'almanac_expectation_checks_total{{{label},result="failed",view="scores"}} 1.0' in text
    assert f'almanac_expectation_failed_rows_total{{{label},view="scores"}} 2.0' in text
