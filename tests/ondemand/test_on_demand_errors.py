"""On-demand views refuse what could only go wrong later: at `plan` a cycle, an unknown
source, two inputs of one name, an expression over a missing column or of the wrong
type; at request time a missing or mistyped request field (before any store is read);
and a function that raises or returns the wrong shape is an error naming the view,
never a wrong value — offline, in the SDK and over HTTP."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from almanac import FeatureStore
from almanac.errors import DefinitionError, InputError, TransformationError
from almanac.serving.app import create_app

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
BASE = """
from almanac import (Entity, FeatureService, FeatureView, Field, Float64, Int64, OnDemandView,
                     PushSource, RequestSource, String, on_demand_view)

customer = Entity(name="customer", join_keys=["customer_id"], dtype=Int64)
stats = FeatureView(name="stats", entities=[customer], source=PushSource(name="events"),
                    schema=[Field("avg_amount", Float64), Field("tier", String)])
txn = RequestSource(name="txn", schema=[Field("amount", Float64), Field("channel", String)])
"""
BROKEN = """
@on_demand_view(sources=[txn, stats], schema=[Field("out", Float64)])
def raises(df):
    raise ZeroDivisionError("the model team's bug")

@on_demand_view(sources=[txn], schema=[Field("out", Int64)], mode="python")
def wrong_type(columns):
    return {"out": ["not a number" for _ in columns["amount"]]}

@on_demand_view(sources=[txn], schema=[Field("out", Float64)], mode="python")
def wrong_rows(columns):
    return {"out": [1.0]}

@on_demand_view(sources=[txn], schema=[Field("out", Float64)], mode="arrow")
def wrong_columns(table):
    return {"other": table.column("amount")}

ratio = OnDemandView(name="ratio", sources=[txn, stats], expressions={"r": "amount / nullif(avg_amount, 0)"})
"""


def write_repo(root: Path, extra: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "almanac.yaml").write_text("project: odfv_errors\n")
    (root / "features.py").write_text(BASE + textwrap.dedent(extra))
    return root


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeatureStore]:
    with FeatureStore(write_repo(tmp_path / "repo", BROKEN)) as made:
        made.apply()
        made.push("events", {"customer_id": [1], "event_timestamp": [T0], "avg_amount": [2.0], "tier": ["gold"]})  # fmt: skip
        yield made


LABELS = {"customer_id": [1], "event_timestamp": [T0 + timedelta(hours=1)], "amount": [3.0], "channel": ["web"]}  # fmt: skip


@pytest.mark.parametrize(
    ("view", "message"),
    [
        ("raises", "on-demand view 'raises': its function features:raises raised ZeroDivisionError: the model team's bug"),
        ("wrong_type", "on-demand view 'wrong_type': feature 'out' is declared int64"),
        ("wrong_rows", "on-demand view 'wrong_rows': feature 'out' has 1 values for 2 rows"),
        ("wrong_columns", "on-demand view 'wrong_columns': its function did not return out and returned undeclared other"),
    ],
)  # fmt: skip
def test_a_broken_function_is_an_error_naming_the_view(store: FeatureStore, view: str, message: str) -> None:  # fmt: skip
    labels = {k: v * 2 for k, v in LABELS.items()}
    with pytest.raises(TransformationError) as offline:
        store.get_historical_features(labels, [f"{view}:out"]).to_arrow()
    assert message in str(offline.value)
    with pytest.raises(TransformationError) as online:
        store.get_online_features([f"{view}:out"], [{"customer_id": 1}] * 2, request_data={"amount": [3.0, 4.0], "channel": ["web", "app"]})  # fmt: skip
    assert message in str(online.value)
    with TestClient(create_app(store.repo_path), raise_server_exceptions=False) as client:
        answer = client.post("/get-online-features", json={"features": [f"{view}:out"], "entities": {"customer_id": [1, 1]}, "request_data": {"amount": [3.0, 4.0], "channel": "web"}})  # fmt: skip
    assert answer.status_code == 500
    assert answer.json()["error"] == "TransformationError"
    assert message in answer.json()["detail"]


def test_a_missing_request_field_is_named_before_any_read(store: FeatureStore) -> None:
    without_amount = {k: v for k, v in LABELS.items() if k != "amount"}
    with pytest.raises(InputError, match="entity_df has no column 'amount', a request field that on-demand view 'ratio' needs"):  # fmt: skip
        store.get_historical_features(without_amount, ["ratio:r"])
    with pytest.raises(InputError, match="request field 'amount' is missing"):
        store.get_online_features(["ratio:r"], [{"customer_id": 1}])
    with pytest.raises(InputError, match="request field 'amount' must be float64, got str 'ten'"):
        store.get_online_features(["ratio:r"], [{"customer_id": 1}], request_data={"amount": "ten"})  # fmt: skip
    with pytest.raises(InputError, match="request field 'amount' has 2 values for 1 entity rows"):
        store.get_online_features(["ratio:r"], [{"customer_id": 1}], request_data={"amount": [1.0, 2.0]})  # fmt: skip
    with TestClient(create_app(store.repo_path)) as client:
        answer = client.post("/get-online-features", json={"features": ["ratio:r"], "entities": {"customer_id": [1]}})  # fmt: skip
        assert answer.status_code == 422
        assert "request field 'amount' is missing" in answer.json()["detail"]
        # Feast's clients send request fields among the entities.
        inline = client.post("/get-online-features", json={"features": ["ratio:r"], "entities": {"customer_id": [1], "channel": ["web"]}, "request_data": {"amount": 3}})  # fmt: skip
        assert inline.status_code == 200, inline.text
        assert inline.json()["results"][1]["values"] == [1.5]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("""a = OnDemandView(name="a", sources=["b"], expressions={"x": "y + 1"})
            b = OnDemandView(name="b", sources=["a"], expressions={"y": "x + 1"})""",
         "on-demand views read each other in a cycle: a → b → a"),
        ("""a = OnDemandView(name="a", sources=[txn, "stat"], expressions={"x": "amount"})""",
         "OnDemandView 'a': field 'sources': unknown request source or view 'stat'; did you mean 'stats'?"),
        ("""other = RequestSource(name="other", schema=[Field("avg_amount", Float64)])
            a = OnDemandView(name="a", sources=[other, stats], expressions={"x": "avg_amount"})""",
         "'avg_amount' is both 'other:avg_amount' and 'stats:avg_amount'"),
        ("""a = OnDemandView(name="a", sources=[txn], expressions={"x": "amount + tier"})""",
         "OnDemandView 'a': feature 'x':"),
        ("""a = OnDemandView(name="a", sources=[txn], expressions={"x": "channel * 2"})""",
         "OnDemandView 'a': feature 'x':"),
        ("""a = OnDemandView(name="a", sources=[txn], expressions={"x": "amount > 1"}, schema=[Field("x", Float64)])""",
         "feature 'x' is declared float64 but its expression computes bool"),
        ("""stats2 = OnDemandView(name="stats", sources=[txn], expressions={"x": "amount"})""",
         "a view and an on-demand view are both named 'stats'"),
        ("""s = FeatureService(name="s", features=["ratio2:r"])
            ratio2 = OnDemandView(name="ratio2", sources=[txn, stats], expressions={"q": "amount"})""",
         "FeatureService 's': field 'features': unknown feature 'ratio2:r'"),
    ],
)  # fmt: skip
def test_plan_refuses_what_would_fail_at_serve_time(tmp_path: Path, extra: str, message: str) -> None:  # fmt: skip
    statements = "\n".join(line.strip() for line in extra.splitlines())
    with FeatureStore(write_repo(tmp_path / "repo", statements)) as store, pytest.raises(DefinitionError) as refused:  # fmt: skip
        store.plan()
    assert message in str(refused.value)


def test_an_edited_function_is_a_change_and_refused_until_applied(tmp_path: Path) -> None:
    function = """
    @on_demand_view(sources=[txn], schema=[Field("double", Float64)], mode="python")
    def doubled(columns):
        return {"double": [None if a is None else a * 2 for a in columns["amount"]]}
    """
    root = write_repo(tmp_path / "repo", function)
    with FeatureStore(root) as store:
        store.apply()
        assert store.get_online_features(["doubled:double"], [{}], request_data={"amount": 2.0, "channel": "web"}).to_dict()["double"] == [4.0]  # fmt: skip
    write_repo(root, function.replace("a * 2", "a * 3"))
    with FeatureStore(root) as store:
        changes = store.plan().changes
        assert [(c.kind, c.name, c.action) for c in changes] == [("on_demand_view", "doubled", "update")]  # fmt: skip
        assert [f.path for f in changes[0].fields] == ["function.source_hash"]
    # A fresh process (the server, a job) runs the registry's definition: refused until applied.
    with FeatureStore(root) as store:
        from almanac.definitions import transformations

        transformations._known.clear()
        with pytest.raises(DefinitionError, match="the function changed since its view was applied"):  # fmt: skip
            store.get_online_features(
                ["doubled:double"], [{}], request_data={"amount": 2.0, "channel": "web"}
            )
        store.apply()
        assert store.get_online_features(["doubled:double"], [{}], request_data={"amount": 2.0, "channel": "web"}).to_dict()["double"] == [6.0]  # fmt: skip


def test_a_service_with_on_demand_features_may_render_them_as_context(tmp_path: Path) -> None:
    extra = """
    ratio = OnDemandView(name="ratio", sources=[txn, stats], expressions={"r": "amount / nullif(avg_amount, 0)"})
    s = FeatureService(name="s", features=[stats, ratio], prompt_template="{{ customer_id }}: {{ tier }}, {{ r }}")
    """
    with FeatureStore(write_repo(tmp_path / "repo", extra)) as store:
        store.apply()
        store.push("events", {"customer_id": [1], "event_timestamp": [T0], "avg_amount": [2.0], "tier": ["gold"]})  # fmt: skip
        with pytest.raises(InputError, match="request field 'amount' is missing"):
            store.get_context("s", {"customer_id": 1})
        context = store.get_context("s", {"customer_id": 1}, request_data={"amount": 3.0, "channel": "web"})  # fmt: skip
        assert context.text == "1: gold, 1.5"
        with TestClient(create_app(store.repo_path)) as client:
            answer = client.post("/context", json={"feature_service": "s", "entity": {"customer_id": 1}, "request_data": {"amount": 3.0, "channel": "web"}})  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.json()["text"] == "1: gold, 1.5"
