"""`FeatureStore`'s materialization verbs, as the `MaterializationVerbs` mixin it inherits.

`materialize` (a time range), `materialize_incremental` (from each view's watermark),
`run_due` (every view its `materialize_every` says is due) and `runs` (the history).
Each of the three that write needs the `materialize` action on the views it writes and
on the write-time on-demand views written with them, and records its runs in the
registry's run history.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from almanac.materialize.history import RunRecord
    from almanac.materialize.jobs import MaterializeResult, ProgressCallback
    from almanac.ports.handles import StoreHandle
    from almanac.registry.store import CachedRegistry
    from almanac.security.operations import OperationGuard

    class _Store(StoreHandle, Protocol):
        """What these verbs use of `FeatureStore`: its handles, registry and access guard."""

        @property
        def registry(self) -> CachedRegistry: ...
        @property
        def _guard(self) -> OperationGuard: ...


class MaterializationVerbs:
    """The materialization verbs of `FeatureStore` (which is the only class to inherit
    them: `self` is a `FeatureStore`)."""

    def materialize(
        self: _Store,
        start: datetime | str | None,
        end: datetime | str,
        views: Sequence[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> MaterializeResult:
        """Write each view's latest values with event time in [start, end] to the online
        store (`almanac.materialize.jobs.materialize`); `progress(view, rows)` is called
        after each write."""
        from almanac.materialize.jobs import materialize
        from almanac.materialize.scheduler import recorder
        from almanac.repo import guard_writes

        guard_writes("materialize")
        on_run = recorder(self.registry.state, "manual")
        with _materializing(self, "materialize", views) as notes:
            result = materialize(self, start, end, views, progress, on_run)
            notes["rows"] = result.rows
        return result

    def materialize_incremental(
        self: _Store,
        end: datetime | str,
        views: Sequence[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> MaterializeResult:
        """Materialize each view from its watermark (or from late rows' earliest event
        time) to `end` (`almanac.materialize.jobs.materialize_incremental`)."""
        from almanac.materialize.jobs import materialize_incremental
        from almanac.materialize.late import LateRows
        from almanac.materialize.scheduler import recorder
        from almanac.repo import guard_writes

        guard_writes("materialize_incremental")
        on_run = recorder(self.registry.state, "manual")
        late = LateRows(self.config, self.catalog, self.registry.state)
        with _materializing(self, "materialize_incremental", views) as notes:
            result = materialize_incremental(self, end, views, progress, on_run, late)
            notes["rows"] = result.rows
        return result

    def runs(
        self: _Store,
        view: str | None = None,
        *,
        since: datetime | str | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        """The materialization history, newest first: every run, manual or scheduled."""
        from almanac.materialize.history import runs
        from almanac.semantics.times import to_utc

        if view is not None and view not in self.catalog.online_views():
            self.catalog.view(view)  # unknown names are an error, with suggestions
        moment = None if since is None else to_utc(since, "since")
        return runs(self.registry.state, view, moment, limit)

    def run_due(self: _Store, views: Sequence[str] | None = None) -> list[RunRecord]:
        """Materialize, once, every view whose `materialize_every` says it is due (for
        cron and Airflow; `almanac schedule` runs this in a loop)."""
        from almanac.materialize.scheduler import run_due
        from almanac.repo import guard_writes

        guard_writes("run_due")
        with _materializing(self, "run_due", views) as notes:
            records = run_due(self, self.registry.state, views)
            notes["rows"] = sum(r.rows for r in records)
        return records


def _materializing(store: _Store, name: str, views: Sequence[str] | None) -> AbstractContextManager[dict[str, Any]]:  # fmt: skip
    """The `materialize` check on the views named (default: every online view) and
    the write-time on-demand views materialized with them."""
    from almanac.registry.on_demand import write_time_views

    catalog = store.catalog
    names = list(views) if views else list(catalog.online_views())
    names += [w.name for n in names for w in write_time_views(catalog, n) if w.name not in names]
    return store._guard.operation(catalog, name, ["materialize"], lambda policy: [policy.view_target(n) for n in names], views=names)  # fmt: skip
