"""Batch transformations (DuckDB SQL, Python over pandas/Polars/Arrow batches): one
definition, the same values in training sets and online; a changed function shows in
`plan` and is refused until applied."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from agg_repo import offline_yaml

from almanac import FeatureView, Field, Float64, SqlTransformation, batch_transformation
from almanac.definitions.transformations import PythonTransformation
from almanac.errors import DefinitionError
from almanac.online.retrieval import get_online_features
from almanac.store import FeatureStore

END = datetime(2024, 3, 2, tzinfo=UTC)

FEATURES_PY = """
import polars as pl
import pyarrow.compute as pc

from almanac import (Aggregation, AggregationView, Entity, FeatureView, Field, FileSource,
                     Float64, Int64, SqlTransformation, batch_transformation)

customer = Entity(name="customer", join_keys=["customer_id"], dtype=Int64)
events = FileSource(path="data/events.parquet", timestamp_field="ts")


@batch_transformation
def halve(df):
    # Records the oldest row each call sees (the test of time-bound pushdown reads it).
    with open(__file__.replace("features.py", "seen.log"), "a") as log:
        log.write(f"{len(df)} {df['ts'].min()}\\n")
    return df.assign(amount_eur=df["amount"] * 0.5)


@batch_transformation(mode="polars")
def halve_polars(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns((pl.col("amount") * 0.5).alias("amount_eur"))


@batch_transformation(mode="arrow")
def halve_arrow(table):
    return table.append_column("amount_eur", pc.multiply(table["amount"], 0.5))


def view(name, transformation):
    return FeatureView(name=name, entities=[customer], source=events,
                       schema=[Field("amount_eur", Float64)], transformation=transformation)


eur_sql = view("eur_sql", SqlTransformation(
    "SELECT customer_id, ts, amount * 0.5 AS amount_eur FROM source", dialect="DIALECT"))
eur_pandas = view("eur_pandas", halve)
eur_polars = view("eur_polars", halve_polars)
eur_arrow = view("eur_arrow", halve_arrow)
eur_spend = AggregationView(
    name="eur_spend", entities=[customer], source=events, transformation=halve,
    aggregations=[Aggregation(column="amount_eur", function="sum", windows=["1d"])],
)
"""
VIEWS = ["eur_sql", "eur_pandas", "eur_polars", "eur_arrow"]


@pytest.fixture
def store(tmp_path: Path, engine_name: str) -> FeatureStore:
    (tmp_path / "data").mkdir()
    (tmp_path / "almanac.yaml").write_text("project: tr\n" + offline_yaml(engine_name))
    # The SQL transformation is written in the engine's dialect (this one reads the same).
    (tmp_path / "features.py").write_text(FEATURES_PY.replace("DIALECT", engine_name))
    times = [END - timedelta(hours=h) for h in (30, 5, 1, 2, 24 * 10)]
    pq.write_table(
        pa.table({"customer_id": [1, 1, 1, 2, 1], "ts": pa.array(times, pa.timestamp("us", tz="UTC")),
                  "amount": [100.0, 10.0, 4.0, 8.0, 1000.0]}),
        tmp_path / "data" / "events.parquet",
    )  # fmt: skip
    made = FeatureStore(tmp_path)
    made.apply()
    yield made
    made.close()


def test_same_values_offline_and_online(store: FeatureStore) -> None:
    store.materialize(None, END)
    features = [f"{v}:amount_eur" for v in VIEWS] + ["eur_spend:amount_eur_sum_1d"]
    spine = pa.table({"customer_id": [1, 2, 3], "event_timestamp": [END] * 3})
    offline = (
        store.get_historical_features(spine, features, full_feature_names=True)
        .to_arrow()
        .to_pydict()
    )
    online = get_online_features(
        store, features, [{"customer_id": k} for k in (1, 2, 3)], now=END, full_feature_names=True
    ).to_dict()
    for view in VIEWS:
        assert offline[f"{view}__amount_eur"] == [2.0, 4.0, None], view
        assert online[f"{view}__amount_eur"] == [2.0, 4.0, None], view
    assert offline["eur_spend__amount_eur_sum_1d"] == [7.0, 4.0, None]
    assert online["eur_spend__amount_eur_sum_1d"] == [7.0, 4.0, None]


def test_changed_function_shows_in_plan_and_is_refused(store: FeatureStore) -> None:
    path = store.repo_path / "features.py"
    path.write_text(path.read_text().replace('df["amount"] * 0.5', 'df["amount"] * 0.25'))
    plan = store.plan()
    changed = {c.name: [f.path for f in c.fields] for c in plan.changes}
    assert changed == {
        "eur_pandas": ["transformation.source_hash"],
        "eur_spend": ["transformation.source_hash"],
    }
    assert "eur_pandas" in plan.views_with_stale_online_data()
    spine = pa.table({"customer_id": [1], "event_timestamp": [END]})
    with pytest.raises(DefinitionError, match="changed since its view was applied"):
        store.get_historical_features(spine, ["eur_pandas:amount_eur"]).to_arrow()
    store.apply()
    values = store.get_historical_features(spine, ["eur_pandas:amount_eur"]).to_arrow().to_pydict()
    assert values["amount_eur"] == [1.0]


def plain(df):
    return df


def test_transformation_forms() -> None:
    base = {"name": "v", "entities": ["c"], "source": "s", "schema": [Field("x", Float64)]}
    assert FeatureView(**base, transformation="SELECT 1").transformation == SqlTransformation(
        "SELECT 1"
    )
    made = FeatureView(**base, transformation=plain).transformation
    assert isinstance(made, PythonTransformation) and made.function.endswith(":plain")
    assert made.mode == "pandas" and len(made.source_hash) == 16
    with pytest.raises(DefinitionError, match="module level"):
        FeatureView(**base, transformation=lambda df: df)
    with pytest.raises(DefinitionError, match="mode"):
        batch_transformation(plain, mode="spark")  # type: ignore[arg-type]


def test_a_python_transformation_sees_only_the_rows_a_read_can_use(store: FeatureStore) -> None:
    """A 1-day window at END needs events after END - 1d: the row 10 days old is not
    handed to the function (the bound is widened by a day for the raw scan)."""
    log = store.config.repo_path / "seen.log"
    log.unlink(missing_ok=True)
    spine = pa.table({"customer_id": [1], "event_timestamp": [END]})
    table = store.get_historical_features(spine, ["eur_spend:amount_eur_sum_1d"]).to_arrow()
    assert table.column("amount_eur_sum_1d").to_pylist() == [7.0]
    # (An engine may call the function once on no rows, to learn its output columns.)
    calls = [line.split(" ", 1) for line in log.read_text().splitlines() if line[0] != "0"]
    assert sum(int(rows) for rows, _ in calls) == 4  # of 5 rows
    assert all(datetime.fromisoformat(oldest) > END - timedelta(days=3) for _, oldest in calls)
