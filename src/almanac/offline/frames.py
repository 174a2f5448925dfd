"""Turning user data (entity rows, batches to write) into checked Arrow tables.

Everything a user hands the offline store goes through here first: pandas, Polars,
Arrow, a Parquet path, or (read by the engine, in its dialect) SQL text or a CSV path
becomes an Arrow table; join keys are checked against
their declared types and timestamps become tz-aware UTC (rule 1: naive means UTC), by the
rules of `almanac.semantics.validate` that batches follow too. Errors name the column and say what
was expected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from almanac.errors import InputError
from almanac.semantics import validate
from almanac.semantics.validate import UTC_US

# How an engine reads what only it can: SQL text in its dialect, or a CSV file.
TextReader = Callable[[str, str], pa.Table]  # (sql text | csv path, what) -> table
# Times given as text, parsed by the engine: timestamp[us, UTC], null where unreadable.
TimeParser = Callable[[pa.ChunkedArray], pa.ChunkedArray]


def to_arrow(
    data: Any,
    what: str = "entity_df",
    *,
    read_sql: TextReader | None = None,
    read_csv: TextReader | None = None,
) -> pa.Table:
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
        if read_csv is None:
            raise InputError(f"{what}: this engine does not read CSV paths; pass a DataFrame")
        return read_csv(str(path), what)
    if isinstance(data, str):
        if read_sql is None:
            raise InputError(f"{what}: this engine does not read SQL text; pass a DataFrame")
        return read_sql(data, what)
    module = type(data).__module__.split(".")[0]
    if module == "pandas":
        return _from_pandas(data, what)
    if module == "polars":
        if hasattr(data, "collect"):  # a LazyFrame
            data = data.collect()
        return data.to_arrow()
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    if isinstance(data, Mapping):  # {"column": [values]}, as pushes take
        try:
            return pa.table({str(name): values for name, values in data.items()})
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as error:
            raise InputError(f"{what}: cannot be read as columns ({error})") from None
    raise InputError(
        f"{what} must be a pandas or Polars DataFrame, an Arrow table, a dict of columns, a "
        f"Parquet or CSV path or SQL text, not {type(data).__name__}"
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


# ---- entity rows: join keys and times (the rules of `almanac.semantics.validate`) ---------------


def key_column(table: pa.Table, key: str, dtype: str, what: str, owner: str) -> pa.ChunkedArray:
    """An entity_df join key cast to its declared type; nulls pass (they match nothing)."""
    return validate.key_column(table, key, dtype, what, owner, nulls=True)


def utc_timestamps(
    table: pa.Table, column: str, what: str, parse_text: TimeParser
) -> pa.ChunkedArray:
    """The entity_df time column as tz-aware UTC timestamps, keeping its precision.

    Naive timestamps are UTC; dates are midnight UTC; text is parsed by the engine
    (`parse_text`: ISO 8601, with or without an offset, or a zone name). Anything
    unparseable is an InputError quoting the first bad value.
    """
    return validate.time_column(
        table, column, what, nulls=True, parse_text=parse_text, keep_unit=True
    )


def to_utc_us(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Microsecond UTC timestamps, DuckDB's precision (finer parts are truncated)."""
    if values.type == UTC_US:
        return values
    return pc.cast(values, UTC_US, safe=False)
