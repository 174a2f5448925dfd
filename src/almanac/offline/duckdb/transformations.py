"""Reading a view's rows through its transformation (SQL or Python), in one place.

`scan_view` is what the engine calls wherever it reads a view's source (training sets,
materialization, value history, aggregation tiles), so every reader sees the same
transformed rows. A SQL transformation becomes a subquery over the CTE ``source``; a
Python one is run over the source's record batches and its output registered with
DuckDB as an Arrow table. The caller passes the event times it will read (`since`,
`until`), so a Python function only sees the source rows in that span (with the
Parquet row groups outside it skipped), not the whole history: it keeps each row's
event time, so rows outside the span could not be read anyway. Transformed rows have no stable file order, so exact
(keys, event time) ties are broken by value order (see `point_in_time`).
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from almanac.config import RepoConfig
from almanac.definitions.feature_view import FeatureView
from almanac.definitions.transformations import PythonTransformation, SqlTransformation
from almanac.errors import InputError
from almanac.offline.duckdb.point_in_time import raw_time_bounds
from almanac.offline.duckdb.readers import to_arrow
from almanac.offline.duckdb.sources import Source, SourceScan, describe, quote, scan_source
from almanac.offline.duckdb.sql_check import check_select

_BATCH_ROWS = 256 * 1024
_counter = itertools.count()


def scan_view(
    con: duckdb.DuckDBPyConnection,
    config: RepoConfig,
    source: Source,
    view: FeatureView,
    since: datetime | None = None,
    until: datetime | None = None,
) -> SourceScan:
    """The relation of `view`'s rows: its source, transformed if the view says so. The
    caller reads only rows with event times in [since, until] (None: unbounded)."""
    scan = scan_source(con, config, source)
    transformation = view.transformation
    if transformation is None or scan.empty:
        return scan
    columns = ", ".join(quote(c) for c in scan.columns)
    base = f"SELECT {columns} FROM {scan.relation}"
    if isinstance(transformation, PythonTransformation) and source.timestamp_field in scan.columns:
        bounds = raw_time_bounds(scan, source.timestamp_field, since, until)
        if bounds:
            base += f" WHERE {' AND '.join(bounds)}"
    label = f"transformation of feature view '{view.name}'"
    if isinstance(transformation, SqlTransformation):
        check_select(transformation.query, label)
        query = transformation.query.strip().rstrip(";")
        relation = f"(WITH source AS ({base}) {query})"
        return SourceScan(relation, describe(con, relation, label), False, label=label)
    assert isinstance(transformation, PythonTransformation)
    table = _run_python(con, base, transformation, config, label)
    name = f"__almanac_transformed_{next(_counter)}"
    con.register(name, table)
    return SourceScan(name, describe(con, name, label), False, label=label)


def _run_python(
    con: duckdb.DuckDBPyConnection,
    base: str,
    transformation: PythonTransformation,
    config: RepoConfig,
    label: str,
) -> pa.Table:
    function = transformation.load(config.repo_path)
    reader = con.sql(base).to_arrow_reader(_BATCH_ROWS)
    outputs = []
    for batch in reader:
        result = function(_as_mode(pa.Table.from_batches([batch]), transformation.mode))
        try:
            outputs.append(to_arrow(result, con, what=f"{label} ({transformation.function})"))
        except InputError:
            raise
        except Exception as error:
            raise InputError(f"{label}: the function's result cannot be read: {error}") from None
    if not outputs:
        # No rows: run the function once on an empty batch, to learn its output columns.
        empty = reader.schema.empty_table()
        outputs.append(to_arrow(function(_as_mode(empty, transformation.mode)), con, what=label))
    try:
        return pa.concat_tables(outputs, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise InputError(f"{label}: batches returned different columns or types: {error}") from None


def _as_mode(table: pa.Table, mode: str) -> Any:
    if mode == "arrow":
        return table
    if mode == "polars":
        import polars as pl

        return pl.from_arrow(table)
    return table.to_pandas()
