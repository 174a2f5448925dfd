"""Building the tiles of a batch of event rows in process: no engine query.

A push to an aggregation view's source merges the tiles of its rows into each entity's
stored blob (`almanac.semantics.tiles.merge_blobs`). `build_tiles` computes those tiles
with Arrow and numpy, so a push costs no engine query (a DuckDB query today, a Spark job
on the Spark engine). It returns what `OfflineEngine.tiles_of_rows` returns: per entity
the join keys, ``event_timestamp`` (its latest event time) and ``tiles`` (the blob, see
`almanac.semantics.tiles`), with the states that materialization writes (`STATES`), so
that pushed and materialized blobs have one layout and merge.

How. One sort of the rows by (keys, tile end) makes every tile a run of consecutive rows
and every entity a run of tiles. Row counts, non-null counts, sums and moments are numpy
reductions over the runs (`reduceat`); min, max, the distinct values and the latest
value's tie-break are one Arrow hash aggregation by run number. Python loops only over
entities, to slice each blob's lists out of whole-batch ones and serialize it (orjson).

The states, value for value those of the SQL (`offline.duckdb.aggregations`):

* ``n`` non-null count; ``s`` sum (integers exact, also beyond int64 as SQL's HUGEINT
  sums are; floats in double); ``m`` mean (``s / n``, as SQL's avg); ``q`` M2, the sum of
  squared deviations from the mean (SQL: ``var_pop * n``);
* ``lo``, ``hi`` min and max; ``l`` ``{"t": µs, "v": value}`` of the latest non-null
  value (ties: the greatest value); ``d`` the distinct non-null values.

Values are in the forms the SQL gives JSON: timestamps as epoch microseconds, float32
widened exactly to double. In ``d`` only, bytes are base64 and timestamps are text as
DuckDB renders a TIMESTAMPTZ in UTC (``2024-01-01 00:00:00.5+00``): blobs materialized
by DuckDB hold them so, and a pushed value must be the same JSON value as a materialized
one to be counted once when the two blobs merge.

Float states (s, m, q) agree with the SQL's to rounding (the sums run in another
order), which is what `tiles` promises already; everything else is equal.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from almanac.definitions.aggregation import AggregationView
from almanac.definitions.types import arrow_type
from almanac.semantics.rows import EVENT_TIMESTAMP
from almanac.semantics.tiles import STATES, TILES_FEATURE

UTC_US = pa.timestamp("us", tz="UTC")
_US = timedelta(microseconds=1)
_INT64_MIN = np.iinfo(np.int64).min


def tile_states(view: AggregationView) -> dict[str, set[str]]:
    """Per aggregated column (in the order the aggregations name them), its states."""
    out: dict[str, set[str]] = {}
    for aggregation in view.aggregations:
        if aggregation.column is not None:
            out.setdefault(aggregation.column, set()).update(STATES[aggregation.function])
    return out


def tiles_schema(join_keys: dict[str, str]) -> pa.Schema:
    """What `build_tiles` (and `OfflineEngine.tiles_of_rows`) return."""
    fields = [pa.field(key, arrow_type(dtype)) for key, dtype in join_keys.items()]
    return pa.schema([*fields, pa.field(EVENT_TIMESTAMP, UTC_US), pa.field(TILES_FEATURE, pa.binary())])  # fmt: skip


def build_tiles(
    view: AggregationView, join_keys: dict[str, str], timestamp_field: str, rows: pa.Table
) -> pa.Table:
    """Per entity of `rows`: its join keys, its latest event time and the JSON blob of
    the tiles of its rows. Rows with a null join key or event time are not events (as in
    the SQL); `rows` hold the keys, the time and the columns the view aggregates, in
    their declared types (the push path has validated and cast them)."""
    schema = tiles_schema(join_keys)
    columns = tile_states(view)
    events = _events(view, join_keys, timestamp_field, columns, rows)
    if events.num_rows == 0:
        return schema.empty_table()
    tile_us = 1 if view.tile is None else view.tile // _US
    t = events.column("t").to_numpy()
    # Tile (b - g, b] holds t: b = t + ((-t) mod g), numpy's mod being a floor modulo
    # (right before 1970 too). Without a tile every event time is its own tile, b = t.
    b = t if view.tile is None else t + np.mod(-t, tile_us)
    events = events.append_column("b", pa.array(b))
    keys = [f"k{i}" for i in range(len(join_keys))]
    order = pc.sort_indices(events, sort_keys=[(name, "ascending") for name in [*keys, "b"]])
    events = events.take(order).combine_chunks()
    runs = _Runs.of(events, keys)

    states: dict[str, dict[str, Callable[[], list[Any]]]] = {}
    aggregates = _HashAggregates(runs)
    finite = True
    for index, (column, needed) in enumerate(columns.items()):
        built = _ColumnStates(events.column(f"c{index}").chunk(0), runs, needed, aggregates)
        states[column] = built.lists
        finite = finite and built.finite
    aggregates.run()

    # Per entity: its keys (from its first row), latest time, and blob.
    keys_out = events.select(keys).take(pa.array(runs.entity_rows)).rename_columns(list(join_keys))  # fmt: skip
    latest = np.maximum.reduceat(runs.t, runs.entity_rows)
    ends = runs.ends.tolist()
    counts = runs.rows.tolist()
    bounds = [*runs.entity_tiles.tolist(), len(ends)]
    lists = {column: {state: made() for state, made in made_lists.items()} for column, made_lists in states.items()}  # fmt: skip
    dumps = _dumps if finite else _dumps_nan
    blobs = []
    for i, j in itertools.pairwise(bounds):
        blob: dict[str, Any] = {"g": tile_us, "b": ends[i:j], "n": counts[i:j]}
        if lists:
            blob["c"] = {c: {s: v[i:j] for s, v in by_state.items()} for c, by_state in lists.items()}  # fmt: skip
        blobs.append(dumps(blob))
    out = {name: keys_out.column(name) for name in join_keys}
    out[EVENT_TIMESTAMP] = pa.array(latest, pa.int64()).cast(UTC_US)
    out[TILES_FEATURE] = pa.array(blobs, pa.binary())
    return pa.table(out, schema=schema)


def _events(
    view: AggregationView,
    join_keys: dict[str, str],
    timestamp_field: str,
    columns: dict[str, set[str]],
    rows: pa.Table,
) -> pa.Table:
    """The events with positional names (k0.., t: epoch µs, c0..): no name of the user's
    can collide with ours, and a column may be both the event time and aggregated."""
    data: dict[str, pa.ChunkedArray] = {}
    for i, (key, dtype) in enumerate(join_keys.items()):
        data[f"k{i}"] = rows.column(key).cast(arrow_type(dtype))
    data["t"] = rows.column(timestamp_field).cast(UTC_US).cast(pa.int64())
    for i, column in enumerate(columns):
        values = rows.column(column)
        declared = view.input_dtype(column)  # None: counted as it is (not for push sources)
        data[f"c{i}"] = values if declared is None else values.cast(arrow_type(declared))
    table = pa.table(data)
    required = [f"k{i}" for i in range(len(join_keys))] + ["t"]
    if any(table.column(name).null_count for name in required):
        keep = pc.is_valid(table.column(required[0]))
        for name in required[1:]:
            keep = pc.and_(keep, pc.is_valid(table.column(name)))
        table = table.filter(keep)
    return table


@dataclass
class _Runs:
    """The sorted events' tiles (runs of equal keys and tile end) and entities."""

    t: np.ndarray  # event time per row (µs)
    tile_of_row: np.ndarray  # the run number of each row
    starts: np.ndarray  # first row of each tile
    ends: np.ndarray  # each tile's end b
    rows: np.ndarray  # rows per tile
    entity_rows: np.ndarray  # first row of each entity
    entity_tiles: np.ndarray  # first tile of each entity

    @classmethod
    def of(cls, events: pa.Table, keys: list[str]) -> _Runs:
        size = events.num_rows
        b = events.column("b").to_numpy()
        new_entity = np.zeros(size, dtype=bool)
        new_entity[0] = True
        for key in keys:
            column = events.column(key)
            changed = pc.not_equal(column.slice(1), column.slice(0, size - 1))
            new_entity[1:] |= changed.to_numpy(zero_copy_only=False)
        new_tile = new_entity.copy()
        new_tile[1:] |= b[1:] != b[:-1]
        starts = np.flatnonzero(new_tile)
        tile_of_row = np.cumsum(new_tile) - 1
        entity_rows = np.flatnonzero(new_entity)
        return cls(
            t=events.column("t").to_numpy(),
            tile_of_row=tile_of_row,
            starts=starts,
            ends=b[starts],
            rows=np.diff(np.append(starts, size)),
            entity_rows=entity_rows,
            entity_tiles=tile_of_row[entity_rows],
        )

    def sums(self, values: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):  # floats may sum to ±inf
            sums: np.ndarray = np.add.reduceat(values, self.starts)
        return sums


class _HashAggregates:
    """The states numpy cannot reduce (min and max of text, distinct values, ...), as
    one Arrow hash aggregation by tile number over all columns at once."""

    def __init__(self, runs: _Runs) -> None:
        self._columns: dict[str, pa.Array] = {"tile": pa.array(runs.tile_of_row)}
        self._specs: list[tuple[str, str] | tuple[str, str, pc.FunctionOptions]] = []
        self._result: pa.Table | None = None

    def add(self, values: pa.Array, function: str) -> str:
        """Ask for `function` of `values` per tile; the name of its result column."""
        name = f"a{len(self._specs)}"
        self._columns[name] = values
        if function == "distinct":  # nulls are not values (SQL's list_distinct drops them)
            self._specs.append((name, function, pc.CountOptions(mode="only_valid")))
        else:
            self._specs.append((name, function))
        return f"{name}_{function}"

    def run(self) -> None:
        if self._specs:
            # Without threads the groups come out in order of first appearance: tile order.
            grouped = pa.table(self._columns).group_by("tile", use_threads=False)
            self._result = grouped.aggregate(self._specs)

    def column(self, name: str) -> pa.Array:
        assert self._result is not None, "run() first"
        return self._result.column(name).combine_chunks()


class _ColumnStates:
    """One aggregated column's states per tile. `lists` holds, per state, a function
    giving its values as a list in tile order (some are ready only after the hash
    aggregation has run); `finite` is False when a float state overflowed (JSON then
    needs Infinity, as the SQL writes it)."""

    def __init__(self, values: pa.Array, runs: _Runs, states: set[str], aggregates: _HashAggregates) -> None:  # fmt: skip
        self.lists: dict[str, Callable[[], list[Any]]] = {}
        self.finite = True
        kind = _kind(values.type)
        # JSON-friendly values, as the SQL reads them: epoch µs, float32 as double.
        plain = values
        if kind == "timestamp":
            plain = values.cast(UTC_US).cast(pa.int64())
        elif kind == "float":
            plain = values.cast(pa.float64())
        valid = values.is_valid().to_numpy(zero_copy_only=False)
        count = runs.sums(valid.astype(np.int64))
        empty = count == 0
        if "n" in states:
            self.lists["n"] = _ready(count.tolist())
        if states & {"s", "m", "q"}:
            self._moments(plain, kind, valid, count, runs, states)
        if "lo" in states:
            self.lists["lo"] = _later(aggregates, aggregates.add(plain, "min"))
        if "hi" in states:
            self.lists["hi"] = _later(aggregates, aggregates.add(plain, "max"))
        if "l" in states:
            self._latest(plain, valid, empty, runs, aggregates)
        if "d" in states:
            self.lists["d"] = _later(aggregates, aggregates.add(_distinct_form(values, kind), "distinct"))  # fmt: skip

    def _moments(self, plain: pa.Array, kind: str, valid: np.ndarray, count: np.ndarray,
                 runs: _Runs, states: set[str]) -> None:  # fmt: skip
        empty = count == 0
        if kind == "int":
            whole = np.where(valid, pc.fill_null(plain.cast(pa.int64()), 0).to_numpy(), 0)
            sums: np.ndarray = _int_sums(whole, runs)
            total = sums.astype(np.float64)
            x = whole.astype(np.float64)  # as the SQL's var_pop reads integers
        else:
            x = np.where(valid, pc.fill_null(plain, 0.0).to_numpy(), 0.0)
            sums = total = runs.sums(x)
        # Finite values can sum to ±inf (orjson would write null; SQL writes Infinity).
        self.finite = bool(np.isfinite(total).all())
        if "s" in states:
            self.lists["s"] = _ready(_with_nulls(sums, empty))
        if not states & {"m", "q"}:
            return
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            mean = np.where(empty, 0.0, total / np.maximum(count, 1))
            # M2 by the corrected two-pass formula (Björck): sum of squared deviations
            # from the rounded mean, minus the part its rounding adds. Stable where the
            # naive sum(x²) - n·mean² cancels, and 0 for a tile of equal values.
            deviation = np.where(valid, x - mean[runs.tile_of_row], 0.0)
            first, second = runs.sums(deviation), runs.sums(deviation * deviation)
            m2 = np.maximum(second - first * first / np.maximum(count, 1), 0.0)
        self.finite = self.finite and bool(np.isfinite(m2[~empty]).all())
        if "m" in states:
            self.lists["m"] = _ready(_with_nulls(mean, empty))
        if "q" in states:
            self.lists["q"] = _ready(_with_nulls(m2, empty))

    def _latest(self, plain: pa.Array, valid: np.ndarray, empty: np.ndarray, runs: _Runs,
                aggregates: _HashAggregates) -> None:  # fmt: skip
        # Per tile the latest time with a value; then the greatest value at that time
        # (SQL's max({t, v}) orders by t, then v).
        latest = np.maximum.reduceat(np.where(valid, runs.t, _INT64_MIN), runs.starts)
        at_latest = valid & (runs.t == latest[runs.tile_of_row])
        candidates = pc.if_else(pa.array(at_latest), plain, pa.scalar(None, plain.type))
        name = aggregates.add(candidates, "max")
        times = pa.array(latest, pa.int64(), mask=empty)

        def made() -> list[Any]:
            pairs = pa.StructArray.from_arrays(
                [times, aggregates.column(name)], names=["t", "v"], mask=pa.array(empty)
            )
            listed: list[Any] = pairs.to_pylist()
            return listed

        self.lists["l"] = made


def _kind(dtype: pa.DataType) -> str:
    if pa.types.is_timestamp(dtype):
        return "timestamp"
    if pa.types.is_floating(dtype):
        return "float"
    if pa.types.is_integer(dtype):
        return "int"
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        return "bytes"
    return "other"  # text, booleans: JSON has them as they are


def _int_sums(x: np.ndarray, runs: _Runs) -> np.ndarray:
    """Exact per-tile sums of integers (nulls as 0): int64 when no sum can overflow it
    (the usual case), else Python integers from two int64 sums of the high and low 32
    bits (each at most rows * 2^32: exact)."""
    # No partial sum exceeds the largest magnitude times the number of rows.
    largest = max(-int(x.min()), int(x.max()))
    if largest * len(x) < 2**63:
        return runs.sums(x)
    high, low = runs.sums(x >> 32), runs.sums(x & 0xFFFFFFFF)
    exact: np.ndarray = high.astype(object) * 2**32 + low.astype(object)
    return exact


def _with_nulls(values: np.ndarray, empty: np.ndarray) -> list[Any]:
    if values.dtype == object:  # Python integers beyond int64 (see _int_sums)
        return [None if e else v for v, e in zip(values.tolist(), empty.tolist(), strict=True)]  # fmt: skip
    listed: list[Any] = pa.array(values, mask=empty).to_pylist()
    return listed


def _distinct_form(values: pa.Array, kind: str) -> pa.Array:
    """Values as the SQL lists distinct ones: bytes as base64, timestamps as DuckDB's
    UTC text, floats widened (and -0.0 as 0.0, one value as in SQL)."""
    if kind == "timestamp":
        # Arrow writes "1969-12-31 23:59:59.999980"; DuckDB drops the trailing zeros
        # of the fraction (and a fraction of zeros) and appends the offset.
        text = pc.cast(values.cast(UTC_US).cast(pa.timestamp("us")), pa.string())
        return pc.binary_join_element_wise(
            pc.replace_substring_regex(text, pattern=r"\.?0+$", replacement=""), "+00", ""
        )
    if kind == "bytes":
        # Encoded once per distinct value of the batch (Arrow has no base64 kernel).
        encoded = pc.dictionary_encode(values)
        words = [None if v is None else base64.b64encode(v).decode("ascii") for v in encoded.dictionary.to_pylist()]  # fmt: skip
        return pa.array(words, pa.string()).take(encoded.indices)
    if kind == "float":
        return pc.add(values.cast(pa.float64()), 0.0)
    if kind == "int":
        return values.cast(pa.int64())
    return values


def _ready(values: list[Any]) -> Callable[[], list[Any]]:
    return lambda: values


def _later(aggregates: _HashAggregates, name: str) -> Callable[[], list[Any]]:
    return lambda: aggregates.column(name).to_pylist()


def _dumps(blob: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(blob)
    except orjson.JSONEncodeError:  # an integer sum beyond 64 bits, which orjson refuses
        return _dumps_nan(blob)


def _dumps_nan(blob: dict[str, Any]) -> bytes:
    # The json module writes Infinity and NaN (as DuckDB does; `tiles.decode` reads
    # them), where orjson would write null.
    return json.dumps(blob, separators=(",", ":"), allow_nan=True).encode()
