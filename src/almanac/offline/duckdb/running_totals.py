"""Training-set windows, evaluated: one pass of NumPy over DuckDB's sorted stream.

`running_windows` builds the queries and says what to compute (`RunningPlan`); here they
run. The stream arrives in Arrow batches, sorted by entity and ``__t2``. Per running
field, a cumulative sum over each batch (carried from the previous one) is read at the
batch's probes and kept at the probe's slot (point number * probe kinds + kind); the
window's value at a point is then its slot at T minus its slot at the window's far edge.
The stream is never held whole: what is kept is one 64-bit total per field and probe,
the rows' positions of the probes and, for min and max, the column's values.

Min and max over ``(L, T]`` are the extremes of the stream's rows strictly between the
probe at L and the probe at T (`numpy.ufunc.reduceat` over those ranges: the cost is the
rows the windows span). Probes and nulls hold a neutral value (-inf or the smallest
integer for max; NaN for a float min, which `fmin` skips), and a window without a
non-null value is null. NaN is the greatest float, as in DuckDB: max propagates it
(`maximum`), min ignores it unless every value is NaN (`fmin`).
"""

from __future__ import annotations

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
                while len(pending) > 2:  # bounded: at most a few batches held
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
    finally:
        stream.close()  # DuckDB's sorted rows go before the result is built
    walk.carry()
    cursor.register(plan.result, walk.result())


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

    def add(self, index: int, first: int, batch: pa.RecordBatch) -> None:
        """Walk batch number `index`, whose first row is the stream's row `first`."""
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
        self.position[slots] = rows + first
        self.batch_of[slots] = index
        end = first + batch.num_rows
        for (column, largest), kept in self.values.items():
            neutral = _neutral(kept.dtype, largest)
            kept[first:end] = pc.fill_null(batch.column(column), neutral).to_numpy()
        if plan.frames:
            at_t = rows[slots % plan.kinds == 0]
            self.frames.append(batch.select([PID, *plan.frames]).take(pa.array(at_t)))

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
        for name in list(self.totals):
            if name.startswith("ds_"):
                alias, edge = name[3:].rsplit("_", 1)
                distinct = at(name, 0) - at(f"de_{alias}_{edge}", int(edge))
                columns[f"__cd_{alias}_{edge}"] = pa.array(distinct)
            for field, kind in sorted(plan.differences):
                if field == name:
                    columns[f"__d_{name}_{kind}"] = pa.array(at(name, 0) - at(name, kind))
            if not name.startswith(("ds_", "de_")):
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
        bounds = np.empty(2 * self.points, np.int64)
        bounds[0::2], bounds[1::2] = start, at_t
        # reduceat reduces [bounds[i], bounds[i + 1]); an empty window (start == T) gives
        # the probe's own neutral value, masked below like any window without a value.
        reduce = (np.maximum if largest else np.fmin).reduceat
        extremes = reduce(values, bounds)[0::2]
        return pa.array(extremes, mask=present == 0)


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
