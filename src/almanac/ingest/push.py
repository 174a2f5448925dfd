"""`push`: rows sent to a push source, validated as a whole, then written.

A push source may feed several feature views. A push is checked completely before
anything is written (DESIGN.md, rule 7): the batch must carry every join key of every
view reading the source (in its declared type, no nulls), the source's event-time
column (no nulls; naive times are UTC) and every feature of those views, each castable
to its declared dtype without loss. Columns no view reads are ignored (a Feast client
sends a `created` column even when the source declares none).

Then, in this order:

1. offline (``to`` = ``offline`` or ``online_and_offline``): the source's one Parquet
   dataset gets one new file with the union of the views' columns, written atomically
   by the offline engine (which checks the batch again);
2. online (``online`` or ``online_and_offline``): one `write_batch` per online view.
   Writes are monotonic (rule 3), so rows older than what is stored are skipped and a
   retried push is harmless. An aggregation view gets the tiles of the pushed rows
   (computed by the offline engine, as materialization does) merged into each entity's
   stored tiles (`OnlineStore.merge_batch`): its windowed values move with every push,
   late events included. A merge adds, so pushing the same rows twice counts them twice.

Offline first: if the online store then fails (unreachable), the history is complete
and the next materialization brings the online store up to date (so does a retry, for
feature views; for an aggregation view a retry would record the rows twice); the other
order could leave online values that training data never saw. Within a batch, rows are
applied to the online store in (event time, created time) order, so among rows with the
same key the one that wins the point-in-time rule is the one the store keeps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from almanac.definitions.aggregation import AggregationView, input_dtypes
from almanac.definitions.feature_view import FeatureView, Field
from almanac.definitions.sources import PushSource
from almanac.definitions.types import arrow_type
from almanac.errors import InputError, NotFoundError
from almanac.online.base import EVENT_TIMESTAMP
from almanac.online.batch import prepare_batch
from almanac.online.tiles import TILES_FEATURE, merge_blobs, reach_micros

if TYPE_CHECKING:
    from almanac.registry.catalog import Catalog
    from almanac.store import FeatureStore

PUSH_TARGETS = ("online", "offline", "online_and_offline")
UTC_US = pa.timestamp("us", tz="UTC")


def push(
    store: FeatureStore,
    push_source: str,
    df: Any,
    to: str = "online_and_offline",
    *,
    catalog: Catalog | None = None,
) -> int:
    """Validate `df` (pandas, Polars, Arrow, a dict of columns or a list of dicts) against
    every view reading `push_source`, then write it to the online store, the offline
    store or both. Returns the number of rows accepted. `catalog` defaults to the
    store's (the HTTP server passes its cached one)."""
    if to not in PUSH_TARGETS:
        raise InputError(f"to must be one of {', '.join(PUSH_TARGETS)}, got {to!r}")
    catalog = catalog if catalog is not None else store.catalog
    source = push_source_of(catalog, push_source)
    views = [view for view in catalog.all_views().values() if view.source == source.name]
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
        return 0
    batch = normalize(table, catalog, source, views)
    # Every check happens before the first write: the online batches are prepared (and
    # so validated) by the same code that `write_batch` runs.
    online_writes = []
    for view in online_views:
        keys = list(catalog.join_keys(view))
        if isinstance(view, AggregationView):
            columns = [*keys, source.timestamp_field, *_columns_read(view)]
            tiles = store.offline.tiles_of_rows(catalog, view, batch.select(columns))
            online_writes.append((view, keys, [TILES_FEATURE], tiles))
            continue
        features = view.feature_names
        rows = _online_rows(batch, source, keys, features)
        prepare_batch(view.name, rows, keys, features)
        online_writes.append((view, keys, features, rows))
    if to != "online":
        store.offline.write(catalog, _union_view(views, source), batch)
    for view, keys, features, rows in online_writes:
        if isinstance(view, AggregationView):
            merge = partial(merge_blobs, reach=reach_micros(view), now=_now_micros())
            store.online.merge_batch(store.project, view.name, keys, features, rows, merge)
        else:
            store.online.write_batch(store.project, view.name, keys, features, rows)
    return batch.num_rows


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


def _from_columns(data: Mapping[Any, Any], what: str) -> pa.Table:
    arrays = {}
    for name, values in data.items():
        if not isinstance(name, str):
            raise InputError(f"{what}: column names must be text, got {name!r}")
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
    table: pa.Table, catalog: Catalog, source: PushSource, views: list[FeatureView]
) -> pa.Table:
    """The batch with the join keys, the event (and created) time as UTC microseconds and
    every feature of `views` in its declared type; InputError naming the first problem."""
    what = f"push to '{source.name}'"
    columns: dict[str, pa.ChunkedArray] = {}
    for key, dtype in _union(views, catalog, what, keys=True).items():
        columns[key] = _key(table, key, dtype, what)
    columns[source.timestamp_field] = _timestamps(table, source.timestamp_field, what, nulls=False)
    created = source.created_timestamp_field
    if created is not None and created in table.column_names:
        columns[created] = _timestamps(table, created, what, nulls=True)
    features = _union(views, catalog, what, keys=False)
    missing = [name for name in features if name not in table.column_names]
    if missing:
        readers = {n: next(v.name for v in views if n in _columns_read(v)) for n in missing}  # fmt: skip
        raise InputError(
            f"{what}: missing column(s) "
            + ", ".join(f"'{n}' (of view '{readers[n]}')" for n in missing)
            + f"; columns given: {', '.join(table.column_names) or 'none'}"
        )
    for name, dtype in features.items():
        columns[name] = _feature(table, name, dtype, what)
    return pa.table(columns)


def _union(views: list[FeatureView], catalog: Catalog, what: str, keys: bool) -> dict[str, str]:
    """Join keys (or the columns views read) of all views with their dtypes; a name typed
    differently by two views cannot be pushed as one column."""
    out: dict[str, str] = {}
    owner: dict[str, str] = {}
    for view in views:
        items = catalog.join_keys(view) if keys else _columns_read(view)
        for name, dtype in items.items():
            if out.setdefault(name, dtype) != dtype:
                raise InputError(
                    f"{what}: column '{name}' is {out[name]} in view '{owner[name]}' but "
                    f"{dtype} in view '{view.name}'; a pushed column has one type"
                )
            owner.setdefault(name, view.name)
    return out


def _key(table: pa.Table, key: str, dtype: str, what: str) -> pa.ChunkedArray:
    if key not in table.column_names:
        raise InputError(f"{what}: missing join key column '{key}' ({dtype})")
    column = table.column(key)
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    ok = pa.types.is_integer(kind) if dtype == "int64" else _is_text(kind)
    if not (ok or pa.types.is_null(kind)):
        raise InputError(f"{what}: join key '{key}' must be {dtype}, got {kind}")
    try:
        column = column.cast(pa.int64() if dtype == "int64" else pa.string())
    except pa.ArrowInvalid:
        raise InputError(f"{what}: join key '{key}' has values that do not fit int64") from None
    if column.null_count:
        raise InputError(f"{what}: join key '{key}' has {column.null_count} null value(s)")
    return column


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _timestamps(table: pa.Table, name: str, what: str, nulls: bool) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise InputError(f"{what}: missing timestamp column '{name}'")
    column = utc_micros(table.column(name), f"{what}: column '{name}'")
    if not nulls and column.null_count:
        raise InputError(f"{what}: timestamp column '{name}' has {column.null_count} null value(s)")
    return column


def utc_micros(column: pa.ChunkedArray | pa.Array, what: str) -> pa.ChunkedArray:
    """Timestamps (any unit or zone; naive read as UTC), dates or ISO-8601 text, as
    timestamp[us, UTC]; sub-microsecond digits are dropped as the stores keep micros."""
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column])
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if pa.types.is_timestamp(kind):
        column = column.cast(pa.timestamp(kind.unit, tz="UTC"))  # metadata only: UTC instants
        return column.cast(UTC_US, safe=False)
    if pa.types.is_date(kind) or pa.types.is_null(kind):
        return column.cast(pa.timestamp("us")).cast(UTC_US)
    if _is_text(kind):
        for target in (UTC_US, pa.timestamp("us")):  # with an offset, then naive (UTC)
            try:
                return pc.cast(column, target, safe=False).cast(UTC_US)
            except pa.ArrowInvalid:
                continue
        return pa.chunked_array([pa.array(_parse_texts(column.to_pylist(), what), UTC_US)])
    raise InputError(f"{what} has type {kind}; expected timestamps, dates or ISO-8601 text")


def _parse_texts(values: list[str | None], what: str) -> list[datetime | None]:
    # Mixed forms (some with an offset, some without) or other ISO-8601 variants.
    out: list[datetime | None] = []
    for index, text in enumerate(values):
        if text is None:
            out.append(None)
            continue
        try:
            value = datetime.fromisoformat(text.strip())
        except ValueError:
            raise InputError(
                f"{what}: row {index}: '{text}' is not an ISO-8601 timestamp"
            ) from None
        if not isinstance(value, datetime) and isinstance(value, date):
            value = datetime(value.year, value.month, value.day)
        out.append(value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC))
    return out


def _feature(table: pa.Table, name: str, dtype: str, what: str) -> pa.ChunkedArray:
    column = table.column(name)
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    label = f"{what}: column '{name}'"
    if dtype == "timestamp":
        return utc_micros(column, label)
    if _is_text(kind) and dtype not in ("string", "bytes"):
        # Arrow would parse "12" as 12; text where a number is declared is a wrong type.
        raise InputError(f"{label} holds text, but the feature is declared {dtype}")
    if dtype == "string" and not (_is_text(kind) or pa.types.is_null(kind)):
        # ...and would print 12 as "12": a number where text is declared is one too.
        raise InputError(f"{label} holds {kind}, but the feature is declared string")
    if dtype.startswith("list<timestamp") and pa.types.is_list(kind) and _is_text(kind.value_type):
        raise InputError(f"{label}: timestamps inside lists must be timestamps, not text")
    try:
        return column.cast(arrow_type(dtype))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
        raise InputError(
            f"{label} has type {kind}, which does not convert to the declared {dtype}: "
            f"{str(error).splitlines()[0]}"
        ) from None


def _now_micros() -> int:
    return (datetime.now(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _columns_read(view: FeatureView) -> dict[str, str]:
    """The pushed columns a view reads, with the dtype each is read as: a feature view's
    features; an aggregation view's aggregated columns (typed: the catalog requires it
    of aggregations over push sources)."""
    if not isinstance(view, AggregationView):
        return {f.name: f.dtype for f in view.features}
    dtypes = input_dtypes(view.aggregations, view.columns)
    return {column: dtype or "string" for column, dtype in dtypes.items()}


# ---- writing ----------------------------------------------------------------------------


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
    columns |= {name: batch.column(name) for name in features}
    return pa.table(columns).take(order)


def _union_view(views: list[FeatureView], source: PushSource) -> FeatureView:
    """A view with every column that the source's views read, so that the source's one
    dataset gets them all in one file (writing per view would keep only that view's)."""
    if len(views) == 1 and not isinstance(views[0], AggregationView):
        return views[0]
    entities = list(dict.fromkeys(e for view in views for e in view.entities))
    fields: dict[str, str] = {}
    for view in views:
        fields |= _columns_read(view)
    # Built without validation: a source read only by counts has no column beyond its
    # keys and times, which a declared feature view may not have (no features).
    return FeatureView.model_construct(
        name=views[0].name,
        entities=entities,
        source=source.name,
        schema_=[Field(name, dtype) for name, dtype in fields.items()],
    )
