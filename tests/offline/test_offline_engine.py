"""Each offline engine on a small repo: inputs, outputs, writes, latest rows, history
(the `repo` fixture runs every test on DuckDB and on Spark)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from offline_repo import Repo, make_repo, ts

from almanac.definitions import Entity, FeatureView, Field, FileSource, Int64, SqlSource, String
from almanac.registry.catalog import Catalog

UTC_US = pa.timestamp("us", tz="UTC")


def spine(users: list[int], hours: list[float], **extra: list) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "event_timestamp": pa.array([ts(h) for h in hours], UTC_US),
            **extra,
        }
    )


def test_point_in_time_values_ties_ttl_and_order(repo: Repo) -> None:
    refs = repo.catalog.resolve(["stats:clicks", "stats:score"])
    entity = spine([1, 1, 1, 2, 3, 1, 1], [0.5, 1, 11, 6, 6, 1, 11.5], label=list("abcdefg"))
    out = repo.engine.get_historical_features(repo.catalog, entity, refs).to_arrow()
    assert out.column_names == ["user_id", "event_timestamp", "label", "clicks", "score"]
    assert out.column("label").to_pylist() == list("abcdefg")
    # ts(1) tie: created ts(3) beats ts(2); ttl 10h: ts(11) still sees ts(1) (boundary), ts(11.5) not.
    assert out.column("clicks").to_pylist() == [10, 11, 11, None, None, 11, None]
    assert out.column("score").to_pylist() == [0.5, 0.6, 0.6, 0.8, None, 0.6, None]


def test_input_kinds_give_the_same_result(repo: Repo, tmp_path: Path) -> None:
    refs = repo.catalog.resolve(["stats:clicks"])
    entity = spine([1, 2], [2, 6])
    pq.write_table(entity, tmp_path / "entities.parquet")
    inputs = [
        entity,
        entity.to_pandas(),
        pl.from_arrow(entity),
        str(tmp_path / "entities.parquet"),
        tmp_path / "entities.parquet",
        # SQL text in the engine's own dialect.
        "SELECT * FROM (VALUES (1, TIMESTAMPTZ '2024-05-01 02:00:00+00'), "
        "(2, TIMESTAMPTZ '2024-05-01 06:00:00+00')) t(user_id, event_timestamp)"
        if repo.config.offline.engine == "duckdb"
        else "SELECT * FROM VALUES (1L, TIMESTAMP '2024-05-01 02:00:00'), "
        "(2L, TIMESTAMP '2024-05-01 06:00:00') AS t(user_id, event_timestamp)",
    ]
    for data in inputs:
        out = repo.engine.get_historical_features(repo.catalog, data, refs).to_arrow()
        assert out.column("clicks").to_pylist() == [11, None], type(data)
        assert out.schema.field("event_timestamp").type.tz == "UTC"


def test_outputs(repo: Repo, tmp_path: Path) -> None:
    refs = repo.catalog.resolve(["stats:clicks"])
    job = repo.engine.get_historical_features(repo.catalog, spine([1, 2, 1], [2, 6, 0]), refs)
    assert job.to_pandas()["clicks"].tolist()[0] == 11
    assert job.to_polars()["clicks"].to_list() == [11, None, 10]
    batches = list(job.to_arrow_batches(2))
    assert sum(b.num_rows for b in batches) == 3
    path = job.to_parquet(tmp_path / "out" / "train.parquet")
    assert pq.read_table(path).equals(job.to_arrow())
    assert [p.name for p in path.parent.iterdir()] == ["train.parquet"]


def test_streamed_batches_keep_order(repo: Repo) -> None:
    n = 1000
    refs = repo.catalog.resolve(["stats:clicks"])
    entity = spine([1 + i % 3 for i in range(n)], [i % 12 for i in range(n)], label=list(range(n)))
    job = repo.engine.get_historical_features(repo.catalog, entity, refs)
    streamed = pa.Table.from_batches(list(job.to_arrow_batches(64)))
    assert streamed.column("label").to_pylist() == list(range(n))
    assert streamed.equals(job.to_arrow())


def test_empty_spine_has_the_schema(repo: Repo) -> None:
    refs = repo.catalog.resolve(["stats:clicks", "device_info:os"])
    entity = pa.table(
        {
            "user_id": pa.array([], pa.int64()),
            "device_id": pa.array([], pa.string()),
            "event_timestamp": pa.array([], UTC_US),
        }
    )
    out = repo.engine.get_historical_features(repo.catalog, entity, refs).to_arrow()
    assert out.num_rows == 0
    assert out.schema.field("clicks").type == pa.int64()
    assert out.schema.field("os").type == pa.string()


def test_timestamp_forms(repo: Repo) -> None:
    refs = repo.catalog.resolve(["stats:clicks"])
    forms = [
        pa.array([ts(2)], pa.timestamp("ns")),  # naive = UTC
        pa.array([ts(2)], pa.timestamp("ms", tz="America/New_York")),
        pa.array([ts(2)], pa.timestamp("s", tz="UTC")),
        pa.array(["2024-05-01T04:00:00+02:00"]),
        pa.array(["2024-05-01 02:00:00"]),
    ]
    for times in forms:
        entity = pa.table({"user_id": pa.array([1], pa.int64()), "event_timestamp": times})
        out = repo.engine.get_historical_features(repo.catalog, entity, refs).to_arrow()
        assert out.column("clicks").to_pylist() == [11], times.type
        assert out.column("event_timestamp").to_pylist() == [ts(2)]
    dates = pa.table(
        {"user_id": pa.array([1], pa.int64()), "event_timestamp": pa.array([ts(0).date()])}
    )
    assert repo.engine.get_historical_features(repo.catalog, dates, refs).to_arrow().column(
        "clicks"
    ).to_pylist() == [10]
    mixed = pd.DataFrame(
        {
            "user_id": [1, 1],
            "event_timestamp": [pd.Timestamp(ts(2)), pd.Timestamp("2024-05-01T04:00:00+02:00")],
        }
    )
    mixed["event_timestamp"] = mixed["event_timestamp"].astype(object)
    mixed.loc[1, "event_timestamp"] = pd.Timestamp("2024-05-01T04:00:00+02:00").to_pydatetime()
    assert repo.engine.get_historical_features(repo.catalog, mixed, refs).to_arrow().column(
        "clicks"
    ).to_pylist() == [11, 11]


def test_write_then_read_round_trip(repo: Repo) -> None:
    view = repo.view("device_info")
    refs = repo.catalog.resolve(["device_info:os"])
    entity = pa.table(
        {"device_id": ["d1", "d2"], "event_timestamp": pa.array([ts(3), ts(3)], UTC_US)}
    )
    assert repo.engine.get_historical_features(repo.catalog, entity, refs).to_arrow().column(
        "os"
    ).to_pylist() == [None, None]
    first = pd.DataFrame(
        {"device_id": ["d1", "d2"], "event_timestamp": [ts(1), ts(1)], "os": ["ios", "android"]}
    )
    assert repo.engine.write(repo.catalog, view, first) == 2
    # Same event time, later write, no created column: the later write wins the tie.
    second = pa.table(
        {"device_id": ["d1"], "event_timestamp": pa.array([ts(1)], UTC_US), "os": ["linux"]}
    )
    assert repo.engine.write(repo.catalog, view, second) == 1
    out = repo.engine.get_historical_features(repo.catalog, entity, refs).to_arrow()
    assert out.column("os").to_pylist() == ["linux", "android"]
    # Appending to a Parquet folder source works too.
    batch = pa.table(
        {
            "user_id": [3],
            "event_timestamp": pa.array([ts(4)], UTC_US),
            "clicks": [7],
            "score": [1.0],
        }
    )
    assert repo.engine.write(repo.catalog, repo.view("stats"), batch) == 1
    got = repo.engine.get_historical_features(
        repo.catalog, spine([3], [5]), repo.catalog.resolve(["stats:clicks"])
    )
    assert got.to_arrow().column("clicks").to_pylist() == [7]


def test_latest_rows_agree_with_historical_at_end(repo: Repo) -> None:
    view = repo.view("stats")
    no_ttl = view.model_copy(update={"ttl": None})
    catalog = Catalog.from_definitions([no_ttl, repo.view("device_info")])
    for end_hours in (0, 1, 4, 30):
        end = ts(end_hours)
        latest = repo.engine.latest_rows(catalog, no_ttl, None, end).read_all()
        # The created time comes along: the online store breaks event-time ties with it.
        names = ["user_id", "clicks", "score", "event_timestamp", "created_timestamp"]
        assert latest.schema.names == names
        assert latest.schema.field("event_timestamp").type == UTC_US
        assert latest.schema.field("created_timestamp").type == UTC_US
        users = sorted(latest.column("user_id").to_pylist())
        entity = spine(users, [end_hours] * len(users))
        hist = repo.engine.get_historical_features(
            catalog, entity, catalog.resolve(["stats"])
        ).to_arrow()
        want = {
            (u, c, s)
            for u, c, s in zip(
                users,
                hist.column("clicks").to_pylist(),
                hist.column("score").to_pylist(),
                strict=True,
            )
        }
        got = set(
            zip(
                latest.column("user_id").to_pylist(),
                latest.column("clicks").to_pylist(),
                latest.column("score").to_pylist(),
                strict=True,
            )
        )
        assert got == want
    window = repo.engine.latest_rows(catalog, no_ttl, ts(2), ts(30)).read_all()
    assert window.column("user_id").to_pylist() == [2]


def test_value_history(repo: Repo) -> None:
    history = repo.engine.value_history(
        repo.catalog, repo.view("stats"), {"user_id": "1"}, at=ts(4)
    )
    assert history.column_names == [
        "event_timestamp",
        "created_timestamp",
        "clicks",
        "score",
        "selected",
    ]
    assert history.column("clicks").to_pylist() == [10, 12, 11]
    assert history.column("selected").to_pylist() == [False, False, True]
    later = repo.engine.value_history(repo.catalog, repo.view("stats"), {"user_id": 1}, at=ts(20))
    assert later.column("selected").to_pylist() == [False, False, False]  # past the TTL
    assert (
        "selected"
        not in repo.engine.value_history(
            repo.catalog, repo.view("stats"), {"user_id": 1}
        ).column_names
    )


def test_sql_and_csv_sources(tmp_path: Path) -> None:
    """DuckDB SQL (tests/spark has the Spark SQL one)."""
    (tmp_path / "rows.csv").write_text(
        "user_id,event_timestamp,v\n1,2024-05-01 00:00:00,b\n1,2024-05-01 00:00:00,a\n2,2024-05-01 01:00:00,c\n"
    )
    user = Entity(name="user", join_keys=["user_id"], dtype=Int64)
    csv_view = FeatureView(
        name="c",
        entities=[user],
        source=FileSource(name="csv", path="rows.csv"),
        schema=[Field("v", String)],
    )
    sql_view = FeatureView(
        name="q",
        entities=[user],
        source=SqlSource(
            name="sql",
            query="SELECT user_id, event_timestamp, upper(v) AS w FROM read_csv('rows.csv')",
        ),
        schema=[Field("w", String)],
    )
    repo = make_repo(tmp_path / "r")
    (tmp_path / "r" / "rows.csv").write_text((tmp_path / "rows.csv").read_text())
    catalog = Catalog.from_definitions([csv_view, sql_view])
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path / "r")  # the SQL reads a relative path
    try:
        out = repo.engine.get_historical_features(
            catalog, spine([1, 2], [2, 2]), catalog.resolve(["c:v", "q:w"])
        ).to_arrow()
    finally:
        os.chdir(cwd)
        repo.engine.close()
    # Without file order, ties go to the greatest value.
    assert out.column("v").to_pylist() == ["b", "c"]
    assert out.column("w").to_pylist() == ["B", "C"]


def test_spills_under_a_small_memory_limit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, memory_limit="64MB", threads=1)
    n = 300_000
    rows = pa.table(
        {
            "user_id": pa.array([i % 50_000 for i in range(n)], pa.int64()),
            "event_timestamp": pa.array([ts((i % 97) / 10) for i in range(n)], UTC_US),
            "created": pa.array([ts(0)] * n, UTC_US),
            "clicks": pa.array(list(range(n)), pa.int64()),
            "score": pa.array([float(i) for i in range(n)]),
        }
    )
    pq.write_table(rows, tmp_path / "data" / "stats" / "part-1.parquet")
    entity = spine([i % 50_000 for i in range(n)], [9.7] * n)
    out = repo.engine.get_historical_features(
        repo.catalog, entity, repo.catalog.resolve(["stats"])
    ).to_arrow()
    repo.engine.close()
    assert out.num_rows == n
    assert out.column("clicks").null_count == 0


@pytest.mark.parametrize("hours", [timedelta(hours=1)])
def test_spine_keeps_label_types(repo: Repo, hours: timedelta) -> None:
    labels = pa.array([{"a": 1}, None], pa.struct([("a", pa.int8())]))
    entity = spine(
        [1, 2], [1, 2], label=pa.DictionaryArray.from_arrays([0, 1], ["x", "y"]), extra=labels
    )
    out = repo.engine.get_historical_features(
        repo.catalog, entity, repo.catalog.resolve(["stats:clicks"])
    ).to_arrow()
    assert out.schema.field("label").type == entity.schema.field("label").type
    assert out.column("extra").equals(entity.column("extra"))
