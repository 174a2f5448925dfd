"""Training-set windows by running totals over one sort of events and probes.

For a spine point T and a window W with far edge ``L = lower_W(T)`` (exact: ``T - W``;
tiled: ``floor_tile(T - W)``), what the window ``(L, T]`` holds of an additive quantity
is its running total at T minus its running total at L. So each distinct spine point
(numbered ``__pid``) becomes *probes*: one at T and one at each window's L. Probes and
events are sorted together per entity by ``__t2``, twice the time, plus 1 for probes: an
event at T (``2T``) comes before the probe at T (``2T + 1``), an event at L before the
probe at L, so the difference is exactly the events with ``L < t <= T``, whatever the
order among ties (events tie only with events, probes only with probes, which add 0).

All of it is one window specification, ``PARTITION BY key ORDER BY __t2`` (the key when it
is one integer, else ``__kid``, the entity's number in the spine), which DuckDB
sorts once (the running totals must come from an ORDER BY: DuckDB promises no input
order to ``OVER ()``):

* counts (events, non-null values, island starts and ends below) are packed four to a
  HUGEINT, 31 bits each, and summed once per word; a packed difference has no borrows,
  each field's difference being in [0, 2**31). The number of events the query reads is
  checked below 2**31 (an error otherwise), so no field can overflow into the next.
* sum, mean: running sums in fixed point (a HUGEINT of ``round(x * 2**K)``; K per column,
  from the data: every value of exponent >= -K is an integer there, and no total can pass
  2**122), so differences keep small values next to large ones (a running double sum
  would cancel them away). A value with bits below 2**-K (K >= 122 - log2(max |x|) -
  log2(events)) loses them: below 2**-69 of the largest value at 10M events.
  Integer columns sum exactly as they are.
* count_distinct: per (keys, value), events whose coverage ``[t, until_W(t))`` (the T
  whose window holds t) overlap chain into an "island"; a value is in the window at T iff
  an island covers T, so the count is (islands started by T) - (islands whose last event
  is at or before L): a start flag and an end flag per event, from ``lag``/``lead`` over
  a sort by (keys, value, time), counted as running totals.
* min, max, last, stddev, variance: RANGE frames of the same window specification,
  read at the probes at T (segment trees).

The probes' totals are then brought back to one row per point by a GROUP BY on the point
number (an integer: cheaper than grouping by keys and time).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from almanac.definitions.aggregation import AggregateFeature, AggregationView
from almanac.offline.duckdb.point_in_time import SPINE, TS
from almanac.offline.duckdb.sources import duckdb_type, quote
from almanac.semantics.windows import micros

T = "__t"  # event (or spine) time, epoch microseconds, as `aggregations.event_rows` names it
T2 = "__t2"  # 2 * time, + 1 for probes
KID = "__kid"  # the entity's number
PID = "__pj"  # probes: point number * probe kinds + probe kind; events: NULL
_RUNNING = ("count", "count_distinct", "sum", "mean")
_INTEGER = ("int32", "int64")
_BITS = 31  # per packed count field
_PER_WORD = 4  # fields per HUGEINT word: 4 * 31 < 127
_MASK = (1 << _BITS) - 1


@dataclass(frozen=True)
class Column:
    """An aggregated column as `events` has it: its alias and dtype (None: as read)."""

    alias: str
    dtype: str | None


def _mod(value: str, g: int) -> str:
    """`value` mod `g` in [0, g), also for times before 1970 (DuckDB's % truncates)."""
    return f"((({value}) % {g}) + {g}) % {g}"


def _lower(time: str, window: timedelta, tile: timedelta | None) -> str:
    """lower_W(time), as `aggregations.lower_bound` renders it."""
    edge = f"({time} - {micros(window)})"
    if tile is None:
        return edge
    return f"({edge} - {_mod(edge, micros(tile))})"


def _until(time: str, window: timedelta, tile: timedelta | None) -> str:
    """The first T whose window no longer holds an event at `time`: ceil_tile(t) + W."""
    if tile is None:
        return f"({time} + {micros(window)})"
    g = micros(tile)
    return f"({time} + ({g} - {_mod(time, g)}) % {g} + {micros(window)})"


def running_values(
    view: AggregationView,
    keys: dict[str, str],
    events: str,
    columns: dict[str, Column],
    features: list[AggregateFeature],
) -> str:
    """One row per distinct (keys, TS) of the spine: the keys (name: dtype), TS and
    `features` (named by feature name)."""
    k = [quote(key) for key in keys]
    ks = ", ".join(k)
    tile = view.tile
    windows = list(dict.fromkeys(f.window for f in features))
    kinds = len(windows) + 1  # probe kind 0: at T; kind j: at the far edge of windows[j-1]
    kind = {w: j + 1 for j, w in enumerate(windows)}
    slow_windows = list(dict.fromkeys(f.window for f in features if f.function not in _RUNNING))

    # The events of the spine's entities, written out at each use, not a CTE: DuckDB
    # materializes a CTE read more than once (NOT MATERIALIZED notwithstanding), and
    # holding every event until the query ends cost ~440 MB on 10M events; reading the
    # files again costs less.
    events_of_spine = (
        f"(SELECT * FROM ({events}) SEMI JOIN (SELECT DISTINCT {ks} FROM {SPINE}) USING ({ks}))"
    )
    not_null = " AND ".join(f"{key} IS NOT NULL" for key in [*k, TS])
    # The sorts below partition by one integer: the key itself when it is one integer,
    # else the entity's number in the spine (`KID`), which the events and probes carry
    # instead of the keys (a string key made the hot-keys case's sort ~0.3 GB larger).
    numbered = len(keys) > 1 or next(iter(keys.values())) not in _INTEGER
    part = KID if numbered else k[0]
    stream_events = events_of_spine
    ctes = []
    # MATERIALIZED: every reference must see the same numbering; ordered, so that the
    # numbering does not depend on the order DuckDB reads the rows in.
    spine_points = f"SELECT DISTINCT {ks}, {TS} FROM {SPINE} WHERE {not_null}"
    if numbered:
        ctes.append(
            f"__k AS MATERIALIZED (SELECT {ks}, "
            f"CAST(row_number() OVER (ORDER BY {ks}) AS INTEGER) AS {KID} "
            f"FROM (SELECT DISTINCT {ks} FROM {SPINE} WHERE {not_null}))"
        )
        spine_points = f"SELECT * FROM ({spine_points}) JOIN __k USING ({ks})"
        stream_events = (
            f"(SELECT __k.{KID}, __e.* EXCLUDE ({ks}) FROM ({events}) AS __e JOIN __k USING ({ks}))"
        )
    ctes.append(
        f"__p AS MATERIALIZED (SELECT *, epoch_us({TS}) AS {T}, "
        f"row_number() OVER (ORDER BY {ks}, {TS}) AS __pid FROM ({spine_points}))"
    )

    # Packed count fields: (name, the event's increment as SQL).
    fields: list[tuple[str, str]] = [("n", "1")]
    counted = [f.column for f in features if f.column and f.function in ("count", "sum", "mean")]
    for column in dict.fromkeys(counted):
        a = columns[column].alias
        fields.append((f"nn_{a}", f"({a} IS NOT NULL)"))

    # count_distinct: island flags per (keys, value), one sort per column. The sort
    # carries, besides the keys and time, only the columns the stream needs; a value that
    # is not an integer is replaced there by its number in a dictionary of the distinct
    # values (a narrower payload and sort key than, say, strings).
    raw = list(dict.fromkeys(columns[f.column].alias for f in features if f.column and f.function != "count_distinct"))  # fmt: skip
    source = stream_events
    distinct = [f for f in features if f.function == "count_distinct"]
    for n, name in enumerate(dict.fromkeys(f.column for f in distinct if f.column)):
        a = columns[name].alias
        v = a
        if columns[name].dtype not in _INTEGER:
            v = f"__v_{a}"
            # INTEGER, not row_number's BIGINT: a narrower sort key (the island sort ran
            # ~0.3 s faster on 10M events); fewer than 2**31 values, as events are.
            ctes.append(
                f"__dict{n} AS (SELECT {a} AS __dv, "
                f"CAST(row_number() OVER (ORDER BY {a}) AS INTEGER) AS {v} "
                f"FROM (SELECT DISTINCT {a} FROM {events_of_spine} WHERE {a} IS NOT NULL))"
            )
            kept = "" if a in raw else f" EXCLUDE ({a})"
            ctes.append(
                f"__g{n} AS (SELECT __x.*{kept}, __dict{n}.{v} FROM {source} AS __x "
                f"LEFT JOIN __dict{n} ON __x.{a} = __dict{n}.__dv)"
            )
            source = f"__g{n}"
        flags = []
        for w in dict.fromkeys(f.window for f in distinct if f.column == name):
            j = kind[w]
            before = f"{T} < {_until(f'lag({T}) OVER __d', w, tile)}"
            after = f"lead({T}) OVER __d < {_until(T, w, tile)}"
            flags.append(f"({v} IS NOT NULL AND NOT coalesce({before}, false)) AS __ds_{a}_{j}")
            flags.append(f"({v} IS NOT NULL AND NOT coalesce({after}, false)) AS __de_{a}_{j}")
            fields += [(f"ds_{a}_{j}", f"__ds_{a}_{j}"), (f"de_{a}_{j}", f"__de_{a}_{j}")]
        ctes.append(
            f"__f{n} AS (SELECT *, {', '.join(flags)} FROM {source} "
            f"WINDOW __d AS (PARTITION BY {part}, {v} ORDER BY {T}))"
        )
        source = f"__f{n}"

    # Fixed-point scales of the float columns summed, and the guard of the packed fields
    # (an error past 2**31 events, read by the final WHERE, not carried through the sort).
    summed = list(dict.fromkeys(f.column for f in features if f.column and f.function in ("sum", "mean")))  # fmt: skip
    floats = [c for c in summed if columns[c].dtype not in _INTEGER]
    scales = [
        f"CASE WHEN count(*) < {1 << _BITS} THEN 0 ELSE error('aggregation view "
        f"{view.name}: more than {(1 << _BITS) - 1} events in one training-set query') END "
        f"AS __guard"
    ]
    for c in floats:
        a = columns[c].alias
        e = f"floor(log2(abs(CAST({a} AS DOUBLE))))"
        nonzero = f"FILTER (WHERE {a} <> 0)"
        scales.append(
            f"CAST(greatest(-1000, least(1000, 53 - coalesce(min({e}) {nonzero}, 0), "
            f"122 - coalesce(max({e}) {nonzero}, 0) - ceil(log2(count(*) + 1)))) AS INTEGER) "
            f"AS __k_{a}"
        )
    ctes.append(f"__s AS (SELECT {', '.join(scales)} FROM {events_of_spine})")

    # The stream: events carry their raw columns (the increments are computed from them
    # inside the window's aggregates, so the sort holds no wide HUGEINT columns), probes
    # their point number and kind.
    # count_distinct reads its column in the island sort only; the stream carries the rest.
    flag_names = [expr for _, expr in fields if expr.startswith("__d")]
    event_cols = [part, f"2 * {T} AS {T2}", f"NULL::BIGINT AS {PID}", *raw, *flag_names]
    probe_cols = [part, f"{T2}", PID]
    probe_cols += [f"NULL AS {a}" for a in raw] + [f"NULL AS {x}" for x in flag_names]
    probes = [f"SELECT {part}, 2 * {T} + 1 AS {T2}, __pid * {kinds} AS {PID} FROM __p"]
    for w, j in kind.items():
        probes.append(
            f"SELECT {part}, 2 * {_lower(T, w, tile)} + 1, __pid * {kinds} + {j} FROM __p"
        )
    rows = (
        f"SELECT {', '.join(event_cols)} FROM {source} UNION ALL "
        f"SELECT {', '.join(probe_cols)} FROM ({' UNION ALL '.join(probes)})"
    )

    spec = f"PARTITION BY {part} ORDER BY {T2}"
    running = f"({spec} ROWS UNBOUNDED PRECEDING)"
    out: list[str] = []
    words = [fields[i : i + _PER_WORD] for i in range(0, len(fields), _PER_WORD)]
    for w_index, word in enumerate(words):
        packed = " + ".join(
            f"(CAST({expr} AS HUGEINT) << {_BITS * i})" for i, (_, expr) in enumerate(word)
        )
        out.append(f"sum(CASE WHEN {PID} IS NULL THEN {packed} END) OVER {running} AS __w{w_index}")  # fmt: skip
    for c in summed:
        a = columns[c].alias
        value = f"CAST({a} AS HUGEINT)"
        if c in floats:
            # A scalar subquery, not a join: the sort then holds no scale column.
            value = (
                f"CAST(round(CAST({a} AS DOUBLE) * pow(2.0, (SELECT __k_{a} FROM __s))) AS HUGEINT)"
            )
        out.append(f"sum({value}) OVER {running} AS __sum_{a}")
    frames: dict[timedelta, str] = {}
    for w in slow_windows:
        frames[w] = f"__r{len(frames)}"
    for f in features:
        if f.function in _RUNNING:
            continue
        assert f.column is not None
        out.append(f"{_frame_aggregate(f, columns[f.column].alias, frames[f.window])} AS __x_{f.name}")  # fmt: skip
    frame_defs = [
        f"{name} AS ({spec} RANGE BETWEEN {_preceding(w, tile)} PRECEDING AND CURRENT ROW)"
        for w, name in frames.items()
    ]
    window_clause = f" WINDOW {', '.join(frame_defs)}" if frame_defs else ""
    ctes.append(f"__r AS (SELECT {PID}, {', '.join(out)} FROM ({rows}){window_clause})")

    # Back to one row per point: the totals at each probe kind.
    totals = [f"__w{i}" for i in range(len(words))] + [f"__sum_{columns[c].alias}" for c in summed]  # fmt: skip
    pivot = []
    for j in range(kinds):
        pivot += [f"any_value({x}) FILTER (WHERE {PID} % {kinds} = {j}) AS {x}_{j}" for x in totals]
    pivot += [
        f"any_value(__x_{f.name}) FILTER (WHERE {PID} % {kinds} = 0) AS __x_{f.name}"
        for f in features
        if f.function not in _RUNNING
    ]
    ctes.append(
        f"__v AS (SELECT {PID} // {kinds} AS __pid, {', '.join(pivot)} FROM __r "
        f"WHERE {PID} IS NOT NULL GROUP BY ALL)"
    )

    position = {name: (i // _PER_WORD, i % _PER_WORD) for i, (name, _) in enumerate(fields)}

    def field(name: str, j: int) -> str:
        word, i = position[name]
        return f"((coalesce(__w{word}_{j}, 0) >> {_BITS * i}) & {_MASK})"

    def diff(name: str, j: int) -> str:
        return f"({field(name, 0)} - {field(name, j)})"

    select = [f"__p.{key}" for key in k] + [f"__p.{TS}"]
    for f in features:
        j = kind[f.window]
        if f.function not in _RUNNING:
            value = f"__x_{f.name}"
        elif f.column is None:
            value = diff("n", j)
        else:
            a = columns[f.column].alias
            if f.function == "count":
                value = diff(f"nn_{a}", j)
            elif f.function == "count_distinct":
                value = f"({field(f'ds_{a}_{j}', 0)} - {field(f'de_{a}_{j}', j)})"
            else:
                nn = diff(f"nn_{a}", j)
                total = f"(coalesce(__sum_{a}_0, 0) - coalesce(__sum_{a}_{j}, 0))"
                if f.column in floats:
                    total = f"(CAST({total} AS DOUBLE) * pow(2.0, -__k_{a}))"
                elif f.function == "mean":
                    total = f"CAST({total} AS DOUBLE)"
                value = total if f.function == "sum" else f"{total} / {nn}"
                value = f"CASE WHEN {nn} > 0 THEN {value} END"
        select.append(f"CAST({value} AS {duckdb_type(f.dtype)}) AS {quote(f.name)}")
    return (
        f"WITH {', '.join(ctes)} SELECT {', '.join(select)} "
        f"FROM __v JOIN __p USING (__pid) CROSS JOIN __s WHERE __guard = 0"
    )


def _preceding(window: timedelta, tile: timedelta | None) -> str:
    """How far a frame at the probe ``2T + 1`` reaches back: to ``2 lower_W(T) + 2``, the
    first event after lower_W(T). A constant for exact windows (faster in DuckDB)."""
    if tile is None:
        return str(2 * micros(window) - 1)
    time = f"(({T2} - 1) // 2)"
    return f"({T2} - 2 * {_lower(time, window, tile)} - 2)"


def _frame_aggregate(feature: AggregateFeature, alias: str, frame: str) -> str:
    function = feature.function
    if function == "last":  # the latest event time, then the greatest value
        latest = f"CASE WHEN {alias} IS NOT NULL THEN {{'t': {T2}, 'v': {alias}}} END"
        return f"struct_extract(max({latest}) OVER {frame}, 'v')"
    sql_name = {"stddev": "stddev_samp", "variance": "var_samp"}.get(function, function)
    return f"{sql_name}({alias}) OVER {frame}"
