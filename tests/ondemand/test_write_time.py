"""Write-time on-demand views (`write_to_online=True`): computed when their source view's
rows are written online (push, write-to-online-store, materialization) and stored, they
serve exactly what the same view computed at read time serves, and what a training set
computes — whatever the pushes' order, ties, nulls, TTL expiry and unknown entities (a
property, on the embedded store and on a real Redis)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from almanac import FeatureStore
from almanac.errors import DefinitionError, InputError, TransformationError
from almanac.materialize.jobs import views_to_materialize
from almanac.serving.app import create_app

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
NOW = T0 + timedelta(days=2)

# Each view twice: stored at write time, and computed at read time. `ratio` reads the
# stored one (and a request field); `ratio_read` the computed one.
FEATURES_PY = """
from datetime import timedelta

from almanac import (Bool, Entity, FeatureService, FeatureView, Field, Float64, Int64,
                     OnDemandView, PushSource, RequestSource, String, on_demand_view)

customer = Entity(name="customer", join_keys=["customer_id"], dtype=Int64)
stats = FeatureView(name="stats", entities=[customer], source=PushSource(name="stats_events"),
                    ttl=timedelta(days=1),
                    schema=[Field("avg_amount", Float64), Field("txn_count", Int64), Field("tier", String)])
txn = RequestSource(name="txn", schema=[Field("amount", Float64)])

EXPRESSIONS = {
    "avg_or_zero": "coalesce(avg_amount, 0)",
    "label": "case when tier is null then 'none' else tier end",
    "busy": "txn_count >= 2",
}
stored_expr = OnDemandView(name="stored_expr", sources=[stats], expressions=EXPRESSIONS,
                           write_to_online=True)
read_expr = OnDemandView(name="read_expr", sources=[stats], expressions=EXPRESSIONS)

def scores(df):
    return {"score": df["avg_amount"].fillna(-1.0) * 2, "known": df["tier"].notna()}

SCHEMA = [Field("score", Float64), Field("known", Bool)]
stored_fn = on_demand_view(sources=[stats], schema=SCHEMA, name="stored_fn", write_to_online=True)(scores)
read_fn = on_demand_view(sources=[stats], schema=SCHEMA, name="read_fn")(scores)

ratio = OnDemandView(name="ratio", sources=[txn, stored_expr],
                     expressions={"ratio": "amount / nullif(avg_or_zero, 0)"})
ratio_read = OnDemandView(name="ratio_read", sources=[txn, read_expr],
                          expressions={"ratio": "amount / nullif(avg_or_zero, 0)"})

stored = FeatureService(name="stored", features=[stored_expr, stored_fn, ratio])
computed = FeatureService(name="computed", features=[read_expr, read_fn, ratio_read])
"""
FEATURES = ["avg_or_zero", "label", "busy", "score", "known", "ratio"]

row = st.fixed_dictionaries(
    {
        "customer_id": st.integers(1, 3),
        # Hours before NOW: ties, out-of-order rows, and rows older than the 1-day TTL.
        "hours_ago": st.sampled_from([0, 1, 1, 5, 30]),
        "avg_amount": st.one_of(st.none(), st.just(0.0), st.floats(-1e6, 1e6, allow_nan=False)),
        "txn_count": st.one_of(st.none(), st.integers(-5, 5)),
        "tier": st.one_of(st.none(), st.sampled_from(["gold", ""])),
    }
)


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("write_time")
    (root / "features.py").write_text(FEATURES_PY)
    return root


@pytest.fixture
def store(repo_files: Path, online_url: str) -> Iterator[FeatureStore]:
    (repo_files / "almanac.yaml").write_text(f"project: wt\nonline:\n  url: {online_url}\n")
    with FeatureStore(repo_files) as made:
        made.apply()
        yield made


def _empty(store: FeatureStore) -> None:
    """Both stores without rows of the views (the repo and its stores outlive a test)."""
    for view in ("stats", "stored_expr", "stored_fn"):
        store.online.delete_view(store.project, view)
    for path in store.config.resolve_path(store.config.offline.data_path).glob("stats_events/*"):
        path.unlink()


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {
        "customer_id": [r["customer_id"] for r in rows],
        "event_timestamp": [NOW - timedelta(hours=r["hours_ago"]) for r in rows],
        **{name: [r[name] for r in rows] for name in ("avg_amount", "txn_count", "tier")},
    }


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, float) and isinstance(right, float):
        return left == right or (math.isnan(left) and math.isnan(right))
    return bool(left == right) and type(left) is type(right)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(pushes=st.lists(st.lists(row, min_size=1, max_size=4), min_size=1, max_size=3), data=st.data())  # fmt: skip
def test_stored_equals_computed_equals_training(
    store: FeatureStore, pushes: list[list[dict[str, Any]]], data: st.DataObject
) -> None:
    _empty(store)
    for rows in pushes:  # in several pushes: the store keeps the row rule 2 picks
        store.push("stats_events", _columns(rows))
    asked = [1, 2, 3, 999]  # 999: nobody pushed it
    amounts = data.draw(st.lists(st.one_of(st.none(), st.floats(-1e3, 1e3)), min_size=4, max_size=4))  # fmt: skip
    answers = {}
    for service in ("stored", "computed"):
        answers[service] = store.get_online_features(
            feature_service=service, entity_rows=[{"customer_id": c} for c in asked],
            request_data={"amount": amounts}, now=NOW,
        )  # fmt: skip
    labels = {"customer_id": asked, "event_timestamp": [NOW] * 4, "amount": amounts}
    offline = store.get_historical_features(labels, feature_service="stored").to_arrow()
    stored, computed = answers["stored"].to_dict(), answers["computed"].to_dict()
    assert set(stored) - {"customer_id"} == set(FEATURES) and list(stored) == list(computed)
    for name in FEATURES:
        for i in range(len(asked)):
            value = stored[name][i]
            assert _same(value, computed[name][i]), (name, i, value, computed[name][i])
            assert _same(value, offline.column(name)[i].as_py()), (name, i, value, offline.column(name)[i])  # fmt: skip
    # The statuses are those of the view computed at read time.
    assert answers["stored"].statuses == answers["computed"].statuses


def test_the_store_holds_the_computed_values(store: FeatureStore) -> None:
    """What is stored is the view's values (no per-read computation), with the source
    row's event time; the source view is not read for it."""
    _empty(store)
    store.push("stats_events", {"customer_id": [1], "event_timestamp": [T0],
                                "avg_amount": [2.5], "txn_count": [3], "tier": ["gold"]})  # fmt: skip
    answer = store.get_online_features(["stored_expr:avg_or_zero", "stored_fn:score"], [{"customer_id": 1}], now=T0)  # fmt: skip
    assert answer.to_dict() == {"customer_id": [1], "avg_or_zero": [2.5], "score": [5.0]}
    assert answer.event_timestamps["avg_or_zero"] == [T0]
    assert answer.event_timestamps["score"] == [T0]
    # Deleting the source view's values leaves the stored ones served.
    store.online.delete_view(store.project, "stats")
    again = store.get_online_features(["stored_expr:avg_or_zero"], [{"customer_id": 1}], now=T0)
    assert again.to_dict()["avg_or_zero"] == [2.5]


def test_write_to_online_store_over_http_computes_them(store: FeatureStore) -> None:
    _empty(store)
    with TestClient(create_app(store.repo_path)) as client:
        answer = client.post("/write-to-online-store", json={
            "feature_view_name": "stats", "df": {
                "customer_id": [7], "event_timestamp": [datetime.now(UTC).isoformat()],
                "avg_amount": [4.0], "txn_count": [1], "tier": [None]}})  # fmt: skip
        assert answer.status_code == 200, answer.text
        read = client.post("/get-online-features", json={
            "features": ["stored_expr:label", "stored_fn:score", "stored_fn:known"],
            "entities": {"customer_id": [7]}})  # fmt: skip
    assert read.status_code == 200, read.text
    values = [r["values"][0] for r in read.json()["results"][1:]]
    assert values == ["none", 8.0, False]
    assert [r["statuses"][0] for r in read.json()["results"][1:]] == ["PRESENT"] * 3


def test_a_failing_function_writes_nothing(repo_files: Path, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    text = FEATURES_PY.replace('"score": df["avg_amount"].fillna(-1.0) * 2', '"score": 1 / 0')
    (root / "features.py").write_text(text)
    (root / "almanac.yaml").write_text("project: wt\n")
    with FeatureStore(root) as store:
        store.apply()
        rows = {"customer_id": [1], "event_timestamp": [T0], "avg_amount": [1.0],
                "txn_count": [1], "tier": ["gold"]}  # fmt: skip
        # Refused as the rows' fault (HTTP 422; a stream dead-letters them), not a 500.
        with pytest.raises(InputError, match=r"refused.*stored_fn.*ZeroDivisionError") as refused:
            store.push("stats_events", rows)
        assert isinstance(refused.value.__cause__, TransformationError)
        answer = store.get_online_features(["stats:avg_amount"], [{"customer_id": 1}], now=T0)
        assert answer.statuses["avg_amount"] == ["NOT_FOUND"]
        assert not list(store.config.resolve_path(store.config.offline.data_path).glob("stats_events/*"))  # fmt: skip


def test_a_view_added_later_is_computed_for_rows_pushed_before(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "almanac.yaml").write_text("project: wt\n")
    before = FEATURES_PY[: FEATURES_PY.index("EXPRESSIONS")]
    (root / "features.py").write_text(before)
    rows = {"customer_id": [1], "event_timestamp": [T0], "avg_amount": [3.0],
            "txn_count": [1], "tier": ["gold"]}  # fmt: skip
    with FeatureStore(root) as store:
        store.apply()
        store.push("stats_events", rows)
        assert views_to_materialize(store.catalog, store.online, store.project) == {}
    (root / "features.py").write_text(FEATURES_PY)
    with FeatureStore(root) as store:
        store.apply()
        assert set(views_to_materialize(store.catalog, store.online, store.project)) == {"stored_expr", "stored_fn"}  # fmt: skip
        read = store.get_online_features(["stored_expr:avg_or_zero"], [{"customer_id": 1}], now=T0)
        assert read.to_dict()["avg_or_zero"] == [0.0]  # nothing stored yet: a row of nulls'
        runs = store.materialize_incremental(T0 + timedelta(hours=1)).runs
        assert {run.view: run.rows for run in runs if run.view.startswith("stored")} == {"stored_expr": 1, "stored_fn": 1}  # fmt: skip
        read = store.get_online_features(["stored_expr:avg_or_zero", "stored_fn:score"], [{"customer_id": 1}], now=T0 + timedelta(hours=1))  # fmt: skip
        assert read.to_dict() == {"customer_id": [1], "avg_or_zero": [3.0], "score": [6.0]}
        assert views_to_materialize(store.catalog, store.online, store.project) == {}


# ---- materialization, and a changed definition -------------------------------------------

FILE_FEATURES_PY = """
from almanac import Entity, FeatureView, Field, FileSource, Float64, Int64, OnDemandView

customer = Entity(name="customer", join_keys=["customer_id"], dtype=Int64)
stats = FeatureView(name="stats", entities=[customer], source=FileSource(name="stats_files",
                    path="data/stats.parquet", timestamp_field="event_timestamp"),
                    schema=[Field("avg_amount", Float64)])
doubled = OnDemandView(name="doubled", sources=[stats], write_to_online=True,
                       expressions={"value": "avg_amount * FACTOR"})
"""


def _file_repo(root: Path, factor: str) -> None:
    (root / "features.py").write_text(FILE_FEATURES_PY.replace("FACTOR", factor))


def test_materialized_from_the_offline_store_and_recomputed_when_changed(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    pq.write_table(
        pa.table({"customer_id": [1, 1, 2], "event_timestamp": [T0, T0 + timedelta(hours=1), T0],
                  "avg_amount": [1.0, 2.0, None]}),
        tmp_path / "data" / "stats.parquet",
    )  # fmt: skip
    (tmp_path / "almanac.yaml").write_text("project: wt\n")
    _file_repo(tmp_path, "2")
    end = T0 + timedelta(days=1)
    with FeatureStore(tmp_path) as store:
        store.apply()
        assert "doubled" in views_to_materialize(store.catalog, store.online, store.project)
        runs = store.materialize_incremental(end).runs
        assert {run.view: run.rows for run in runs} == {"stats": 2, "doubled": 2}
        assert store.online.watermarks(store.project)["doubled"].time == end
        read = store.get_online_features(["doubled:value"], [{"customer_id": 1}, {"customer_id": 2}])  # fmt: skip
        assert read.to_dict()["value"] == [4.0, None]
        assert read.statuses["value"] == ["PRESENT", "NULL_VALUE"]
    _file_repo(tmp_path, "10")
    with FeatureStore(tmp_path) as store:
        plan = store.plan()
        assert plan.views_with_stale_online_data() == ["doubled"]  # the source view is unchanged
        store.apply(plan)
        # Cleared on apply: until it is materialized again, its value for no row.
        read = store.get_online_features(["doubled:value"], [{"customer_id": 1}])
        assert read.to_dict()["value"] == [None]
        assert views_to_materialize(store.catalog, store.online, store.project) == {
            "doubled": "never materialized into this online store (new, or emptied)"
        }
        runs = store.materialize_incremental(end).runs
        assert {run.view: run.rows for run in runs if run.rows} == {"doubled": 2}
        read = store.get_online_features(["doubled:value"], [{"customer_id": 1}])
        assert read.to_dict()["value"] == [20.0]
        assert [run.outcome for run in store.runs("doubled")] == ["success", "success"]
        # A new row: materializing the view by name computes its write-time view too.
        later = end + timedelta(hours=1)
        pq.write_table(
            pa.table({"customer_id": [1], "event_timestamp": [later], "avg_amount": [7.0]}),
            tmp_path / "data" / "stats.parquet",
        )
        runs = store.materialize(None, later + timedelta(minutes=1), views=["stats"]).runs
        assert [run.view for run in runs] == ["stats", "doubled"]
        read = store.get_online_features(["stats:avg_amount", "doubled:value"], [{"customer_id": 1}])  # fmt: skip
        assert read.to_dict() == {"customer_id": [1], "avg_amount": [7.0], "value": [70.0]}


# ---- definitions a write-time view cannot have -------------------------------------------

BAD = {
    "a request source": 'sources=[txn, stats], expressions={"x": "amount + avg_amount"}',
    "an aggregation view": 'sources=[spend], expressions={"x": "amount_sum_7d + 1"}',
    "an offline view": 'sources=[offline_stats], expressions={"x": "avg_amount + 1"}',
}
BAD_PY = """
from almanac import (Aggregation, AggregationView, Entity, FeatureView, Field, Float64, Int64,
                     OnDemandView, PushSource, RequestSource)

customer = Entity(name="customer", join_keys=["customer_id"], dtype=Int64)
events = PushSource(name="events")
stats = FeatureView(name="stats", entities=[customer], source=events, schema=[Field("avg_amount", Float64)])
offline_stats = FeatureView(name="offline_stats", entities=[customer], source=events, online=False,
                            schema=[Field("avg_amount", Float64)])
spend = AggregationView(name="spend", entities=[customer], source=events,
                        columns=[Field("amount", Float64)],
                        aggregations=[Aggregation(column="amount", function="sum", windows=["7d"])])
txn = RequestSource(name="txn", schema=[Field("amount", Float64)])
"""


@pytest.mark.parametrize("case", list(BAD))
def test_plan_refuses_a_write_time_view_that_cannot_be_stored(tmp_path: Path, case: str) -> None:
    view = f'w = OnDemandView(name="w", write_to_online=True, {BAD[case]})\n'
    (tmp_path / "features.py").write_text(BAD_PY + view)
    (tmp_path / "almanac.yaml").write_text("project: wt\n")
    with FeatureStore(tmp_path) as store, pytest.raises(DefinitionError, match="write_to_online"):
        store.plan()
