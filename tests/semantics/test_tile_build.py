"""`build_tiles` (in process) builds the blobs the DuckDB engine's `tiles_of_rows` builds
in SQL, for random rows: ties, out-of-order and pre-1970 times, nulls (in values, keys
and times), several entities, composite keys, exact and tiled views, every function
over every input dtype the definitions allow. Blobs are compared parsed: exactly, except
float sums, means and M2, which are summed in another order (to rounding)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from almanac import Aggregation, AggregationView, Entity, Field, PushSource
from almanac.config import RepoConfig
from almanac.offline import open_offline_engine
from almanac.ports.offline import OfflineEngine
from almanac.registry.catalog import Catalog
from almanac.semantics.tile_build import build_tiles

US = pa.timestamp("us", tz="UTC")
HOUR = 3_600_000_000
MIN_TS = -62_135_596_800_000_000  # 0001-01-01
MAX_TS = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999

SOURCE = PushSource(name="events", timestamp_field="ts")
PAIR = Entity(name="pair", join_keys={"k": "int64", "s": "string"})
USER = Entity(name="user", join_keys={"u": "int64"})

# Every function each input dtype allows (definitions/aggregation.py's _ACCEPTS).
NUMERIC = ["count", "sum", "mean", "stddev", "variance", "min", "max", "last", "count_distinct"]
FUNCTIONS = {
    "f64": ("float64", NUMERIC),
    "f32": ("float32", NUMERIC),
    "i64": ("int64", NUMERIC),
    "i32": ("int32", NUMERIC),
    "txt": ("string", ["count", "min", "max", "last", "count_distinct"]),
    "flag": ("bool", ["count", "last", "count_distinct"]),
    "when": ("timestamp", ["count", "min", "max", "last", "count_distinct"]),
    "raw": ("bytes", ["count", "count_distinct"]),
    "only_n": ("float64", ["count"]),  # a column whose only state is its count
}
ARROW = {"float64": pa.float64(), "float32": pa.float32(), "int64": pa.int64(),
         "int32": pa.int32(), "string": pa.string(), "bool": pa.bool_(), "timestamp": US,
         "bytes": pa.binary()}  # fmt: skip


def _every_function(tile: str | None) -> AggregationView:
    aggregations = [Aggregation(function="count", windows=["2h"])]
    for column, (_, functions) in FUNCTIONS.items():
        aggregations += [Aggregation(column=column, function=f, windows=["2h"]) for f in functions]
    return AggregationView(
        name="every", entities=[PAIR], source=SOURCE, tile=tile, aggregations=aggregations,
        columns=[Field(column, dtype) for column, (dtype, _) in FUNCTIONS.items()],
    )  # fmt: skip


def _counts_only(tile: str | None) -> AggregationView:  # a blob without "c"
    return AggregationView(
        name="counts", entities=[USER], source=SOURCE, tile=tile,
        aggregations=[Aggregation(function="count", windows=["2h", "1d"])],
    )  # fmt: skip


TILES = [None, "1h", "7m"]
VIEWS = {(make.__name__, tile): make(tile) for make in (_every_function, _counts_only) for tile in TILES}  # fmt: skip
CATALOGS = {key: Catalog.from_definitions([view]) for key, view in VIEWS.items()}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OfflineEngine]:
    path: Path = tmp_path_factory.mktemp("engine")
    yield open_offline_engine(RepoConfig(project="t").model_copy(update={"repo_path": path}))


# ---- random rows ----------------------------------------------------------------------------


def _weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each `weight` times as likely (`st.one_of` drops equal ones:
    listing a strategy twice does not weigh it)."""
    return st.sampled_from([c for weight, c in choices for _ in range(weight)]).flatmap(lambda c: c)  # fmt: skip


# Times that tie (often: the latest value's tie-break needs several rows at one time),
# straddle tile edges and the epoch, plus any within ±300 years.
TIMES = _weighted(
    (4, st.sampled_from([-1, 0, HOUR - 1, HOUR])),
    (1, st.sampled_from([1, -HOUR, 1_800_000_000, -5, 1_709_251_200_000_000])),
    (2, st.integers(-3 * HOUR, 3 * HOUR)),
    (1, st.integers(-(10**16), 10**16)),
)
FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 0.1, 1.5, -2.25, 1e6]), st.floats(-1e6, 1e6, allow_nan=False)
)
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "float64": FLOATS,
    "float32": st.floats(-1e6, 1e6, allow_nan=False, width=32),
    # Small values tie; any int64 makes sums leave int64 (exact, as SQL's HUGEINT).
    "int64": st.one_of(st.integers(-3, 3), st.integers(-(2**63), 2**63 - 1)),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "string": st.text(alphabet="ab\u00e9\U0001f600", max_size=3),
    "bool": st.booleans(),
    "timestamp": st.one_of(st.integers(-2, 2), st.integers(MIN_TS, MAX_TS)),
    "bytes": st.binary(max_size=3),
}


@st.composite
def rows(draw: st.DrawFn) -> pa.Table:
    size = draw(st.integers(0, 30))

    def column(values: st.SearchStrategy[Any], nulls: int = 2) -> list[Any]:
        """`size` values, null one time in `nulls` (never when 0). Drawn one by one, with
        the null picked as `_weighted` picks (one index of `nulls`): the same values as
        `st.lists(_weighted(...), min_size=size, max_size=size)` at half the cost of
        generating them, which was half of this test's time."""
        if not nulls:
            return [draw(values) for _ in range(size)]
        pick = st.integers(0, nulls - 1)
        return [None if draw(pick) == nulls - 1 else draw(values) for _ in range(size)]

    # Keys and times are rarely null (such rows are dropped: a few are enough).
    data: dict[str, pa.Array] = {
        "k": pa.array(column(st.integers(1, 3), nulls=10), pa.int64()),
        "s": pa.array(column(st.sampled_from(["a", ""]), nulls=10), pa.string()),
        "u": pa.array(column(st.integers(-2, 2), nulls=0), pa.int64()),
        "ts": pa.array(column(TIMES, nulls=10), US),
    }
    for name, (dtype, _) in FUNCTIONS.items():
        data[name] = pa.array(column(VALUES[dtype]), ARROW[dtype])
    return pa.table(data)


# ---- comparing blobs ----------------------------------------------------------------------


def _by_entity(table: pa.Table, keys: list[str]) -> dict[tuple[Any, ...], tuple[Any, Any]]:
    out = {}
    for row in table.to_pylist():
        # json, not orjson: sums beyond 64 bits stay exact integers.
        out[tuple(row[k] for k in keys)] = (row["event_timestamp"], json.loads(row["tiles"]))
    return out


def _close(a: Any, b: Any, scale: float) -> bool:
    """Equal to rounding: a sum of n values of magnitude up to M, in any order, is within
    about n·M·2⁻⁵² of the exact one; `scale` is that bound's n·M (n·M² for M2)."""
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=scale * 2**-48)


def _assert_same_blob(got: dict[str, Any], want: dict[str, Any], rows: pa.Table, where: str) -> None:  # fmt: skip
    assert got.keys() == want.keys(), where
    for key in ("g", "b", "n"):
        assert got[key] == want[key], f"{where}: {key}"
    for column, states in want.get("c", {}).items():
        mine = got["c"][column]
        assert mine.keys() == states.keys(), f"{where}: states of {column}"
        numeric = FUNCTIONS[column][0] in ("float64", "float32", "int64", "int32")
        values_in = rows.column(column).to_pylist() if numeric else []
        magnitude = max((abs(float(v)) for v in values_in if v is not None), default=0.0)
        size = rows.num_rows
        for state, values in states.items():
            at = f"{where}: {column}.{state}"
            assert len(mine[state]) == len(values), at
            for i, (x, y) in enumerate(zip(mine[state], values, strict=True)):
                if state == "d":  # a set; JSON writes it in any order
                    assert set(x) == set(y) and len(set(x)) == len(x), f"{at}[{i}]: {x} != {y}"
                elif state in ("s", "m") and FUNCTIONS[column][0].startswith("float"):
                    assert _close(x, y, size * magnitude), f"{at}[{i}]: {x} != {y}"
                elif state == "m":  # the mean of integers: an exact sum, divided
                    assert _close(x, y, magnitude), f"{at}[{i}]: {x} != {y}"
                elif state == "q":
                    assert _close(x, y, size * size * magnitude**2), f"{at}[{i}]: {x} != {y}"
                else:  # counts, integer sums, min, max, latest: exactly
                    assert x == y and type(x) is type(y), f"{at}[{i}]: {x!r} != {y!r}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(table=rows(), key=st.sampled_from(sorted(VIEWS, key=str)))
def test_build_tiles_equals_the_engines_tiles(engine: OfflineEngine, table: pa.Table,
                                              key: tuple[str, str | None]) -> None:  # fmt: skip
    view, catalog = VIEWS[key], CATALOGS[key]
    join_keys = catalog.join_keys(view)
    columns = [*join_keys, "ts", *(a.column for a in view.aggregations if a.column)]
    batch = table.select(list(dict.fromkeys(columns)))
    want = engine.tiles_of_rows(catalog, view, batch)
    got = build_tiles(view, join_keys, "ts", batch)
    assert got.schema == want.schema
    assert got.num_rows == want.num_rows
    mine, theirs = _by_entity(got, list(join_keys)), _by_entity(want, list(join_keys))
    assert mine.keys() == theirs.keys()
    for entity, (latest, blob) in theirs.items():
        where = f"{key} entity {entity}"
        assert mine[entity][0] == latest, where
        # The float tolerances need only a bound over the whole batch.
        _assert_same_blob(mine[entity][1], blob, batch, where)


def test_an_empty_batch_has_no_tiles(engine: OfflineEngine) -> None:
    key = ("_every_function", "1h")
    view, catalog = VIEWS[key], CATALOGS[key]
    fields = [pa.field(k, pa.int64() if k == "k" else pa.string()) for k in ("k", "s")]
    fields.append(pa.field("ts", US))
    fields += [pa.field(c, ARROW[d]) for c, (d, _) in FUNCTIONS.items()]
    batch = pa.schema(fields).empty_table()
    got = build_tiles(view, catalog.join_keys(view), "ts", batch)
    want = engine.tiles_of_rows(catalog, view, batch)
    assert got.schema == want.schema and got.num_rows == want.num_rows == 0


def test_times_before_1970_fall_in_the_tile_below() -> None:
    """Floor, not truncation: -1 µs is in the tile (-1h, 0], -1h in (-2h, -1h]."""
    view = VIEWS[("_counts_only", "1h")]
    batch = pa.table({"u": pa.array([1, 1, 1], pa.int64()), "ts": pa.array([-1, -HOUR, 1], US)})
    blob = json.loads(build_tiles(view, {"u": "int64"}, "ts", batch).column("tiles")[0].as_py())
    assert blob == {"g": HOUR, "b": [-HOUR, 0, HOUR], "n": [1, 1, 1]}
    assert build_tiles(view, {"u": "int64"}, "ts", batch).column("event_timestamp")[0].as_py() == datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)  # fmt: skip


def test_floats_summing_beyond_double_are_infinity_as_in_sql(engine: OfflineEngine) -> None:
    """Finite values (all a push accepts) can sum past the largest double: the blob says
    Infinity, as DuckDB's does, where orjson would write null (an empty tile)."""
    key = ("_every_function", None)
    view, catalog = VIEWS[key], CATALOGS[key]
    size = 3
    data: dict[str, pa.Array] = {"k": pa.array([1] * size, pa.int64()), "s": pa.array(["a"] * size),
                                 "ts": pa.array([0, 0, 1], US)}  # fmt: skip
    for name, (dtype, _) in FUNCTIONS.items():
        values = {"float64": [1e308, 1e308, -1e308], "float32": [3e38, 3e38, 1.0]}.get(dtype)
        data[name] = pa.array(values or [None] * size, ARROW[dtype])
    batch = pa.table(data)
    got = json.loads(build_tiles(view, catalog.join_keys(view), "ts", batch).column("tiles")[0].as_py())  # fmt: skip
    want = json.loads(engine.tiles_of_rows(catalog, view, batch).column("tiles")[0].as_py())
    assert got["c"]["f64"]["s"] == want["c"]["f64"]["s"] == [math.inf, -1e308]
    assert got["c"]["f64"]["m"] == want["c"]["f64"]["m"]
