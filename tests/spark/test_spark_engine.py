"""The Spark engine end to end: the starter repo's demo steps on `offline: {engine:
spark}` (apply, training set, materialization from the executors, online reads) give
DuckDB's rows; bad settings and bad definitions get errors that name them."""

from __future__ import annotations

import gc
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from almanac import FeatureStore
from almanac.config import RepoConfig
from almanac.definitions import (
    Entity,
    FeatureView,
    Field,
    FileSource,
    Float64,
    Int64,
    SqlSource,
    SqlTransformation,
)
from almanac.errors import DefinitionError, InputError
from almanac.offline import open_offline_engine
from almanac.registry.catalog import Catalog
from conftest import END, SPARK, starter_on_spark

UTC_US = pa.timestamp("us", tz="UTC")


def training_set(store: FeatureStore) -> pa.Table:
    labels = store.repo_path / "data" / "labels.parquet"
    return store.get_historical_features(labels, feature_service="recommender_v1").to_arrow()


def test_the_starter_repo_gives_duckdbs_training_set(
    spark_store: FeatureStore, duckdb_store: FeatureStore, tmp_path: Path
) -> None:
    assert type(spark_store.offline).__name__ == "SparkEngine"
    spark, duckdb = training_set(spark_store), training_set(duckdb_store)
    assert spark.num_rows == duckdb.num_rows > 1000
    assert spark.equals(duckdb)
    # Streamed in row order too, and written atomically.
    labels = spark_store.repo_path / "data" / "labels.parquet"
    job = spark_store.get_historical_features(labels, feature_service="recommender_v1")
    streamed = pa.Table.from_batches(list(job.to_arrow_batches()))
    assert streamed.equals(duckdb)
    path = job.to_parquet(tmp_path / "out" / "train.parquet")
    assert pq.read_table(path).equals(duckdb)
    assert [p.name for p in path.parent.iterdir()] == ["train.parquet"]


def test_partitions_sized_by_spark_give_the_same_rows(
    tmp_path: Path, duckdb_store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `buckets`, Spark decides how many partitions the keys hash into; the
    rows are the same. The spine's file (a local session's) is gone with its job."""
    scratch = tmp_path / "scratch"  # this test's own temporary folder: no other test's files
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    repo = starter_on_spark(tmp_path / "repo", spark={**SPARK, "buckets": None})
    with FeatureStore(repo) as store:
        store.apply()
        labels = store.repo_path / "data" / "labels.parquet"
        job = store.get_historical_features(labels, feature_service="recommender_v1")
        assert len(list(scratch.glob("almanac-spine-*"))) == 1
        assert job.to_arrow().equals(training_set(duckdb_store))
        tiles = store.offline.aggregation_tiles(store.catalog, store.catalog.view("user_stats"), None, END)  # fmt: skip
        expected = duckdb_store.offline.aggregation_tiles(
            duckdb_store.catalog, duckdb_store.catalog.view("user_stats"), None, END
        )
        assert _sorted(tiles.read_all()).equals(_sorted(expected.read_all()))
        del job
        gc.collect()
        assert list(scratch.glob("almanac-spine-*")) == []


@pytest.mark.parametrize("view", ["user_profile", "user_last_genre"])
def test_rows_are_duckdbs_rows(spark_store: FeatureStore, duckdb_store: FeatureStore, view: str) -> None:  # fmt: skip
    """What statistics, drift and validation read: every row in the window, typed."""
    start, end = END - timedelta(days=20), END - timedelta(days=2)
    got = spark_store.offline.rows(spark_store.catalog, spark_store.catalog.view(view), start, end)
    want = duckdb_store.offline.rows(duckdb_store.catalog, duckdb_store.catalog.view(view), start, end)  # fmt: skip
    got_table, want_table = got.read_all(), want.read_all()
    assert want_table.num_rows > 100
    assert _sorted(got_table).equals(_sorted(want_table))


def test_newest_event_is_duckdbs(spark_store: FeatureStore, duckdb_store: FeatureStore) -> None:
    for view in ("user_profile", "user_last_genre", "user_stats"):
        spark = spark_store.offline.newest_event(spark_store.catalog, spark_store.catalog.view(view))  # fmt: skip
        duck = duckdb_store.offline.newest_event(duckdb_store.catalog, duckdb_store.catalog.view(view))  # fmt: skip
        assert spark == duck is not None, view


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([(name, "ascending") for name in table.column_names])


def test_materialization_writes_from_the_executors(
    tmp_path: Path, online_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule 5 on SQLite and a real Redis: online at END == the training set at END. The
    driver's own online store is never written (the executors open theirs)."""
    with FeatureStore(starter_on_spark(tmp_path / "repo", online_url)) as store:
        store.apply()

        def no_driver_writes(*args: object, **kwargs: object) -> None:
            raise AssertionError("the driver wrote to the online store")

        monkeypatch.setattr(store.online, "write_batch", no_driver_writes)
        result = store.materialize(None, END)
        assert sum(run.rows for run in result.runs) > 0
        monkeypatch.undo()
        users = pq.read_table(store.repo_path / "data" / "labels.parquet").column("user_id")
        users = sorted(set(users.to_pylist()))[:40]
        online = store.get_online_features(
            feature_service="recommender_v1", entity_rows=[{"user_id": u} for u in users], now=END
        ).to_dict()
        spine = pa.table({"user_id": users, "event_timestamp": pa.array([END] * len(users), UTC_US)})  # fmt: skip
        offline = store.get_historical_features(spine, feature_service="recommender_v1")
        expected = offline.to_arrow().to_pydict()
        for name, values in online.items():
            if name in expected and name != "user_id":
                assert values == expected[name], name


def spark_config(path: Path, **spark: object) -> RepoConfig:
    return RepoConfig(
        project="t", offline={"engine": "spark", "spark": {**SPARK, **spark}}
    ).model_copy(update={"repo_path": path})


user = Entity(name="user", join_keys=["user_id"], dtype=Int64)


def test_sql_in_the_wrong_dialect_is_refused_by_both_engines(tmp_path: Path) -> None:
    duckdb_sql = SqlSource(name="q", query="SELECT * FROM read_parquet('x.parquet')")
    spark_sql = SqlSource(name="q", query="SELECT * FROM parquet.`x.parquet`", dialect="spark")
    for source, engine, dialect in ((duckdb_sql, "spark", "duckdb"), (spark_sql, "duckdb", "spark")):  # fmt: skip
        view = FeatureView(name="v", entities=[user], source=source, schema=[Field("x", Int64)])
        catalog = Catalog.from_definitions([view])
        config = RepoConfig(project="t", offline={"engine": engine}).model_copy(
            update={"repo_path": tmp_path}
        )
        pattern = f"'v' reads SQL source 'q'.*{dialect} SQL"
        with open_offline_engine(config) as opened, pytest.raises(DefinitionError, match=pattern):
            opened.check_dialect(catalog, ["v"])
    transformed = FeatureView(
        name="t", entities=[user], source=FileSource(name="f", path="f/"),
        schema=[Field("x", Int64)], transformation="SELECT * FROM source",
    )  # fmt: skip
    pattern = r"'t': its SQL transformation.*duckdb SQL"
    with open_offline_engine(spark_config(tmp_path)) as opened, pytest.raises(DefinitionError, match=pattern):  # fmt: skip
        opened.check_dialect(Catalog.from_definitions([transformed]), ["t"])


def write_rows(folder: Path) -> None:
    folder.mkdir(parents=True)
    pq.write_table(
        pa.table({
            "user_id": pa.array([1, 1, 2], pa.int64()),
            "event_timestamp": pa.array([END - timedelta(hours=h) for h in (3, 1, 2)], UTC_US),
            "amount": [1.0, 2.0, 3.0],
        }),
        folder / "part-0.parquet",
    )  # fmt: skip


FAILING_PY = """
from almanac import batch_transformation


@batch_transformation
def explode(df):
    if len(df):
        raise ValueError("no such column: amount_usd")
    return df
"""


def test_spark_sql_and_a_failing_python_transformation(tmp_path: Path) -> None:
    write_rows(tmp_path / "rows")
    (tmp_path / "failing_fn.py").write_text(FAILING_PY)
    sys.path.insert(0, str(tmp_path))
    try:
        from failing_fn import explode  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    rows = FileSource(name="rows", path="rows/")
    doubled = FeatureView(
        name="doubled", entities=[user], source=rows, schema=[Field("twice", Float64)],
        transformation=SqlTransformation(
            "SELECT user_id, event_timestamp, amount * 2 AS twice FROM source", dialect="spark"
        ),
    )  # fmt: skip
    queried = FeatureView(
        name="queried", entities=[user], schema=[Field("amount", Float64)],
        source=SqlSource(
            name="q", dialect="spark",
            query=f"SELECT * FROM parquet.`{tmp_path / 'rows' / 'part-0.parquet'}`",
        ),
    )  # fmt: skip
    failing = FeatureView(
        name="failing", entities=[user], source=rows, schema=[Field("amount", Float64)],
        transformation=explode,
    )  # fmt: skip
    catalog = Catalog.from_definitions([doubled, queried, failing])
    spine = pa.table({"user_id": [1, 2, 3], "event_timestamp": pa.array([END] * 3, UTC_US)})
    with open_offline_engine(spark_config(tmp_path)) as engine:
        engine.check_views(catalog, ["doubled", "queried"])
        out = engine.get_historical_features(
            catalog, spine, catalog.resolve(["doubled:twice", "queried:amount"])
        ).to_arrow()
        assert out.column("twice").to_pylist() == [4.0, 6.0, None]
        assert out.column("amount").to_pylist() == [2.0, 3.0, None]
        with pytest.raises(InputError, match=r"'failing'.*no such column: amount_usd"):
            engine.get_historical_features(catalog, spine, catalog.resolve(["failing:amount"])).to_arrow()  # fmt: skip


def test_a_spark_that_cannot_start_names_the_setting(tmp_path: Path) -> None:
    # In a process of its own: this one already runs the tests' Spark.
    script = (
        "from pathlib import Path\n"
        "from almanac.config import RepoConfig\n"
        "from almanac.errors import ConfigError\n"
        "from almanac.offline import open_offline_engine\n"
        "config = RepoConfig(project='t', offline={'engine': 'spark', 'spark': "
        "{'master': 'nowhere://x:1'}}).model_copy(update={'repo_path': Path('.')})\n"
        "try:\n"
        "    open_offline_engine(config).spark\n"
        "except ConfigError as error:\n"
        "    print('ConfigError:', error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert "ConfigError: offline.spark.master: Spark cannot start with 'nowhere://x:1'" in done.stdout, done.stdout + done.stderr  # fmt: skip
    assert "at org.apache" not in done.stdout
