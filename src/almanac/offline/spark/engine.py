"""The Spark offline engine: Spark distributes, DuckDB computes each bucket.

Rule 2 is rendered once, as the DuckDB engine's SQL. Spark scans a view's sources (see
`scans`), drops the rows outside the time span a question can use, hashes the join keys
into N buckets and shuffles; each bucket then runs the DuckDB queries over its Arrow data
inside a Python worker (`almanac.offline.duckdb.kernel`): the spine and the view's rows
of a bucket meet in `groupBy(bucket).cogroup(...).applyInArrow(...)`, latest rows and
tiles in `groupBy(bucket).applyInArrow(...)`. Every entity's rows are in one bucket, so
each bucket's answer is final and the results equal DuckDB's row for row.

Nothing is collected on the driver but the answer: a training set's features come back
sorted by row id, one partition at a time (`toLocalIterator`), beside the labels, which
never leave the driver (`RetrievalJob`); a materialization is written to the online
store by the executors themselves, each opening the store from the repo's config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from almanac.config import RepoConfig
from almanac.definitions.aggregation import AggregationView, input_dtypes
from almanac.definitions.feature_view import FeatureView
from almanac.definitions.sources import SqlSource
from almanac.definitions.transformations import PythonTransformation, SqlTransformation
from almanac.definitions.types import Int64, arrow_type
from almanac.errors import DefinitionError, InputError
from almanac.offline import frames
from almanac.offline.dialects import check_dialect
from almanac.offline.duckdb import kernel
from almanac.offline.duckdb.source_check import check_views as duckdb_check_views
from almanac.offline.duckdb.source_check import column_problems
from almanac.offline.spark.scans import Source, SparkScan, scan_view, time_filter
from almanac.offline.spark.session import SparkSettings, first_line, job, session
from almanac.offline.spine import ROW_ID, TS, check_latest_columns, entity_key, prepare_spine
from almanac.offline.writer import StagedFile, prepare_batch, stage_parquet, target_folder
from almanac.ports.offline import OfflineEngine, OnlineTarget, write_online
from almanac.ports.online import OnlineStore
from almanac.ports.retrieval import RetrievalJob
from almanac.registry.catalog import Catalog, FeatureRef
from almanac.semantics.times import to_utc
from almanac.semantics.validate import UTC_US
from almanac.semantics.windows import rows_needed

if TYPE_CHECKING:
    import duckdb
    from pyspark.sql import Column, DataFrame, SparkSession

BUCKET = "__almanac_bucket"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SparkEngine(OfflineEngine):
    settings = SparkSettings

    def __init__(self, config: RepoConfig) -> None:
        self.config = config
        self.own = config.backend_settings("offline", "spark", SparkSettings)
        self._duckdb: duckdb.DuckDBPyConnection | None = None

    @property
    def spark(self) -> SparkSession:
        """The process's session, started on first use (`plan` of a repo without
        SQL needs no JVM for its dialect check)."""
        return session(self.own)

    def _buckets(self) -> int:
        if self.own.buckets:
            return self.own.buckets
        return int(self.spark.conf.get("spark.sql.shuffle.partitions") or 200)

    def check_dialect(self, catalog: Catalog, names: list[str]) -> None:
        check_dialect(catalog, names, "spark", "Spark")

    # ---- a view's rows, bucketed ------------------------------------------------------------

    def _rows(
        self,
        catalog: Catalog,
        view: FeatureView,
        lower: datetime | None,
        upper: datetime | None,
        features: list[str] | None = None,
    ) -> tuple[DataFrame, kernel.ViewSpec]:
        """The view's rows with event times about [lower, upper] and their bucket, and
        the spec the kernels read them with."""
        from pyspark.sql import functions as F

        source = catalog.source_of(view)
        keys = catalog.join_keys(view)
        scan = scan_view(self.spark, self.config, source, view, lower, upper)
        spec = kernel.ViewSpec(view, source, keys, scan.file_order, scan.label, (BUCKET,))
        if scan.df is None:
            return self.spark.createDataFrame([], f"{BUCKET} int"), spec
        needed = _needed(view, source, keys, features, scan)
        _check_columns(scan, view, needed)
        df = time_filter(scan.df, source.timestamp_field, lower, upper)
        df = df.select(*[F.col(f"`{c}`") for c in df.columns if c in needed])
        return df.withColumn(BUCKET, self._bucket(keys)), spec

    def _bucket(self, keys: dict[str, str]) -> Column:
        """The bucket of a row: a hash of its join keys in their declared types (the
        spine's and the rows' must agree; the raw columns are kept as they are)."""
        from pyspark.sql import functions as F

        typed = [F.col(f"`{k}`").cast("long" if t == Int64 else "string") for k, t in keys.items()]
        return F.pmod(F.xxhash64(*typed), F.lit(self._buckets())).cast("int")

    # ---- training sets ----------------------------------------------------------------------

    def get_historical_features(
        self,
        catalog: Catalog,
        entity_df: Any,
        refs: list[FeatureRef],
        timestamp_field: str = "event_timestamp",
    ) -> RetrievalJob:
        from almanac.offline.duckdb.readers import parse_text

        table = self._to_arrow(entity_df, "entity_df")
        prepared = prepare_spine(
            catalog, table, refs, timestamp_field, partial(parse_text, self._local())
        )
        entities, narrow, schema = prepared.entities, prepared.narrow, prepared.features
        views, by_view, low, high = prepared.views, prepared.refs_of, prepared.low, prepared.high
        if table.num_rows == 0:
            return RetrievalJob(entities, schema, None)

        spine = self.spark.createDataFrame(narrow)
        parts = [self._join_part(catalog, view, by_view[view.name], spine, low, high) for view in views]  # fmt: skip
        result = parts[0]
        for part in parts[1:]:
            result = result.join(part, ROW_ID)
        result = result.select(ROW_ID, *[f"`{r.output_name}`" for r in refs])
        what = f"training set of {', '.join(repr(v.name) for v in views)}"
        return SparkRetrievalJob(entities, schema, result, what)

    def _join_part(
        self,
        catalog: Catalog,
        view: FeatureView,
        refs: list[FeatureRef],
        spine: DataFrame,
        low: datetime | None,
        high: datetime | None,
    ) -> DataFrame:
        """ROW_ID and the features `refs` of one view for every spine row."""
        from pyspark.sql.pandas.types import from_arrow_schema

        lower, _ = rows_needed(view, low, high)
        rows, spec = self._rows(catalog, view, lower, high, [r.field.name for r in refs])
        keys = catalog.join_keys(view)
        mine = spine.select(ROW_ID, *[f"`{k}`" for k in keys], TS)
        mine = mine.withColumn(BUCKET, self._bucket(keys))
        schema = pa.schema(
            [(ROW_ID, pa.int64())] + [(r.output_name, arrow_type(r.field.dtype)) for r in refs]
        )
        run = partial(kernel.point_in_time, spec, refs, low, high, schema)
        return (
            mine.groupBy(BUCKET)
            .cogroup(rows.groupBy(BUCKET))
            .applyInArrow(run, from_arrow_schema(schema))
        )

    # ---- materialization and audits ---------------------------------------------------------

    def _latest_df(
        self, catalog: Catalog, view: FeatureView, start: datetime | None, end: datetime
    ) -> tuple[DataFrame, pa.Schema]:
        from pyspark.sql.pandas.types import from_arrow_schema

        keys = catalog.join_keys(view)
        check_latest_columns(view, keys)
        rows, spec = self._rows(catalog, view, start, end)
        has_created = catalog.source_of(view).created_timestamp_field is not None
        schema = pa.schema(
            [(k, arrow_type(t)) for k, t in keys.items()]
            + [(f.name, arrow_type(f.dtype)) for f in view.features]
            + [("event_timestamp", UTC_US)]
            + ([("created_timestamp", UTC_US)] if has_created else [])
        )
        run = _PerBucket(partial(kernel.latest, spec, start, end, schema))
        return rows.groupBy(BUCKET).applyInArrow(run, from_arrow_schema(schema)), schema

    def _tiles_df(
        self, catalog: Catalog, view: AggregationView, start: datetime | None, end: datetime
    ) -> tuple[DataFrame, pa.Schema]:
        from pyspark.sql.pandas.types import from_arrow_schema

        keys = catalog.join_keys(view)
        rows, spec = self._rows(catalog, view, end - view.reach, end)
        schema = pa.schema(
            [(k, arrow_type(t)) for k, t in keys.items()]
            + [("event_timestamp", UTC_US), ("tiles", pa.binary())]
        )
        run = _PerBucket(partial(kernel.tiles, spec, start, end))
        return rows.groupBy(BUCKET).applyInArrow(run, from_arrow_schema(schema)), schema

    def latest_rows(
        self, catalog: Catalog, view: FeatureView, start: datetime | None, end: datetime
    ) -> pa.RecordBatchReader:
        start, end = _bounds(start, end)
        df, schema = self._latest_df(catalog, view, start, end)
        return _collect(df, schema, f"latest rows of feature view '{view.name}'")

    def aggregation_tiles(
        self, catalog: Catalog, view: AggregationView, start: datetime | None, end: datetime
    ) -> pa.RecordBatchReader:
        end = to_utc(end, "end")
        start = None if start is None else to_utc(start, "start")
        df, schema = self._tiles_df(catalog, view, start, end)
        return _collect(df, schema, f"tiles of '{view.name}'")

    def materialize(
        self,
        catalog: Catalog,
        view: FeatureView,
        start: datetime | None,
        end: datetime,
        target: OnlineTarget,
        online: OnlineStore,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Each partition of the answer is written by the executor holding it (opening
        the online store from `target`); only the row counts come to the driver."""
        if isinstance(view, AggregationView):
            end = to_utc(end, "end")
            start = None if start is None else to_utc(start, "start")
            df, schema = self._tiles_df(catalog, view, start, end)
        else:
            start, end = _bounds(start, end)
            df, schema = self._latest_df(catalog, view, start, end)
        writes = df.mapInArrow(partial(_write_partition, target, schema), "rows long")
        with job(f"materializing feature view '{view.name}'"):
            counts = [row.rows for row in writes.collect()]
        if progress is not None:
            for count in counts:
                if count:
                    progress(count)
        return sum(counts)

    def tiles_of_rows(self, catalog: Catalog, view: AggregationView, rows: pa.Table) -> pa.Table:
        label = f"rows pushed to '{view.source}'"
        spec = kernel.ViewSpec(view, catalog.source_of(view), catalog.join_keys(view), False, label)  # fmt: skip
        return kernel.tiles(spec, None, None, rows)

    def value_history(
        self,
        catalog: Catalog,
        view: FeatureView,
        key: dict[str, Any],
        at: datetime | None = None,
    ) -> pa.Table:
        from pyspark.sql import functions as F

        keys = catalog.join_keys(view)
        values = entity_key(view, keys, key)
        at = None if at is None else to_utc(at, "at")
        source = catalog.source_of(view)
        scan = scan_view(self.spark, self.config, source, view)
        spec = kernel.ViewSpec(view, source, keys, scan.file_order, scan.label)
        rows = pa.table({})
        if scan.df is not None:
            df = scan.df
            for name, value in values.items():
                if name in df.columns:
                    kind = "long" if keys[name] == Int64 else "string"
                    df = df.where(F.col(f"`{name}`").cast(kind) == F.lit(value))
            with job(f"value history of feature view '{view.name}'"):
                rows = df.toArrow()
        return kernel.history(spec, values, at, view.ttl, rows)

    def check_views(self, catalog: Catalog, names: list[str]) -> None:
        """Files and push datasets are checked by DuckDB (their footers; the same
        reading rules), Spark SQL by Spark's analysis of the query (no data is read);
        Python transformations are not checked (their columns are known by running)."""
        problems: list[str] = []
        by_files = []
        for name in names:
            view = catalog.view(name)
            source = catalog.source_of(view)
            if isinstance(view.transformation, PythonTransformation):
                continue
            if not isinstance(source, SqlSource) and not isinstance(
                view.transformation, SqlTransformation
            ):
                by_files.append(name)
                continue
            try:
                scan = scan_view(self.spark, self.config, source, view)
            except DefinitionError as error:
                problems.append(str(error))
                continue
            except InputError:
                continue  # retrieval says why
            if scan.df is not None:
                have = {f.name: _type_name(f.dataType) for f in scan.df.schema.fields}
                problems += column_problems(catalog, view, have, scan.label)
        if by_files:
            try:
                duckdb_check_views(self._local(), self.config, catalog, by_files)
            except DefinitionError as error:
                problems.append(str(error))
        if problems:
            raise DefinitionError("; ".join(dict.fromkeys(problems)))

    # ---- writes ----------------------------------------------------------------------------

    def stage(self, catalog: Catalog, view: FeatureView, df: Any) -> StagedFile | None:
        source = catalog.source_of(view)
        folder, pattern = target_folder(self.config, view, source)
        table = self._to_arrow(df, f"batch for feature view '{view.name}'")
        if table.num_rows == 0:
            return None
        batch = prepare_batch(table, view, catalog.join_keys(view), source)
        return stage_parquet(batch, folder, pattern)

    def close(self) -> None:
        # The SparkSession is the process's, shared by every engine: it stays.
        if self._duckdb is not None:
            self._duckdb.close()
            self._duckdb = None

    # ---- inputs -----------------------------------------------------------------------------

    def _local(self) -> duckdb.DuckDBPyConnection:
        """An in-process DuckDB connection for what the driver reads itself: CSV paths,
        times given as text, file footers for `check_views`."""
        if self._duckdb is None:
            import duckdb

            self._duckdb = duckdb.connect(
                ":memory:",
                config={
                    "file_search_path": str(self.config.repo_path),
                    "autoinstall_known_extensions": False,
                },
            )
        cursor = self._duckdb.cursor()
        cursor.execute("SET TimeZone = 'UTC'")
        return cursor

    def _to_arrow(self, data: Any, what: str) -> pa.Table:
        """Entity rows or a batch as Arrow: a Spark DataFrame (collected: the labels
        stay on the driver), SQL text in Spark's dialect, or what `frames` reads."""
        from almanac.offline.duckdb.readers import to_arrow as duckdb_to_arrow

        if type(data).__module__.startswith("pyspark"):
            with job(what):
                return data.toArrow()

        def read_sql(text: str, label: str) -> pa.Table:
            try:
                return self.spark.sql(text).toArrow()
            except Exception as error:
                raise InputError(f"{label}: the SQL query failed: {first_line(error)}") from None

        con = self._local()
        return frames.to_arrow(
            data,
            what,
            read_sql=read_sql,
            read_csv=lambda path, label: duckdb_to_arrow(path, con, label),
        )


def _needed(
    view: FeatureView,
    source: Source,
    keys: dict[str, str],
    features: list[str] | None,
    scan: SparkScan,
) -> set[str]:
    """The columns the kernels read (the shuffle carries only these)."""
    needed = {*keys, source.timestamp_field, kernel.FILE_INDEX, kernel.FILE_ROW}
    if source.created_timestamp_field:
        needed.add(source.created_timestamp_field)
    if isinstance(view, AggregationView):
        needed.update(input_dtypes(view.aggregations, view.columns))
    elif features is None or not scan.file_order:  # value order reads every feature
        needed.update(f.name for f in view.features)
    else:
        needed.update(features)
    return needed


class SparkRetrievalJob(RetrievalJob):
    """A training set computed by Spark: `to_arrow` collects the features in one job
    and puts them in row order on the driver (a permutation of row ids: one take);
    streaming (`to_arrow_batches`, `to_parquet`) has Spark sort them and fetches one
    partition at a time, so only one partition's features are in memory."""

    def __init__(
        self, entities: pa.Table, features: pa.Schema, result: DataFrame, what: str
    ) -> None:
        ordered = result.orderBy(ROW_ID)

        def produce(batch_rows: int) -> pa.RecordBatchReader:
            return pa.RecordBatchReader.from_batches(features, _features(ordered, features, what))

        super().__init__(entities, features, produce)
        self._result = result
        self._what = what

    def to_arrow(self) -> pa.Table:
        if self._table is None and self._entities.num_rows:
            with job(self._what):
                collected = self._result.toArrow()
            order = pc.sort_indices(collected.column(ROW_ID))
            values = collected.drop_columns([ROW_ID]).take(order).cast(self._features)
            table = self._entities
            for i, field in enumerate(self._features):
                table = table.append_column(field, values.column(i))
            self._table = table
        return super().to_arrow()


@dataclass(frozen=True)
class _PerBucket:
    """A kernel over one bucket's table. (pyspark's `applyInArrow` inspects a function's
    type hints and fails on a `functools.partial`; an object without hints is fine.)"""

    run: Callable[[pa.Table], pa.Table]

    def __call__(self, *args):  # type: ignore[no-untyped-def]
        return self.run(args[-1])  # pyspark passes (key, table) or (table)


def _check_columns(scan: SparkScan, view: FeatureView, needed: set[str]) -> None:
    """Fail now, as the DuckDB engine does, rather than in the first bucket."""
    assert scan.df is not None
    have = scan.df.columns
    missing = sorted(needed - set(have) - {kernel.FILE_INDEX, kernel.FILE_ROW})
    if missing:
        verb = "aggregated by" if isinstance(view, AggregationView) else "needed by"
        raise InputError(
            f"{scan.label}: no column {', '.join(repr(m) for m in missing)} ({verb} "
            f"{type(view).__name__.replace('View', ' view').lower()} '{view.name}'); "
            f"it has: {', '.join(c for c in have if c not in (kernel.FILE_INDEX, kernel.FILE_ROW))}"
        )


def _features(df: DataFrame, schema: pa.Schema, what: str) -> Iterator[pa.RecordBatch]:
    """The feature columns of `df` (ROW_ID first, sorted by it), batch by batch."""
    for batch in _stream(df, None, what):
        table = pa.Table.from_batches([batch]).drop_columns([ROW_ID])
        yield from table.cast(schema).to_batches()


def _stream(df: DataFrame, schema: pa.Schema | None, what: str) -> Iterator[pa.RecordBatch]:
    """`df`'s rows as Arrow batches, partition after partition, in order: each
    partition's batches are sent as Arrow IPC bytes (one row per batch), so only one
    partition is on the driver at a time."""
    packed = df.mapInArrow(_pack, "ipc binary")
    with job(what):
        for row in packed.toLocalIterator(prefetchPartitions=True):
            with pa.ipc.open_stream(pa.py_buffer(row.ipc)) as reader:
                for batch in reader:
                    yield batch if schema is None or batch.schema == schema else batch.cast(schema)


def _collect(df: DataFrame, schema: pa.Schema, what: str) -> pa.RecordBatchReader:
    """`df` collected in one job (materialization does not come here: its executors
    write the online store themselves)."""
    with job(what):
        table = df.toArrow()
    return pa.RecordBatchReader.from_batches(schema, table.cast(schema).to_batches())


def _pack(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if batch.num_rows == 0:
            continue
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        yield pa.RecordBatch.from_pydict(
            {"ipc": pa.array([sink.getvalue().to_pybytes()], pa.binary())}
        )


def _write_partition(
    target: OnlineTarget, schema: pa.Schema, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """In an executor: write this partition's rows to the online store (the store's
    monotonic rule makes a retried task harmless); yield how many."""
    from almanac.online import open_online_store

    store = open_online_store(target.config)
    try:
        typed = (b if b.schema == schema else b.cast(schema) for b in batches if b.num_rows)
        written = write_online(typed, target, store)
    finally:
        store.close()
    yield pa.RecordBatch.from_pydict({"rows": pa.array([written], pa.int64())})


def _bounds(start: datetime | None, end: datetime) -> tuple[datetime | None, datetime]:
    end = to_utc(end, "end")
    start = None if start is None else to_utc(start, "start")
    if start is not None and start > end:
        raise InputError(f"start {start.isoformat()} is after end {end.isoformat()}")
    return start, end


# Spark's types by the DuckDB names `column_problems` compares (numeric or not matters).
_TYPE_NAMES = {
    "ByteType": "TINYINT",
    "ShortType": "SMALLINT",
    "IntegerType": "INTEGER",
    "LongType": "BIGINT",
    "FloatType": "FLOAT",
    "DoubleType": "DOUBLE",
    "DecimalType": "DECIMAL",
    "BooleanType": "BOOLEAN",
    "StringType": "VARCHAR",
    "BinaryType": "BLOB",
    "DateType": "DATE",
    "TimestampType": "TIMESTAMP WITH TIME ZONE",
    "TimestampNTZType": "TIMESTAMP",
}


def _type_name(kind: Any) -> str:
    """A Spark type by its DuckDB name (what `column_problems` compares)."""
    name: str = _TYPE_NAMES.get(type(kind).__name__) or kind.simpleString().upper()
    return name
