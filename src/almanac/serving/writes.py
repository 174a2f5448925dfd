"""The write endpoints: `POST /push` and Feast's `POST /write-to-online-store`.

Both hand their rows to `almanac.ingest.push.push`, so a row gets the same checks
(`almanac.semantics.validate`) and the same all-or-nothing write whichever endpoint it came by.

* `/push` takes Almanac's body, which is Feast's as well: Feast's extra flags are
  accepted and ignored, and a column may be pandas' ``to_dict()`` shape
  (``{"0": v, "1": w}``), which Feast's server accepts since it builds a DataFrame
  from the body.
* `/write-to-online-store` is what a Feast client with ``online_store: type: remote``
  sends for `write_to_online_store`, `push(to=ONLINE)` and materialization: the rows of
  one feature view, to the online store only. Feast names the event time
  ``event_timestamp`` and the created time ``created`` whatever the source calls them,
  and sends timestamp features as epoch seconds; those are mapped to the source's
  names and types. Only a view fed by a push source takes such writes: the online
  values of any other view come from materialization, and a row written there straight
  would be served without being in the offline store (skew). The rows go to that one
  view, not to every view reading the source (a Feast client pushing to a source
  writes each of its views in turn; an aggregation view would count them twice).

Writes run in a worker thread (Parquet files, bulk writes). A write refused because
storage is full is remembered (`ServingState.storage_error`, per worker process) until
a write succeeds again, and `/health` reports it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from almanac.definitions.sources import PushSource
from almanac.definitions.types import Timestamp
from almanac.errors import AccessDeniedError, InputError, NotFoundError
from almanac.ingest.push import push, push_source_of
from almanac.security import audit
from almanac.serving import access, encode
from almanac.serving.errors import parse_body, storage_full
from almanac.serving.schemas import PushRequest, WriteToOnlineStoreRequest

if TYPE_CHECKING:
    from almanac.definitions.feature_view import FeatureView
    from almanac.registry.catalog import Catalog
    from almanac.serving.handlers import ServingState

FEAST_EVENT_TIMESTAMP = "event_timestamp"
FEAST_CREATED = "created"


async def push_rows(state: ServingState, body: bytes, idempotency_key: str | None = None) -> bytes:
    request = parse_body(PushRequest, body)
    catalog = state.catalog
    _authorize_push(state, request.push_source_name, request.to)
    source = push_source_of(catalog, request.push_source_name)
    assert source.name is not None  # a catalog's sources are named
    views = [v.name for v in catalog.all_views().values() if v.source == source.name]
    what = f"push to '{source.name}'"
    df = _decode_bytes(_columns(request.df, what), catalog, source.name, what)
    rows = await _write(state, catalog, source.name, df, request.to, key=idempotency_key)
    return encode.dumps(
        {"push_source_name": source.name, "to": request.to, "rows": rows, "views": views}
    )


def _authorize_push(state: ServingState, source: str, to: str) -> None:
    """A push writes its source's rows online, offline or both: each needs its action."""
    audit.note(action="write", source=source, to=to)
    if access.policy(state) is None:
        return
    if source not in state.catalog.sources:  # denied like an existing one: nothing leaks
        raise AccessDeniedError(f"may not push to source '{source}'")
    if to in ("online", "online_and_offline"):
        access.require(state, "write_online", source=source)
    if to in ("offline", "online_and_offline"):
        access.require(state, "write_offline", source=source)


async def write_to_online_store(state: ServingState, body: bytes) -> bytes:
    request = parse_body(WriteToOnlineStoreRequest, body)
    catalog = state.catalog
    if access.policy(state) is not None:
        if request.feature_view_name not in catalog.all_views():
            raise AccessDeniedError(f"may not write_online feature view '{request.feature_view_name}'")  # fmt: skip
        access.require(state, "write_online", view=request.feature_view_name)
    views = catalog.all_views()
    view = views.get(request.feature_view_name)
    if view is None:
        raise NotFoundError("feature view", request.feature_view_name, views)
    what = f"write to the online store of '{view.name}'"
    source = catalog.sources.get(view.source)
    if not isinstance(source, PushSource):
        kind = getattr(source, "type", "unknown")
        raise InputError(
            f"{what}: the view reads {kind} source '{view.source}', so its online values "
            "come from materialization (`almanac materialize-incremental`); only views fed "
            "by a push source take rows over HTTP"
        )
    if not view.online:
        raise InputError(f"{what}: the view is not served online (online=False)")
    assert source.name is not None  # a catalog's sources are named
    df = _feast_columns(_columns(request.df, what), view, source)
    df = _decode_bytes(df, catalog, source.name, what)
    rows = await _write(state, catalog, source.name, df, "online", only_view=view.name)
    return encode.dumps({"feature_view_name": view.name, "rows": rows})


async def _write(
    state: ServingState,
    catalog: Catalog,
    source: str,
    df: Any,
    to: str,
    only_view: str | None = None,
    key: str | None = None,
) -> int:
    try:
        if key is None and only_view is None:  # concurrent pushes are written together
            rows = await state.push_groups(catalog).push(source, df, to)
        else:
            rows = await asyncio.to_thread(_push, state, catalog, source, df, to, only_view, key)
    except Exception as error:
        full = storage_full(error)
        if full is not None:
            state.storage_error = str(full)
        raise
    state.storage_error = None  # room again: /health stops reporting the last failure
    return rows


def _push(
    state: ServingState,
    catalog: Catalog,
    source: str,
    df: Any,
    to: str,
    only_view: str | None,
    key: str | None = None,
) -> int:
    if to != "online":
        with state.offline_lock:  # the engine is created on first use; once
            state.store.offline  # noqa: B018
    return push(
        state.store, source, df, to, catalog=catalog, only_view=only_view, idempotency_key=key
    )


# ---- bodies -----------------------------------------------------------------------------


def _columns(df: Mapping[str, list[Any] | dict[str, Any]], what: str) -> dict[str, list[Any]]:
    """Every column as a list. Columns given by row label (pandas' `to_dict()`) must
    all have the same labels; rows keep the order of the first such column."""
    labels: list[str] | None = None
    first = ""
    out: dict[str, list[Any]] = {}
    for name, column in df.items():
        if isinstance(column, list):
            out[name] = column
            continue
        if labels is None:
            labels, first = list(column), name
        elif column.keys() != set(labels) or len(column) != len(labels):
            raise InputError(
                f"{what}: column '{name}' has other row labels than column '{first}'; "
                "give every column the same rows"
            )
        out[name] = [column[label] for label in labels]
    return out


def _feast_columns(
    df: dict[str, list[Any]], view: FeatureView, source: PushSource
) -> dict[str, list[Any]]:
    """Feast's names and encodings as the source declares them: `event_timestamp` and
    `created` under the source's column names (an all-null `created` is no created
    time: the push's time is used, as for rows pushed without one), timestamp features
    given as integers read as epoch seconds."""
    out = dict(df)
    if source.timestamp_field not in out and FEAST_EVENT_TIMESTAMP in out:
        out[source.timestamp_field] = out.pop(FEAST_EVENT_TIMESTAMP)
    created = source.created_timestamp_field
    if FEAST_CREATED in out and created != FEAST_CREATED:
        values = out.pop(FEAST_CREATED)
        if created is not None and created not in out and any(v is not None for v in values):
            out[created] = values
    timestamps = {f.name for f in view.features if f.dtype == Timestamp}
    for name in timestamps & out.keys():
        values = out[name]
        if values and all(
            v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in values
        ):
            try:
                seconds = pa.array(values, pa.int64())
            except (pa.ArrowInvalid, OverflowError):
                raise InputError(
                    f"write to the online store of '{view.name}': column '{name}' holds "
                    "epoch seconds out of range"
                ) from None
            out[name] = seconds.cast(pa.timestamp("s", tz="UTC"))
    return out


def _decode_bytes(
    df: dict[str, list[Any]], catalog: Catalog, source: str, what: str
) -> dict[str, list[Any]]:
    """JSON carries bytes as base64 text: decode the columns of bytes features."""
    kinds = {
        f.name: f.dtype for v in catalog.views.values() if v.source == source for f in v.features
    }
    out = dict(df)
    for name, values in df.items():
        if kinds.get(name) != "bytes" or not isinstance(values, list):
            continue
        try:
            out[name] = [
                base64.b64decode(v, validate=True) if isinstance(v, str) else v for v in values
            ]
        except (binascii.Error, ValueError):
            raise InputError(f"{what}: column '{name}' (bytes) must hold base64 text") from None
    return out
