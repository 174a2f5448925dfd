"""The DuckDB queries of rule 2 as bucket kernels: Arrow tables in, an Arrow table out.

A distributed engine (Spark) hashes the join keys of a view's rows and of the spine into
buckets and runs, per bucket, exactly the SQL the DuckDB engine runs over a whole
dataset (`point_in_time`, `aggregations`), over the bucket's rows registered in a fresh
in-memory DuckDB connection. Every entity's rows are in one bucket, so a bucket's answer
is the whole answer for its entities, and the results equal the DuckDB engine's by
construction: there is one rendering of the rules, not one per engine.

Rows arrive as the distributed engine scanned them (its types, uncast), with
`file_index` and `file_row_number` columns when they come from Parquet files (rule 2's
last tie-breaker, made by `view_rows` exactly as for `read_parquet`). The kernels are
plain functions of picklable data (`ViewSpec`), so an executor can run them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa

from almanac.definitions.aggregation import AggregationView
from almanac.definitions.feature_view import FeatureView
from almanac.errors import InputError
from almanac.offline.duckdb.aggregations import aggregation_part, tiles_reader
from almanac.offline.duckdb.point_in_time import (
    SPINE,
    JoinPart,
    PointPart,
    historical_query,
    history_query,
    latest_query,
    newest_query,
    prepare_parts,
    rows_query,
    view_rows,
)
from almanac.offline.duckdb.sources import Source, SourceScan, describe

FILE_INDEX = "file_index"
FILE_ROW = "file_row_number"
_ROWS = "__almanac_rows"
_DATA_ERRORS = (
    duckdb.ConversionException,
    duckdb.InvalidInputException,
    duckdb.BinderException,
    duckdb.OutOfRangeException,
)
_counter = itertools.count()


@dataclass(frozen=True)
class ViewSpec:
    """What a kernel needs to know of one view (definitions only: it pickles)."""

    view: FeatureView
    source: Source
    keys: dict[str, str]
    file_order: bool  # rows carry FILE_INDEX and FILE_ROW
    label: str  # the source (and path) for error messages
    drop: tuple[str, ...] = ()  # columns the engine added (its bucket number)


def connect() -> duckdb.DuckDBPyConnection:
    """A fresh connection for one bucket: one thread (the engine runs buckets in
    parallel), UTC, no extension downloads."""
    con = duckdb.connect(":memory:", config={"threads": 1, "autoinstall_known_extensions": False})
    con.execute("SET TimeZone = 'UTC'")
    return con


def _scan(con: duckdb.DuckDBPyConnection, spec: ViewSpec, rows: pa.Table) -> SourceScan:
    rows = rows.drop_columns([c for c in spec.drop if c in rows.column_names])
    if rows.num_columns == 0:  # the source has no data at all
        return SourceScan("", {}, spec.file_order, empty=True, label=spec.label)
    name = f"{_ROWS}_{next(_counter)}"
    con.register(name, rows)
    columns = describe(con, name, spec.label)
    columns.pop(FILE_INDEX, None)
    columns.pop(FILE_ROW, None)
    return SourceScan(name, columns, spec.file_order, label=spec.label)


def _run(
    con: duckdb.DuckDBPyConnection,
    query: str,
    schema: pa.Schema,
    what: str,
    parts: list[JoinPart | PointPart] | None = None,
) -> pa.Table:
    try:
        prepare_parts(con, parts or [])
        table = con.sql(query).to_arrow_table()
    except _DATA_ERRORS as error:
        message = str(error).strip().splitlines()[0]
        raise InputError(f"{what}: the data does not match the definitions: {message}") from None
    return table if table.schema == schema else table.cast(schema)


def point_in_time(
    spec: ViewSpec,
    refs: list[Any],
    low: datetime | None,
    high: datetime | None,
    schema: pa.Schema,
    spine: pa.Table,
    rows: pa.Table,
) -> pa.Table:
    """One bucket of a training set: ROW_ID and the features `refs` (FeatureRefs of
    one view) for each spine row (ROW_ID, join keys, TS), by rule 2 or, for an
    aggregation view, its windows. `low`/`high`: the whole spine's time range."""
    con = connect()
    try:
        scan = _scan(con, spec, rows)
        view = spec.view
        part: JoinPart | PointPart
        if isinstance(view, AggregationView):
            part = aggregation_part(scan, spec.source, view, spec.keys, refs, low, high)
        else:
            lower = None if view.ttl is None or low is None else low - view.ttl
            wanted = [ref.field for ref in refs]
            found = view_rows(scan, spec.source, view, spec.keys, wanted, lower, high)
            part = JoinPart(found, view.ttl, [(r.field.name, r.output_name) for r in refs])
        con.register(SPINE, spine)
        query = historical_query([part], [r.output_name for r in refs], with_row_id=True)
        return _run(con, query, schema, f"feature view '{view.name}'", [part])
    finally:
        con.close()


def latest(
    spec: ViewSpec, start: datetime | None, end: datetime, schema: pa.Schema, rows: pa.Table
) -> pa.Table:
    """One bucket of `latest_rows`: per entity, the row that wins rule 2 at `end`."""
    return _over_rows(spec, start, end, schema, rows, latest_query)


def rows(
    spec: ViewSpec,
    start: datetime | None,
    end: datetime | None,
    schema: pa.Schema,
    table: pa.Table,
) -> pa.Table:
    """One partition of `rows`: its rows typed as the view declares, within the bounds."""
    return _over_rows(spec, start, end, schema, table, rows_query)


def _over_rows(
    spec: ViewSpec,
    start: datetime | None,
    end: datetime | None,
    schema: pa.Schema,
    table: pa.Table,
    query: Callable[..., str],  # latest_query or rows_query
) -> pa.Table:
    """`query` over one partition's rows of the view, within the bounds."""
    con = connect()
    try:
        scan = _scan(con, spec, table)
        found = view_rows(scan, spec.source, spec.view, spec.keys, None, start, end)
        return _run(con, query(found, start, end), schema, f"feature view '{spec.view.name}'")
    finally:
        con.close()


def newest(spec: ViewSpec, table: pa.Table) -> pa.Table:
    """One partition's latest event time (one row; null for none)."""
    con = connect()
    try:
        scan = _scan(con, spec, table)
        schema = pa.schema([("newest", pa.timestamp("us", tz="UTC"))])
        query = newest_query(scan, spec.source, spec.keys)
        return _run(con, query, schema, f"feature view '{spec.view.name}'")
    finally:
        con.close()


def tiles(spec: ViewSpec, start: datetime | None, end: datetime | None, rows: pa.Table) -> pa.Table:
    """One bucket of an aggregation view's tiles at `end` (see `tiles_reader`)."""
    assert isinstance(spec.view, AggregationView)
    con = connect()
    try:
        scan = _scan(con, spec, rows)
        query, schema = tiles_reader(scan, spec.source, spec.view, spec.keys, start, end)
        return _run(con, query, schema, f"tiles of '{spec.view.name}'")
    finally:
        con.close()


def history(
    spec: ViewSpec,
    key: dict[str, Any],
    at: datetime | None,
    ttl: timedelta | None,
    rows: pa.Table,
) -> pa.Table:
    """One entity's timeline (`history_query`) over its rows."""
    from almanac.definitions.types import arrow_type
    from almanac.semantics.validate import UTC_US

    con = connect()
    try:
        scan = _scan(con, spec, rows)
        found = view_rows(scan, spec.source, spec.view, spec.keys)
        fields = [pa.field("event_timestamp", UTC_US)]
        if found.has_created:
            fields.append(pa.field("created_timestamp", UTC_US))
        fields += [pa.field(f.name, arrow_type(f.dtype)) for f in found.features]
        if at is not None:
            fields.append(pa.field("selected", pa.bool_()))
        query = history_query(found, key, at, ttl)
        return _run(con, query, pa.schema(fields), "value_history")
    finally:
        con.close()
