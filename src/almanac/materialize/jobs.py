"""Materialization: copy each view's latest values from the offline store to the online
store, and move the view's watermark only once all of its rows are written.

A watermark is the state of one online store, so it is kept in that store
(`OnlineStore.watermarks`): pointing `online.url` at a new store, or a Redis that lost
its data, starts every view from its first row instead of trusting a watermark that
describes another store.

For every entity, the row written is the one that wins the point-in-time rule at `end`
among rows with event time in `[start, end]` (the offline engine computes it, set-based).
An aggregation view writes, instead, one blob of tiles per entity with events in
`[start, end]`, covering its longest window at `end` (`almanac.semantics.tiles`); reads
merge the tiles at read time, so values decay without re-materialization.
The online store's monotonic write rule makes every run idempotent: re-running a window,
or running windows out of order, can never put an older value over a newer one. If a run
dies half-way (the online store goes away), the watermark has not moved and the next run
writes the same rows again.

A write-time on-demand view (`write_to_online=True`) is materialized like a view: the
latest rows of its source view, its features computed from them by the steps a training
set runs (`almanac.transforms.ondemand.write_time_rows`), under its own watermark, so
that a new or changed definition is computed from the first row.

A view with expectations has its rows admitted as at the door
(`almanac.quality.admission`), the whole run's rows as one batch: `reject` writes
nothing of the view and keeps its watermark (the run is reported `refused`), `warn`
writes them and records the breach, `quarantine` writes the rows that pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

import pyarrow as pa

from almanac.definitions.aggregation import AggregationView
from almanac.definitions.feature_view import FeatureView
from almanac.definitions.on_demand import OnDemandView
from almanac.definitions.sources import PushSource
from almanac.errors import InputError
from almanac.online.layouts import claim
from almanac.ports.offline import OnlineTarget, write_online
from almanac.quality.admission import admit, check_empty
from almanac.registry.diff import values_fingerprint
from almanac.registry.on_demand import stored_as, write_time_views, written_from
from almanac.semantics.rows import EVENT_TIMESTAMP, ViewRows
from almanac.semantics.tiles import MERGED_AT, TILES_FEATURE
from almanac.semantics.times import FUTURE_TOLERANCE, datetime_to_micros, to_utc

# How long before a materialization began a push's merge still counts as possibly after
# its snapshot (the push's offline file is committed just after its online write).
PUSH_GRACE = timedelta(seconds=30)

if TYPE_CHECKING:
    from almanac.materialize.late import LateRows
    from almanac.ports.handles import StoreHandle
    from almanac.ports.online import OnlineStore
    from almanac.registry.catalog import Catalog


ProgressCallback = Callable[[str, int], None]
RunCallback = Callable[["ViewRun"], None]  # called once per view run, failed ones too


@dataclass
class ViewRun:
    view: str
    start: datetime | None
    end: datetime
    rows: int = 0
    seconds: float = 0.0
    skipped: str = ""
    refused: str = ""  # the view's expectations refused the rows (on_violation="reject")
    error: str = ""  # the run failed (the exception is raised after it is reported)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def outcome(self) -> str:
        """success | skipped | refused | failed (`almanac.materialize.history`)."""
        if self.error:
            return "failed"
        if self.refused:
            return "refused"
        return "skipped" if self.skipped and not self.rows else "success"

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass
class MaterializeResult:
    runs: list[ViewRun] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(run.rows for run in self.runs)

    @property
    def refused(self) -> list[ViewRun]:
        return [run for run in self.runs if run.refused]


def views_to_materialize(catalog: Catalog, online: OnlineStore, project: str) -> dict[str, str]:
    """Online views whose values `online` lacks, with the reason: written under an
    earlier definition, or (views over batch sources) never materialized into this store
    (a new one, or one that lost its data — a Redis restarted without persistence). Reads of
    them answer NOT_FOUND (or the old values) until `materialize-incremental` runs."""
    marks = online.watermarks(project)
    out = {}
    for view in catalog.online_views().values():
        name = view.name
        mark = marks.get(name)
        if mark is not None and mark.layout != values_fingerprint(catalog, name):
            out[name] = "its values were written under an earlier definition"
        elif isinstance(view, FeatureView) and isinstance(catalog.source_of(view), PushSource):
            # Written by pushes: materialized or not, it has what was pushed. (Not so a
            # write-time view: rows pushed before it existed were not computed for it.)
            continue
        elif mark is None or mark.time is None:
            out[name] = "never materialized into this online store (new, or emptied)"
    return out


def _views(store: StoreHandle, names: Sequence[str] | None) -> list[FeatureView | OnDemandView]:
    catalog = store.catalog
    if not names:
        return list(catalog.online_views().values())
    views: list[FeatureView | OnDemandView] = []
    for name in names:
        on_demand = catalog.on_demand_views.get(name)
        if on_demand is None:
            views.append(catalog.view(name))
            # Its write-time views are computed from its rows: materialized with it, or
            # they would serve values of rows it no longer serves.
            views += [w for w in write_time_views(catalog, name) if w.name not in names]
        elif on_demand.write_to_online:
            views.append(on_demand)
        else:
            raise InputError(
                f"on-demand view '{name}' is computed at read time, so it is not materialized "
                "(write_to_online=True stores it)"
            )
    for view in views:
        if isinstance(view, FeatureView) and not view.online:
            raise InputError(f"feature view '{view.name}' has online=False; it is not materialized")
    return views


def _check_end(end: datetime) -> None:
    now = datetime.now(UTC)
    if end > now + FUTURE_TOLERANCE:
        raise InputError(
            f"end time {end.isoformat()} is in the future (now is {now.isoformat(timespec='seconds')}); "
            "materializing the future would move watermarks past data that has not arrived yet"
        )


def _run_view(
    store: StoreHandle, view: FeatureView | OnDemandView, start: datetime | None,
    end: datetime, progress: ProgressCallback | None,
) -> ViewRun:  # fmt: skip
    run = ViewRun(view=view.name, start=start, end=end)
    catalog = store.catalog
    layout = values_fingerprint(catalog, view.name)
    # Values of an earlier definition (changed while another store was configured) are
    # cleared first; only a run from the first row then sets a watermark again.
    claim(store.online, store.project, {view.name: layout})
    if isinstance(view, OnDemandView):
        features = [f.name for f in catalog.on_demand_fields(view.name)]
    else:
        features = [TILES_FEATURE] if isinstance(view, AggregationView) else view.feature_names
    keys = list(catalog.join_keys(stored_as(catalog, view.name)))
    target = OnlineTarget(store.config, store.project, view.name, keys, features)
    started = time.perf_counter()
    count = None if progress is None else (lambda rows: progress(view.name, rows))
    if isinstance(view, OnDemandView):
        try:
            run.rows = _write_time(store, view, start, end, target, count)
        except InputError as error:  # its source view's expectations refused the rows
            run.refused, run.seconds = str(error), time.perf_counter() - started
            return run
    elif view.expectations and not isinstance(view, AggregationView):
        try:
            run.rows = _admitted(store, view, start, end, target, count)
        except InputError as error:
            # Nothing of the view was written; its watermark stays, so the next run
            # reads the same rows again (and refuses them until they are fixed).
            run.refused, run.seconds = str(error), time.perf_counter() - started
            return run
    elif isinstance(view, AggregationView) and isinstance(catalog.source_of(view), PushSource):
        run.rows = _tiles_beside_pushes(store, view, start, end, target, count)
    else:
        run.rows = store.offline.materialize(catalog, view, start, end, target, store.online, count)  # fmt: skip
    # Only now, with every batch written, does the watermark move — and only when the
    # window reached back to it: otherwise rows before `start` were never read.
    watermark = store.online.watermarks(store.project).get(view.name)
    if start is None or (
        watermark is not None
        and watermark.layout == layout
        and watermark.time is not None
        and start <= watermark.time
    ):
        store.online.set_watermark(store.project, view.name, end, layout)
    else:
        run.skipped = "watermark kept: rows before start were not read"
    run.seconds = time.perf_counter() - started
    return run


def _admitted(
    store: StoreHandle,
    view: FeatureView,
    start: datetime | None,
    end: datetime,
    target: OnlineTarget,
    progress: Callable[[int], None] | None,
) -> int:
    """Write the rows of a view with expectations that they admit (by its
    `on_violation`, as at the door): the rows come to this process to be checked as
    one batch, whichever engine computed them."""
    what = f"materialization of '{view.name}'"
    rows = store.offline.latest_rows(store.catalog, view, start, end).read_all()
    if rows.num_rows == 0:
        check_empty([view], what, store.config, "materialize")
        return 0
    admission = admit(rows, [view], what, store.config, "materialize")
    written = write_online(admission.rows.to_batches(), target, store.online, progress)
    admission.record(store.config)
    return written


def _write_time(
    store: StoreHandle,
    view: OnDemandView,
    start: datetime | None,
    end: datetime,
    target: OnlineTarget,
    progress: Callable[[int], None] | None,
) -> int:
    """Write a write-time view's values: computed here from its source view's latest
    rows (admitted by that view's expectations, whose results its own run records),
    whichever engine read them."""
    from almanac.transforms.ondemand import write_time_rows

    catalog = store.catalog
    source = written_from(catalog, view)
    batches: Iterable[pa.RecordBatch] = store.offline.latest_rows(catalog, source, start, end)
    if source.expectations:
        rows = pa.Table.from_batches(list(batches))
        what = f"materialization of '{view.name}' (from '{source.name}')"
        batches = admit(rows, [source], what).rows.to_batches() if rows.num_rows else []
    repo_path = getattr(store, "repo_path", None)
    derived = (
        batch
        for rows in batches
        if rows.num_rows
        for batch in write_time_rows(catalog, view, pa.Table.from_batches([rows]), repo_path).to_batches()
    )  # fmt: skip
    return write_online(derived, target, store.online, progress)


def _tiles_beside_pushes(
    store: StoreHandle,
    view: AggregationView,
    start: datetime | None,
    end: datetime,
    target: OnlineTarget,
    progress: Callable[[int], None] | None,
) -> int:
    """An aggregation view fed by pushes (or a stream) gets its tiles from the offline
    snapshot, except the entities a push merged into after this run began, or within
    `PUSH_GRACE` before (its offline file may not have been in the snapshot): their
    stored tiles hold events the snapshot lacks, so they are kept. The rows come to
    this process, whichever engine computed them."""
    since = datetime_to_micros(datetime.now(UTC) - PUSH_GRACE)
    written = 0
    for batch in store.offline.aggregation_tiles(store.catalog, view, start, end):
        if batch.num_rows == 0:
            continue
        table = pa.Table.from_batches([batch])
        table = table.append_column(MERGED_AT, pa.nulls(table.num_rows, pa.int64()))
        merge = partial(_keep_pushed, since=since)
        written += store.online.merge_batch(store.project, view.name, target.join_keys, [TILES_FEATURE, MERGED_AT], table, merge)  # fmt: skip
        if progress is not None:
            progress(batch.num_rows)
    return written


def _keep_pushed(stored: ViewRows, pending: pa.Table, since: int) -> pa.Table:
    """Per entity: the stored tiles if a push merged into them at or after `since` (or
    they are newer), else the snapshot's."""
    times = pending.column(EVENT_TIMESTAMP).cast(pa.int64()).to_pylist()
    blobs = pending.column(TILES_FEATURE).to_pylist()
    merged_at: list[int | None] = []
    for i, (stored_time, stored_blob, stamp) in enumerate(zip(stored.event_times, *stored.columns, strict=True)):  # fmt: skip
        if stored_time is not None and ((stamp is not None and stamp >= since) or stored_time > times[i]):  # fmt: skip
            times[i], blobs[i] = stored_time, stored_blob
        merged_at.append(stamp)
    columns = {name: pending.column(name) for name in pending.column_names}
    columns[EVENT_TIMESTAMP] = pa.array(times, pa.int64()).cast(pending.schema.field(EVENT_TIMESTAMP).type)  # fmt: skip
    columns[TILES_FEATURE] = pa.array(blobs, pa.binary())
    columns[MERGED_AT] = pa.array(merged_at, pa.int64())
    return pa.table(columns)


def materialize(
    store: StoreHandle,
    start: datetime | str | None,
    end: datetime | str,
    views: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    on_run: RunCallback | None = None,
) -> MaterializeResult:
    """Write the latest value per entity with event time in `[start, end]` to the online
    store, for the named views (default: every view with `online=True`)."""
    end = to_utc(end, "end")
    start = to_utc(start, "start") if start is not None else None
    if start is not None and start > end:
        raise InputError(f"start {start.isoformat()} is after end {end.isoformat()}")
    _check_end(end)
    result = MaterializeResult()
    for view in _views(store, views):
        result.runs.append(_reported(store, view, start, end, progress, on_run))
    return result


def _reported(
    store: StoreHandle, view: FeatureView | OnDemandView, start: datetime | None, end: datetime,
    progress: ProgressCallback | None, on_run: RunCallback | None,
) -> ViewRun:  # fmt: skip
    """`_run_view`, with its run (or its failure) handed to `on_run`."""
    started, started_at = time.perf_counter(), datetime.now(UTC)
    try:
        run = _run_view(store, view, start, end, progress)
    except Exception as error:
        if on_run is not None:
            failed = ViewRun(view.name, start, end, seconds=time.perf_counter() - started, started_at=started_at)  # fmt: skip
            failed.error = str(error) or type(error).__name__
            on_run(failed)
        raise
    if on_run is not None:
        on_run(run)
    return run


def materialize_incremental(
    store: StoreHandle,
    end: datetime | str,
    views: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    on_run: RunCallback | None = None,
    late: LateRows | None = None,
) -> MaterializeResult:
    """Materialize each view from its watermark (from its first row, the first time) to
    `end` — from earlier when `late` finds rows that arrived since the last run with
    event times before the watermark."""
    end = to_utc(end, "end")
    _check_end(end)
    result = MaterializeResult()
    chosen = _views(store, views)
    started = datetime.now(UTC)
    try:
        watermarks = store.online.watermarks(store.project)
    except Exception as error:  # the store away: every view's run failed, and says so
        for view in chosen:
            _report_failure(view, None, end, started, error, on_run)
        raise
    for view in chosen:
        started = datetime.now(UTC)
        mark = watermarks.get(view.name)
        # A watermark of another definition does not count: start from the first row.
        current = mark is not None and mark.layout == values_fingerprint(store.catalog, view.name)
        start = mark.time if current and mark is not None else None
        try:
            arrived = late.since_last_run(view) if late is not None else None
        except Exception as error:  # a source that cannot be listed: a failed run
            _report_failure(view, start, end, started, error, on_run)
            raise
        if start is not None and arrived is not None:
            if arrived.unknown:  # a new file whose times its footer does not give
                start = None
            elif arrived.earliest is not None and arrived.earliest < start:
                start = arrived.earliest
        if start is not None and start >= end:
            run = ViewRun(view.name, start, end, skipped="already materialized to end")
            if on_run is not None:
                on_run(run)
        else:
            run = _reported(store, view, start, end, progress, on_run)
        result.runs.append(run)
        if late is not None and arrived is not None and run.outcome in ("success", "skipped"):
            late.seen(view, arrived)  # not after a refusal: those files were not written
    return result


def _report_failure(
    view: FeatureView | OnDemandView, start: datetime | None, end: datetime, started: datetime,
    error: Exception, on_run: RunCallback | None,
) -> None:  # fmt: skip
    if on_run is not None:
        failed = ViewRun(view.name, start, end, started_at=started)
        failed.error = str(error) or type(error).__name__
        on_run(failed)
