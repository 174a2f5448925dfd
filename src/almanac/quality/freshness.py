"""Freshness: how old each view's newest data is, against its SLO (`freshness="2h"`).

Per view, two ages:

- **event age**: now − the newest event time in its offline data (a push source's log
  holds every push; a file or SQL source, what the engine reads);
- **materialization lag**: now − the online store's watermark, for an online view fed by
  a file or SQL source (a push updates the online store itself, so push-fed views have
  none).

Status: `stale` when the event age exceeds the SLO (the data itself is old), `lagging`
when the materialization lag does (the online store was not refreshed), `ok` otherwise;
`no data` for a view with no rows, `no slo` for a view without `freshness`.

A write-time on-demand view (`write_to_online=True`) is reported too: it is computed from
its source view's rows, so its event age and SLO are that view's, and it has a
materialization lag of its own (its own watermark) when that view is materialized.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from almanac.definitions.feature_view import FeatureView
from almanac.definitions.sources import PushSource
from almanac.ports.handles import StoreHandle
from almanac.registry.on_demand import stored_as, write_time_views

if TYPE_CHECKING:
    from almanac.registry.catalog import Catalog


@dataclass(frozen=True)
class ViewFreshness:
    view: str
    slo_seconds: float | None
    newest_event: datetime | None
    event_age_seconds: float | None
    watermark: datetime | None
    materialization_lag_seconds: float | None
    status: str  # ok | stale | lagging | no data | no slo

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for name in ("newest_event", "watermark"):
            out[name] = None if out[name] is None else out[name].isoformat()
        return out


def freshness(
    store: StoreHandle, views: list[str] | None = None, now: datetime | None = None
) -> list[ViewFreshness]:
    """Every view's freshness (or those named: feature views, aggregation views,
    write-time on-demand views), at `now` (default: the clock)."""
    now = now or datetime.now(UTC)
    catalog = store.catalog
    # Each name with the feature view whose data it is (itself, or a write-time view's
    # source) and whether materialization feeds that view's online values.
    chosen: list[tuple[str, FeatureView, bool]] = []
    for name in views or reported_views(catalog):
        view = stored_as(catalog, name)
        chosen.append((name, view, _materialized(store, view)))
    marks = store.online.watermarks(store.project) if any(fed for *_, fed in chosen) else {}
    newest: dict[str, datetime | None] = {}  # per source view: asked once
    out = []
    for name, view, fed in chosen:
        if view.name not in newest:
            newest[view.name] = store.offline.newest_event(catalog, view)
        mark = marks.get(name)
        watermark = mark.time if mark is not None and fed else None
        out.append(_status(name, view, now, newest[view.name], watermark, fed))
    return out


def reported_views(catalog: Catalog) -> list[str]:
    """What freshness reports by default: the feature and aggregation views, then the
    write-time on-demand views."""
    return [*catalog.all_views(), *(w.name for w in write_time_views(catalog))]


def watched_views(catalog: Catalog) -> list[str]:
    """The names that have an SLO (their own, or a write-time view's source view's):
    what the feature server monitors."""
    return [name for name in reported_views(catalog) if stored_as(catalog, name).freshness is not None]  # fmt: skip


def _materialized(store: StoreHandle, view: FeatureView) -> bool:
    return view.online and not isinstance(store.catalog.source_of(view), PushSource)


def _status(
    name: str,
    view: FeatureView,
    now: datetime,
    newest: datetime | None,
    watermark: datetime | None,
    materialized: bool,
) -> ViewFreshness:
    slo = view.freshness.total_seconds() if view.freshness is not None else None
    age = None if newest is None else max(0.0, (now - newest).total_seconds())
    lag = None
    if materialized:
        lag = None if watermark is None else max(0.0, (now - watermark).total_seconds())
    if newest is None:
        status = "no data"
    elif slo is None:
        status = "no slo"
    elif age is not None and age > slo:
        status = "stale"
    elif materialized and (lag is None or lag > slo):
        status = "lagging"  # never materialized counts as lagging
    else:
        status = "ok"
    return ViewFreshness(name, slo, newest, age, watermark, lag, status)
