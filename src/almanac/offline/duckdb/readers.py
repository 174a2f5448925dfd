"""What only DuckDB reads for the shared frame rules (`almanac.offline.frames`): SQL text
and CSV paths given as entity rows or batches, timestamps given as text, and the
TIMESTAMPTZ literals of the engine's queries."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

import duckdb
import pyarrow as pa

from almanac.errors import InputError
from almanac.offline import frames
from almanac.semantics.times import to_utc
from almanac.semantics.validate import UTC_US


def to_arrow(data: Any, con: duckdb.DuckDBPyConnection, what: str = "entity_df") -> pa.Table:
    """`frames.to_arrow`, with SQL text and CSV paths read by DuckDB."""
    return frames.to_arrow(
        data, what, read_sql=partial(_read_sql, con), read_csv=partial(_read_csv, con)
    )


def utc_timestamps(
    table: pa.Table, column: str, con: duckdb.DuckDBPyConnection, what: str
) -> pa.ChunkedArray:
    """`frames.utc_timestamps`, with text parsed by DuckDB (ISO 8601, offsets, zone names)."""
    return frames.utc_timestamps(table, column, what, partial(parse_text, con))


def sql_timestamp(moment: datetime) -> str:
    """A TIMESTAMPTZ literal for DuckDB."""
    return f"TIMESTAMPTZ '{to_utc(moment).isoformat()}'"


def _read_sql(con: duckdb.DuckDBPyConnection, text: str, what: str) -> pa.Table:
    try:
        return con.sql(text).to_arrow_table()
    except duckdb.Error as error:
        raise InputError(f"{what}: the SQL query failed: {_first_line(error)}") from None


def _read_csv(con: duckdb.DuckDBPyConnection, path: str, what: str) -> pa.Table:
    try:
        return con.read_csv(path).to_arrow_table()
    except duckdb.Error as error:
        raise InputError(
            f"{what}: {path} is not a readable CSV file: {_first_line(error)}"
        ) from None


def parse_text(con: duckdb.DuckDBPyConnection, values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Text as timestamp[us, UTC], null where DuckDB cannot read a value as a time."""
    cursor = con.cursor()
    try:
        cursor.execute("SET TimeZone = 'UTC'")
        cursor.register("__almanac_text", pa.table({"v": values}))
        parsed = cursor.sql(
            "SELECT TRY_CAST(trim(v) AS TIMESTAMPTZ) AS t FROM __almanac_text"
        ).to_arrow_table()
    finally:
        cursor.close()
    return parsed.column("t").cast(UTC_US)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
