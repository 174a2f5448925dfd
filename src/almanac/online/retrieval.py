"""`get_online_features`: the hot path of every inference request.

Resolving feature references against the catalog is cached per catalog object, so a
steady stream of identical requests only validates its keys, reads the store once
(`OnlineStore.read`, one round trip for all views) and builds the response. No pandas,
no per-request Arrow.
"""

from __future__ import annotations

import asyncio
import numbers
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from almanac.definitions.aggregation import AggregationView
from almanac.errors import InputError
from almanac.online.response import OnlineResponse, build_response
from almanac.ports.handles import OnlineHandle
from almanac.ports.online import ViewRead, ViewRows, Watermark
from almanac.registry.catalog import Catalog
from almanac.registry.on_demand import stored_as
from almanac.semantics.tiles import TILES_DTYPE, TILES_FEATURE, TilePlan, evaluate
from almanac.semantics.times import datetime_to_micros, micros_to_datetime

if TYPE_CHECKING:
    from pathlib import Path

    from almanac.transforms.ondemand import OnDemandPlan

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_PLAN_CACHE_SIZE = 256


@dataclass(frozen=True)
class _ViewPlan:
    view: str
    join_keys: list[str]
    features: list[str]
    dtypes: list[str]
    ttl_micros: int | None
    tiles: TilePlan | None = None  # an aggregation view: read its tiles, merge them at `now`

    @property
    def read_features(self) -> tuple[list[str], list[str]]:
        """What to read from the store: the features, or an aggregation view's tiles."""
        if self.tiles is not None:
            return [TILES_FEATURE], [TILES_DTYPE]
        return self.features, self.dtypes


@dataclass(frozen=True)
class _Plan:
    catalog: Catalog  # held so that the cache key's id() cannot be reused meanwhile
    views: list[_ViewPlan]
    join_keys: dict[str, str]  # every key the request needs → its dtype
    key_users: dict[str, str]  # key → a view that needs it (for error messages)
    outputs: list[tuple[str, int, int]]  # (output name, view index, feature index)
    dtypes: dict[str, str]  # output column → dtype, keys included
    defaults: dict[str, int]  # output column → value when not found (aggregation counts: 0)
    # On-demand views to compute after the read (then the stored features are read under
    # working names, `almanac.transforms.ondemand`); None when the request has none.
    on_demand: OnDemandPlan | None = None

    @cached_property
    def features(self) -> tuple[tuple[str, str], ...]:
        """(view, feature) of every feature read or computed: what access control checks
        (an on-demand feature needs access to itself and to what it is computed from)."""
        read = tuple((v.view, f) for v in self.views for f in v.features)
        if self.on_demand is None:
            return read
        steps = self.on_demand.steps
        computed = tuple((s.view.name, f.name) for s in steps if not s.stored for f in s.outputs)
        # A stored (write-time) view's inputs are not read now, but it was computed from
        # them: reading it needs access to them, as when it is computed per request.
        sources = tuple(
            (view, feature)
            for s in steps
            if s.stored
            for view, feature in (w.split(":", 1) for w in s.inputs.values())
        )
        return read + computed + sources

    @cached_property
    def labels(self) -> list[str]:
        """`view:feature` of every feature read: what the audit log records."""
        return [f"{v}:{f}" for v, f in self.features]


_plans: dict[tuple[Any, ...], _Plan] = {}


def _plan(
    catalog: Catalog,
    features: Sequence[str] | None,
    feature_service: str | None,
    full_feature_names: bool,
) -> _Plan:
    if isinstance(features, str):
        features = [features]
    cache_key: tuple[Any, ...] | None  # None: not cacheable
    cache_key = (id(catalog), None if features is None else tuple(features), feature_service,
                 full_feature_names)  # fmt: skip
    try:
        plan = _plans.get(cache_key)
    except TypeError:  # unhashable references: let `resolve` say what is wrong
        plan, cache_key = None, None
    if plan is not None and plan.catalog is catalog:
        return plan
    refs = catalog.resolve(features, feature_service, full_feature_names)
    od = None
    if catalog.on_demand_views:  # imported only then: it brings pyarrow
        from almanac.transforms.ondemand import plan_on_demand

        od = plan_on_demand(catalog, refs, stored=True)
        if od is not None:
            refs = od.base
    views: list[_ViewPlan] = []
    index_of: dict[str, int] = {}
    join_keys: dict[str, str] = {}
    key_users: dict[str, str] = {}
    outputs: list[tuple[str, int, int]] = []
    dtypes: dict[str, str] = {}
    for ref in refs:
        if ref.view not in index_of:
            view = stored_as(catalog, ref.view)
            if not view.online:
                raise InputError(
                    f"feature view '{view.name}' is not served online (online=False); "
                    "set online=True and materialize it, or drop it from the request"
                )
            keys = catalog.join_keys(view)
            for key, dtype in keys.items():
                if join_keys.setdefault(key, dtype) != dtype:
                    raise InputError(
                        f"join key '{key}' is {join_keys[key]} in view '{key_users[key]}' "
                        f"but {dtype} in view '{view.name}'"
                    )
                key_users.setdefault(key, view.name)
            ttl = None if view.ttl is None else view.ttl // timedelta(microseconds=1)
            index_of[ref.view] = len(views)
            views.append(_ViewPlan(ref.view, list(keys), [], [], ttl))
        view_plan = views[index_of[ref.view]]
        outputs.append((ref.output_name, index_of[ref.view], len(view_plan.features)))
        view_plan.features.append(ref.field.name)
        view_plan.dtypes.append(ref.field.dtype)
        dtypes[ref.output_name] = ref.field.dtype
    defaults: dict[str, int] = {}
    for i, view_plan in enumerate(views):
        view = stored_as(catalog, view_plan.view)
        if isinstance(view, AggregationView):
            tiles = TilePlan.of(view, view_plan.features)
            views[i] = view_plan = replace(view_plan, tiles=tiles)
            for name, index, feature in outputs:
                if index == i and tiles.defaults[feature] is not None:
                    defaults[name] = tiles.defaults[feature]
    plan = _Plan(
        catalog, views, join_keys, key_users, outputs, {**join_keys, **dtypes}, defaults, od
    )
    if cache_key is not None:
        if len(_plans) >= _PLAN_CACHE_SIZE:
            _plans.clear()
        _plans[cache_key] = plan
    return plan


def read_features(
    catalog: Catalog,
    features: Sequence[str] | None,
    feature_service: str | None,
    full_feature_names: bool,
) -> tuple[tuple[str, str], ...]:
    """(view, feature) of every feature a read of `features` reads or computes: what
    access control checks (from the cached plan of that request shape)."""
    return _plan(catalog, features, feature_service, full_feature_names).features


def get_online_features(
    store: OnlineHandle,
    features: Sequence[str] | None = None,
    entity_rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]] | None = None,
    *,
    feature_service: str | None = None,
    full_feature_names: bool = False,
    now: datetime | None = None,
    request_data: Mapping[str, Any] | None = None,
) -> OnlineResponse:
    """Latest values of `features` (or a service's) for each entity row, in order.

    `entity_rows` is a list of dicts (``[{"user_id": 1}, ...]``) or a dict of columns
    (``{"user_id": [1, 2]}``); a pandas DataFrame or Arrow table also works. `now` is
    the read time that TTLs and windows are measured from (default: the clock). The
    online store holds only each entity's latest values, so it can answer exactly for
    any time at or after the views' watermarks and latest writes, and refuses an
    earlier `now` (InputError naming the view): past times are
    `get_historical_features`' job. `request_data` gives the request fields on-demand
    features need (one value per entity row; they may also be in the entity rows).
    """
    plan, keys, requests, request = prepare_read(
        store.catalog, features, entity_rows, feature_service, full_feature_names, request_data
    )
    if now is None:
        rows = store.online.read(store.project, requests)
    else:  # an explicit read time is checked against the watermarks, read beside the rows
        rows, marks = store.online.read_with_watermarks(store.project, requests)
        _check_watermarks(plan, marks, now)
    return finish_read(plan, keys, rows, now, request, _repo_path(store))


async def get_online_features_async(
    store: OnlineHandle,
    features: Sequence[str] | None = None,
    entity_rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]] | None = None,
    *,
    feature_service: str | None = None,
    full_feature_names: bool = False,
    now: datetime | None = None,
    request_data: Mapping[str, Any] | None = None,
) -> OnlineResponse:
    """`get_online_features` for an asyncio caller (the HTTP server): the store is read
    with `OnlineStore.read_async`, so the event loop never blocks on it."""
    plan, keys, requests, request = prepare_read(
        store.catalog, features, entity_rows, feature_service, full_feature_names, request_data
    )
    rows = await store.online.read_async(store.project, requests)
    if now is not None:  # as `get_online_features` does, off the event loop
        marks = await asyncio.to_thread(store.online.watermarks, store.project)
        _check_watermarks(plan, marks, now)
    return finish_read(plan, keys, rows, now, request, _repo_path(store))


def prepare_read(
    catalog: Catalog,
    features: Sequence[str] | None,
    entity_rows: Any,
    feature_service: str | None,
    full_feature_names: bool,
    request_data: Mapping[str, Any] | None = None,
) -> tuple[_Plan, dict[str, list[Any]], list[ViewRead], dict[str, list[Any]] | None]:
    """Resolve the request (cached plan), check its keys and request fields, and say
    what to read."""
    plan = _plan(catalog, features, feature_service, full_feature_names)
    request = None
    if entity_rows is None:
        if plan.join_keys or not request_data:
            raise InputError("no entity rows given: pass entity_rows=[{<join key>: <value>}, ...]")
        entity_rows = {}
    entity_rows = _as_columns_or_rows(entity_rows)
    keys = _key_columns(entity_rows, plan)
    if plan.on_demand is not None and plan.on_demand.request:
        from almanac.online.on_demand import request_columns, request_rows

        count, given = request_rows(plan.on_demand, keys, entity_rows, request_data)
        request = request_columns(plan.on_demand, given, request_data, count)
    requests = [
        ViewRead(v.view, v.join_keys, [keys[k] for k in v.join_keys], *v.read_features)
        for v in plan.views
    ]
    return plan, keys, requests, request


def finish_read(
    plan: _Plan,
    keys: dict[str, list[Any]],
    rows: list[ViewRows],
    now: datetime | None,
    request: dict[str, list[Any]] | None = None,
    repo_path: Path | None = None,
) -> OnlineResponse:
    now_micros = _read_time(plan, keys, rows, now)
    ttls = [v.ttl_micros for v in plan.views]
    rows = [
        r if v.tiles is None else evaluate(v.tiles, r, now_micros)
        for v, r in zip(plan.views, rows, strict=True)
    ]
    response = build_response(keys, plan.outputs, rows, ttls, now_micros, plan.dtypes, plan.defaults)  # fmt: skip
    response.read_time = micros_to_datetime(now_micros)
    if plan.on_demand is not None:
        from almanac.online.on_demand import finish

        return finish(plan.on_demand, response, request or {}, repo_path)
    return response


# ---- read time ------------------------------------------------------------------------------


def _read_time(
    plan: _Plan, keys: dict[str, list[Any]], rows: list[ViewRows], now: datetime | None
) -> int:
    """The read time in µs. No value served may be newer than it: a value with a later
    event time did not exist yet at that time, and what it replaced is gone."""
    latest = max((t for r in rows for t in r.event_times if t is not None), default=None)
    if now is None:
        clock = time.time_ns() // 1000
        # A producer's clock may run a little ahead of this one (the door accepts event
        # times up to FUTURE_TOLERANCE ahead): then the read is at that event time.
        return clock if latest is None or latest <= clock else latest
    at = datetime_to_micros(now)
    if latest is not None and latest > at:
        view, row, stamp = next(
            (view, i, t)
            for view, view_rows in zip(plan.views, rows, strict=True)
            for i, t in enumerate(view_rows.event_times)
            if t is not None and t > at
        )
        entity = {key: keys[key][row] for key in view.join_keys}
        raise InputError(
            f"read time {now.isoformat()} is before the value that view '{view.view}' holds "
            f"for {entity} (event time {micros_to_datetime(stamp).isoformat()}): the online "
            "store keeps only the latest values and cannot answer for an earlier time; use "
            "get_historical_features for past times"
        )
    return at


def _check_watermarks(plan: _Plan, watermarks: Mapping[str, Watermark], now: datetime) -> None:
    """A read before a view's watermark could be answered from values written later."""
    at = datetime_to_micros(now)
    for view_plan in plan.views:
        mark = watermarks.get(view_plan.view)
        if mark is not None and mark.time is not None and datetime_to_micros(mark.time) > at:
            raise InputError(
                f"read time {now.isoformat()} is before view '{view_plan.view}' was "
                f"materialized to ({mark.time.isoformat()}): the online store keeps only the latest "
                "values and cannot answer for an earlier time; use get_historical_features "
                "for past times"
            )


# ---- entity keys ----------------------------------------------------------------------------


def _as_columns_or_rows(entity_rows: Any) -> Any:
    """A frame's columns as a dict of lists; a dict of columns or a list of rows as is."""
    if hasattr(entity_rows, "column_names") and hasattr(entity_rows, "to_pydict"):  # Arrow
        return {k: entity_rows.column(k).to_pylist() for k in entity_rows.column_names}
    if hasattr(entity_rows, "columns") and hasattr(entity_rows, "to_dict"):  # pandas, polars
        return {str(k): _series_list(entity_rows[k]) for k in entity_rows.columns}
    return entity_rows


def _key_columns(entity_rows: Any, plan: _Plan) -> dict[str, list[Any]]:
    """The request's join-key columns, checked: present, one type, same lengths."""
    if isinstance(entity_rows, Mapping):
        columns = _from_columns(entity_rows, plan)
    elif isinstance(entity_rows, Sequence) and not isinstance(entity_rows, str | bytes):
        columns = _from_rows(entity_rows, plan)
    else:
        raise InputError(
            "entity_rows must be a list of dicts or a dict of columns, "
            f"got {type(entity_rows).__name__}"
        )
    return {key: _checked(key, dtype, columns[key], plan) for key, dtype in plan.join_keys.items()}


def _series_list(series: Any) -> list[Any]:
    # Plain Python values (not numpy scalars), so the keys pass the fast type check.
    for method in ("tolist", "to_list"):
        if hasattr(series, method):
            values: list[Any] = getattr(series, method)()
            return values
    return list(series)


def _from_rows(rows: Sequence[Any], plan: _Plan) -> dict[str, list[Any]]:
    columns = {}
    for key in plan.join_keys:
        try:
            columns[key] = [row[key] for row in rows]
        except (KeyError, TypeError):
            for index, row in enumerate(rows):
                if not isinstance(row, Mapping):
                    raise InputError(
                        f"entity row {index} must be a dict of join keys, got {type(row).__name__}"
                    ) from None
                if key not in row:
                    raise InputError(
                        f"entity row {index} has no join key '{key}' (needed by view "
                        f"'{plan.key_users[key]}'); it has: {', '.join(map(str, row)) or 'nothing'}"
                    ) from None
            raise
    return columns


def _from_columns(data: Mapping[str, Any], plan: _Plan) -> dict[str, list[Any]]:
    columns = {}
    for key in plan.join_keys:
        if key not in data:
            raise InputError(
                f"entity rows have no join key '{key}' (needed by view '{plan.key_users[key]}'); "
                f"columns given: {', '.join(map(str, data)) or 'none'}"
            )
        column = data[key]
        if isinstance(column, str | bytes) or not hasattr(column, "__len__"):
            raise InputError(f"entity column '{key}' must be a list of values, got {column!r}")
        columns[key] = column if isinstance(column, list) else list(column)
    lengths = {key: len(column) for key, column in columns.items()}
    if len(set(lengths.values())) > 1:
        raise InputError(f"entity columns have different lengths: {lengths}")
    return columns


def _checked(key: str, dtype: str, column: list[Any], plan: _Plan) -> list[Any]:
    """The column itself when every value already has its key's type (the common case,
    checked at C speed); otherwise a converted copy, or an InputError naming the row."""
    if dtype == "int64":
        if all(type(v) is int for v in column):
            if column and (min(column) < INT64_MIN or max(column) > INT64_MAX):
                bad = next(i for i, v in enumerate(column) if not INT64_MIN <= v <= INT64_MAX)
                raise InputError(
                    f"join key '{key}' must fit in int64, got {column[bad]} in entity row {bad}"
                )
            return column
        return [_as_int(key, v, i) for i, v in enumerate(column)]
    if all(type(v) is str for v in column):
        return column
    return [_as_str(key, v, i) for i, v in enumerate(column)]


def _as_int(key: str, value: Any, row: int) -> int:
    # numpy/pandas integers are fine; bools, floats and text are not (1.0 or "1" would
    # silently address another entity than the caller meant).
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)
        if INT64_MIN <= number <= INT64_MAX:
            return number
    raise InputError(
        f"join key '{key}' must be an int64, got {type(value).__name__} {value!r} "
        f"in entity row {row}"
    )


def _as_str(key: str, value: Any, row: int) -> str:
    if isinstance(value, str):
        return str(value)
    raise InputError(
        f"join key '{key}' must be a string, got {type(value).__name__} {value!r} "
        f"in entity row {row}"
    )


def _repo_path(store: OnlineHandle) -> Path | None:
    # Where an on-demand function's module is imported from; a bare handle has none.
    path: Path | None = getattr(store, "repo_path", None)
    return path
