"""No skew for pushes over every input dtype: part of the events materialized (tiles from
DuckDB's SQL), the rest pushed in batches (tiles from `build_tiles`, merged into the
stored ones), late events included; then the online value at R equals
`get_historical_features` at R for every function, column and window, exact and tiled.
The two kinds of blob must agree value for value (a distinct timestamp, bytes or float32
materialized and pushed again counts once), which the float64/int64/string suites of
tests/aggregations do not reach."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from almanac.online.retrieval import get_online_features
from almanac.store import FeatureStore

BASE = datetime(2024, 3, 1, tzinfo=UTC)
US = pa.timestamp("us", tz="UTC")
COLUMNS = {  # column: (dtype, functions over it, the values events take)
    "f64": ("float64", "count sum mean stddev variance min max last count_distinct", [0.5, -3.0, 1e6, 0.1]),
    "f32": ("float32", "sum mean stddev min max last count_distinct", [0.1, 2.5, -7.75]),
    "i64": ("int64", "sum mean variance min max last count_distinct", [-5, 7, 2**40]),
    "i32": ("int32", "sum stddev min max last count_distinct", [1, -2, 2**31 - 1]),
    "txt": ("string", "count min max last count_distinct", ["a", "\u00e9", ""]),
    "flag": ("bool", "last count_distinct", [True, False]),
    "when": ("timestamp", "min max last count_distinct", [
        datetime(1, 1, 1, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, 59, 999_980, tzinfo=UTC),
        datetime(2024, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC),
    ]),
    "raw": ("bytes", "count count_distinct", [b"", b"\x00\xff", b"xy"]),
}  # fmt: skip
ARROW = {"float64": pa.float64(), "float32": pa.float32(), "int64": pa.int64(),
         "int32": pa.int32(), "string": pa.string(), "bool": pa.bool_(), "timestamp": US,
         "bytes": pa.binary()}  # fmt: skip
AGGREGATIONS = ['Aggregation(function="count", windows=["2h", "1d"])'] + [
    f'Aggregation(column="{column}", function="{function}", windows=["2h", "1d"])'
    for column, (_, functions, _) in COLUMNS.items()
    for function in functions.split()
]
FIELDS = ", ".join(f'Field("{column}", "{dtype}")' for column, (dtype, _, _) in COLUMNS.items())
FEATURES_PY = f"""
from almanac import Aggregation, AggregationView, Entity, Field, PushSource
pair = Entity(name="pair", join_keys={{"k": "int64", "s": "string"}})
events = PushSource(name="events", timestamp_field="ts")
AGGREGATIONS = [{", ".join(AGGREGATIONS)}]
exact = AggregationView(name="exact", entities=[pair], source=events, columns=[{FIELDS}],
                        aggregations=AGGREGATIONS)
tiled = AggregationView(name="tiled", entities=[pair], source=events, columns=[{FIELDS}],
                        aggregations=AGGREGATIONS, tile="1h")
"""
VIEWS = ["exact", "tiled"]
ENTITIES = [(1, "a"), (1, ""), (2, "a")]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeatureStore]:
    (tmp_path / "almanac.yaml").write_text("project: dtypes\nonline:\n  url: sqlite:///.almanac/online.db\n")  # fmt: skip
    (tmp_path / "features.py").write_text(FEATURES_PY)
    made = FeatureStore(tmp_path)
    made.apply()
    yield made
    made.close()


def _value(column: str) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.sampled_from(COLUMNS[column][2]))


event = st.fixed_dictionaries(
    {
        "entity": st.sampled_from(ENTITIES),
        # Seconds on a grid (ties, tile edges) or anywhere within six hours.
        "seconds": st.one_of(
            st.sampled_from([0, 1, 3599, 3600, 5400, 7200]), st.integers(0, 6 * 3600)
        ),
        **{column: _value(column) for column in COLUMNS},
    }
)


def _frame(events: list[dict[str, Any]]) -> pa.Table:
    data = {
        "k": pa.array([e["entity"][0] for e in events], pa.int64()),
        "s": pa.array([e["entity"][1] for e in events], pa.string()),
        "ts": pa.array([BASE + timedelta(seconds=e["seconds"]) for e in events], US),
    }
    for column, (dtype, _, _) in COLUMNS.items():
        data[column] = pa.array([e[column] for e in events], ARROW[dtype])
    return pa.table(data)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(
    drawn=st.lists(event, min_size=2, max_size=30),
    split=st.integers(0, 30),
    batches=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_pushed_tiles_of_every_dtype_agree_with_training_sets(
    store: FeatureStore, drawn: list[dict[str, Any]], split: int, batches: int, seed: int
) -> None:
    rng = random.Random(seed)
    events = list(drawn)
    rng.shuffle(events)
    for view in VIEWS:  # hypothesis reuses the store: start from nothing
        store.online.delete_view(store.project, view)
    for path in store.config.resolve_path(store.config.offline.data_path).glob("events/*"):
        path.unlink()
    materialized, pushed = events[: split % len(events)], events[split % len(events) :]
    if materialized:
        store.push("events", _frame(materialized), to="offline")
        end = BASE + timedelta(seconds=max(e["seconds"] for e in materialized))
        store.materialize(None, end, VIEWS)
    # The rest arrives in batches, out of order: some older than what was materialized.
    size = max(1, -(-len(pushed) // batches))
    for start in range(0, len(pushed), size):
        store.push("events", _frame(pushed[start : start + size]))

    latest = BASE + timedelta(seconds=max(e["seconds"] for e in events))
    times = [latest, latest + timedelta(hours=1, microseconds=1), latest + timedelta(hours=23)]
    spine = pd.DataFrame({"k": [k for _ in times for k, _ in ENTITIES],
                          "s": [s for _ in times for _, s in ENTITIES],
                          "event_timestamp": [t for t in times for _ in ENTITIES]})  # fmt: skip
    offline = store.get_historical_features(spine, VIEWS, full_feature_names=True).to_arrow()
    expected = offline.to_pylist()
    rows = [{"k": k, "s": s} for k, s in ENTITIES]
    for i, at in enumerate(times):
        online = get_online_features(store, VIEWS, rows, now=at, full_feature_names=True)
        values = online.to_dict()
        for name in offline.column_names:
            if "__" not in name:
                continue  # the spine's columns
            for j, entity in enumerate(ENTITIES):
                want, got = expected[i * len(ENTITIES) + j][name], values[name][j]
                assert _same(got, want), f"{name} {entity} at {at}: online {got!r} != offline {want!r}"  # fmt: skip
