"""Each stream event applied once to an aggregation view's tiles, even when a batch is
read again after a crash.

A stream's events carry their origin (`ORIGIN`: partition and offset; the offline log
keeps both beside each event). A plain view needs nothing more: writing an event again
writes the same value at the same time, which the monotonic rule makes a no-op. Tiles
are sums, so an event merged twice counts twice. So each entity's online row holds, in
the field `APPLIED`, the last offset merged into its tiles per partition, and the merge
— atomic per entity in every online store — merges only events past it:

- an entity none of whose events in the batch was merged before (the normal case):
  the batch's tiles, merged as a push's;
- one whose events were all merged (the batch is a replay): its stored row, unchanged;
- one in between (a replay that reaches further than the batch that was cut short):
  tiles built again from its events past the stored offsets.

Offsets grow within a partition and the worker applies a partition's batches in order,
so "past the stored offset" is exactly "not merged yet".

A push with an idempotency key is its own partition (`key:<hash of the key>`, offsets
the row numbers): its offline file carries the key's hash in its name, so a retry finds
it (a compaction keeps the key in the merged file's metadata for
`almanac.offline.compaction.KEY_RETENTION`), and its merges are recorded like a stream's.
An entity's row keeps the last `KEYS_KEPT` keys merged into it: a retry after that many
other keyed pushes to the same entity would count again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from almanac.config import RepoConfig
from almanac.definitions.aggregation import AggregationView
from almanac.definitions.sources import PushSource
from almanac.errors import InputError
from almanac.offline.files import COMPACTED_MARK, compaction_of, push_folder
from almanac.offline.writer import StagedFile
from almanac.ports.offline import Staged
from almanac.ports.online import Merge
from almanac.semantics.rows import EVENT_TIMESTAMP, ViewRows
from almanac.semantics.tile_build import build_tiles
from almanac.semantics.tiles import MERGED_AT, TILES_FEATURE, merge_blobs, reach_micros
from almanac.semantics.validate import Declared

PARTITION, OFFSET = "__almanac_partition", "__almanac_offset"
ORIGIN = {PARTITION: Declared("string", "the stream"), OFFSET: Declared("int64", "the stream")}
APPLIED = "__almanac_applied"  # an online-only field of a stream-fed aggregation view

KEYS_KEPT = 64
Ranges = dict[str, tuple[int, int]]  # partition → (first, last) offset of an entity's events


def once_per_event(
    view: AggregationView,
    join_keys: dict[str, str],
    timestamp_field: str,
    events: pa.Table,
    now: int,
) -> tuple[pa.Table, Merge]:
    """The batch's tiles per entity (with the `APPLIED` offsets they bring) and the merge
    that applies each event at most once (see the module docstring)."""
    keys = list(join_keys)
    build: Callable[[pa.Table], pa.Table] = lambda rows: build_tiles(  # noqa: E731
        view, join_keys, timestamp_field, rows.drop_columns(list(ORIGIN))
    )
    ranges = _ranges(events, keys)
    tiles = build(events)
    applied = [
        orjson.dumps({p: last for p, (_, last) in ranges[k].items()}).decode()
        for k in _key_tuples(tiles, keys)
    ]
    tiles = tiles.append_column(APPLIED, pa.array(applied, pa.string()))
    tiles = tiles.append_column(MERGED_AT, pa.repeat(pa.scalar(now, pa.int64()), tiles.num_rows))
    reach = reach_micros(view)

    def merge(stored: ViewRows, pending: pa.Table) -> pa.Table:
        done = [orjson.loads(text) if text else {} for text in stored.columns[1]]
        entity_keys = _key_tuples(pending, keys)
        fresh, replayed, partial = [], [], []
        for i, key in enumerate(entity_keys):
            mine, before = ranges[key], done[i]
            if all(before.get(p, -1) < first for p, (first, _) in mine.items()):
                fresh.append(i)
            elif all(before.get(p, -1) >= last for p, (_, last) in mine.items()):
                replayed.append(i)
            else:
                partial.append(i)
        rows = pending
        if partial:  # rebuild those entities' tiles from their events not merged yet
            rebuilt = build(_not_applied(events, keys, {entity_keys[i]: done[i] for i in partial}))  # fmt: skip
            index = {k: j for j, k in enumerate(_key_tuples(rebuilt, keys))}
            times = rows.column(EVENT_TIMESTAMP).to_pylist()
            blobs = rows.column(TILES_FEATURE).to_pylist()
            for i in partial:
                j = index[entity_keys[i]]
                times[i] = rebuilt.column(EVENT_TIMESTAMP)[j].as_py()
                blobs[i] = rebuilt.column(TILES_FEATURE)[j].as_py()
            rows = rows.set_column(rows.schema.get_field_index(EVENT_TIMESTAMP), EVENT_TIMESTAMP, pa.array(times, rows.schema.field(EVENT_TIMESTAMP).type))  # fmt: skip
            rows = rows.set_column(rows.schema.get_field_index(TILES_FEATURE), TILES_FEATURE, pa.array(blobs, pa.binary()))  # fmt: skip
        merged = merge_blobs(ViewRows(stored.event_times, [stored.columns[0]]), rows.drop_columns([APPLIED, MERGED_AT]), reach, now)  # fmt: skip
        times = merged.column(EVENT_TIMESTAMP).to_pylist()
        blobs = merged.column(TILES_FEATURE).to_pylist()
        for i in replayed:  # already in the store: written back as stored
            stored_time = stored.event_times[i]
            if stored_time is not None:
                times[i] = _time(stored_time, merged)
                blobs[i] = stored.columns[0][i]
        marks = [
            orjson.dumps(_bounded({
                **done[i], **{p: max(done[i].get(p, -1), last) for p, (_, last) in ranges[key].items()},
            })).decode()
            for i, key in enumerate(entity_keys)
        ]  # fmt: skip
        return pa.table({
            **{k: merged.column(k) for k in keys},
            EVENT_TIMESTAMP: pa.array(times, merged.schema.field(EVENT_TIMESTAMP).type),
            TILES_FEATURE: pa.array(blobs, pa.binary()),
            APPLIED: pa.array(marks, pa.string()),
            MERGED_AT: pa.repeat(pa.scalar(now, pa.int64()), len(marks)),
        })  # fmt: skip

    return tiles, merge


def _ranges(events: pa.Table, keys: list[str]) -> dict[tuple[Any, ...], Ranges]:
    """Per entity, per partition: the first and last offset of its events."""
    grouped = events.group_by([*keys, PARTITION]).aggregate([(OFFSET, "min"), (OFFSET, "max")])
    out: dict[tuple[Any, ...], Ranges] = {}
    entity = _key_tuples(grouped, keys)
    parts = grouped.column(PARTITION).to_pylist()
    firsts, lasts = grouped.column(f"{OFFSET}_min").to_pylist(), grouped.column(f"{OFFSET}_max").to_pylist()  # fmt: skip
    for key, part, first, last in zip(entity, parts, firsts, lasts, strict=True):
        out.setdefault(key, {})[part] = (first, last)
    return out


def _not_applied(events: pa.Table, keys: list[str], done: dict[tuple[Any, ...], dict[str, int]]) -> pa.Table:  # fmt: skip
    """The events of the entities in `done` past the offsets merged for them."""
    entity = _key_tuples(events, keys)
    parts = events.column(PARTITION).to_pylist()
    offsets = events.column(OFFSET).to_pylist()
    keep = [
        key in done and offset > done[key].get(part, -1)
        for key, part, offset in zip(entity, parts, offsets, strict=True)
    ]
    return events.filter(pa.array(keep, pa.bool_()))


def _key_tuples(table: pa.Table, keys: list[str]) -> list[tuple[Any, ...]]:
    return list(zip(*(table.column(k).to_pylist() for k in keys), strict=True))


def _time(micros: int, like: pa.Table) -> Any:
    """A stored event time (µs) as the merged table's time type holds it."""
    kind = like.schema.field(EVENT_TIMESTAMP).type
    return pc.cast(pa.array([micros], pa.int64()), kind)[0].as_py()


def _bounded(marks: dict[str, int]) -> dict[str, int]:
    """Stream partitions all kept; of pushes' keys, the newest `KEYS_KEPT`."""
    keys = [name for name in marks if name.startswith("key:")]
    for name in keys[: max(0, len(keys) - KEYS_KEPT)]:
        del marks[name]
    return marks


def key_tag(idempotency_key: str) -> str:
    """A push's idempotency key as it is kept (a hash: the key may be any text)."""
    if not isinstance(idempotency_key, str) or not idempotency_key or len(idempotency_key) > 256:
        raise InputError("idempotency_key: give a non-empty text of at most 256 characters")
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def pushed_with_key(config: RepoConfig, source: PushSource, tag: str) -> int | None:
    """The rows of the push with this key if its offline file is in place, else None."""
    folder = push_folder(config, source)
    if not folder.is_dir():
        return None
    for path in folder.glob(f"part-*-k{tag}.parquet"):
        rows: int = pq.ParquetFile(path).metadata.num_rows
        return rows
    # Compacted away: the merged file remembers the keys of the pushes it holds.
    for path in folder.glob(f"part-*-{COMPACTED_MARK}*.parquet"):
        compacted = compaction_of(path)
        if compacted is not None and tag in compacted.keys:
            return compacted.keys[tag][0]
    return None


def keyed(staged: Staged, tag: str) -> Staged:
    """`staged` committed under a name that carries the key (so a retry finds it)."""
    if not isinstance(staged, StagedFile):
        raise InputError("idempotency keys need an offline engine that writes files")
    staged.final = staged.final.with_name(f"{staged.final.stem}-k{tag}.parquet")
    return staged
