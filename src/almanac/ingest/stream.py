"""The stream ingestion worker (`almanac stream`): micro-batches of a stream source's
messages into both stores, each event exactly once.

One batch (at most `batch_size` messages, or what arrived within `batch_seconds`):

1. **Decode** each message: a JSON object, or a Redis entry's fields (text, cast to the
   declared types); the event time as the source's `timestamp_format` says. A message
   that cannot be read (not JSON, not an object, a missing key or time, a column no view
   reads) is a dead letter: it goes to the source's `dead_letter` destination, or to
   `<data_path>/.dead_letter/<source>/` (Parquet, with the reason), and is counted; it
   never stops the worker.
2. **Skip what the offline log already holds.** Each event is logged with its origin
   (`__almanac_partition`, `__almanac_offset`). Offsets grow per partition, so an
   event at or below the partition's largest logged offset was written, online and
   offline, by a run that died before it committed.
3. **Push** the rest (`almanac.ingest.push`: the door's rules, the views' expectations,
   the offline log appended atomically, the online writes). A batch the door refuses is
   split in halves until the rows it refuses are found; they are dead letters, the others
   are written.
4. **Commit** the offsets, only now: a crash before this point replays the batch, and
   steps 2 and 3 (`almanac.ingest.exactly_once`) make the replay write nothing twice.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from almanac.definitions.sources import StreamSource
from almanac.errors import InputError, StoreUnavailableError
from almanac.ingest.exactly_once import OFFSET, ORIGIN, PARTITION
from almanac.ingest.push import allowed_columns, declared_columns, push, push_source_of
from almanac.offline.files import live_files, push_folder
from almanac.offline.writer import stage_parquet
from almanac.ports.handles import StoreHandle
from almanac.ports.stream import Message, StreamReader
from almanac.semantics.validate import UTC_US

log = logging.getLogger("almanac.stream")
DEAD_LETTER_SCHEMA = pa.schema([
    ("at", UTC_US), ("partition", pa.string()), ("offset", pa.int64()),
    ("value", pa.binary()), ("fields", pa.string()), ("reason", pa.string()),
])  # fmt: skip


def dead_letter_folder(store: StoreHandle, source: str) -> Path:
    return store.config.resolve_path(store.config.offline.data_path) / ".dead_letter" / source


@dataclass
class BatchResult:
    messages: int = 0
    written: int = 0  # events written to the stores
    replayed: int = 0  # events the offline log already held (a replay)
    dead: int = 0
    seconds: float = 0.0
    # From the broker's time of the newest message written to the moment it was
    # servable (None when the broker gives no times).
    latency_seconds: float | None = None
    lag: int | None = None  # messages behind, after this batch (None: the broker does not say)


@dataclass
class Totals:
    batches: int = 0
    messages: int = 0
    written: int = 0
    replayed: int = 0
    dead: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, batch: BatchResult) -> None:
        self.batches += 1
        self.messages += batch.messages
        self.written += batch.written
        self.replayed += batch.replayed
        self.dead += batch.dead


class StreamWorker:
    def __init__(
        self,
        store: StoreHandle,
        source_name: str,
        reader: StreamReader,
        batch_size: int = 10_000,
        batch_seconds: float = 0.5,
    ) -> None:
        self.store, self.reader = store, reader
        source = push_source_of(store.catalog, source_name)
        if not isinstance(source, StreamSource):
            raise InputError(f"source '{source_name}' is not a stream source ({source.type})")
        self.source: StreamSource = source
        self.name = source_name
        self.batch_size, self.batch_seconds = batch_size, batch_seconds
        self.totals = Totals()
        self._logged: dict[str, int] | None = None  # partition → largest offset in the log
        self._in_flight: list[Message] = []  # the batch being written
        self._assignments = -1  # the reader's count when the log's offsets were read
        self.newest_ms: int | None = None  # the broker's time of the newest message read
        self.latency_seconds: float | None = None  # of the last batch that wrote events
        self.lag: int | None = None

    # ---- one batch ------------------------------------------------------------------------

    def step(self) -> BatchResult:
        started = time.perf_counter()
        messages = self.reader.poll(self.batch_size, self.batch_seconds)
        result = BatchResult(len(messages))
        self._in_flight = messages
        if messages:
            times = [m.timestamp_ms for m in messages if m.timestamp_ms is not None]
            if times:
                self.newest_ms = max(times)
            rows, dead = self._decode(messages)
            fresh = self._unlogged(rows)
            result.replayed = len(rows) - len(fresh)
            written, refused = self._write(fresh)
            dead += refused
            self._dead_letters(dead)
            self.reader.commit(messages)  # only now: both stores hold the batch
            self._in_flight = []
            self._remember(written)
            result.written = sum(len(r) for r in written)
            result.dead = len(dead)
            stamps = [r["__message"].timestamp_ms for part in written for r in part]
            known = [t for t in stamps if t is not None]
            if known:
                result.latency_seconds = max(0.0, time.time() - max(known) / 1000)
                self.latency_seconds = result.latency_seconds
        behind = self.reader.lag()
        result.lag = self.lag = sum(behind.values()) if behind else None
        result.seconds = time.perf_counter() - started
        self.totals.add(result)
        return result

    def status(self) -> dict[str, Any]:
        """What the worker publishes for the feature server's `/metrics`: its totals,
        the lag in messages and in seconds (from the newest message read to now, when
        anything is left to read) and the last event-to-online latency."""
        t = self.totals
        lag_seconds = None
        if self.lag == 0:
            lag_seconds = 0.0
        elif self.lag is not None and self.newest_ms is not None:
            lag_seconds = max(0.0, time.time() - self.newest_ms / 1000)
        return {
            "source": self.name, "messages": t.messages, "written": t.written,
            "replayed": t.replayed, "dead": t.dead, "batches": t.batches,
            "uptime_seconds": time.monotonic() - t.started, "lag": self.lag,
            "lag_seconds": lag_seconds, "latency_seconds": self.latency_seconds,
        }  # fmt: skip

    def run(
        self,
        stop: threading.Event,
        on_batch: Callable[[BatchResult], None] | None = None,
        max_batches: int | None = None,
        retry_seconds: float = 1.0,
    ) -> Totals:
        """Batches until `stop` is set (the batch in hand is finished and committed
        first) or `max_batches` ran. An online or offline store that goes away pauses
        the worker: the batch is not committed, and is read again once it is back."""
        done = 0
        while not stop.is_set() and (max_batches is None or done < max_batches):
            try:
                batch = self.step()
            except StoreUnavailableError as error:
                log.warning("stream '%s': %s; retrying in %.0fs", self.source.name, error, retry_seconds)  # fmt: skip
                self._logged = None  # what was written before the failure is read again
                if self._in_flight:  # the failed batch comes again, before anything newer
                    with contextlib.suppress(StoreUnavailableError):
                        self.reader.rewind(self._in_flight)
                    self._in_flight = []
                stop.wait(retry_seconds)
                continue
            done += 1
            if on_batch is not None:
                on_batch(batch)
        return self.totals

    # ---- decoding ---------------------------------------------------------------------------

    def _decode(self, messages: list[Message]) -> tuple[list[dict[str, Any]], list[tuple[Message, str]]]:  # fmt: skip
        source = self.source
        allowed = allowed_columns(
            [v for v in self.store.catalog.all_views().values() if v.source == source.name],
            self.store.catalog, source,
        ) - set(ORIGIN)  # fmt: skip
        keys = {k for v in self.store.catalog.all_views().values() if v.source == source.name for k in self.store.catalog.join_keys(v)}  # fmt: skip
        rows: list[dict[str, Any]] = []
        dead: list[tuple[Message, str]] = []
        for message in messages:
            try:
                row = self._row(message, allowed, keys)
            except _Unreadable as why:
                dead.append((message, str(why)))
                continue
            row[PARTITION], row[OFFSET] = message.partition, message.offset
            row["__message"] = message
            rows.append(row)
        return rows, dead

    def _row(self, message: Message, allowed: set[str], keys: set[str]) -> dict[str, Any]:
        source = self.source
        if message.fields is not None and source.format == "fields":
            row: dict[str, Any] = dict(message.fields)
        else:
            if message.value is None:
                raise _Unreadable("the message has no value")
            try:
                row = orjson.loads(message.value)
            except orjson.JSONDecodeError as error:
                raise _Unreadable(f"not JSON: {error}") from None
            if not isinstance(row, dict):
                raise _Unreadable(f"not a JSON object but {type(row).__name__}")
        ts = source.timestamp_field
        if source.timestamp_format == "broker":
            if message.timestamp_ms is None:
                raise _Unreadable("the broker gave the message no timestamp")
            row[ts] = datetime.fromtimestamp(message.timestamp_ms / 1000, UTC)
        elif row.get(ts) is None:
            raise _Unreadable(f"no event time '{ts}'")
        elif source.timestamp_format in ("epoch_s", "epoch_ms"):
            try:
                seconds = float(row[ts]) / (1000 if source.timestamp_format == "epoch_ms" else 1)
                row[ts] = datetime.fromtimestamp(seconds, UTC)
            except (TypeError, ValueError, OverflowError, OSError):
                raise _Unreadable(f"event time '{ts}' is not epoch {source.timestamp_format[6:]}: {row[ts]!r}") from None  # fmt: skip
        missing = [k for k in sorted(keys) if row.get(k) is None]
        if missing:
            raise _Unreadable(f"no join key {', '.join(repr(k) for k in missing)}")
        extra = [name for name in row if name not in allowed]
        if extra:
            if source.extra_columns != "ignore":
                raise _Unreadable(f"unknown column(s) {', '.join(repr(n) for n in extra)}: no view of the source reads them")  # fmt: skip
            for name in extra:
                del row[name]
        return row

    # ---- writing ------------------------------------------------------------------------------

    def _unlogged(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        logged = self._logged_offsets()
        return [r for r in rows if r[OFFSET] > logged.get(r[PARTITION], -1)]

    def _write(self, rows: list[dict[str, Any]]) -> tuple[list[list[dict[str, Any]]], list[tuple[Message, str]]]:  # fmt: skip
        """Push `rows`; a batch the door refuses is split until the refused rows are
        found (dead letters). Returns the parts written and the refused rows."""
        if not rows:
            return [], []
        try:
            push(self.store, self.name, self._table(rows))
            return [rows], []
        except InputError as error:
            if len(rows) == 1:
                return [], [(rows[0]["__message"], str(error))]
        half = len(rows) // 2
        first, dead_first = self._write(rows[:half])
        second, dead_second = self._write(rows[half:])
        return first + second, dead_first + dead_second

    def _table(self, rows: list[dict[str, Any]]) -> pa.Table:
        names: dict[str, None] = {}
        for row in rows:
            names.update(dict.fromkeys(row))
        names.pop("__message", None)
        declared = self._declared_types()
        for name in declared:
            names.setdefault(name, None)
        columns = {name: [row.get(name) for row in rows] for name in names}
        if self.source.format == "fields":
            return _typed_text(columns, declared)
        return pa.table({name: _array(values, name) for name, values in columns.items()})

    def _declared_types(self) -> dict[str, str]:
        catalog = self.store.catalog
        views = [v for v in catalog.all_views().values() if v.source == self.source.name]
        what = f"stream '{self.source.name}'"
        declared = {**declared_columns(views, catalog, what, keys=True), **declared_columns(views, catalog, what, keys=False)}  # fmt: skip
        return {name: d.dtype for name, d in declared.items()}

    def _logged_offsets(self) -> dict[str, int]:
        """Per partition, the largest offset in the offline log: read when the reader
        was given partitions (another consumer may have written them), then kept up to
        date by this worker's own writes."""
        if self._logged is None or self._assignments != self.reader.assignments:
            self._assignments = self.reader.assignments
            self._logged = logged_offsets(push_folder(self.store.config, self.source))
        return self._logged

    def _remember(self, written: list[list[dict[str, Any]]]) -> None:
        logged = self._logged_offsets()
        for part in written:
            for row in part:
                if row[OFFSET] > logged.get(row[PARTITION], -1):
                    logged[row[PARTITION]] = row[OFFSET]

    def _dead_letters(self, dead: list[tuple[Message, str]]) -> None:
        kept = []
        if dead:  # one line a batch: a flood of bad messages must not flood the log
            first, why = dead[0]
            log.warning("stream '%s': %d dead letter(s), e.g. %s@%d: %s", self.name, len(dead), first.partition, first.offset, why)  # fmt: skip
        for message, reason in dead:
            try:
                sent = self.reader.dead_letter(message, reason)
            except Exception as error:  # the destination is down: keep it here instead
                log.error("stream '%s': dead letter not sent (%s); kept in Parquet", self.source.name, error)  # fmt: skip
                sent = False
            if not sent:
                kept.append(message_record(message, reason))
        if kept:
            table = pa.Table.from_pylist(kept, DEAD_LETTER_SCHEMA)
            stage_parquet(table, dead_letter_folder(self.store, self.name)).commit()


class _Unreadable(Exception):
    """A message that cannot be an event (the reason is its text)."""


def message_record(message: Message, reason: str) -> dict[str, Any]:
    return {
        "at": datetime.now(UTC), "partition": message.partition, "offset": message.offset,
        "value": message.value,
        "fields": None if message.fields is None else orjson.dumps(message.fields).decode(),
        "reason": reason,
    }  # fmt: skip


def logged_offsets(folder: Path) -> dict[str, int]:
    """Per partition, the largest offset among the events of a stream's offline log."""
    found = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    files = [str(p) for p in live_files(found)]
    if not files:
        return {}
    schema = pa.schema([(PARTITION, pa.string()), (OFFSET, pa.int64())])
    table = ds.dataset(files, schema=schema, format="parquet").to_table(columns=[PARTITION, OFFSET])  # fmt: skip
    table = table.filter(pc.is_valid(table.column(PARTITION)))
    if table.num_rows == 0:
        return {}
    grouped = table.group_by(PARTITION).aggregate([(OFFSET, "max")])
    return dict(zip(grouped.column(PARTITION).to_pylist(), grouped.column(f"{OFFSET}_max").to_pylist(), strict=True))  # fmt: skip


def _array(values: list[Any], name: str) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as error:
        raise InputError(f"column '{name}': values of mixed or unsupported types ({error})") from None  # fmt: skip


def _typed_text(columns: dict[str, list[Any]], dtypes: dict[str, str]) -> pa.Table:
    """Redis fields are text: each declared column cast to its type (ISO 8601 times are
    parsed by the door)."""
    from almanac.definitions.types import arrow_type

    out = {}
    for name, values in columns.items():
        dtype = dtypes.get(name)
        if dtype is None or dtype in ("string", "timestamp") or not all(isinstance(v, str | None) for v in values):  # fmt: skip
            out[name] = _array(values, name)
            continue
        text = pa.array(values, pa.string())
        if dtype == "bool":
            lowered = pc.utf8_lower(text)
            out[name] = pc.if_else(pc.is_in(lowered, pa.array(["true", "1"])), True, pc.if_else(pc.is_in(lowered, pa.array(["false", "0"])), False, pa.scalar(None, pa.bool_())))  # fmt: skip
            continue
        try:
            out[name] = pc.cast(text, arrow_type(dtype))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise InputError(f"column '{name}': not {dtype}: {error}") from None
    return pa.table(out)


def open_reader(store: StoreHandle, source_name: str, group: str, consumer: str) -> StreamReader:
    """The registered stream backend for the source's type (`stream.<type>`)."""
    from almanac import backends

    source = push_source_of(store.catalog, source_name)
    if not isinstance(source, StreamSource):
        raise InputError(f"source '{source_name}' is not a stream source ({source.type})")
    reader_class = backends.load("stream", source.type)
    reader: StreamReader = reader_class.open(source, store.config, group, consumer)
    return reader


def stream_sources(store: StoreHandle, views: Iterable[str] | None = None) -> list[str]:
    """The stream sources that feed `views` (default: every stream source read by a view)."""
    catalog = store.catalog
    chosen = [catalog.view(name) for name in views] if views else list(catalog.all_views().values())  # fmt: skip
    out = []
    for view in chosen:
        source = catalog.source_of(view)
        if isinstance(source, StreamSource) and view.source not in out:
            out.append(view.source)
    if views and not out:
        raise InputError(f"none of {', '.join(views)} reads a stream source")
    return out
