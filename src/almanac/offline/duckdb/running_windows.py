"""Training-set windows by running totals over one sort of events and probes: the SQL.

For a spine point T and a window W with far edge ``L = lower_W(T)`` (exact: ``T - W``;
tiled: ``floor_tile(T - W)``), what the window ``(L, T]`` holds of an additive quantity
is its running total at T minus its running total at L. So each distinct spine point
(numbered ``__pid``) becomes *probes*: one at T and one at each window's L. Probes and
events are sorted together per entity by ``__t2``, twice the time, plus 1 for probes: an
event at T (``2T``) comes before the probe at T (``2T + 1``), an event at L before the
probe at L, so the rows between the probe at L and the probe at T are exactly the events
with ``L < t <= T``, whatever the order among ties (events tie only with events, probes
only with probes, which add nothing).

DuckDB does the sorting (`RunningPlan.stream_sql`: ``ORDER BY`` the entity, then
``__t2``); `running_totals` walks the sorted stream once with NumPy. A window aggregate
in DuckDB is evaluated at every row of the sort through a segment tree (about 1 s per
aggregate over 14M rows here); a cumulative sum over a column costs milliseconds.

* counts (events, non-null values, island starts and ends below) are running sums of
  0/1 increments; sum and mean are running sums in fixed point: ``round(x * 2**K)`` as a
  HUGEINT (K per column, from the data: every value of exponent >= -K is an integer
  there, and no total can pass 2**122), split into 31-bit lanes that are summed as
  64-bit integers and joined again in DuckDB, so differences keep small values next to
  large ones (a running double sum would cancel them away). A value with bits below
  2**-K (K >= 122 - log2(max |x|) - log2(events)) loses them: below 2**-69 of the
  largest value at 10M events. Integer columns sum exactly, in three lanes.
  The query reads fewer than 2**31 events (checked: an error otherwise), so no lane's
  running sum can pass 2**63.
* count_distinct: per (keys, value), events whose coverage ``[t, until_W(t))`` (the T
  whose window holds t) overlap chain into an "island"; a value is in the window at T iff
  an island covers T, so the count is (islands started by T) - (islands whose last event
  is at or before L): a start flag and an end flag per event, from ``lag``/``lead`` over
  a sort by (keys, value, time), counted as running totals.
* min and max of numbers: the extreme of the rows between the probe at L and the probe
  at T (`numpy.ufunc.reduceat`; probes and nulls hold a neutral value).
* last, stddev, variance, and min/max of strings and timestamps: RANGE frames of the
  same sort, evaluated in DuckDB and read at the probes at T.

The spine's points, and each entity's number when the key is not one integer, are
computed first (`points_sql`) and registered, so the stream and the answer read them
without computing them again.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import timedelta

from almanac.definitions.aggregation import AggregateFeature, AggregationView
from almanac.definitions.types import NUMERIC_DTYPES
from almanac.offline.duckdb.point_in_time import SPINE, TS
from almanac.offline.duckdb.sources import duckdb_type, quote
from almanac.semantics.windows import micros

T = "__t"  # event (or spine) time, epoch microseconds, as `aggregations.event_rows` names it
T2 = "__t2"  # 2 * time, + 1 for probes
KID = "__kid"  # the entity's number
PID = "__pj"  # probes: point number * probe kinds + probe kind; events: NULL (-1 in the stream)
RUNNING = ("count", "count_distinct", "sum", "mean")
_INTEGER = ("int32", "int64")
LANE_BITS = 31
MAX_EVENTS = (1 << 31) - 1
_PID_TYPE = "__almanac_probe_number_type__"
_names = itertools.count()


@dataclass(frozen=True)
class Column:
    """An aggregated column as `events` has it: its alias and dtype (None: as read)."""

    alias: str
    dtype: str | None


@dataclass(frozen=True)
class Extreme:
    """A min or max of numbers, evaluated over the stream's rows between two probes."""

    feature: str
    column: str  # the stream's column of values
    kind: int  # the probe kind of the window's far edge
    largest: bool  # max, else min
    counted: str  # the running field of the column's non-null values
    dtype: str  # the values' NumPy dtype (the column's: int32, int64, float32, float64)


@dataclass
class RunningPlan:
    """The queries of one aggregation view's training-set part, and what the NumPy
    walk over the stream computes (`running_totals.evaluate` runs it)."""

    view: str
    keys: list[str]  # quoted
    kinds: int  # probe kind 0 at T, kind j at the far edge of window j
    points: str  # the registered table of the spine's points
    result: str  # the registered table of the computed columns, one row per point
    points_sql: str
    scales_sql: str  # the events' count, then K per float column summed, from `first`
    floats: list[str]  # aliases of the float columns summed, in scales_sql's order
    first: str = ""  # the registered table of the events' first pass
    first_sql: str = ""  # partial counts and scales, per value of a dictionary column
    fields: list[str] = field(default_factory=list)  # running 0/1 fields: "n", then stream columns
    lanes: dict[str, int] = field(default_factory=dict)  # alias summed -> its lanes
    extremes: list[Extreme] = field(default_factory=list)
    frames: list[str] = field(default_factory=list)  # stream columns read at the T probes
    outputs: list[tuple[str, str]] = field(default_factory=list)  # (result column, SQL)
    stream_text: str = ""  # the events and probes, sorted; PID's type a placeholder
    differences: set[tuple[str, int]] = field(default_factory=set)  # (field, kind) read
    distincts: list[tuple[str, int]] = field(default_factory=list)  # (alias, kind) counted

    def stream_sql(self, points: int) -> str:
        """The sorted stream, for a spine of `points` points: the probes' numbers as
        INTEGER when they fit (a narrower sort), else BIGINT."""
        wide = (points + 1) * self.kinds >= 1 << 31
        return self.stream_text.replace(_PID_TYPE, "BIGINT" if wide else "INTEGER")

    def difference(self, name: str, kind: int) -> str:
        """The result's column of a running field's total at T minus at the far edge of
        probe kind `kind` (noted as needed)."""
        self.differences.add((name, kind))
        return f"__d_{name}_{kind}"

    @property
    def answer_sql(self) -> str:
        """One row per point: the keys, TS and the features (by feature name)."""
        select = [f"__p.{key}" for key in self.keys] + [f"__p.{TS}"]
        select += [f"{sql} AS {quote(name)}" for name, sql in self.outputs]
        return f"SELECT {', '.join(select)} FROM {self.result} JOIN {self.points} AS __p USING (__pid)"  # fmt: skip


def value_column(alias: str) -> str:
    """The stream's column of an aggregated column's values (sums, min and max)."""
    return f"__val_{alias}"


def sql_mod(value: str, g: int) -> str:
    """`value` mod `g` in [0, g), also for times before 1970 (DuckDB's % truncates)."""
    return f"((({value}) % {g}) + {g}) % {g}"


def ceil_tile(time: str, g: int) -> str:
    """SQL for `time` rounded up to a multiple of `g` (a tile's end)."""
    return f"({time} + ({g} - {sql_mod(time, g)}) % {g})"


def lower_bound(time: str, window: timedelta, tile: timedelta | None) -> str:
    """SQL for lower_W(time): the exclusive far edge of the window ending at `time`
    (`almanac.semantics.windows.window_lower`, rendered)."""
    edge = f"({time} - {micros(window)})"
    if tile is None:
        return edge
    return f"({edge} - {sql_mod(edge, micros(tile))})"


def _until(time: str, window: timedelta, tile: timedelta | None) -> str:
    """The first T whose window no longer holds an event at `time`: ceil_tile(t) + W."""
    if tile is None:
        return f"({time} + {micros(window)})"
    return f"({ceil_tile(time, micros(tile))} + {micros(window)})"


def in_numpy(feature: AggregateFeature, columns: dict[str, Column]) -> bool:
    """Whether the NumPy walk computes `feature` (else a RANGE frame in DuckDB does)."""
    if feature.function in RUNNING:
        return True
    numeric = feature.column is not None and columns[feature.column].dtype in NUMERIC_DTYPES
    return feature.function in ("min", "max") and numeric


def running_plan(
    view: AggregationView,
    keys: dict[str, str],
    events: str,
    columns: dict[str, Column],
    features: list[AggregateFeature],
) -> RunningPlan:
    """The plan of `features` at the spine's distinct (keys, TS): the keys (name: dtype),
    TS and one column per feature, named by feature name."""
    k = [quote(key) for key in keys]
    ks = ", ".join(k)
    tile = view.tile
    windows = list(dict.fromkeys(f.window for f in features))
    kinds = len(windows) + 1
    kind = {w: j + 1 for j, w in enumerate(windows)}
    n = next(_names)
    points, result = f"__almanac_points_{n}", f"__almanac_windows_{n}"

    # The sorts partition by one integer: the key itself when it is one integer, else
    # the entity's number in the spine (`KID`), which the events and probes carry instead
    # of the keys (a string key made the hot-keys case's sort ~0.3 GB larger).
    numbered = len(keys) > 1 or next(iter(keys.values())) not in _INTEGER
    part = KID if numbered else k[0]
    not_null = " AND ".join(f"{key} IS NOT NULL" for key in [*k, TS])
    # Numbered in (keys, TS) order, as the stream sorts them: the probes at T then come
    # in point order (`running_totals` relies on it for min and max, and checks it).
    entity = f", CAST(dense_rank() OVER (ORDER BY {ks}) AS INTEGER) AS {KID}" if numbered else ""
    points_sql = (
        f"SELECT {ks}, {TS}, epoch_us({TS}) AS {T}, row_number() OVER (ORDER BY {ks}, {TS}) "
        f"AS __pid{entity} FROM (SELECT DISTINCT {ks}, {TS} FROM {SPINE} WHERE {not_null})"
    )
    # The events of the spine's entities, written out at each use, not a CTE: DuckDB
    # materializes a CTE read more than once (NOT MATERIALIZED notwithstanding), and
    # holding every event until the query ends cost ~440 MB on 10M events; reading the
    # files again costs less.
    events_of_spine = (
        f"(SELECT * FROM ({events}) SEMI JOIN (SELECT DISTINCT {ks} FROM {points}) USING ({ks}))"
    )
    source = events_of_spine
    if numbered:
        source = (
            f"(SELECT __k.{KID}, __e.* EXCLUDE ({ks}) FROM ({events}) AS __e "
            f"JOIN (SELECT DISTINCT {ks}, {KID} FROM {points}) AS __k USING ({ks}))"
        )

    # One pass over the events before the stream: their count, the fixed-point scales of
    # the float columns summed (the largest K at which every value is an integer, unless
    # the events' totals could then pass 2**122) and, grouped by it, the distinct values
    # of the first count_distinct column that needs a dictionary (below). DuckDB keeps
    # the partials (`plan.first`); `scales_sql` merges them.
    summed = list(dict.fromkeys(f.column for f in features if f.column and f.function in ("sum", "mean")))  # fmt: skip
    floats = [columns[c].alias for c in summed if columns[c].dtype not in _INTEGER]
    distinct = [f for f in features if f.function == "count_distinct"]
    distinct_columns = list(dict.fromkeys(f.column for f in distinct if f.column))
    dictionaries = [columns[c].alias for c in distinct_columns if columns[c].dtype not in _INTEGER]
    grouped = dictionaries[:1]
    partials, merged = ["count(*) AS __n"], ["coalesce(sum(__n), 0)"]
    for a in floats:
        e = f"floor(log2(abs(CAST({a} AS DOUBLE))))"
        nonzero = f"FILTER (WHERE {a} <> 0)"
        partials += [f"min({e}) {nonzero} AS __lo_{a}", f"max({e}) {nonzero} AS __hi_{a}"]
        merged.append(
            f"CAST(greatest(-1000, least(1000, 53 - coalesce(min(__lo_{a}), 0), 122 - "
            f"coalesce(max(__hi_{a}), 0) - ceil(log2(coalesce(sum(__n), 0) + 1)))) AS INTEGER)"
        )
    first = f"__almanac_first_{n}"
    group = f" GROUP BY {grouped[0]}" if grouped else ""
    select_first = ", ".join([*(f"{a} AS __dv" for a in grouped), *partials])
    plan = RunningPlan(
        view.name, k, kinds, points, result, points_sql,
        f"SELECT {', '.join(merged)} FROM {first}", floats,
        first=first, first_sql=f"SELECT {select_first} FROM {events_of_spine}{group}",
    )  # fmt: skip

    # Running fields: (stream column, the event's increment as SQL; NULL counts 0).
    # The events' count, "n", is not a stream column: NumPy has it from PID.
    increments: list[tuple[str, str]] = []
    counted = [f.column for f in features if f.column and f.function != "count_distinct" and in_numpy(f, columns)]  # fmt: skip
    for c in dict.fromkeys(counted):
        a = columns[c].alias
        increments.append((f"nn_{a}", f"CAST({a} IS NOT NULL AS TINYINT)"))

    # count_distinct: island flags per (keys, value), one sort per column. The sort
    # carries, besides the keys and time, only the columns the stream needs; a value that
    # is not an integer is replaced there by its number in a dictionary of the distinct
    # values (a narrower payload and sort key than, say, strings).
    ctes: list[str] = []
    raw = list(dict.fromkeys(columns[f.column].alias for f in features if f.column and f.function != "count_distinct"))  # fmt: skip
    flag_names: list[str] = []
    for i, name in enumerate(distinct_columns):
        a = columns[name].alias
        v = a
        if columns[name].dtype not in _INTEGER:
            v = f"__v_{a}"
            # INTEGER, not row_number's BIGINT: a narrower sort key (the island sort ran
            # ~0.3 s faster on 10M events); fewer than 2**31 values, as events are.
            values = first if a in grouped else f"(SELECT DISTINCT {a} AS __dv FROM {events_of_spine})"  # fmt: skip
            ctes.append(
                f"__dict{i} AS (SELECT __dv, CAST(row_number() OVER (ORDER BY __dv) AS INTEGER) "
                f"AS {v} FROM {values} WHERE __dv IS NOT NULL)"
            )
            kept = "" if a in raw else f" EXCLUDE ({a})"
            ctes.append(
                f"__g{i} AS (SELECT __x.*{kept}, __dict{i}.{v} FROM {source} AS __x "
                f"LEFT JOIN __dict{i} ON __x.{a} = __dict{i}.__dv)"
            )
            source = f"__g{i}"
        flags = []
        for w in dict.fromkeys(f.window for f in distinct if f.column == name):
            j = kind[w]
            before = f"{T} < {_until(f'lag({T}) OVER __d', w, tile)}"
            after = f"lead({T}) OVER __d < {_until(T, w, tile)}"
            flags.append(f"CAST({v} IS NOT NULL AND NOT coalesce({before}, false) AS TINYINT) AS __ds_{a}_{j}")  # fmt: skip
            flags.append(f"CAST({v} IS NOT NULL AND NOT coalesce({after}, false) AS TINYINT) AS __de_{a}_{j}")  # fmt: skip
            flag_names += [f"__ds_{a}_{j}", f"__de_{a}_{j}"]
            increments += [(f"ds_{a}_{j}", f"__ds_{a}_{j}"), (f"de_{a}_{j}", f"__de_{a}_{j}")]
            plan.distincts.append((a, j))
        ctes.append(
            f"__f{i} AS (SELECT *, {', '.join(flags)} FROM {source} "
            f"WINDOW __d AS (PARTITION BY {part}, {v} ORDER BY {T}))"
        )
        source = f"__f{i}"

    # The columns summed: NumPy splits each value (in fixed point for floats) into lanes.
    for c in summed:
        a = columns[c].alias
        plan.lanes[a] = 4 if a in floats else 3
    plan.fields = ["n"] + [name for name, _ in increments]

    # The stream: events carry their raw columns, probes their point number and kind.
    event_cols = [part, f"2 * {T} AS {T2}", f"NULL::BIGINT AS {PID}", *raw, *flag_names]
    probe_cols = [part, T2, PID] + [f"NULL AS {x}" for x in [*raw, *flag_names]]
    probes = [f"SELECT {part}, 2 * {T} + 1 AS {T2}, __pid * {kinds} AS {PID} FROM {points}"]
    for w, j in kind.items():
        probes.append(f"SELECT {part}, 2 * {lower_bound(T, w, tile)} + 1, __pid * {kinds} + {j} FROM {points}")  # fmt: skip
    rows = (
        f"SELECT {', '.join(event_cols)} FROM {source} UNION ALL "
        f"SELECT {', '.join(probe_cols)} FROM ({' UNION ALL '.join(probes)})"
    )
    select = [f"CAST(coalesce({PID}, -1) AS {_PID_TYPE}) AS {PID}"]
    select += [f"coalesce({sql}, 0) AS {name}" for name, sql in increments]
    select += [f"{a} AS {value_column(a)}" for a in plan.lanes]
    frames: dict[timedelta, str] = {}
    for f in features:
        if f.function in RUNNING:
            continue
        assert f.column is not None
        a = columns[f.column].alias
        if in_numpy(f, columns):
            if a not in plan.lanes and all(e.column != value_column(a) for e in plan.extremes):
                select.append(f"{a} AS {value_column(a)}")
            dtype = columns[f.column].dtype
            assert dtype is not None
            plan.extremes.append(Extreme(f.name, value_column(a), kind[f.window], f.function == "max", f"nn_{a}", dtype))  # fmt: skip
            continue
        frame = frames.setdefault(f.window, f"__r{len(frames)}")
        select.append(f"{_frame_aggregate(f, a, frame)} AS __x_{len(plan.frames)}")
        plan.frames.append(f"__x_{len(plan.frames)}")
    spec = f"PARTITION BY {part} ORDER BY {T2}"
    window = ", ".join(
        f"{name} AS ({spec} RANGE BETWEEN {_preceding(w, tile)} PRECEDING AND CURRENT ROW)"
        for w, name in frames.items()
    )
    stream = f"SELECT {', '.join(select)} FROM ({rows})"
    stream += f" WINDOW {window}" if window else ""
    stream = f"{stream} ORDER BY {part}, {T2}"
    plan.stream_text = f"WITH {', '.join(ctes)} {stream}" if ctes else stream

    frame_of = {f.name: i for i, f in enumerate(x for x in features if not in_numpy(x, columns))}
    for f in features:
        plan.outputs.append((f.name, f"CAST({_answer(f, columns, kind, frame_of, plan)} AS {duckdb_type(f.dtype)})"))  # fmt: skip
    return plan


def _answer(
    f: AggregateFeature,
    columns: dict[str, Column],
    kind: dict[timedelta, int],
    frame_of: dict[str, int],
    plan: RunningPlan,
) -> str:
    """A feature's value from the result table's columns (`running_totals._Walk.result`)."""
    j = kind[f.window]
    if f.name in frame_of:
        return f"__x_{frame_of[f.name]}"
    if f.column is None:
        return plan.difference("n", j)
    a = columns[f.column].alias
    if f.function == "count":
        return plan.difference(f"nn_{a}", j)
    if f.function == "count_distinct":
        return f"__cd_{a}_{j}"
    if f.function in ("min", "max"):
        return f"__e_{[e.feature for e in plan.extremes].index(f.name)}"
    # Multiplied, not shifted: DuckDB does not shift negative numbers (the top lane's).
    lanes = " + ".join(f"CAST({plan.difference(f'l{i}_{a}', j)} AS HUGEINT) * (CAST(1 AS HUGEINT) << {LANE_BITS * i})" for i in range(plan.lanes[a]))  # fmt: skip
    total = f"({lanes})"
    if a in plan.floats:
        total = f"(CAST({total} AS DOUBLE) * pow(2.0, -__k_{a}))"
    elif f.function == "mean":
        total = f"CAST({total} AS DOUBLE)"
    nn = plan.difference(f"nn_{a}", j)
    value = total if f.function == "sum" else f"{total} / {nn}"
    return f"CASE WHEN {nn} > 0 THEN {value} END"


def _preceding(window: timedelta, tile: timedelta | None) -> str:
    """How far a frame at the probe ``2T + 1`` reaches back: to ``2 lower_W(T) + 2``, the
    first event after lower_W(T). A constant for exact windows (faster in DuckDB)."""
    if tile is None:
        return str(2 * micros(window) - 1)
    time = f"(({T2} - 1) // 2)"
    return f"({T2} - 2 * {lower_bound(time, window, tile)} - 2)"


def _frame_aggregate(feature: AggregateFeature, alias: str, frame: str) -> str:
    function = feature.function
    if function == "last":  # the latest event time, then the greatest value
        latest = f"CASE WHEN {alias} IS NOT NULL THEN {{'t': {T2}, 'v': {alias}}} END"
        return f"struct_extract(max({latest}) OVER {frame}, 'v')"
    sql_name = {"stddev": "stddev_samp", "variance": "var_samp"}.get(function, function)
    return f"{sql_name}({alias}) OVER {frame}"
