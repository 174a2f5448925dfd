"""The Spark offline engine: Spark distributes, DuckDB computes each partition.

Rule 2 is rendered once, as the DuckDB engine's SQL. Spark scans a view's sources (see
`scans`), drops the rows outside the time span a question can use, hashes the join keys
and shuffles by that hash; each partition then runs the DuckDB queries over its Arrow
data inside a Python worker (`almanac.offline.duckdb.kernel`). For a training set, the
spine's rows and the view's rows travel in one shuffle (a union, told apart by a side
column) so that a partition holds both sides of its entities: no sort, no cogroup, one
DuckDB query per partition. Every entity's rows are in one partition, so a partition's
answer is final and the results equal DuckDB's row for row.

Nothing is collected on the driver but the answer: `to_arrow` fetches each view's
features and puts them in row order beside the labels, which never leave the driver
(`RetrievalJob`); streaming has Spark join and sort them and fetches one partition at a
time; a materialization is written to the online store by the executors themselves,
each opening the store from the repo's config.

Beside this module: `scans` (a view's source as a DataFrame), `training_sets` (the
spine-and-rows shuffle and its `SparkRetrievalJob`), `partitions` (what the executors
run, and Arrow back to the driver), `source_check` (`check_views`), `session`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from almanac.config import RepoConfig
from almanac.definitions.aggregation import AggregationView, input_dtypes
from almanac.definitions.feature_view import FeatureView
from almanac.definitions.types import Int64, arrow_type
from almanac.errors import InputError
from almanac.offline import frames
from almanac.offline.dialects import check_dialect
from almanac.offline.duckdb import kernel
from almanac.offline.spark import source_check
from almanac.offline.spark.partitions import Partition, collect, stream, write_partition
from almanac.offline.spark.scans import Source, SparkScan, scan_view, time_filter
from almanac.offline.spark.session import SparkSettings, first_line, job, session
from almanac.offline.spark.training_sets import (
    Part,
    SparkRetrievalJob,
    SpineAndRows,
    spine_and_rows,
)
from almanac.offline.spine import (
    ROW_ID,
    TS,
    check_latest_columns,
    entity_key,
    prepare_spine,
    rows_schema,
)
from almanac.offline.writer import StagedFile, prepare_batch, stage_parquet, target_folder
from almanac.ports.offline import OfflineEngine, OnlineTarget
from almanac.ports.online import OnlineStore
from almanac.ports.retrieval import RetrievalJob
from almanac.registry.catalog import Catalog, FeatureRef
from almanac.semantics.times import time_range, to_utc
from almanac.semantics.validate import UTC_US
from almanac.semantics.windows import rows_needed

if TYPE_CHECKING:
    import duckdb
    from pyspark.sql import Column, DataFrame, SparkSession

BUCKET = "__almanac_bucket"  # a hash of a row's join keys: rows are shuffled by it
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

    def _shuffle(self, df: DataFrame) -> DataFrame:
        """`df` in partitions that each hold every row of their entities: a fixed
        number (`offline.spark.buckets`) or, by default, as many as adaptive query
        execution makes of the shuffled bytes (at least the default parallelism)."""
        if self.own.buckets:
            return df.repartition(self.own.buckets, BUCKET)
        return df.repartition(BUCKET)

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
            return self.spark.createDataFrame([], f"{BUCKET} long"), spec
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
        return F.xxhash64(*typed)

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
        if table.num_rows == 0 or not refs:  # no stored feature: on-demand ones only
            return RetrievalJob(entities, schema, None)

        spine, folder = self._spine(narrow)
        try:
            parts = [self._join_part(catalog, view, by_view[view.name], spine, low, high) for view in views]  # fmt: skip
        except BaseException:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        what = f"training set of {', '.join(repr(v.name) for v in views)}"
        job = SparkRetrievalJob(entities, schema, parts, what)
        if folder is not None:  # the spine's file lives as long as the job can run
            weakref.finalize(job, shutil.rmtree, folder, ignore_errors=True)
        return job

    def _spine(self, narrow: pa.Table) -> tuple[DataFrame, str | None]:
        """The spine's row ids, keys and times as a DataFrame. A local session reads
        them from a Parquet file the driver writes (Spark's vectorized reader, nothing
        held in the JVM's heap); a cluster's executors cannot read the driver's disk, so
        there they travel inside the plan."""
        if self.own.remote or not self.own.master.startswith("local"):
            return self.spark.createDataFrame(narrow), None
        folder = tempfile.mkdtemp(prefix="almanac-spine-")
        path = os.path.join(folder, "spine.parquet")
        pq.write_table(narrow, path, compression="none")
        return self.spark.read.parquet(path), folder

    def _join_part(
        self,
        catalog: Catalog,
        view: FeatureView,
        refs: list[FeatureRef],
        spine: DataFrame,
        low: datetime | None,
        high: datetime | None,
    ) -> Part:
        """ROW_ID and the features `refs` of one view for every spine row: the spine's
        rows (prefixed, SIDE 0) and the view's (SIDE 1) shuffled together by their keys'
        hash, one DuckDB query per partition."""
        lower, _ = rows_needed(view, low, high)
        rows, spec = self._rows(catalog, view, lower, high, [r.field.name for r in refs])
        keys = catalog.join_keys(view)
        spine_columns = (ROW_ID, *keys, TS)
        both = spine_and_rows(spine, spine_columns, self._bucket(keys).alias(BUCKET), rows)
        view_columns = tuple(c for c in rows.columns if c != BUCKET)
        schema = pa.schema(
            [(ROW_ID, pa.int64())] + [(r.output_name, arrow_type(r.field.dtype)) for r in refs]
        )
        run = SpineAndRows(
            partial(kernel.point_in_time, spec, refs, low, high, schema),
            spine_columns,
            view_columns,
        )
        return Part(self._shuffle(both), run, schema)

    # ---- materialization and audits ---------------------------------------------------------

    def _latest_df(
        self, catalog: Catalog, view: FeatureView, start: datetime | None, end: datetime
    ) -> tuple[DataFrame, pa.Schema]:
        from pyspark.sql.pandas.types import from_arrow_schema

        rows, spec, schema = self._typed_rows(catalog, view, start, end)
        run = Partition(partial(kernel.latest, spec, start, end, schema))
        return self._shuffle(rows).mapInArrow(run, from_arrow_schema(schema)), schema

    def _typed_rows(
        self, catalog: Catalog, view: FeatureView, start: datetime | None, end: datetime | None
    ) -> tuple[DataFrame, kernel.ViewSpec, pa.Schema]:
        """The view's rows about [start, end] and the columns `latest_rows` and `rows`
        answer in (the kernels type them)."""
        keys = catalog.join_keys(view)
        check_latest_columns(view, keys)
        rows, spec = self._rows(catalog, view, start, end)
        has_created = catalog.source_of(view).created_timestamp_field is not None
        return rows, spec, rows_schema(view, keys, has_created)

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
        run = Partition(partial(kernel.tiles, spec, start, end))
        return self._shuffle(rows).mapInArrow(run, from_arrow_schema(schema)), schema

    def latest_rows(
        self, catalog: Catalog, view: FeatureView, start: datetime | None, end: datetime
    ) -> pa.RecordBatchReader:
        start, end = _bounds(start, end)
        df, schema = self._latest_df(catalog, view, start, end)
        return collect(df, schema, f"latest rows of feature view '{view.name}'")

    def newest_event(self, catalog: Catalog, view: FeatureView) -> datetime | None:
        """Each partition's latest event time, by the kernel where it is; the latest of
        those on the driver."""
        rows, spec = self._rows(catalog, view, None, None, [])
        run = Partition(partial(kernel.newest, spec))
        with job(f"newest event of '{view.name}'"):
            found = rows.mapInArrow(run, "newest timestamp").toArrow()
        times = [t for t in found.column("newest").to_pylist() if t is not None]
        return max(times).astimezone(UTC) if times else None

    def rows(
        self, catalog: Catalog, view: FeatureView, start: datetime | None, end: datetime | None
    ) -> pa.RecordBatchReader:
        """Each partition of the scan is typed by the kernel where it is (no shuffle)
        and streamed back one partition at a time."""
        from pyspark.sql.pandas.types import from_arrow_schema

        start, end = time_range(start, end)
        rows, spec, schema = self._typed_rows(catalog, view, start, end)
        run = Partition(partial(kernel.rows, spec, start, end, schema))
        df = rows.mapInArrow(run, from_arrow_schema(schema))
        return pa.RecordBatchReader.from_batches(schema, stream(df, schema, f"rows of '{view.name}'"))  # fmt: skip

    def aggregation_tiles(
        self, catalog: Catalog, view: AggregationView, start: datetime | None, end: datetime
    ) -> pa.RecordBatchReader:
        end = to_utc(end, "end")
        start = None if start is None else to_utc(start, "start")
        df, schema = self._tiles_df(catalog, view, start, end)
        return collect(df, schema, f"tiles of '{view.name}'")

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
        writes = df.mapInArrow(partial(write_partition, target, schema), "rows long")
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
        """DuckDB checks files and push datasets, Spark analyses SQL (no data is read;
        see `source_check`)."""
        source_check.check_views(lambda: self.spark, self.config, self._local, catalog, names)

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


def _bounds(start: datetime | None, end: datetime) -> tuple[datetime | None, datetime]:
    """`time_range` with the end a materialization always has."""
    low, high = time_range(start, end)
    assert high is not None
    return low, high
