"""Freshness in `/health` and `/metrics`: the views that declare a `freshness` SLO,
checked off the request path at most every `FRESHNESS_EVERY` seconds (it reads the
offline data's newest event time), so a health probe never waits on a scan."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from prometheus_client import Gauge

from almanac.quality.freshness import ViewFreshness, freshness, watched_views
from almanac.serving.metrics import Metrics
from almanac.store import FeatureStore

FRESHNESS_EVERY = 60.0
_OUT_OF_SLO = ("stale", "lagging")


class FreshnessMonitor:
    def __init__(self, store: FeatureStore, metrics: Metrics) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._result: list[ViewFreshness] | None = None
        self._error: str | None = None
        self._at = float("-inf")
        self._running: asyncio.Task[None] | None = None
        r = metrics.registry
        self._age = Gauge(
            "almanac_view_freshness_seconds", "Age of the newest event in a view's offline data.",
            ["view"], registry=r,
        )  # fmt: skip
        self._lag = Gauge(
            "almanac_view_materialization_lag_seconds", "Age of a view's online watermark.",
            ["view"], registry=r,
        )  # fmt: skip
        self._slo = Gauge(
            "almanac_view_freshness_slo_seconds", "A view's freshness SLO.", ["view"], registry=r
        )

    async def check(self, timeout: float) -> dict[str, Any]:
        """The /health section: "ok", or "degraded" naming the views out of their SLO."""
        if self._running is None and time.monotonic() - self._at >= FRESHNESS_EVERY:
            self._running = asyncio.create_task(asyncio.to_thread(self._refresh))
        if self._result is None and self._error is None and self._running is not None:
            try:  # the first check waits a little for its answer
                await asyncio.wait_for(asyncio.shield(self._running), timeout)
            except TimeoutError:
                return {"status": "ok", "detail": "not checked yet"}
        if self._running is not None and self._running.done():
            self._running = None
        if self._error is not None:
            return {"status": "unknown", "detail": self._error}
        late = {f.view: f.status for f in self._result or [] if f.status in _OUT_OF_SLO}
        if not late:
            return {"status": "ok"}
        detail = "; ".join(f"{view}: {status}" for view, status in sorted(late.items()))
        return {"status": "degraded", "detail": detail, "views": late}

    def _refresh(self) -> None:
        try:
            watched = watched_views(self._store.registry.catalog(check=False))
            result = freshness(self._store, watched) if watched else []
        except Exception as error:  # reported in /health, retried at the next interval
            with self._lock:
                self._error, self._at = f"{type(error).__name__}: {error}", time.monotonic()
            return
        for item in result:
            if item.event_age_seconds is not None:
                self._age.labels(item.view).set(item.event_age_seconds)
            if item.materialization_lag_seconds is not None:
                self._lag.labels(item.view).set(item.materialization_lag_seconds)
            if item.slo_seconds is not None:
                self._slo.labels(item.view).set(item.slo_seconds)
        with self._lock:
            self._result, self._error, self._at = result, None, time.monotonic()
