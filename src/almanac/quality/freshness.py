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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from almanac.definitions.feature_view import FeatureView
from almanac.definitions.sources import PushSource
from almanac.ports.handles import StoreHandle


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
    """Every view's freshness (or those named), at `now` (default: the clock)."""
    now = now or datetime.now(UTC)
    catalog = store.catalog
    chosen = [catalog.view(name) for name in views] if views else list(catalog.all_views().values())  # fmt: skip
    marks = store.online.watermarks(store.project) if any(_materialized(store, v) for v in chosen) else {}  # fmt: skip
    out = []
    for view in chosen:
        newest = store.offline.newest_event(catalog, view)
        mark = marks.get(view.name)
        watermark = mark.time if mark is not None and _materialized(store, view) else None
        out.append(_status(view, now, newest, watermark, _materialized(store, view)))
    return out


def _materialized(store: StoreHandle, view: FeatureView) -> bool:
    return view.online and not isinstance(store.catalog.source_of(view), PushSource)


def _status(
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
    return ViewFreshness(view.name, slo, newest, age, watermark, lag, status)
