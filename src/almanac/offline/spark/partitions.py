"""What runs on a Spark partition, and how its Arrow rows come back to the driver.

In the executors (pyspark's `mapInArrow` calls them): `Partition` runs a DuckDB kernel
on one partition's rows as one table, `write_partition` writes them to the online store.
On the driver: `stream` fetches an answer one partition at a time, each partition's
batches travelling as Arrow IPC bytes in one row (`ipc_row`, `unpack`), and `collect`
fetches it in one job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from almanac.offline.spark.session import job
from almanac.ports.offline import OnlineTarget, write_online

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


@dataclass(frozen=True)
class Partition:
    """A kernel over one partition's rows, as one table. (pyspark inspects a function's
    type hints and fails on a `functools.partial`; an object without hints is fine.)"""

    run: Callable[[pa.Table], pa.Table]

    def __call__(self, batches):  # type: ignore[no-untyped-def]
        table = whole(batches)
        if table is not None:
            yield from self.run(table).to_batches()


def whole(batches: Iterator[pa.RecordBatch]) -> pa.Table | None:
    """A partition's batches as one table (None if it has no rows)."""
    kept = [batch for batch in batches if batch.num_rows]
    return pa.Table.from_batches(kept) if kept else None


def stream(df: DataFrame, schema: pa.Schema | None, what: str) -> Iterator[pa.RecordBatch]:
    """`df`'s rows as Arrow batches, partition after partition, in order: each
    partition's batches are sent as Arrow IPC bytes (one row per batch), so only one
    partition is on the driver at a time."""
    packed = df.mapInArrow(_pack, "ipc binary")
    with job(what):
        for row in packed.toLocalIterator(prefetchPartitions=True):
            for batch in unpack(pa.py_buffer(row.ipc)).to_batches():
                yield batch if schema is None or batch.schema == schema else batch.cast(schema)


def collect(df: DataFrame, schema: pa.Schema, what: str) -> pa.RecordBatchReader:
    """`df` collected in one job (materialization does not come here: its executors
    write the online store themselves)."""
    with job(what):
        table = df.toArrow()
    return pa.RecordBatchReader.from_batches(schema, table.cast(schema).to_batches())


def _pack(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if batch.num_rows:
            yield ipc_row(pa.Table.from_batches([batch]))


def ipc_row(table: pa.Table) -> pa.RecordBatch:
    """`table` as a one-row batch of its Arrow IPC stream bytes."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return pa.RecordBatch.from_pydict({"ipc": pa.array([sink.getvalue().to_pybytes()], pa.binary())})  # fmt: skip


def unpack(blob: pa.Buffer) -> pa.Table:
    with pa.ipc.open_stream(blob) as reader:
        return reader.read_all()


def write_partition(
    target: OnlineTarget, schema: pa.Schema, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """In an executor: write this partition's rows to the online store (the store's
    monotonic rule makes a retried task harmless); yield how many."""
    from almanac.online import open_online_store

    store = open_online_store(target.config)
    try:
        typed = (b if b.schema == schema else b.cast(schema) for b in batches if b.num_rows)
        written = write_online(typed, target, store)
    finally:
        store.close()
    yield pa.RecordBatch.from_pydict({"rows": pa.array([written], pa.int64())})
