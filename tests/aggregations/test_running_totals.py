"""Training-set windows (running totals walked by NumPy) against DuckDB's own aggregates
over a range join: the values users get must be the SQL aggregates of the window's
events, also at the corners NumPy must get right by hand — NaN and infinities in min and
max (NaN is the greatest float, as in DuckDB), the largest and smallest integers, a
composite string key (entities numbered), points without events, tiled windows, distinct
counts of strings (numbered by a dictionary) and of integers, and sums of values far apart
in magnitude (exact, then rounded once)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from almanac.offline.duckdb import running_totals
from almanac.store import FeatureStore

BASE = datetime(2024, 5, 1, tzinfo=UTC)
FEATURES_PY = """
from almanac import (Aggregation, AggregationView, Entity, Field, FileSource, Float64,
                     Int32, Int64, String)

shop = Entity(name="shop", join_keys=["region", "shop"], dtype=String)
events = FileSource(path="data/events.parquet", timestamp_field="ts")
COLUMNS = [Field("x", Float64), Field("i", Int64), Field("s", Int32), Field("big", Float64),
           Field("tag", String)]
AGGREGATIONS = [
    Aggregation(column="x", function="max", windows=["1h", "1d"]),
    Aggregation(column="x", function="min", windows=["1h", "1d"]),
    Aggregation(column="i", function="max", windows=["1d"]),
    Aggregation(column="i", function="min", windows=["1d"]),
    Aggregation(column="s", function="min", windows=["1h"]),
    Aggregation(column="s", function="sum", windows=["1d"]),
    Aggregation(column="big", function="sum", windows=["1h", "1d"]),
    Aggregation(column="big", function="mean", windows=["1d"]),
    Aggregation(function="count", windows=["1h", "1d"]),
    Aggregation(column="tag", function="count_distinct", windows=["1h", "1d"]),
    Aggregation(column="s", function="count_distinct", windows=["1d"]),
]
exact = AggregationView(name="exact", entities=[shop], source=events, columns=COLUMNS,
                        aggregations=AGGREGATIONS)
tiled = AggregationView(name="tiled", entities=[shop], source=events, columns=COLUMNS,
                        aggregations=AGGREGATIONS, tile="1h")
"""
NAMES = {
    "x_max_1h": "max(x)", "x_max_1d": "max(x)", "x_min_1h": "min(x)", "x_min_1d": "min(x)",
    "i_max_1d": "max(i)", "i_min_1d": "min(i)", "s_min_1h": "min(s)", "s_sum_1d": "sum(s)",
    "big_sum_1h": "sum(big::DECIMAL(38, 12))", "big_sum_1d": "sum(big::DECIMAL(38, 12))",
    "big_mean_1d": "avg(big::DECIMAL(38, 12))",
    "count_1h": "count(*)", "count_1d": "count(*)",
    "tag_count_distinct_1h": "count(DISTINCT tag)", "tag_count_distinct_1d": "count(DISTINCT tag)",
    "s_count_distinct_1d": "count(DISTINCT s)",
}  # fmt: skip
KEYS = [("eu", "a"), ("eu", "b"), ("us", "a")]
I64 = (-(2**63), 2**63 - 1)
I32 = (-(2**31), 2**31 - 1)

event = st.fixed_dictionaries(
    {
        "key": st.sampled_from(KEYS[:2]),
        "minutes": st.integers(0, 48 * 60).map(lambda m: m - m % 30 if m % 3 == 0 else m),
        "x": st.one_of(
            st.none(), st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0]),
            st.floats(-1e6, 1e6, allow_nan=False),
        ),
        "i": st.one_of(st.none(), st.sampled_from(I64), st.integers(-(2**40), 2**40)),
        "s": st.one_of(st.none(), st.sampled_from(I32), st.integers(-100, 100)),
        "big": st.one_of(st.none(), st.sampled_from([1e15, -1e15, 3e-9, 0.1, 1.0])),
        "tag": st.one_of(st.none(), st.sampled_from(["a", "b", "é", ""])),
    }
)  # fmt: skip


def _lower(at: str, window: int, tile: int | None) -> str:
    """The window's far edge in epoch µs (floored to the tile), as the definition says."""
    edge = f"(epoch_us({at}) - {window})"
    return edge if tile is None else f"({edge} - ((({edge}) % {tile}) + {tile}) % {tile})"


def _reference(path: Path, view: str, tile: int | None) -> list[dict[str, Any]]:
    """DuckDB's aggregates over the events of each spine row's window."""
    hour, day = 3_600_000_000, 86_400_000_000
    select = []
    for name, aggregate in NAMES.items():
        window = hour if name.endswith("1h") else day
        inside = f"epoch_us(e.ts) > {_lower('s.event_timestamp', window, tile)}"
        select.append(f"{aggregate} FILTER (WHERE {inside}) AS {name}")
    query = f"""
        SELECT s.r, {", ".join(select)}
        FROM (SELECT *, row_number() OVER () AS r FROM read_parquet('{path}/spine.parquet')) s
        LEFT JOIN read_parquet('{path}/data/events.parquet') e
          ON s.region = e.region AND s.shop = e.shop AND e.ts <= s.event_timestamp
        GROUP BY s.r ORDER BY s.r"""
    rows = duckdb.sql(query).to_arrow_table().to_pylist()
    for row in rows:
        for name in NAMES:
            if "count" in name:
                row[name] = row[name] or 0
            elif name.startswith("big_") and row[name] is not None:
                row[name] = float(row[name])
    return rows


def _same(got: Any, want: Any, name: str) -> bool:
    if isinstance(got, float) and isinstance(want, float):
        if math.isnan(got) or math.isnan(want):
            return math.isnan(got) and math.isnan(want)
        if name.startswith("big_"):  # the reference sums decimals: 3e-9 is not exact there
            return math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-18)
        return got == want
    return bool(got == want)


# The stream in one batch, min and max by scanning each window; then in batches of 7
# rows (running sums carried across batches walked on different threads, windows spanning
# batches), min and max by blocks of 2 rows and a sparse table.
@pytest.mark.parametrize(("batch_rows", "blocked"), [(1 << 20, False), (7, True)])
# A small value between two large ones that cancel: a running double sum returns 0.125.
@example(
    drawn=[
        {"key": ("eu", "a"), "minutes": m, "x": None, "i": None, "s": None, "big": big, "tag": None}
        for m, big in ((10, 1e15), (11, 0.1), (12, -1e15))
    ],
    at=[20],
)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(drawn=st.lists(event, min_size=0, max_size=30), at=st.lists(st.integers(0, 50 * 60), min_size=1, max_size=6))  # fmt: skip
def test_windows_equal_duckdbs_aggregates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_rows: int, blocked: bool,
    drawn: list[dict[str, Any]], at: list[int],
) -> None:  # fmt: skip
    monkeypatch.setattr(running_totals, "_BATCH_ROWS", batch_rows)
    if blocked:
        monkeypatch.setattr(running_totals, "_SCAN_FACTOR", -1)
        monkeypatch.setattr(running_totals, "_BLOCK", 2)
    path = tmp_path / "repo"
    (path / "data").mkdir(parents=True, exist_ok=True)
    (path / "almanac.yaml").write_text("project: running\n")
    (path / "features.py").write_text(FEATURES_PY)
    events = {
        "region": [e["key"][0] for e in drawn],
        "shop": [e["key"][1] for e in drawn],
        "ts": [BASE + timedelta(minutes=e["minutes"]) for e in drawn],
        **{c: [e[c] for e in drawn] for c in ("x", "i", "s", "big", "tag")},
    }
    types = {"region": pa.string(), "shop": pa.string(), "ts": pa.timestamp("us", "UTC"),
             "x": pa.float64(), "i": pa.int64(), "s": pa.int32(), "big": pa.float64(),
             "tag": pa.string()}  # fmt: skip
    pq.write_table(pa.table({c: pa.array(v, types[c]) for c, v in events.items()}), path / "data" / "events.parquet")  # fmt: skip
    times = [BASE + timedelta(minutes=m) for m in at for _ in KEYS]
    spine = pa.table(
        {
            "region": [k[0] for _ in at for k in KEYS],
            "shop": [k[1] for _ in at for k in KEYS],
            "event_timestamp": pa.array(times, pa.timestamp("us", "UTC")),
        }
    )
    pq.write_table(spine, path / "spine.parquet")
    with FeatureStore(path) as store:
        store.apply()
        for view, tile in (("exact", None), ("tiled", 3_600_000_000)):
            got = store.get_historical_features(spine, [f"{view}:{n}" for n in NAMES]).to_arrow()
            want = _reference(path, view, tile)
            for r, (row, expected) in enumerate(zip(got.to_pylist(), want, strict=True)):
                for name in NAMES:
                    assert _same(row[name], expected[name], name), (
                        f"{view} row {r} {name}: {row[name]!r} != {expected[name]!r}"
                    )


def test_a_sum_over_nan_is_refused_with_the_views_name(tmp_path: Path) -> None:
    """An exact sum has no value for NaN or infinity: the user is told which view, and
    nothing is returned half computed."""
    from almanac.errors import InputError

    (tmp_path / "data").mkdir()
    (tmp_path / "almanac.yaml").write_text("project: running\n")
    (tmp_path / "features.py").write_text(FEATURES_PY)
    table = pa.table(
        {
            "region": ["eu", "eu"],
            "shop": ["a", "a"],
            "ts": pa.array([BASE, BASE + timedelta(minutes=1)], pa.timestamp("us", "UTC")),
            "x": [1.0, 2.0],
            "i": pa.array([1, 2], pa.int64()),
            "s": pa.array([1, 2], pa.int32()),
            "big": [1.0, math.nan],
            "tag": ["a", "b"],
        }
    )
    pq.write_table(table, tmp_path / "data" / "events.parquet")
    spine = pa.table(
        {
            "region": ["eu"],
            "shop": ["a"],
            "event_timestamp": pa.array([BASE + timedelta(hours=1)], pa.timestamp("us", "UTC")),
        }
    )
    with FeatureStore(tmp_path) as store:
        store.apply()
        assert store.get_historical_features(spine, ["exact:x_max_1d"]).to_arrow().column(
            "x_max_1d"
        ).to_pylist() == [2.0]
        with pytest.raises(InputError, match=r"'exact'.*NaN or infinite"):
            store.get_historical_features(spine, ["exact:big_sum_1d"]).to_arrow()


def test_a_spine_without_keys_gets_empty_windows(tmp_path: Path) -> None:
    """Spine rows whose key is null have no entity: every feature is empty (counts 0),
    frames (stddev) included, and the rows keep their order."""
    (tmp_path / "data").mkdir()
    (tmp_path / "almanac.yaml").write_text("project: running\n")
    (tmp_path / "features.py").write_text(
        FEATURES_PY + '\nspread = AggregationView(name="spread", entities=[shop], source=events, '
        'columns=COLUMNS, aggregations=[Aggregation(column="x", function="stddev", '
        'windows=["1d"]), Aggregation(function="count", windows=["1d"])])\n'
    )
    table = pa.table(
        {
            "region": ["eu"], "shop": ["a"],
            "ts": pa.array([BASE], pa.timestamp("us", "UTC")),
            "x": [1.0], "i": pa.array([1], pa.int64()), "s": pa.array([1], pa.int32()),
            "big": [1.0], "tag": ["a"],
        }
    )  # fmt: skip
    pq.write_table(table, tmp_path / "data" / "events.parquet")
    spine = pa.table(
        {
            "region": pa.array([None, None], pa.string()),
            "shop": ["a", "b"],
            "event_timestamp": pa.array([BASE, BASE], pa.timestamp("us", "UTC")),
        }
    )
    with FeatureStore(tmp_path) as store:
        store.apply()
        got = store.get_historical_features(spine, ["spread:x_stddev_1d", "spread:count_1d"])
        assert got.to_arrow().select(["shop", "x_stddev_1d", "count_1d"]).to_pylist() == [
            {"shop": "a", "x_stddev_1d": None, "count_1d": 0},
            {"shop": "b", "x_stddev_1d": None, "count_1d": 0},
        ]
