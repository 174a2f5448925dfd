"""The DuckDB offline engine: Parquet/CSV/SQL sources, queried in process.

Set-based throughout: the entity rows go to DuckDB as one Arrow table (only the join
keys, the timestamp and a row id — labels stay in Python untouched), the point-in-time
SQL comes from `point_in_time`, and results come back as Arrow record batches. DuckDB
uses `offline.duckdb.threads` (default: all cores), `offline.duckdb.memory_limit`, and
spills to `offline.duckdb.temp_directory` beyond it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import duckdb
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from almanac.config import RepoConfig
from almanac.definitions.aggregation import AggregationView
from almanac.definitions.feature_view import FeatureView
from almanac.definitions.types import arrow_type
from almanac.errors import InputError
from almanac.offline.dialects import check_dialect
from almanac.offline.duckdb.aggregations import aggregation_part, tiles_reader
from almanac.offline.duckdb.point_in_time import (
    SPINE,
    JoinPart,
    PointPart,
    ViewRows,
    historical_query,
    history_query,
    latest_query,
    newest_query,
    prepare_parts,
    release_parts,
    rows_query,
    view_rows,
)
from almanac.offline.duckdb.readers import parse_text, to_arrow
from almanac.offline.duckdb.sorted_cache import cached_rows
from almanac.offline.duckdb.source_check import check_views
from almanac.offline.duckdb.sources import SourceScan, describe
from almanac.offline.duckdb.transformations import scan_view
from almanac.offline.frames import UTC_US
from almanac.offline.spine import check_latest_columns, entity_key, prepare_spine, rows_schema
from almanac.offline.writer import StagedFile, prepare_batch, stage_parquet, target_folder
from almanac.ports.offline import ExpressionEvaluator, OfflineEngine
from almanac.ports.retrieval import RetrievalJob
from almanac.registry.catalog import Catalog, FeatureRef
from almanac.semantics.times import time_range, to_utc
from almanac.semantics.windows import rows_needed

# DuckDB errors that mean "the data is not what the definitions say" (a value that does
# not cast, a file that vanished or is corrupt) rather than a bug.
_DATA_ERRORS = (
    duckdb.ConversionException,
    duckdb.InvalidInputException,
    duckdb.IOException,
    duckdb.BinderException,
)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class DuckDBSettings(BaseModel):
    """`offline.duckdb` in almanac.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_limit: str | None = None  # e.g. "4GB"; DuckDB spills to temp_directory beyond it
    temp_directory: str = ".almanac/tmp"
    threads: int | None = Field(None, ge=1)
    # Keep each view's Parquet rows deduplicated and sorted for training sets
    # (`sorted_cache`): faster joins for a copy of the data on disk.
    sorted_cache: bool = True


class DuckDBEngine(OfflineEngine):
    settings = DuckDBSettings

    def __init__(self, config: RepoConfig) -> None:
        self.config = config
        own = config.backend_settings("offline", "duckdb", DuckDBSettings)
        temp = config.resolve_path(own.temp_directory)
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
        if own.memory_limit:
            settings["memory_limit"] = own.memory_limit
        if own.threads:
            settings["threads"] = own.threads
        self._sorted_cache = own.sorted_cache
        self._con = duckdb.connect(":memory:", config=settings)

    def check_dialect(self, catalog: Catalog, names: list[str]) -> None:
        check_dialect(catalog, names, "duckdb", "DuckDB")

    def expression_evaluator(self) -> ExpressionEvaluator:
        """On-demand expressions as DuckDB SQL over each batch of a training set."""
        # Imported here: the expression modules build Arrow scalars at import, which
        # imports pandas (0.3-0.4 s of every cold command that opens this engine).
        from almanac.offline.duckdb.expressions import evaluate_sql

        return partial(evaluate_sql, self._cursor())

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
        cursor = self._cursor()
        table = to_arrow(entity_df, cursor)
        spine = prepare_spine(catalog, table, refs, timestamp_field, partial(parse_text, cursor))
        low, high, schema, by_view = spine.low, spine.high, spine.features, spine.refs_of
        if table.num_rows == 0 or not refs:  # no stored feature: on-demand ones only
            return RetrievalJob(spine.entities, schema, None)
        parts: list[JoinPart | PointPart] = []
        for view in spine.views:
            source = catalog.source_of(view)
            lower, upper = rows_needed(view, low, high)
            keys = catalog.join_keys(view)
            if isinstance(view, AggregationView):
                scan = scan_view(cursor, self.config, source, view, lower, upper)
                parts.append(aggregation_part(scan, source, view, keys, by_view[view.name], low, high))  # fmt: skip
                continue
            wanted = [ref.field for ref in by_view[view.name]]
            rows = cached_rows(cursor, self.config, source, view, keys, wanted) if self._sorted_cache else None  # fmt: skip
            if rows is None:
                scan = scan_view(cursor, self.config, source, view, lower, upper)
                rows = view_rows(scan, source, view, keys, wanted, lower, high)
            outputs = [(ref.field.name, ref.output_name) for ref in by_view[view.name]]
            parts.append(JoinPart(rows, view.ttl, outputs))
        query = historical_query(parts, [ref.output_name for ref in refs])
        cursor.register(SPINE, spine.narrow)

        def produce(batch_rows: int) -> pa.RecordBatchReader:
            try:
                prepare_parts(cursor, parts)
            except _DATA_ERRORS as error:
                raise _input_error("get_historical_features", error) from None
            done = partial(release_parts, cursor, parts)
            return _reader(cursor, query, schema, batch_rows, "get_historical_features", done)

        return RetrievalJob(spine.entities, schema, produce)

    # ---- materialization and audits ---------------------------------------------------------

    def latest_rows(
        self, catalog: Catalog, view: FeatureView, start: datetime | None, end: datetime
    ) -> pa.RecordBatchReader:
        start, high = time_range(start, end)
        assert high is not None
        cursor, rows, schema = self._typed_rows(catalog, view, start, high)
        return _reader(cursor, latest_query(rows, start, high), schema, 128 * 1024, "latest_rows")

    def newest_event(self, catalog: Catalog, view: FeatureView) -> datetime | None:
        cursor = self._cursor()
        source = catalog.source_of(view)
        scan = scan_view(cursor, self.config, source, view)
        query = newest_query(scan, source, catalog.join_keys(view))
        schema = pa.schema([("newest", UTC_US)])
        table = _reader(cursor, query, schema, 1, f"newest event of '{view.name}'").read_all()
        newest: datetime | None = table.column(0)[0].as_py() if table.num_rows else None
        return newest

    def rows(
        self, catalog: Catalog, view: FeatureView, start: datetime | None, end: datetime | None
    ) -> pa.RecordBatchReader:
        start, end = time_range(start, end)
        cursor, rows, schema = self._typed_rows(catalog, view, start, end)
        return _reader(cursor, rows_query(rows, start, end), schema, 128 * 1024, f"rows of '{view.name}'")  # fmt: skip

    def _typed_rows(
        self, catalog: Catalog, view: FeatureView, start: datetime | None, end: datetime | None
    ) -> tuple[duckdb.DuckDBPyConnection, ViewRows, pa.Schema]:
        """The view's rows about [start, end], typed (what `latest_rows` and `rows`
        select from), with the columns they answer in."""
        keys = catalog.join_keys(view)
        check_latest_columns(view, keys)
        cursor = self._cursor()
        source = catalog.source_of(view)
        scan = scan_view(cursor, self.config, source, view, start, end)
        rows = view_rows(scan, source, view, keys, None, start, end)
        return cursor, rows, rows_schema(view, keys, rows.has_created)

    def aggregation_tiles(
        self, catalog: Catalog, view: AggregationView, start: datetime | None, end: datetime
    ) -> pa.RecordBatchReader:
        end = to_utc(end, "end")
        start = None if start is None else to_utc(start, "start")
        cursor = self._cursor()
        source = catalog.source_of(view)
        since, _ = rows_needed(view, end, end)
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
        values = entity_key(view, keys, key)
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
    cursor: duckdb.DuckDBPyConnection,
    query: str,
    schema: pa.Schema,
    batch_rows: int,
    what: str,
    done: Callable[[], None] | None = None,
) -> pa.RecordBatchReader:
    """Run `query`, streaming batches cast to `schema`; data errors become InputErrors.
    `done` runs once the batches are read (or the reader is dropped)."""
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
        finally:
            if done is not None:
                source.close()
                done()

    return pa.RecordBatchReader.from_batches(schema, batches())


def _input_error(what: str, error: Exception) -> InputError:
    message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    return InputError(f"{what}: the data does not match the definitions: {message}")
