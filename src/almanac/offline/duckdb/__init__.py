"""The DuckDB offline engine (the embedded default): Parquet/CSV/SQL sources, in process."""

from almanac.offline.duckdb.engine import DuckDBEngine

__all__ = ["DuckDBEngine"]
