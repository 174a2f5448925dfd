"""The SQL of rule 2 (point-in-time correctness), in one place.

Every read of feature rows — training sets, materialization, value history — is built
from the same two blocks, so they cannot disagree:

`view_rows`: a view's rows, projected to the needed columns, cast to the declared types,
bounded in time, each with a *sort key* ``{t: event time, c: created time, o: file order}``.
The row that wins for an entity at time T is the one with the greatest sort key among its
rows with event time <= T. Ties are broken, in order, by:

1. the later created time (source.created_timestamp_field; a null created time is
   the oldest);
2. for Parquet files: the later file (files are sorted by path; Almanac's appends sort
   last) and the later row in that file; for CSV and SQL sources, which have no
   stable row order: the greatest feature values, compared in schema order, nulls first.

Because the key is unique per row (or ties only rows with identical values), DuckDB's
ASOF join — which picks arbitrarily among equal inequality values — is deterministic when
it joins on the sort key instead of the bare event time, and no separate deduplication
pass is needed (measured faster than dedup-then-ASOF).

`historical_query`: one ASOF LEFT JOIN per view (a TTL in the join condition is rejected
and in WHERE would drop spine rows, so the TTL nulls the match's values instead: the match
is the latest row <= T, so if it is older than T - ttl every older row is too), ordered by
the spine's row id. `latest_query` and `history_query` use the same sort key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from almanac.definitions.feature_view import FeatureView, Field
from almanac.definitions.sources import FileSource, PushSource, SqlSource
from almanac.definitions.types import Int64
from almanac.errors import InputError
from almanac.offline.duckdb.readers import sql_timestamp
from almanac.offline.duckdb.sources import SourceScan, duckdb_type, quote
from almanac.offline.spine import ROW_ID, TS

Source = FileSource | SqlSource | PushSource

CREATED = "__almanac_created"
SORT_KEY = "__almanac_sk"
SPINE = "__almanac_spine"
# Prefilter slack: the time bounds pushed into the scan are a superset, so any rounding of
# a bound to the source column's own type (seconds, dates) cannot drop a needed row; the
# exact bounds are applied on the cast event time.
_SLACK = timedelta(days=1)
_TIME_TYPES = ("TIMESTAMP", "DATE")
_MAX_BIGINT = "9223372036854775807"


@dataclass(frozen=True)
class ViewRows:
    """The SQL of one view's rows: join keys, TS, CREATED (if any), SORT_KEY, features."""

    sql: str
    keys: dict[str, str]
    features: list[Field]
    has_created: bool
    # One row per (keys, event time), rule 2's winner (`sorted_cache`): the ASOF joins on
    # the bare event time.
    deduplicated: bool = False


def view_rows(
    scan: SourceScan,
    source: Source,
    view: FeatureView,
    keys: dict[str, str],
    features: list[Field] | None = None,
    lower: datetime | None = None,
    upper: datetime | None = None,
) -> ViewRows:
    """Rows of `view` with event times in [lower, upper] (either may be None = open).

    The bounds are pushed into the scan (Parquet row groups outside them are skipped) with
    some slack; callers apply exact bounds themselves where it matters.
    """
    wanted = list(features if features is not None else view.features)
    if not scan.file_order:
        # Value order is over *all* features, so every query picks the same winner.
        wanted += [f for f in view.features if f not in wanted]
    has_created = source.created_timestamp_field is not None
    if scan.empty:
        return ViewRows(_empty_rows(keys, wanted, has_created), keys, wanted, has_created)

    ts_col = source.timestamp_field
    needed = [*keys, ts_col, *[f.name for f in wanted]]
    if has_created:
        needed.append(str(source.created_timestamp_field))
    missing = [name for name in needed if name not in scan.columns]
    if missing:
        raise InputError(
            f"{scan.label}: no column {', '.join(repr(m) for m in missing)} "
            f"(needed by feature view '{view.name}'); it has: {', '.join(scan.columns)}"
        )

    select = [
        f"{cast_column(k, scan.columns[k], duckdb_type(t))} AS {quote(k)}" for k, t in keys.items()
    ]
    select.append(f"{cast_column(ts_col, scan.columns[ts_col], 'TIMESTAMPTZ')} AS {TS}")
    if has_created:
        created = str(source.created_timestamp_field)
        select.append(f"{cast_column(created, scan.columns[created], 'TIMESTAMPTZ')} AS {CREATED}")
    select += [f"{cast_column(f.name, scan.columns[f.name], duckdb_type(f.dtype))} AS {quote(f.name)}" for f in wanted]  # fmt: skip
    if scan.file_order:
        select.append("(file_index::BIGINT << 40) + file_row_number AS __almanac_order")

    where = [f"{quote(k)} IS NOT NULL" for k in keys] + [f"{quote(ts_col)} IS NOT NULL"]
    where += raw_time_bounds(scan, ts_col, lower, upper)
    inner = f"SELECT {', '.join(select)} FROM {scan.relation} WHERE {' AND '.join(where)}"

    if scan.file_order:
        order = "__almanac_order"
    else:
        partition = [quote(k) for k in keys] + [TS] + ([CREATED] if has_created else [])
        by = ", ".join(f"{quote(f.name)} ASC NULLS FIRST" for f in view.features)
        order = f"dense_rank() OVER (PARTITION BY {', '.join(partition)} ORDER BY {by})::BIGINT"
    created_key = f"'c': coalesce({CREATED}, '-infinity'::TIMESTAMPTZ), " if has_created else ""
    columns = [quote(k) for k in keys] + [TS] + ([CREATED] if has_created else [])
    columns += [quote(f.name) for f in wanted]
    sql = (
        f"SELECT {', '.join(columns)}, {{'t': {TS}, {created_key}'o': {order}}} AS {SORT_KEY} "
        f"FROM ({inner})"
    )
    return ViewRows(sql, keys, wanted, has_created)


def raw_time_bounds(
    scan: SourceScan, column: str, lower: datetime | None, upper: datetime | None
) -> list[str]:
    """Conditions on the raw event-time column, so that DuckDB pushes them into the scan
    and skips Parquet row groups outside [lower, upper] (widened by `_SLACK`; the exact
    bounds are applied on the cast time afterwards)."""
    raw_type = scan.columns[column].upper()
    if not raw_type.startswith(_TIME_TYPES):
        return []
    conditions = []
    if lower is not None:
        conditions.append(f"{quote(column)} >= CAST({sql_timestamp(lower - _SLACK)} AS {raw_type})")
    if upper is not None:
        conditions.append(f"{quote(column)} <= CAST({sql_timestamp(upper + _SLACK)} AS {raw_type})")
    return conditions


def cast_column(column: str, have: str, want: str) -> str:
    if have.upper() == want.upper() or (
        want == "TIMESTAMPTZ" and have == "TIMESTAMP WITH TIME ZONE"
    ):
        return quote(column)
    return f"CAST({quote(column)} AS {want})"


def _empty_rows(keys: dict[str, str], features: list[Field], has_created: bool) -> str:
    """No data yet: the right columns and types, zero rows."""
    columns = [f"NULL::{duckdb_type(t)} AS {quote(k)}" for k, t in keys.items()]
    columns.append(f"NULL::TIMESTAMPTZ AS {TS}")
    if has_created:
        columns.append(f"NULL::TIMESTAMPTZ AS {CREATED}")
    columns += [f"NULL::{duckdb_type(f.dtype)} AS {quote(f.name)}" for f in features]
    created_key = "'c': NULL::TIMESTAMPTZ, " if has_created else ""
    columns.append(f"{{'t': NULL::TIMESTAMPTZ, {created_key}'o': NULL::BIGINT}} AS {SORT_KEY}")
    return f"SELECT {', '.join(columns)} WHERE false"


def probe(rows: ViewRows, ts: str) -> str:
    """The sort key of time `ts`: greater than every row at `ts`, smaller than any later."""
    created = "'c': 'infinity'::TIMESTAMPTZ, " if rows.has_created else ""
    # A null time must match nothing (a struct with a null field compares greatest).
    return f"CASE WHEN {ts} IS NULL THEN NULL ELSE {{'t': {ts}, {created}'o': {_MAX_BIGINT}}} END"


@dataclass(frozen=True)
class JoinPart:
    """One view in a training-set query: its rows, TTL, and (feature, output name) pairs."""

    rows: ViewRows
    ttl: timedelta | None
    outputs: list[tuple[str, str]]


@dataclass(frozen=True)
class PointPart:
    """Values computed elsewhere per distinct (keys, TS) of the spine (aggregation views):
    `sql` has the keys, TS and one column per feature; spine points it lacks get
    `default` (count 0) per (column, output name, default). `prepare`, given the
    connection the query runs on (the spine registered), registers the tables `sql`
    reads: it runs before the query; `release` drops them once the query is read."""

    sql: str
    keys: list[str]
    outputs: list[tuple[str, str, str | None]]
    prepare: Callable[[Any], None] | None = None
    release: Callable[[Any], None] | None = None


def prepare_parts(connection: Any, parts: list[JoinPart | PointPart]) -> None:
    """Run the parts' `prepare` steps on `connection`, before their query."""
    for part in parts:
        if isinstance(part, PointPart) and part.prepare is not None:
            part.prepare(connection)


def release_parts(connection: Any, parts: list[JoinPart | PointPart]) -> None:
    """Run the parts' `release` steps on `connection`, once their query is read."""
    for part in parts:
        if isinstance(part, PointPart) and part.release is not None:
            part.release(connection)


def historical_query(
    parts: list[JoinPart | PointPart], order: list[str], with_row_id: bool = False
) -> str:
    """Feature columns (named and ordered as `order`) for every spine row, in spine order
    (led by ROW_ID with `with_row_id`: a distributed engine joins per-view results on it).

    The spine relation SPINE has ROW_ID, the join keys and TS (UTC timestamps).
    """
    joins, select = [], {}
    for i, part in enumerate(parts):
        alias = f"v{i}"
        if isinstance(part, PointPart):
            on = [f"s.{quote(k)} = {alias}.{quote(k)}" for k in part.keys]
            on.append(f"s.{TS} = {alias}.{TS}")
            joins.append(f"LEFT JOIN ({part.sql}) AS {alias} ON {' AND '.join(on)}")
            for column, output, default in part.outputs:
                value = f"{alias}.{quote(column)}"
                if default is not None:
                    value = f"coalesce({value}, {default})"
                select[output] = f"{value} AS {quote(output)}"
            continue
        on = [f"s.{quote(k)} = {alias}.{quote(k)}" for k in part.rows.keys]
        if part.rows.deduplicated:
            on.append(f"s.{TS} >= {alias}.{TS}")
            matched = f"{alias}.{TS}"
        else:
            on.append(f"{probe(part.rows, f's.{TS}')} >= {alias}.{SORT_KEY}")
            # The match's event time is the sort key's `t` (no separate column to carry).
            matched = f"{alias}.{SORT_KEY}.t"
        joins.append(f"ASOF LEFT JOIN ({part.rows.sql}) AS {alias} ON {' AND '.join(on)}")
        for feature, output in part.outputs:
            value = f"{alias}.{quote(feature)}"
            if part.ttl is not None:
                micros = int(part.ttl / timedelta(microseconds=1))
                fresh = f"epoch_us({matched}) >= epoch_us(s.{TS}) - {micros}"
                value = f"CASE WHEN {fresh} THEN {value} END"
            select[output] = f"{value} AS {quote(output)}"
    columns = ", ".join(
        ([f"s.{ROW_ID} AS {ROW_ID}"] if with_row_id else []) + [select[name] for name in order]
    )
    return f"SELECT {columns} FROM {SPINE} AS s {' '.join(joins)} ORDER BY s.{ROW_ID}"


def latest_query(rows: ViewRows, start: datetime | None, end: datetime) -> str:
    """Per entity key, the winning row among rows with start <= event time <= end: its
    keys, features, ``event_timestamp`` and, when the source has one, ``created_timestamp``."""
    keys = [quote(k) for k in rows.keys]
    created = [f"'{CREATED}': {CREATED}"] if rows.has_created else []
    packed = ", ".join(
        [f"'{TS}': {TS}", *created] + [f"{_field(f.name)}: {quote(f.name)}" for f in rows.features]
    )
    where = [f"{TS} <= {sql_timestamp(end)}"]
    if start is not None:
        where.append(f"{TS} >= {sql_timestamp(start)}")
    grouped = (
        f"SELECT {', '.join(keys)}, arg_max({{{packed}}}, {SORT_KEY}) AS w "
        f"FROM ({rows.sql}) WHERE {' AND '.join(where)} GROUP BY ALL"
    )
    outputs = [*keys, *[f"w.{quote(f.name)} AS {quote(f.name)}" for f in rows.features]]
    outputs.append(f"w.{TS} AS event_timestamp")
    if rows.has_created:  # the online store breaks event-time ties with it, as rule 2 does
        outputs.append(f"w.{CREATED} AS created_timestamp")
    return f"SELECT {', '.join(outputs)} FROM ({grouped})"


def rows_query(rows: ViewRows, start: datetime | None, end: datetime | None) -> str:
    """Every row with start <= event time <= end (None: open), in the columns of
    `latest_query`."""
    outputs = [quote(k) for k in rows.keys] + [quote(f.name) for f in rows.features]
    outputs.append(f"{TS} AS event_timestamp")
    if rows.has_created:
        outputs.append(f"{CREATED} AS created_timestamp")
    where = [f"{TS} >= {sql_timestamp(start)}"] if start is not None else []
    where += [f"{TS} <= {sql_timestamp(end)}"] if end is not None else []
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {', '.join(outputs)} FROM ({rows.sql}){clause}"


def newest_query(scan: SourceScan, source: Source, keys: dict[str, str]) -> str:
    """The latest event time among the source rows a view reads (rows with a key and a
    time; NULL for none), for a feature view and an aggregation view alike."""
    ts_col = source.timestamp_field
    if scan.empty:
        return "SELECT NULL::TIMESTAMPTZ AS newest"
    missing = [name for name in [*keys, ts_col] if name not in scan.columns]
    if missing:
        raise InputError(
            f"{scan.label}: no column {', '.join(repr(m) for m in missing)}; it has: "
            f"{', '.join(scan.columns)}"
        )
    where = " AND ".join(f"{quote(name)} IS NOT NULL" for name in [*keys, ts_col])
    newest = cast_column(ts_col, scan.columns[ts_col], "TIMESTAMPTZ")
    return f"SELECT max({newest}) AS newest FROM {scan.relation} WHERE {where}"


def history_query(
    rows: ViewRows, key: dict[str, object], at: datetime | None, ttl: timedelta | None
) -> str:
    """One entity's rows, oldest first; with `at`, a `selected` column marks the row a
    model would have seen at `at` (rule 2, TTL applied)."""
    where = [f"{quote(k)} = {_literal(value, rows.keys[k])}" for k, value in key.items()]
    columns = [f"{TS} AS event_timestamp"]
    if rows.has_created:
        columns.append(f"{CREATED} AS created_timestamp")
    columns += [quote(f.name) for f in rows.features]
    if at is not None:
        window = [f"{TS} <= {sql_timestamp(at)}"]
        if ttl is not None:
            window.append(f"{TS} >= {sql_timestamp(at - ttl)}")
        winner = f"max({SORT_KEY}) FILTER (WHERE {' AND '.join(window)}) OVER ()"
        columns.append(f"coalesce({SORT_KEY} = {winner}, false) AS selected")
    return (
        f"SELECT {', '.join(columns)} FROM ({rows.sql}) WHERE {' AND '.join(where)} "
        f"ORDER BY {SORT_KEY}"
    )


def _field(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"


def _literal(value: object, dtype: str) -> str:
    if dtype == Int64:
        return str(int(value))  # type: ignore[call-overload]
    return "'" + str(value).replace("'", "''") + "'"
