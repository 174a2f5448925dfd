"""Turning user data (entity rows, batches to write) into checked Arrow tables.

Everything a user hands the offline store goes through here first: pandas, Polars,
Arrow, a Parquet path or SQL text becomes an Arrow table; join keys are checked against
their declared types; timestamps become tz-aware UTC (rule 1: naive means UTC). Errors
name the column and say what was expected.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from almanac.definitions.types import Int64, String
from almanac.errors import InputError
from almanac.times import to_utc

UTC_US = pa.timestamp("us", tz="UTC")


def to_arrow(data: Any, con: duckdb.DuckDBPyConnection, what: str = "entity_df") -> pa.Table:
    """Any supported tabular input as an Arrow table, in its own row order."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    if isinstance(data, Path) or (isinstance(data, str) and _looks_like_parquet(data)):
        return _read_parquet(Path(data), what)
    if isinstance(data, str) and _looks_like_csv(data):
        path = Path(data)
        if not path.is_file():
            raise InputError(f"{what}: {path} does not exist")
        try:
            return con.read_csv(str(path)).to_arrow_table()
        except duckdb.Error as error:
            raise InputError(
                f"{what}: {path} is not a readable CSV file: {_first_line(error)}"
            ) from None
    if isinstance(data, str):
        try:
            return con.sql(data).to_arrow_table()
        except duckdb.Error as error:
            raise InputError(f"{what}: the SQL query failed: {_first_line(error)}") from None
    module = type(data).__module__.split(".")[0]
    if module == "pandas":
        return _from_pandas(data, what)
    if module == "polars":
        if hasattr(data, "collect"):  # a LazyFrame
            data = data.collect()
        return data.to_arrow()
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    raise InputError(
        f"{what} must be a pandas or Polars DataFrame, an Arrow table, a Parquet or CSV path "
        f"or SQL text, not {type(data).__name__}"
    )


def _looks_like_csv(text: str) -> bool:
    return "\n" not in text and text.strip().lower().endswith((".csv", ".tsv"))


def _looks_like_parquet(text: str) -> bool:
    return "\n" not in text and text.strip().lower().endswith((".parquet", ".pq"))


def _read_parquet(path: Path, what: str) -> pa.Table:
    if not path.exists():
        raise InputError(f"{what}: {path} does not exist")
    try:
        if path.is_file():  # ParquetFile avoids importing pyarrow.dataset (and pandas)
            return pq.ParquetFile(path).read()
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(f"{what}: {path} is not a readable Parquet file: {error}") from None


def _from_pandas(df: Any, what: str) -> pa.Table:
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as error:
        # Usually an object column mixing types (or time zones); say which one.
        for column in df.columns:
            try:
                pa.array(df[column], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError):
                if _is_timestamp_like(df[column]):
                    return _from_pandas(_pandas_utc(df, column, what), what)
                raise InputError(f"{what}: column '{column}' mixes types: {error}") from None
        raise InputError(f"{what}: cannot convert to Arrow: {error}") from None


def _is_timestamp_like(series: Any) -> bool:
    return any(isinstance(value, datetime) for value in series.head(100))


def _pandas_utc(df: Any, column: str, what: str) -> Any:
    import pandas as pd

    try:
        converted = pd.to_datetime(df[column], utc=True)
    except (ValueError, TypeError) as error:
        raise InputError(f"{what}: column '{column}' has unreadable timestamps: {error}") from None
    return df.assign(**{column: converted})


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# ---- join keys ---------------------------------------------------------------------------


def key_column(table: pa.Table, key: str, dtype: str, what: str, owner: str) -> pa.ChunkedArray:
    """The join key column cast to its declared type, or an InputError naming it."""
    if key not in table.column_names:
        raise InputError(f"{what} has no column '{key}' (join key of {owner})")
    column = table.column(key)
    kind = column.type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
        column = column.cast(kind)
    if dtype == Int64 and (pa.types.is_integer(kind) or pa.types.is_null(kind)):
        try:
            return column.cast(pa.int64())
        except pa.ArrowInvalid:
            raise InputError(f"{what}: column '{key}' has values that do not fit int64") from None
    if dtype == String and (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_null(kind)
        or (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(kind))
    ):
        return column.cast(pa.string())
    raise InputError(
        f"{what}: column '{key}' has type {kind}, but {owner} declares it as {dtype}"
        + (" (cast it, e.g. with .astype)" if dtype == Int64 else " (convert the keys to text)")
    )


# ---- timestamps --------------------------------------------------------------------------


def utc_timestamps(
    table: pa.Table, column: str, con: duckdb.DuckDBPyConnection, what: str
) -> pa.ChunkedArray:
    """The column as tz-aware UTC timestamps, keeping its precision.

    Naive timestamps are UTC; dates are midnight UTC; text is parsed (ISO 8601, with or
    without an offset). Anything unparseable is an InputError quoting the first bad value.
    """
    if column not in table.column_names:
        raise InputError(f"{what} has no timestamp column '{column}'")
    values = table.column(column)
    kind = values.type
    if pa.types.is_dictionary(kind):
        values, kind = values.cast(kind.value_type), kind.value_type
    if pa.types.is_timestamp(kind):
        # Changing the zone is metadata only: Arrow stores instants as UTC already.
        return values.cast(pa.timestamp(kind.unit, tz="UTC"))
    if pa.types.is_date(kind):
        return values.cast(pa.timestamp("s")).cast(pa.timestamp("s", tz="UTC"))
    if pa.types.is_null(kind):
        return values.cast(UTC_US)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _parse_text(values, con, what, column)
    raise InputError(
        f"{what}: column '{column}' has type {kind}; expected timestamps, dates or ISO-8601 text"
    )


def _parse_text(
    values: pa.ChunkedArray, con: duckdb.DuckDBPyConnection, what: str, column: str
) -> pa.ChunkedArray:
    cursor = con.cursor()
    try:
        cursor.execute("SET TimeZone = 'UTC'")
        cursor.register("__almanac_text", pa.table({"v": values}))
        parsed = cursor.sql(
            "SELECT TRY_CAST(trim(v) AS TIMESTAMPTZ) AS t FROM __almanac_text"
        ).to_arrow_table()
        bad = cursor.sql(
            "SELECT v FROM __almanac_text WHERE v IS NOT NULL "
            "AND TRY_CAST(trim(v) AS TIMESTAMPTZ) IS NULL LIMIT 1"
        ).fetchall()
    finally:
        cursor.close()
    if bad:
        raise InputError(
            f"{what}: column '{column}' has a value that is not a timestamp: {bad[0][0]!r} "
            "(expected ISO 8601, e.g. '2024-05-01T12:00:00Z')"
        )
    return parsed.column("t").cast(UTC_US)


def to_utc_us(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Microsecond UTC timestamps, DuckDB's precision (finer parts are truncated)."""
    if values.type == UTC_US:
        return values
    return pc.cast(values, UTC_US, safe=False)


def sql_timestamp(moment: datetime) -> str:
    """A TIMESTAMPTZ literal for DuckDB."""
    return f"TIMESTAMPTZ '{to_utc(moment).isoformat()}'"
