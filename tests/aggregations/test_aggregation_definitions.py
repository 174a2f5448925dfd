"""Aggregation views: bad input is a one-line DefinitionError naming the object and the
field; the registry, `plan` and the CLI handle the new kind."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from agg_repo import AggRepo

from almanac import (
    Aggregation,
    AggregationView,
    Entity,
    FeatureView,
    Field,
    FileSource,
    Float64,
    String,
)
from almanac.errors import DefinitionError, InputError
from almanac.registry.catalog import Catalog, definition_from_spec
from almanac.registry.diff import make_plan

customer = Entity(name="customer", join_keys=["customer_id"], dtype="int64")
events = FileSource(name="events", path="data/events.parquet", timestamp_field="ts")


def view(*aggregations: Aggregation | dict, **options) -> AggregationView:
    return AggregationView(
        name="spend", entities=[customer], source=events, aggregations=list(aggregations),
        **options,
    )  # fmt: skip


def error_of(make) -> str:
    with pytest.raises(DefinitionError) as info:
        make()
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("aggregation", "fragments"),
    [
        ({"column": "amount", "function": "median", "windows": ["1d"]},
         ["AggregationView 'spend'", "aggregations[0]", "function", "unknown function 'median'"]),
        ({"column": "amount", "function": "sum", "windows": ["0s"]},
         ["aggregations[0]", "windows", "positive duration"]),
        ({"column": "amount", "function": "sum", "windows": ["-7d"]},
         ["aggregations[0]", "windows", "positive duration"]),
        ({"column": "amount", "function": "sum", "windows": ["soon"]},
         ["aggregations[0]", "windows", "not a duration"]),
        ({"column": "amount", "function": "sum", "windows": []},
         ["aggregations[0]", "at least one window"]),
        ({"function": "sum", "windows": ["1d"]}, ["aggregations[0]", "'sum' needs a column"]),
    ],
)  # fmt: skip
def test_bad_aggregations(aggregation: dict, fragments: list[str]) -> None:
    message = error_of(lambda: view(aggregation))
    for fragment in fragments:
        assert fragment in message, message


def test_non_numeric_column_for_sum_and_mean() -> None:
    columns = [Field("merchant", String)]
    for function in ("sum", "mean", "stddev"):
        message = error_of(
            lambda f=function: view(
                Aggregation(column="merchant", function=f, windows=["1d"]), columns=columns
            )
        )
        assert f"'{function}' needs a numeric column; 'merchant' is string" in message
    # min/max compare strings; count_distinct takes any scalar
    view(Aggregation(column="merchant", function="max", windows=["1d"]),
         Aggregation(column="merchant", function="count_distinct", windows=["1d"]), columns=columns)  # fmt: skip


def test_column_missing_from_declared_columns() -> None:
    message = error_of(
        lambda: view(
            Aggregation(column="amont", function="sum", windows=["1d"]),
            columns=[Field("amount", Float64)],
        )
    )
    assert "aggregations[0]" in message and "no column 'amont'" in message


def test_duplicate_feature_names() -> None:
    message = error_of(
        lambda: view(
            Aggregation(column="amount", function="sum", windows=["1d"]),
            Aggregation(column="amount", function="sum", windows=["24h"]),
        )
    )
    assert "duplicate feature name 'amount_sum_1d'" in message
    named = view(Aggregation(column="amount", function="sum", windows=["1d"]),
                 Aggregation(column="amount", function="sum", windows=["24h"], name="daily"))  # fmt: skip
    assert named.feature_names == ["amount_sum_1d", "daily_1d"]


def test_other_fields() -> None:
    assert "ttl" in error_of(lambda: view(Aggregation(function="count", windows=["1d"]), ttl="1d"))
    assert "tile" in error_of(
        lambda: view(Aggregation(function="count", windows=["1d"]), tile="0s")
    )
    assert "shorter than the tile" in error_of(
        lambda: view(Aggregation(function="count", windows=["1h"]), tile="1d")
    )
    assert "at least one aggregation" in error_of(lambda: view())


def test_spec_round_trip_and_catalog() -> None:
    made = view(Aggregation(column="amount", function="mean", windows=["7d", "1h"]), tile="1h")
    spec = made.to_spec()
    assert "schema" not in spec and "ttl" not in spec
    again = definition_from_spec("aggregation_view", json.loads(json.dumps(spec)))
    assert again == made and again.feature_names == ["amount_mean_7d", "amount_mean_1h"]
    catalog = Catalog.from_definitions([made])
    assert catalog.view("spend") is catalog.aggregation_views["spend"]
    refs = catalog.resolve(["spend:amount_mean_1h"])
    assert refs[0].field.dtype == "float64"
    clash = FeatureView(name="spend", entities=[customer], source=events,
                        schema=[Field("x", Float64)])  # fmt: skip
    with pytest.raises(DefinitionError, match="share one namespace"):
        Catalog.from_definitions([made, clash])


def test_plan_marks_changed_aggregation_view_stale() -> None:
    before = Catalog.from_definitions([view(Aggregation(function="count", windows=["1d"]))])
    cosmetic = Catalog.from_definitions(
        [view(Aggregation(function="count", windows=["1d"]), description="x")]
    )
    changed = Catalog.from_definitions([view(Aggregation(function="count", windows=["2d"]))])
    assert make_plan(before, cosmetic).views_with_stale_online_data() == []
    plan = make_plan(before, changed)
    assert plan.views_with_stale_online_data() == ["spend"]
    assert [c.kind for c in plan.changes] == ["aggregation_view"]
    assert any(f.path.startswith("aggregations") for f in plan.changes[0].fields)


@pytest.mark.parametrize("online_url", ["sqlite:///.almanac/online.db"])
def test_missing_source_column_at_query_time(repo: AggRepo, online_url: str) -> None:
    """Undeclared in the source file: an InputError naming the column and the view."""
    pq.write_table(
        pa.table({"customer_id": [1], "ts": pa.array([0], pa.timestamp("us", tz="UTC")),
                  "amount": [1.0], "merchant": ["a"]}),
        repo.path / "data" / "events.parquet",
    )  # fmt: skip
    spine = pa.table({"customer_id": [1], "event_timestamp": ["2024-01-01T00:00:00Z"]})
    with pytest.raises(InputError, match=r"no column 'qty'.*aggregation view 'spend'"):
        repo.store.get_historical_features(spine, ["spend:qty_sum_1d"]).to_arrow()


@pytest.mark.parametrize("online_url", ["sqlite:///.almanac/online.db"])
def test_cli_lists_and_describes(repo: AggRepo, online_url: str) -> None:
    from typer.testing import CliRunner

    from almanac.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["--repo", str(repo.path), "list", "views", "--json"])
    assert out.exit_code == 0, out.output
    kinds = {row["view"]: row["kind"] for row in json.loads(out.output)}
    assert kinds == {"spend": "aggregation view", "spend_tiled": "aggregation view",
                     "latest": "feature view"}  # fmt: skip
    out = runner.invoke(app, ["--repo", str(repo.path), "list", "features", "--json"])
    assert {"view": "spend", "feature": "count_1h"}.items() <= next(
        r for r in json.loads(out.output) if r["feature"] == "count_1h"
    ).items()
    out = runner.invoke(app, ["--repo", str(repo.path), "describe", "spend_tiled"])
    assert out.exit_code == 0, out.output
    assert "aggregation view" in out.output and "tile: 1h" in out.output
    assert "amount_sum_2h" in out.output
