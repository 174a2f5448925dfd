"""Freshness against a view's SLO: stale when the newest event is too old, lagging when
the online store was not refreshed in time; in the SDK, the CLI, /health and /metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from almanac import FeatureStore
from almanac.cli import main
from almanac.errors import NotFoundError
from almanac.serving.app import create_app

FEATURES = """
from almanac import Entity, FeatureView, Field, FileSource, Float64, OnDemandView, PushSource

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
# Computed when their source view's rows are written online, and stored under their names.
balance_flags = OnDemandView(name="balance_flags", sources=[balances], write_to_online=True,
                             expressions={"overdrawn": "balance < 0"})
click_flags = OnDemandView(name="click_flags", sources=[clicks], write_to_online=True,
                           expressions={"busy": "clicks > 10"})
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
    assert statuses(store, t) == {"balances": "no data", "clicks": "no data", "archive": "no data",
                                  "balance_flags": "no data", "click_flags": "no data"}  # fmt: skip
    store.write_to_offline_store("balances", {"user_id": [1], "event_timestamp": [t], "balance": [5.0]})  # fmt: skip
    store.write_to_offline_store("archive", {"user_id": [1], "event_timestamp": [t], "balance": [5.0]})  # fmt: skip
    store.push("click_events", {"user_id": [1], "event_timestamp": [t], "clicks": [1.0]})
    half = t + timedelta(minutes=30)
    # Fresh data, but the online store never got the file-fed view: lagging.
    # A write-time view has its source view's data and SLO, and a watermark of its own.
    assert statuses(store, half) == {"balances": "lagging", "clicks": "ok", "archive": "no slo",
                                     "balance_flags": "lagging", "click_flags": "ok"}  # fmt: skip
    store.materialize(None, half, ["balances"])  # its write-time view with it
    assert statuses(store, half)["balances"] == statuses(store, half)["balance_flags"] == "ok"
    report = {f.view: f for f in store.freshness(now=half)}
    assert report["balances"].event_age_seconds == 1800
    assert report["balances"].materialization_lag_seconds == 0
    assert report["clicks"].materialization_lag_seconds is None  # pushes write online at once
    assert report["balance_flags"].event_age_seconds == 1800
    assert report["balance_flags"].slo_seconds == 3600
    assert report["balance_flags"].materialization_lag_seconds == 0
    assert report["click_flags"].materialization_lag_seconds is None
    later = t + timedelta(hours=2)
    assert statuses(store, later) == {"balances": "stale", "clicks": "stale", "archive": "no slo",
                                      "balance_flags": "stale", "click_flags": "stale"}  # fmt: skip


def test_a_write_time_view_lags_on_its_own_watermark(store: FeatureStore) -> None:
    t = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    store.write_to_offline_store("balances", {"user_id": [1], "event_timestamp": [t], "balance": [-5.0]})  # fmt: skip
    store.materialize(None, t + timedelta(minutes=10), ["balances"])
    # New data; the write-time view is materialized up to a later time than its source.
    store.write_to_offline_store("balances", {"user_id": [1], "event_timestamp": [t + timedelta(hours=2)], "balance": [5.0]})  # fmt: skip
    store.materialize(None, t + timedelta(hours=2, minutes=10), ["balance_flags"])
    now = t + timedelta(hours=2, minutes=20)
    report = {f.view: f for f in store.freshness(["balances", "balance_flags"], now=now)}
    assert list(report) == ["balances", "balance_flags"]
    assert report["balance_flags"].materialization_lag_seconds == 600
    assert report["balance_flags"].status == "ok"
    assert report["balances"].materialization_lag_seconds == 2 * 3600 + 600
    assert report["balances"].status == "lagging"
    with pytest.raises(NotFoundError, match="unknown feature view 'no_such_view'"):
        store.freshness(["no_such_view"])


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
        # balances: no data yet; click_flags is computed from clicks' rows
        assert body["freshness"]["views"] == {"clicks": "stale", "click_flags": "stale"}
        metrics = client.get("/metrics").text
        age = next(line for line in metrics.splitlines() if line.startswith('almanac_view_freshness_seconds{view="clicks"}'))  # fmt: skip
        assert float(age.split()[-1]) >= 5 * 3600 - 60
        assert 'almanac_view_freshness_slo_seconds{view="clicks"} 3600.0' in metrics
        assert 'almanac_view_freshness_slo_seconds{view="click_flags"} 3600.0' in metrics
