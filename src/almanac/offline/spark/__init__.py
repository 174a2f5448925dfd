"""The Apache Spark offline engine (`offline: {engine: spark}`; needs ``almanac[spark]``).

Spark scans and distributes; each bucket of join keys is computed by the DuckDB
engine's own queries (`almanac.offline.duckdb.kernel`), so both engines give the same
rows. pyspark is imported only when the engine is used (see `engine`).
"""
