"""The offline engine interface: what every backend (DuckDB now, Spark later) provides.

An engine reads a view's full history (its source) and answers these questions, all with
the semantics of DESIGN.md rule 2, implemented once in `point_in_time` (aggregation
views: windows, in `aggregations`):

- `get_historical_features`: a training set (point-in-time join) for entity rows;
- `latest_rows`: per entity, the winning row at a time (for materialization);
- `value_history`: one entity's timeline (for audits and `almanac history-values`);
- `write`: append a batch to a view's dataset (atomic, schema checked first);
- `aggregation_tiles`: an aggregation view's per-entity tiles (for materialization).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa

from almanac.config import RepoConfig
from almanac.definitions.aggregation import AggregationView
from almanac.definitions.feature_view import FeatureView
from almanac.errors import ConfigError
from almanac.offline.retrieval import RetrievalJob
from almanac.registry.catalog import Catalog, FeatureRef

__all__ = ["OfflineEngine", "RetrievalJob", "Staged", "open_offline_engine"]


class Staged(Protocol):
    """A checked batch, stored but not visible to readers until committed."""

    rows: int

    def commit(self) -> None: ...
    def discard(self) -> None: ...


class OfflineEngine(ABC):
    @abstractmethod
    def get_historical_features(
        self,
        catalog: Catalog,
        entity_df: Any,
        refs: list[FeatureRef],
        timestamp_field: str = "event_timestamp",
    ) -> RetrievalJob:
        """Feature values for each row of `entity_df` as of its timestamp.

        `entity_df`: pandas, Polars, Arrow, a Parquet path, or DuckDB SQL text. The result
        has exactly its rows, in its order, its columns untouched (the timestamp column as
        tz-aware UTC), then one column per ref named `ref.output_name`.
        """

    def write(self, catalog: Catalog, view: FeatureView, df: Any) -> int:
        """Append `df` to the view's offline dataset as one new file; returns rows written.

        All or nothing: the batch is checked (keys, timestamps, feature types) before
        anything is written, and the file appears atomically.
        """
        staged = self.stage(catalog, view, df)
        if staged is None:
            return 0
        staged.commit()
        return staged.rows

    @abstractmethod
    def stage(self, catalog: Catalog, view: FeatureView, df: Any) -> Staged | None:
        """`write` in two steps: check `df` and store it where no reader looks yet (None
        for an empty batch); `commit()` then makes it visible atomically and `discard()`
        drops it. A push commits only once the online store took the rows too. A full
        disk raises `StorageFullError` here, leaving nothing behind."""

    @abstractmethod
    def latest_rows(
        self, catalog: Catalog, view: FeatureView, start: datetime | None, end: datetime
    ) -> pa.RecordBatchReader:
        """Per entity key, the row that wins rule 2 at `end` among rows with
        start <= event time <= end (no TTL). Columns: join keys, features,
        `event_timestamp` (UTC) and, when the source has a created time,
        `created_timestamp` (the online store breaks ties with it)."""

    @abstractmethod
    def aggregation_tiles(
        self, catalog: Catalog, view: AggregationView, start: datetime | None, end: datetime
    ) -> pa.RecordBatchReader:
        """Per entity with events in [start, end] (all entities with events in the view's
        longest window when `start` is None), the view's tiles at `end` for the online
        store: join keys, `event_timestamp` (its latest event) and `tiles` (bytes; see
        `almanac.offline.aggregations`)."""

    @abstractmethod
    def check_views(self, catalog: Catalog, names: list[str]) -> None:
        """DefinitionError naming every column the views `names` read that their
        sources' data lacks (see `almanac.offline.source_check`)."""

    @abstractmethod
    def tiles_of_rows(self, catalog: Catalog, view: AggregationView, rows: pa.Table) -> pa.Table:
        """The tiles of `rows` alone (pushed rows: the source's join keys, timestamp
        and aggregated columns), per entity, in `aggregation_tiles`' columns; the online
        store merges them into what it holds (`almanac.online.tiles.merge_blobs`)."""

    @abstractmethod
    def value_history(
        self,
        catalog: Catalog,
        view: FeatureView,
        key: dict[str, Any],
        at: datetime | None = None,
    ) -> pa.Table:
        """One entity's rows in the view, oldest first: `event_timestamp`,
        `created_timestamp` (if the source has one), the features, and with `at` a
        boolean `selected` marking the row rule 2 (with TTL) picks at `at`."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and temporary files."""

    def __enter__(self) -> OfflineEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_offline_engine(config: RepoConfig) -> OfflineEngine:
    """The engine `config.offline.engine` names."""
    if config.offline.engine == "duckdb":
        from almanac.offline.duckdb_engine import DuckDBEngine

        return DuckDBEngine(config)
    raise ConfigError(f"offline.engine: unknown engine '{config.offline.engine}'")
