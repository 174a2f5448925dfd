"""Training-set windows, evaluated: one pass of NumPy over DuckDB's sorted stream.

`running_windows` builds the queries and says what to compute (`RunningPlan`); here they
run. The stream arrives in Arrow batches, sorted by entity and ``__t2``, walked on up to
two threads. Per running field, a cumulative sum over each batch (from 0) is read at the
batch's probes and kept at the probe's slot (point number * probe kinds + kind); the
totals of the batches before a probe's own are added at the end (`_Walk.carry`). The
window's value at a point is then its slot at T minus its slot at the window's far edge.
The stream is never held whole: what is kept is a total per field and probe slot (32-bit
for the 0/1 fields, 64-bit for the lanes of sums), each probe's row and batch and, for
each column's min or max, every row's value.

Min and max over ``(L, T]`` are the extremes of the stream's rows strictly between the
probe at L and the probe at T (`numpy.ufunc.reduceat` over those ranges, or blocks with
a sparse table when the windows span many times the stream's rows: `_range_extremes`).
Probes and nulls hold a neutral value (-inf or the smallest
integer for max; NaN for a float min, which `fmin` skips), and a window without a
non-null value is null. NaN is the greatest float, as in DuckDB: max propagates it
(`maximum`), min ignores it unless every value is NaN (`fmin`).
"""

from __future__ import annotations

import itertools
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from almanac.errors import InputError
from almanac.offline.duckdb.running_windows import (
    LANE_BITS,
    MAX_EVENTS,
    PID,
    RunningPlan,
    value_column,
)

_BATCH_ROWS = 1 << 20


def evaluate(cursor: duckdb.DuckDBPyConnection, plan: RunningPlan) -> None:
    """Run `plan` on `cursor` (where the spine is registered) and register its tables:
    the spine's points (`plan.points`) and the computed columns (`plan.result`)."""
    points = cursor.sql(plan.points_sql).to_arrow_table()
    cursor.register(plan.points, points)
    cursor.register(plan.first, cursor.sql(plan.first_sql).to_arrow_table())
    counts = cursor.sql(plan.scales_sql).fetchall()[0]
    if counts[0] > MAX_EVENTS:
        raise InputError(
            f"aggregation view '{plan.view}': more than {MAX_EVENTS:,} events in one "
            "training-set query; split the spine by time"
        )
    scales = dict(zip(plan.floats, counts[1:], strict=True))
    walk = _Walk(plan, points.num_rows, counts[0] + points.num_rows * plan.kinds, scales)
    # As many threads as DuckDB may use, up to 2 (a Spark bucket's connection has one).
    threads = min(2, int(cursor.sql("SELECT current_setting('threads')").fetchall()[0][0]))
    stream = cursor.sql(plan.stream_sql(points.num_rows)).to_arrow_reader(_BATCH_ROWS)
    # Batches are walked on two threads (NumPy releases the GIL): each batch's sums start
    # at 0 and the totals of the batches before it are added at the end (`_Walk.carry`).
    pending: deque[Future[None]] = deque()
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="almanac-windows") as pool:
            for index, batch in enumerate(stream):
                pending.append(pool.submit(walk.add, index, walk.rows, batch))
                walk.rows += batch.num_rows
                while len(pending) > threads:  # bounded: a few batches held at most
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
    except BaseException:
        walk.release()  # an error's traceback would hold the arrays
        raise
    finally:
        stream.close()  # DuckDB's sorted rows go before the result is built
        cursor.unregister(plan.first)
    walk.carry()
    cursor.register(plan.result, walk.result())


def release(cursor: duckdb.DuckDBPyConnection, plan: RunningPlan) -> None:
    """Drop the tables `evaluate` registered (once the answer has been read)."""
    cursor.unregister(plan.points)
    cursor.unregister(plan.result)


class _Walk:
    """The state of one pass over the stream of `rows` rows."""

    def __init__(self, plan: RunningPlan, points: int, rows: int, scales: dict[str, int]) -> None:
        self.plan = plan
        self.points = points
        self.scales = scales
        slots = (points + 1) * plan.kinds  # point numbers start at 1
        # Counts stay below 2**31 (MAX_EVENTS); lanes need 64 bits.
        self.totals = {name: np.zeros(slots, np.int32) for name in plan.fields}
        for alias, count in plan.lanes.items():
            self.totals.update((f"l{i}_{alias}", np.zeros(slots, np.int64)) for i in range(count))
        self.position = np.zeros(slots, np.int64)  # each probe's row in the stream
        self.batch_of = np.zeros(slots, np.int32)  # each probe's batch
        self.batch_totals: dict[int, dict[str, int]] = {}
        # Per column and kind of extreme (max or min: their neutral values differ), every
        # row's value.
        self.values: dict[tuple[str, bool], np.ndarray] = {}
        for extreme in plan.extremes:
            if (extreme.column, extreme.largest) not in self.values:
                self.values[extreme.column, extreme.largest] = np.empty(rows, extreme.dtype)
        self.frames: list[pa.RecordBatch] = []
        self.rows = 0

    def add(self, index: int, offset: int, batch: pa.RecordBatch) -> None:
        """Walk batch number `index`, whose first row is the stream's row `offset`."""
        plan = self.plan
        probe = batch.column(PID).to_numpy()
        rows = np.flatnonzero(probe >= 0)
        slots = probe[rows]
        increments = {name: batch.column(name).to_numpy() for name in plan.fields[1:]}
        increments["n"] = (probe < 0).view(np.int8)
        for alias in plan.lanes:
            lanes = _lanes(batch.column(value_column(alias)), self.scales.get(alias), plan.view)
            increments.update((f"l{i}_{alias}", lane) for i, lane in enumerate(lanes))
        totals = {}
        for name, increment in increments.items():
            running = np.cumsum(increment, dtype=np.int64)
            totals[name] = int(running[-1]) if len(running) else 0
            self.totals[name][slots] = running[rows]
        self.batch_totals[index] = totals
        self.position[slots] = rows + offset
        self.batch_of[slots] = index
        end = offset + batch.num_rows
        for (column, largest), kept in self.values.items():
            neutral = _neutral(kept.dtype, largest)
            kept[offset:end] = pc.fill_null(batch.column(column), neutral).to_numpy()
        if plan.frames:
            at_t = rows[slots % plan.kinds == 0]
            self.frames.append(batch.select([PID, *plan.frames]).take(pa.array(at_t)))

    def release(self) -> None:
        """Drop the arrays (after an error)."""
        self.totals.clear()
        self.values.clear()
        self.frames.clear()

    def carry(self) -> None:
        """Add to each probe's totals those of the batches before its own."""
        batches = len(self.batch_totals)
        for name, totals in self.totals.items():
            before = np.zeros(batches + 1, np.int64)
            before[1:] = np.cumsum([self.batch_totals[i][name] for i in range(batches)])
            totals += before[self.batch_of].astype(totals.dtype)

    def result(self) -> pa.Table:
        """One row per point, in point order: ``__pid`` and the columns the plan's
        answer reads (`running_windows._answer`)."""
        plan, kinds = self.plan, self.plan.kinds
        columns: dict[str, Any] = {"__pid": pa.array(np.arange(1, self.points + 1))}

        def at(name: str, j: int) -> np.ndarray:
            return self.totals[name][kinds + j :: kinds]

        # Extremes first, then each field's differences: what is done with is freed as
        # the result grows (peak memory).
        for i, extreme in enumerate(plan.extremes):
            present = at(extreme.counted, 0) - at(extreme.counted, extreme.kind)
            columns[f"__e_{i}"] = self._extreme(extreme.column, extreme.kind, extreme.largest, present)  # fmt: skip
        self.values.clear()
        # Distinct counts: islands started by T minus islands ended by the far edge.
        for alias, kind in plan.distincts:
            started, ended = self.totals.pop(f"ds_{alias}_{kind}"), self.totals.pop(f"de_{alias}_{kind}")  # fmt: skip
            columns[f"__cd_{alias}_{kind}"] = pa.array(started[kinds::kinds] - ended[kinds + kind :: kinds])  # fmt: skip
        for name, wanted in itertools.groupby(sorted(plan.differences), key=lambda d: d[0]):
            for _, kind in wanted:
                columns[f"__d_{name}_{kind}"] = pa.array(at(name, 0) - at(name, kind))
            del self.totals[name]
        self.totals.clear()
        for alias, k in self.scales.items():
            columns[f"__k_{alias}"] = pa.array(np.full(self.points, k, np.int32))
        table = pa.table(columns)
        if plan.frames and not self.frames:  # no point (every spine row lacks a key)
            for name in plan.frames:
                table = table.append_column(name, pa.nulls(self.points))
        elif plan.frames:
            frames = pa.Table.from_batches(self.frames)
            order = np.empty(self.points, np.int64)
            order[pc.divide(frames.column(PID), kinds).to_numpy() - 1] = np.arange(frames.num_rows)
            frames = frames.take(pa.array(order))
            for name in plan.frames:
                table = table.append_column(name, frames.column(name))
        return table

    def _extreme(self, column: str, kind: int, largest: bool, present: np.ndarray) -> pa.Array:
        """Per point, the extreme of `column` over the rows between its probe at the far
        edge (`kind`) and its probe at T; null where the window holds no value."""
        values = self.values[column, largest][: self.rows]
        kinds = self.plan.kinds
        at_t = self.position[kinds::kinds]
        start = self.position[kinds + kind :: kinds] + 1
        if self.points == 0:
            return pa.nulls(0, pa.from_numpy_dtype(values.dtype))
        # The probes at T come in point order (points are numbered as the stream is
        # sorted), so the gaps reduceat also reduces, between windows, do not overlap.
        if not np.all(at_t[1:] > at_t[:-1]):
            raise AssertionError("the stream's probes at T are not in point order")
        neutral = _neutral(values.dtype, largest)
        extremes = _range_extremes(values, start, at_t, np.maximum if largest else np.fmin, neutral)  # fmt: skip
        return pa.array(extremes, mask=present == 0)


# Scanning every window's rows (`reduceat`) costs the rows the windows span; past this
# many times the stream's rows (dense spines of busy entities: quadratic), blocks do it.
_SCAN_FACTOR = 16
_BLOCK = 64


def _range_extremes(
    values: np.ndarray, start: np.ndarray, stop: np.ndarray, op: np.ufunc, neutral: float | int
) -> np.ndarray:
    """`op` (an associative, idempotent extreme) over ``values[start[i]:stop[i]]`` for
    each i, the ranges ordered by `stop`; an empty range gives any value (the caller
    masks it)."""
    if int(np.sum(stop - start)) <= _SCAN_FACTOR * len(values):
        return _scanned(values, start, stop, op)
    # Blocks of _BLOCK rows: a range within one block is scanned (at most _BLOCK rows);
    # a longer one is the extreme of its first block's suffix, its last block's prefix
    # and, between them, of whole blocks from a sparse table (log2 levels of pairs).
    blocks = -(-len(values) // _BLOCK)
    grid = np.full(blocks * _BLOCK, neutral, values.dtype)
    grid[: len(values)] = values
    grid = grid.reshape(blocks, _BLOCK)
    last = np.maximum(stop - 1, start)
    # One block-sized pass at a time (memory): suffixes, read at the ranges' starts;
    # then prefixes, read at their ends and at each block's end (its extreme).
    backwards = op.accumulate(grid[:, ::-1], axis=1)  # row b, column c: from B-1-c on
    suffix_at_start = backwards[start // _BLOCK, _BLOCK - 1 - start % _BLOCK]
    del backwards
    prefix = op.accumulate(grid, axis=1)
    del grid
    prefix_at_last = prefix[last // _BLOCK, last % _BLOCK]
    levels = [prefix[:, -1].copy()]  # level j: the extreme of 2**j blocks from each one
    del prefix
    while 2 ** len(levels) <= blocks:
        half = 2 ** (len(levels) - 1)
        levels.append(op(levels[-1][:-half], levels[-1][half:]))
    first_block, last_block = start // _BLOCK, last // _BLOCK
    out = np.empty(len(start), values.dtype)
    inside = first_block == last_block
    out[inside] = _scanned(values, start[inside], stop[inside], op)
    spans = np.flatnonzero(~inside)
    result = op(suffix_at_start[spans], prefix_at_last[spans])
    low, high = first_block[spans] + 1, last_block[spans] - 1  # whole blocks between
    count = high - low + 1
    level = np.zeros(len(spans), np.int64)
    level[count > 0] = np.floor(np.log2(count[count > 0])).astype(np.int64)
    for j, table in enumerate(levels):
        at = np.flatnonzero((count > 0) & (level == j))
        between = op(table[low[at]], table[high[at] - 2**j + 1])
        result[at] = op(result[at], between)
    out[spans] = result
    return out


def _scanned(values: np.ndarray, start: np.ndarray, stop: np.ndarray, op: np.ufunc) -> np.ndarray:
    """`op` over each range by `reduceat`. It also reduces the gaps between ranges,
    which do not overlap as the ranges are ordered by `stop`; an empty range gives the
    row at its start."""
    if len(start) == 0:
        return np.empty(0, values.dtype)
    bounds = np.empty(2 * len(start), np.int64)
    bounds[0::2], bounds[1::2] = start, stop
    return op.reduceat(values, bounds)[0::2]


def _neutral(dtype: np.dtype[Any], largest: bool) -> float | int:
    """The value probes and nulls hold: never an extreme of a window holding a value."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return int(info.min if largest else info.max)
    return float("-inf") if largest else float("nan")


_LANE = float(1 << LANE_BITS)
_MASK = (1 << LANE_BITS) - 1


def _lanes(values: pa.Array, scale: int | None, view: str) -> list[np.ndarray]:
    """An additive column's values (null: 0) as 64-bit lanes of 31 bits, least
    significant first, the last one signed. Floats are first brought to fixed point,
    ``round(x * 2**scale)`` (half away from zero, as DuckDB's round), then split with
    exact double arithmetic (powers of two, floor, and differences that are integers
    below 2**31); integers in three lanes by shifts."""
    if scale is None:
        x = pc.fill_null(values.cast(pa.int64()), 0).to_numpy()
        return [x & _MASK, (x >> LANE_BITS) & _MASK, x >> (2 * LANE_BITS)]
    x = pc.fill_null(values.cast(pa.float64()), 0.0).to_numpy()
    if not np.all(np.isfinite(x)):
        raise InputError(f"aggregation view '{view}': a summed value is NaN or infinite")
    v = np.ldexp(x, scale)
    rounded = np.trunc(v)
    half = np.abs(v - rounded) >= 0.5  # exact: v - trunc(v) is a double
    rounded += np.where(half, np.sign(v), 0.0)
    lanes = []
    for _ in range(3):
        high = np.floor(rounded / _LANE)
        lanes.append((rounded - high * _LANE).astype(np.int64))
        rounded = high
    lanes.append(rounded.astype(np.int64))
    return lanes
