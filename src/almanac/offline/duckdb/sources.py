"""Where a view's rows live, as something DuckDB can scan.

`scan_source` turns a source definition into a `SourceScan`: the SQL text of a relation
(`read_parquet([...])`, `read_csv([...])` or a subquery), the columns it has and their
DuckDB types, and how rows are ordered among exact ties (see `point_in_time`). File lists
come from `almanac.offline.files`, sorted, so "file order" is the same for every engine.

SQL text that a definition brings (a `SqlSource` query; a SQL transformation, which
reaches DuckDB through `describe`) must be one read-only SELECT (`check_select`, in
`almanac.offline.duckdb.sql_check`), checked before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from almanac.config import RepoConfig
from almanac.definitions.sources import FileSource, SqlSource
from almanac.definitions.types import (
    Bool,
    Bytes,
    Float32,
    Float64,
    Int32,
    Int64,
    String,
    Timestamp,
    parse_dtype,
)
from almanac.errors import InputError
from almanac.offline.duckdb.sql_check import check_select
from almanac.offline.files import Source, list_files


@dataclass(frozen=True)
class SourceScan:
    """A scannable relation for one source."""

    relation: str  # SQL usable after FROM
    columns: dict[str, str]  # column name → DuckDB type, as the source has them
    file_order: bool  # rows carry `file_index` and `file_row_number` (Parquet files)
    empty: bool = False  # no data yet (an empty folder or push dataset)
    label: str = ""  # for error messages: the source and its path


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def scan_source(con: duckdb.DuckDBPyConnection, config: RepoConfig, source: Source) -> SourceScan:
    """Build the scan of a source and read its schema (file footers only, no data)."""
    if isinstance(source, SqlSource):
        label = f"SQL source '{source.name}'"
        check_select(source.query, label)
        # A newline before the parenthesis: a trailing "-- comment" must not swallow it.
        relation = f"({source.query.strip().rstrip(';')}\n)"
        return SourceScan(relation, describe(con, relation, label), False, label=label)
    files, label = list_files(config, source)
    if not files:
        return SourceScan("", {}, True, empty=True, label=label)
    paths = "[" + ", ".join(sql_string(str(p)) for p in files) + "]"
    many = ", union_by_name = true" if len(files) > 1 else ""
    if isinstance(source, FileSource) and source.format == "csv":
        relation = f"read_csv({paths}{many})"
        return SourceScan(relation, describe(con, relation, label), False, label=label)
    relation = f"read_parquet({paths}, file_row_number = true{many})"
    columns = describe(con, relation, label)
    columns.pop("file_row_number", None)
    return SourceScan(relation, columns, True, label=label)


def describe(con: duckdb.DuckDBPyConnection, relation: str, label: str) -> dict[str, str]:
    """The columns and DuckDB types of `relation` (its plan, not its data). A relation
    in parentheses holds a definition's SQL (a source query, a SQL transformation):
    the SELECT over it must be one read-only statement, checked before DuckDB sees it
    (the relations built here from file lists, and registered tables, are not text
    anyone wrote)."""
    if relation.lstrip().startswith("("):
        check_select(f"SELECT * FROM {relation}", label)
    try:
        rows = con.sql(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    except duckdb.Error as error:
        message = str(error).strip().splitlines()[0]
        if "magic bytes" in message or "not a parquet file" in message.lower():
            message = f"not a Parquet file ({message})"
        raise InputError(f"{label}: cannot be read: {message}") from None
    return {name: dtype for name, dtype, *_ in rows}


def duckdb_type(dtype: str) -> str:
    """The DuckDB SQL type of a declared dtype (used when casting source columns)."""
    dtype = parse_dtype(dtype)
    if dtype.startswith("list<"):
        return duckdb_type(dtype[5:-1]) + "[]"
    return {
        Bool: "BOOLEAN",
        Int32: "INTEGER",
        Int64: "BIGINT",
        Float32: "FLOAT",
        Float64: "DOUBLE",
        String: "VARCHAR",
        Bytes: "BLOB",
        Timestamp: "TIMESTAMPTZ",
    }[dtype]
