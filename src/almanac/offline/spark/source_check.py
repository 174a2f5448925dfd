"""Definitions checked against their sources on Spark, before anything is applied.

`check_views` has files and push datasets checked by the DuckDB engine's rules, and
Spark SQL by Spark's analysis of the query; Spark's column types are compared by their
DuckDB names, as `column_problems` knows them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from almanac.config import RepoConfig
from almanac.definitions.sources import SqlSource
from almanac.definitions.transformations import PythonTransformation, SqlTransformation
from almanac.errors import DefinitionError, InputError
from almanac.offline.duckdb.source_check import check_views as duckdb_check_views
from almanac.offline.duckdb.source_check import column_problems
from almanac.offline.spark.scans import scan_view
from almanac.registry.catalog import Catalog

if TYPE_CHECKING:
    import duckdb
    from pyspark.sql import SparkSession


def check_views(
    spark: Callable[[], SparkSession],
    config: RepoConfig,
    local: Callable[[], duckdb.DuckDBPyConnection],
    catalog: Catalog,
    names: list[str],
) -> None:
    """Files and push datasets are checked by DuckDB (their footers; the same
    reading rules), Spark SQL by Spark's analysis of the query (no data is read);
    Python transformations are not checked (their columns are known by running).
    `spark` and `local` are called only if a view needs them (a repo without SQL
    starts no JVM)."""
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
            scan = scan_view(spark(), config, source, view)
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
            duckdb_check_views(local(), config, catalog, by_files)
        except DefinitionError as error:
            problems.append(str(error))
    if problems:
        raise DefinitionError("; ".join(dict.fromkeys(problems)))


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
