"""A training set on Spark: the spine and a view's rows in one shuffle, per view.

For each view, the spine's rows (their columns prefixed, SIDE 0) and the view's rows
(SIDE 1) are unioned (`spine_and_rows`) and shuffled by their keys' hash, so that a
partition holds both sides of its entities; `SpineAndRows` takes them apart again in the
executor and runs the point-in-time kernel. `SparkRetrievalJob` puts the parts' answers
beside the labels, which never leave the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from almanac.offline.spark.partitions import ipc_row, stream, unpack, whole
from almanac.offline.spark.session import job
from almanac.offline.spine import ROW_ID
from almanac.ports.retrieval import RetrievalJob

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

_SIDE = "__almanac_side"  # in a training set's shuffle: 0 for spine rows, 1 for view rows
_SPINE = "__almanac_spine_"  # the prefix of the spine's columns in that shuffle


def spine_and_rows(
    spine: DataFrame, spine_columns: tuple[str, ...], bucket: Column, rows: DataFrame
) -> DataFrame:
    """The spine's `spine_columns` (prefixed, SIDE 0, with their `bucket`) and the view's
    `rows` (SIDE 1, already bucketed) as one DataFrame, to be shuffled together."""
    from pyspark.sql import functions as F

    mine = spine.select(
        *[F.col(f"`{c}`").alias(_SPINE + c) for c in spine_columns],
        bucket,
        F.lit(0).cast("byte").alias(_SIDE),
    )
    return mine.unionByName(rows.withColumn(_SIDE, F.lit(1).cast("byte")), allowMissingColumns=True)  # fmt: skip


class SparkRetrievalJob(RetrievalJob):
    """A training set computed by Spark, one part per view (ROW_ID and its features).
    `to_arrow` runs the parts side by side, each partition's answer coming back as
    Arrow IPC bytes, and puts each part's rows in spine order on the driver (a
    permutation of row ids: one take per part). Streaming (`to_arrow_batches`,
    `to_parquet`) has Spark join the parts and sort them, and fetches one partition at a
    time, so only one partition's features are in memory."""

    def __init__(
        self, entities: pa.Table, features: pa.Schema, parts: list[Part], what: str
    ) -> None:
        def produce(batch_rows: int) -> pa.RecordBatchReader:
            joined = parts[0].typed()
            for part in parts[1:]:
                joined = joined.join(part.typed(), ROW_ID)
            ordered = joined.select(ROW_ID, *[f"`{f.name}`" for f in features]).orderBy(ROW_ID)
            return pa.RecordBatchReader.from_batches(features, _features(ordered, features, what))

        super().__init__(entities, features, produce)
        self._parts = parts
        self._what = what

    def to_arrow(self) -> pa.Table:
        if self._table is None and self._entities.num_rows:
            with ThreadPoolExecutor(len(self._parts)) as pool:
                answers = list(pool.map(self._fetch, self._parts))
            columns: dict[str, pa.ChunkedArray] = {}
            for answer in answers:
                values = answer.drop_columns([ROW_ID]).take(pc.sort_indices(answer[ROW_ID]))
                columns.update(zip(values.column_names, values.columns, strict=True))
            table = self._entities
            for field in self._features:
                table = table.append_column(field, columns[field.name].cast(field.type))
            self._table = table
        return super().to_arrow()

    def _fetch(self, part: Part) -> pa.Table:
        with job(self._what):
            blobs = part.packed().toArrow().column("ipc")
        tables = [unpack(blob.as_buffer()) for chunk in blobs.chunks for blob in chunk]
        return pa.concat_tables(tables) if tables else part.schema.empty_table()


@dataclass(frozen=True)
class Part:
    """One view's part of a training set: the shuffled union of spine and view rows,
    and the kernel that answers each of its partitions."""

    shuffled: DataFrame
    run: SpineAndRows
    schema: pa.Schema

    def typed(self) -> DataFrame:
        from pyspark.sql.pandas.types import from_arrow_schema

        return self.shuffled.mapInArrow(self.run, from_arrow_schema(self.schema))

    def packed(self) -> DataFrame:
        """Each partition's answer as one row of Arrow IPC bytes (no conversion to
        Spark's rows and back)."""
        return self.shuffled.mapInArrow(replace(self.run, pack=True), "ipc binary")


@dataclass(frozen=True)
class SpineAndRows:
    """A training set's kernel over one partition of its shuffle: the spine's rows
    (SIDE 0, their columns prefixed) and the view's rows (SIDE 1) taken apart."""

    run: Callable[[pa.Table, pa.Table], pa.Table]
    spine_columns: tuple[str, ...]
    view_columns: tuple[str, ...]
    pack: bool = False  # yield the answer as one row of Arrow IPC bytes

    def __call__(self, batches):  # type: ignore[no-untyped-def]
        table = whole(batches)
        if table is None:
            return
        is_spine = pc.equal(table.column(_SIDE), 0)
        spine = table.filter(is_spine)
        if spine.num_rows == 0:
            return
        spine = spine.select([_SPINE + c for c in self.spine_columns])
        spine = spine.rename_columns(list(self.spine_columns))
        rows = table.filter(pc.invert(is_spine)).select(list(self.view_columns))
        answer = self.run(spine, rows)
        if self.pack:
            yield ipc_row(answer)
        else:
            yield from answer.to_batches()


def _features(df: DataFrame, schema: pa.Schema, what: str) -> Iterator[pa.RecordBatch]:
    """The feature columns of `df` (ROW_ID first, sorted by it), batch by batch."""
    for batch in stream(df, None, what):
        table = pa.Table.from_batches([batch]).drop_columns([ROW_ID])
        yield from table.cast(schema).to_batches()
