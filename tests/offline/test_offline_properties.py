"""Property tests: each offline engine (DuckDB, Spark) against the brute-force reference
of rule 2 — the same generated cases, Spark on fewer of them (a JVM job per call).

Generated data has exact ties (same event time, with and without created time, created
time null), rows out of order across several files, null feature values, duplicate and
unknown entity rows, TTL boundaries hit exactly (all times are whole minutes), entity
timestamps in several zones and precisions (and naive), int64, string and composite keys,
and two views on different entities, one of them written through `engine.write` (and
its two files compacted into one, which must change nothing).
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from offline_reference import expected_features, winner
from offline_repo import engine_config

from almanac.definitions import (
    Entity,
    FeatureView,
    Field,
    FileSource,
    Float64,
    Int64,
    PushSource,
    String,
)
from almanac.offline import open_offline_engine
from almanac.offline.compaction import compact
from almanac.offline.files import list_files
from almanac.registry.catalog import Catalog

BASE = datetime(2024, 3, 1, tzinfo=UTC)
SOURCE_TIME_TYPES = [
    pa.timestamp("us", tz="UTC"),
    pa.timestamp("ns"),  # naive = UTC
    pa.timestamp("ms", tz="Europe/Paris"),
]
SPINE_FORMATS = [
    "arrow_us_utc",
    "arrow_ns_naive",
    "arrow_s_kolkata",
    "pandas_utc",
    "pandas_naive",
    "pandas_paris",
    "polars",
    "text_offsets",
    "parquet_path",
]
FEATURE_SETS = [
    ["user:a_num", "shop:b_cnt", "user:a_txt"],  # interleaved views
    ["user:a_txt", "user:a_num"],
    ["shop:b_cnt", "user:a_num"],
]
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
SPARK_SETTINGS = settings(SETTINGS, max_examples=6)


def at(minute: int) -> datetime:
    return BASE + timedelta(minutes=minute)


# Few distinct times and keys, so ties and exact TTL boundaries are common.
maybe_minutes = st.none() | st.integers(1, 4).map(lambda m: timedelta(minutes=m))
created = st.none() | st.integers(0, 2).map(at)


@st.composite
def user_rows(draw: Any, int_keys: bool, has_created: bool) -> list[dict[str, Any]]:
    keys = st.integers(0, 2) if int_keys else st.sampled_from(["a", "ü", "c d"])
    row = st.fixed_dictionaries(
        {
            "user_id": keys,
            "e": st.integers(0, 5).map(at),
            "c": created if has_created else st.none(),
            "a_num": st.none() | st.sampled_from([0.0, 1.5, -2.0, 3.25, 7.0]),
            "a_txt": st.none() | st.sampled_from(["x", "y", "zz"]),
        }
    )
    return draw(st.lists(row, min_size=3, max_size=16))


@st.composite
def shop_rows(draw: Any, has_created: bool) -> list[dict[str, Any]]:
    row = st.fixed_dictionaries(
        {
            "shop_id": st.sampled_from(["s1", "s2"]),
            "region": st.integers(1, 2),
            "e": st.integers(0, 5).map(at),
            "c": created if has_created else st.none(),
            "b_cnt": st.none() | st.integers(-3, 3),
        }
    )
    return draw(st.lists(row, max_size=12))


def arrow_rows(
    rows: list[dict[str, Any]], columns: dict[str, pa.DataType], times: pa.DataType
) -> pa.Table:
    data = {}
    for name, kind in columns.items():
        source = {"event_timestamp": "e", "created": "c"}.get(name, name)
        values = [row[source] for row in rows]
        if name in ("event_timestamp", "created"):
            data[name] = pa.array(values, pa.timestamp("us", tz="UTC")).cast(times)
        else:
            data[name] = pa.array(values, kind)
    return pa.table(data)


def spine_input(spine: list[dict[str, Any]], fmt: str, folder: Path, int_keys: bool) -> Any:
    times = pa.array([row["T"] for row in spine], pa.timestamp("us", tz="UTC"))
    table = pa.table(
        {
            "user_id": pa.array(
                [row["user_id"] for row in spine], pa.int64() if int_keys else pa.string()
            ),
            "shop_id": pa.array([row["shop_id"] for row in spine], pa.string()),
            "region": pa.array([row["region"] for row in spine], pa.int64()),
            "event_timestamp": times,
            "label": pa.array([row["label"] for row in spine], pa.int64()),
        }
    )
    if fmt == "arrow_us_utc":
        return table
    if fmt == "arrow_ns_naive":
        return table.set_column(3, "event_timestamp", times.cast(pa.timestamp("ns")))
    if fmt == "arrow_s_kolkata":
        return table.set_column(
            3, "event_timestamp", times.cast(pa.timestamp("s", tz="Asia/Kolkata"))
        )
    if fmt == "polars":
        return pl.from_arrow(table)
    if fmt == "text_offsets":
        # Each row in a different zone, as text: the same instants.
        zones = [timedelta(hours=h) for h in (0, 5, -3, 9)]
        text = [
            (row["T"].astimezone(__import__("datetime").timezone(zones[i % 4]))).isoformat()
            for i, row in enumerate(spine)
        ]
        return table.set_column(3, "event_timestamp", pa.array(text, pa.string()))
    if fmt == "parquet_path":
        path = folder / "spine.parquet"
        pq.write_table(table, path)
        return str(path)
    df = table.to_pandas()
    if fmt == "pandas_naive":
        df["event_timestamp"] = df["event_timestamp"].dt.tz_convert(None)
    elif fmt == "pandas_paris":
        df["event_timestamp"] = df["event_timestamp"].dt.tz_convert("Europe/Paris")
    return df


@SETTINGS
@given(data=st.data())
def test_engine_matches_reference(data: st.DataObject) -> None:
    check_engine(data, "duckdb")


@pytest.mark.spark  # on the worker that runs every Spark test (tests/conftest.py)
@SPARK_SETTINGS
@given(data=st.data())
def test_spark_engine_matches_reference(data: st.DataObject) -> None:
    check_engine(data, "spark")


def check_engine(data: st.DataObject, engine_name: str) -> None:
    int_keys = data.draw(st.booleans(), "int keys")
    a_created = data.draw(st.booleans(), "a has created")
    b_created = data.draw(st.booleans(), "b has created")
    a_rows = data.draw(user_rows(int_keys, a_created), "a rows")
    b_rows = data.draw(shop_rows(b_created), "b rows")
    a_ttl = data.draw(maybe_minutes, "a ttl")
    b_ttl = data.draw(maybe_minutes, "b ttl")
    a_files = data.draw(st.integers(1, 3), "a files")
    b_batches = data.draw(st.integers(0, 2), "b batches (0: a single file source)")
    time_type = data.draw(st.sampled_from(SOURCE_TIME_TYPES), "source time type")
    key_values = st.integers(0, 3) if int_keys else st.sampled_from(["a", "ü", "c d", "zz"])
    spine_row = st.fixed_dictionaries(
        {
            "user_id": key_values,
            "shop_id": st.sampled_from(["s1", "s2", "s9"]),
            "region": st.integers(1, 3),
            "T": st.integers(0, 9).map(at),
        }
    )
    spine = data.draw(st.lists(spine_row, min_size=1, max_size=12), "spine")
    spine = spine + spine[: data.draw(st.integers(0, 3), "duplicates")]
    for i, row in enumerate(spine):
        row["label"] = i
    fmt = data.draw(st.sampled_from(SPINE_FORMATS), "spine format")
    wanted = data.draw(st.sampled_from(FEATURE_SETS), "features")

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        config = engine_config(engine_name, repo)
        user = Entity(name="user_e", join_keys=["user_id"], dtype=Int64 if int_keys else String)
        shop = Entity(name="shop_e", join_keys={"shop_id": String, "region": Int64})
        created_a = "created" if a_created else None
        created_b = "created" if b_created else None
        user_view = FeatureView(
            name="user",
            entities=[user],
            source=FileSource(name="a_src", path="a/", created_timestamp_field=created_a),
            schema=[Field("a_num", Float64), Field("a_txt", String)],
            ttl=a_ttl,
        )
        shop_source: Any = (
            FileSource(name="b_src", path="b.parquet", created_timestamp_field=created_b)
            if b_batches == 0
            else PushSource(name="b_src", created_timestamp_field=created_b)
        )
        shop_view = FeatureView(
            name="shop",
            entities=[shop],
            source=shop_source,
            schema=[Field("b_cnt", Int64)],
            ttl=b_ttl,
        )
        catalog = Catalog.from_definitions([user_view, shop_view])

        # View a: rows split over files in order; file order = list order.
        for i, row in enumerate(a_rows):
            row["order"] = i
        columns_a = {"user_id": pa.int64() if int_keys else pa.string(), "event_timestamp": None}
        if a_created:
            columns_a["created"] = None
        columns_a |= {"a_num": pa.float64(), "a_txt": pa.string()}
        (repo / "a").mkdir()
        cuts = sorted(
            data.draw(
                st.lists(st.integers(0, len(a_rows)), min_size=a_files - 1, max_size=a_files - 1),
                "cuts",
            )
        )
        bounds = [0, *cuts, len(a_rows)]
        for i in range(a_files):
            part = a_rows[bounds[i] : bounds[i + 1]]
            if part or i == 0:
                pq.write_table(
                    arrow_rows(part, columns_a, time_type), repo / "a" / f"{i:02d}.parquet"
                )

        for i, row in enumerate(b_rows):
            row["order"] = i
        columns_b = {"shop_id": pa.string(), "region": pa.int64(), "event_timestamp": None}
        if b_created:
            columns_b["created"] = None
        columns_b["b_cnt"] = pa.int64()
        engine = open_offline_engine(config)
        try:
            if b_batches == 0:
                pq.write_table(arrow_rows(b_rows, columns_b, time_type), repo / "b.parquet")
            else:
                cut = len(b_rows) // 2 if b_batches == 2 else len(b_rows)
                for part in (b_rows[:cut], b_rows[cut:]):
                    batch = arrow_rows(part, columns_b, time_type)
                    assert engine.write(
                        catalog, shop_view, batch.to_pandas() if cut % 2 else batch
                    ) == len(part)

            refs = catalog.resolve(wanted)
            job = engine.get_historical_features(
                catalog, spine_input(spine, fmt, repo, int_keys), refs
            )
            result = job.to_arrow()

            views = []
            for name, rows, ttl, keys in (
                ("user", a_rows, a_ttl, ["user_id"]),
                ("shop", b_rows, b_ttl, ["shop_id", "region"]),
            ):
                features = {r.field.name: r.output_name for r in refs if r.view == name}
                views.append({"rows": rows, "keys": keys, "ttl": ttl, "features": features})
            expected = expected_features(spine, views)

            assert result.num_rows == len(spine)
            assert result.column("label").to_pylist() == [row["label"] for row in spine]
            assert result.schema.field("event_timestamp").type.tz == "UTC"
            assert result.column("event_timestamp").to_pylist() == [row["T"] for row in spine]
            got = result.select([r.output_name for r in refs]).to_pylist()
            assert got == expected
            if b_batches == 2:
                # Compacting the push source's log changes no training set (file order kept).
                files = len(list_files(config, shop_source)[0])  # an empty batch writes none
                done = compact(config, shop_source, min_age=timedelta(0))
                assert done.merged_files == (files if files > 1 else 0)
                assert len(list_files(config, shop_source)[0]) == min(files, 1)
                again = engine.get_historical_features(
                    catalog, spine_input(spine, fmt, repo, int_keys), refs
                ).to_arrow()
                assert again.select([r.output_name for r in refs]).to_pylist() == expected

            # latest_rows at `end` agrees with rule 2 at `end` (no TTL), from `start`.
            end = at(data.draw(st.integers(0, 9), "end"))
            start = data.draw(st.none() | st.integers(0, 9).map(at), "start")
            if start is not None and start > end:
                start, end = end, start
            latest = engine.latest_rows(catalog, user_view, start, end).read_all().to_pylist()
            keys = sorted({row["user_id"] for row in a_rows}, key=str)
            want = []
            for key in keys:
                row = winner(a_rows, {"user_id": key}, end, None, start)
                if row is not None:
                    want.append(
                        {
                            "user_id": key,
                            "a_num": row["a_num"],
                            "a_txt": row["a_txt"],
                            "event_timestamp": row["e"],
                            **({"created_timestamp": row["c"]} if a_created else {}),
                        }
                    )
            assert sorted(latest, key=lambda r: str(r["user_id"])) == want

            # value_history: the whole timeline in rule-2 order, the selected row marked.
            if a_rows:
                key = a_rows[0]["user_id"]
                moment = at(data.draw(st.integers(0, 9), "history at"))
                history = engine.value_history(
                    catalog, user_view, {"user_id": key}, at=moment
                ).to_pylist()
                mine = [row for row in a_rows if row["user_id"] == key]
                mine.sort(
                    key=lambda r: (r["e"], r["c"] or datetime.min.replace(tzinfo=UTC), r["order"])
                )
                assert [h["a_num"] for h in history] == [r["a_num"] for r in mine]
                assert [h["event_timestamp"] for h in history] == [r["e"] for r in mine]
                chosen = winner(a_rows, {"user_id": key}, moment, a_ttl)
                marked = [i for i, h in enumerate(history) if h["selected"]]
                assert marked == ([] if chosen is None else [mine.index(chosen)])
        finally:
            engine.close()


def test_reference_breaks_ties_as_documented() -> None:
    rows = [
        {"k": 1, "e": at(1), "c": None, "order": 0, "v": "old"},
        {"k": 1, "e": at(2), "c": at(1), "order": 1, "v": "created later"},
        {"k": 1, "e": at(2), "c": at(0), "order": 2, "v": "created earlier"},
        {"k": 1, "e": at(2), "c": None, "order": 3, "v": "no created"},
    ]
    assert winner(rows, {"k": 1}, at(5), None)["v"] == "created later"
    assert winner(rows, {"k": 1}, at(1), None)["v"] == "old"
    assert winner(rows, {"k": 1}, at(6), timedelta(minutes=3)) is None
    assert winner(rows, {"k": 1}, at(5), timedelta(minutes=3))["v"] == "created later"  # boundary
    assert winner(rows, {"k": 1}, at(4), timedelta(minutes=3))["v"] == "created later"
    pd.Timestamp(0)  # pandas and polars are imported for the spine formats
