"""The DuckDB offline engine: Parquet/CSV/SQL sources, queried in process.

Set-based throughout: the entity rows go to DuckDB as one Arrow table (only the join
keys, the timestamp and a row id — labels stay in Python untouched), the point-in-time
SQL comes from `point_in_time`, and results come back as Arrow record batches. DuckDB
uses `offline.threads` (default: all cores), `offline.memory_limit`, and spills to
`offline.temp_directory` beyond it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from almanac.config import RepoConfig
from almanac.definitions.aggregation import AggregationView
from almanac.definitions.feature_view import FeatureView
from almanac.definitions.types import Int64, arrow_type
from almanac.errors import InputError
from almanac.offline.aggregations import aggregation_part, tiles_reader
from almanac.offline.engine import OfflineEngine
from almanac.offline.frames import (
    UTC_US,
    key_column,
    to_arrow,
    to_utc_us,
    utc_timestamps,
)
from almanac.offline.point_in_time import (
    ROW_ID,
    SPINE,
    TS,
    JoinPart,
    PointPart,
    historical_query,
    history_query,
    latest_query,
    view_rows,
)
from almanac.offline.retrieval import RetrievalJob
from almanac.offline.source_check import check_views
from almanac.offline.sources import SourceScan, describe
from almanac.offline.transformations import scan_view
from almanac.offline.writer import StagedFile, prepare_batch, stage_parquet, target_folder
from almanac.registry.catalog import Catalog, FeatureRef
from almanac.times import to_utc

# DuckDB errors that mean "the data is not what the definitions say" (a value that does
# not cast, a file that vanished or is corrupt) rather than a bug.
_DATA_ERRORS = (
    duckdb.ConversionException,
    duckdb.InvalidInputException,
    duckdb.IOException,
    duckdb.BinderException,
)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class DuckDBEngine(OfflineEngine):
    def __init__(self, config: RepoConfig) -> None:
        self.config = config
        temp = config.resolve_path(config.offline.temp_directory)
        # DuckDB creates only the last folder of the path when it first spills.
        temp.parent.mkdir(parents=True, exist_ok=True)
        # Relative paths in SQL sources (read_parquet('data/x.parquet')) are read from the
        # repo folder, like FileSource paths, whatever the process's working directory.
        settings: dict[str, Any] = {
            "temp_directory": str(temp),
            "file_search_path": str(config.repo_path),
            # A source naming an extension's function must not download it while `plan`
            # reads its schema: extensions are installed deliberately, or not at all.
            "autoinstall_known_extensions": False,
        }
        if config.offline.memory_limit:
            settings["memory_limit"] = config.offline.memory_limit
        if config.offline.threads:
            settings["threads"] = config.offline.threads
        self._con = duckdb.connect(":memory:", config=settings)

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        # One connection per job: jobs may run from several threads.
        cursor = self._con.cursor()
        cursor.execute("SET TimeZone = 'UTC'")
        return cursor

    # ---- training sets -------------------------------------------------------------------

    def get_historical_features(
        self,
        catalog: Catalog,
        entity_df: Any,
        refs: list[FeatureRef],
        timestamp_field: str = "event_timestamp",
    ) -> RetrievalJob:
        if not refs:
            raise InputError("no features requested")
        cursor = self._cursor()
        table = to_arrow(entity_df, cursor)
        taken = set(table.column_names)
        for ref in refs:
            if ref.output_name in taken:
                raise InputError(
                    f"feature '{ref.ref}' would be named '{ref.output_name}', which is already "
                    "a column of entity_df; rename that column or pass full_feature_names=True"
                )

        by_view: dict[str, list[FeatureRef]] = {}
        for ref in refs:
            by_view.setdefault(ref.view, []).append(ref)
        views = [catalog.view(name) for name in by_view]

        # The narrow spine DuckDB sees: row id, join keys (declared types), UTC time.
        times = utc_timestamps(table, timestamp_field, cursor, "entity_df")
        entities = table.set_column(
            table.column_names.index(timestamp_field), timestamp_field, times
        )
        spine: dict[str, Any] = {ROW_ID: _row_ids(table.num_rows)}
        key_types: dict[str, tuple[str, str]] = {}
        for view in views:
            for key, dtype in catalog.join_keys(view).items():
                owner = f"feature view '{view.name}'"
                if key in key_types and key_types[key][0] != dtype:
                    raise InputError(
                        f"join key '{key}' is {key_types[key][0]} for {key_types[key][1]} but "
                        f"{dtype} for {owner}; these views cannot be joined in one call"
                    )
                key_types[key] = (dtype, owner)
                spine[key] = key_column(table, key, dtype, "entity_df", owner)
        spine[TS] = to_utc_us(times)
        narrow = pa.table(spine)

        schema = pa.schema([(ref.output_name, arrow_type(ref.field.dtype)) for ref in refs])
        if table.num_rows == 0:
            return RetrievalJob(entities, schema, None)
        low, high = _time_range(narrow.column(TS))
        parts: list[JoinPart | PointPart] = []
        for view in views:
            source = catalog.source_of(view)
            if isinstance(view, AggregationView):
                keys = catalog.join_keys(view)
                since = None if low is None else low - view.reach
                scan = scan_view(cursor, self.config, source, view, since, high)
                parts.append(aggregation_part(scan, source, view, keys, by_view[view.name], low, high))  # fmt: skip
                continue
            wanted = [ref.field for ref in by_view[view.name]]
            lower = None if view.ttl is None or low is None else low - view.ttl
            scan = scan_view(cursor, self.config, source, view, lower, high)
            rows = view_rows(scan, source, view, catalog.join_keys(view), wanted, lower, high)
            outputs = [(ref.field.name, ref.output_name) for ref in by_view[view.name]]
            parts.append(JoinPart(rows, view.ttl, outputs))
        query = historical_query(parts, [ref.output_name for ref in refs])
        cursor.register(SPINE, narrow)

        def produce(batch_rows: int) -> pa.RecordBatchReader:
            return _reader(cursor, query, schema, batch_rows, "get_historical_features")

        return RetrievalJob(entities, schema, produce)

    # ---- materialization and audits ---------------------------------------------------------

    def latest_rows(
        self, catalog: Catalog, view: FeatureView, start: datetime | None, end: datetime
    ) -> pa.RecordBatchReader:
        end = to_utc(end, "end")
        start = None if start is None else to_utc(start, "start")
        if start is not None and start > end:
            raise InputError(f"start {start.isoformat()} is after end {end.isoformat()}")
        keys = catalog.join_keys(view)
        for reserved in ("event_timestamp", "created_timestamp"):
            if reserved in keys or reserved in view.feature_names:
                raise InputError(
                    f"feature view '{view.name}' has a column named '{reserved}', which "
                    "latest_rows uses for the row's times"
                )
        cursor = self._cursor()
        source = catalog.source_of(view)
        scan = scan_view(cursor, self.config, source, view, start, end)
        rows = view_rows(scan, source, view, keys, None, start, end)
        schema = pa.schema(
            [(k, arrow_type(t)) for k, t in keys.items()]
            + [(f.name, arrow_type(f.dtype)) for f in view.features]
            + [("event_timestamp", UTC_US)]
            + ([("created_timestamp", UTC_US)] if rows.has_created else [])
        )
        return _reader(cursor, latest_query(rows, start, end), schema, 128 * 1024, "latest_rows")

    def aggregation_tiles(
        self, catalog: Catalog, view: AggregationView, start: datetime | None, end: datetime
    ) -> pa.RecordBatchReader:
        end = to_utc(end, "end")
        start = None if start is None else to_utc(start, "start")
        cursor = self._cursor()
        source = catalog.source_of(view)
        since = end - view.reach
        scan = scan_view(cursor, self.config, source, view, since, end)
        query, schema = tiles_reader(scan, source, view, catalog.join_keys(view), start, end)
        return _reader(cursor, query, schema, 16 * 1024, f"tiles of '{view.name}'")

    def check_views(self, catalog: Catalog, names: list[str]) -> None:
        check_views(self._cursor(), self.config, catalog, names)

    def tiles_of_rows(self, catalog: Catalog, view: AggregationView, rows: pa.Table) -> pa.Table:
        cursor = self._cursor()
        name = f"__almanac_pushed_{id(rows)}"
        cursor.register(name, rows)
        try:
            label = f"rows pushed to '{view.source}'"
            scan = SourceScan(name, describe(cursor, name, label), False, label=label)
            source = catalog.source_of(view)
            query, schema = tiles_reader(scan, source, view, catalog.join_keys(view), None, None)
            return _reader(cursor, query, schema, 16 * 1024, label).read_all()
        finally:
            cursor.unregister(name)

    def value_history(
        self,
        catalog: Catalog,
        view: FeatureView,
        key: dict[str, Any],
        at: datetime | None = None,
    ) -> pa.Table:
        keys = catalog.join_keys(view)
        unknown = [k for k in key if k not in keys]
        missing = [k for k in keys if k not in key]
        if unknown or missing:
            raise InputError(
                f"feature view '{view.name}' is keyed by {', '.join(keys)}"
                + (f"; unknown key(s): {', '.join(unknown)}" if unknown else "")
                + (f"; missing key(s): {', '.join(missing)}" if missing else "")
            )
        values = {k: _key_value(k, v, keys[k]) for k, v in key.items()}
        at = None if at is None else to_utc(at, "at")
        cursor = self._cursor()
        source = catalog.source_of(view)
        rows = view_rows(scan_view(cursor, self.config, source, view), source, view, keys)
        fields = [pa.field("event_timestamp", UTC_US)]
        if rows.has_created:
            fields.append(pa.field("created_timestamp", UTC_US))
        fields += [pa.field(f.name, arrow_type(f.dtype)) for f in rows.features]
        if at is not None:
            fields.append(pa.field("selected", pa.bool_()))
        query = history_query(rows, values, at, view.ttl)
        return _reader(cursor, query, pa.schema(fields), 128 * 1024, "value_history").read_all()

    # ---- writes ----------------------------------------------------------------------------

    def stage(self, catalog: Catalog, view: FeatureView, df: Any) -> StagedFile | None:
        source = catalog.source_of(view)
        folder, pattern = target_folder(self.config, view, source)
        cursor = self._cursor()
        try:
            table = to_arrow(df, cursor, what=f"batch for feature view '{view.name}'")
            if table.num_rows == 0:
                return None
            batch = prepare_batch(table, view, catalog.join_keys(view), source)
        finally:
            cursor.close()
        return stage_parquet(batch, folder, pattern)

    def close(self) -> None:
        self._con.close()


def _reader(
    cursor: duckdb.DuckDBPyConnection, query: str, schema: pa.Schema, batch_rows: int, what: str
) -> pa.RecordBatchReader:
    """Run `query`, streaming batches cast to `schema`; data errors become InputErrors."""
    try:
        source = cursor.sql(query).to_arrow_reader(batch_rows)
    except _DATA_ERRORS as error:
        raise _input_error(what, error) from None

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for batch in source:
                yield batch if batch.schema == schema else batch.cast(schema)
        except _DATA_ERRORS as error:
            raise _input_error(what, error) from None

    return pa.RecordBatchReader.from_batches(schema, batches())


def _time_range(times: pa.ChunkedArray) -> tuple[datetime | None, datetime | None]:
    # Via int64: a timestamp scalar's as_py() imports pandas.
    bounds = pc.min_max(times.cast(pa.int64()))
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is None or high is None:
        return None, None
    return _EPOCH + timedelta(microseconds=low), _EPOCH + timedelta(microseconds=high)


def _row_ids(count: int) -> pa.Array:
    # From a buffer: pa.array(numpy) would import pandas (seconds on a cold start).
    buffer = pa.py_buffer(np.arange(count, dtype=np.int64))
    return pa.Array.from_buffers(pa.int64(), count, [None, buffer])


def _input_error(what: str, error: Exception) -> InputError:
    message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    return InputError(f"{what}: the data does not match the definitions: {message}")


def _key_value(key: str, value: Any, dtype: str) -> Any:
    if dtype == Int64:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise InputError(f"join key '{key}' is int64; {value!r} is not an integer") from None
    return str(value)
