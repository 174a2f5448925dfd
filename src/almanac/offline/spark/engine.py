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
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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
from almanac.offline.spine import (
    ROW_ID,
    TS,
    check_latest_columns,
    entity_key,
    prepare_spine,
    rows_schema,
)
from almanac.offline.writer import StagedFile, prepare_batch, stage_parquet, target_folder
from almanac.ports.offline import OfflineEngine, OnlineTarget, write_online
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
_SIDE = "__almanac_side"  # in a training set's shuffle: 0 for spine rows, 1 for view rows
_SPINE = "__almanac_spine_"  # the prefix of the spine's columns in that shuffle
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
    ) -> _Part:
        """ROW_ID and the features `refs` of one view for every spine row: the spine's
        rows (prefixed, SIDE 0) and the view's (SIDE 1) shuffled together by their keys'
        hash, one DuckDB query per partition."""
        from pyspark.sql import functions as F

        lower, _ = rows_needed(view, low, high)
        rows, spec = self._rows(catalog, view, lower, high, [r.field.name for r in refs])
        keys = catalog.join_keys(view)
        spine_columns = (ROW_ID, *keys, TS)
        mine = spine.select(
            *[F.col(f"`{c}`").alias(_SPINE + c) for c in spine_columns],
            self._bucket(keys).alias(BUCKET),
            F.lit(0).cast("byte").alias(_SIDE),
        )
        view_columns = tuple(c for c in rows.columns if c != BUCKET)
        both = mine.unionByName(rows.withColumn(_SIDE, F.lit(1).cast("byte")), allowMissingColumns=True)  # fmt: skip
        schema = pa.schema(
            [(ROW_ID, pa.int64())] + [(r.output_name, arrow_type(r.field.dtype)) for r in refs]
        )
        run = _SpineAndRows(
            partial(kernel.point_in_time, spec, refs, low, high, schema),
            spine_columns,
            view_columns,
        )
        return _Part(self._shuffle(both), run, schema)

    # ---- materialization and audits ---------------------------------------------------------

    def _latest_df(
        self, catalog: Catalog, view: FeatureView, start: datetime | None, end: datetime
    ) -> tuple[DataFrame, pa.Schema]:
        from pyspark.sql.pandas.types import from_arrow_schema

        rows, spec, schema = self._typed_rows(catalog, view, start, end)
        run = _Partition(partial(kernel.latest, spec, start, end, schema))
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
        run = _Partition(partial(kernel.tiles, spec, start, end))
        return self._shuffle(rows).mapInArrow(run, from_arrow_schema(schema)), schema

    def latest_rows(
        self, catalog: Catalog, view: FeatureView, start: datetime | None, end: datetime
    ) -> pa.RecordBatchReader:
        start, end = _bounds(start, end)
        df, schema = self._latest_df(catalog, view, start, end)
        return _collect(df, schema, f"latest rows of feature view '{view.name}'")

    def newest_event(self, catalog: Catalog, view: FeatureView) -> datetime | None:
        """Each partition's latest event time, by the kernel where it is; the latest of
        those on the driver."""
        rows, spec = self._rows(catalog, view, None, None, [])
        run = _Partition(partial(kernel.newest, spec))
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
        run = _Partition(partial(kernel.rows, spec, start, end, schema))
        df = rows.mapInArrow(run, from_arrow_schema(schema))
        return pa.RecordBatchReader.from_batches(schema, _stream(df, schema, f"rows of '{view.name}'"))  # fmt: skip

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
    """A training set computed by Spark, one part per view (ROW_ID and its features).
    `to_arrow` runs the parts side by side, each partition's answer coming back as
    Arrow IPC bytes, and puts each part's rows in spine order on the driver (a
    permutation of row ids: one take per part). Streaming (`to_arrow_batches`,
    `to_parquet`) has Spark join the parts and sort them, and fetches one partition at a
    time, so only one partition's features are in memory."""

    def __init__(
        self, entities: pa.Table, features: pa.Schema, parts: list[_Part], what: str
    ) -> None:
        def produce(batch_rows: int) -> pa.RecordBatchReader:
            joined = parts[0].typed()
            for part in parts[1:]:
                joined = joined.join(part.typed(), ROW_ID)
            ordered = joined.select(ROW_ID, *[f"`{f.name}`" for f in features]).orderBy(ROW_ID)
            return pa.RecordBatchReader.from_batches(features, _features(ordered, features, what))

        super().__init__(entities, features, produce)
        self._parts = parts
        self._what = what

    def to_arrow(self) -> pa.Table:
        if self._table is None and self._entities.num_rows:
            with ThreadPoolExecutor(len(self._parts)) as pool:
                answers = list(pool.map(self._fetch, self._parts))
            columns: dict[str, pa.ChunkedArray] = {}
            for answer in answers:
                values = answer.drop_columns([ROW_ID]).take(pc.sort_indices(answer[ROW_ID]))
                columns.update(zip(values.column_names, values.columns, strict=True))
            table = self._entities
            for field in self._features:
                table = table.append_column(field, columns[field.name].cast(field.type))
            self._table = table
        return super().to_arrow()

    def _fetch(self, part: _Part) -> pa.Table:
        with job(self._what):
            blobs = part.packed().toArrow().column("ipc")
        tables = [_unpack(blob.as_buffer()) for chunk in blobs.chunks for blob in chunk]
        return pa.concat_tables(tables) if tables else part.schema.empty_table()


@dataclass(frozen=True)
class _Part:
    """One view's part of a training set: the shuffled union of spine and view rows,
    and the kernel that answers each of its partitions."""

    shuffled: DataFrame
    run: _SpineAndRows
    schema: pa.Schema

    def typed(self) -> DataFrame:
        from pyspark.sql.pandas.types import from_arrow_schema

        return self.shuffled.mapInArrow(self.run, from_arrow_schema(self.schema))

    def packed(self) -> DataFrame:
        """Each partition's answer as one row of Arrow IPC bytes (no conversion to
        Spark's rows and back)."""
        return self.shuffled.mapInArrow(replace(self.run, pack=True), "ipc binary")


@dataclass(frozen=True)
class _Partition:
    """A kernel over one partition's rows, as one table. (pyspark inspects a function's
    type hints and fails on a `functools.partial`; an object without hints is fine.)"""

    run: Callable[[pa.Table], pa.Table]

    def __call__(self, batches):  # type: ignore[no-untyped-def]
        table = _whole(batches)
        if table is not None:
            yield from self.run(table).to_batches()


@dataclass(frozen=True)
class _SpineAndRows:
    """A training set's kernel over one partition of its shuffle: the spine's rows
    (SIDE 0, their columns prefixed) and the view's rows (SIDE 1) taken apart."""

    run: Callable[[pa.Table, pa.Table], pa.Table]
    spine_columns: tuple[str, ...]
    view_columns: tuple[str, ...]
    pack: bool = False  # yield the answer as one row of Arrow IPC bytes

    def __call__(self, batches):  # type: ignore[no-untyped-def]
        table = _whole(batches)
        if table is None:
            return
        is_spine = pc.equal(table.column(_SIDE), 0)
        spine = table.filter(is_spine)
        if spine.num_rows == 0:
            return
        spine = spine.select([_SPINE + c for c in self.spine_columns])
        spine = spine.rename_columns(list(self.spine_columns))
        rows = table.filter(pc.invert(is_spine)).select(list(self.view_columns))
        answer = self.run(spine, rows)
        if self.pack:
            yield _ipc_row(answer)
        else:
            yield from answer.to_batches()


def _whole(batches: Iterator[pa.RecordBatch]) -> pa.Table | None:
    """A partition's batches as one table (None if it has no rows)."""
    kept = [batch for batch in batches if batch.num_rows]
    return pa.Table.from_batches(kept) if kept else None


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
            for batch in _unpack(pa.py_buffer(row.ipc)).to_batches():
                yield batch if schema is None or batch.schema == schema else batch.cast(schema)


def _collect(df: DataFrame, schema: pa.Schema, what: str) -> pa.RecordBatchReader:
    """`df` collected in one job (materialization does not come here: its executors
    write the online store themselves)."""
    with job(what):
        table = df.toArrow()
    return pa.RecordBatchReader.from_batches(schema, table.cast(schema).to_batches())


def _pack(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if batch.num_rows:
            yield _ipc_row(pa.Table.from_batches([batch]))


def _ipc_row(table: pa.Table) -> pa.RecordBatch:
    """`table` as a one-row batch of its Arrow IPC stream bytes."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return pa.RecordBatch.from_pydict({"ipc": pa.array([sink.getvalue().to_pybytes()], pa.binary())})  # fmt: skip


def _unpack(blob: pa.Buffer) -> pa.Table:
    with pa.ipc.open_stream(blob) as reader:
        return reader.read_all()


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
    """`time_range` with the end a materialization always has."""
    low, high = time_range(start, end)
    assert high is not None
    return low, high


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
