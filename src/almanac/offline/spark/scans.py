"""A view's rows as a Spark DataFrame: its source scanned by Spark, transformed if the
view says so, and bounded in time before anything is shuffled.

Spark reads the columns as the source has them (nothing is cast here: the bucket
kernels cast exactly as the DuckDB engine does). Parquet rows carry rule 2's last
tie-breaker: `file_index`, the file's place in `almanac.offline.files.list_files` order
(the same list every engine reads), and `file_row_number`, Spark's `_metadata.row_index`.
CSV files are read as text (DuckDB casts each column to its declared type). SQL sources
and SQL transformations in Spark's dialect run with `spark.sql`; Python transformations
run over each partition's Arrow batches (`mapInArrow`), with their output schema learnt
by calling them once on an empty batch, as the DuckDB engine does.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq

from almanac.config import RepoConfig
from almanac.definitions.feature_view import FeatureView
from almanac.definitions.sources import FileSource, PushSource, SqlSource
from almanac.definitions.transformations import PythonTransformation, SqlTransformation
from almanac.errors import AlmanacError, DefinitionError, InputError
from almanac.offline import frames
from almanac.offline.duckdb.kernel import FILE_INDEX, FILE_ROW
from almanac.offline.files import list_files
from almanac.offline.spark.session import first_line

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

Source = FileSource | SqlSource | PushSource

# The bounds pushed before the shuffle are widened as DuckDB's `raw_time_bounds` are;
# the kernels apply the exact ones.
_SLACK = timedelta(days=1)
_PATH = "__almanac_path"
_GLOB = re.compile(r"([\[\]{}*?\\])")
_temp_view_lock = threading.Lock()
_loaded: dict[tuple[str, str, str], Any] = {}  # Python transformations, per worker
_LITERAL_PATHS = 64  # up to this many files, the file index is a map literal


@dataclass(frozen=True)
class SparkScan:
    df: DataFrame | None  # None: no data yet (an empty folder or push dataset)
    file_order: bool  # rows carry FILE_INDEX and FILE_ROW
    label: str

    @property
    def empty(self) -> bool:
        return self.df is None


def scan_source(spark: SparkSession, config: RepoConfig, source: Source) -> SparkScan:
    """The rows of `source`, as Spark reads them (schema only: nothing runs yet)."""
    if isinstance(source, SqlSource):
        label = f"SQL source '{source.name}'"
        if source.dialect != "spark":
            raise DefinitionError(
                f"{label} is written in {source.dialect} SQL; the Spark engine runs Spark "
                'SQL (dialect="spark")'
            )
        return SparkScan(_sql(spark, source.query, label), False, label)
    files, label = list_files(config, source)
    if not files:
        return SparkScan(None, False, label)
    paths = [os.path.abspath(p) for p in files]
    # Spark reads paths as glob patterns: escape theirs.
    patterns = [_GLOB.sub(r"\\\1", p) for p in paths]
    try:
        if isinstance(source, FileSource) and source.format == "csv":
            df = spark.read.options(header=True, inferSchema=False).csv(patterns)
            return SparkScan(df, False, label)
        merge, nanos = _footers(files)
        df = spark.read.option("mergeSchema", merge).parquet(*patterns)
    except Exception as error:
        message = first_line(error)
        if "magic bytes" in message or "not a parquet file" in message.lower():
            message = f"not a Parquet file ({message})"
        raise InputError(f"{label}: cannot be read: {message}") from None
    return SparkScan(_nanos_as_times(_with_file_order(spark, df, paths), nanos), True, label)


def _sql(spark: SparkSession, query: str, label: str) -> DataFrame:
    try:
        return spark.sql(query.strip().rstrip(";"))
    except Exception as error:
        raise InputError(f"{label}: the query cannot run: {first_line(error)}") from None


def _with_file_order(spark: SparkSession, df: DataFrame, paths: list[str]) -> DataFrame:
    """`df` with FILE_INDEX (the file's place in `paths`) and FILE_ROW."""
    from pyspark.sql import functions as F

    uri = F.col("_metadata.file_path")  # a URI: file:/path, percent-encoded, '+' kept
    decoded = F.regexp_replace(F.url_decode(F.replace(uri, F.lit("+"), F.lit("%2B"))), "^file:(//)?", "")  # fmt: skip
    row = F.col("_metadata.row_index").alias(FILE_ROW)
    if len(paths) <= _LITERAL_PATHS:  # maps in the plan: no broadcast job
        # Looked up by the URI as Spark most likely spells it (no string work per row);
        # by the decoded path if it spells it otherwise.
        by_uri = [F.lit(x) for i, p in enumerate(paths) for u in _uris(p) for x in (u, i)]
        by_path = [F.lit(x) for i, p in enumerate(paths) for x in (p, i)]
        index = F.coalesce(F.create_map(*by_uri)[uri], F.create_map(*by_path)[decoded])
        return df.select("*", index.cast("long").alias(FILE_INDEX), row)
    table = spark.createDataFrame(
        pa.table({_PATH: paths, FILE_INDEX: pa.array(range(len(paths)), pa.int64())})
    )
    with_path = df.select("*", decoded.alias(_PATH), row)
    return with_path.join(F.broadcast(table), _PATH, "left").drop(_PATH)


def _uris(path: str) -> tuple[str, str]:
    """The likely spellings of a local file's `_metadata.file_path` (Hadoop's URI)."""
    quoted = quote(path, safe="/:@!$&'()*+,;=-._~")
    return f"file:{quoted}", f"file://{quoted}"


def _footers(files: list[Path]) -> tuple[bool, set[str]]:
    """Whether the files' schemas differ (Spark must merge them: a job), and the
    columns some file holds as nanosecond timestamps."""
    schemas = [pq.read_schema(path) for path in files]
    nanos = {
        field.name
        for schema in schemas
        for field in schema
        if pa.types.is_timestamp(field.type) and field.type.unit == "ns"
    }
    first = schemas[0].remove_metadata()
    return any(not s.remove_metadata().equals(first) for s in schemas[1:]), nanos


def _nanos_as_times(df: DataFrame, nanos: set[str]) -> DataFrame:
    """Spark reads Parquet nanosecond timestamps as int64 nanoseconds (see `session`):
    make them microsecond timestamps again (truncated, as DuckDB's cast to TIMESTAMP)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType

    for name in sorted(nanos):
        if name not in df.columns or not isinstance(df.schema[name].dataType, LongType):
            continue
        column = F.col(f"`{name}`")
        micros = (column - F.pmod(column, F.lit(1000))) / F.lit(1000)
        df = df.withColumn(name, F.timestamp_micros(micros.cast("long")))
    return df


def time_filter(
    df: DataFrame, column: str, lower: datetime | None, upper: datetime | None
) -> DataFrame:
    """Rows of `df` whose raw event time may lie in [lower, upper] (widened by a day;
    text and numbers are not compared: the kernels apply exact bounds on the cast time)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DateType, TimestampNTZType, TimestampType

    if column not in df.columns:
        return df  # the kernel names the missing column
    kind = df.schema[column].dataType
    conditions: list[Column] = []
    for bound, keep in ((lower, "ge"), (upper, "le")):
        if bound is None:
            continue
        moment = bound - _SLACK if keep == "ge" else bound + _SLACK
        if isinstance(kind, TimestampType):
            value = F.lit(moment)
        elif isinstance(kind, TimestampNTZType):
            value = F.lit(moment.replace(tzinfo=None)).cast("timestamp_ntz")
        elif isinstance(kind, DateType):
            value = F.lit(moment.date())
        else:
            return df
        raw = F.col(f"`{column}`")
        conditions.append(raw >= value if keep == "ge" else raw <= value)
    for condition in conditions:
        df = df.where(condition)
    return df


def scan_view(
    spark: SparkSession,
    config: RepoConfig,
    source: Source,
    view: FeatureView,
    since: datetime | None = None,
    until: datetime | None = None,
) -> SparkScan:
    """The rows of `view`: its source, transformed if the view says so (a Python
    function sees only the source rows with event times about [since, until])."""
    scan = scan_source(spark, config, source)
    transformation = view.transformation
    if transformation is None or scan.df is None:
        return scan
    base = scan.df.drop(FILE_INDEX, FILE_ROW)
    label = f"transformation of feature view '{view.name}'"
    if isinstance(transformation, SqlTransformation):
        if transformation.dialect != "spark":
            raise DefinitionError(
                f"{label} is written in {transformation.dialect} SQL; the Spark engine runs "
                'Spark SQL (dialect="spark")'
            )
        # The temp view is resolved when the query is analysed (now), so the name
        # `source` is free again for the next transformation once the lock is released.
        with _temp_view_lock:
            base.createOrReplaceTempView("source")
            return SparkScan(_sql(spark, transformation.query, label), False, label)
    assert isinstance(transformation, PythonTransformation)
    base = time_filter(base, source.timestamp_field, since, until)
    return SparkScan(_python(config, base, transformation, label), False, label)


# ---- Python transformations -------------------------------------------------------------


def _python(
    config: RepoConfig, df: DataFrame, transformation: PythonTransformation, label: str
) -> DataFrame:
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    empty = to_arrow_schema(df.schema, timezone="UTC").empty_table()
    runner = PythonBatches(transformation, config.repo_path, None, label)
    schema = spark_compatible(runner.run(empty).schema)
    # Without the function object it may hold: workers load it from the repo's module
    # (a function is pickled by reference to a module a worker may not have).
    bare = PythonTransformation.model_validate(transformation.model_dump())
    runner = PythonBatches(bare, config.repo_path, schema, label)
    return df.mapInArrow(runner, from_arrow_schema(schema))


@dataclass(frozen=True)
class PythonBatches:
    """A view's Python transformation over a partition's Arrow batches (it pickles: the
    function itself is loaded in the worker, checked against its applied hash)."""

    transformation: PythonTransformation
    repo_path: Path
    schema: pa.Schema | None
    label: str

    def run(self, table: pa.Table) -> pa.Table:
        what = f"{self.label} ({self.transformation.function})"
        function = self._load()
        try:
            result = function(_as_mode(table, self.transformation.mode))
        except AlmanacError:
            raise
        except Exception as error:
            raise InputError(f"{what}: the function failed: {type(error).__name__}: {error}") from None  # fmt: skip
        try:
            out = frames.to_arrow(result, what)
        except AlmanacError:
            raise
        except Exception as error:
            raise InputError(f"{what}: the function's result cannot be read: {error}") from None
        if self.schema is None:
            return out
        try:
            return out.select(self.schema.names).cast(self.schema)
        except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as error:
            raise InputError(f"{what}: batches returned different columns or types: {error}") from None  # fmt: skip

    def _load(self) -> Any:
        # A reused Python worker may hold a function of that name from another repo or
        # an earlier apply: read it from this repo's module, once per (repo, function,
        # hash); the hash check then says whether it is the applied one.
        from almanac.definitions import transformations

        key = (str(self.repo_path), self.transformation.function, self.transformation.source_hash)
        if key not in _loaded:
            transformations._known.pop(self.transformation.function, None)
            _loaded[key] = self.transformation.load(self.repo_path)
        return _loaded[key]

    def __call__(self, batches: Any) -> Any:
        for batch in batches:
            yield from self.run(pa.Table.from_batches([batch])).to_batches()


def _as_mode(table: pa.Table, mode: str) -> Any:
    if mode == "arrow":
        return table
    if mode == "polars":
        import polars as pl

        return pl.from_arrow(table)
    return table.to_pandas()


def spark_compatible(schema: pa.Schema) -> pa.Schema:
    """`schema` in Arrow types Spark can hold (microsecond UTC timestamps, signed
    integers, plain strings): what a pandas or Polars function returns may not be."""
    return pa.schema([pa.field(f.name, _compatible(f.type)) for f in schema])


def _compatible(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(kind):
        return pa.timestamp("us", tz="UTC" if kind.tz else None)
    if pa.types.is_dictionary(kind):
        return _compatible(kind.value_type)
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return pa.string()
    if pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind):
        return pa.binary()
    if pa.types.is_unsigned_integer(kind):
        return pa.int64() if kind.bit_width >= 32 else pa.int32()
    if pa.types.is_float16(kind):
        return pa.float32()
    if pa.types.is_null(kind):
        return pa.string()
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_list_view(kind):
        return pa.list_(_compatible(kind.value_type))
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _compatible(f.type)) for f in kind])
    return kind
