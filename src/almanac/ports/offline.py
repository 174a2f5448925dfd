"""The offline engine port: what every engine (DuckDB, Spark, a plug-in's) provides.

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

import pyarrow as pa
from pydantic import BaseModel

from almanac.config import RepoConfig
from almanac.definitions.aggregation import AggregationView
from almanac.definitions.feature_view import FeatureView
from almanac.ports.online import OnlineStore
from almanac.ports.retrieval import RetrievalJob
from almanac.registry.catalog import Catalog, FeatureRef

__all__ = ["ExpressionEvaluator", "OfflineEngine", "OnlineTarget", "RetrievalJob", "Staged"]

# (input table, {feature: (parsed expression, dtype)}) → the features, typed, in order.
ExpressionEvaluator = Callable[[pa.Table, dict[str, tuple[Any, str]]], pa.Table]


class Staged(Protocol):
    """A checked batch, stored but not visible to readers until committed."""

    rows: int

    def commit(self) -> None: ...
    def discard(self) -> None: ...


@dataclass(frozen=True)
class OnlineTarget:
    """Where a materialization writes one view. Plain data (it pickles), so that a
    distributed engine's workers can open the online store themselves."""

    config: RepoConfig
    project: str
    view: str
    join_keys: list[str]
    features: list[str]  # [almanac.semantics.tiles.TILES_FEATURE] for an aggregation view


class OfflineEngine(ABC):
    # The model of the engine's own section of almanac.yaml (`offline.<name>`), if any.
    settings: ClassVar[type[BaseModel] | None] = None

    @classmethod
    def from_config(cls, config: RepoConfig) -> OfflineEngine:
        """The engine for a repo (its section validated by `settings`)."""
        return cls(config)  # type: ignore[call-arg]

    def check_dialect(self, catalog: Catalog, names: list[str]) -> None:  # noqa: B027
        """DefinitionError naming each SQL source or transformation of the views `names`
        written in a dialect this engine cannot run (called by `plan`)."""

    def expression_evaluator(self) -> ExpressionEvaluator | None:
        """How this engine evaluates on-demand expressions over a training set's batches
        (see `almanac.transforms.ondemand`); None: the engine-neutral Arrow evaluator."""
        return None

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
    def rows(
        self, catalog: Catalog, view: FeatureView, start: datetime | None, end: datetime | None
    ) -> pa.RecordBatchReader:
        """Every row of a feature view with start <= event time <= end (either bound may
        be open), typed as the view declares: the columns of `latest_rows`, in no
        particular order. What statistics, drift and validation read."""

    @abstractmethod
    def newest_event(self, catalog: Catalog, view: FeatureView) -> datetime | None:
        """The latest event time among the view's rows (an aggregation view: its
        source's), None if it has none: how fresh its offline data is."""

    @abstractmethod
    def aggregation_tiles(
        self, catalog: Catalog, view: AggregationView, start: datetime | None, end: datetime
    ) -> pa.RecordBatchReader:
        """Per entity with events in [start, end] (all entities with events in the view's
        longest window when `start` is None), the view's tiles at `end` for the online
        store: join keys, `event_timestamp` (its latest event) and `tiles` (bytes; see
        `almanac.offline.duckdb.aggregations`)."""

    def materialize(
        self,
        catalog: Catalog,
        view: FeatureView,
        start: datetime | None,
        end: datetime,
        target: OnlineTarget,
        online: OnlineStore,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write what the online store serves of `view` at `end` (`latest_rows`, or
        `aggregation_tiles` for an aggregation view) into `online`, in writes of at most
        `online.batch_size` rows; returns the rows written. Here the rows come to this
        process; a distributed engine overrides this to write from its workers (each
        opening the store from `target`), so no row passes through the driver. The
        store's monotonic rule makes any order and any retry of the writes safe."""
        if isinstance(view, AggregationView):
            reader = self.aggregation_tiles(catalog, view, start, end)
        else:
            reader = self.latest_rows(catalog, view, start, end)
        return write_online(reader, target, online, progress)

    @abstractmethod
    def check_views(self, catalog: Catalog, names: list[str]) -> None:
        """DefinitionError naming every column the views `names` read that their
        sources' data lacks (see `almanac.offline.duckdb.source_check`)."""

    @abstractmethod
    def tiles_of_rows(self, catalog: Catalog, view: AggregationView, rows: pa.Table) -> pa.Table:
        """The tiles of `rows` alone (pushed rows: the source's join keys, timestamp
        and aggregated columns), per entity, in `aggregation_tiles`' columns; the online
        store merges them into what it holds (`almanac.semantics.tiles.merge_blobs`)."""

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


def write_online(
    batches: Iterable[pa.RecordBatch],
    target: OnlineTarget,
    online: OnlineStore,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write rows for `target` in rounds of at most `online.batch_size` rows (bounded
    memory and request size); returns the rows written."""
    size = target.config.online.batch_size
    written = 0
    for batch in batches:
        for offset in range(0, batch.num_rows, size):
            chunk = pa.Table.from_batches([batch.slice(offset, size)])
            online.write_batch(
                target.project, target.view, target.join_keys, target.features, chunk
            )
            written += chunk.num_rows
            if progress is not None:
                progress(chunk.num_rows)
    return written
