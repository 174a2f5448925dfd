"""Turning user data (entity rows, batches to write) into checked Arrow tables.

Everything a user hands the offline store goes through here first: pandas, Polars,
Arrow, a Parquet path or SQL text becomes an Arrow table; join keys are checked against
their declared types and timestamps become tz-aware UTC (rule 1: naive means UTC), by the
rules of `almanac.validate` that batches follow too. Errors name the column and say what
was expected.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from almanac import validate
from almanac.errors import InputError
from almanac.times import to_utc
from almanac.validate import UTC_US


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


# ---- entity rows: join keys and times (the rules of `almanac.validate`) ---------------


def key_column(table: pa.Table, key: str, dtype: str, what: str, owner: str) -> pa.ChunkedArray:
    """An entity_df join key cast to its declared type; nulls pass (they match nothing)."""
    return validate.key_column(table, key, dtype, what, owner, nulls=True)


def utc_timestamps(
    table: pa.Table, column: str, con: duckdb.DuckDBPyConnection, what: str
) -> pa.ChunkedArray:
    """The entity_df time column as tz-aware UTC timestamps, keeping its precision.

    Naive timestamps are UTC; dates are midnight UTC; text is parsed by DuckDB (ISO 8601,
    with or without an offset, or a zone name). Anything unparseable is an InputError
    quoting the first bad value.
    """
    parse = partial(_parse_text, con)
    return validate.time_column(table, column, what, nulls=True, parse_text=parse, keep_unit=True)


def _parse_text(con: duckdb.DuckDBPyConnection, values: pa.ChunkedArray) -> pa.ChunkedArray:
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


def to_utc_us(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Microsecond UTC timestamps, DuckDB's precision (finer parts are truncated)."""
    if values.type == UTC_US:
        return values
    return pc.cast(values, UTC_US, safe=False)


def sql_timestamp(moment: datetime) -> str:
    """A TIMESTAMPTZ literal for DuckDB."""
    return f"TIMESTAMPTZ '{to_utc(moment).isoformat()}'"
