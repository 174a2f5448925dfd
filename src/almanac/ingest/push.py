"""`push`: rows sent to a push source, validated as a whole, then written.

A push source may feed several feature views. A push is checked completely before
anything is written (DESIGN.md, rule 7): the batch must carry every join key of every
view reading the source (in its declared type, no nulls), the source's event-time
column (no nulls; naive times are UTC) and every feature of those views, each castable
to its declared dtype without loss. A column no view reads is refused by name, unless the
source says `extra_columns="ignore"`; then the views' expectations admit the rows
(`almanac.quality.admission`). The rules are those of `almanac.semantics.validate`, which
`write_to_offline_store` follows too: rows get the same answer whichever way they come in.

Then, all or nothing across both stores:

1. offline (``to`` = ``offline`` or ``online_and_offline``): the source's one Parquet
   dataset gets one new file with the union of the views' columns, *staged* by the
   offline engine (checked again and written under a hidden name: a full disk fails
   here, with `StorageFullError`);
2. online (``online`` or ``online_and_offline``): one `write_batch` per online view,
   and one per write-time on-demand view of it (`write_to_online=True`), computed from
   the same rows before anything is written.
   Writes are monotonic (rule 3), so rows older than what is stored are skipped. An
   aggregation view gets the tiles of the pushed rows (built in process by
   `almanac.semantics.tile_build`: no engine query; the blobs materialization writes)
   merged into each entity's stored tiles (`OnlineStore.merge_batch`): its windowed
   values move with every push, late events included. A merge adds, so pushing the same
   rows twice counts them twice;
3. the staged file is committed (renamed into place) only once the online writes
   succeeded. If the online store fails (unreachable), the file is discarded: the push
   fails having changed neither store, and a retry records the rows once.

What remains outside this: a store failing *during* the online writes of a push that
feeds several views (or many entities on Redis) may keep the part already written online;
a retry rewrites it (harmless for feature views; an aggregation view counts that part
twice). Within a batch, rows are applied to the online store in (event time, created
time) order, so among rows with the same key the one that wins the point-in-time rule is
the one the store keeps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from almanac.definitions.aggregation import AggregationView, input_dtypes
from almanac.definitions.feature_view import FeatureView, Field
from almanac.definitions.on_demand import OnDemandView
from almanac.definitions.sources import PushSource, SourceBase, StreamSource
from almanac.errors import InputError, NotFoundError, TransformationError
from almanac.ingest.exactly_once import (
    APPLIED,
    OFFSET,
    ORIGIN,
    PARTITION,
    key_tag,
    keyed,
    once_per_event,
    pushed_with_key,
)
from almanac.offline import frames
from almanac.online.batch import prepare_batch
from almanac.online.layouts import claim
from almanac.ports.online import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from almanac.quality.admission import admit, check_columns, check_empty
from almanac.registry.diff import values_fingerprint
from almanac.registry.on_demand import write_time_views
from almanac.semantics.rows import ViewRows
from almanac.semantics.tile_build import build_tiles
from almanac.semantics.tiles import MERGED_AT, TILES_FEATURE, merge_blobs, reach_micros
from almanac.semantics.times import datetime_to_micros
from almanac.semantics.validate import Declared, check_batch
from almanac.transforms.ondemand import write_time_rows

if TYPE_CHECKING:
    from almanac.ports.handles import StoreHandle
    from almanac.registry.catalog import Catalog

PUSH_TARGETS = ("online", "offline", "online_and_offline")
UTC_US = pa.timestamp("us", tz="UTC")


def push(
    store: StoreHandle,
    push_source: str,
    df: Any,
    to: str = "online_and_offline",
    *,
    catalog: Catalog | None = None,
    only_view: str | None = None,
    idempotency_key: str | None = None,
) -> int:
    """Validate `df` (pandas, Polars, Arrow, a dict of columns or a list of dicts) against
    every view reading `push_source`, then write it to the online store, the offline
    store or both. Returns the number of rows accepted. `catalog` defaults to the
    store's (the HTTP server passes its cached one). `only_view` writes (and checks) the
    rows for that one view of the source (Feast's per-view online writes).

    A push retried with the same `idempotency_key` (after a timeout, say) counts once:
    a push whose offline file is in place is not written again, and its rows are merged
    into aggregation tiles at most once (`almanac.ingest.exactly_once`)."""
    if to not in PUSH_TARGETS:
        raise InputError(f"to must be one of {', '.join(PUSH_TARGETS)}, got {to!r}")
    catalog = catalog if catalog is not None else store.catalog
    source = push_source_of(catalog, push_source)
    key = None if idempotency_key is None else key_tag(idempotency_key)
    if key is not None and to != "online" and (done := pushed_with_key(store.config, source, key)) is not None:  # fmt: skip
        return done
    views = [view for view in catalog.all_views().values() if view.source == source.name]
    if only_view is not None:
        views = [view for view in views if view.name == only_view]
    transformed = [v.name for v in views if getattr(v, "transformation", None) is not None]
    if transformed:
        # Their values are computed from the rows by a batch transformation, which a push
        # does not run: writing raw rows would serve something else.
        raise InputError(
            f"push source '{source.name}' feeds {', '.join(transformed)}, whose values come "
            "from a batch transformation; pushing to it is not supported: write the rows "
            "to its offline data and materialize"
        )
    if not views:
        raise InputError(
            f"push source '{source.name}' feeds no feature view; nothing would read the rows"
        )
    online_views = [view for view in views if view.online] if to != "offline" else []
    if to == "online" and not online_views:
        raise InputError(
            f"no feature view reading push source '{source.name}' is served online "
            f"(views: {', '.join(v.name for v in views)}); push to 'offline' instead"
        )
    what = f"push to '{source.name}'"
    table = to_arrow(df, what)
    if table.num_rows == 0:
        check_empty(views, what, store.config, "push")
        return 0
    readers = [view for view in catalog.all_views().values() if view.source == source.name]
    table = check_columns(
        table, allowed_columns(readers, catalog, source), source.extra_columns, what
    )
    # A stream's events carry where they came from, kept in the offline log beside them;
    # a keyed push's rows come from the key.
    origin = {c: d for c, d in ORIGIN.items() if c in table.column_names and isinstance(source, StreamSource)}  # fmt: skip
    if key is not None:
        table = table.drop_columns([c for c in ORIGIN if c in table.column_names])
        table = table.append_column(PARTITION, pa.repeat(pa.scalar(f"key:{key}"), table.num_rows))
        table = table.append_column(OFFSET, pa.array(range(table.num_rows), pa.int64()))
        origin = dict(ORIGIN)
    batch = normalize(table, catalog, source, views, origin)
    admission = admit(batch, views, what, store.config, "push")
    if admission.rows.num_rows == 0:  # every row quarantined
        admission.record(store.config)
        return 0
    batch = _with_created_time(admission.rows, source)
    # Every check happens before the first write: the online batches are prepared (and
    # so validated) by the same code that `write_batch` runs.
    online_writes: list[tuple[FeatureView | OnDemandView, list[str], list[str], pa.Table]] = []
    for view in online_views:
        keys = list(catalog.join_keys(view))
        if isinstance(view, AggregationView):
            # Built in process (no engine query, whichever engine is configured), the
            # same blobs as materialization's, so the merge below combines them.
            columns = [*keys, source.timestamp_field, *_columns_read(view)]
            if origin:  # stream events: each applied once, even when a batch is replayed
                online_writes.append((view, keys, [TILES_FEATURE, APPLIED, MERGED_AT], batch.select([*columns, *origin])))  # fmt: skip
                continue
            tiles = build_tiles(
                view, catalog.join_keys(view), source.timestamp_field, batch.select(columns)
            )
            online_writes.append((view, keys, [TILES_FEATURE, MERGED_AT], tiles))
            continue
        features = view.feature_names
        rows = _online_rows(batch, source, keys, features)
        prepare_batch(view.name, rows, keys, features)
        online_writes.append((view, keys, features, rows))
        for derived in write_time_views(catalog, view.name):  # computed now, and stored
            computed = _write_time_rows(catalog, derived, rows, store, what)
            names = [f.name for f in catalog.on_demand_fields(derived.name)]
            prepare_batch(derived.name, computed, keys, names)
            online_writes.append((derived, keys, names, computed))
    # All or nothing across both stores: the offline file is staged (where a full disk
    # fails), the online store written, and only then the file committed (a rename).
    staged = (
        store.offline.stage(catalog, _union_view(views, source, origin), batch)
        if to != "online"
        else None
    )
    if key is not None and staged is not None:
        staged = keyed(staged, key)
    try:
        # The store holds these views' values of this definition only (another store's
        # apply could not clear it): see `almanac.online.layouts`.
        layouts = {view.name: values_fingerprint(catalog, view.name) for view, *_ in online_writes}
        claim(store.online, store.project, layouts)
        for written, keys, features, rows in online_writes:
            if isinstance(written, AggregationView):
                now = datetime_to_micros(datetime.now(UTC))
                if APPLIED in features:
                    tiles, merge = once_per_event(written, catalog.join_keys(written), source.timestamp_field, rows, now)  # fmt: skip
                    store.online.merge_batch(store.project, written.name, keys, features, tiles, merge)  # fmt: skip
                    continue
                merge = partial(_merge_pushed, reach=reach_micros(written), now=now)
                stamped = rows.append_column(MERGED_AT, pa.repeat(pa.scalar(now, pa.int64()), rows.num_rows))  # fmt: skip
                store.online.merge_batch(
                    store.project, written.name, keys, features, stamped, merge
                )
            else:
                store.online.write_batch(store.project, written.name, keys, features, rows)
    except BaseException:
        if staged is not None:
            staged.discard()
        raise
    if staged is not None:
        staged.commit()
    admission.record(store.config)
    return int(batch.num_rows)


def write_to_offline_store(store: StoreHandle, view_name: str, df: Any) -> int:
    """Append `df` to a view's offline dataset as one new file (atomic), admitted by
    the same rules as a push: strict columns, then the view's expectations."""
    from almanac.offline.writer import prepare_batch as offline_batch

    catalog = store.catalog
    view = catalog.view(view_name)
    source = catalog.source_of(view)
    what = f"batch for feature view '{view.name}'"
    # What pushes take, and what the engines read too (Parquet paths, Arrow streams).
    table = to_arrow(df, what) if _rows_like(df) else frames.to_arrow(df, what)
    if table.num_rows == 0:
        check_empty([view], what, store.config, "write")
        return 0
    # The file gets this view's columns only: another view's column would be dropped
    # (and its expectations never checked), so it is refused like any unknown one.
    allowed = allowed_columns([view], catalog, source)
    table = check_columns(table, allowed, getattr(source, "extra_columns", "reject"), what)
    batch = offline_batch(table, view, catalog.join_keys(view), source)
    admission = admit(batch, [view], what, store.config, "write")
    staged = store.offline.stage(catalog, view, admission.rows) if admission.rows.num_rows else None
    rows = 0
    if staged is not None:
        staged.commit()
        rows = staged.rows
    admission.record(store.config)
    return rows


def _merge_pushed(stored: ViewRows, new: pa.Table, reach: int, now: int) -> pa.Table:
    """A push's tiles merged into the stored ones, stamped with the merge's time."""
    merged = merge_blobs(ViewRows(stored.event_times, [stored.columns[0]]), new.drop_columns([MERGED_AT]), reach, now)  # fmt: skip
    return merged.append_column(MERGED_AT, pa.repeat(pa.scalar(now, pa.int64()), merged.num_rows))


def push_source_of(catalog: Catalog, name: str) -> PushSource:
    pushes = {n: s for n, s in catalog.sources.items() if isinstance(s, PushSource)}
    if not isinstance(name, str) or name not in pushes:
        if isinstance(name, str) and name in catalog.sources:
            raise InputError(
                f"source '{name}' is not a push source (it is a {catalog.sources[name].type} "
                "source); rows can be pushed only to push sources"
            )
        raise NotFoundError("push source", str(name), pushes)
    return pushes[name]


# ---- input frames -----------------------------------------------------------------------


def to_arrow(df: Any, what: str) -> pa.Table:
    """pandas, Polars, Arrow, a dict of columns or a list of dicts, as an Arrow table."""
    if isinstance(df, pa.Table):
        return df
    if isinstance(df, pa.RecordBatch):
        return pa.Table.from_batches([df])
    module = type(df).__module__.split(".")[0]
    if module == "pandas" and hasattr(df, "columns"):
        try:
            return pa.Table.from_pandas(df, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise InputError(f"{what}: {error}") from None
    if module == "polars" and hasattr(df, "to_arrow"):
        return df.to_arrow()
    if isinstance(df, Mapping):
        return _from_columns(df, what)
    if isinstance(df, Sequence) and not isinstance(df, str | bytes):
        names: dict[str, None] = {}
        for index, row in enumerate(df):
            if not isinstance(row, Mapping):
                raise InputError(f"{what}: row {index} must be a dict, got {type(row).__name__}")
            names.update(dict.fromkeys(row))
        return _from_columns({name: [row.get(name) for row in df] for name in names}, what)
    raise InputError(
        f"{what}: rows must be a pandas or Polars DataFrame, an Arrow table, a dict of "
        f"columns or a list of dicts, got {type(df).__name__}"
    )


def _rows_like(df: Any) -> bool:
    module = type(df).__module__.split(".")[0]
    return (
        isinstance(df, pa.Table | pa.RecordBatch | Mapping)
        or (isinstance(df, Sequence) and not isinstance(df, str | bytes))
        or (module == "pandas" and hasattr(df, "columns"))
        or (module == "polars" and hasattr(df, "to_arrow"))
    )


def _from_columns(data: Mapping[Any, Any], what: str) -> pa.Table:
    arrays = {}
    for name, values in data.items():
        if not isinstance(name, str):
            raise InputError(f"{what}: column names must be text, got {name!r}")
        if isinstance(values, np.ndarray):
            values = values.tolist() if values.dtype == object else pa.array(values)
        if isinstance(values, str | bytes) or not isinstance(values, Sequence | pa.Array):
            raise InputError(f"{what}: column '{name}' must be a list of values, got {values!r}")
        try:
            arrays[name] = values if isinstance(values, pa.Array) else pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as error:
            raise InputError(
                f"{what}: column '{name}': values of mixed or unsupported types ({error})"
            ) from None
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise InputError(f"{what}: columns have different lengths: {lengths}")
    return pa.table(arrays) if arrays else pa.table({})


# ---- validation -------------------------------------------------------------------------


def normalize(
    table: pa.Table,
    catalog: Catalog,
    source: PushSource,
    views: list[FeatureView],
    extra: Mapping[str, Declared] | None = None,
) -> pa.Table:
    """The batch with the join keys, the event (and created) time as UTC microseconds and
    every column of `views` (and `extra`) in its declared type; InputError naming the
    first problem. The rules are `almanac.semantics.validate`'s, which
    `write_to_offline_store` follows too."""
    what = f"push to '{source.name}'"
    return check_batch(
        table,
        what,
        keys=declared_columns(views, catalog, what, keys=True),
        timestamp_field=source.timestamp_field,
        created_field=source.created_timestamp_field,
        columns={**declared_columns(views, catalog, what, keys=False), **(extra or {})},
    )


def allowed_columns(views: list[FeatureView], catalog: Catalog, source: SourceBase) -> set[str]:
    """The columns a batch for `views` of `source` may carry: their join keys and the
    columns they read, and the source's time columns."""
    names = {source.timestamp_field, source.created_timestamp_field or source.timestamp_field}
    for view in views:
        names.update(catalog.join_keys(view), _columns_read(view))
    if isinstance(source, StreamSource):
        names.update(ORIGIN)
    return names


def declared_columns(
    views: list[FeatureView], catalog: Catalog, what: str, keys: bool
) -> dict[str, Declared]:
    """Join keys (or the columns views read) of all views with their dtypes and the first
    view declaring each; a name typed differently by two views cannot be pushed as one
    column."""
    out: dict[str, Declared] = {}
    for view in views:
        items = catalog.join_keys(view) if keys else _columns_read(view)
        owner = f"{view.kind.replace('_', ' ')} '{view.name}'"
        for name, dtype in items.items():
            first = out.setdefault(name, Declared(dtype, owner))
            if first.dtype != dtype:
                raise InputError(
                    f"{what}: column '{name}' is {first.dtype} in {first.owner} but "
                    f"{dtype} in {owner}; a pushed column has one type"
                )
    return out


def _columns_read(view: FeatureView) -> dict[str, str]:
    """The pushed columns a view reads, with the dtype each is read as: a feature view's
    features; an aggregation view's aggregated columns (typed: the catalog requires it
    of aggregations over push sources)."""
    if not isinstance(view, AggregationView):
        return {f.name: f.dtype for f in view.features}
    dtypes = input_dtypes(view.aggregations, view.columns)
    return {column: dtype or "string" for column, dtype in dtypes.items()}


# ---- writing ----------------------------------------------------------------------------


def _with_created_time(batch: pa.Table, source: PushSource) -> pa.Table:
    """A source with a created time that the rows lack: they get the push's time, the
    same in both stores (so a later push wins event-time ties online as offline)."""
    created = source.created_timestamp_field
    if created is None or created in batch.column_names:
        return batch
    now = pa.scalar(datetime.now(UTC), UTC_US)
    return batch.append_column(created, pa.repeat(now, batch.num_rows))


def _write_time_rows(
    catalog: Catalog, view: OnDemandView, rows: pa.Table, store: StoreHandle, what: str
) -> pa.Table:
    """A write-time view's rows from the pushed ones. Its function failing on them
    refuses the push (an `InputError`, before anything is written): a stream worker then
    dead-letters the rows at fault, and a group of HTTP pushes writes each alone."""
    try:
        return write_time_rows(catalog, view, rows, getattr(store, "repo_path", None))
    except TransformationError as error:
        raise InputError(f"{what}: the rows were refused: {error}") from error


def _online_rows(
    batch: pa.Table, source: PushSource, keys: list[str], features: list[str]
) -> pa.Table:
    """One view's columns for `write_batch`, in (event time, created time) order."""
    sort = [(source.timestamp_field, "ascending", "at_start")]
    created = source.created_timestamp_field
    if created is not None and created in batch.column_names:
        sort.append((created, "ascending", "at_start"))
    # Stable: equal rows keep input order. A null created time is the oldest, as offline.
    order = pc.sort_indices(batch, sort_keys=sort)
    columns = {key: batch.column(key) for key in keys}
    columns[EVENT_TIMESTAMP] = batch.column(source.timestamp_field)
    if created is not None and created in batch.column_names:
        columns[CREATED_TIMESTAMP] = batch.column(created)  # ties online as offline
    columns |= {name: batch.column(name) for name in features}
    return pa.table(columns).take(order)


def _union_view(
    views: list[FeatureView], source: PushSource, extra: Mapping[str, Declared] | None = None
) -> FeatureView:
    """A view with every column that the source's views read (and `extra`), so that the
    source's one dataset gets them all in one file (writing per view would keep only
    that view's)."""
    if len(views) == 1 and not isinstance(views[0], AggregationView) and not extra:
        return views[0]
    entities = list(dict.fromkeys(e for view in views for e in view.entities))
    fields: dict[str, str] = {}
    for view in views:
        fields |= _columns_read(view)
    fields |= {name: declared.dtype for name, declared in (extra or {}).items()}
    # Built without validation: a source read only by counts has no column beyond its
    # keys and times, which a declared feature view may not have (no features).
    return FeatureView.model_construct(
        name=views[0].name,
        entities=entities,
        source=views[0].source,  # the source's name, as every view of it has
        # model_construct: Almanac's own columns (`__almanac_...`) are no user's names.
        schema_=[Field.model_construct(name=name, dtype=dtype) for name, dtype in fields.items()],
    )
