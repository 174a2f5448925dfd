"""Freshness against a view's SLO: stale when the newest event is too old, lagging when
the online store was not refreshed in time; in the SDK, the CLI, /health and /metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from almanac import FeatureStore
from almanac.cli import main
from almanac.serving.app import create_app

FEATURES = """
from almanac import Entity, FeatureView, Field, FileSource, Float64, PushSource

user = Entity(name="user", join_keys=["user_id"], dtype="int64")
balances = FeatureView(
    name="balances", entities=[user], source=FileSource(name="balances_source", path="data/balances/"),
    schema=[Field("balance", Float64)], freshness="1h",
)
clicks = FeatureView(
    name="clicks", entities=[user], source=PushSource(name="click_events"),
    schema=[Field("clicks", Float64)], freshness="1h",
)
archive = FeatureView(
    name="archive", entities=[user], source=FileSource(name="archive_source", path="data/archive/"),
    schema=[Field("balance", Float64)],
)
"""


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    repo = tmp_path / "repo"
    for folder in ("balances", "archive"):
        (repo / "data" / folder).mkdir(parents=True)
    (repo / "almanac.yaml").write_text("project: fresh\n")
    (repo / "features.py").write_text(FEATURES)
    store = FeatureStore(repo)
    store.apply()
    return store


def statuses(store: FeatureStore, now: datetime) -> dict[str, str]:
    return {f.view: f.status for f in store.freshness(now=now)}


def test_stale_lagging_ok_and_no_data(store: FeatureStore) -> None:
    t = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    assert statuses(store, t) == {"balances": "no data", "clicks": "no data", "archive": "no data"}
    store.write_to_offline_store("balances", {"user_id": [1], "event_timestamp": [t], "balance": [5.0]})  # fmt: skip
    store.write_to_offline_store("archive", {"user_id": [1], "event_timestamp": [t], "balance": [5.0]})  # fmt: skip
    store.push("click_events", {"user_id": [1], "event_timestamp": [t], "clicks": [1.0]})
    half = t + timedelta(minutes=30)
    # Fresh data, but the online store never got the file-fed view: lagging.
    assert statuses(store, half) == {"balances": "lagging", "clicks": "ok", "archive": "no slo"}
    store.materialize(None, half, ["balances"])
    assert statuses(store, half)["balances"] == "ok"
    report = {f.view: f for f in store.freshness(now=half)}
    assert report["balances"].event_age_seconds == 1800
    assert report["balances"].materialization_lag_seconds == 0
    assert report["clicks"].materialization_lag_seconds is None  # pushes write online at once
    later = t + timedelta(hours=2)
    assert statuses(store, later) == {"balances": "stale", "clicks": "stale", "archive": "no slo"}


def test_the_cli_exits_1_when_a_view_is_out_of_its_slo(
    store: FeatureStore, capsys: pytest.CaptureFixture[str]
) -> None:
    old = datetime.now(UTC) - timedelta(hours=5)
    store.push("click_events", {"user_id": [1], "event_timestamp": [old], "clicks": [1.0]})
    with pytest.raises(SystemExit) as done:
        main(["--repo", str(store.repo_path), "freshness", "clicks", "--json"])
    assert done.value.code == 1
    assert '"status": "stale"' in capsys.readouterr().out


def test_health_is_degraded_naming_the_stale_views_and_metrics_show_their_age(store: FeatureStore) -> None:  # fmt: skip
    old = datetime.now(UTC) - timedelta(hours=5)
    store.push("click_events", {"user_id": [1], "event_timestamp": [old], "clicks": [1.0]})
    with TestClient(create_app(store.repo_path)) as client:
        health = client.get("/health")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "degraded"
        assert body["freshness"]["views"] == {"clicks": "stale"}  # balances: no data yet
        metrics = client.get("/metrics").text
        age = next(line for line in metrics.splitlines() if line.startswith('almanac_view_freshness_seconds{view="clicks"}'))  # fmt: skip
        assert float(age.split()[-1]) >= 5 * 3600 - 60
        assert 'almanac_view_freshness_slo_seconds{view="clicks"} 3600.0' in metrics
