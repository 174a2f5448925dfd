"""The narrow interfaces between Almanac and its backends.

`OfflineEngine` (training sets, materialization reads, writes), `OnlineStore` (latest
values, tiles, watermarks) and `StoreHandle` (what ingestion and materialization need of a
feature store). Backends implement them in their own packages (`almanac.offline.duckdb`,
`almanac.online.redis` ...), registered by entry point (see `almanac.backends`).
"""
